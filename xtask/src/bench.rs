//! `cargo xtask bench`: tracer's cost and throughput, measured against baselines of the same run.
//!
//! Everything runs between two network namespaces the bench creates (`trb-PID-c`, the client,
//! and `trb-PID-s`, the server) joined by one veth pair; nothing is attached to the machine's own
//! devices and nothing is sent anywhere but the server namespace. Every load loop is bounded in
//! packets and in time. The namespaces, the processes and tracer's attachments go when the bench
//! ends, fails or is interrupted (Ctrl-C and SIGTERM are caught; a namespace left by a killed
//! bench is removed by the next run).
//!
//! The full run writes its table between the markers in BENCHMARKS.md (the prose around them is
//! kept); `--smoke` runs each measurement once, small, writes target/bench-smoke.md and fails
//! when a figure was not measured or tracer's accounting does not add up.

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead as _, BufReader, Read},
    net::UdpSocket,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

use crate::progstats;

pub(crate) const PREFIX: &str = "trb-";
pub(crate) const CLIENT_IP: &str = "10.213.0.1";
pub(crate) const SERVER_IP: &str = "10.213.0.2";
/// The storm's destination: nothing listens there, so every packet is a NO_SOCKET drop.
const STORM_PORT: u16 = 9999;
pub(crate) const IPERF_PORT: u16 = 5201;
/// Where the table goes in BENCHMARKS.md.
const MARKERS: Markers =
    Markers { begin: "<!-- bench:begin (written by `cargo xtask bench`; edit outside the markers) -->", end: "<!-- bench:end -->" };

/// Set by SIGINT/SIGTERM: every wait loop checks it, so cleanup runs in the normal unwinding path.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(crate) struct Options {
    pub tracer: PathBuf,
    pub smoke: bool,
    pub reps: usize,
    pub secs: u64,
    pub storm_secs: u64,
    pub out: Option<PathBuf>,
}

struct Sizes {
    reps: usize,
    secs: u64,
    storm_secs: u64,
    storm_max_packets: u64,
    start_reps: usize,
    /// Seconds of each load measured with the kernel's statistics on (per-program figures
    /// only): shorter than the throughput runs, since time inside a program hardly depends on
    /// the machine's load, so the bench takes about as long as when one run gave both.
    stats_secs: u64,
    storm_stats_secs: u64,
}

impl Sizes {
    /// A run with the statistics on: two fifths of the throughput run, at least 1 s.
    fn stats_secs(secs: u64) -> u64 {
        (secs * 2 / 5).max(1)
    }
}

pub(crate) fn bench(workspace: &Path, opts: &Options) -> anyhow::Result<()> {
    // One section alone, to measure it without the rest (TRACER_BENCH_ONLY=recordings).
    if std::env::var("TRACER_BENCH_ONLY").as_deref() == Ok("recordings") {
        let recordings = crate::bench_recordings::run(workspace, &opts.tracer, opts.smoke)?;
        println!("{}", recordings.markdown());
        return recordings.check();
    }
    install_signal_handlers();
    remove_stale_labs();
    // The node lab alone (TRACER_BENCH_ONLY=node), to iterate on the healthy path.
    if std::env::var("TRACER_BENCH_ONLY").as_deref() == Ok("node") {
        let node = crate::bench_node::run(
            &opts.tracer,
            if opts.smoke { 1 } else { opts.secs },
            if opts.smoke { 1 } else { opts.reps },
            if opts.smoke { 1 } else { opts.reps.min(2) },
        )?;
        println!("{}", node.markdown());
        return node.check();
    }
    // bpftrace finds its tracepoints through tracefs, and a fresh machine has none mounted.
    ensure_tracefs()?;
    let sizes = if opts.smoke {
        Sizes { reps: 1, secs: 1, storm_secs: 1, storm_max_packets: 200_000, start_reps: 1, stats_secs: 1, storm_stats_secs: 1 }
    } else {
        Sizes {
            reps: opts.reps,
            secs: opts.secs,
            storm_secs: opts.storm_secs,
            storm_max_packets: 50_000_000,
            start_reps: 5,
            stats_secs: Sizes::stats_secs(opts.secs),
            storm_stats_secs: Sizes::stats_secs(opts.storm_secs),
        }
    };
    let load_before = loadavg();
    let lab = Lab::create()?;
    let mut report = Report::default();
    // The kernel's per-program statistics are on only while a per-program figure is taken
    // (`progstats::StatsEnabled`, held around those runs): they add two clock reads and a
    // counter update to every run of every program, which users do not pay, so throughput and
    // the storm's producer figure are measured with them off.

    eprintln!("bench: decode + enrich + JSON (userspace, one core)");
    report.decode = decode_bench(workspace, opts.smoke)?;
    eprintln!("bench: start-up and exit times");
    report.start = start_times(&opts.tracer, &lab, sizes.start_reps)?;
    eprintln!("bench: resident memory");
    report.rss = resident_memory(&opts.tracer, &lab)?;
    eprintln!("bench: always-on overhead (iperf3), {} repetitions of {} s", sizes.reps, sizes.secs);
    report.overhead = overhead(&opts.tracer, &lab, &sizes)?;
    eprintln!("bench: the healthy packet on a node (serve in the node, pod -> Service -> pod)");
    report.node = crate::bench_node::run(&opts.tracer, sizes.secs, sizes.reps, sizes.reps.min(2))?;
    eprintln!("bench: drop storm, {} s per consumer", sizes.storm_secs);
    report.storm = storm(&opts.tracer, &lab, &sizes)?;
    report.load = (load_before, loadavg());
    drop(lab);
    eprintln!("bench: diagnose --from over recordings (one core)");
    let recordings = crate::bench_recordings::run(workspace, &opts.tracer, opts.smoke)?;

    let table = report.markdown(opts.smoke) + &recordings.markdown();
    println!("{table}");
    if opts.smoke {
        report.check_smoke()?;
        report.node.check()?;
        recordings.check()?;
        let out = opts.out.clone().unwrap_or_else(|| workspace.join("target/bench-smoke.md"));
        fs::write(&out, &table).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("bench: smoke passed; table in {}", out.display());
    } else {
        let out = opts.out.clone().unwrap_or_else(|| workspace.join("BENCHMARKS.md"));
        write_between_markers(&out, &MARKERS, &table)?;
        eprintln!("bench: table written to {}", out.display());
    }
    Ok(())
}

/// Mounts tracefs at its standard place unless it is mounted (there or under debugfs).
fn ensure_tracefs() -> anyhow::Result<()> {
    let mounted = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].iter().any(|p| Path::new(p).join("events").is_dir());
    if mounted {
        return Ok(());
    }
    let status = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status().context("running mount -t tracefs")?;
    ensure!(status.success(), "tracefs is not mounted and `mount -t tracefs nodev /sys/kernel/tracing` failed ({status}); bpftrace needs it");
    eprintln!("bench: mounted tracefs at /sys/kernel/tracing (bpftrace needs it)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The lab: two namespaces and a veth pair.

/// Two namespaces, `client` ([`CLIENT_IP`]) and `server` ([`SERVER_IP`]), joined by one veth
/// pair; `dir` holds the run's files. Deleted on drop.
pub(crate) struct Lab {
    pub(crate) client: String,
    pub(crate) server: String,
    client_dev: String,
    pub(crate) server_dev: String,
    pub(crate) dir: PathBuf,
}

impl Lab {
    pub(crate) fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let lab = Lab {
            client: format!("{PREFIX}{pid}-c"),
            server: format!("{PREFIX}{pid}-s"),
            client_dev: "trbc".into(),
            server_dev: "trbs".into(),
            dir: std::env::temp_dir().join(format!("{PREFIX}{pid}")),
        };
        fs::create_dir_all(&lab.dir)?;
        // From here on Drop deletes whatever exists of the lab.
        sh(&["ip", "netns", "add", &lab.client])?;
        sh(&["ip", "netns", "add", &lab.server])?;
        // Created directly inside the namespaces: the veth never exists in the machine's own.
        sh(&["ip", "link", "add", &lab.client_dev, "netns", &lab.client, "type", "veth", "peer", "name", &lab.server_dev, "netns", &lab.server])?;
        for (ns, dev, ip) in [(&lab.client, &lab.client_dev, CLIENT_IP), (&lab.server, &lab.server_dev, SERVER_IP)] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    fn ifaces(&self) -> [String; 4] {
        ["--iface".into(), format!("{}:{}", self.client, self.client_dev), "--iface".into(), format!("{}:{}", self.server, self.server_dev)]
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth end, and the peer with it.
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Namespaces of a bench that was SIGKILLed (its pid no longer runs).
pub(crate) fn remove_stale_labs() {
    let Ok(entries) = fs::read_dir("/var/run/netns") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench: removing namespace {name} left by an earlier run");
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}

pub(crate) fn sh(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {}", args[0]))?;
    ensure!(out.status.success(), "{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    Ok(())
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub(crate) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub(crate) fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d`, or less when interrupted (then an error).
pub(crate) fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupted()?;
        thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

pub(crate) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Child processes: killed on drop, so a failing step leaves none behind.

/// A child process, killed on drop.
pub(crate) struct Proc {
    pub(crate) child: Child,
    started: Instant,
    stderr: Arc<Mutex<Vec<(Instant, String)>>>,
    stderr_thread: Option<thread::JoinHandle<()>>,
    stdout: Option<LineCounter>,
}

impl Proc {
    /// Spawns `cmd` with stderr collected line by line (timestamped) and stdout either counted
    /// (`count_stdout`) or discarded.
    pub(crate) fn spawn(cmd: &mut Command, count_stdout: bool) -> anyhow::Result<Self> {
        let mut p = Self::start(cmd, if count_stdout { Stdio::piped() } else { Stdio::null() })?;
        p.stdout = p.child.stdout.take().map(LineCounter::start);
        Ok(p)
    }

    /// Spawns `cmd` with stderr collected as [`Proc::spawn`] does and stdout piped, for the
    /// caller to take from `child`.
    pub(crate) fn spawn_reading_stdout(cmd: &mut Command) -> anyhow::Result<Self> {
        Self::start(cmd, Stdio::piped())
    }

    fn start(cmd: &mut Command, stdout: Stdio) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null()).stderr(Stdio::piped()).stdout(stdout);
        // Its own process group: a terminal's Ctrl-C reaches the bench, which then stops the
        // child in order (tracer's summary is part of the measurement).
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        let started = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().context("stderr")?;
        let lines = Arc::clone(&stderr);
        let stderr_thread = thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().expect("stderr lines").push((Instant::now(), line));
            }
        });
        Ok(Self { child, started, stderr, stderr_thread: Some(stderr_thread), stdout: None })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Time from spawn to the first stderr line containing `needle`.
    pub(crate) fn wait_for(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<Duration> {
        let end = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            if let Some((at, _)) = self.stderr.lock().expect("stderr lines").iter().find(|(_, l)| l.contains(needle)) {
                return Ok(*at - self.started);
            }
            if let Some(status) = self.child.try_wait()? {
                thread::sleep(Duration::from_millis(50));
                bail!("exited ({status}) before saying {needle:?}: {}", self.stderr_text());
            }
            if Instant::now() > end {
                bail!("did not say {needle:?} within {timeout:?}: {}", self.stderr_text());
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn stderr_text(&self) -> String {
        self.stderr.lock().expect("stderr lines").iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join(" | ")
    }

    /// SIGINT, then waits (at most `timeout`) for the exit; returns how long it took.
    pub(crate) fn interrupt(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let sent = Instant::now();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.pid(), libc::SIGINT) };
        self.wait_exit(timeout)?;
        Ok(sent.elapsed())
    }

    fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if let Some(t) = self.stderr_thread.take() {
                    let _ = t.join();
                }
                return Ok(status);
            }
            if Instant::now() > end {
                bail!("still running {timeout:?} after it was asked to stop: {}", self.stderr_text());
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// utime + stime so far, from /proc/PID/stat.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let fields: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
        // After the command name: state is field 3, utime 14 and stime 15 (1-based).
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz.max(1)))
    }

    /// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
    pub(crate) fn status_kb(&self, field: &str) -> anyhow::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} missing"))?;
        Ok(line.split_whitespace().nth(1).context("kB")?.parse()?)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Counts JSON lines (lines starting with `{`) on a child's stdout and remembers when the last
/// one came; `Lost N events` lines (bpftrace's own report of a full perf buffer) are added up.
struct LineCounter {
    lines: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    last: Arc<Mutex<Option<Instant>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl LineCounter {
    fn start(out: impl Read + Send + 'static) -> Self {
        let lines = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let last = Arc::new(Mutex::new(None));
        let (l, lo, la) = (Arc::clone(&lines), Arc::clone(&lost), Arc::clone(&last));
        let thread = thread::spawn(move || {
            let mut reader = BufReader::with_capacity(1 << 20, out);
            let mut line = Vec::with_capacity(512);
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if line.first() == Some(&b'{') {
                    l.fetch_add(1, Ordering::Relaxed);
                    *la.lock().expect("last") = Some(Instant::now());
                } else if let Some(rest) = line.strip_prefix(b"Lost ") {
                    let n = String::from_utf8_lossy(rest).split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0);
                    lo.fetch_add(n, Ordering::Relaxed);
                }
            }
        });
        Self { lines, lost, last, thread: Some(thread) }
    }

    fn count(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Waits until no line came for `quiet` (the consumer caught up), at most `timeout`.
    fn settle(&self, quiet: Duration, timeout: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + timeout;
        let mut seen = self.count();
        let mut since = Instant::now();
        while Instant::now() < end {
            check_interrupted()?;
            thread::sleep(Duration::from_millis(20));
            let now = self.count();
            if now != seen {
                seen = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> (u64, u64, Option<Instant>) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (self.count(), self.lost.load(Ordering::Relaxed), *self.last.lock().expect("last"))
    }
}

/// `tracer: FAMILY: N seen, N delivered, N lost[, N counted (over --max-rate)]` lines of a
/// stopped tracer.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) seen: u64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    /// Drops over the rate budget, counted in the kernel instead of delivered (0 when absent).
    pub(crate) counted: u64,
}

/// The summaries in a tracer's stderr as [`Proc::stderr_text`] joins it.
pub(crate) fn summaries(stderr: &str) -> Vec<(String, Summary)> {
    let mut out = Vec::new();
    for line in stderr.split(" | ") {
        let Some(rest) = line.strip_prefix("tracer: ") else { continue };
        let Some((family, counts)) = rest.split_once(": ") else { continue };
        let mut s = Summary::default();
        let mut found = 0;
        for part in counts.split(", ") {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next().and_then(|n| n.parse::<u64>().ok()), words.next()) else { continue };
            match what {
                "seen" => s.seen = n,
                "delivered" => s.delivered = n,
                "lost" => s.lost = n,
                "counted" => {
                    s.counted = n;
                    continue;
                }
                _ => continue,
            }
            found += 1;
        }
        if found == 3 {
            out.push((family.to_string(), s));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Statistics.

#[derive(Debug, Default, Clone)]
pub(crate) struct Samples(pub(crate) Vec<f64>);

impl Samples {
    pub(crate) fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    /// (max - min) / median, in percent: how far apart the repetitions were.
    pub(crate) fn spread_pct(&self) -> f64 {
        let min = self.0.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (max - min) / self.median() * 100.0
    }

    fn measured(&self) -> bool {
        !self.0.is_empty() && self.0.iter().all(|v| v.is_finite() && *v > 0.0)
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements.

#[derive(Default)]
struct Report {
    decode: Decode,
    start: StartTimes,
    rss: Rss,
    overhead: Overhead,
    node: crate::bench_node::NodeCost,
    storm: Vec<StormRun>,
    load: (String, String),
}

/// Events per second of tracer's userspace path, on one core (from the tracer crate's own
/// benchmark test).
#[derive(Default)]
struct Decode {
    decode: f64,
    enrich: f64,
    json: f64,
}

fn decode_bench(workspace: &Path, smoke: bool) -> anyhow::Result<Decode> {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace)
        .args(["test", "--release", "-p", "tracer", "--lib", "--", "--ignored", "--exact", "bench::tests::decode_enrich_json", "--nocapture"])
        .env("TRACER_BENCH_EVENTS", if smoke { "100000" } else { "2000000" })
        .stderr(Stdio::inherit());
    let out = cmd.output().context("running the decode benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "the decode benchmark failed:\n{text}");
    let mut d = Decode::default();
    for line in text.lines().filter_map(|l| l.strip_prefix("BENCH ")) {
        let mut words = line.split_whitespace();
        let (Some(stage), Some(rate)) = (words.next(), words.next().and_then(|r| r.parse::<f64>().ok())) else { continue };
        match stage {
            "decode" => d.decode = rate,
            "decode+enrich" => d.enrich = rate,
            "decode+enrich+json" => d.json = rate,
            _ => {}
        }
    }
    Ok(d)
}

#[derive(Default)]
struct StartTimes {
    /// (command, time to `attached`, time from SIGINT to exit), milliseconds.
    runs: Vec<(String, Samples, Samples)>,
    /// bpftrace from spawn to `Attaching 1 probe...` (it prints that before attaching).
    bpftrace: Samples,
}

fn tracer_cmd(tracer: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(tracer);
    cmd.args(args);
    cmd
}

fn start_times(tracer: &Path, lab: &Lab, reps: usize) -> anyhow::Result<StartTimes> {
    let ifaces = lab.ifaces();
    let watch: Vec<&str> = ["watch", "--pods-from", "none", "-o", "json"].into_iter().chain(ifaces.iter().map(String::as_str)).collect();
    let drops = ["drops", "--pods-from", "none", "-o", "json"];
    let mut result = StartTimes::default();
    for (name, args) in [("watch (all probes, tc on 2 veths)", &watch[..]), ("drops", &drops[..])] {
        let (mut attach, mut exit) = (Samples::default(), Samples::default());
        for _ in 0..reps {
            let mut p = Proc::spawn(&mut tracer_cmd(tracer, args), false)?;
            attach.0.push(ms(p.wait_for("tracer: attached", Duration::from_secs(30))?));
            sleep(Duration::from_millis(300))?;
            exit.0.push(ms(p.interrupt(Duration::from_secs(30))?));
        }
        result.runs.push((name.to_string(), attach, exit));
    }
    let script = bpftrace_script(lab)?;
    for _ in 0..reps {
        let mut p = Proc::spawn(Command::new("bpftrace").arg(&script), true)?;
        let started = p.started;
        // bpftrace says "Attaching 1 probe..." before it attaches; only an event it printed
        // proves the probe is live.
        let t = wait_bpftrace_live(lab, &mut p, started)?;
        result.bpftrace.0.push(ms(t));
        p.interrupt(Duration::from_secs(30))?;
    }
    Ok(result)
}

/// Sends one closed-port packet every 10 ms until bpftrace prints a line for one: the time
/// from spawn to the first such line is when its probe was attached (at most 10 ms late).
fn wait_bpftrace_live(lab: &Lab, p: &mut Proc, started: Instant) -> anyhow::Result<Duration> {
    let socket = in_netns(&lab.client, || UdpSocket::bind((CLIENT_IP, 0)))??;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        check_interrupted()?;
        let _ = socket.send_to(b"probe", (SERVER_IP, STORM_PORT));
        thread::sleep(Duration::from_millis(10));
        let counter = p.stdout.as_ref().context("bpftrace stdout")?;
        if counter.count() > 0 {
            let at = counter.last.lock().expect("last").unwrap_or_else(Instant::now);
            return Ok(at - started);
        }
        if let Some(status) = p.child.try_wait()? {
            thread::sleep(Duration::from_millis(50));
            bail!("bpftrace exited ({status}): {}", p.stderr_text());
        }
        if Instant::now() > end {
            bail!("bpftrace printed nothing within 60 s: {}", p.stderr_text());
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Default)]
struct Rss {
    /// (pods, VmRSS kB, VmHWM kB) of `tracer watch` after it attached.
    runs: Vec<(usize, u64, u64)>,
}

fn resident_memory(tracer: &Path, lab: &Lab) -> anyhow::Result<Rss> {
    let file = lab.dir.join("pods-1000.json");
    fs::write(&file, pods_file(1000))?;
    let from = format!("file:{}", file.display());
    let ifaces = lab.ifaces();
    let mut rss = Rss::default();
    for (pods, source) in [(0, "none"), (1000, from.as_str())] {
        let args: Vec<&str> = ["watch", "--pods-from", source, "-o", "json"].into_iter().chain(ifaces.iter().map(String::as_str)).collect();
        let mut p = Proc::spawn(&mut tracer_cmd(tracer, &args), false)?;
        p.wait_for("tracer: attached", Duration::from_secs(30))?;
        if pods > 0 {
            ensure!(p.stderr_text().contains(&format!("{pods} pods")), "tracer did not load {pods} pods: {}", p.stderr_text());
        }
        // Settled: the start-up's temporary allocations (BTF, kallsyms parsing) are freed.
        sleep(Duration::from_secs(1))?;
        rss.runs.push((pods, p.status_kb("VmRSS:")?, p.status_kb("VmHWM:")?));
        p.interrupt(Duration::from_secs(30))?;
    }
    Ok(rss)
}

/// `kubectl get pods -A -o json` with `n` pods, each with its own address and labels.
fn pods_file(n: usize) -> String {
    pods_list((0..n).map(|i| (i, format!("10.244.{}.{}", i / 250, i % 250 + 2))))
}

/// `kubectl get pods -A -o json` of the pods numbered `i`, each at its address: `pod-I` in
/// namespace `ns-(I mod 20)` with its own UID and labels.
pub(crate) fn pods_list(pods: impl Iterator<Item = (usize, String)>) -> String {
    let items: Vec<Value> = pods
        .map(|(i, ip)| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("pod-{i}"), "namespace": format!("ns-{}", i % 20), "uid": format!("00000000-0000-0000-0000-{i:012}"),
                             "labels": {"app": format!("app-{}", i % 50), "pod-template-hash": "5d8f7c9b6"}},
                "spec": {"nodeName": "node-bench", "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
            })
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}).to_string()
}

#[derive(Default)]
struct Overhead {
    tcp_base: Samples,
    tcp_traced: Samples,
    udp_base: Samples,
    udp_traced: Samples,
    /// The same runs per CPU-second iperf3 used (client + server, as iperf3 reports it): the
    /// hooks run in their context, and unlike throughput this hardly depends on how much of
    /// the shared machine the run got.
    tcp_eff_base: Samples,
    tcp_eff_traced: Samples,
    udp_eff_base: Samples,
    udp_eff_traced: Samples,
    /// UDP packets the client sent per second.
    udp_sent_base: Samples,
    udp_sent_traced: Samples,
    /// tracer's own summaries of the traced runs, added up per family.
    families: Vec<(String, Summary)>,
    /// TCP throughput, and per CPU-second, with one command attached at a time.
    per_command: Vec<(String, Samples, Samples)>,
    /// The kernel's per-program statistics over the traced loads, added up over the
    /// repetitions: (command, load) -> programs and the packets that crossed the veth pair.
    progs: Vec<ProgLoad>,
    /// An empty classifier's counters, attached beside tracer's during the serve runs, per load
    /// (what the statistics charge a run depends on the load: caches, TLB).
    floor: Vec<(&'static str, progstats::Counters)>,
    /// Throughput runs during which the statistics were on although the bench had them off
    /// (another process held them on): said under the table, since those runs paid for them.
    stats_were_on: Vec<String>,
}

/// tracer's programs during one kind of load: what each cost, and for how many packets.
struct ProgLoad {
    command: &'static str,
    load: &'static str,
    progs: progstats::Snapshot,
    packets: u64,
}

impl Overhead {
    /// The empty classifier's ns per run under `load` (0 when it was not measured).
    fn floor_ns(&self, load: &str) -> f64 {
        self.floor.iter().find(|(l, _)| *l == load).map_or(0.0, |(_, c)| if c.run_cnt == 0 { 0.0 } else { c.run_time_ns as f64 / c.run_cnt as f64 })
    }

    /// Adds one measured load to its (command, load) row.
    fn add_progs(&mut self, command: &'static str, load: &'static str, progs: &progstats::Snapshot, packets: u64) {
        match self.progs.iter_mut().find(|p| p.command == command && p.load == load) {
            Some(p) => {
                progstats::add(&mut p.progs, progs);
                p.packets += packets;
            }
            None => self.progs.push(ProgLoad { command, load, progs: progs.clone(), packets }),
        }
    }
}

/// The healthy packet's budget: ns of BPF per packet, summed over the programs on its path.
const HEALTHY_NS_TARGET: f64 = 30.0;

impl Overhead {
    /// One table per command: each program's runs per packet, ns per run and ns per packet under
    /// each load, and the sums. A program that runs for (nearly) every packet is on the healthy
    /// packet's path; one that runs for a few (a drop, a retransmission) is an event's cost and
    /// is summed apart.
    fn progs_markdown(&self, s: &mut String) {
        for command in ["watch", "serve"] {
            let loads: Vec<&ProgLoad> = self.progs.iter().filter(|p| p.command == command).collect();
            if loads.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "\n**Per program, `tracer {command}`** (kernel.bpf_stats_enabled, on only for these shorter runs under the same attachment, after the throughput runs above, which had it off: run_cnt and run_time_ns deltas of tracer's own programs; packets: both veths' tx_packets):\n"
            );
            let mut head = "| program |".to_string();
            let mut rule = "|---|".to_string();
            for l in &loads {
                let _ = write!(head, " {0} runs/packet | {0} ns/run | {0} ns/packet |", l.load);
                rule.push_str("---|---|---|");
            }
            let _ = writeln!(s, "{head}\n{rule}");
            let mut names: Vec<&String> = loads.iter().flat_map(|l| l.progs.keys()).collect();
            names.sort();
            names.dedup();
            let floors: Vec<f64> = loads.iter().map(|l| self.floor_ns(l.load)).collect();
            let mut healthy = vec![0.0; loads.len()];
            let mut above_floor = vec![0.0; loads.len()];
            let mut other = vec![0.0; loads.len()];
            for name in names {
                let mut row = format!("| `{name}` |");
                for (i, l) in loads.iter().enumerate() {
                    let c = l.progs.get(name).copied().unwrap_or_default();
                    let per_packet = c.run_cnt as f64 / l.packets.max(1) as f64;
                    let ns_run = if c.run_cnt == 0 { 0.0 } else { c.run_time_ns as f64 / c.run_cnt as f64 };
                    let ns_packet = c.run_time_ns as f64 / l.packets.max(1) as f64;
                    if per_packet >= 0.5 {
                        healthy[i] += ns_packet;
                        above_floor[i] += (ns_run - floors[i]).max(0.0) * per_packet;
                    } else {
                        other[i] += ns_packet;
                    }
                    let _ = write!(row, " {per_packet:.3} | {} | {ns_packet:.1} |", if c.run_cnt == 0 { "—".into() } else { format!("{ns_run:.0}") });
                }
                let _ = writeln!(s, "{row}");
            }
            let mut row = "| **healthy packet's path** (programs run for every packet) |".to_string();
            for (i, l) in loads.iter().enumerate() {
                let verdict = if healthy[i] <= HEALTHY_NS_TARGET { "met" } else { "missed" };
                let _ = write!(row, " | | **{:.1}** (≤ {HEALTHY_NS_TARGET:.0}: {verdict}, {} packets) |", healthy[i], l.packets);
            }
            let _ = writeln!(s, "{row}");
            let floor_text: Vec<String> = loads.iter().zip(&floors).map(|(l, f)| format!("{f:.0} ns under {}", l.load)).collect();
            let mut row =
                format!("| … above the floor (each such program's ns/run less the floor's, {}, times its runs/packet) |", floor_text.join(", "));
            for a in &above_floor {
                let verdict = if *a <= HEALTHY_NS_TARGET { "met" } else { "missed" };
                let _ = write!(row, " | | **{a:.1}** (≤ {HEALTHY_NS_TARGET:.0}: {verdict}) |");
            }
            let _ = writeln!(s, "{row}");
            let mut row = "| programs run for some packets (events: drops, retransmissions) |".to_string();
            for o in &other {
                let _ = write!(row, " | | {o:.1} |");
            }
            let _ = writeln!(s, "{row}");
        }
        if !self.floor.is_empty() {
            let each: Vec<String> =
                self.floor.iter().map(|(load, c)| format!("{:.0} ns per run under {load} ({} runs)", self.floor_ns(load), c.run_cnt)).collect();
            let _ = writeln!(
                s,
                "\nThe floor: an empty classifier (`r0 = -1; exit`, attached with TCX beside serve's on both veths, measured the same way in the same runs) costs {}: what the statistics charge any program, mostly the clock reads around it.",
                each.join(", ")
            );
        }
        let _ = writeln!(s);
    }
}

/// Runs `load` while process `pid` is attached and returns what its programs cost meanwhile
/// and how many packets crossed the lab's veth pair.
fn measure_progs<T>(lab: &Lab, pid: i32, load: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, progstats::Snapshot, u64)> {
    let ends = [(lab.client.as_str(), lab.client_dev.as_str()), (lab.server.as_str(), lab.server_dev.as_str())];
    let (p0, s0) = (progstats::veth_packets(&ends)?, progstats::snapshot(pid)?);
    let out = load()?;
    let (s1, p1) = (progstats::snapshot(pid)?, progstats::veth_packets(&ends)?);
    Ok((out, progstats::delta(&s0, &s1), p1 - p0))
}

/// Runs `load`, meant to be measured with the statistics off, and says whether they were on
/// meanwhile anyway: another process can hold them on (the sysctl, or its own
/// `BPF_ENABLE_STATS`), and then the run counts of tracer's programs (process `pid`) move.
fn statistics_were_on<T>(pid: i32, load: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, bool)> {
    let before = progstats::snapshot(pid)?;
    let out = load()?;
    let ran = progstats::delta(&before, &progstats::snapshot(pid)?);
    Ok((out, ran.values().any(|c| c.run_cnt > 0)))
}

/// Baseline and traced repetitions alternate, so drift of the machine's load hits both alike.
/// Throughput is measured with the statistics off (what users pay); the per-program figures
/// come from shorter runs right after, with them on, under the same attachment.
fn overhead(tracer: &Path, lab: &Lab, sizes: &Sizes) -> anyhow::Result<Overhead> {
    let mut o = Overhead::default();
    let ifaces = lab.ifaces();
    let args: Vec<&str> = ["watch", "--pods-from", "none", "-o", "json"].into_iter().chain(ifaces.iter().map(String::as_str)).collect();
    for rep in 0..sizes.reps {
        for traced in [false, true] {
            let mut watcher = None;
            if traced {
                let mut p = Proc::spawn(&mut tracer_cmd(tracer, &args), false)?;
                p.wait_for("tracer: attached", Duration::from_secs(30))?;
                watcher = Some(p);
            }
            let (tcp, udp) = match &watcher {
                Some(p) => {
                    let (tcp_udp, on) = statistics_were_on(p.pid(), || Ok((iperf(lab, sizes.secs, false)?, iperf(lab, sizes.secs, true)?)))?;
                    if on {
                        o.stats_were_on.push(format!("rep {} `tracer watch`", rep + 1));
                    }
                    let _stats = progstats::StatsEnabled::on()?;
                    let (_, progs, packets) = measure_progs(lab, p.pid(), || iperf(lab, sizes.stats_secs, false))?;
                    o.add_progs("watch", "TCP", &progs, packets);
                    let (_, progs, packets) = measure_progs(lab, p.pid(), || iperf(lab, sizes.stats_secs, true))?;
                    o.add_progs("watch", "UDP 64 B", &progs, packets);
                    tcp_udp
                }
                None => (iperf(lab, sizes.secs, false)?, iperf(lab, sizes.secs, true)?),
            };
            eprintln!(
                "bench:   rep {} {}: tcp {:.2} Gbit/s, udp {:.0} packets/s",
                rep + 1,
                if traced { "traced" } else { "baseline" },
                tcp.rate / 1e9,
                udp.rate
            );
            if let Some(mut p) = watcher {
                p.interrupt(Duration::from_secs(30))?;
                for (family, s) in summaries(&p.stderr_text()) {
                    match o.families.iter_mut().find(|(f, _)| *f == family) {
                        Some((_, t)) => {
                            t.seen += s.seen;
                            t.delivered += s.delivered;
                            t.lost += s.lost;
                            t.counted += s.counted;
                        }
                        None => o.families.push((family, s)),
                    }
                }
                o.tcp_traced.0.push(tcp.rate);
                o.udp_traced.0.push(udp.rate);
                o.tcp_eff_traced.0.push(tcp.per_cpu);
                o.udp_eff_traced.0.push(udp.per_cpu);
                o.udp_sent_traced.0.push(udp.sent_rate);
            } else {
                o.tcp_base.0.push(tcp.rate);
                o.udp_base.0.push(udp.rate);
                o.tcp_eff_base.0.push(tcp.per_cpu);
                o.udp_eff_base.0.push(udp.per_cpu);
                o.udp_sent_base.0.push(udp.sent_rate);
            }
        }
        // `serve` (the DaemonSet's command: every family, metrics instead of lines): the
        // programs' cost only, both loads, statistics on. Its metrics listen on the client
        // namespace's loopback.
        {
            let _stats = progstats::StatsEnabled::on()?;
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &lab.client]).arg(tracer).args(["serve", "--metrics", "127.0.0.1:9464", "--pods-from", "none"]).args(&ifaces);
            let mut p = Proc::spawn(&mut cmd, false)?;
            p.wait_for("tracer: attached", Duration::from_secs(30)).context("tracer serve")?;
            // The floor, measured beside serve's classifiers (not in the throughput runs, which
            // it would slow down).
            let empty =
                progstats::EmptyClassifier::attach(&[(lab.client.clone(), lab.client_dev.clone()), (lab.server.clone(), lab.server_dev.clone())])?;
            for (load, udp) in [("TCP", false), ("UDP 64 B", true)] {
                let before = empty.counters()?;
                let (_, progs, packets) = measure_progs(lab, p.pid(), || iperf(lab, sizes.stats_secs, udp))?;
                o.add_progs("serve", load, &progs, packets);
                let after = empty.counters()?;
                let delta = progstats::Counters { run_cnt: after.run_cnt - before.run_cnt, run_time_ns: after.run_time_ns - before.run_time_ns };
                match o.floor.iter_mut().find(|(l, _)| *l == load) {
                    Some((_, c)) => progstats::add_counters(c, &delta),
                    None => o.floor.push((load, delta)),
                }
            }
            drop(empty);
            p.interrupt(Duration::from_secs(30))?;
        }
        // Which family's hooks the TCP cost comes from: each command alone, TCP only.
        for (name, cmd_args) in single_commands(&ifaces) {
            check_interrupted()?;
            let mut p = Proc::spawn(&mut tracer_cmd(tracer, &cmd_args.iter().map(String::as_str).collect::<Vec<_>>()), false)?;
            if let Err(err) = p.wait_for("tracer: attached", Duration::from_secs(30)) {
                eprintln!("bench:   {name} cannot run here, left out: {err:#}");
                continue;
            }
            let (tcp, on) = statistics_were_on(p.pid(), || iperf(lab, sizes.secs, false))?;
            if on {
                o.stats_were_on.push(format!("rep {} `{name}`", rep + 1));
            }
            p.interrupt(Duration::from_secs(30))?;
            eprintln!("bench:   rep {} {name}: tcp {:.2} Gbit/s", rep + 1, tcp.rate / 1e9);
            match o.per_command.iter_mut().find(|(n, _, _)| *n == name) {
                Some((_, rate, eff)) => {
                    rate.0.push(tcp.rate);
                    eff.0.push(tcp.per_cpu);
                }
                None => o.per_command.push((name, Samples(vec![tcp.rate]), Samples(vec![tcp.per_cpu]))),
            }
        }
    }
    Ok(o)
}

/// Each probe family's own command, with the hooks `tracer watch` would give it.
fn single_commands(ifaces: &[String]) -> Vec<(String, Vec<String>)> {
    let common = ["--pods-from", "none", "-o", "json"].map(String::from);
    ["drops", "retrans", "nat", "mtu"]
        .into_iter()
        .map(|cmd| {
            let mut args = vec![cmd.to_string()];
            args.extend(common.iter().cloned());
            if cmd == "mtu" {
                args.extend(ifaces.iter().cloned());
            }
            (format!("tracer {cmd}"), args)
        })
        .collect()
}

pub(crate) struct Iperf {
    /// TCP bits/s received, or UDP packets/s that reached the server.
    pub(crate) rate: f64,
    /// `rate` per CPU-second of client + server.
    per_cpu: f64,
    /// UDP packets/s sent (0 for TCP).
    sent_rate: f64,
}

/// One iperf3 run across the lab's veth pair: TCP, or UDP with 64-byte payloads at an unlimited
/// rate.
fn iperf(lab: &Lab, secs: u64, udp: bool) -> anyhow::Result<Iperf> {
    iperf_between((&lab.client, &lab.server), (SERVER_IP, SERVER_IP), secs, udp)
}

/// `args` run inside namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// One iperf3 run from namespace `ns.0` to a server in `ns.1` listening on `ips.0`, the client
/// connecting to `ips.1` (the same address, or a Service address NATed to it).
pub(crate) fn iperf_between(ns: (&str, &str), ips: (&str, &str), secs: u64, udp: bool) -> anyhow::Result<Iperf> {
    let port = IPERF_PORT.to_string();
    let mut server = Proc::spawn(&mut in_ns(ns.1, &["iperf3", "-s", "-1", "-B", ips.0, "-p", &port]), false)?;
    let secs_s = secs.to_string();
    let mut args = vec!["iperf3", "-c", ips.1, "-p", &port, "-t", &secs_s, "-J"];
    if udp {
        args.extend(["-u", "-b", "0", "-l", "64"]);
    }
    // The server needs a moment to listen; a refused connect is retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    let json = loop {
        check_interrupted()?;
        let mut client = in_ns(ns.0, &args);
        client.stdin(Stdio::null()).stderr(Stdio::null());
        let child = client.stdout(Stdio::piped()).spawn()?;
        let out = wait_output(child, Duration::from_secs(secs + 30))?;
        let json: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
        if json.get("error").is_none() && json.get("end").is_some() {
            break json;
        }
        if Instant::now() > deadline {
            bail!("iperf3 failed: {}", json.get("error").map_or_else(|| String::from_utf8_lossy(&out).into_owned(), Value::to_string));
        }
        thread::sleep(Duration::from_millis(100));
    };
    server.wait_exit(Duration::from_secs(10)).ok();
    let end = &json["end"];
    // host_total and remote_total are percent of one CPU over the run, user + system.
    let cpu = &end["cpu_utilization_percent"];
    let cpus = (cpu["host_total"].as_f64().unwrap_or(f64::NAN) + cpu["remote_total"].as_f64().unwrap_or(f64::NAN)) / 100.0;
    if udp {
        let sum = &end["sum"];
        let packets = sum["packets"].as_f64().context("iperf3 udp packets")?;
        let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
        let seconds = sum["seconds"].as_f64().context("iperf3 seconds")?;
        let rate = (packets - lost) / seconds;
        Ok(Iperf { rate, per_cpu: rate / cpus, sent_rate: packets / seconds })
    } else {
        let rate = end["sum_received"]["bits_per_second"].as_f64().context("iperf3 bits_per_second")?;
        Ok(Iperf { rate, per_cpu: rate / cpus, sent_rate: 0.0 })
    }
}

/// Waits for a child (killing it after `timeout`) and returns its stdout.
fn wait_output(mut child: Child, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let end = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > end || INTERRUPTED.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            check_interrupted()?;
            bail!("timed out after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(reader.join().unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// The drop storm.

struct StormRun {
    consumer: &'static str,
    sent: u64,
    /// Seconds the sender ran.
    send_secs: f64,
    /// Sender thread CPU (the kernel programs run in its context: softirq on the same CPU).
    sender_cpu: f64,
    /// Kernel count of matching drops (tracer only).
    seen: Option<u64>,
    /// Events the consumer printed (JSON lines counted on its stdout).
    delivered: u64,
    /// Events the consumer says it lost.
    lost: u64,
    /// Drops over tracer's rate budget, counted in the kernel instead of delivered.
    counted: u64,
    /// The same consumer again, in a shorter storm with the kernel's statistics on (tracer
    /// only): `drop_tp_btf`'s own cost per drop, which the measured storm (statistics off)
    /// does not pay for.
    with_stats: Option<StatsStorm>,
    /// The statistics were on during the measured storm anyway (another process held them).
    stats_were_on: bool,
    /// tracer's own `delivered` (records read), to cross-check with the lines counted.
    reported_delivered: Option<u64>,
    /// Seconds from the storm's start to the consumer's last line.
    deliver_secs: f64,
    consumer_cpu: f64,
}

impl StormRun {
    fn delivered_per_sec(&self) -> f64 {
        self.delivered as f64 / self.deliver_secs
    }

    fn sent_per_sec(&self) -> f64 {
        self.sent as f64 / self.send_secs
    }

    /// The sender's CPU per packet: the drop path, the kernel programs attached to it included,
    /// runs in its context; unlike its rate this does not depend on how much CPU it was given.
    fn sender_us_per_drop(&self) -> f64 {
        self.sender_cpu / self.sent as f64 * 1e6
    }
}

/// A storm under a second tracer with the same arguments and the kernel's statistics on.
struct StatsStorm {
    sent: u64,
    sender_cpu: f64,
    /// `drop_tp_btf`'s run count and time meanwhile.
    drop_prog: Option<progstats::Counters>,
    /// tracer's kernel count of matching drops, and its summary's delivered + lost + counted.
    seen: u64,
    accounted: u64,
}

impl StatsStorm {
    fn sender_us_per_drop(&self) -> f64 {
        self.sender_cpu / self.sent as f64 * 1e6
    }
}

/// `tracer ARGS` through a storm of `sizes.storm_stats_secs` with the statistics on: what
/// `drop_tp_btf` costs per drop, and the sender's CPU per drop with the statistics' own cost in.
fn storm_with_stats(tracer: &Path, lab: &Lab, args: &[String], sizes: &Sizes) -> anyhow::Result<StatsStorm> {
    let mut p = Proc::spawn(Command::new(tracer).args(args), true)?;
    p.wait_for("tracer: attached", Duration::from_secs(30))?;
    let stats = progstats::StatsEnabled::on()?;
    let s0 = progstats::snapshot(p.pid())?;
    let blast = blast(lab, sizes.storm_max_packets, Duration::from_secs(sizes.storm_stats_secs))?;
    let drop_prog = progstats::delta(&s0, &progstats::snapshot(p.pid())?).get("drop_tp_btf").copied();
    drop(stats);
    p.stdout.as_ref().context("consumer stdout")?.settle(Duration::from_millis(500), Duration::from_secs(120))?;
    p.interrupt(Duration::from_secs(60))?;
    let (_, s) = summaries(&p.stderr_text()).into_iter().find(|(f, _)| f == "drops").context("tracer printed no drops summary")?;
    Ok(StatsStorm { sent: blast.sent, sender_cpu: blast.cpu, drop_prog, seen: s.seen, accounted: s.delivered + s.lost + s.counted })
}

fn storm(tracer: &Path, lab: &Lab, sizes: &Sizes) -> anyhow::Result<Vec<StormRun>> {
    let script = bpftrace_script(lab)?;
    let duration = Duration::from_secs(sizes.storm_secs);
    let mut runs = Vec::new();
    let filter = ["--pods-from", "none", "-o", "json", "--proto", "udp", "--port", &STORM_PORT.to_string(), "--ip", &format!("{SERVER_IP}/32")]
        .map(str::to_string);
    // tracer as it runs by default (the rate budget on), then with every drop an event: what one
    // delivered event costs on each side, beside bpftrace.
    for consumer in ["none", "tracer drops", "tracer drops --max-rate off", "bpftrace", "tracer drops --max-rate off --ring-buffer 64M"] {
        check_interrupted()?;
        let mut args: Vec<String> = vec!["drops".into()];
        args.extend(filter.iter().cloned());
        if consumer.contains("off") {
            args.extend(["--max-rate".into(), "off".into()]);
        }
        if consumer.contains("64M") {
            args.extend(["--ring-buffer".into(), "64M".into()]);
        }
        let proc = match consumer {
            "none" => None,
            "bpftrace" => {
                let mut p = Proc::spawn(Command::new("bpftrace").arg(&script), true)?;
                let started = p.started;
                wait_bpftrace_live(lab, &mut p, started)?;
                Some(p)
            }
            _ => {
                let mut p = Proc::spawn(Command::new(tracer).args(&args), true)?;
                p.wait_for("tracer: attached", Duration::from_secs(30))?;
                Some(p)
            }
        };
        let before = proc.as_ref().and_then(|p| p.stdout.as_ref()).map_or(0, LineCounter::count);
        let before_cpu = proc.as_ref().map(Proc::cpu).transpose()?.unwrap_or_default();
        let traced = proc.as_ref().filter(|_| consumer.starts_with("tracer")).map(Proc::pid);
        let progs_before = traced.map(progstats::snapshot).transpose()?;
        let start = Instant::now();
        let blast = blast(lab, sizes.storm_max_packets, duration)?;
        // With the statistics off the programs' run counts stay still; if they moved, another
        // process held the statistics on and this storm paid for them.
        let stats_were_on = match (traced, &progs_before) {
            (Some(pid), Some(s0)) => progstats::delta(s0, &progstats::snapshot(pid)?).values().any(|c| c.run_cnt > 0),
            _ => false,
        };
        let mut run = StormRun {
            consumer: match consumer {
                "none" => "no tracer (baseline)",
                "tracer drops" => "tracer drops -o json (4M ring, default --max-rate)",
                "tracer drops --max-rate off" => "tracer drops -o json --max-rate off (4M ring)",
                "bpftrace" => "bpftrace 0.17 (same fields)",
                _ => "tracer drops -o json --max-rate off --ring-buffer 64M",
            },
            sent: blast.sent,
            send_secs: blast.secs,
            sender_cpu: blast.cpu,
            seen: None,
            delivered: 0,
            lost: 0,
            counted: 0,
            with_stats: None,
            stats_were_on,
            reported_delivered: None,
            deliver_secs: blast.secs,
            consumer_cpu: 0.0,
        };
        if let Some(mut p) = proc {
            let counter = p.stdout.as_ref().context("consumer stdout")?;
            counter.settle(Duration::from_millis(500), Duration::from_secs(120))?;
            run.consumer_cpu = (p.cpu()? - before_cpu).as_secs_f64();
            p.interrupt(Duration::from_secs(60))?;
            let mut counter = p.stdout.take().context("consumer stdout")?;
            let (lines, lost, last) = counter.finish();
            run.delivered = lines - before;
            run.lost = lost;
            if let Some(last) = last {
                run.deliver_secs = (last - start).as_secs_f64().max(blast.secs);
            }
            if consumer.starts_with("tracer") {
                let (_, s) = summaries(&p.stderr_text()).into_iter().find(|(f, _)| f == "drops").context("tracer printed no drops summary")?;
                run.seen = Some(s.seen);
                run.lost = s.lost;
                run.counted = s.counted;
                run.reported_delivered = Some(s.delivered);
            } else {
                // bpftrace prints its losses on stdout or stderr depending on the version.
                run.lost += p
                    .stderr_text()
                    .split(" | ")
                    .filter_map(|l| l.strip_prefix("Lost "))
                    .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
                    .sum::<u64>();
            }
        }
        eprintln!(
            "bench:   {}: sent {} in {:.2} s ({:.0}/s), delivered {} ({:.0}/s), lost {}, counted {}{}",
            run.consumer,
            run.sent,
            run.send_secs,
            run.sent_per_sec(),
            run.delivered,
            run.delivered_per_sec(),
            run.lost,
            run.counted,
            run.seen.map(|s| format!(", seen {s}")).unwrap_or_default()
        );
        if consumer.starts_with("tracer") {
            let w = storm_with_stats(tracer, lab, &args, sizes)?;
            eprintln!(
                "bench:   … again with the statistics on: sent {}, sender {:.2} µs per drop, drop_tp_btf {} runs",
                w.sent,
                w.sender_us_per_drop(),
                w.drop_prog.map_or(0, |c| c.run_cnt)
            );
            run.with_stats = Some(w);
        }
        runs.push(run);
    }
    Ok(runs)
}

struct Blast {
    sent: u64,
    secs: f64,
    cpu: f64,
}

/// UDP to a closed port of the server, as fast as one thread can send, at most `max` packets
/// and `limit` time. Runs in a thread moved into the client namespace.
fn blast(lab: &Lab, max: u64, limit: Duration) -> anyhow::Result<Blast> {
    in_netns(&lab.client, move || -> anyhow::Result<Blast> {
        let socket = UdpSocket::bind((CLIENT_IP, 0))?;
        let payload = [0u8; 18];
        let start = Instant::now();
        let cpu0 = thread_cpu();
        let mut sent = 0u64;
        'outer: while sent < max {
            // Checking the clock every 1024 packets keeps it off the per-packet path.
            for _ in 0..1024 {
                if socket.send_to(&payload, (SERVER_IP, STORM_PORT)).is_ok() {
                    sent += 1;
                }
                if sent >= max {
                    break 'outer;
                }
            }
            if start.elapsed() >= limit || INTERRUPTED.load(Ordering::Relaxed) {
                break;
            }
        }
        Ok(Blast { sent, secs: start.elapsed().as_secs_f64(), cpu: (thread_cpu() - cpu0).as_secs_f64() })
    })?
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Runs `f` on a new thread that has entered network namespace `ns` (setns affects only the
/// calling thread, so the bench itself stays where it is).
pub(crate) fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let ns = ns.to_string();
    thread::spawn(move || -> anyhow::Result<T> {
        enter_netns(&ns)?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// Moves the calling thread (only it) into network namespace `ns`.
pub(crate) fn enter_netns(ns: &str) -> anyhow::Result<()> {
    let path = format!("/var/run/netns/{ns}");
    let file = fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: a valid namespace fd; affects this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns into {path}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The bpftrace side: skb:kfree_skb, the same filter (UDP to the storm port) and the same fields
/// as `tracer drops -o json` prints, as one JSON object per line. The reason stays a number
/// (bpftrace 0.17 cannot name enum values) and the location a bare symbol (`ksym`).
fn bpftrace_script(lab: &Lab) -> anyhow::Result<PathBuf> {
    let path = lab.dir.join("drops.bt");
    let script = format!(
        r#"tracepoint:skb:kfree_skb
{{
  $skb = (struct sk_buff *)args->skbaddr;
  $ip = (struct iphdr *)($skb->head + $skb->network_header);
  if ($ip->protocol == 17) {{
    $udp = (struct udphdr *)($skb->head + $skb->transport_header);
    $dport = (($udp->dest & 0xff) << 8) | ($udp->dest >> 8);
    if ($dport == {STORM_PORT}) {{
      $sport = (($udp->source & 0xff) << 8) | ($udp->source >> 8);
      printf("{{\"ts\":%llu,\"kind\":\"drop\",\"reason\":%d,\"location\":\"%s\",\"proto\":\"udp\",\"src\":\"%s:%d\",\"dst\":\"%s:%d\",\"len\":%u,\"ifname\":\"%s\",\"netns\":%u}}\n",
        nsecs, args->reason, ksym(args->location), ntop($ip->saddr), $sport, ntop($ip->daddr), $dport, $skb->len, $skb->dev->name, $skb->dev->nd_net.net->ns.inum);
    }}
  }}
}}
"#
    );
    fs::write(&path, script)?;
    Ok(path)
}

// ---------------------------------------------------------------------------------------------
// Output.

impl Report {
    fn markdown(&self, smoke: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Run: {}{}; {}; load average before {} / after {}.\n",
            utc_now(),
            if smoke { " (smoke: 1 s runs, numbers not meaningful)" } else { "" },
            machine(),
            self.load.0,
            self.load.1
        );

        let o = &self.overhead;
        let row = |s: &mut String, name: &str, base: &Samples, traced: &Samples, unit: f64, unit_name: &str, target: Option<f64>| {
            let ratio = traced.median() / base.median();
            let verdict = target.map_or("—".to_string(), |t| format!("≥ {t:.2} ({})", if ratio >= t { "met" } else { "missed" }));
            let _ = writeln!(
                s,
                "| {name} | {:.2} {unit_name} (±{:.1}%) | {:.2} {unit_name} (±{:.1}%) | {:.3} ({:+.1}%) | {verdict} |",
                base.median() / unit,
                base.spread_pct() / 2.0,
                traced.median() / unit,
                traced.spread_pct() / 2.0,
                ratio,
                (ratio - 1.0) * 100.0,
            );
        };
        let _ = writeln!(s, "Medians of {} alternating repetitions, ± half the range between the lowest and highest:\n", o.tcp_base.0.len());
        let _ = writeln!(s, "| measurement | baseline | with tracer | ratio | target |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        row(&mut s, "iperf3 TCP throughput, `tracer watch` attached", &o.tcp_base, &o.tcp_traced, 1e9, "Gbit/s", Some(0.98));
        row(&mut s, "… per CPU-second of iperf3 (client + server)", &o.tcp_eff_base, &o.tcp_eff_traced, 1e9, "Gbit", Some(0.98));
        row(&mut s, "iperf3 UDP 64-byte packets received/s, `tracer watch` attached", &o.udp_base, &o.udp_traced, 1e3, "kpps", Some(0.95));
        row(&mut s, "… packets sent/s", &o.udp_sent_base, &o.udp_sent_traced, 1e3, "kpps", None);
        row(&mut s, "… packets received per CPU-second of iperf3", &o.udp_eff_base, &o.udp_eff_traced, 1e3, "k", Some(0.95));
        for (name, rate, eff) in &o.per_command {
            let what =
                if name.ends_with("mtu") { format!("iperf3 TCP, `{name}` alone (tc on the 2 veths)") } else { format!("iperf3 TCP, `{name}` alone") };
            row(&mut s, &what, &o.tcp_base, rate, 1e9, "Gbit/s", Some(0.98));
            row(&mut s, "… per CPU-second", &o.tcp_eff_base, eff, 1e9, "Gbit", Some(0.98));
        }
        if !o.stats_were_on.is_empty() {
            let _ = writeln!(
                s,
                "\n**Warning**: the per-program statistics were on during these throughput runs although the bench had them off (another process held them on), so they include the statistics' cost: {}.",
                o.stats_were_on.join(", ")
            );
        }
        o.progs_markdown(&mut s);
        s.push_str(&self.node.markdown());
        let fams: Vec<String> = o.families.iter().map(|(f, c)| format!("{f} {}/{}/{}/{}", c.seen, c.delivered, c.lost, c.counted)).collect();
        let _ = writeln!(
            s,
            "\nEvents `tracer watch` reported during the traced repetitions (seen/delivered/lost/counted over the default --max-rate): {}.\n",
            fams.join(", ")
        );

        let _ = writeln!(s, "**Drop storm** (UDP to a closed port, NO_SOCKET drops; one sender thread; consumers' stdout counted line by line):\n");
        let _ = writeln!(
            s,
            "| consumer | drops caused | caused/s (ratio) | sender CPU per drop (ratio) | `drop_tp_btf` ns per drop | kernel saw | delivered | delivered/s | lost (reported) | counted (over --max-rate) | consumer CPU | consumer CPU per event | events/s one core would take |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        let base = self.storm.first();
        let base_rate = base.map_or(f64::NAN, StormRun::sent_per_sec);
        let base_cost = base.map_or(f64::NAN, StormRun::sender_us_per_drop);
        let prog_ns = |r: &StormRun| -> String {
            r.with_stats
                .as_ref()
                .and_then(|w| w.drop_prog)
                .filter(|c| c.run_cnt > 0)
                .map_or("—".into(), |c| format!("{:.0}", c.run_time_ns as f64 / c.run_cnt as f64))
        };
        for r in &self.storm {
            let consumer = !r.consumer.starts_with("no tracer");
            let per_event_us = r.consumer_cpu / r.delivered as f64 * 1e6;
            let or_dash = |v: String| if consumer { v } else { "—".into() };
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} ({:.2}) | {:.2} µs ({:.2}) | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.consumer,
                r.sent,
                r.sent_per_sec(),
                r.sent_per_sec() / base_rate,
                r.sender_us_per_drop(),
                r.sender_us_per_drop() / base_cost,
                prog_ns(r),
                r.seen.map_or("—".into(), |v| v.to_string()),
                or_dash(r.delivered.to_string()),
                or_dash(format!("{:.0}", r.delivered_per_sec())),
                or_dash(r.lost.to_string()),
                if r.seen.is_some() { r.counted.to_string() } else { "—".into() },
                or_dash(format!("{:.0}% of a core", r.consumer_cpu / r.deliver_secs * 100.0)),
                or_dash(format!("{per_event_us:.2} µs")),
                or_dash(format!("{:.0}", 1e6 / per_event_us)),
            );
        }
        if let (Some(t), Some(b)) = (
            self.storm.iter().find(|r| r.consumer.starts_with("tracer drops -o json --max-rate off (4M")),
            self.storm.iter().find(|r| r.consumer.starts_with("bpftrace")),
        ) {
            let per_event = |r: &StormRun| r.consumer_cpu / r.delivered as f64;
            let _ = writeln!(
                s,
                "\nIn this run tracer (`--max-rate off`, every drop an event) delivered {:.2}x bpftrace's events per second ({:.0} vs {:.0}), lost {:.1}% of them against bpftrace's {:.1}%, and spent {:.2}x less CPU per delivered event in userspace; per drop, the sender (whose CPU runs the kernel programs) paid {:.2} µs more with tracer's program and {:.2} µs more with bpftrace's than without either.",
                t.delivered_per_sec() / b.delivered_per_sec(),
                t.delivered_per_sec(),
                b.delivered_per_sec(),
                t.lost as f64 / (t.delivered + t.lost) as f64 * 100.0,
                b.lost as f64 / (b.delivered + b.lost) as f64 * 100.0,
                per_event(b) / per_event(t),
                t.sender_us_per_drop() - base_cost,
                b.sender_us_per_drop() - base_cost,
            );
        }

        if let (Some(budget), Some(off)) = (
            self.storm.iter().find(|r| r.consumer.contains("default --max-rate")),
            self.storm.iter().find(|r| r.consumer.starts_with("tracer drops -o json --max-rate off (4M")),
        ) {
            let _ = writeln!(
                s,
                "\nWith the default rate budget (`--max-rate` 5000/s per CPU and place) the kernel saw {} drops: {} delivered + {} counted + {} lost; per drop the sender paid {:.2} µs more than without tracer ({:.2} µs more with `--max-rate off`, every drop an event), of which `drop_tp_btf` itself {} ns ({} ns with `--max-rate off`).",
                budget.seen.unwrap_or(0),
                budget.reported_delivered.unwrap_or(0),
                budget.counted,
                budget.lost,
                budget.sender_us_per_drop() - base_cost,
                off.sender_us_per_drop() - base_cost,
                prog_ns(budget),
                prog_ns(off),
            );
        }
        if let Some(w) = self
            .storm
            .iter()
            .find(|r| r.consumer.starts_with("tracer drops -o json --max-rate off (4M"))
            .and_then(|r| r.with_stats.as_ref().map(|w| (r, w)))
        {
            let (off, w) = w;
            let _ = writeln!(
                s,
                "\nThe storms above ran with the kernel's per-program statistics off (what a user pays); `drop_tp_btf` ns per drop comes from a second, shorter storm per tracer row with them on, in which the sender paid {:.2} µs more per drop than the baseline with `--max-rate off` ({:.2} µs with them off): the statistics' clock reads are not part of the producer figure.",
                w.sender_us_per_drop() - base_cost,
                off.sender_us_per_drop() - base_cost,
            );
        }
        let on: Vec<&str> = self.storm.iter().filter(|r| r.stats_were_on).map(|r| r.consumer).collect();
        if !on.is_empty() {
            let _ = writeln!(
                s,
                "\n**Warning**: the per-program statistics were on during these storms although the bench had them off (another process held them on), so their producer figures include the statistics' cost: {}.",
                on.join("; ")
            );
        }

        let _ = writeln!(s, "\n**Start and stop** (median of {} runs, milliseconds):\n", self.start.runs.first().map_or(0, |r| r.1.0.len()));
        let _ = writeln!(s, "| command | spawn to `attached` | SIGINT to exit | target |");
        let _ = writeln!(s, "|---|---|---|---|");
        for (name, attach, exit) in &self.start.runs {
            let _ = writeln!(
                s,
                "| tracer {name} | {:.0} (min {:.0}) | {:.0} | < 200 to attach ({}) |",
                attach.median(),
                attach.0.iter().copied().fold(f64::INFINITY, f64::min),
                exit.median(),
                if attach.median() < 200.0 { "met" } else { "missed" }
            );
        }
        let _ = writeln!(s, "| bpftrace (spawn to first event printed) | {:.0} | — | — |", self.start.bpftrace.median());

        let _ = writeln!(s, "\n**Resident memory** of `tracer watch` (all probes), 1 s after `attached`:\n");
        let _ = writeln!(s, "| pods in the registry | VmRSS | peak (VmHWM) | target |");
        let _ = writeln!(s, "|---|---|---|---|");
        for (pods, rss, hwm) in &self.rss.runs {
            let _ = writeln!(
                s,
                "| {pods} | {:.1} MB | {:.1} MB | {} |",
                *rss as f64 / 1024.0,
                *hwm as f64 / 1024.0,
                if *pods == 1000 { format!("< 40 MB ({})", if (*rss as f64 / 1024.0) < 40.0 { "met" } else { "missed" }) } else { "—".into() }
            );
        }

        let d = &self.decode;
        let _ = writeln!(
            s,
            "\n**Userspace path per core** (tracer's `bench::decode_enrich_json`: raw DropEvent records → typed events → pods named from a 1,000-pod registry → JSON lines into a buffer):\n"
        );
        let _ = writeln!(s, "| stage | events/s on one core | target |");
        let _ = writeln!(s, "|---|---|---|");
        let _ = writeln!(s, "| decode | {:.0} | |", d.decode);
        let _ = writeln!(s, "| decode + enrich | {:.0} | |", d.enrich);
        let _ = writeln!(s, "| decode + enrich + JSON | {:.0} | ≥ 1,000,000 ({}) |", d.json, if d.json >= 1e6 { "met" } else { "missed" });
        s
    }

    /// What the CI smoke run insists on: every figure was measured, and tracer accounted for
    /// every event of the storm.
    fn check_smoke(&self) -> anyhow::Result<()> {
        let o = &self.overhead;
        for (name, v) in [
            ("tcp baseline", &o.tcp_base),
            ("tcp traced", &o.tcp_traced),
            ("udp baseline", &o.udp_base),
            ("udp traced", &o.udp_traced),
            ("tcp per cpu", &o.tcp_eff_traced),
            ("udp per cpu", &o.udp_eff_traced),
        ] {
            ensure!(v.measured(), "{name} was not measured: {:?}", v.0);
        }
        ensure!(!o.families.is_empty(), "tracer watch printed no summaries");
        for command in ["watch", "serve"] {
            for load in ["TCP", "UDP 64 B"] {
                let p = o.progs.iter().find(|p| p.command == command && p.load == load);
                ensure!(
                    p.is_some_and(|p| p.packets > 0 && p.progs.values().any(|c| c.run_cnt > 0)),
                    "no per-program statistics for {command} under {load}"
                );
            }
        }
        ensure!(o.floor.len() == 2 && o.floor.iter().all(|(_, c)| c.run_cnt > 0), "the empty classifier (the floor) did not run under both loads");
        ensure!(
            o.per_command.iter().any(|(n, v, e)| n == "tracer drops" && v.measured() && e.measured()),
            "TCP with tracer drops alone was not measured"
        );
        for (name, attach, exit) in &self.start.runs {
            ensure!(attach.measured() && exit.measured(), "start/exit of {name} not measured");
        }
        ensure!(self.start.bpftrace.measured(), "bpftrace start not measured");
        ensure!(self.rss.runs.len() == 2 && self.rss.runs.iter().all(|r| r.1 > 0), "resident memory not measured");
        ensure!(self.decode.decode > 0.0 && self.decode.enrich > 0.0 && self.decode.json > 0.0, "decode benchmark printed no rates");
        ensure!(self.storm.len() == 5, "storm runs missing");
        for r in &self.storm {
            ensure!(r.sent > 0, "{}: the storm sent nothing", r.consumer);
            if let Some(seen) = r.seen {
                let reported = r.reported_delivered.unwrap_or(0);
                ensure!(
                    reported + r.lost + r.counted == seen,
                    "{}: delivered {reported} + lost {} + counted {} != seen {seen}",
                    r.consumer,
                    r.lost,
                    r.counted
                );
                if r.consumer.contains("off") {
                    ensure!(r.counted == 0, "{}: counted {} with no budget", r.consumer, r.counted);
                } else {
                    ensure!(r.lost == 0, "{}: the default budget lost {} drops with the default ring", r.consumer, r.lost);
                }
                ensure!(reported == r.delivered, "{}: tracer says it delivered {reported}, its stdout had {} lines", r.consumer, r.delivered);
                // Every packet to the closed port is one drop: the kernel must have seen each.
                ensure!(seen == r.sent, "{}: {} packets sent to a closed port, tracer's kernel side saw {seen} drops", r.consumer, r.sent);
                let w = r.with_stats.as_ref().with_context(|| format!("{}: no storm with the statistics on", r.consumer))?;
                ensure!(
                    w.seen == w.sent && w.accounted == w.seen,
                    "{} (statistics on): {} sent, {} seen, {} delivered + lost + counted",
                    r.consumer,
                    w.sent,
                    w.seen,
                    w.accounted
                );
                ensure!(w.drop_prog.is_some_and(|c| c.run_cnt > 0), "{}: drop_tp_btf has no statistics", r.consumer);
            } else if r.consumer.starts_with("bpftrace") {
                ensure!(r.delivered > 0, "bpftrace delivered nothing");
            }
        }
        Ok(())
    }
}

/// Now, as `2026-11-22 13:39 UTC`.
pub(crate) fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// This machine, as `kernel 6.18.44; 2 CPUs (Intel(R) Xeon(R) ...)`.
pub(crate) fn machine() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    format!("kernel {}; {cpus} CPUs ({cpu})", kernel.trim())
}

/// The two lines a generated block of a Markdown file sits between.
pub(crate) struct Markers {
    pub(crate) begin: &'static str,
    pub(crate) end: &'static str,
}

/// Replaces the text between the markers (or appends the markers and the table).
pub(crate) fn write_between_markers(path: &Path, markers: &Markers, table: &str) -> anyhow::Result<()> {
    let Markers { begin, end } = markers;
    let old = fs::read_to_string(path).unwrap_or_default();
    let block = format!("{begin}\n{table}{end}");
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{old}{}{block}\n", if old.is_empty() { "" } else { "\n" }),
    };
    fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_parsed_per_family() {
        let text = "tracer: attached watch (...) | tracer: drops: 100 seen, 7 delivered, 3 lost, 90 counted (over --max-rate) | tracer: nat: 0 seen, 0 delivered, 0 lost | tracer: retrans: 5 seen, 4 delivered, 0 lost, 1 unread";
        let s = summaries(text);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].0.as_str(), s[0].1.seen, s[0].1.delivered, s[0].1.lost, s[0].1.counted), ("drops", 100, 7, 3, 90));
        assert_eq!((s[2].0.as_str(), s[2].1.seen, s[2].1.delivered), ("retrans", 5, 4));
    }

    #[test]
    fn median_and_spread() {
        let s = Samples(vec![3.0, 1.0, 2.0]);
        assert_eq!(s.median(), 2.0);
        assert_eq!(s.spread_pct(), 100.0);
        assert_eq!(Samples(vec![1.0, 3.0]).median(), 2.0);
        assert!(!Samples(vec![]).measured());
        assert!(!Samples(vec![1.0, 0.0]).measured());
    }

    #[test]
    fn markers_keep_the_prose_around_the_table() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("B.md");
        let Markers { begin, end } = MARKERS;
        fs::write(&path, format!("intro\n{begin}\nold\n{end}\noutro\n")).unwrap();
        write_between_markers(&path, &MARKERS, "new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("intro\n{begin}\nnew\n{end}\noutro\n"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
