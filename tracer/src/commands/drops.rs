//! `tracer drops`.

use anyhow::Context as _;
use tracer_common::event::kind;

use crate::{
    cli::config::{DropsConfig, ReasonSelection},
    events::{Clock, Detail},
    kernel::kallsyms::Kallsyms,
    loader::{self, Globals},
    output,
    probes::drops::{self, conntrack::Classifier, decode::Decoder, storm},
    runner::{self, Stop},
};

pub async fn run(config: DropsConfig) -> anyhow::Result<()> {
    // kallsyms (~200k lines) parses while BTF does: together they are most of start-up.
    let kallsyms = std::thread::spawn(Kallsyms::load);
    let mut btf = super::load_btf(config.trace.btf.as_deref())?;
    let mut plan = drops::plan(&btf, config.hook)?;
    let ct_layout = drops::plan_conntrack(&mut btf, &mut plan);
    let reasons = drops::select_reasons(&plan, &config.reasons)?;
    let offsets = btf.kernel_offsets().context("resolving kernel struct offsets from BTF")?;
    // Everything needed from BTF is resolved; the parsed types are tens of MB.
    drop(btf);
    super::require_privileges("drops", false)?;
    let mut pods = super::start_pods(&config.trace.pods).await?;

    let kallsyms = kallsyms.join().map_err(|_| anyhow::anyhow!("kallsyms reader panicked"))?.unwrap_or_else(|err| {
        log::warn!("cannot read /proc/kallsyms ({err}); locations will be raw addresses");
        Kallsyms::default()
    });
    if kallsyms.is_empty() {
        log::warn!("/proc/kallsyms shows no addresses (kptr_restrict?); locations will be raw addresses");
    }
    if plan.reasons.is_none() {
        log::warn!("kernel {} has no drop reasons (added in 5.17): every drop is shown as NOT_SPECIFIED", crate::kernel::release());
    }

    let globals = Globals { offsets, filter: config.trace.filter, drop: drops::program_config(&plan, &reasons), tcp: tracer_common::tcp::TcpConfig::empty(), nat: tracer_common::nat::NatConfig::default(), mtu: tracer_common::mtu::MtuConfig::empty() };
    let mut ebpf = loader::load(&globals, config.trace.ring_buffer_bytes)?;
    drops::write_reasons(&mut ebpf, &reasons)?;
    pods.attach_kernel_filter(&mut ebpf)?;
    drops::attach(&mut ebpf, plan.hook, config.trace.btf.as_deref())?;
    // Baselines of every namespace's conntrack counters, taken before `attached` is printed: a
    // conntrack drop from there on is told apart from a rule's.
    let mut conntrack = ct_layout.map(|_| Classifier::start());
    super::release_startup_memory();
    eprintln!(
        "tracer: attached drops ({}; reasons: {}){}",
        plan.hook.describe(),
        describe_reasons(&config.reasons),
        if config.trace.duration.is_some() { "" } else { "; stop with Ctrl-C" }
    );

    let decoder = Decoder { reasons: plan.reasons, kallsyms, clock: Clock::new(), ct: ct_layout };
    let storm_watch = storm::watch(loader::CounterReader::open(&ebpf)?);
    let mut sink = output::stdout_sink(config.trace.output);
    let stop = Stop { duration: config.trace.duration, count: config.trace.count };
    let delivered = runner::run(&mut ebpf, stop, sink.as_mut(), &mut pods, |header, bytes| {
        let mut event = (header.kind == kind::DROP).then(|| decoder.decode(bytes)).flatten()?;
        if let (Some(classifier), Detail::Drop(drop)) = (conntrack.as_mut(), &mut event.detail) {
            classifier.classify(drop, event.netns);
        }
        Some(event)
    })
    .await?;

    storm_watch.abort();
    // Programs detach when `ebpf` drops; read the counters first.
    let counts = loader::read_counts(&ebpf, kind::DROP)?;
    let storm = storm::read(&ebpf)?;
    drop(ebpf);
    super::print_summary("drops", counts, delivered.read);
    for line in storm::report(&storm, counts.lost, &decoder) {
        eprintln!("{line}");
    }
    if delivered.filtered > 0 {
        log::debug!("{} events were of other pods by the time they happened ({})", delivered.filtered, pods.selection());
    }
    if delivered.undecodable > 0 {
        log::warn!("{} records could not be decoded (kernel/user version mismatch?)", delivered.undecodable);
    }
    Ok(())
}

fn describe_reasons(sel: &ReasonSelection) -> String {
    match sel {
        ReasonSelection::Default => "all but NOT_SPECIFIED".into(),
        ReasonSelection::All => "all".into(),
        ReasonSelection::Named(names) => names.join(","),
    }
}
