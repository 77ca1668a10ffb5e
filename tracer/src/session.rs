//! The one start sequence of every tracing command, and the stop that accounts for every
//! event. A session runs one family (`drops`, `retrans`, `nat`, `mtu`: what it asked for must
//! run, or it is an error) or several (`watch`, `diagnose`, `serve`: a family this kernel cannot
//! run is left out with a warning, Retis-style, and only "none can run" is an error).
//!
//! The sequence: privileges → each family's `prepare` (bad input found without BTF) → kernel BTF
//! parsed once → each family's `plan` → struct offsets → pods and Services → facts → globals
//! (each family's `configure`) → load → kernel pod filter → each family's `attach` (against one
//! parsed aya BTF) → the `attached` line.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use aya::{Btf, Ebpf};
use tracer_common::{event::EventHeader, filter::FlowFilter, flow::TunnelPorts};

use crate::{
    events::Event,
    kernel::{
        btf::{BtfError, KernelBtf},
        features,
    },
    loader::{self, Globals, KernelCounts},
    output::OutputFormat,
    pods::{
        layer::{PodLayer, PodsConfig, start_services},
        services::ServiceNames,
    },
    probes::{self, AttachContext, CannotRun, CommandId, Family, FamilyId, PlanContext, PlanError},
    runner::{self, Delivered, Pipeline, Ring, Stop},
    usage::UsageError,
};

/// Options every tracing command shares.
#[derive(Debug, Clone)]
pub(crate) struct TraceConfig {
    pub filter: FlowFilter,
    /// The UDP ports the packet parser takes as VXLAN and Geneve.
    pub tunnel_ports: TunnelPorts,
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    pub output: OutputFormat,
    pub btf: Option<PathBuf>,
    pub ring_buffer_bytes: u32,
    pub pods: PodsConfig,
}

impl TraceConfig {
    /// When to stop besides a signal.
    pub(crate) fn stop(&self) -> Stop {
        Stop { duration: self.duration, count: self.count }
    }
}

/// One family's fate on this kernel: how it is hooked, or why it is not running.
#[derive(Debug, Clone)]
pub(crate) struct ProbeStatus {
    pub family: FamilyId,
    pub result: Result<String, String>,
}

/// The loaded object with every running family attached. Fields drop in order: the families
/// (tc attachments inside their devices' namespaces) before the object, whose drop detaches
/// the tracepoints.
pub(crate) struct Session {
    command: CommandId,
    families: Vec<Box<dyn Family>>,
    /// Records read per running family (same order as `families`), for their summaries.
    read: Vec<u64>,
    ring: Ring,
    ebpf: Ebpf,
    pub pods: PodLayer,
    /// Every family asked for, running or not.
    pub probes: Vec<ProbeStatus>,
    services: Option<ServiceNames>,
}

/// Loads kernel BTF, turning a bad `--btf` into bad input (exit 2).
pub(crate) fn load_btf(path: Option<&std::path::Path>) -> anyhow::Result<KernelBtf> {
    match KernelBtf::load(path) {
        Ok(btf) => Ok(btf),
        Err(err @ (BtfError::Missing { .. } | BtfError::Read { .. })) if path.is_some() => {
            // A usage error is one line: name the cause too, it says what is wrong with the file.
            let cause = std::error::Error::source(&err).map(|c| format!(": {c}")).unwrap_or_default();
            Err(UsageError(format!("--btf: {err}{cause}")).into())
        }
        Err(err @ BtfError::Missing { .. }) => {
            Err(err).context("this kernel publishes no BTF (CONFIG_DEBUG_INFO_BTF); pass --btf PATH to a BTF file for it")
        }
        Err(err) => Err(err.into()),
    }
}

/// The BTF aya loads BTF tracepoints against: `--btf` when given, else the kernel's own.
fn aya_btf(path: Option<&std::path::Path>) -> anyhow::Result<Btf> {
    match path {
        Some(path) => Btf::parse_file(path, aya::Endianness::default()).with_context(|| format!("parsing BTF {}", path.display())),
        None => Btf::from_sys_fs().context("reading kernel BTF"),
    }
}

/// Refuses to go on without a capability `command` with `families` cannot work without, naming each (exit 2,
/// nothing attached); warns once per missing capability that only costs part of the output.
/// `other_namespace`: it will attach inside another network namespace (`--iface NETNS:DEV`).
pub(crate) fn require_privileges(command: CommandId, families: &[FamilyId], other_namespace: bool) -> Result<(), UsageError> {
    features::check_capabilities(command.name(), &probes::needs_of(families, other_namespace)).map_err(|e| UsageError(e.to_string()))
}

/// Starts the pod source, says on stderr which one is used, and checks the selection (exit 2
/// for pods that do not exist, unless --wait).
pub(crate) async fn start_pods(config: &PodsConfig) -> anyhow::Result<PodLayer> {
    let mut pods = PodLayer::start(config).await?;
    // Bad input stays one line: check the selection before saying anything else.
    if !config.wait {
        pods.require_selection(false).await?;
    }
    if pods.source.is_some() {
        eprintln!("tracer: pods from {}: {} pods", pods.description, pods.registry().live().len());
    }
    pods.require_selection(config.wait).await?;
    Ok(pods)
}

/// Gives the heap pages freed after start-up back to the kernel. Parsing BTF and kallsyms peaks
/// at tens of MB that glibc keeps mapped after they are dropped, so without this a tracer that
/// holds a few MB of state stays at the start-up peak for its whole run.
fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

/// Configures each family ([`Family::configure`]) in order: those that can run go on; one that
/// cannot is an error when it runs alone, else its probe status says why.
fn configure(
    planned: Vec<Box<dyn Family>>,
    globals: &mut Globals,
    alone: bool,
    probes: &mut [ProbeStatus],
) -> Result<Vec<Box<dyn Family>>, CannotRun> {
    let mut families = Vec::new();
    for mut family in planned {
        match family.configure(globals) {
            Ok(()) => families.push(family),
            Err(e) if alone => return Err(e),
            Err(e) => {
                if let Some(p) = probes.iter_mut().find(|p| p.family == family.id()) {
                    p.result = Err(e.reason);
                }
            }
        }
    }
    Ok(families)
}

impl Session {
    /// Plans, loads and attaches `families` for `command`; prints the `attached` line.
    /// `other_namespace`: some family attaches inside another network namespace.
    pub(crate) async fn start(
        command: CommandId,
        families: Vec<Box<dyn Family>>,
        trace: &TraceConfig,
        other_namespace: bool,
    ) -> anyhow::Result<Session> {
        let alone = command.alone();
        let started = std::time::Instant::now();
        // Where start-up's time goes (`RUST_LOG=tracer::session=debug`), phase by phase.
        let phase = |what: &str| log::debug!("start-up: {what} at {} ms", started.elapsed().as_millis());
        let ids: Vec<FamilyId> = families.iter().map(|f| f.id()).collect();
        require_privileges(command, &ids, other_namespace)?;
        let mut families = families;
        for family in &mut families {
            family.prepare()?;
        }

        // BTF is read once for every family's plan (kernel::btf, here: an index, ~10 ms) and
        // parsed once for loading and every attach (aya, on a thread meanwhile, ~20 ms).
        let aya_btf = {
            let path = trace.btf.clone();
            std::thread::spawn(move || aya_btf(path.as_deref()))
        };
        let loader = loader::new_loader_in_background();
        let mut btf = load_btf(trace.btf.as_deref())?;
        let mut probes = Vec::new();
        let mut planned = Vec::new();
        let egress_checks = families.iter().any(|f| f.carries_egress_checks());
        for mut family in families {
            let result = family.plan(&mut PlanContext { btf: &mut btf, alone, egress_checks });
            match result {
                Ok(()) => {
                    probes.push(ProbeStatus { family: family.id(), result: Ok(family.describe()) });
                    planned.push(family);
                }
                // Bad input, or the family this command is for cannot run: nothing is attached.
                Err(PlanError::Usage(e)) => return Err(e.into()),
                Err(PlanError::CannotRun(e)) if alone => return Err(e.into()),
                Err(PlanError::CannotRun(e)) => probes.push(ProbeStatus { family: family.id(), result: Err(e.reason) }),
            }
        }
        let offsets = btf.kernel_offsets().context("resolving kernel struct offsets from BTF")?;
        phase("planned");
        // Everything needed from BTF is resolved; the parsed types are tens of MB.
        drop(btf);

        let mut globals = Globals::new(offsets, trace.filter, trace.tunnel_ports);
        // Whether the NAT check rides in the classifiers is settled before any family is
        // configured, from the families planned; should the one that carries them then fail to
        // configure, the others are configured again without.
        globals.egress_checks = planned.iter().any(|f| f.carries_egress_checks());
        let mut families = configure(planned, &mut globals, alone, &mut probes)?;
        if globals.egress_checks && !families.iter().any(|f| f.carries_egress_checks()) {
            globals.egress_checks = false;
            families = configure(families, &mut globals, alone, &mut probes)?;
        }
        // What each family runs is settled now (NAT's hook): the status says it as attached.
        for family in &families {
            if let Some(p) = probes.iter_mut().find(|p| p.family == family.id()) {
                p.result = Ok(family.describe());
            }
        }
        for p in &probes {
            if let Err(why) = &p.result {
                log::warn!("{}: cannot run on this kernel ({why}); {} goes on without it", p.family.name(), command.name());
            }
        }
        if families.is_empty() {
            anyhow::bail!("no probe can run on this kernel (see the warnings above)");
        }

        let mut pods = start_pods(&trace.pods).await?;
        // Only the NAT family names Services (and diagnose reads them), so only sessions with it
        // make Service requests and need RBAC for them.
        let services = if ids.contains(&FamilyId::Nat) { Some(start_services(&trace.pods).await) } else { None };
        for family in &families {
            family.print_facts();
        }

        phase("pods started");
        let aya_btf = aya_btf.join().map_err(|_| anyhow::anyhow!("the BTF reader panicked"))??;
        phase("aya's BTF parsed");
        let loader = loader.join().map_err(|_| anyhow::anyhow!("the BTF reader panicked"))?;
        phase("the loader's BTF parsed");
        globals.set_ring_buffer(trace.ring_buffer_bytes);
        let mut ebpf = loader::load(loader, &globals, trace.ring_buffer_bytes, &aya_btf)?;
        pods.attach_kernel_filter(&mut ebpf)?;
        let no_services;
        let ctx = AttachContext {
            btf: &aya_btf,
            services: match &services {
                Some(s) => s,
                None => {
                    no_services = ServiceNames::channel().1;
                    &no_services
                }
            },
            alone,
        };
        // The verifier's share of start-up, on every CPU at once rather than one program after
        // another, before anything is attached.
        let wanted: Vec<_> = families.iter().flat_map(|f| f.btf_tracepoints()).collect();
        phase("maps created");
        let classifiers: Vec<_> = families.iter().flat_map(|f| f.classifiers()).collect();
        crate::probes::load_programs(&mut ebpf, &wanted, &classifiers, &aya_btf)?;
        phase("programs verified");
        for family in &mut families {
            family.attach(&mut ebpf, &ctx)?;
        }
        drop(aya_btf);
        let ring = runner::ring(&mut ebpf)?;
        release_startup_memory();
        phase("attached");

        let ctrl_c = if trace.duration.is_some() { "" } else { "; stop with Ctrl-C" };
        if alone {
            eprintln!("tracer: attached {} ({}){ctrl_c}", command.name(), families[0].describe_alone());
        } else {
            let running: Vec<String> = families.iter().map(|f| format!("{}: {}", f.id().name(), f.describe())).collect();
            let tc: Vec<String> = families.iter().flat_map(|f| f.tc_devices()).collect();
            eprintln!(
                "tracer: attached {} ({}; tc on {} devices{}){ctrl_c}",
                command.name(),
                running.join("; "),
                tc.len(),
                if tc.is_empty() { String::new() } else { format!(": {}", crate::probes::mtu::choice::shorten(&tc)) },
            );
        }
        let read = vec![0; families.len()];
        Ok(Session { command, families, read, ring, ebpf, pods, probes, services })
    }

    /// The loaded object (its maps, read while tracing: the TCP flow map, the counters).
    pub(crate) fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The running family `id`, if it runs.
    pub(crate) fn family(&self, id: FamilyId) -> Option<&dyn Family> {
        self.families.iter().find(|f| f.id() == id).map(|f| &**f)
    }

    /// The Services known (for `diagnose`'s service-not-translated), when the NAT family was asked for.
    pub(crate) fn services(&self) -> Option<&ServiceNames> {
        self.services.as_ref()
    }

    /// Counts `n` records of `id` read outside the decoders (`retrans --top` drains them).
    pub(crate) fn add_read(&mut self, id: FamilyId, n: u64) {
        if let Some(i) = self.families.iter().position(|f| f.id() == id) {
            self.read[i] += n;
        }
    }

    /// Splits the session into what an event loop borrows: the ring buffer, the pod layer, and
    /// the decoders of every family with the object (its maps; attaching while tracing).
    pub(crate) fn parts(&mut self) -> Parts<'_> {
        Parts {
            ring: &mut self.ring,
            pods: &mut self.pods,
            decoders: Decoders { families: &mut self.families, read: &mut self.read, ebpf: Some(&mut self.ebpf) },
        }
    }

    /// Runs the event loop until a stop condition, through `sink`.
    pub(crate) async fn run(&mut self, stop: Stop, sink: &mut dyn crate::output::Sink) -> anyhow::Result<Delivered> {
        let Parts { ring, pods, mut decoders, .. } = self.parts();
        runner::run(ring, stop, sink, pods, &mut decoders).await
    }

    /// Reads the kernel counters of every family, detaches everything (tc first) and prints
    /// each family's `seen, delivered, lost` line and its report. Returns the counts and the
    /// pod layer (for naming what is reported after the run).
    pub(crate) fn stop(self) -> anyhow::Result<(Vec<(FamilyId, KernelCounts)>, PodLayer)> {
        let Session { command, mut families, read, ring, ebpf, pods, .. } = self;
        let mut counts = Vec::new();
        for family in &mut families {
            counts.push((family.id(), loader::read_counts_of(&ebpf, family.id().kinds())?));
            family.before_detach(&ebpf)?;
        }
        for family in &mut families {
            family.detach();
        }
        drop(ring);
        drop(ebpf);
        for ((family, (id, c)), read) in families.iter().zip(&counts).zip(read) {
            // Alone, the summary is named after the command (`retrans`), beside others after
            // the family (`tcp`).
            let label = if command.alone() { command.name() } else { id.name() };
            print_summary(label, *c, read);
            family.report(*c);
        }
        Ok((counts, pods))
    }
}

/// A session split for an event loop (see [`Session::parts`]).
pub(crate) struct Parts<'a> {
    pub ring: &'a mut Ring,
    pub pods: &'a mut PodLayer,
    pub decoders: Decoders<'a>,
}

/// The decoders of every running family: records go to the family of their kind; each tick,
/// every family keeps its attachments current and makes its own events.
pub(crate) struct Decoders<'a> {
    families: &'a mut [Box<dyn Family>],
    read: &'a mut [u64],
    /// The loaded object; None only in unit tests, which have none.
    ebpf: Option<&'a mut Ebpf>,
}

impl Pipeline for Decoders<'_> {
    fn decode(&mut self, header: &EventHeader, bytes: &[u8]) -> Option<Event> {
        let id = FamilyId::of_kind(header.kind)?;
        let i = self.families.iter().position(|f| f.id() == id)?;
        self.read[i] += 1;
        self.families[i].decode(header, bytes)
    }

    fn tick(&mut self, now: i128) -> Vec<Event> {
        let mut events = Vec::new();
        for family in self.families.iter_mut() {
            if let Some(ebpf) = self.ebpf.as_deref_mut() {
                family.maintain(ebpf);
            }
            events.extend(family.tick(now));
        }
        events
    }
}

impl Decoders<'_> {
    /// The loaded object (its maps, read while tracing).
    pub(crate) fn ebpf(&self) -> Option<&Ebpf> {
        self.ebpf.as_deref()
    }

    /// Has every running family set the metrics it keeps from its maps (`serve`).
    pub(crate) fn publish_metrics(&mut self) {
        let Some(ebpf) = self.ebpf.as_deref() else { return };
        for family in self.families.iter_mut() {
            family.publish_metrics(ebpf);
        }
    }
}

/// `tracer: PROBE: N seen, N delivered, N lost[, N counted][, N unread]` on stderr, and a warning
/// naming the count when the ring buffer overflowed. Seen counts what matched in the kernel;
/// counted, the drops over the rate budget (`--max-rate`) counted by place instead of delivered;
/// unread is what was still in the ring buffer when --count stopped the run. seen = delivered +
/// lost + counted + unread.
pub(crate) fn print_summary(probe: &str, counts: KernelCounts, read: u64) {
    eprintln!("{}", summary(probe, counts, read));
    if counts.lost > 0 {
        log::warn!("{} {probe} events were lost because the ring buffer was full; use a larger --ring-buffer or narrower filters", counts.lost);
    }
}

fn summary(probe: &str, counts: KernelCounts, read: u64) -> String {
    let mut line = format!("tracer: {probe}: {} seen, {} delivered, {} lost", counts.matched, read, counts.lost);
    if counts.counted > 0 {
        line.push_str(&format!(", {} counted (over --max-rate)", counts.counted));
    }
    let unread = counts.matched.saturating_sub(read + counts.lost + counts.counted);
    if unread > 0 {
        line.push_str(&format!(", {unread} unread"));
    }
    line
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tracer_common::event::kind;

    use super::*;
    use crate::{
        events::Detail,
        kernel::hooks::HookSupport,
        probes::{CannotRun, CheckRow, tcp::detail::TcpDetail},
    };

    /// The smallest family: what a new one implements. It decodes every record into an event
    /// stamped with the record's kind and makes one event per tick.
    struct Stub {
        id: FamilyId,
    }

    impl Family for Stub {
        fn id(&self) -> FamilyId {
            self.id
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }

        fn plan(&mut self, _ctx: &mut PlanContext<'_>) -> Result<(), PlanError> {
            Ok(())
        }

        fn describe(&self) -> String {
            format!("stub {}", self.id.name())
        }

        fn configure(&mut self, _globals: &mut Globals) -> Result<(), CannotRun> {
            Ok(())
        }

        fn attach(&mut self, _ebpf: &mut Ebpf, _ctx: &AttachContext<'_>) -> anyhow::Result<()> {
            Ok(())
        }

        fn decode(&mut self, header: &EventHeader, _bytes: &[u8]) -> Option<Event> {
            Some(event(i128::from(header.kind)))
        }

        fn tick(&mut self, now: i128) -> Vec<Event> {
            vec![event(now)]
        }

        fn check_row(&self, planned: &Result<(), String>, _privileged: bool, _hooks: &BTreeMap<&'static str, HookSupport>) -> CheckRow {
            CheckRow::not_running(self.id.command(), planned.clone().err().unwrap_or_default())
        }
    }

    fn event(ts: i128) -> Event {
        Event::bare(ts, Detail::Retransmit(TcpDetail { state: None, count: 0, direction: None, duration_ms: None, syns_sent: None }))
    }

    fn header(kind: u16) -> EventHeader {
        EventHeader { ts_ns: 0, kind, cpu: 0, _pad: [0; 4] }
    }

    #[test]
    fn records_go_to_the_family_of_their_kind_and_are_counted_there() {
        let mut families: Vec<Box<dyn Family>> = vec![Box::new(Stub { id: FamilyId::Tcp }), Box::new(Stub { id: FamilyId::Nat })];
        let mut read = vec![0; families.len()];
        let mut decoders = Decoders { families: &mut families, read: &mut read, ebpf: None };
        for k in [kind::RETRANSMIT, kind::RESET, kind::NAT, kind::CONNECT_FAIL] {
            assert_eq!(decoders.decode(&header(k), &[]).map(|e| e.ts_unix_ns), Some(i128::from(k)));
        }
        // A family that is not running gets nothing, and nothing is counted for it.
        assert!(decoders.decode(&header(kind::DROP), &[]).is_none());
        assert!(decoders.decode(&header(999), &[]).is_none());
        assert_eq!(decoders.tick(7).len(), 2, "every family ticks");
        assert_eq!(read, [3, 1]);
    }

    #[test]
    fn summary_accounts_for_every_event() {
        let c = KernelCounts { matched: 10, lost: 3, counted: 0 };
        assert_eq!(summary("drops", c, 7), "tracer: drops: 10 seen, 7 delivered, 3 lost");
        assert_eq!(summary("retrans", c, 5), "tracer: retrans: 10 seen, 5 delivered, 3 lost, 2 unread");
        let c = KernelCounts { matched: 100, lost: 3, counted: 80 };
        assert_eq!(summary("drops", c, 15), "tracer: drops: 100 seen, 15 delivered, 3 lost, 80 counted (over --max-rate), 2 unread");
    }
}
