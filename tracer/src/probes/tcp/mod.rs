//! TCP retransmits, resets and failed connects. Plans the BTF tracepoints this kernel has (and
//! where their socket arguments are), attaches them, and reads the kernel's per-flow map.

pub(crate) mod decode;
pub(crate) mod detail;

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use aya::{
    Btf, Ebpf,
    maps::{HashMap, MapData},
};
use tracer_common::{
    event::EventHeader,
    tcp::{FlowKey, FlowStats, TcpConfig},
};

use super::{AttachContext, CannotRun, CheckRow, Family, FamilyId, PlanContext, PlanError};
use crate::{
    events::{Clock, Event},
    kernel::{
        btf::{KernelBtf, ParamType, VMLINUX_BTF},
        hooks::{self, HookSupport},
    },
    loader::Globals,
};

const PROBE: &str = "retrans";
/// The programs' global (tracer-ebpf/src/tcp.rs).
const TCP_CONFIG: &str = "TCP_CONFIG";

/// One BTF tracepoint of the family: its program in tracer-ebpf/src/main.rs and what it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpTracepoint {
    pub program: &'static str,
    pub tracepoint: &'static str,
    /// Without it the command cannot do its job.
    pub required: bool,
}

pub(crate) const HOOKS: &[TcpTracepoint] = &[
    TcpTracepoint { program: "tcp_retransmit", tracepoint: "tcp_retransmit_skb", required: true },
    TcpTracepoint { program: "tcp_retransmit_synack", tracepoint: "tcp_retransmit_synack", required: false },
    TcpTracepoint { program: "tcp_send_reset", tracepoint: "tcp_send_reset", required: false },
    TcpTracepoint { program: "tcp_receive_reset", tracepoint: "tcp_receive_reset", required: false },
    TcpTracepoint { program: "tcp_set_state", tracepoint: "inet_sock_set_state", required: false },
];

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub config: TcpConfig,
    /// Hooks that will be attached.
    pub hooks: Vec<TcpTracepoint>,
    /// Optional hooks this kernel lacks, with why (warned about, Retis-style).
    pub missing: Vec<String>,
}

/// Finds each tracepoint's socket (and skb, state) arguments in BTF. A kernel without the
/// retransmit tracepoint cannot run this probe; any other missing hook is a warning.
pub(crate) fn plan(btf: &KernelBtf) -> Result<Plan, CannotRun> {
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(CannotRun { probe: PROBE, reason: format!("BTF tracepoints need the kernel's own BTF ({VMLINUX_BTF} is missing)") });
    }
    let mut config = TcpConfig::empty();
    let mut hooks = Vec::new();
    let mut missing = Vec::new();
    for hook in HOOKS {
        match layout(btf, hook.tracepoint, &mut config) {
            Ok(()) => hooks.push(*hook),
            Err(why) if hook.required => return Err(CannotRun { probe: PROBE, reason: why }),
            Err(why) => missing.push(why),
        }
    }
    Ok(Plan { config, hooks, missing })
}

fn layout(btf: &KernelBtf, tracepoint: &str, config: &mut TcpConfig) -> Result<(), String> {
    let params = btf.tracepoint_params(tracepoint).map_err(|e| format!("tp_btf/{tracepoint}: {e}"))?;
    let find = |name: &str| -> Option<u32> { params.iter().position(|p| *p == ParamType::StructPtr(name.into())).map(|i| i as u32) };
    let need = |name: &str| find(name).ok_or_else(|| format!("tp_btf/{tracepoint} has no struct {name} * argument"));
    match tracepoint {
        "tcp_retransmit_skb" => config.retransmit_sk = need("sock")?,
        "tcp_retransmit_synack" => {
            config.synack_sk = need("sock")?;
            config.synack_req = need("request_sock")?;
        }
        "tcp_send_reset" => {
            config.send_reset_sk = need("sock")?;
            config.send_reset_skb = need("sk_buff")?;
        }
        "tcp_receive_reset" => config.receive_reset_sk = need("sock")?,
        "inet_sock_set_state" => {
            config.set_state_sk = need("sock")?;
            // (sk, int oldstate, int newstate): the two plain integers after the socket.
            let ints: Vec<u32> = params.iter().enumerate().filter(|(_, p)| **p == ParamType::Other).map(|(i, _)| i as u32).collect();
            let [old, new, ..] = ints[..] else {
                return Err(format!("tp_btf/{tracepoint}: no oldstate/newstate arguments"));
            };
            config.set_state_old = old;
            config.set_state_new = new;
        }
        other => return Err(format!("{other}: not a TCP hook")),
    }
    Ok(())
}

/// Loads and attaches the planned programs; links live as long as `ebpf`.
pub(crate) fn attach(ebpf: &mut Ebpf, plan: &Plan, btf: &Btf) -> anyhow::Result<()> {
    for hook in &plan.hooks {
        super::attach_btf_tracepoint(ebpf, hook.program, hook.tracepoint, btf)?;
    }
    Ok(())
}

/// Every flow in the kernel's per-flow map.
pub(crate) fn read_flows(ebpf: &Ebpf) -> anyhow::Result<Vec<(FlowKey, FlowStats)>> {
    let map = ebpf.map("TCP_FLOWS").context("TCP_FLOWS map missing")?;
    let flows: HashMap<&MapData, FlowKey, FlowStats> = HashMap::try_from(map)?;
    // An entry evicted or added while iterating may be skipped or seen twice: dedupe by key.
    let mut out: Vec<(FlowKey, FlowStats)> = Vec::new();
    for item in flows.iter() {
        let (key, stats) = item.context("reading TCP_FLOWS")?;
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, stats));
        }
    }
    Ok(out)
}

/// What the user chose for the TCP family.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Each retransmit is a ring-buffer record; false (`retrans --top`): only counted per flow.
    pub stream_retransmits: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { stream_retransmits: true }
    }
}

/// The TCP family: retransmits, resets, failed connects, and the per-flow map.
pub(crate) struct Tcp {
    options: Options,
    plan: Option<Plan>,
    decoder: Option<decode::Decoder>,
}

impl Tcp {
    pub(crate) fn new(options: Options) -> Self {
        Tcp { options, plan: None, decoder: None }
    }
}

impl Family for Tcp {
    fn id(&self) -> FamilyId {
        FamilyId::Tcp
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn plan(&mut self, ctx: &mut PlanContext<'_>) -> Result<(), PlanError> {
        let plan = plan(ctx.btf)?;
        for why in &plan.missing {
            if ctx.alone {
                log::warn!("{why}; {} runs without it", FamilyId::Tcp.command());
            } else {
                log::warn!("{why}; the tcp probe runs without it");
            }
        }
        self.plan = Some(plan);
        Ok(())
    }

    fn describe(&self) -> String {
        let hooks: Vec<&str> = self.plan.iter().flat_map(|p| p.hooks.iter().map(|h| h.tracepoint)).collect();
        format!("tp_btf: {}", hooks.join(", "))
    }

    fn configure(&mut self, globals: &mut Globals) -> Result<(), CannotRun> {
        let plan = self.plan.as_ref().ok_or(CannotRun { probe: PROBE, reason: "not planned".into() })?;
        globals.set(TCP_CONFIG, &TcpConfig { stream_retransmits: u32::from(self.options.stream_retransmits), ..plan.config });
        Ok(())
    }

    fn btf_tracepoints(&self) -> Vec<(&'static str, &'static str)> {
        self.plan.as_ref().map(|p| p.hooks.iter().map(|h| (h.program, h.tracepoint)).collect()).unwrap_or_default()
    }

    fn attach(&mut self, ebpf: &mut Ebpf, ctx: &AttachContext<'_>) -> anyhow::Result<()> {
        attach(ebpf, self.plan.as_ref().context("tcp: attach before plan")?, ctx.btf)?;
        self.decoder = Some(decode::Decoder { clock: Clock::new() });
        Ok(())
    }

    fn decode(&mut self, header: &EventHeader, bytes: &[u8]) -> Option<Event> {
        self.decoder.as_ref()?.decode(header.kind, bytes)
    }

    fn check_row(&self, planned: &Result<(), String>, privileged: bool, hooks: &BTreeMap<&'static str, HookSupport>) -> CheckRow {
        let mut detail = self.describe().replacen("tp_btf: ", "via tp_btf: ", 1);
        if let Some(plan) = self.plan.as_ref().filter(|p| !p.missing.is_empty()) {
            detail.push_str(&format!(" (without: {})", plan.missing.join("; ")));
        }
        CheckRow::on_hook(FamilyId::Tcp.command(), planned, privileged, hooks, (hooks::TP_BTF, "tp_btf/tcp_retransmit_skb"), detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_every_hook_on_the_running_kernel() {
        let Ok(btf) = KernelBtf::load(None) else {
            eprintln!("SKIPPED: no kernel BTF on {}", crate::kernel::release());
            return;
        };
        let plan = plan(&btf).expect("this kernel has the TCP tracepoints");
        assert_eq!(plan.hooks.len(), HOOKS.len(), "missing: {:?}", plan.missing);
        // (sk, skb) and (sk, oldstate, newstate) on every kernel since 4.16.
        assert_eq!(plan.config.retransmit_sk, 0);
        assert_eq!(plan.config.send_reset_sk, 0);
        assert_eq!(plan.config.send_reset_skb, 1);
        assert_eq!((plan.config.set_state_old, plan.config.set_state_new), (1, 2));
        assert_eq!(plan.config.synack_req, 1);
    }
}
