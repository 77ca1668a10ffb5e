//! Conntrack NAT: plans the net_dev_start_xmit BTF tracepoint and the `struct nf_conn` layout
//! (from vmlinux, or nf_conntrack's module BTF when conntrack is a module), and attaches.

pub mod ctnetlink;
pub mod decode;

use anyhow::Context as _;
use aya::{Btf, Ebpf, programs::BtfTracePoint};
use tracer_common::nat::NatConfig;

use super::CannotRun;
use crate::kernel::btf::{KernelBtf, ParamType};

const PROBE: &str = "nat";
const PROGRAM: &str = "nat_xmit";
const TRACEPOINT: &str = "net_dev_start_xmit";

/// `enum ip_conntrack_status` masks userspace reads back from the events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusBits {
    pub src_nat: u32,
    pub dst_nat: u32,
    pub seen_reply: u32,
    pub assured: u32,
}

/// The program's configuration for this kernel. Conntrack must be present (built in, or its
/// module loaded: without it nothing is NATed and there is nothing to see).
pub fn plan(btf: &mut KernelBtf) -> Result<(NatConfig, StatusBits), CannotRun> {
    let cannot = |reason: String| CannotRun { probe: PROBE, reason };
    let module = btf.with_module("nf_conntrack").map_err(|e| cannot(format!("reading nf_conntrack's BTF: {e}")))?;
    if !module && btf.offset_of("nf_conn", "status").is_err() {
        return Err(cannot(
            "conntrack is not loaded (no nf_conntrack module, not built in): nothing on this node is NATed yet".into(),
        ));
    }
    let params = btf.tracepoint_params(TRACEPOINT).map_err(|e| cannot(format!("tp_btf/{TRACEPOINT}: {e}")))?;
    let skb_arg = params
        .iter()
        .position(|p| *p == ParamType::StructPtr("sk_buff".into()))
        .ok_or_else(|| cannot(format!("tp_btf/{TRACEPOINT} has no struct sk_buff * argument")))?;
    let off = |s: &str, m: &str| btf.offset_of(s, m).map_err(|e| cannot(format!("{s}.{m}: {e}")));
    let tuplehash = off("nf_conn", "tuplehash")?;
    let hash_size = btf.size_of("nf_conntrack_tuple_hash").map_err(|e| cannot(e.to_string()))?;
    let tuple_in_hash = off("nf_conntrack_tuple_hash", "tuple")?;
    let status = btf.enum_values("ip_conntrack_status").map_err(|e| cannot(format!("enum ip_conntrack_status: {e}")))?;
    let bit = |name: &str| -> Result<u32, CannotRun> {
        status
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v as u32)
            .ok_or_else(|| cannot(format!("enum ip_conntrack_status has no {name}")))
    };
    let bits = StatusBits {
        src_nat: bit("IPS_SRC_NAT")?,
        dst_nat: bit("IPS_DST_NAT")?,
        seen_reply: bit("IPS_SEEN_REPLY")?,
        assured: bit("IPS_ASSURED")?,
    };
    let config = NatConfig {
        valid: 1,
        skb_arg: skb_arg as u32,
        skb_nfct: off("sk_buff", "_nfct")?,
        ct_status: off("nf_conn", "status")?,
        ct_orig_tuple: tuplehash + tuple_in_hash,
        ct_reply_tuple: tuplehash + hash_size + tuple_in_hash,
        tuple_src_u3: off("nf_conntrack_tuple", "src.u3")?,
        tuple_src_port: off("nf_conntrack_tuple", "src.u.all")?,
        tuple_src_l3num: off("nf_conntrack_tuple", "src.l3num")?,
        tuple_dst_u3: off("nf_conntrack_tuple", "dst.u3")?,
        tuple_dst_port: off("nf_conntrack_tuple", "dst.u.all")?,
        tuple_dst_protonum: off("nf_conntrack_tuple", "dst.protonum")?,
        nat_mask: bits.src_nat | bits.dst_nat,
        report_mask: bits.seen_reply | bits.assured,
    };
    Ok((config, bits))
}

pub fn attach(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
    let prog: &mut BtfTracePoint =
        ebpf.program_mut(PROGRAM).context("nat_xmit program missing from the object")?.try_into()?;
    prog.load(TRACEPOINT, &btf).with_context(|| format!("loading tp_btf/{TRACEPOINT}"))?;
    prog.attach().with_context(|| format!("attaching tp_btf/{TRACEPOINT}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            }
            Err(e) => eprintln!("SKIPPED: {e} (kernel {})", crate::kernel::release()),
        }
    }
}
