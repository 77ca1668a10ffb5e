//! Presentation: a table for people, JSON Lines for scripts (../shared/CONTRACT.md).

pub mod json;
pub mod table;

use std::io::{self, Write};

use crate::{cli::OutputFormat, events::Event};

/// Where decoded events go. Errors are I/O errors of the output (a closed pipe, say).
pub trait Sink {
    fn event(&mut self, event: &Event) -> io::Result<()>;
}

/// The sink for `format`, writing to stdout.
pub fn stdout_sink(format: OutputFormat) -> Box<dyn Sink> {
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
