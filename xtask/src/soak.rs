//! `cargo xtask soak`: `tracer serve` for minutes under a steady drop load, with pods coming and
//! going in its pods file and ten scrapes a second, watching what must stay flat (resident
//! memory, open file descriptors, the series of a scrape) and checking that every counter equals
//! the events it counted.
//!
//! It runs in the bench's lab (xtask/src/bench.rs: two namespaces joined by one veth pair;
//! nothing touches the machine's own devices, every loop is bounded by the run's length, and the
//! namespaces and processes go when it ends, fails or is interrupted). `tracer serve` runs in the
//! client namespace, its metrics on that namespace's 127.0.0.1. The server namespace holds one
//! address per pod slot; a sender in the client namespace drops UDP on a closed port of each slot
//! in turn (NO_SOCKET drops), at a steady rate. The pods file (`--pods-from file:`, which names
//! pods by address: it knows no network namespaces) lists the pod holding each slot: over the
//! run, [`PODS`] pods are created, each taking a slot's address from the pod before it (deleted),
//! as a rollout reuses addresses, and the last ones are deleted at the end. A scraper in the
//! client namespace GETs /metrics ten times a second; once a second the soak samples tracer's
//! VmRSS, its open fds and the series of the last scrape.
//!
//! The verdict: least-squares slopes per hour of RSS and fds after a warm-up, against stated
//! thresholds, and the books: every `tracer_drops_total` label set equals the JSON drop events
//! serve printed with the same labels (summed over the lives of a series that was forgotten and
//! came back), and the kernel's `seen` equals the JSON events plus `lost` (the drops the ring
//! buffer had no room for, which `tracer_drops_undelivered_total` must add up to).

use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{ChildStdout, Command},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::bench::{
    CLIENT_IP, Lab, Markers, Proc, Summary, check_interrupted, enter_netns, install_signal_handlers, loadavg, machine, pods_list, remove_stale_labs,
    sh, sleep, summaries, utc_now, write_between_markers,
};

/// Pods created (and deleted) over a run.
const PODS: usize = 1000;
/// Pods at a time: each holds one address of the server namespace, [`slot_ip`].
const SLOTS: usize = 50;
/// The steady drop load, spread evenly over the slots.
const DROPS_PER_SEC: u64 = 200;
const SCRAPES_PER_SEC: u64 = 10;
/// Nothing listens there in the server namespace: every datagram is a NO_SOCKET drop.
const DROP_PORT: u16 = 9998;
const METRICS_ADDR: &str = "127.0.0.1:19470";
/// The `node` label of every series.
const NODE: &str = "soak";
/// serve's `--series-idle`: the series of a deleted pod leaves the output this long after its
/// last drop, so the series count levels off after it (the default, 10m, needs a longer run).
const SERIES_IDLE_SECS: u64 = 60;
/// How long tracer remembers a deleted pod (`RETENTION_NS` in tracer/src/pods/registry.rs), for
/// events that come late: with pods deleted at a steady rate, its registry grows for this long,
/// then stays level.
const REGISTRY_RETENTION_SECS: u64 = 300;
/// Samples before this are left out of the slopes: what tracer keeps of deleted pods (their
/// registry entries, their series) must have reached its steady size first, plus a margin.
const WARM_UP: Duration =
    Duration::from_secs(if SERIES_IDLE_SECS > REGISTRY_RETENTION_SECS { SERIES_IDLE_SECS } else { REGISTRY_RETENTION_SECS } + 30);
/// Samples after the warm-up that make a slope worth stating.
const MIN_MEASURED: Duration = Duration::from_secs(120);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Growth per hour past which the soak fails. 8 MiB/h is a leak of ~230 bytes per scrape (36,000
/// an hour) or ~12 bytes per event (720,000 an hour); less is not told from the allocator's noise
/// in a run of minutes.
const RSS_MAX_SLOPE_MIB_PER_H: f64 = 8.0;
/// One fd leaked per 1,200 scrapes is 30 an hour. Less cannot be told, in the 270 s measured by
/// a default run, from one fd opened once for good (a step of one in the middle of the samples
/// is a slope of ~20 an hour), which is no leak.
const FDS_MAX_SLOPE_PER_H: f64 = 30.0;

const MARKERS: Markers = Markers { begin: "<!-- soak:begin (written by `cargo xtask soak`; edit outside the markers) -->", end: "<!-- soak:end -->" };

pub(crate) struct Options {
    pub tracer: PathBuf,
    pub minutes: f64,
    pub out: Option<PathBuf>,
}

pub(crate) fn soak(workspace: &Path, opts: &Options) -> anyhow::Result<()> {
    let run = Duration::from_secs_f64(opts.minutes * 60.0);
    ensure!(
        run >= WARM_UP + MIN_MEASURED,
        "--minutes {}: at least {} minutes are needed (a warm-up of {} s, then {} s of samples)",
        opts.minutes,
        (WARM_UP + MIN_MEASURED).as_secs_f64() / 60.0,
        WARM_UP.as_secs(),
        MIN_MEASURED.as_secs()
    );
    install_signal_handlers();
    remove_stale_labs();
    let load_before = loadavg();
    let lab = Lab::create()?;
    for slot in 0..SLOTS {
        sh(&["ip", "-n", &lab.server, "addr", "add", &format!("{}/32", slot_ip(slot)), "dev", &lab.server_dev])?;
    }
    let mut pods = PodsFile::new(lab.dir.join("pods.json"))?;
    let tracer = start_serve(&opts.tracer, &lab, &pods.path)?;
    let events = EventTally::start(tracer.stdout);
    let mut tracer = tracer.proc;
    eprintln!(
        "soak: {} min: {DROPS_PER_SEC} drops/s over {SLOTS} pod addresses, {PODS} pods through the file, {SCRAPES_PER_SEC} scrapes/s",
        opts.minutes
    );

    let scraper = Scraper::start(&lab.client);
    // The first sample then has a series count.
    scraper.wait_first(Duration::from_secs(10))?;
    let stop_load = Arc::new(AtomicBool::new(false));
    let load = start_drop_load(&lab.client, Arc::clone(&stop_load), run);
    let result = watch(&mut tracer, &mut pods, &scraper, run);
    stop_load.store(true, Ordering::SeqCst);
    let sent = load.join().map_err(|_| anyhow::anyhow!("the drop sender panicked"))??;
    let samples = result?;
    // The last pods are deleted too; then the books must settle with no load.
    pods.delete_all()?;
    let settled = settle(&events, &scraper)?;
    let scrapes = scraper.finish()?;
    tracer.interrupt(Duration::from_secs(30))?;
    let stderr = tracer.stderr_text();
    let summaries = summaries(&stderr);
    // Warnings once serving (those of the start say what this kernel lacks).
    let warnings = stderr
        .split(" | ")
        .skip_while(|l| !l.contains("metrics on http://"))
        .filter(|l| l.starts_with("tracer: warning:"))
        .map(str::to_string)
        .collect();
    let events = events.finish();
    let report = Report {
        minutes: opts.minutes,
        samples,
        pods: pods.created,
        rewrites: pods.rewrites,
        sent,
        scrapes,
        events,
        final_scrape: settled,
        summaries,
        warnings,
        load: (load_before, loadavg()),
    };
    drop(lab);
    let csv = workspace.join("target/soak-samples.csv");
    fs::write(&csv, report.csv()).with_context(|| format!("writing {}", csv.display()))?;
    let table = report.markdown();
    println!("{table}");
    let out = opts.out.clone().unwrap_or_else(|| workspace.join("BENCHMARKS.md"));
    write_between_markers(&out, &MARKERS, &table)?;
    eprintln!("soak: report written to {}, the samples to {}", out.display(), csv.display());
    let failures = report.failures();
    ensure!(failures.is_empty(), "soak failed: {}", failures.join("; "));
    Ok(())
}

/// The address of pod slot `slot` in the server namespace.
fn slot_ip(slot: usize) -> String {
    format!("10.213.0.{}", 100 + slot)
}

struct Serve {
    proc: Proc,
    stdout: ChildStdout,
}

fn start_serve(tracer: &Path, lab: &Lab, pods: &Path) -> anyhow::Result<Serve> {
    let from = format!("file:{}", pods.display());
    let idle = format!("{SERIES_IDLE_SECS}s");
    let args = ["serve", "--metrics", METRICS_ADDR, "--node-name", NODE, "--pods-from", &from, "--ip", "10.213.0.0/16", "--series-idle", &idle];
    // `ip netns exec` execs tracer: the child's pid is tracer's, whose /proc the samples read.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &lab.client]).arg(tracer).args(args);
    let mut proc = Proc::spawn_reading_stdout(&mut cmd)?;
    proc.wait_for("metrics on http://", Duration::from_secs(60)).context("tracer serve did not start")?;
    ensure!(proc.stderr_text().contains(&format!("{SLOTS} pods")), "tracer serve did not read the {SLOTS} pods: {}", proc.stderr_text());
    let stdout = proc.child.stdout.take().context("serve's stdout")?;
    Ok(Serve { proc, stdout })
}

// ---------------------------------------------------------------------------------------------
// The pods file.

/// The pods file serve follows, and which pod holds each slot.
struct PodsFile {
    path: PathBuf,
    /// The pod number in each slot; None once deleted.
    slots: Vec<Option<usize>>,
    /// Pods created so far (numbered 0..created).
    created: usize,
    rewrites: usize,
}

impl PodsFile {
    /// The first [`SLOTS`] pods, one per slot.
    fn new(path: PathBuf) -> anyhow::Result<Self> {
        let mut file = Self { path, slots: (0..SLOTS).map(Some).collect(), created: SLOTS, rewrites: 0 };
        file.write()?;
        Ok(file)
    }

    /// Creates pods until `due` exist, each deleting the pod before it in its slot.
    fn create_until(&mut self, due: usize) -> anyhow::Result<()> {
        let due = due.min(PODS);
        if due <= self.created {
            return Ok(());
        }
        while self.created < due {
            self.slots[self.created % SLOTS] = Some(self.created);
            self.created += 1;
        }
        self.write()
    }

    fn delete_all(&mut self) -> anyhow::Result<()> {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.write()
    }

    /// Written elsewhere and renamed over, as tracer asks of a pods file's writer.
    fn write(&mut self) -> anyhow::Result<()> {
        let text = pods_list(self.slots.iter().enumerate().filter_map(|(slot, pod)| pod.map(|i| (i, slot_ip(slot)))));
        let new = self.path.with_extension("new");
        fs::write(&new, text).with_context(|| format!("writing {}", new.display()))?;
        fs::rename(&new, &self.path).with_context(|| format!("renaming over {}", self.path.display()))?;
        self.rewrites += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

/// One sample of tracer, `at` from the start of the run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kb: u64,
    fds: u64,
    series: u64,
}

/// Creates pods on schedule and samples tracer every [`SAMPLE_EVERY`] until `run` is over.
fn watch(tracer: &mut Proc, pods: &mut PodsFile, scraper: &Scraper, run: Duration) -> anyhow::Result<Vec<Sample>> {
    let start = Instant::now();
    let mut samples = Vec::new();
    let mut next = start;
    while next - start < run {
        check_interrupted()?;
        if let Some(status) = tracer.child.try_wait()? {
            bail!("tracer serve exited ({status}): {}", tracer.stderr_text());
        }
        let at = start.elapsed();
        // The creations spread evenly over the run.
        pods.create_until(SLOTS + ((PODS - SLOTS) as f64 * at.as_secs_f64() / run.as_secs_f64()) as usize)?;
        samples.push(sample(tracer, scraper, at)?);
        if samples.len() % 60 == 0 {
            let s = samples[samples.len() - 1];
            eprintln!(
                "soak: {:>4} s: VmRSS {:.1} MB, {} fds, {} series, {} pods created",
                at.as_secs(),
                s.rss_kb as f64 / 1024.0,
                s.fds,
                s.series,
                pods.created
            );
        }
        next += SAMPLE_EVERY;
        sleep(next.saturating_duration_since(Instant::now()))?;
    }
    pods.create_until(PODS)?;
    Ok(samples)
}

fn sample(tracer: &Proc, scraper: &Scraper, at: Duration) -> anyhow::Result<Sample> {
    let fds = fs::read_dir(format!("/proc/{}/fd", tracer.pid())).context("tracer's /proc/PID/fd")?.count() as u64;
    let series = scraper.state.lock().expect("scrape state").last_series;
    Ok(Sample { at, rss_kb: tracer.status_kb("VmRSS:")?, fds, series })
}

/// Waits (at most 30 s, with no load) until the scrapes say the kernel saw as many drops as serve
/// printed plus those it lost, and still say so 2 s later: the kernel's counts are copied into
/// the metrics every second, and the scrapes of those 2 s count every printed event in
/// `tracer_drops_total`. The last scrape (which the checks then judge, also when time ran out).
fn settle(events: &EventTally, scraper: &Scraper) -> anyhow::Result<FinalScrape> {
    let end = Instant::now() + Duration::from_secs(30);
    let mut agreed_at: Option<(Instant, u64)> = None;
    loop {
        check_interrupted()?;
        thread::sleep(Duration::from_millis(250));
        let last = scraper.state.lock().expect("scrape state").last.clone().context("no scrape succeeded")?;
        let printed = events.drops();
        if last.seen != printed + last.lost {
            agreed_at = None;
        } else {
            match agreed_at {
                Some((at, was)) if was == printed && at.elapsed() >= Duration::from_secs(2) => return Ok(last),
                Some((_, was)) if was == printed => {}
                _ => agreed_at = Some((Instant::now(), printed)),
            }
        }
        if Instant::now() > end {
            return Ok(last);
        }
    }
}

/// Sends [`DROPS_PER_SEC`] datagrams a second to the slots' closed port, round robin, from a
/// thread in the client namespace, until `stop` or `run` (and at most `run` × the rate of them).
fn start_drop_load(ns: &str, stop: Arc<AtomicBool>, run: Duration) -> thread::JoinHandle<anyhow::Result<u64>> {
    let ns = ns.to_string();
    let slots: Vec<String> = (0..SLOTS).map(slot_ip).collect();
    thread::spawn(move || {
        enter_netns(&ns)?;
        let socket = UdpSocket::bind((CLIENT_IP, 0))?;
        let max = (run.as_secs_f64() * DROPS_PER_SEC as f64) as u64;
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < max && !stop.load(Ordering::Relaxed) && start.elapsed() < run {
            if socket.send_to(b"tracer-soak", (slots[sent as usize % SLOTS].as_str(), DROP_PORT)).is_ok() {
                sent += 1;
            }
            // Paced against the start, so a late wake-up does not lower the rate.
            let next = start + Duration::from_secs_f64(sent as f64 / DROPS_PER_SEC as f64);
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(sent)
    })
}

// ---------------------------------------------------------------------------------------------
// serve's JSON events.

/// Counts serve's JSON events as they come: by kind, and drops by the label set
/// `tracer_drops_total` gives them.
struct EventTally {
    counts: Arc<Mutex<Counts>>,
    drops: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

#[derive(Debug, Default, Clone)]
struct Counts {
    by_kind: BTreeMap<String, u64>,
    /// Drop events by their `tracer_drops_total` labels, as the exposition writes them.
    drops_by_labels: HashMap<String, u64>,
    /// Lines that were not a JSON object with a kind.
    garbage: u64,
}

impl EventTally {
    fn start(stdout: ChildStdout) -> Self {
        let counts = Arc::new(Mutex::new(Counts::default()));
        let drops = Arc::new(AtomicU64::new(0));
        let (c, d) = (Arc::clone(&counts), Arc::clone(&drops));
        let thread = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let mut counts = c.lock().expect("event counts");
                let Some(kind) = event["kind"].as_str() else {
                    counts.garbage += 1;
                    continue;
                };
                *counts.by_kind.entry(kind.to_string()).or_default() += 1;
                if kind == "drop" {
                    *counts.drops_by_labels.entry(drop_labels(&event)).or_default() += 1;
                    d.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self { counts, drops, thread }
    }

    /// Drop events so far.
    fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }

    /// Waits for serve's stdout to close (serve exited) and returns the counts.
    fn finish(self) -> Counts {
        let _ = self.thread.join();
        self.counts.lock().expect("event counts").clone()
    }
}

/// The labels `tracer_drops_total` counts a drop event under (tracer/src/probes/drops/detail.rs:
/// the function is the location without its offset; the pod is where it was dropped, else the
/// destination's, else the source's), written as the exposition writes them.
fn drop_labels(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or_default();
    let function = text("location").split('+').next().unwrap_or_default();
    let pod = ["netns_pod", "dst_pod", "src_pod"].into_iter().find_map(|k| event[k].as_str()).unwrap_or_default();
    let (namespace, name) = pod.split_once('/').unwrap_or_default();
    format!("{{node=\"{NODE}\",reason=\"{}\",function=\"{function}\",namespace=\"{namespace}\",pod=\"{name}\"}}", text("reason"))
}

// ---------------------------------------------------------------------------------------------
// Scrapes.

/// GETs /metrics [`SCRAPES_PER_SEC`] times a second from a thread in the client namespace and
/// keeps what the checks need. Stops on drop.
struct Scraper {
    state: Arc<Mutex<ScrapeState>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<anyhow::Result<()>>>,
}

#[derive(Debug, Default, Clone)]
struct ScrapeState {
    done: u64,
    failed: u64,
    /// The first failure, to say what it was.
    first_failure: Option<String>,
    /// Milliseconds each successful scrape took, connect to last byte.
    latencies_ms: Vec<f64>,
    /// Samples in the last successful scrape.
    last_series: u64,
    /// Every `tracer_drops_total` label set any scrape showed.
    drops: HashMap<String, SeriesLives>,
    last: Option<FinalScrape>,
}

/// What the scrapes saw of one label set: a series forgotten (idle for --series-idle) and
/// counted again starts from 0, so each of its lives is added up.
#[derive(Debug, Default, Clone, Copy)]
struct SeriesLives {
    /// The last values of the lives that ended.
    ended: f64,
    current: f64,
    /// In the last scrape.
    present: bool,
    lives: u32,
}

impl SeriesLives {
    fn total(&self) -> f64 {
        self.ended + self.current
    }
}

/// The numbers of one scrape the books are checked with.
#[derive(Debug, Default, Clone)]
struct FinalScrape {
    /// tracer_events_seen_total / _lost_total of the drops probe: the kernel's counts.
    seen: u64,
    lost: u64,
    /// The sum of tracer_drops_undelivered_total.
    undelivered_sum: f64,
    /// tracer_events_seen_total of every probe.
    seen_by_probe: BTreeMap<String, u64>,
    capped: f64,
    series: u64,
}

impl Scraper {
    fn start(ns: &str) -> Self {
        let state = Arc::new(Mutex::new(ScrapeState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopped) = (Arc::clone(&state), Arc::clone(&stop));
        let ns = ns.to_string();
        let thread = thread::spawn(move || {
            enter_netns(&ns)?;
            let start = Instant::now();
            let mut n = 0u64;
            while !stopped.load(Ordering::Relaxed) {
                check_interrupted()?;
                let began = Instant::now();
                let answer = get_metrics();
                let took = began.elapsed();
                let mut state = shared.lock().expect("scrape state");
                match answer {
                    Ok(text) => state.record(&text, took),
                    Err(err) => {
                        state.failed += 1;
                        state.first_failure.get_or_insert_with(|| format!("{err:#}"));
                    }
                }
                drop(state);
                n += 1;
                let next = start + Duration::from_secs_f64(n as f64 / SCRAPES_PER_SEC as f64);
                thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Ok(())
        });
        Self { state, stop, thread: Some(thread) }
    }

    /// Waits for a first answer, at most `timeout`.
    fn wait_first(&self, timeout: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        loop {
            let state = self.state.lock().expect("scrape state").clone();
            if state.done > 0 {
                return Ok(());
            }
            ensure!(Instant::now() < end, "no scrape answered within {timeout:?}: {}", state.first_failure.unwrap_or_default());
            sleep(Duration::from_millis(50))?;
        }
    }

    /// Stops scraping; what the scrapes saw.
    fn finish(mut self) -> anyhow::Result<ScrapeState> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().map_err(|_| anyhow::anyhow!("the scraper panicked"))?.context("scraping")?;
        }
        Ok(self.state.lock().expect("scrape state").clone())
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl ScrapeState {
    fn record(&mut self, text: &str, took: Duration) {
        self.done += 1;
        self.latencies_ms.push(took.as_secs_f64() * 1000.0);
        self.last_series = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count() as u64;
        let drops: HashMap<&str, f64> = samples(text, "tracer_drops_total").collect();
        for (labels, lives) in &mut self.drops {
            lives.present = drops.contains_key(labels.as_str());
        }
        for (labels, value) in &drops {
            let lives = self.drops.entry((*labels).to_string()).or_default();
            if !lives.present || value < &lives.current {
                lives.ended += lives.current;
                lives.lives += 1;
            }
            lives.current = *value;
            lives.present = true;
        }
        let drops_probe =
            |metric: &str| samples(text, metric).find(|(l, _)| *l == format!("{{node=\"{NODE}\",probe=\"drops\"}}")).map_or(0.0, |(_, v)| v);
        self.last = Some(FinalScrape {
            seen: drops_probe("tracer_events_seen_total") as u64,
            lost: drops_probe("tracer_events_lost_total") as u64,
            // fold, not sum: an empty f64 sum is -0.
            undelivered_sum: samples(text, "tracer_drops_undelivered_total").fold(0.0, |sum, (_, v)| sum + v),
            capped: samples(text, "tracer_metric_series_capped_total").fold(0.0, |sum, (_, v)| sum + v),
            seen_by_probe: samples(text, "tracer_events_seen_total")
                .filter_map(|(labels, v)| Some((labels.split("probe=\"").nth(1)?.split('"').next()?.to_string(), v as u64)))
                .collect(),
            series: self.last_series,
        });
    }
}

/// One GET /metrics: the body of a 200 answer.
fn get_metrics() -> anyhow::Result<String> {
    let addr = METRICS_ADDR.parse().context("metrics address")?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {METRICS_ADDR}\r\n\r\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("no end of the header")?;
    ensure!(head.starts_with("HTTP/1.1 200 "), "answered {}", head.lines().next().unwrap_or_default());
    Ok(body.to_string())
}

/// The samples of `metric` in an exposition: (labels as written, value).
fn samples<'a>(text: &'a str, metric: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(metric)?;
        let (labels, value) = rest.rsplit_once(' ')?;
        (labels.is_empty() || labels.starts_with('{')).then_some(())?;
        Some((labels, value.parse().ok()?))
    })
}

// ---------------------------------------------------------------------------------------------
// The report.

struct Report {
    minutes: f64,
    samples: Vec<Sample>,
    pods: usize,
    rewrites: usize,
    sent: u64,
    scrapes: ScrapeState,
    events: Counts,
    final_scrape: FinalScrape,
    /// serve's `FAMILY: N seen, N delivered, N lost` lines at exit.
    summaries: Vec<(String, Summary)>,
    /// What serve warned about while serving.
    warnings: Vec<String>,
    load: (String, String),
}

/// A least-squares line through (hours, value).
fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    sxy / sxx
}

/// Start, end and per-hour slope of one sampled quantity.
struct Trend {
    first: f64,
    at_warm_up: f64,
    last: f64,
    min: f64,
    max: f64,
    slope: f64,
}

impl Trend {
    /// Whether it grows by at most `limit` an hour (a slope that could not be measured does not pass).
    fn flat(&self, limit: f64) -> bool {
        self.slope.is_finite() && self.slope <= limit
    }
}

impl Report {
    fn after_warm_up(&self) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(|s| s.at >= WARM_UP)
    }

    fn trend(&self, value: impl Fn(&Sample) -> f64) -> Trend {
        let points: Vec<(f64, f64)> = self.after_warm_up().map(|s| (s.at.as_secs_f64() / 3600.0, value(s))).collect();
        let values = || points.iter().map(|p| p.1);
        Trend {
            first: self.samples.first().map_or(f64::NAN, &value),
            at_warm_up: points.first().map_or(f64::NAN, |p| p.1),
            last: points.last().map_or(f64::NAN, |p| p.1),
            min: values().fold(f64::INFINITY, f64::min),
            max: values().fold(f64::NEG_INFINITY, f64::max),
            slope: if points.len() >= 2 { slope_per_hour(&points) } else { f64::NAN },
        }
    }

    fn rss_mib(s: &Sample) -> f64 {
        s.rss_kb as f64 / 1024.0
    }

    /// Drop label sets whose scrapes and JSON events disagree: (labels, metric, events).
    fn disagreeing(&self) -> Vec<(String, f64, u64)> {
        let mut labels: Vec<&String> = self.scrapes.drops.keys().chain(self.events.drops_by_labels.keys()).collect();
        labels.sort();
        labels.dedup();
        labels
            .into_iter()
            .filter_map(|l| {
                let metric = self.scrapes.drops.get(l).map_or(0.0, SeriesLives::total);
                let events = self.events.drops_by_labels.get(l).copied().unwrap_or(0);
                (metric != events as f64).then(|| (l.clone(), metric, events))
            })
            .collect()
    }

    /// serve's summary of `family` at exit.
    fn summary(&self, family: &str) -> Option<Summary> {
        self.summaries.iter().find(|(f, _)| f == family).map(|(_, s)| *s)
    }

    /// The events the families say they delivered, and the events serve printed.
    fn delivered_and_printed(&self) -> (u64, u64) {
        (self.summaries.iter().map(|(_, s)| s.delivered).sum(), self.events.by_kind.values().sum())
    }

    fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let rss = self.trend(Self::rss_mib);
        if !rss.flat(RSS_MAX_SLOPE_MIB_PER_H) {
            failures.push(format!("VmRSS grows {:.1} MiB/h (more than {RSS_MAX_SLOPE_MIB_PER_H})", rss.slope));
        }
        let fds = self.trend(|s| s.fds as f64);
        if !fds.flat(FDS_MAX_SLOPE_PER_H) {
            failures.push(format!("open fds grow {:.1}/h (more than {FDS_MAX_SLOPE_PER_H})", fds.slope));
        }
        let wrong = self.disagreeing();
        if !wrong.is_empty() {
            failures.push(format!("{} tracer_drops_total label sets differ from the events, e.g. {:?}", wrong.len(), wrong[0]));
        }
        let f = &self.final_scrape;
        let printed = self.events.by_kind.get("drop").copied().unwrap_or(0);
        if f.seen != printed + f.lost {
            failures.push(format!("the kernel saw {} drops; serve printed {printed} and lost {}", f.seen, f.lost));
        }
        if f.undelivered_sum != f.lost as f64 {
            failures.push(format!("tracer_drops_undelivered_total adds up to {}, not the {} lost", f.undelivered_sum, f.lost));
        }
        if f.capped > 0.0 {
            failures.push(format!("{} events were counted with pod=\"other\" (--max-series reached)", f.capped));
        }
        match self.summary("drops") {
            Some(s) if s.delivered == printed => {}
            Some(s) => failures.push(format!("serve's summary says it delivered {} drops; it printed {printed}", s.delivered)),
            None => failures.push("serve printed no drops summary".into()),
        }
        for (family, s) in &self.summaries {
            if s.seen != s.delivered + s.lost {
                failures.push(format!("{family}: {} seen, but {} delivered and {} lost", s.seen, s.delivered, s.lost));
            }
            if f.seen_by_probe.get(family) != Some(&s.seen) {
                failures.push(format!("{family}: tracer_events_seen_total {:?} at the end, {} seen at exit", f.seen_by_probe.get(family), s.seen));
            }
        }
        let (delivered, events) = self.delivered_and_printed();
        if delivered != events {
            failures.push(format!("the families delivered {delivered} events, serve printed {events}"));
        }
        if self.events.garbage > 0 {
            failures.push(format!("{} stdout lines were not JSON events", self.events.garbage));
        }
        if self.scrapes.failed > 0 {
            failures.push(format!("{} scrapes failed, first: {}", self.scrapes.failed, self.scrapes.first_failure.as_deref().unwrap_or_default()));
        }
        if self.sent == 0 || printed == 0 {
            failures.push(format!("no drop load: {} sent, {printed} printed", self.sent));
        }
        failures
    }

    /// Every sample: seconds, VmRSS kB, fds, series.
    fn csv(&self) -> String {
        let mut s = String::from("secs,vmrss_kb,fds,series\n");
        for x in &self.samples {
            let _ = writeln!(s, "{:.1},{},{},{}", x.at.as_secs_f64(), x.rss_kb, x.fds, x.series);
        }
        s
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let secs = self.samples.last().map_or(0.0, |l| l.at.as_secs_f64());
        let _ = writeln!(
            s,
            "Run: {}; `cargo xtask soak --minutes {}`; {}; load average before {} / after {}.\n",
            utc_now(),
            self.minutes,
            machine(),
            self.load.0,
            self.load.1
        );
        let _ = writeln!(
            s,
            "`tracer serve` (all probes, `--series-idle {SERIES_IDLE_SECS}s`, `--pods-from file:`) for {secs:.0} s: {} drops sent ({DROPS_PER_SEC}/s over {SLOTS} pod addresses), {} pods created and deleted through the file ({SLOTS} at a time, {} rewrites), {} scrapes ({SCRAPES_PER_SEC}/s). Slopes: least squares over the {} samples after a {} s warm-up, one a second.\n",
            self.sent,
            self.pods,
            self.rewrites,
            self.scrapes.done + self.scrapes.failed,
            self.after_warm_up().count(),
            WARM_UP.as_secs(),
        );
        let _ = writeln!(s, "| quantity | at start | after warm-up | end | min–max after warm-up | slope per hour | limit | verdict |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let rows: [(&str, Trend, &str, Option<f64>); 3] = [
            ("VmRSS (MiB)", self.trend(Self::rss_mib), " MiB", Some(RSS_MAX_SLOPE_MIB_PER_H)),
            ("open fds", self.trend(|s| s.fds as f64), "", Some(FDS_MAX_SLOPE_PER_H)),
            ("series in a scrape", self.trend(|s| s.series as f64), "", None),
        ];
        for (name, t, unit, limit) in rows {
            let verdict = limit.map_or("—".to_string(), |l| (if t.flat(l) { "flat" } else { "grows" }).to_string());
            let limit = limit.map_or("—".to_string(), |l| format!("≤ {l}{unit}/h"));
            let _ = writeln!(
                s,
                "| {name} | {:.1} | {:.1} | {:.1} | {:.1}–{:.1} | {:+.2}{unit}/h | {limit} | {verdict} |",
                t.first, t.at_warm_up, t.last, t.min, t.max, t.slope
            );
        }
        let f = &self.final_scrape;
        let printed = self.events.by_kind.get("drop").copied().unwrap_or(0);
        let wrong = self.disagreeing();
        let lives: u32 = self.scrapes.drops.values().map(|l| l.lives).sum();
        let _ = writeln!(s, "\n| books | metrics | events | verdict |");
        let _ = writeln!(s, "|---|---|---|---|");
        let _ = writeln!(
            s,
            "| `tracer_drops_total`, {} label sets ({lives} series lives), each against the JSON drops with its labels | {:.0} | {} | {} |",
            self.scrapes.drops.len(),
            self.scrapes.drops.values().map(SeriesLives::total).sum::<f64>(),
            self.events.drops_by_labels.values().sum::<u64>(),
            if wrong.is_empty() { "all equal".to_string() } else { format!("{} differ", wrong.len()) }
        );
        let _ = writeln!(
            s,
            "| `tracer_events_seen_total{{probe=\"drops\"}}` = printed + `tracer_events_lost_total` | {} | {printed} + {} | {} |",
            f.seen,
            f.lost,
            if f.seen == printed + f.lost { "equal" } else { "differ" }
        );
        let _ = writeln!(
            s,
            "| `tracer_drops_undelivered_total` = lost | {:.0} | {} | {} |",
            f.undelivered_sum,
            f.lost,
            if f.undelivered_sum == f.lost as f64 { "equal" } else { "differ" }
        );
        for (family, summary) in &self.summaries {
            let seen_metric = f.seen_by_probe.get(family);
            let _ = writeln!(
                s,
                "| {family} at exit: seen = delivered + lost (stderr) = `tracer_events_seen_total` | {} = {} + {} = {} | {} | {} |",
                summary.seen,
                summary.delivered,
                summary.lost,
                seen_metric.map_or("none".to_string(), u64::to_string),
                if family == "drops" { format!("{printed} printed") } else { "—".to_string() },
                if summary.seen == summary.delivered + summary.lost && seen_metric == Some(&summary.seen) { "equal" } else { "differ" }
            );
        }
        let (delivered, events) = self.delivered_and_printed();
        let _ = writeln!(
            s,
            "| every family's delivered = events printed | {delivered} | {events} | {} |",
            if delivered == events { "equal" } else { "differ" }
        );
        let kinds: Vec<String> = self.events.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let mut latencies = self.scrapes.latencies_ms.clone();
        latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "\nEvents printed by kind: {}. Scrapes: {} answered, {} failed; connect to last byte p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; the last had {} series.",
            kinds.join(", "),
            self.scrapes.done,
            self.scrapes.failed,
            pct(0.5),
            pct(0.99),
            latencies.last().copied().unwrap_or(f64::NAN),
            f.series,
        );
        let _ = writeln!(
            s,
            "\nWarnings of serve while serving: {}.",
            if self.warnings.is_empty() { "none".to_string() } else { format!("{} ({})", self.warnings.len(), self.warnings.join(" / ")) }
        );
        let failures = self.failures();
        let _ = writeln!(s, "\nVerdict: {}.", if failures.is_empty() { "passed".to_string() } else { format!("FAILED: {}", failures.join("; ")) });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_per_hour() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i) / 60.0, 5.0 + f64::from(i))).collect();
        assert!((slope_per_hour(&line) - 60.0).abs() < 1e-9, "one a minute is 60 an hour");
    }

    #[test]
    fn one_fd_opened_for_good_in_a_default_run_is_not_a_leak_but_two_a_minute_are() {
        // A default run: 10 minutes, samples after the warm-up, one a second.
        let measured = 600 - WARM_UP.as_secs() as u32;
        let hours = |i: u32| f64::from(i) / 3600.0;
        let step: Vec<(f64, f64)> = (0..measured).map(|i| (hours(i), if i < measured / 2 { 53.0 } else { 54.0 })).collect();
        let slope = slope_per_hour(&step);
        assert!(slope > 10.0 && slope < FDS_MAX_SLOPE_PER_H, "a step of one: {slope}/h");
        let leak: Vec<(f64, f64)> = (0..measured).map(|i| (hours(i), 53.0 + f64::from(i / 30))).collect();
        assert!(slope_per_hour(&leak) > FDS_MAX_SLOPE_PER_H, "{}", slope_per_hour(&leak));
    }

    #[test]
    fn a_series_forgotten_and_counted_again_adds_its_lives() {
        let labels = "{node=\"soak\",reason=\"NO_SOCKET\",function=\"f\",namespace=\"ns-1\",pod=\"pod-1\"}";
        let scrape =
            |value: Option<u32>| value.map(|v| format!("# TYPE tracer_drops_total counter\ntracer_drops_total{labels} {v}\n")).unwrap_or_default();
        let mut state = ScrapeState::default();
        for v in [Some(3), Some(5), None, None, Some(2), Some(4)] {
            state.record(&scrape(v), Duration::ZERO);
        }
        let lives = state.drops[labels];
        assert_eq!((lives.total(), lives.lives), (9.0, 2), "5 in the first life, 4 in the second");
        // A counter that went down without a gap between scrapes restarted too.
        state.record(&scrape(Some(1)), Duration::ZERO);
        assert_eq!(state.drops[labels].total(), 10.0);
    }

    #[test]
    fn drop_events_get_the_labels_serve_counts_them_under() {
        let event: Value = serde_json::json!({"kind": "drop", "reason": "NO_SOCKET", "location": "__udp4_lib_rcv+0x9c",
            "src_pod": null, "dst_pod": "ns-3/pod-63", "netns_pod": null});
        assert_eq!(drop_labels(&event), "{node=\"soak\",reason=\"NO_SOCKET\",function=\"__udp4_lib_rcv\",namespace=\"ns-3\",pod=\"pod-63\"}");
        let none: Value = serde_json::json!({"kind": "drop", "reason": "NO_SOCKET", "location": "f+0x1", "src_pod": null, "dst_pod": null});
        assert!(drop_labels(&none).ends_with("namespace=\"\",pod=\"\"}"));
    }

    #[test]
    fn samples_of_one_metric_only() {
        let text = "# HELP x\ntracer_drops_total{a=\"1\"} 2\ntracer_drops_total_other{a=\"1\"} 7\ntracer_events_seen_total{probe=\"drops\"} 3\n";
        assert_eq!(samples(text, "tracer_drops_total").collect::<Vec<_>>(), [("{a=\"1\"}", 2.0)]);
    }
}
