//! MTU failures. Plans the hooks this kernel has — tp_btf/icmp_send (frag-needed this node
//! sends, kernel >= 6.10), tp_btf/kfree_skb (PKT_TOO_BIG drops, dropped frag-needed and
//! packet-too-big), tc on chosen devices (errors received, ICMPv6 ones sent, oversize packets)
//! — and attaches them. Without icmp_send, IPv4 frag-needed sent is seen at tc egress instead.

pub(crate) mod choice;
pub(crate) mod decode;
pub(crate) mod detail;
pub(crate) mod devices;
pub(crate) mod follow;
pub(crate) mod tc;

use std::collections::BTreeMap;

use anyhow::Context as _;
use aya::{Btf, Ebpf};
use devices::DeviceFacts;
use tracer_common::{
    drop::{DropConfig, hook},
    event::EventHeader,
    mtu::MtuConfig,
};

use super::{AttachContext, CannotRun, CheckRow, Family, FamilyId, PlanContext, PlanError};
use crate::{
    events::{Clock, Event},
    kernel::{
        btf::{KernelBtf, ParamType},
        drop_reasons::DropReasons,
        hooks::{self, HookSupport},
    },
    loader::Globals,
    probes::drops::{self, DROP_CONFIG, HookChoice},
};

const PROBE: &str = "mtu";

/// `--sent-hook`: where IPv4 frag-needed this node sends is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SentHook {
    Auto,
    /// BTF tracepoint tp_btf/icmp_send (kernel >= 6.10, or a backport)
    #[value(name = "icmp_send")]
    IcmpSend,
    /// tc egress of the traced devices (what kernels without icmp_send get)
    Tc,
}

/// One `--iface [NETNS:]DEV`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IfaceChoice {
    pub netns: crate::kernel::netns::Netns,
    pub name: String,
    /// As typed, for messages.
    pub text: String,
}

/// Program names in tracer-ebpf/src/main.rs.
const PROG_ICMP_SEND: &str = "mtu_icmp_send";
const PROG_DROP: &str = "mtu_drop";
/// The programs' global (tracer-ebpf/src/mtu.rs).
const MTU_CONFIG: &str = "MTU_CONFIG";

/// How the MTU probe runs on this kernel.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub config: MtuConfig,
    /// kfree_skb's argument layout (the drops probe's plan, shared with its program).
    pub drop: DropConfig,
    pub reasons: Option<DropReasons>,
    /// tp_btf/icmp_send exists here.
    pub icmp_send: bool,
    /// What this kernel lacks, with what is done instead (warned about once).
    pub missing: Vec<String>,
}

/// Works out the hooks. kfree_skb as a BTF tracepoint is required (it is what every other hook
/// leans on: BTF and tp_btf); icmp_send and the PKT_TOO_BIG reason are optional, unless
/// `sent` asks for icmp_send by name.
pub(crate) fn plan(btf: &KernelBtf, sent: SentHook) -> Result<Plan, CannotRun> {
    let drop_plan = drops::plan(btf, HookChoice::TpBtf).map_err(|e| CannotRun { probe: PROBE, reason: e.reason })?;
    let mut config = MtuConfig::empty();
    let mut missing = Vec::new();
    let reason = |name: &str| drop_plan.reasons.as_ref().and_then(|r| r.value(name));
    config.reason_not_specified = reason("NOT_SPECIFIED").unwrap_or(MtuConfig::ABSENT);
    config.reason_consumed = reason("SKB_CONSUMED").unwrap_or(MtuConfig::ABSENT);
    match reason("PKT_TOO_BIG") {
        Some(v) => config.reason_pkt_too_big = v,
        None => missing.push(format!(
            "no PKT_TOO_BIG drop reason in this kernel ({}): too_big_drop is not reported (forwarded packets that are too big still show as frag_needed_sent)",
            crate::kernel::release()
        )),
    }
    let layout = match sent {
        SentHook::Tc => None,
        SentHook::IcmpSend => Some(icmp_send_layout(btf).map_err(|reason| CannotRun { probe: PROBE, reason })?),
        SentHook::Auto => match icmp_send_layout(btf) {
            Ok(layout) => Some(layout),
            Err(why) => {
                missing.push(format!("{why}: IPv4 frag-needed sent is seen only where it leaves a traced device (tc egress)"));
                None
            }
        },
    };
    match layout {
        Some((skb, ty, code)) => {
            config.icmp_skb_arg = skb;
            config.icmp_type_arg = ty;
            config.icmp_code_arg = code;
        }
        None => config.egress_sent_v4 = 1,
    }
    config.valid = 1;
    let icmp_send = config.icmp_skb_arg != MtuConfig::ABSENT;
    Ok(Plan { config, drop: drop_plan.config, reasons: drop_plan.reasons, icmp_send, missing })
}

/// Positions of icmp_send's (skb, type, code) in BTF.
fn icmp_send_layout(btf: &KernelBtf) -> Result<(u32, u32, u32), String> {
    let params = btf.tracepoint_params("icmp_send").map_err(|e| format!("no tp_btf/icmp_send (kernel < 6.10?): {e}"))?;
    let skb = params.iter().position(|p| *p == ParamType::StructPtr("sk_buff".into())).ok_or("tp_btf/icmp_send has no struct sk_buff * argument")?;
    // (skb, int type, int code) since the tracepoint appeared; the two ints follow the skb.
    if params.len() < skb + 3 {
        return Err(format!("tp_btf/icmp_send has {} arguments, expected skb, type, code", params.len()));
    }
    Ok((skb as u32, skb as u32 + 1, skb as u32 + 2))
}

/// The BTF tracepoints of `plan`, as (program, tracepoint).
fn tracing_hooks(plan: &Plan) -> Vec<(&'static str, &'static str)> {
    let mut hooks = vec![(PROG_DROP, "kfree_skb")];
    if plan.icmp_send {
        hooks.push((PROG_ICMP_SEND, "icmp_send"));
    }
    hooks
}

/// Loads and attaches the BTF tracepoints. Links live as long as `ebpf`.
pub(crate) fn attach_tracing(ebpf: &mut Ebpf, plan: &Plan, btf: &Btf) -> anyhow::Result<()> {
    for (name, tracepoint) in tracing_hooks(plan) {
        super::attach_btf_tracepoint(ebpf, name, tracepoint, btf)?;
    }
    Ok(())
}

/// The tracing hooks as `check` and the start-up line name them.
pub(crate) fn describe(plan: &Plan) -> String {
    let mut parts = Vec::new();
    if plan.icmp_send {
        parts.push("tp_btf/icmp_send");
    }
    parts.push("tp_btf/kfree_skb");
    parts.push(if tc::uses_tcx() { "tc (TCX)" } else { "tc (clsact)" });
    parts.join(", ")
}

/// `tracer mtu`'s own flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Attach tc programs to this device ([NETNS:]DEV; repeatable) instead of every veth and
    /// tunnel device of tracer's own network namespace (also those created later)
    #[arg(long = "iface", value_name = "[NETNS:]DEV")]
    pub ifaces: Vec<String>,
    /// Where IPv4 frag-needed this node sends is seen: auto (the icmp_send tracepoint where the
    /// kernel has it, else tc egress), icmp_send, or tc (egress of the traced devices only)
    #[arg(long, value_enum, default_value_t = SentHook::Auto)]
    pub sent_hook: SentHook,
}

impl super::FamilyArgs for Args {
    fn into_options(self, options: &mut super::FamilyOptions) -> Result<(), crate::usage::UsageError> {
        options.mtu.ifaces = self.ifaces.iter().map(|t| choice::parse_iface(t)).collect::<Result<Vec<_>, _>>()?;
        options.mtu.sent_hook = self.sent_hook;
        Ok(())
    }
}

/// What the user chose for the MTU family.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// `--iface`: devices for the tc programs; empty means every veth and tunnel of tracer's own
    /// namespace.
    pub ifaces: Vec<IfaceChoice>,
    pub sent_hook: SentHook,
}

impl Default for Options {
    fn default() -> Self {
        Options { ifaces: Vec::new(), sent_hook: SentHook::Auto }
    }
}

/// The MTU family: the devices it watches, their MTU facts, its tracing and tc programs.
pub(crate) struct Mtu {
    options: Options,
    alone: bool,
    /// The devices tc goes on.
    traced: Vec<DeviceFacts>,
    /// Every device of their namespaces (the MTU facts).
    facts: Vec<DeviceFacts>,
    plan: Option<Plan>,
    tc: Option<tc::TcAttachments>,
    decoder: Option<decode::Decoder>,
    /// Without --iface: the link events of tracer's namespace, whose new veths and tunnels get
    /// the tc programs while tracing.
    follow: Option<follow::LinkEvents>,
}

impl Mtu {
    pub(crate) fn new(options: Options) -> Self {
        Mtu { options, alone: false, traced: Vec::new(), facts: Vec::new(), plan: None, tc: None, decoder: None, follow: None }
    }

    /// Attaches to the veths and tunnels of tracer's namespace that appeared since the last
    /// listing and forgets those that went (see [`follow`]); says each on stderr.
    fn follow_devices(&mut self, ebpf: &mut Ebpf) {
        let (Some(tc), Some(decoder)) = (self.tc.as_mut(), self.decoder.as_mut()) else { return };
        let listed = match devices::list(&crate::kernel::netns::Netns::OWN) {
            Ok(listed) => listed,
            Err(err) => {
                log::warn!("mtu: listing devices after a link event: {err}");
                return;
            }
        };
        let attached: Vec<u32> = tc.devices.iter().filter(|a| a.device.netns.path.is_none()).map(|a| a.device.ifindex).collect();
        let (new, gone) = follow::changes(&attached, &listed);
        for ifindex in gone {
            if let Some(name) = tc.forget(ifindex) {
                decoder.tc_devices.retain(|d| d.ifindex != ifindex);
                eprintln!("tracer: mtu: device {name} is gone (tc programs with it)");
            }
        }
        for device in &listed {
            if let Some(d) = decoder.tc_devices.iter_mut().find(|d| d.ifindex == device.ifindex && d.name != device.name) {
                d.name.clone_from(&device.name);
                tc.rename(device.ifindex, &device.name);
            }
        }
        // The MTU floor before a new device is attached to: the devices' MTUs as listed now (a
        // link event also follows an MTU change, within follow::SETTLE), the new ones included,
        // and those of other namespaces (--iface) as they were at start.
        let mtus: Vec<u32> = tc
            .devices
            .iter()
            .map(|a| listed.iter().find(|d| a.device.netns.path.is_none() && d.ifindex == a.device.ifindex).map_or(a.device.mtu, |d| d.mtu))
            .chain(new.iter().map(|d| d.mtu))
            .collect();
        if let Err(err) = tc::set_floor(ebpf, mtus) {
            log::warn!("mtu: updating the classifiers' MTU floor: {err:#}");
        }
        for device in new {
            match tc.add(ebpf, &device) {
                Ok(a) => {
                    decoder.tc_devices.push(decode::TcDevice {
                        ifindex: device.ifindex,
                        name: device.name.clone(),
                        netns: a.netns_inode,
                        mtu: device.mtu,
                    });
                    eprintln!("tracer: mtu: tc on new device {} {} ({})", device.name, device.mtu, device.driver);
                }
                // Gone again before it could be attached to (a CNI's short-lived device): nothing to say.
                Err(_) if !tc::listed_again(&device) => {}
                Err(err) => log::warn!("mtu: tc on new device {}: {err:#}", device.name),
            }
        }
        self.facts = listed;
    }

    /// Every device of the namespaces it looked at (for `diagnose`'s MTU facts).
    pub(crate) fn devices(&self) -> &[DeviceFacts] {
        &self.facts
    }
}

impl Family for Mtu {
    fn id(&self) -> FamilyId {
        FamilyId::Mtu
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn prepare(&mut self) -> anyhow::Result<()> {
        // Subscribed before the devices are listed, so a device that appears in between is
        // seen by the first listing or by an event.
        if self.options.ifaces.is_empty() {
            self.follow = match follow::LinkEvents::open() {
                Ok(events) => Some(events),
                Err(err) => {
                    log::warn!("mtu: {err}; devices created after start are not traced");
                    None
                }
            };
        }
        // A few syscalls: a wrong --iface is bad input, refused before BTF is even read.
        (self.traced, self.facts) = choice::choose_devices(&self.options.ifaces)?;
        Ok(())
    }

    fn plan(&mut self, ctx: &mut PlanContext<'_>) -> Result<(), PlanError> {
        let plan = plan(ctx.btf, self.options.sent_hook)?;
        for why in &plan.missing {
            log::warn!("{why}");
        }
        self.alone = ctx.alone;
        self.plan = Some(plan);
        Ok(())
    }

    fn describe(&self) -> String {
        self.plan.as_ref().map(describe).unwrap_or_default()
    }

    fn describe_alone(&self) -> String {
        let names = self.tc_devices();
        format!(
            "{}; tc on {} devices{}",
            self.describe(),
            names.len(),
            if names.is_empty() { String::new() } else { format!(": {}", choice::shorten(&names)) }
        )
    }

    fn configure(&mut self, globals: &mut Globals) -> Result<(), CannotRun> {
        let plan = self.plan.as_ref().ok_or(CannotRun { probe: PROBE, reason: "not planned".into() })?;
        // The kfree_skb program reads the drops family's layout: with the drops family on the
        // classic tracepoint, that layout is a record's, not tp_btf's arguments.
        match globals.get::<DropConfig>(DROP_CONFIG) {
            Some(drop) if drop.hook != hook::TP_BTF => {
                return Err(CannotRun { probe: PROBE, reason: "needs tp_btf/kfree_skb".into() });
            }
            Some(_) => {}
            None => globals.set(DROP_CONFIG, &plan.drop),
        }
        globals.set(MTU_CONFIG, &plan.config);
        Ok(())
    }

    fn carries_egress_checks(&self) -> bool {
        // Devices the user named are what they chose to watch, not the node's every path.
        self.options.ifaces.is_empty() && !self.traced.is_empty()
    }

    fn print_facts(&self) {
        choice::print_facts(&self.facts, &self.traced);
        if self.alone && self.traced.is_empty() {
            log::warn!(
                "no veth or tunnel devices in tracer's network namespace: oversize and received errors are not seen (choose devices with --iface)"
            );
        }
    }

    fn btf_tracepoints(&self) -> Vec<(&'static str, &'static str)> {
        self.plan.as_ref().map(tracing_hooks).unwrap_or_default()
    }

    fn classifiers(&self) -> Vec<&'static str> {
        tc::programs_needed(&self.traced, !self.options.ifaces.is_empty())
    }

    fn attach(&mut self, ebpf: &mut Ebpf, ctx: &AttachContext<'_>) -> anyhow::Result<()> {
        let plan = self.plan.as_ref().context("mtu: attach before plan")?;
        attach_tracing(ebpf, plan, ctx.btf)?;
        let attached = tc::attach(ebpf, &self.traced, !self.options.ifaces.is_empty())?;
        let tc_devices = attached
            .devices
            .iter()
            .map(|a| decode::TcDevice { ifindex: a.device.ifindex, name: a.device.name.clone(), netns: a.netns_inode, mtu: a.device.mtu })
            .collect();
        self.decoder = Some(decode::Decoder { clock: Clock::new(), reasons: plan.reasons.clone(), tc_devices });
        self.tc = Some(attached);
        Ok(())
    }

    fn tc_devices(&self) -> Vec<String> {
        self.tc.iter().flat_map(|t| t.devices.iter().map(|a| choice::label(&a.device))).collect()
    }

    fn decode(&mut self, _header: &EventHeader, bytes: &[u8]) -> Option<Event> {
        self.decoder.as_ref()?.decode(bytes)
    }

    fn maintain(&mut self, ebpf: &mut Ebpf) {
        if self.follow.as_mut().is_some_and(|f| f.due(std::time::Instant::now())) {
            self.follow_devices(ebpf);
        }
    }

    fn detach(&mut self) {
        // tc first, inside each device's namespace; the tracepoints go with the object.
        self.follow = None;
        self.tc = None;
    }

    fn check_row(&self, planned: &Result<(), String>, privileged: bool, hooks: &BTreeMap<&'static str, HookSupport>) -> CheckRow {
        let command = FamilyId::Mtu.command();
        let Some(plan) = self.plan.as_ref().filter(|_| planned.is_ok()) else {
            return CheckRow::not_running(command, planned.clone().err().unwrap_or_default());
        };
        let attach = if plan.icmp_send { "tp_btf/icmp_send" } else { "tp_btf/kfree_skb" };
        let tcx = hooks.get(hooks::TCX).and_then(|h| h.available);
        let tc = match (tc::uses_tcx(), tcx) {
            (true, Some(false)) => "tc via TCX, which this kernel refused (tc attach will fail)",
            (true, _) => "tc via TCX links",
            (false, _) => "tc via a clsact qdisc (no TCX before 6.6)",
        };
        let mut detail = format!("via {}; {tc} on pod veths and tunnels (or --iface)", describe(plan));
        if !plan.missing.is_empty() {
            detail.push_str(&format!(" (without: {})", plan.missing.join("; ")));
        }
        let mut row = CheckRow::on_hook(command, planned, privileged, hooks, (hooks::TP_BTF, attach), detail);
        // mtu's tc programs go through TCX links where aya uses them (kernel >= 6.6).
        if row.runs && tc::uses_tcx() {
            row.also_uses = Some(hooks::TCX);
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_on_the_running_kernel() {
        if !std::path::Path::new(crate::kernel::btf::VMLINUX_BTF).exists() {
            eprintln!("SKIPPED: no kernel BTF on {}", crate::kernel::release());
            return;
        }
        let btf = KernelBtf::load(None).unwrap();
        let p = plan(&btf, SentHook::Auto).expect("mtu plan");
        assert_eq!(p.config.valid, 1);
        // What the kernel has decides; the plan must agree with BTF either way.
        let has_tp = btf.tracepoint_params("icmp_send").is_ok();
        assert_eq!(p.icmp_send, has_tp);
        if has_tp {
            assert_eq!((p.config.icmp_skb_arg, p.config.icmp_type_arg, p.config.icmp_code_arg), (0, 1, 2));
            assert_eq!(p.config.egress_sent_v4, 0);
        } else {
            assert_eq!(p.config.egress_sent_v4, 1);
        }
        if let Some(r) = &p.reasons {
            assert_eq!(r.value("PKT_TOO_BIG").unwrap_or(MtuConfig::ABSENT), p.config.reason_pkt_too_big);
        }
        // Forcing tc leaves icmp_send out on any kernel.
        let p = plan(&btf, SentHook::Tc).expect("mtu plan with tc");
        assert!(!p.icmp_send && p.config.egress_sent_v4 == 1 && p.config.icmp_skb_arg == MtuConfig::ABSENT);
        assert_eq!(plan(&btf, SentHook::IcmpSend).is_ok(), has_tp, "an explicit icmp_send needs the tracepoint");
    }
}
