//! The event loop shared by tracing commands: drain the ring buffer, decode, print, stop on
//! Ctrl-C / SIGTERM / --duration / --count, and account for every event.

use std::{io, time::Duration};

use anyhow::Context as _;
use aya::{Ebpf, maps::RingBuf};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
    time::{Instant, sleep_until},
};
use tracer_common::event::EventHeader;

use crate::{events::Event, output::Sink};

/// When to stop besides a signal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stop {
    pub duration: Option<Duration>,
    pub count: Option<u64>,
}

/// What happened to the records userspace saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivered {
    /// Records read from the ring buffer.
    pub read: u64,
    /// Events printed.
    pub printed: u64,
    /// Records that did not decode (a kernel/user mismatch: never expected).
    pub undecodable: u64,
    /// The output was closed (a pipe into `head`, say): a clean stop, not an error.
    pub output_closed: bool,
}

/// Why the loop ended.
enum Flow {
    Continue,
    Stop,
}

/// Runs until a stop condition; `decode` turns one raw record into an event.
pub async fn run(
    ebpf: &mut Ebpf,
    stop: Stop,
    sink: &mut dyn Sink,
    mut decode: impl FnMut(&EventHeader, &[u8]) -> Option<Event>,
) -> anyhow::Result<Delivered> {
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
    // SAFETY: the ring buffer owns its fd and AsyncFd owns the ring buffer, so the fd stays open
    // for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("polling the ring buffer")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    // A far-away deadline keeps one select! arm for both cases.
    let deadline = Instant::now() + stop.duration.unwrap_or(Duration::from_secs(100 * 365 * 86400));
    let mut delivered = Delivered::default();

    let mut handle = |bytes: &[u8], delivered: &mut Delivered| -> anyhow::Result<Flow> {
        delivered.read += 1;
        let Some(header) = header(bytes) else {
            delivered.undecodable += 1;
            return Ok(Flow::Continue);
        };
        let Some(event) = decode(&header, bytes) else {
            delivered.undecodable += 1;
            return Ok(Flow::Continue);
        };
        match sink.event(&event) {
            Ok(()) => delivered.printed += 1,
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                delivered.output_closed = true;
                return Ok(Flow::Stop);
            }
            Err(err) => return Err(err).context("writing output"),
        }
        if stop.count.is_some_and(|c| delivered.printed >= c) {
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    };

    'outer: loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for the ring buffer")?;
                let inner = guard.get_inner_mut();
                while let Some(item) = inner.next() {
                    if let Flow::Stop = handle(&item, &mut delivered)? {
                        break 'outer;
                    }
                }
                guard.clear_ready();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
    }
    // Events already in the buffer when a signal or the deadline came are part of the run:
    // print them, unless --count or a closed output already ended it.
    if !delivered.output_closed && !stop.count.is_some_and(|c| delivered.printed >= c) {
        let inner = ring.get_mut();
        while let Some(item) = inner.next() {
            if let Flow::Stop = handle(&item, &mut delivered)? {
                break;
            }
        }
    }
    Ok(delivered)
}

fn header(bytes: &[u8]) -> Option<EventHeader> {
    (bytes.len() >= size_of::<EventHeader>())
        // SAFETY: length checked; EventHeader is plain integers.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}
