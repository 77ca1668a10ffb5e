//! `tracer serve`: every probe until stopped, Prometheus metrics on an address, events as JSON
//! Lines on stdout.

use std::{
    io,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
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
    eprintln!("tracer: serve: metrics on http://{addr}/metrics");

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
                metrics::set_kernel_counts(family.name(), c.matched, c.lost);
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
/// listener) but `/healthz`, one connection at a time: scrapes are rare and small.
async fn serve_scrapes(listener: TcpListener, handle: PrometheusHandle) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        if let Err(err) = answer(stream, &handle).await {
            log::debug!("scrape from {peer}: {err}");
        }
    }
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
    stream.write_all(head.as_bytes()).await?;
    if !request.starts_with(b"HEAD ") {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
