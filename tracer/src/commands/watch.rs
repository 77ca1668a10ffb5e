//! `tracer watch`: every probe family in one timeline, or (`--by-flow`) one story per
//! connection when tracing stops.

use std::io::Write as _;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::{
    cli::{OutputFormat, config::WatchCommandConfig},
    diagnose::{
        facts::MachineFacts,
        flows::stories,
        recordings::{self, RunRecord},
    },
    events::rfc3339,
    output::{
        self, Collect, Sink,
        table::{TimelineSink, timeline_row},
    },
    probes::CommandId,
};

/// Events kept for `--by-flow` (about 300 bytes each): beyond it they are counted and said.
pub(crate) const MAX_COLLECTED: usize = 1_000_000;

pub(crate) async fn run(config: WatchCommandConfig) -> anyhow::Result<()> {
    let mut session = super::start_every_family(CommandId::Watch, &config).await?;
    let stop = config.trace.stop();
    let mut collect = Collect::new(MAX_COLLECTED);
    let mut stream: Box<dyn Sink> = match config.trace.output {
        // One write(2) per read of the ring buffer, as the family commands do: written through per
        // event, a UDP flood's receive-buffer drops (thousands of events a second) cost a system
        // call each on the CPUs the traffic also needs.
        OutputFormat::Json => output::stdout_sink(OutputFormat::Json),
        OutputFormat::Table => Box::new(TimelineSink::new(std::io::stdout())),
    };
    if config.by_flow {
        eprintln!("tracer: watch: grouping events per connection; the connections print when tracing stops");
    }
    // `-o json` is a recording: the events are kept too, for the facts written at stop.
    let recording = config.trace.output == OutputFormat::Json && !config.by_flow;
    let started = (crate::pods::now_unix_ns(), crate::events::boot_ns());
    let delivered = if config.by_flow {
        session.run(stop, &mut collect).await?
    } else if recording {
        session.run(stop, &mut Tee { first: stream.as_mut(), second: &mut collect }).await?
    } else {
        session.run(stop, stream.as_mut()).await?
    };
    let selection = session.pods.selection().to_string();
    let known = super::SessionFacts::of(&session);
    let (counts, pods) = session.stop()?;
    delivered.report(&selection);
    if config.by_flow && !delivered.output_closed {
        print_stories(&collect, config.trace.output)?;
    }
    if recording && !delivered.output_closed {
        let ended = crate::pods::now_unix_ns();
        let super::SessionFacts { probes, missing_probes, mtu_mismatches, services, counted } = known;
        let run = RunRecord {
            node: pods.node().map(String::from),
            start: recordings::wall(started.0),
            end: recordings::wall(ended),
            start_boot_ns: u64::try_from(started.1).unwrap_or(0),
            duration_s: ((ended - started.0) as f64 / 1e8).round() / 10.0,
            events: collect.events.len() as u64 + collect.beyond_limit,
            lost: counts.iter().map(|(_, c)| c.lost).sum(),
            beyond_limit: collect.beyond_limit,
            reply_timeout_ms: u64::try_from(config.reply_timeout.as_millis()).unwrap_or(u64::MAX),
            probes,
            missing_probes,
            mtu_mismatches,
            counted,
            ..RunRecord::default()
        };
        let mut facts = MachineFacts::new(&services);
        let mut out = std::io::stdout().lock();
        match recordings::write_end(&mut out, &run, &collect.events, &mut facts) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.context("writing the recording's facts")?,
        }
    }
    Ok(())
}

/// `watch --from`: the recordings' events as one timeline ordered by time (or, with
/// `--by-flow`, one story per connection across nodes); no BPF, no root. With `-o json` the
/// output is a recording again (the events, then every node's `recording` and `fact` records).
pub(crate) fn run_from(config: &WatchCommandConfig) -> anyhow::Result<()> {
    let recordings = super::read_recordings(&config.from)?;
    let several = recordings.nodes.len() > 1;
    if config.by_flow {
        let events: Vec<crate::events::Event> = recordings::timeline(&recordings).into_iter().cloned().collect();
        let collect = Collect { events, limit: usize::MAX, beyond_limit: 0 };
        return print_stories(&collect, config.trace.output);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let result = (|| -> std::io::Result<()> {
        match config.trace.output {
            OutputFormat::Json => {
                let mut encoder = output::json::Encoder::default();
                for e in recordings::timeline(&recordings) {
                    out.write_all(encoder.line(e)?)?;
                }
                recordings::write_records(&mut out, &recordings)?;
            }
            OutputFormat::Table => {
                // The node shows when more than one is involved.
                let header =
                    if several { format!("{:<16} {}", "NODE", output::table::TIMELINE_HEADER) } else { output::table::TIMELINE_HEADER.to_string() };
                writeln!(out, "{header}")?;
                for e in recordings::timeline(&recordings) {
                    let row = timeline_row(e);
                    if several {
                        writeln!(out, "{:<16} {row}", e.node.as_deref().unwrap_or("-"))?;
                    } else {
                        writeln!(out, "{row}")?;
                    }
                }
            }
        }
        out.flush()
    })();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Both sinks, in turn.
struct Tee<'a> {
    first: &'a mut dyn Sink,
    second: &'a mut dyn Sink,
}

impl Sink for Tee<'_> {
    fn event(&mut self, event: &crate::events::Event) -> std::io::Result<()> {
        self.first.event(event)?;
        self.second.event(event)
    }

    // A batching sink's lines reach the reader only here.
    fn flush(&mut self) -> std::io::Result<()> {
        self.first.flush()?;
        self.second.flush()
    }
}

fn print_stories(collect: &Collect, format: OutputFormat) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let result = (|| -> std::io::Result<()> {
        for story in stories(&collect.events) {
            let first = story.events.first().map(|e| e.ts_unix_ns).unwrap_or_default();
            let last = story.events.last().map(|e| e.ts_unix_ns).unwrap_or_default();
            match format {
                OutputFormat::Json => {
                    let events: Vec<Value> = story
                        .events
                        .iter()
                        .filter_map(|e| output::json::to_json(e).ok())
                        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
                        .collect();
                    let nodes: std::collections::BTreeSet<&str> = story.events.iter().filter_map(|e| e.node.as_deref()).collect();
                    // CONTRACT `node`: the one node it was seen on; `nodes` when several (merged recordings).
                    let node = (nodes.len() == 1).then(|| nodes.first().copied()).flatten();
                    let line = json!({
                        "flow": story.label, "proto": story.proto, "node": node, "nodes": nodes, "pods": story.pods(),
                        "first": rfc3339(first), "last": rfc3339(last), "events": events,
                    });
                    writeln!(out, "{line}")?;
                }
                OutputFormat::Table => {
                    let pods = story.pods();
                    writeln!(
                        out,
                        "=== {} {}{}  {} events, {:.3}s",
                        story.proto,
                        story.label,
                        if pods.is_empty() { String::new() } else { format!("  ({})", pods.join(", ")) },
                        story.events.len(),
                        (last - first) as f64 / 1e9
                    )?;
                    for e in &story.events {
                        writeln!(out, "    {}", timeline_row(e))?;
                    }
                }
            }
        }
        out.flush()
    })();
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    if collect.beyond_limit > 0 {
        log::warn!("{} events past the first {} were not grouped (counted in the summaries above)", collect.beyond_limit, collect.limit);
    }
    Ok(())
}
