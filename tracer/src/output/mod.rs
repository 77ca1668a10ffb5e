//! Presentation: a table for people, JSON Lines for scripts (../shared/CONTRACT.md).

pub(crate) mod json;
pub(crate) mod metrics;
pub(crate) mod table;

use std::{
    io::{self, Write},
    net::IpAddr,
    os::fd::AsFd as _,
};

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

    /// Hands what was written since the last call to the reader. The event loop calls it after
    /// each read of the ring buffer, so a sink that batches its writes makes one write(2) per
    /// batch rather than one per event; a sink that writes each event through needs nothing.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes of JSON lines held before a write(2), when no read of the ring buffer ended first.
const BATCH_BYTES: usize = 1 << 16;

/// The sink for `format`, writing to stdout.
pub(crate) fn stdout_sink(format: OutputFormat) -> Box<dyn Sink> {
    let out = io::stdout();
    match format {
        // JSON lines batched per read of the ring buffer (a storm is hundreds of thousands of
        // lines a second), into stdout's descriptor directly: std's stdout writes at every
        // newline. Without a second descriptor, line by line as before.
        OutputFormat::Json => match out.as_fd().try_clone_to_owned() {
            Ok(fd) => Box::new(json::JsonSink::batched(io::BufWriter::with_capacity(BATCH_BYTES, std::fs::File::from(fd)))),
            Err(_) => Box::new(json::JsonSink::new(out)),
        },
        OutputFormat::Table => Box::new(table::TableSink::new(out)),
    }
}

/// Where a family's detail writes its JSON fields, after the fields every event has: the
/// encoder of `-o json`, and in tests the serde reference it is checked against. One method per
/// JSON type keeps it object-safe and the field order the family's.
pub(crate) trait JsonFields {
    /// A string, or null.
    fn str(&mut self, key: &str, value: Option<&str>) -> io::Result<()>;
    /// An unsigned number, or null.
    fn uint(&mut self, key: &str, value: Option<u64>) -> io::Result<()>;
    /// A number, or null (NaN and infinities are null, as serde_json writes them).
    fn float(&mut self, key: &str, value: Option<f64>) -> io::Result<()>;
    fn bool(&mut self, key: &str, value: bool) -> io::Result<()>;
    /// A bare address as a string, or null.
    fn addr(&mut self, key: &str, ip: Option<IpAddr>) -> io::Result<()>;
    /// Opens a nested object under `key`; the fields up to [`JsonFields::end`] go inside it.
    fn begin(&mut self, key: &str) -> io::Result<()>;
    fn end(&mut self) -> io::Result<()>;
}

/// The CONTRACT's `tunnel` object of an encapsulated packet: `{"type", "vni", "src", "dst"}`,
/// the outer ends as `IP:PORT` for UDP tunnels, else bare IPs.
pub(crate) fn write_tunnel(tunnel: &crate::events::Tunnel, out: &mut dyn JsonFields) -> io::Result<()> {
    out.begin("tunnel")?;
    out.str("type", Some(tunnel.kind.name()))?;
    out.uint("vni", tunnel.vni.map(u64::from))?;
    out.str("src", Some(&tunnel.src_endpoint()))?;
    out.str("dst", Some(&tunnel.dst_endpoint()))?;
    out.end()
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
