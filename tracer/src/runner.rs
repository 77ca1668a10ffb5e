//! The event loop shared by tracing commands: drain the ring buffer, decode, print, stop on
//! Ctrl-C / SIGTERM / --duration / --count, and account for every event.

use std::{collections::VecDeque, io, time::Duration};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};
use tracer_common::event::EventHeader;

use crate::{
    events::Event,
    output::Sink,
    pods::{
        layer::{MAX_HOLD, PodLayer},
        now_unix_ns,
    },
};

/// When to stop besides a signal.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stop {
    pub duration: Option<Duration>,
    pub count: Option<u64>,
}

/// What happened to the records userspace saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Delivered {
    /// Records read from the ring buffer.
    pub read: u64,
    /// Events printed.
    pub printed: u64,
    /// Records that did not decode (a kernel/user mismatch: never expected).
    pub undecodable: u64,
    /// Events the kernel's pod pre-filter let through that were not the selected pods' at the
    /// event's time (a pod change the kernel maps had not caught up with).
    pub filtered: u64,
    /// The output was closed (a pipe into `head`, say): a clean stop, not an error.
    pub output_closed: bool,
}

impl Delivered {
    /// Says what the summary lines do not: events of other pods (debug) and records that did not
    /// decode (never expected). `selection` names the pods chosen.
    pub(crate) fn report(&self, selection: &str) {
        if self.filtered > 0 {
            log::debug!("{} events were of other pods by the time they happened ({selection})", self.filtered);
        }
        if self.undecodable > 0 {
            log::warn!("{} records could not be decoded (kernel/user version mismatch?)", self.undecodable);
        }
    }
}

/// Why the loop ended.
enum Flow {
    Continue,
    Stop,
}

/// Turns raw records into events, and makes events of its own as time passes.
pub(crate) trait Pipeline {
    /// One raw record (its header already read) into an event; None for a record that does not
    /// decode.
    fn decode(&mut self, header: &EventHeader, bytes: &[u8]) -> Option<Event>;

    /// Events made from what was seen (a connection that got no reply in time, say), as of
    /// `now`; called every [`TICK`].
    fn tick(&mut self, _now: i128) -> Vec<Event> {
        Vec::new()
    }
}

/// The ring buffer every family writes to, taken out of `ebpf` and registered for polling.
pub(crate) type Ring = AsyncFd<RingBuf<MapData>>;

/// Takes the ring buffer out of `ebpf` for polling.
pub(crate) fn ring(ebpf: &mut Ebpf) -> anyhow::Result<Ring> {
    let ring = RingBuf::try_from(ebpf.take_map("EVENTS").context("EVENTS map missing")?)?;
    // SAFETY: the ring buffer owns its fd and AsyncFd owns the ring buffer, so the fd stays open
    // for as long as it is registered.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|e| e.into_parts().1).context("polling the ring buffer")
}

/// Runs until a stop condition; `pipeline` turns raw records into events, `pods` names their
/// pods. An event newer than what the pod registry knows is held back until the source catches
/// up (at most [`MAX_HOLD`]), so a pod created a moment ago is named, and an address it took over
/// is not given the old pod's name.
pub(crate) async fn run(
    ring: &mut Ring,
    stop: Stop,
    sink: &mut dyn Sink,
    pods: &mut PodLayer,
    pipeline: &mut dyn Pipeline,
) -> anyhow::Result<Delivered> {
    let Waits { mut sigint, mut sigterm, deadline } = waits(stop.duration)?;
    let mut out = Output { stop, sink, delivered: Delivered::default(), held: VecDeque::new() };
    let mut hold_check = interval(MAX_HOLD / 4);
    let mut ticks = interval(TICK);
    let mut polls = interval(POLL);
    // A late tick is not made up for with a burst: one drain reads everything there is.
    polls.set_missed_tick_behavior(MissedTickBehavior::Delay);

    'outer: loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for the ring buffer")?;
                if let Flow::Stop = drain(guard.get_inner_mut(), &mut out, pipeline, pods)? {
                    break 'outer;
                }
                guard.clear_ready();
            }
            // Records that did not take the ring past its wake-up mark woke nobody: collected
            // here, so none waits longer than POLL.
            _ = polls.tick() => {
                if let Flow::Stop = drain(ring.get_mut(), &mut out, pipeline, pods)? {
                    break 'outer;
                }
            }
            msg = pods.recv() => {
                if let Some(msg) = msg {
                    pods.apply(msg)?;
                    if let Flow::Stop = out.release(pods, false)? {
                        break;
                    }
                }
            }
            _ = ticks.tick() => {
                for event in pipeline.tick(now_unix_ns()) {
                    if let Flow::Stop = out.offer(event, pods)? {
                        break 'outer;
                    }
                }
            }
            _ = hold_check.tick(), if !out.held.is_empty() => {
                if let Flow::Stop = out.release(pods, false)? {
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
        // One write for whatever this turn printed (a whole ring-buffer read).
        if let Flow::Stop = out.flush()? {
            break;
        }
    }
    // Events already in the buffer when a signal or the deadline came are part of the run:
    // print them, unless --count or a closed output already ended it.
    if !out.done() {
        drain(ring.get_mut(), &mut out, pipeline, pods)?;
        out.release(pods, true)?;
    }
    out.flush()?;
    Ok(out.delivered)
}

/// Reads every record the ring buffer holds into events offered to the output; stops early when
/// the output says stop (`--count` reached, output closed).
fn drain(inner: &mut RingBuf<MapData>, out: &mut Output<'_>, pipeline: &mut dyn Pipeline, pods: &mut PodLayer) -> anyhow::Result<Flow> {
    while let Some(item) = inner.next() {
        out.delivered.read += 1;
        let Some(event) = header(&item).and_then(|h| pipeline.decode(&h, &item)) else {
            out.delivered.undecodable += 1;
            continue;
        };
        if let Flow::Stop = out.offer(event, pods)? {
            return Ok(Flow::Stop);
        }
    }
    Ok(Flow::Continue)
}

/// The longest a record waits in the ring buffer: the kernel wakes the reader only when a record
/// takes the unread data past an eighth of the ring (tracer-ebpf's emit.rs: no wake-up per event,
/// which under a storm cost the dropping CPU more than the event itself); `run` reads the ring
/// this often anyway. Not shorter: each wake-up of an otherwise idle reader costs a busy node
/// more than its own few microseconds (the task it preempts loses its caches and its place);
/// at 10 ms (100 wake-ups a second) a running `watch` cost the node lab's 64-byte UDP ~5% of its
/// packets with no event to read, as much as any process waking that often (BENCHMARKS.md,
/// session 17), and at 100 ms the loss is within the noise, while a person watching the stream
/// sees no difference.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// How often `run` calls the pipeline's tick.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// What a command's event loop waits on besides the ring buffer: Ctrl-C, SIGTERM and --duration.
pub(crate) struct Waits {
    pub sigint: Signal,
    pub sigterm: Signal,
    pub deadline: Instant,
}

/// Installs the signal handlers and sets the deadline.
pub(crate) fn waits(duration: Option<Duration>) -> anyhow::Result<Waits> {
    Ok(Waits {
        sigint: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        sigterm: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        // A far-away deadline keeps one select! arm for both cases.
        deadline: Instant::now() + duration.unwrap_or(Duration::from_secs(100 * 365 * 86400)),
    })
}

/// Ordered output with pod naming and hold-back.
struct Output<'s> {
    stop: Stop,
    sink: &'s mut dyn Sink,
    delivered: Delivered,
    /// Events waiting for the pod registry, in arrival order.
    held: VecDeque<Event>,
}

impl Output<'_> {
    fn done(&self) -> bool {
        self.delivered.output_closed || self.stop.count.is_some_and(|c| self.delivered.printed >= c)
    }

    fn offer(&mut self, event: Event, pods: &PodLayer) -> anyhow::Result<Flow> {
        // Keep arrival order: once one event waits, later ones queue behind it.
        if self.held.is_empty() && pods.is_current(event.ts_unix_ns) {
            return self.emit(event, pods);
        }
        self.held.push_back(event);
        self.release(pods, false)
    }

    /// Prints held events the registry now covers, or that waited long enough (all at the end).
    fn release(&mut self, pods: &PodLayer, all: bool) -> anyhow::Result<Flow> {
        let give_up = now_unix_ns() - MAX_HOLD.as_nanos() as i128;
        while let Some(front) = self.held.front() {
            if !(all || pods.is_current(front.ts_unix_ns) || front.ts_unix_ns <= give_up) {
                break;
            }
            let Some(event) = self.held.pop_front() else { break };
            if let Flow::Stop = self.emit(event, pods)? {
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Continue)
    }

    /// Hands the sink's batch to the reader; a closed output is a clean stop, as in `emit`.
    fn flush(&mut self) -> anyhow::Result<Flow> {
        if self.delivered.output_closed {
            return Ok(Flow::Stop);
        }
        match self.sink.flush() {
            Ok(()) => Ok(Flow::Continue),
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.delivered.output_closed = true;
                Ok(Flow::Stop)
            }
            Err(err) => Err(err).context("writing output"),
        }
    }

    fn emit(&mut self, mut event: Event, pods: &PodLayer) -> anyhow::Result<Flow> {
        if self.done() {
            return Ok(Flow::Stop);
        }
        if !pods.annotate(&mut event) {
            self.delivered.filtered += 1;
            return Ok(Flow::Continue);
        }
        match self.sink.event(&event) {
            Ok(()) => self.delivered.printed += 1,
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.delivered.output_closed = true;
                return Ok(Flow::Stop);
            }
            Err(err) => return Err(err).context("writing output"),
        }
        Ok(if self.done() { Flow::Stop } else { Flow::Continue })
    }
}

pub(crate) fn header(bytes: &[u8]) -> Option<EventHeader> {
    (bytes.len() >= size_of::<EventHeader>())
        // SAFETY: length checked; EventHeader is plain integers.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}
