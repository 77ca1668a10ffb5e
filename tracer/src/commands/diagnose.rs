//! `tracer diagnose`: every probe for --duration, then findings (diagnose/findings.rs).

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant},
};

use tracer_common::event::EventHeader;

use crate::{
    cli::config::WatchCommandConfig,
    diagnose::{
        Report,
        facts::MachineFacts,
        findings::{RunInfo, diagnose},
    },
    events::Event,
    output::Collect,
    probes::CommandId,
    runner::{self, Pipeline, Stop},
    session::Parts,
};

/// Events analysed (about 300 bytes each); beyond it they are counted and a finding says so.
pub(crate) const MAX_ANALYSED: usize = 1_000_000;

pub(crate) async fn run(config: WatchCommandConfig) -> anyhow::Result<()> {
    let duration = config.trace.duration.unwrap_or(crate::cli::config::DIAGNOSE_DEFAULT_DURATION);
    let mut session = super::start_every_family(CommandId::Diagnose, &config).await?;
    let stop = Stop { duration: Some(duration), count: None };
    let mut collect = Collect::new(MAX_ANALYSED);
    let progress = std::io::stderr().is_terminal();
    let started = Instant::now();
    let Parts { ring, pods, mut decoders, .. } = session.parts();
    let mut counting = Progress { inner: &mut decoders, seen: 0, shown: progress, started, duration };
    runner::run(ring, stop, &mut collect, pods, &mut counting).await?;
    if progress {
        eprintln!();
    }
    let ran = started.elapsed();
    if ran + std::time::Duration::from_millis(500) < duration {
        eprintln!("tracer: diagnose: stopped after {:.1}s of {duration:?}: the findings rest on that much", ran.as_secs_f64());
    }
    // After the run: the MTU family follows devices as they come and go.
    let known = super::SessionFacts::of(&session);
    let (counts, pods) = session.stop()?;
    let lost = counts.iter().map(|(_, c)| c.lost).sum();

    let super::SessionFacts { probes, missing_probes, mtu_mismatches, services, counted } = known;
    let counted_total = counts.iter().map(|(_, c)| c.counted).sum();
    let nat_in_classifiers = probes.get("nat").is_some_and(|how| crate::probes::nat::in_classifiers(how));
    let info = RunInfo {
        reply_timeout: config.reply_timeout,
        lost,
        beyond_limit: collect.beyond_limit,
        missing_probes,
        mtu_mismatches,
        counted,
        nat_in_classifiers,
    };
    let mut facts = MachineFacts::new(&services);
    let findings = diagnose(&collect.events, &info, &mut facts);
    let report = Report {
        node: pods.node().map(String::from),
        nodes: Vec::new(),
        // How long it really ran: Ctrl-C ends it early, and the findings rest on that much.
        duration_s: (ran.min(duration).as_secs_f64() * 10.0).round() / 10.0,
        events: collect.events.len() as u64 + collect.beyond_limit,
        lost,
        counted: counted_total,
        probes,
        findings,
    };
    super::print_report(&report, config.trace.output)
}

/// `diagnose --from`: the findings of recordings of one or many nodes; no BPF, no root.
pub(crate) fn run_from(config: &WatchCommandConfig) -> anyhow::Result<()> {
    let mut recordings = super::read_recordings(&config.from)?;
    let report = crate::diagnose::recordings::diagnose(&mut recordings);
    let printed = super::print_report(&report, config.trace.output);
    // The process ends after this: freeing every event's strings one by one cost more (a
    // twentieth of the run at 1,000,000 events) than the kernel takes to drop the memory.
    std::mem::forget(recordings);
    printed
}

/// The session's decoders, counting events and, on a terminal, saying how long is left.
struct Progress<'a> {
    inner: &'a mut dyn Pipeline,
    seen: u64,
    shown: bool,
    started: Instant,
    duration: Duration,
}

impl Pipeline for Progress<'_> {
    fn decode(&mut self, header: &EventHeader, bytes: &[u8]) -> Option<Event> {
        let event = self.inner.decode(header, bytes);
        self.seen += u64::from(event.is_some());
        event
    }

    fn tick(&mut self, now: i128) -> Vec<Event> {
        if self.shown {
            let left = self.duration.saturating_sub(self.started.elapsed());
            eprint!("\rtracer: diagnose: {:>3}s left, {} events so far ", left.as_secs_f64().ceil() as u64, self.seen);
            let _ = std::io::stderr().flush();
        }
        self.inner.tick(now)
    }
}
