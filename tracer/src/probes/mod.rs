//! Probe families, behind one trait. Each family is one folder here (`probes/FAMILY/`) that owns
//! its plan for this kernel (Retis' `can_run`), its kernel-side configuration, its attachments,
//! its decoder and run-time state, and its `check` row. Around it: a kernel program
//! (`tracer-ebpf/src/FAMILY.rs`) and its shared structs (`tracer-common/src/FAMILY.rs`).
//! ARCHITECTURE.md has the recipe for a new one.
//!
//! [`crate::session::Session`] is the one start sequence: it plans every family it is given,
//! configures, loads and attaches them, and dispatches records to them by kind. Commands pick
//! families ([`CommandId::families`]) and never know another family's internals.

pub(crate) mod drops;
pub(crate) mod mtu;
pub(crate) mod nat;
pub(crate) mod tcp;

use std::{collections::BTreeMap, io};

use aya::Ebpf;
use serde::Serialize;
use tcp::detail::TcpKind;
use tracer_common::event::EventHeader;
pub(crate) use tracer_common::family::FamilyId;

use crate::{
    events::Event,
    kernel::{
        btf::KernelBtf,
        features::{self, Need},
        hooks::HookSupport,
    },
    loader::{Globals, KernelCounts},
    output::{JsonFields, metrics::Cardinality, table::RowParts},
    pods::services::ServiceNames,
};

/// Why a probe cannot run on this kernel, said so the user can act on it.
#[derive(Debug, thiserror::Error)]
#[error("{probe}: {reason}")]
pub(crate) struct CannotRun {
    pub probe: &'static str,
    pub reason: String,
}

/// What planning a family can end in besides a plan.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PlanError {
    /// This kernel cannot run the family (left out of `watch`, an error for its own command).
    #[error(transparent)]
    CannotRun(#[from] CannotRun),
    /// The user's choices do not fit this kernel (a reason it does not have): exit 2.
    #[error(transparent)]
    Usage(#[from] crate::usage::UsageError),
}

/// What a family gets when it plans: the kernel's BTF (parsed once per run), and whether it runs
/// alone (its own command) or beside others (`watch`, `diagnose`, `serve`).
pub(crate) struct PlanContext<'a> {
    pub btf: &'a mut KernelBtf,
    pub alone: bool,
    /// A family of this run attaches egress classifiers to the node's devices that can carry
    /// another family's per-packet check ([`Family::carries_egress_checks`]).
    pub egress_checks: bool,
}

/// What a family gets when it attaches: the kernel BTF aya loads BTF tracepoints against (parsed
/// once for every family, from `--btf` when given), the Services known, and whether it runs alone.
pub(crate) struct AttachContext<'a> {
    pub btf: &'a aya::Btf,
    pub services: &'a ServiceNames,
    pub alone: bool,
}

/// One probe family. The session calls these in order: `prepare`, `plan`, `configure`,
/// `print_facts`, `attach`; then `decode`/`tick` while tracing; then `before_detach`, `detach`
/// and `report` at stop.
pub(crate) trait Family {
    /// Which family this is.
    fn id(&self) -> FamilyId;

    /// The family as itself, for a command that reads a family's own facts (`diagnose` reads
    /// the MTU family's devices).
    fn as_any(&self) -> &dyn std::any::Any;

    /// Checks of the user's choices that need no BTF (devices named with `--iface`), so bad input
    /// is refused in milliseconds.
    fn prepare(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Retis' `can_run`: works out the hooks and layouts for this kernel, or says why it cannot
    /// run. Degradations (an optional hook missing) are warned about here.
    fn plan(&mut self, ctx: &mut PlanContext<'_>) -> Result<(), PlanError>;

    /// The hooks it uses, as `watch`'s attached line, `check` and `diagnose`'s report name them.
    fn describe(&self) -> String;

    /// The detail of the `attached` line when the family runs alone (its own command).
    fn describe_alone(&self) -> String {
        self.describe()
    }

    /// Writes its kernel-side configuration into the globals, and settles what depends on the
    /// other families configured (the NAT check rides in the classifiers when a family that
    /// carries egress checks was configured: those are configured first). A family whose
    /// programs share a global with one configured before it, in a way that cannot work, says so
    /// as `CannotRun`.
    fn configure(&mut self, globals: &mut Globals) -> Result<(), CannotRun>;

    /// Whether its egress classifiers cover the node's own devices (the pod veths and tunnels of
    /// tracer's namespace, followed as they come and go), so another family's per-packet check
    /// can ride in them instead of running a program of its own for every packet. Known after
    /// `prepare`.
    fn carries_egress_checks(&self) -> bool {
        false
    }

    /// Facts printed before anything is loaded (the MTU family's device MTUs).
    fn print_facts(&self) {}

    /// The BTF tracepoints its `attach` will load, as (program, tracepoint), once planned: the
    /// session loads every family's at once, in parallel ([`load_programs`]), before any
    /// family attaches. One not listed is loaded by `attach` itself.
    fn btf_tracepoints(&self) -> Vec<(&'static str, &'static str)> {
        Vec::new()
    }

    /// The tc classifier programs its `attach` will load for the devices known once planned:
    /// loaded with the BTF tracepoints, in parallel ([`load_programs`]). One not listed (a
    /// device that appears later) is loaded by `attach` or `maintain` itself.
    fn classifiers(&self) -> Vec<&'static str> {
        Vec::new()
    }

    /// Loads and attaches its programs and fills its maps; starts its userspace state.
    fn attach(&mut self, ebpf: &mut Ebpf, ctx: &AttachContext<'_>) -> anyhow::Result<()>;

    /// Devices it attached tc programs to, for the `attached` line.
    fn tc_devices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Turns one of its records (a kind of [`FamilyId::kinds`]) into an event.
    fn decode(&mut self, header: &EventHeader, bytes: &[u8]) -> Option<Event>;

    /// Events it makes from what it has seen (a connection that got no reply in time), as of
    /// `now`; called every runner tick.
    fn tick(&mut self, _now: i128) -> Vec<Event> {
        Vec::new()
    }

    /// Keeps its attachments current while tracing, with the loaded object: the MTU family
    /// attaches its tc programs to devices that appeared and forgets those that went. Called
    /// every runner tick, before `tick`.
    fn maintain(&mut self, _ebpf: &mut Ebpf) {}

    /// Sets the metrics it keeps from its own maps rather than from events (the drops family's
    /// storm counts); `serve` calls it every second and once at stop.
    fn publish_metrics(&mut self, _ebpf: &Ebpf) {}

    /// Reads what it reports at stop from the kernel, while the programs are still attached.
    fn before_detach(&mut self, _ebpf: &Ebpf) -> anyhow::Result<()> {
        Ok(())
    }

    /// Undoes what dropping the object does not (tc attachments inside other namespaces).
    fn detach(&mut self) {}

    /// Lines printed after its `seen, delivered, lost` summary at stop.
    fn report(&self, _counts: KernelCounts) {}

    /// Its row in `tracer check` (named after its command), from its plan (`plan` was called;
    /// `planned` is its result), whether tracer runs privileged, and the hook kinds the kernel
    /// took a no-op program on.
    fn check_row(&self, planned: &Result<(), String>, privileged: bool, hooks: &BTreeMap<&'static str, HookSupport>) -> CheckRow;
}

/// Loads `program` as the BTF tracepoint `tracepoint`, against `btf` (parsed once per run by the
/// session), unless [`load_programs`] did, and attaches it. The link lives as long as
/// `ebpf`; dropping it detaches.
pub(crate) fn attach_btf_tracepoint(ebpf: &mut Ebpf, program: &str, tracepoint: &str, btf: &aya::Btf) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let prog: &mut aya::programs::BtfTracePoint =
        ebpf.program_mut(program).with_context(|| format!("{program} program missing from the object"))?.try_into()?;
    if prog.fd().is_err() {
        prog.load(tracepoint, btf).with_context(|| format!("loading tp_btf/{tracepoint}"))?;
    }
    prog.attach().with_context(|| format!("attaching tp_btf/{tracepoint}"))?;
    Ok(())
}

/// Most programs verified at once ([`load_programs`]): each verifier run holds its own
/// state in the kernel; `watch` has nine such programs today.
const MAX_LOADERS: usize = 16;

/// Loads the BTF tracepoint programs `wanted` (program, tracepoint) and the tc classifiers
/// `classifiers`, each on its own thread (up to [`MAX_LOADERS`]): the verifier runs in the loading thread, and the programs of `watch` took
/// it 120-180 ms one after another. One thread per program rather than per CPU: the programs
/// come in no fixed order (aya keeps them in a hash map) and differ sevenfold in verifier time,
/// so a queue on two threads sometimes started the longest last and ended up to its whole time
/// after the other thread; run all at once, the CPUs share them and finish together. Nothing is
/// attached here; on an error the programs loaded are unloaded with `ebpf`, as before.
pub(crate) fn load_programs(
    ebpf: &mut Ebpf,
    wanted: &[(&'static str, &'static str)],
    classifiers: &[&'static str],
    btf: &aya::Btf,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut jobs = Vec::new();
    for (name, program) in ebpf.programs_mut() {
        if let Some((_, tracepoint)) = wanted.iter().find(|(p, _)| *p == name) {
            let prog: &mut aya::programs::BtfTracePoint = program.try_into().with_context(|| format!("{name} is not a BTF tracepoint program"))?;
            if prog.fd().is_err() {
                jobs.push(LoadJob::Traced(prog, tracepoint));
            }
        } else if let Some(name) = classifiers.iter().find(|c| **c == name) {
            let prog: &mut aya::programs::SchedClassifier = program.try_into().with_context(|| format!("{name} is not a tc classifier program"))?;
            if prog.fd().is_err() {
                jobs.push(LoadJob::Classifier(prog, name));
            }
        }
    }
    let threads = jobs.len().min(MAX_LOADERS);
    let queue = std::sync::Mutex::new(jobs.into_iter());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> anyhow::Result<()> {
                    loop {
                        // A worker that panicked holding the lock took its job with it; the
                        // others' jobs are still good.
                        let next = queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next();
                        match next {
                            None => return Ok(()),
                            Some(LoadJob::Traced(prog, tracepoint)) => {
                                prog.load(tracepoint, btf).with_context(|| format!("loading tp_btf/{tracepoint}"))?;
                            }
                            Some(LoadJob::Classifier(prog, name)) => prog.load().with_context(|| format!("loading {name}"))?,
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a program-loading thread panicked"))?)
    })
}

/// A program [`load_programs`] loads: a BTF tracepoint program with its tracepoint, or a tc
/// classifier with its name.
enum LoadJob<'p> {
    Traced(&'p mut aya::programs::BtfTracePoint, &'static str),
    Classifier(&'p mut aya::programs::SchedClassifier, &'static str),
}

/// One command's row in `tracer check`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CheckRow {
    pub command: &'static str,
    pub runs: bool,
    /// The kind of hook it will use here (a key of `hooks`), null when it cannot run.
    pub hook: Option<&'static str>,
    /// The exact attach point.
    pub attach: Option<&'static str>,
    pub detail: String,
    /// A hook kind it uses besides `hook` (the MTU family's TCX links).
    #[serde(skip)]
    pub also_uses: Option<&'static str>,
}

impl CheckRow {
    /// The row of a command that cannot run here, and why.
    pub(crate) fn not_running(command: &'static str, detail: String) -> Self {
        CheckRow { command, runs: false, hook: None, attach: None, detail, also_uses: None }
    }

    /// The common shape of a family on one hook kind: planned (else why not), privileged (else
    /// "needs root"), and the kernel took a no-op program of that kind.
    pub(crate) fn on_hook(
        command: &'static str,
        planned: &Result<(), String>,
        privileged: bool,
        hooks: &BTreeMap<&'static str, HookSupport>,
        (kind, attach): (&'static str, &'static str),
        detail: String,
    ) -> Self {
        if let Err(why) = planned {
            return Self::not_running(command, why.clone());
        }
        if !privileged {
            return Self::not_running(command, format!("would use {attach}, but needs root"));
        }
        match hooks.get(kind).and_then(|h| h.available.map(|a| (a, &h.detail))) {
            Some((false, why)) => Self::not_running(command, format!("this kernel refused a no-op {kind} program: {why}")),
            _ => CheckRow { command, runs: true, hook: Some(kind), attach: Some(attach), detail, also_uses: None },
        }
    }
}

/// The commands that load programs. Each names its families; what it needs follows from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandId {
    Drops,
    Retrans,
    Nat,
    Mtu,
    Watch,
    Diagnose,
    Serve,
}

impl CommandId {
    /// Every tracing command.
    pub(crate) const ALL: [CommandId; 7] =
        [CommandId::Drops, CommandId::Retrans, CommandId::Nat, CommandId::Mtu, CommandId::Watch, CommandId::Diagnose, CommandId::Serve];

    /// As typed on the command line.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            CommandId::Drops => "drops",
            CommandId::Retrans => "retrans",
            CommandId::Nat => "nat",
            CommandId::Mtu => "mtu",
            CommandId::Watch => "watch",
            CommandId::Diagnose => "diagnose",
            CommandId::Serve => "serve",
        }
    }

    /// The command named `name`, if it is a tracing command.
    pub(crate) fn parse(name: &str) -> Option<CommandId> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The families it runs.
    pub(crate) const fn families(self) -> &'static [FamilyId] {
        match self {
            CommandId::Drops => &[FamilyId::Drops],
            CommandId::Retrans => &[FamilyId::Tcp],
            CommandId::Nat => &[FamilyId::Nat],
            CommandId::Mtu => &[FamilyId::Mtu],
            CommandId::Watch | CommandId::Diagnose | CommandId::Serve => &FamilyId::ALL,
        }
    }

    /// Whether it runs one family alone (the family's own command).
    pub(crate) const fn alone(self) -> bool {
        self.families().len() == 1
    }

    /// The capabilities it needs: those of its families, on a kernel that has CAP_BPF and does
    /// not charge RLIMIT_MEMLOCK (what a manifest can assume; `features::Kernel` adapts the
    /// rest). `other_namespace`: it was told to attach inside another network namespace (`--iface
    /// NETNS:DEV`), which takes setns(2).
    pub(crate) fn needs(self, other_namespace: bool) -> Vec<Need> {
        needs_of(self.families(), other_namespace)
    }
}

/// The capabilities a session of `families` needs (see [`CommandId::needs`]): what `watch
/// --probes drops,tcp` needs is what those two families need.
pub(crate) fn needs_of(families: &[FamilyId], other_namespace: bool) -> Vec<Need> {
    let mut needs: Vec<Need> = Vec::new();
    for family in families {
        for need in family_needs(*family) {
            if !needs.iter().any(|n| n.cap == need.cap) {
                needs.push(*need);
            }
        }
    }
    if other_namespace && needs.iter().any(|n| n.cap == features::NET_ADMIN.cap) {
        needs.retain(|n| n.cap != features::SETNS_IFACE.cap);
        needs.push(features::SETNS_IFACE);
    }
    needs.sort_by_key(|n| features::listing_rank(n.cap));
    needs
}

/// `--probes NAME,...` of `watch`, `diagnose` and `serve`: the families named (by
/// [`FamilyId::name`]), in the registry's order; none named means every one. An unknown name is
/// bad input that lists the valid ones.
pub(crate) fn parse_families(names: &[String]) -> Result<Vec<FamilyId>, crate::usage::UsageError> {
    let valid = || FamilyId::ALL.map(FamilyId::name).join(", ");
    let mut chosen = Vec::new();
    for name in names.iter().map(|n| n.trim()) {
        let id = FamilyId::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| crate::usage::UsageError(format!("--probes {name:?}: not a probe family; valid: {}", valid())))?;
        chosen.push(id);
    }
    if names.is_empty() {
        return Ok(FamilyId::ALL.to_vec());
    }
    Ok(FamilyId::ALL.into_iter().filter(|f| chosen.contains(f)).collect())
}

/// What each family's work needs, measured on 6.18 by running its command with one capability
/// taken away at a time (README, "Capabilities").
pub(crate) const fn family_needs(family: FamilyId) -> &'static [Need] {
    use features::{BPF, NET_ADMIN, PERFMON, SETNS, SYS_PTRACE, SYSLOG};
    match family {
        FamilyId::Drops => &[BPF, PERFMON, SYS_PTRACE, SYSLOG],
        FamilyId::Tcp => &[BPF, PERFMON, SYS_PTRACE],
        FamilyId::Nat => &[BPF, PERFMON, SYS_PTRACE, SETNS],
        FamilyId::Mtu => &[BPF, PERFMON, NET_ADMIN, SYS_PTRACE],
    }
}

/// A family's own flags on its command line (`tracer drops --reason`), parsed with the ones every
/// tracing command has (`cli::FamilyCommandArgs`) and checked into its options before any
/// syscall.
pub(crate) trait FamilyArgs: clap::Args {
    /// Checks the flags into the family's part of `options`.
    fn into_options(self, options: &mut FamilyOptions) -> Result<(), crate::usage::UsageError>;
}

/// What the user chose for each family (`watch` and friends use the defaults but for the NAT
/// reply timeout and the MTU devices).
#[derive(Debug, Clone, Default)]
pub(crate) struct FamilyOptions {
    pub drops: drops::Options,
    pub tcp: tcp::Options,
    pub nat: nat::Options,
    pub mtu: mtu::Options,
}

impl FamilyOptions {
    /// Whether the options attach inside another network namespace (`--iface NETNS:DEV`), which
    /// takes setns(2).
    pub(crate) fn other_namespace(&self) -> bool {
        self.mtu.ifaces.iter().any(|i| i.netns.path.is_some())
    }
}

/// The registry: the family object for `id`, with the user's options.
pub(crate) fn new_family(id: FamilyId, options: &FamilyOptions) -> Box<dyn Family> {
    match id {
        FamilyId::Drops => Box::new(drops::Drops::new(options.drops.clone())),
        FamilyId::Tcp => Box::new(tcp::Tcp::new(options.tcp.clone())),
        FamilyId::Nat => Box::new(nat::Nat::new(options.nat.clone())),
        FamilyId::Mtu => Box::new(mtu::Mtu::new(options.mtu.clone())),
    }
}

/// Kind-specific part of an event: one variant per record kind, holding its family's detail
/// (defined, with how it is written, in the family's `detail.rs`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Detail {
    Drop(drops::detail::DropDetail),
    Retransmit(tcp::detail::TcpDetail),
    Reset(tcp::detail::TcpDetail),
    ConnectFail(tcp::detail::TcpDetail),
    Nat(nat::detail::NatDetail),
    Mtu(mtu::detail::MtuDetail),
}

impl Detail {
    /// The CONTRACT's `kind` value.
    pub(crate) const fn kind(&self) -> &'static str {
        match self {
            Self::Drop(_) => "drop",
            Self::Retransmit(_) => TcpKind::Retransmit.as_str(),
            Self::Reset(_) => TcpKind::Reset.as_str(),
            Self::ConnectFail(_) => TcpKind::ConnectFail.as_str(),
            Self::Nat(_) => "nat",
            Self::Mtu(_) => "mtu",
        }
    }

    /// Its JSON fields, after the ones every event has.
    pub(crate) fn write_json(&self, w: &mut dyn JsonFields) -> io::Result<()> {
        match self {
            Self::Drop(d) => d.write_json(w),
            Self::Retransmit(t) => t.write_json(TcpKind::Retransmit, w),
            Self::Reset(t) => t.write_json(TcpKind::Reset, w),
            Self::ConnectFail(t) => t.write_json(TcpKind::ConnectFail, w),
            Self::Nat(n) => n.write_json(w),
            Self::Mtu(m) => m.write_json(w),
        }
    }

    /// The header of a table of its family's events (the first event's decides).
    pub(crate) const fn table_header(&self) -> &'static str {
        match self {
            Self::Drop(_) => drops::detail::TABLE_HEADER,
            Self::Retransmit(_) | Self::Reset(_) | Self::ConnectFail(_) => tcp::detail::TABLE_HEADER,
            Self::Nat(_) => nat::detail::TABLE_HEADER,
            Self::Mtu(_) => mtu::detail::TABLE_HEADER,
        }
    }

    /// Its table row, from the columns every row has.
    pub(crate) fn table_row(&self, event: &Event, row: &RowParts) -> String {
        match self {
            Self::Drop(d) => d.table_row(row),
            Self::Retransmit(t) => t.table_row(TcpKind::Retransmit, row),
            Self::Reset(t) => t.table_row(TcpKind::Reset, row),
            Self::ConnectFail(t) => t.table_row(TcpKind::ConnectFail, row),
            Self::Nat(n) => n.table_row(event, row),
            Self::Mtu(m) => m.table_row(row),
        }
    }

    /// What `watch`'s timeline says after the flow.
    pub(crate) fn timeline(&self) -> String {
        match self {
            Self::Drop(d) => d.timeline(),
            Self::Retransmit(t) => t.timeline(TcpKind::Retransmit),
            Self::Reset(t) => t.timeline(TcpKind::Reset),
            Self::ConnectFail(t) => t.timeline(TcpKind::ConnectFail),
            Self::Nat(n) => n.timeline(),
            Self::Mtu(m) => m.timeline(),
        }
    }

    /// Counts the event in its family's metrics (`tracer serve`).
    pub(crate) fn observe(&self, event: &Event, limits: &mut Cardinality) {
        match self {
            Self::Drop(d) => d.observe(event, limits),
            Self::Retransmit(t) => t.observe(TcpKind::Retransmit, event, limits),
            Self::Reset(t) => t.observe(TcpKind::Reset, event, limits),
            Self::ConnectFail(t) => t.observe(TcpKind::ConnectFail, event, limits),
            Self::Nat(n) => n.observe(event, limits),
            Self::Mtu(m) => m.observe(event, limits),
        }
    }
}

/// The help text of every family's metrics.
pub(crate) fn describe_metrics(family: FamilyId) {
    match family {
        FamilyId::Drops => drops::detail::DropDetail::describe_metrics(),
        FamilyId::Tcp => tcp::detail::TcpDetail::describe_metrics(),
        FamilyId::Nat => nat::detail::NatDetail::describe_metrics(),
        FamilyId::Mtu => mtu::detail::MtuDetail::describe_metrics(),
    }
}

/// The families `ids`, with the user's options.
pub(crate) fn families_of(ids: &[FamilyId], options: &FamilyOptions) -> Vec<Box<dyn Family>> {
    ids.iter().map(|id| new_family(*id, options)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(needs: &[Need]) -> Vec<&'static str> {
        needs.iter().map(|n| n.cap.k8s_name()).collect()
    }

    #[test]
    fn each_command_needs_what_was_measured() {
        let of = |c: CommandId, other| names(&c.needs(other));
        assert_eq!(of(CommandId::Drops, false), ["BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"]);
        assert_eq!(of(CommandId::Retrans, false), ["BPF", "PERFMON", "SYS_PTRACE"]);
        assert_eq!(of(CommandId::Nat, false), ["BPF", "PERFMON", "SYS_PTRACE", "SYS_ADMIN"]);
        assert_eq!(of(CommandId::Mtu, false), ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"]);
        assert_eq!(of(CommandId::Mtu, true), ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "SYS_ADMIN"]);
        for c in [CommandId::Watch, CommandId::Diagnose, CommandId::Serve] {
            assert_eq!(of(c, false), ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "SYSLOG", "SYS_ADMIN"]);
        }
        assert!(CommandId::parse("pods").is_none(), "pods loads nothing");
        // Attaching in another namespace makes setns essential where the command attaches tc.
        assert!(CommandId::Serve.needs(true).iter().any(|n| n.cap == features::SETNS_IFACE.cap && n.essential));
    }

    #[test]
    fn probes_are_chosen_by_family_name() {
        let parse = |names: &[&str]| parse_families(&names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&[]).expect("every family"), FamilyId::ALL);
        assert_eq!(parse(&["mtu", "drops", "mtu"]).expect("valid"), [FamilyId::Drops, FamilyId::Mtu], "the registry's order, once each");
        let err = parse(&["drops", "arp"]).expect_err("arp is no family");
        assert_eq!(err.0, "--probes \"arp\": not a probe family; valid: drops, tcp, nat, mtu");
        assert_eq!(names(&needs_of(&[FamilyId::Drops, FamilyId::Tcp], false)), ["BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"]);
    }

    #[test]
    fn every_family_has_its_command_and_registry_entry() {
        let options = FamilyOptions::default();
        for id in FamilyId::ALL {
            assert_eq!(new_family(id, &options).id(), id);
            let command = CommandId::parse(id.command()).unwrap_or_else(|| panic!("{} has no command", id.name()));
            assert_eq!(command.families(), [id]);
            assert!(command.alone());
        }
        assert!(!CommandId::Watch.alone());
    }
}
