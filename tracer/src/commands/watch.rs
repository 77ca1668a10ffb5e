//! `tracer watch`: every probe family in one timeline, or (`--by-flow`) one story per
//! connection when tracing stops.

use std::io::Write as _;

use serde_json::{Value, json};

use crate::{
    cli::{OutputFormat, config::WatchCommandConfig},
    diagnose::flows::stories,
    events::rfc3339,
    output::{
        self, Collect, Sink,
        json::JsonSink,
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
        OutputFormat::Json => Box::new(JsonSink::new(std::io::stdout())),
        OutputFormat::Table => Box::new(TimelineSink::new(std::io::stdout())),
    };
    if config.by_flow {
        eprintln!("tracer: watch: grouping events per connection; the connections print when tracing stops");
    }
    let sink: &mut dyn Sink = if config.by_flow { &mut collect } else { stream.as_mut() };
    let delivered = session.run(stop, sink).await?;
    let selection = session.pods.selection().to_string();
    session.stop()?;
    delivered.report(&selection);
    if config.by_flow && !delivered.output_closed {
        print_stories(&collect, config.trace.output)?;
    }
    Ok(())
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
                    let line = json!({
                        "flow": story.label, "proto": story.proto, "pods": story.pods(),
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
