//! Conntrack NAT: plans the `struct nf_conn` layout (from vmlinux, or nf_conntrack's module BTF
//! when conntrack is a module) and where each packet's entry is checked: in the tc egress
//! classifiers when a family of the run attaches them to the node's devices ([`Hook`]), else on
//! the net_dev_start_xmit BTF tracepoint, which sees every transmit of every namespace.

pub(crate) mod ctnetlink;
pub(crate) mod decode;
pub(crate) mod detail;
pub(crate) mod tracking;

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use aya::{Btf, Ebpf};
use tracer_common::{
    event::EventHeader,
    kfunc::KFUNC_MARK_CAST_TO_KERN_CTX,
    nat::{NAT_SPAN, NatConfig},
};
use tracking::{Ends, NoReply};

use super::{AttachContext, CannotRun, CheckRow, Family, FamilyId, PlanContext, PlanError};
use crate::{
    events::{Clock, Event},
    kernel::{
        btf::{KernelBtf, ParamType},
        hooks::{self, HookSupport},
    },
    loader::{Globals, KernelCounts},
    pods::services::ServiceNames,
    usage::{UsageError, parse_duration},
};

const PROBE: &str = "nat";
const PROGRAM: &str = "nat_xmit";
const TRACEPOINT: &str = "net_dev_start_xmit";
/// The kfunc the classifiers read `_nfct` through (kernel >= 6.2).
const CAST_TO_KERN_CTX: &str = "bpf_cast_to_kern_ctx";

impl Hook {
    /// The hook `command` runs with: `diagnose` takes the tracepoint unless told otherwise, as
    /// its `service-not-translated` rests on the absence of a DNAT, which only a check of every
    /// transmit can show (a DNAT to a backend reached by the uplink leaves no classified device);
    /// a ten-second run can pay for it. `watch` and `serve` run long, on busy nodes.
    pub(crate) fn for_command(self, command: super::CommandId) -> Hook {
        match (self, command) {
            (Hook::Auto, super::CommandId::Diagnose) => Hook::Xmit,
            (hook, _) => hook,
        }
    }
}

/// How the family's hook reads when the check rides in the classifiers (the start of its
/// [`Family::describe`], as `watch`'s attached line and a recording's `probes` show it).
const IN_CLASSIFIERS: &str = "tc egress";

/// Whether `described` (the NAT family's hook, as [`Family::describe`] said it, live or in a
/// recording) is the check in the classifiers, which sees NAT only where packets leave the
/// node's pod veths and tunnels.
pub(crate) fn in_classifiers(described: &str) -> bool {
    described.starts_with(IN_CLASSIFIERS)
}

/// `--nat-hook`: where each packet's conntrack entry is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Hook {
    /// tc where the run's egress classifiers cover the node's devices (the MTU family on the pod
    /// veths and tunnels of tracer's own namespace), else xmit
    #[default]
    Auto,
    /// Inside the egress classifiers: one check a packet, where it leaves a pod veth or tunnel
    /// of tracer's namespace
    Tc,
    /// BTF tracepoint net_dev_start_xmit: every transmit of every namespace (each hop of a
    /// forwarded packet)
    Xmit,
}

/// `tracer nat`'s own flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Mark connections with no reply after this long (e.g. 1s, 500ms)
    #[arg(long, value_name = "DUR", default_value = "3s")]
    pub reply_timeout: String,
}

impl super::FamilyArgs for Args {
    fn into_options(self, options: &mut super::FamilyOptions) -> Result<(), UsageError> {
        options.nat.reply_timeout = parse_reply_timeout(&self.reply_timeout)?;
        Ok(())
    }
}

/// `--reply-timeout`: how long a NATed connection may wait for its first reply.
pub(crate) fn parse_reply_timeout(text: &str) -> Result<Duration, UsageError> {
    parse_duration(text).map_err(|_| UsageError(format!("--reply-timeout {text}: expected a duration such as 500ms, 3s or 1m")))
}

/// The program's global (tracer-ebpf/src/nat.rs).
const NAT_CONFIG: &str = "NAT_CONFIG";

/// `enum ip_conntrack_status` masks userspace reads back from the events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StatusBits {
    pub src_nat: u32,
    pub dst_nat: u32,
    pub seen_reply: u32,
    pub assured: u32,
}

/// The program's configuration for this kernel. Conntrack must be present (built in, or its
/// module loaded: without it nothing is NATed and there is nothing to see).
pub(crate) fn plan(btf: &mut KernelBtf) -> Result<(NatConfig, StatusBits), CannotRun> {
    let cannot = |reason: String| CannotRun { probe: PROBE, reason };
    let module = btf.with_module("nf_conntrack").map_err(|e| cannot(format!("reading nf_conntrack's BTF: {e}")))?;
    if !module && btf.offset_of("nf_conn", "status").is_err() {
        return Err(cannot("conntrack is not loaded (no nf_conntrack module, not built in): nothing on this node is NATed yet".into()));
    }
    layout(btf)
}

/// The program's layouts and the status bits, from BTF that describes conntrack.
pub(crate) fn layout(btf: &KernelBtf) -> Result<(NatConfig, StatusBits), CannotRun> {
    let cannot = |reason: String| CannotRun { probe: PROBE, reason };
    let params = btf.tracepoint_params(TRACEPOINT).map_err(|e| cannot(format!("tp_btf/{TRACEPOINT}: {e}")))?;
    let skb_arg = params
        .iter()
        .position(|p| *p == ParamType::StructPtr("sk_buff".into()))
        .ok_or_else(|| cannot(format!("tp_btf/{TRACEPOINT} has no struct sk_buff * argument")))?;
    // The program reads the skb from the context's first slot at a fixed offset (the verifier
    // keeps a pointer's BTF type only for such a load: the cheap per-packet exit needs it).
    if skb_arg != 0 {
        return Err(cannot(format!("tp_btf/{TRACEPOINT}'s struct sk_buff * is argument {skb_arg}, tracer reads argument 0")));
    }
    let off = |s: &str, m: &str| btf.offset_of(s, m).map_err(|e| cannot(format!("{s}.{m}: {e}")));
    let tuplehash = off("nf_conn", "tuplehash")?;
    let hash_size = btf.size_of("nf_conntrack_tuple_hash").map_err(|e| cannot(e.to_string()))?;
    let tuple_in_hash = off("nf_conntrack_tuple_hash", "tuple")?;
    let status = btf.enum_values("ip_conntrack_status").map_err(|e| cannot(format!("enum ip_conntrack_status: {e}")))?;
    let bit = |name: &str| -> Result<u32, CannotRun> {
        status.iter().find(|(n, _)| n == name).map(|(_, v)| *v as u32).ok_or_else(|| cannot(format!("enum ip_conntrack_status has no {name}")))
    };
    // Offsets from a --btf file can be anything: past 4 GiB is malformed BTF, not a wrapped sum.
    let sum = |parts: &[u32]| {
        parts
            .iter()
            .try_fold(0u32, |total, part| total.checked_add(*part))
            .ok_or_else(|| cannot("nf_conn's tuples lie past 4 GiB (malformed BTF)".into()))
    };
    let (ct_status, ct_orig_tuple) = (off("nf_conn", "status")?, sum(&[tuplehash, tuple_in_hash])?);
    let tuple_fields = [
        off("nf_conntrack_tuple", "src.u3")?,
        off("nf_conntrack_tuple", "src.u.all")?,
        off("nf_conntrack_tuple", "dst.u3")?,
        off("nf_conntrack_tuple", "dst.u.all")?,
    ];
    let bits =
        StatusBits { src_nat: bit("IPS_SRC_NAT")?, dst_nat: bit("IPS_DST_NAT")?, seen_reply: bit("IPS_SEEN_REPLY")?, assured: bit("IPS_ASSURED")? };
    let config = NatConfig {
        valid: 1,
        skb_arg: skb_arg as u32,
        skb_nfct: off("sk_buff", "_nfct")?,
        ct_status,
        ct_orig_tuple,
        ct_reply_tuple: sum(&[tuplehash, hash_size, tuple_in_hash])?,
        tuple_src_u3: off("nf_conntrack_tuple", "src.u3")?,
        tuple_src_port: off("nf_conntrack_tuple", "src.u.all")?,
        tuple_src_l3num: off("nf_conntrack_tuple", "src.l3num")?,
        tuple_dst_u3: off("nf_conntrack_tuple", "dst.u3")?,
        tuple_dst_port: off("nf_conntrack_tuple", "dst.u.all")?,
        tuple_dst_protonum: off("nf_conntrack_tuple", "dst.protonum")?,
        nat_mask: bits.src_nat | bits.dst_nat,
        report_mask: bits.seen_reply | bits.assured,
        span_fits: u32::from(span_fits(ct_orig_tuple, ct_status, &tuple_fields)),
        ctinfo_established: NatConfig::NO_CTINFO,
        ctinfo_established_reply: NatConfig::NO_CTINFO,
        tc_read: NatConfig::TC_OFF,
    };
    // Without these the program still works, checking every packet's entry: not a reason to
    // refuse the family.
    let config = match established_ctinfo(btf) {
        Some((established, reply)) => NatConfig { ctinfo_established: established, ctinfo_established_reply: reply, ..config },
        None => {
            log::debug!("nat: enum ip_conntrack_info not in BTF: every conntracked packet's entry is read");
            config
        }
    };
    Ok((config, bits))
}

/// `enum ip_conntrack_info`'s IP_CT_ESTABLISHED and IP_CT_ESTABLISHED_REPLY, when the BTF has
/// them and they fit `_nfct`'s three low bits.
fn established_ctinfo(btf: &KernelBtf) -> Option<(u32, u32)> {
    let values = btf.enum_values("ip_conntrack_info").ok()?;
    let value = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| *v).filter(|v| *v < 8).map(|v| v as u32);
    Some((value("IP_CT_ESTABLISHED")?, value("IP_CT_ESTABLISHED_REPLY")?))
}

/// Whether `status` (its low word: the bits tracer reads) and the original tuple's addresses and
/// ports (`tuple_fields`, offsets inside the tuple; 4 bytes read at each) all lie inside the
/// [`NAT_SPAN`] bytes that start at the original tuple. Any BTF may say anything: what does not
/// fit is read field by field.
fn span_fits(orig_tuple: u32, status: u32, tuple_fields: &[u32]) -> bool {
    let inside = |at: Option<u32>| at.is_some_and(|at| at.checked_add(4).is_some_and(|end| end as usize <= NAT_SPAN));
    inside(status.checked_sub(orig_tuple)) && tuple_fields.iter().all(|f| inside(Some(*f)))
}

/// How the classifiers read `sk_buff._nfct` on this kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcRead {
    /// Through `bpf_cast_to_kern_ctx`, whose vmlinux BTF id this is: one load.
    Kfunc(u32),
    /// bpf_probe_read_kernel at the context's address (the kernel's `struct sk_buff *`).
    ProbeRead,
}

impl TcRead {
    fn describe(self) -> &'static str {
        match self {
            TcRead::Kfunc(_) => "via bpf_cast_to_kern_ctx",
            TcRead::ProbeRead => "via bpf_probe_read_kernel",
        }
    }
}

/// The kfunc when the running kernel has it (6.2 on) and `btf` is that kernel's own: a kfunc
/// call names its function by the running kernel's BTF id, so a `--btf` file cannot say it.
fn tc_read(btf: &KernelBtf) -> TcRead {
    match btf.is_running_kernels().then(|| btf.vmlinux_id(CAST_TO_KERN_CTX, true)) {
        Some(Ok(id)) => TcRead::Kfunc(id),
        _ => TcRead::ProbeRead,
    }
}

pub(crate) fn attach(ebpf: &mut Ebpf, btf: &Btf) -> anyhow::Result<()> {
    super::attach_btf_tracepoint(ebpf, PROGRAM, TRACEPOINT, btf)
}

/// What the user chose for the NAT family.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// A connection with no reply after this long is reported `no_reply`.
    pub reply_timeout: Duration,
    /// `--nat-hook` (watch, diagnose, serve; the family's own command takes the tracepoint).
    pub hook: Hook,
}

impl Default for Options {
    fn default() -> Self {
        Options { reply_timeout: Duration::from_secs(3), hook: Hook::Auto }
    }
}

/// The NAT family: conntrack-rewritten connections, their replies (or none) and their ends.
pub(crate) struct Nat {
    options: Options,
    planned: Option<(NatConfig, StatusBits)>,
    /// How the classifiers read `_nfct` when they carry the check (the kfunc's id on this
    /// kernel, or a probe read); set by `plan`.
    tc_read: TcRead,
    /// The check rides in the egress classifiers (settled by `configure`); else the tracepoint.
    in_classifiers: bool,
    decoder: Option<decode::Decoder>,
    services: Option<ServiceNames>,
    no_reply: NoReply,
    ends: Option<Ends>,
    /// Connections marked no_reply (events tracer made, not kernel records).
    marked: u64,
}

impl Nat {
    pub(crate) fn new(options: Options) -> Self {
        let no_reply = NoReply::new(options.reply_timeout.as_nanos() as i128);
        Nat {
            options,
            planned: None,
            tc_read: TcRead::ProbeRead,
            in_classifiers: false,
            decoder: None,
            services: None,
            no_reply,
            ends: None,
            marked: 0,
        }
    }
}

impl Family for Nat {
    fn id(&self) -> FamilyId {
        FamilyId::Nat
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn plan(&mut self, ctx: &mut PlanContext<'_>) -> Result<(), PlanError> {
        if self.options.hook == Hook::Tc && !ctx.egress_checks {
            return Err(UsageError(
                "--nat-hook tc: no egress classifiers in this run to carry the check (they need the mtu probe, no --iface, and a veth or tunnel in tracer's network namespace)"
                    .into(),
            )
            .into());
        }
        self.planned = Some(plan(ctx.btf)?);
        self.tc_read = tc_read(ctx.btf);
        Ok(())
    }

    fn describe(&self) -> String {
        if self.in_classifiers {
            format!("{IN_CLASSIFIERS} (in mtu's classifiers, _nfct {})", self.tc_read.describe())
        } else {
            format!("tp_btf/{TRACEPOINT}")
        }
    }

    fn describe_alone(&self) -> String {
        format!("{}; no reply after {:?} is marked", self.describe(), self.options.reply_timeout)
    }

    fn configure(&mut self, globals: &mut Globals) -> Result<(), CannotRun> {
        let (config, _) = self.planned.as_ref().ok_or(CannotRun { probe: PROBE, reason: "not planned".into() })?;
        self.in_classifiers = match self.options.hook {
            Hook::Xmit => false,
            Hook::Auto => globals.egress_checks,
            Hook::Tc if globals.egress_checks => true,
            // Planned with classifiers that then could not start (their family failed to configure).
            Hook::Tc => return Err(CannotRun { probe: PROBE, reason: "--nat-hook tc: the egress classifiers cannot start".into() }),
        };
        let tc_read = match (self.in_classifiers, self.tc_read) {
            (false, _) => NatConfig::TC_OFF,
            (true, TcRead::Kfunc(_)) => NatConfig::TC_KFUNC,
            (true, TcRead::ProbeRead) => NatConfig::TC_PROBE_READ,
        };
        globals.set(NAT_CONFIG, &NatConfig { tc_read, ..*config });
        if let TcRead::Kfunc(id) = self.tc_read {
            globals.set_kfunc(KFUNC_MARK_CAST_TO_KERN_CTX, Some(id));
        }
        Ok(())
    }

    fn btf_tracepoints(&self) -> Vec<(&'static str, &'static str)> {
        if self.planned.is_some() && !self.in_classifiers { vec![(PROGRAM, TRACEPOINT)] } else { Vec::new() }
    }

    fn attach(&mut self, ebpf: &mut Ebpf, ctx: &AttachContext<'_>) -> anyhow::Result<()> {
        let (_, bits) = self.planned.context("nat: attach before plan")?;
        // In the classifiers, the check is attached with them (the MTU family's attach, which
        // the session's configure order put ahead of this family's).
        if !self.in_classifiers {
            attach(ebpf, ctx.btf)?;
        }
        // Before `attached`: a connection opened after that line must have its end reported.
        self.ends = Some(Ends::start());
        self.services = Some(ctx.services.clone());
        self.decoder = Some(decode::Decoder { clock: Clock::new(), bits });
        Ok(())
    }

    fn decode(&mut self, _header: &EventHeader, bytes: &[u8]) -> Option<Event> {
        let mut event = self.decoder.as_ref()?.decode(bytes)?;
        // Named when decoded, not at output: Services are not kept with their lifetimes.
        if let Some(services) = &self.services {
            services.annotate(&mut event);
        }
        self.no_reply.saw(&event);
        if let Some(ends) = &mut self.ends {
            ends.saw(&event);
        }
        Some(event)
    }

    fn tick(&mut self, now: i128) -> Vec<Event> {
        let mut out = self.no_reply.expired(now);
        self.marked += out.len() as u64;
        if let Some(ends) = &mut self.ends {
            out.extend(ends.ended(now));
        }
        out
    }

    fn report(&self, _counts: KernelCounts) {
        // Not kernel records, so not in the counts: say how many lines tracer added.
        if self.marked > 0 {
            eprintln!("tracer: nat: {} connections got no reply within {:?} (marked no_reply)", self.marked, self.options.reply_timeout);
        }
        if let Some(ends) = &self.ends {
            ends.report();
        }
    }

    fn check_row(&self, planned: &Result<(), String>, privileged: bool, hooks: &BTreeMap<&'static str, HookSupport>) -> CheckRow {
        let command = FamilyId::Nat.command();
        if let Err(why) = planned {
            return CheckRow::not_running(command, why.clone());
        }
        if !privileged {
            return CheckRow::not_running(command, "would use tp_btf/net_dev_start_xmit, but needs root".into());
        }
        let classifiers = match self.tc_read {
            TcRead::Kfunc(_) => {
                "watch, diagnose and serve check inside the mtu classifiers (_nfct via bpf_cast_to_kern_ctx) where those cover the node"
            }
            TcRead::ProbeRead => {
                "watch, diagnose and serve check inside the mtu classifiers (_nfct via bpf_probe_read_kernel) where those cover the node"
            }
        };
        CheckRow {
            command,
            runs: hooks.get(hooks::TP_BTF).is_none_or(|h| h.available != Some(false)),
            hook: Some(hooks::TP_BTF),
            attach: Some("tp_btf/net_dev_start_xmit"),
            detail: format!("via tp_btf/net_dev_start_xmit (nf_conn layout from BTF); {classifiers}"),
            also_uses: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnose_takes_the_tracepoint_unless_told_and_the_classifiers_are_told_by_their_description() {
        use super::super::CommandId;
        assert_eq!(Hook::Auto.for_command(CommandId::Diagnose), Hook::Xmit);
        assert_eq!(Hook::Tc.for_command(CommandId::Diagnose), Hook::Tc);
        assert_eq!(Hook::Auto.for_command(CommandId::Watch), Hook::Auto);
        assert_eq!(Hook::Auto.for_command(CommandId::Serve), Hook::Auto);
        let mut nat = Nat::new(Options::default());
        assert!(!in_classifiers(&nat.describe()));
        nat.in_classifiers = true;
        assert!(in_classifiers(&nat.describe()), "{}", nat.describe());
    }

    #[test]
    fn plans_on_the_running_kernel() {
        let Ok(mut btf) = KernelBtf::load(None) else {
            eprintln!("SKIPPED: no kernel BTF on {}", crate::kernel::release());
            return;
        };
        match plan(&mut btf) {
            Ok((c, bits)) => {
                assert_eq!(bits.seen_reply, 1 << 1, "IPS_SEEN_REPLY is bit 1 in the uAPI");
                // Two tuple_hash entries of 56 bytes on every 64-bit kernel (hlist node + tuple).
                assert_eq!(c.ct_reply_tuple - c.ct_orig_tuple, 56);
                assert_eq!(c.tuple_src_u3, 0, "a tuple starts with the source address");
                assert_ne!(c.nat_mask, 0);
                assert_eq!(c.skb_arg, 0);
                assert_eq!(c.span_fits, 1, "the tuple and status within {NAT_SPAN} bytes: {c:?}");
                assert_eq!((c.ctinfo_established, c.ctinfo_established_reply), (0, 3), "enum ip_conntrack_info is uAPI");
            }
            Err(e) => eprintln!("SKIPPED: {e} (kernel {})", crate::kernel::release()),
        }
    }

    #[test]
    fn plans_from_btf_that_describes_conntrack() {
        let btf = KernelBtf::from_bytes(&crate::fuzzing::btf_writer::vmlinux(true).finish()).expect("parses");
        let (c, bits) = layout(&btf).expect("a layout");
        assert_eq!(
            (c.ct_orig_tuple, c.ct_reply_tuple),
            (16 + 16, 16 + 56 + 16),
            "two tuple hashes of 56 bytes from byte 16, the tuple at 16 in each"
        );
        assert_eq!((bits.dst_nat, bits.seen_reply), (32, 2));
        assert_eq!((c.ctinfo_established, c.ctinfo_established_reply), (0, 3));
    }

    #[test]
    fn btf_without_ip_conntrack_info_plans_a_program_that_checks_every_packet() {
        let btf = KernelBtf::from_bytes(&crate::fuzzing::btf_writer::vmlinux_without_conntrack_info()).expect("parses");
        let (c, _) = layout(&btf).expect("a layout");
        assert_eq!((c.ctinfo_established, c.ctinfo_established_reply), (NatConfig::NO_CTINFO, NatConfig::NO_CTINFO));
    }

    /// Found reading the code the btf fuzz target runs (not by the fuzzer in 500,000 runs): a
    /// --btf file whose `nf_conntrack_tuple_hash` claims a size near 4 GiB wrapped the reply
    /// tuple's offset (a panic with overflow checks on).
    #[test]
    fn a_conntrack_layout_past_4_gib_is_an_error_not_a_wrapped_offset() {
        let btf = KernelBtf::from_bytes(&crate::fuzzing::btf_writer::vmlinux_with_tuple_hash_size(u32::MAX - 8)).expect("parses");
        let Err(err) = layout(&btf) else { panic!("a layout past 4 GiB") };
        assert!(err.reason.contains("past 4 GiB"), "{}", err.reason);
    }
}
