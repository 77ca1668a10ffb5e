//! `tracer serve`: every probe until stopped, Prometheus metrics on an address, events as JSON
//! Lines on stdout.

use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracer_common::event::EventHeader;

use crate::{
    cli::config::ServeCommandConfig,
    events::Event,
    loader::CounterReader,
    output::{
        Sink,
        json::JsonSink,
        metrics::{self, Cardinality},
    },
    probes::{CommandId, FamilyId},
    runner::{self, Pipeline, Stop},
    session::{Decoders, Parts},
};

/// How often the kernel's seen/lost counters are copied into the metrics.
const COUNTS_EVERY: Duration = Duration::from_secs(1);
/// A scrape's request must arrive within this, and fit in this many bytes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8192;
/// The answer must be taken by the client within this: a client that stops reading cannot
/// hold its slot for longer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once. Past this, a new connection is not accepted: it waits in the
/// kernel's listen backlog until a slot frees, which takes at most [`REQUEST_TIMEOUT`] +
/// [`RESPONSE_TIMEOUT`]. Waiting rather than closing keeps a scrape that arrives during a burst
/// answered (Prometheus retries only at the next interval), and the backlog, not tracer, holds
/// the waiting connections: no file descriptor for them. Prometheus servers and the DaemonSet's
/// three probes need a few at a time.
const MAX_SCRAPES: usize = 8;

pub(crate) async fn run(config: ServeCommandConfig) -> anyhow::Result<()> {
    // Bound before anything is attached: a taken port leaves nothing behind.
    let listener = TcpListener::bind(config.metrics).await.with_context(|| format!("listening on {} (--metrics)", config.metrics))?;
    // The `node` label of every series: the name the API and the JSON events know it by.
    let node = crate::pods::kube::node_name(config.watch.trace.pods.node_name.as_deref()).unwrap_or_default();
    let handle = metrics::install(&node, config.series_idle)?;
    metrics::set_build_info();
    let mut session = super::start_every_family(CommandId::Serve, &config.watch).await?;
    for p in &session.probes {
        metrics::set_probe_up(p.family.name(), p.result.is_ok());
    }
    let running: Vec<FamilyId> = session.probes.iter().filter(|p| p.result.is_ok()).map(|p| p.family).collect();
    let counters = CounterReader::open(session.ebpf())?;
    let addr = listener.local_addr().unwrap_or(config.metrics);
    tokio::spawn(serve_scrapes(listener, handle));
    eprintln!("tracer: serve: metrics on http://{addr}/metrics (up to {MAX_SCRAPES} scrapes at a time, more wait)");

    let limits = Cardinality::new(config.max_series, config.series_idle);
    let mut sink = ServeSink { limits, json: (!config.quiet).then(|| JsonSink::new(io::stdout())) };
    let stop = Stop { duration: config.watch.trace.duration, count: None };
    let mut publisher = Publisher { counters, running, last: Instant::now() - COUNTS_EVERY };
    let Parts { ring, pods, decoders } = session.parts();
    let mut pipeline = WithCounts { inner: decoders, publisher: &mut publisher };
    runner::run(ring, stop, &mut sink, pods, &mut pipeline).await?;
    pipeline.publish();
    session.stop()?;
    Ok(())
}

/// Copies the kernel's seen/lost counters of the running families into the metrics.
struct Publisher {
    counters: CounterReader,
    running: Vec<FamilyId>,
    last: Instant,
}

impl Publisher {
    fn publish(&mut self) {
        for family in &self.running {
            if let Ok(c) = self.counters.read(family.kinds()) {
                metrics::set_kernel_counts(family.name(), c.matched, c.lost, c.counted);
            }
        }
        self.last = Instant::now();
    }
}

/// The session's decoders, publishing the counters and the families' own metrics (read from
/// their maps) every [`COUNTS_EVERY`] on the way.
struct WithCounts<'a> {
    inner: Decoders<'a>,
    publisher: &'a mut Publisher,
}

impl WithCounts<'_> {
    fn publish(&mut self) {
        self.publisher.publish();
        self.inner.publish_metrics();
    }
}

impl Pipeline for WithCounts<'_> {
    fn decode(&mut self, header: &EventHeader, bytes: &[u8]) -> Option<Event> {
        self.inner.decode(header, bytes)
    }

    fn tick(&mut self, now: i128) -> Vec<Event> {
        if self.publisher.last.elapsed() >= COUNTS_EVERY {
            self.publish();
        }
        self.inner.tick(now)
    }
}

/// Counts each event into the metrics and, unless --quiet, prints it.
struct ServeSink {
    limits: Cardinality,
    json: Option<JsonSink<io::Stdout>>,
}

impl Sink for ServeSink {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        metrics::observe(event, &mut self.limits);
        match &mut self.json {
            Some(json) => json.event(event),
            None => Ok(()),
        }
    }
}

/// Answers every request on the listener with the metrics (any path, like the exporter's own
/// listener) but `/healthz`, up to [`MAX_SCRAPES`] connections at a time, each in its own task:
/// a client that connects and sends nothing holds one slot for [`REQUEST_TIMEOUT`], not the
/// others.
async fn serve_scrapes(listener: TcpListener, handle: PrometheusHandle) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut backoff = AcceptBackoff::default();
    loop {
        // The slot first: past the bound, connections stay in the listen backlog, unaccepted.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let failures = backoff.succeeded();
                if failures > 0 {
                    log::warn!("serve: accepting scrapes again after {failures} failed accepts");
                }
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, &handle).await {
                        log::debug!("scrape from {peer}: {err}");
                    }
                    drop(slot);
                });
            }
            Err(err) => {
                drop(slot);
                if let Retry::After { pause, first } = backoff.failed(&err) {
                    if first {
                        log::warn!(
                            "serve: accepting a scrape failed: {err}; retrying with a pause growing to {} ms until it works",
                            AcceptBackoff::MAX.as_millis()
                        );
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// How a failing accept(2) is retried. Errors of the process or the system (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM) last until something else changes, so retrying at once would spin a CPU:
/// each failure in a row doubles the pause, from [`AcceptBackoff::FIRST`] up to
/// [`AcceptBackoff::MAX`]. Errors of one pending connection (the peer gave up, or the network
/// errors Linux passes on from it) are over once returned: the next accept goes at once.
#[derive(Debug, Default)]
struct AcceptBackoff {
    /// Failed accepts in a row that paused.
    streak: u32,
    pause: Duration,
}

/// What follows a failed accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// The error was one pending connection's: the next accept goes at once.
    AtOnce,
    /// Pause this long first; `first` for the first failure of a streak (said once on stderr).
    After { pause: Duration, first: bool },
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    /// Records a failed accept.
    fn failed(&mut self, err: &io::Error) -> Retry {
        if is_one_connections_error(err) {
            return Retry::AtOnce;
        }
        self.streak += 1;
        self.pause = if self.streak == 1 { Self::FIRST } else { (self.pause * 2).min(Self::MAX) };
        Retry::After { pause: self.pause, first: self.streak == 1 }
    }

    /// Records an accepted connection; how many failed accepts in a row it ends.
    fn succeeded(&mut self) -> u32 {
        self.pause = Duration::ZERO;
        std::mem::take(&mut self.streak)
    }
}

/// An accept error that concerns the pending connection it was about, not the listener: the
/// peer aborted, or one of the network errors accept(2) passes on from the new socket (which
/// its manual says to retry like EAGAIN).
fn is_one_connections_error(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset)
        || err.raw_os_error().is_some_and(|code| {
            [libc::EPROTO, libc::ENOPROTOOPT, libc::EHOSTDOWN, libc::ENONET, libc::EHOSTUNREACH, libc::EOPNOTSUPP, libc::ENETUNREACH, libc::ENETDOWN]
                .contains(&code)
        })
}

async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> io::Result<()> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok::<_, io::Error>(())
    })
    .await;
    if !matches!(read, Ok(Ok(()))) {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no complete request"));
    }
    // `/healthz` (the DaemonSet's probes): this loop answers, so the probes are attached and the
    // runtime is not wedged; rendering the metrics is not needed for that.
    let path = request.split(|b| *b == b' ').nth(1).unwrap_or_default();
    let (status, body) = if !(request.starts_with(b"GET ") || request.starts_with(b"HEAD ")) {
        ("405 Method Not Allowed", "only GET\n".to_string())
    } else if path == b"/healthz" {
        ("200 OK", "ok\n".to_string())
    } else {
        ("200 OK", handle.render())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = tokio::time::timeout(RESPONSE_TIMEOUT, async {
        stream.write_all(head.as_bytes()).await?;
        if !request.starts_with(b"HEAD ") {
            stream.write_all(body.as_bytes()).await?;
        }
        stream.shutdown().await
    })
    .await;
    write.unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "the answer was not taken")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os_error(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    /// The pause after one more failure with `code`, or None for at once.
    fn pause_ms(backoff: &mut AcceptBackoff, err: io::Error) -> Option<(u128, bool)> {
        match backoff.failed(&err) {
            Retry::AtOnce => None,
            Retry::After { pause, first } => Some((pause.as_millis(), first)),
        }
    }

    #[test]
    fn accept_failures_of_the_process_pause_longer_each_time_up_to_the_cap() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<(u128, bool)> = (0..10).filter_map(|_| pause_ms(&mut backoff, os_error(libc::EMFILE))).collect();
        let want: Vec<(u128, bool)> = [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000].into_iter().enumerate().map(|(i, ms)| (ms, i == 0)).collect();
        assert_eq!(pauses, want, "only the first of a streak is said");
        // ENFILE and ENOBUFS are the system's: they pause too, in the same streak.
        assert_eq!(pause_ms(&mut backoff, os_error(libc::ENFILE)), Some((1000, false)));
        assert_eq!(pause_ms(&mut backoff, os_error(libc::ENOBUFS)), Some((1000, false)));
        assert_eq!(backoff.succeeded(), 12, "the streak it ends");
        assert_eq!(pause_ms(&mut backoff, os_error(libc::ENOMEM)), Some((10, true)), "a new streak starts from the first pause, said again");
    }

    #[test]
    fn accept_failures_of_one_connection_retry_at_once_and_leave_the_streak_alone() {
        let mut backoff = AcceptBackoff::default();
        assert_eq!(pause_ms(&mut backoff, os_error(libc::EMFILE)), Some((10, true)));
        assert_eq!(pause_ms(&mut backoff, os_error(libc::EMFILE)), Some((20, false)));
        for err in
            [io::Error::from(io::ErrorKind::ConnectionAborted), os_error(libc::ECONNABORTED), os_error(libc::EPROTO), os_error(libc::ENETUNREACH)]
        {
            let text = err.to_string();
            assert_eq!(pause_ms(&mut backoff, err), None, "{text}");
        }
        assert_eq!(pause_ms(&mut backoff, os_error(libc::EMFILE)), Some((40, false)), "the pause keeps growing from where it was");
        assert_eq!(backoff.succeeded(), 3);
        assert_eq!(backoff.succeeded(), 0, "nothing to say after a success");
    }
}
