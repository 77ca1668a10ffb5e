//! Presentation: a table for people, JSON Lines for scripts (../shared/CONTRACT.md).

pub(crate) mod json;
pub(crate) mod metrics;
pub(crate) mod table;

use std::io::{self, Write};

use crate::events::Event;

/// How events are printed: `-o table` for people, `-o json` for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
}

/// Where decoded events go. Errors are I/O errors of the output (a closed pipe, say).
pub(crate) trait Sink {
    fn event(&mut self, event: &Event) -> io::Result<()>;
}

/// The sink for `format`, writing to stdout.
pub(crate) fn stdout_sink(format: OutputFormat) -> Box<dyn Sink> {
    let out = io::stdout();
    match format {
        OutputFormat::Json => Box::new(json::JsonSink::new(out)),
        OutputFormat::Table => Box::new(table::TableSink::new(out)),
    }
}

/// Writes one line and flushes, so a reader sees each event when it happens.
pub(crate) fn write_line<W: Write>(out: &mut W, line: &[u8]) -> io::Result<()> {
    out.write_all(line)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Keeps events for a report made when tracing stops (`watch --by-flow`, `diagnose`), up to
/// `limit`; what is beyond it is counted, and the report says so.
pub(crate) struct Collect {
    pub events: Vec<Event>,
    pub limit: usize,
    pub beyond_limit: u64,
}

impl Collect {
    pub(crate) fn new(limit: usize) -> Self {
        Self { events: Vec::new(), limit, beyond_limit: 0 }
    }
}

impl Sink for Collect {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        if self.events.len() < self.limit {
            self.events.push(event.clone());
        } else {
            self.beyond_limit += 1;
        }
        Ok(())
    }
}
