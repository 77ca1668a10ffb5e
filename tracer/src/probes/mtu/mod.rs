//! MTU failures. Plans the hooks this kernel has — tp_btf/icmp_send (frag-needed this node
//! sends, kernel >= 6.10), tp_btf/kfree_skb (PKT_TOO_BIG drops, dropped frag-needed and
//! packet-too-big), tc on chosen devices (errors received, ICMPv6 ones sent, oversize packets)
//! — and attaches them. Without icmp_send, IPv4 frag-needed sent is seen at tc egress instead.

pub mod decode;
pub mod devices;
pub mod tc;

use anyhow::Context as _;
use aya::{Btf, Ebpf, programs::BtfTracePoint};
use tracer_common::{drop::DropConfig, mtu::MtuConfig};

use super::CannotRun;
use crate::{
    cli::{HookChoice, SentHook},
    kernel::{
        btf::{KernelBtf, ParamType},
        drop_reasons::DropReasons,
    },
    probes::drops,
};

const PROBE: &str = "mtu";
/// Program names in tracer-ebpf/src/main.rs.
const PROG_ICMP_SEND: &str = "mtu_icmp_send";
const PROG_DROP: &str = "mtu_drop";

/// How the MTU probe runs on this kernel.
#[derive(Debug, Clone)]
pub struct Plan {
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
pub fn plan(btf: &KernelBtf, sent: SentHook) -> Result<Plan, CannotRun> {
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
    let skb = params
        .iter()
        .position(|p| *p == ParamType::StructPtr("sk_buff".into()))
        .ok_or("tp_btf/icmp_send has no struct sk_buff * argument")?;
    // (skb, int type, int code) since the tracepoint appeared; the two ints follow the skb.
    if params.len() < skb + 3 {
        return Err(format!("tp_btf/icmp_send has {} arguments, expected skb, type, code", params.len()));
    }
    Ok((skb as u32, skb as u32 + 1, skb as u32 + 2))
}

/// Loads and attaches the BTF tracepoints. Links live as long as `ebpf`.
pub fn attach_tracing(ebpf: &mut Ebpf, plan: &Plan) -> anyhow::Result<()> {
    let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
    let mut hooks = vec![(PROG_DROP, "kfree_skb")];
    if plan.icmp_send {
        hooks.push((PROG_ICMP_SEND, "icmp_send"));
    }
    for (name, tracepoint) in hooks {
        let prog: &mut BtfTracePoint = ebpf.program_mut(name).with_context(|| format!("{name} missing from the object"))?.try_into()?;
        prog.load(tracepoint, &btf).with_context(|| format!("loading tp_btf/{tracepoint}"))?;
        prog.attach().with_context(|| format!("attaching tp_btf/{tracepoint}"))?;
    }
    Ok(())
}

/// The tracing hooks as `check` and the start-up line name them.
pub fn describe(plan: &Plan) -> String {
    let mut parts = Vec::new();
    if plan.icmp_send {
        parts.push("tp_btf/icmp_send");
    }
    parts.push("tp_btf/kfree_skb");
    parts.push(if tc::uses_tcx() { "tc (TCX)" } else { "tc (clsact)" });
    parts.join(", ")
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
