//! The real `tracer` binary under test: where it is ([`tracer_bin`]), running it in the
//! background and reading its stdout and stderr as it goes ([`Tracer`]) or to completion
//! ([`run_tracer`]), what a finished run left ([`TracerRun`]), its final counters line
//! ([`parse_summary`]), and the check that it refuses bad input ([`assert_refused`]).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{Netns, Value, run_timeout};

/// How long a tracer may take to print its `attached` line.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a tracer may take to exit after SIGINT/SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `watch`'s (and `diagnose`'s) NAT hook for a tracer that traces the lab's namespaces from
/// outside them: every transmit of every namespace. The lab's nodes are namespaces, and their NAT
/// happens there; `--nat-hook auto` takes the egress classifiers where tracer's own namespace
/// has a veth (the test VM's has one), and those see only that namespace's devices.
pub const NAT_FROM_OUTSIDE: [&str; 2] = ["--nat-hook", "xmit"];

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The tracer binary: `$TRACER_BIN`, else `target/release/tracer`, else `target/debug/tracer`.
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "TRACER_BIN={} does not exist", p.display());
        return p;
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("tracer");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "no tracer binary: set TRACER_BIN or build it with `cargo build --release -p tracer` \
         (looked in {}/{{release,debug}}/tracer)",
        target.display()
    );
}

/// A running tracer. Killed (SIGKILL) on drop if still running.
pub struct Tracer {
    child: Option<Child>,
    args: Vec<String>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    paused: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
}

/// What a finished tracer produced.
#[derive(Debug)]
pub struct TracerRun {
    pub args: Vec<String>,
    /// Raw stdout lines.
    pub lines: Vec<String>,
    pub stderr: String,
    pub status: ExitStatus,
}

impl TracerRun {
    /// Stdout lines parsed as JSON (panics naming the first line that is not JSON).
    pub fn events(&self) -> Vec<Value> {
        parse_json_lines(&self.lines)
    }

    /// Exit code, panicking if the tracer died from a signal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| panic!("tracer {:?} died from a signal: {}\nstderr:\n{}", self.args, self.status, self.stderr))
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    /// Panics unless the tracer exited with `code`.
    pub fn assert_code(&self, code: i32) {
        assert_eq!(
            self.status.code(),
            Some(code),
            "tracer {:?}: expected exit code {code}, got {}\nstderr:\n{}",
            self.args,
            self.status,
            self.stderr
        );
    }
}

pub(crate) fn parse_json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("tracer stdout line is not JSON ({e}): {l}")))
        .collect()
}

impl Tracer {
    fn spawn(args: &[&str], paused: bool, env: &[(&str, &str)]) -> Tracer {
        Self::spawn_in(None, &[], args, paused, env)
    }

    /// `netns`: run the tracer inside this namespace (`ip netns exec`, which execs it: the
    /// child is the tracer itself, so signals reach it). `wrapper`: a program that execs the
    /// tracer (`setpriv ...`), run first.
    fn spawn_in(netns: Option<&Netns>, wrapper: &[&str], args: &[&str], paused: bool, env: &[(&str, &str)]) -> Tracer {
        let bin = tracer_bin();
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(ns) = netns {
            argv.extend(["ip", "netns", "exec", ns.name.as_str()].map(Into::into));
        }
        argv.extend(wrapper.iter().map(Into::into));
        argv.push(bin.clone().into_os_string());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        let mut child = command
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} {args:?}: {e}", bin.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let paused = Arc::new(AtomicBool::new(paused));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            let (lines, paused) = (lines.clone(), paused.clone());
            readers.push(thread::spawn(move || {
                let mut r = BufReader::new(out);
                loop {
                    // Bounded: the test resumes (or the guard drops) long before this matters.
                    let mut waited = 0;
                    while paused.load(Ordering::Relaxed) && waited < 60_000 {
                        thread::sleep(Duration::from_millis(10));
                        waited += 10;
                    }
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => lines.lock().expect("lines lock").push(line.trim_end_matches('\n').to_string()),
                    }
                }
            }));
        }
        if let Some(err) = child.stderr.take() {
            let stderr = stderr.clone();
            readers.push(thread::spawn(move || {
                let mut r = BufReader::new(err);
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => stderr.lock().expect("stderr lock").push_str(&line),
                    }
                }
            }));
        }
        Tracer { child: Some(child), args: args.iter().map(|s| s.to_string()).collect(), lines, stderr, paused, readers }
    }

    /// Starts the tracer and waits (up to [`ATTACH_TIMEOUT`]) for `attached` on its stderr.
    pub fn start(args: &[&str]) -> Tracer {
        Self::start_with(args, false, &[])
    }

    /// Like [`Tracer::start`] with extra environment (`RUST_LOG` for the debug lines a test
    /// waits on).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Tracer {
        Self::start_with(args, false, env)
    }

    /// Like [`Tracer::start_env`], run through `wrapper`, a program that execs the tracer
    /// (`setpriv --bounding-set=... --`), when it is not empty.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Tracer {
        Self::start_spawned(Self::spawn_in(None, wrapper, args, false, env), args)
    }

    /// Starts the tracer without waiting for `attached`: commands that attach nothing (`job run`).
    pub fn launch(args: &[&str]) -> Tracer {
        Self::spawn(args, false, &[])
    }

    /// Like [`Tracer::start`] but does not read stdout until [`Tracer::resume_stdout`]: a slow
    /// consumer, so the tracer's stdout pipe fills up and its ring buffer overflows.
    pub fn start_paused(args: &[&str]) -> Tracer {
        Self::start_with(args, true, &[])
    }

    /// Like [`Tracer::start`], inside network namespace `netns` (its own addresses, such as a
    /// metrics listener on 127.0.0.1, stay in the lab).
    pub fn start_in(netns: &Netns, args: &[&str]) -> Tracer {
        Self::start_spawned(Self::spawn_in(Some(netns), &[], args, false, &[]), args)
    }

    /// [`Tracer::start_in`] with stdout unread until [`Tracer::resume_stdout`]
    /// ([`Tracer::start_paused`] inside a namespace).
    pub fn start_in_paused(netns: &Netns, args: &[&str]) -> Tracer {
        Self::start_spawned(Self::spawn_in(Some(netns), &[], args, true, &[]), args)
    }

    fn start_with(args: &[&str], paused: bool, env: &[(&str, &str)]) -> Tracer {
        Self::start_spawned(Self::spawn(args, paused, env), args)
    }

    fn start_spawned(mut t: Tracer, args: &[&str]) -> Tracer {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            if t.stderr().lines().any(|l| l.contains("attached")) {
                return t;
            }
            let exited = t.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = exited {
                let run = t.finish(st);
                panic!("tracer {:?} exited ({}) before printing `attached`\nstderr:\n{}", run.args, run.status, run.stderr);
            }
            if Instant::now() >= deadline {
                let stderr = t.stderr();
                drop(t);
                panic!("tracer {args:?} did not print `attached` within {ATTACH_TIMEOUT:?}\nstderr:\n{stderr}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Raw stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn resume_stdout(&self) {
        self.paused.store(false, Ordering::Relaxed);
    }

    /// Stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// The `attached` line(s) printed so far.
    pub fn attached_lines(&self) -> Vec<String> {
        self.stderr().lines().filter(|l| l.contains("attached")).map(str::to_string).collect()
    }

    /// Events parsed so far.
    pub fn events(&self) -> Vec<Value> {
        let lines = self.lines.lock().expect("lines lock").clone();
        parse_json_lines(&lines)
    }

    /// Polls until `pred(events)` holds or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.events()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until its JSON lines stop growing for one 250 ms step (what is still in flight has
    /// been drained), for at most 10 s; returns whether they stopped.
    pub fn wait_until_quiet(&self) -> bool {
        let mut last = usize::MAX;
        for _ in 0..40 {
            thread::sleep(Duration::from_millis(250));
            let n = self.events().len();
            if n == last {
                return true;
            }
            last = n;
        }
        false
    }

    /// Polls until stderr contains `text` or `timeout` passes; returns whether it did.
    pub fn wait_for_stderr(&self, timeout: Duration, text: &str) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(text) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn finish(&mut self, status: ExitStatus) -> TracerRun {
        self.paused.store(false, Ordering::Relaxed);
        self.child = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        TracerRun { args: self.args.clone(), lines: std::mem::take(&mut *self.lines.lock().expect("lines lock")), stderr: self.stderr(), status }
    }

    /// Sends `sig` and waits (up to [`STOP_TIMEOUT`]) for the tracer to exit; panics (after a
    /// SIGKILL) if it does not.
    pub fn stop_with(self, sig: libc::c_int) -> TracerRun {
        self.paused.store(false, Ordering::Relaxed);
        let pid = self.pid();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid, sig) };
        self.wait_exit(STOP_TIMEOUT)
    }

    /// SIGINT (Ctrl-C), then wait.
    pub fn stop(self) -> TracerRun {
        self.stop_with(libc::SIGINT)
    }

    /// Waits for the tracer to exit by itself (`--duration`, `--count`); panics after `timeout`.
    pub fn wait_exit(mut self, timeout: Duration) -> TracerRun {
        self.paused.store(false, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = st {
                return self.finish(st);
            }
            if Instant::now() >= deadline {
                let stderr = self.stderr();
                let args = self.args.clone();
                drop(self);
                panic!("tracer {args:?} did not exit within {timeout:?}\nstderr:\n{stderr}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.paused.store(false, Ordering::Relaxed);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the tracer to completion without waiting for `attached` (bad usage, `--duration`).
pub fn run_tracer(args: &[&str], timeout: Duration) -> TracerRun {
    run_tracer_cmd(Command::new(tracer_bin()).args(args), args, timeout)
}

/// Runs `wrapper... tracer args...` (e.g. under `setpriv`) to completion.
pub fn run_tracer_wrapped(wrapper: &[&str], args: &[&str], timeout: Duration) -> TracerRun {
    let bin = tracer_bin();
    let (prog, rest) = wrapper.split_first().expect("empty wrapper");
    let mut c = Command::new(prog);
    c.args(rest).arg(&bin).args(args);
    run_tracer_cmd(&mut c, args, timeout)
}

fn run_tracer_cmd(c: &mut Command, args: &[&str], timeout: Duration) -> TracerRun {
    let out = run_timeout(c.env("RUST_BACKTRACE", "0"), timeout);
    TracerRun {
        args: args.iter().map(|s| s.to_string()).collect(),
        lines: String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
    }
}

/// The counters of the final `tracer: <probe>: N seen, N delivered, N lost[, N unread]` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub seen: u64,
    pub delivered: u64,
    pub lost: u64,
    pub unread: Option<u64>,
}

/// Finds and parses the summary line for `probe` (e.g. `drops`) in stderr.
pub fn parse_summary(stderr: &str, probe: &str) -> Option<Summary> {
    let prefix = format!("tracer: {probe}:");
    let line = stderr.lines().rev().find(|l| l.starts_with(&prefix) && l.contains(" seen"))?;
    let mut s = Summary::default();
    let (mut got_seen, mut got_delivered, mut got_lost) = (false, false, false);
    for part in line[prefix.len()..].split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else { continue };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "seen" => (s.seen, got_seen) = (n, true),
            "delivered" => (s.delivered, got_delivered) = (n, true),
            "lost" => (s.lost, got_lost) = (n, true),
            "unread" => s.unread = Some(n),
            _ => {}
        }
    }
    (got_seen && got_delivered && got_lost).then_some(s)
}

/// Runs `tracer ARGS` and checks that it refuses them as bad input: exit 2 within 3 s, exactly
/// one stderr line naming at least one of `words` (and not `attached`), nothing on stdout.
pub fn assert_refused(args: &[&str], words: &[&str]) {
    refused(args, words, || run_tracer(args, Duration::from_secs(30)));
}

/// [`assert_refused`] with the tracer run inside network namespace `netns` (`ip netns exec`):
/// refusals that depend on the namespace's devices. Returns the one stderr line.
pub fn assert_refused_in(netns: &Netns, args: &[&str], words: &[&str]) -> String {
    refused(args, words, || run_tracer_wrapped(&["ip", "netns", "exec", netns.name.as_str()], args, Duration::from_secs(30)))
}

fn refused(args: &[&str], words: &[&str], run: impl FnOnce() -> TracerRun) -> String {
    let t0 = Instant::now();
    let run = run();
    run.assert_code(2);
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "{args:?}: want exactly one stderr line, got:\n{}", run.stderr);
    assert!(words.iter().any(|w| lines[0].contains(w)), "{args:?}: the error line should name one of {words:?}: {}", lines[0]);
    assert!(!lines[0].contains("attached"), "{args:?}: attached before failing: {}", lines[0]);
    assert!(run.lines.iter().all(|l| l.trim().is_empty()), "{args:?}: stdout not empty: {:?}", run.lines);
    assert!(t0.elapsed() < Duration::from_secs(3), "{args:?}: took {:?}: it ran instead of refusing", t0.elapsed());
    lines[0].to_string()
}
