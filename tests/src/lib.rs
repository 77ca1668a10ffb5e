//! A small lab for the privileged integration tests: network namespaces, veth pairs, bridges,
//! traffic generators, a runner for the real `tracer` binary, a private tracefs instance that
//! shows what the kernel itself reports, and bpftool snapshots that prove clean-up.
//!
//! Every object the lab creates lives inside network namespaces it created itself, and every
//! guard removes what it made when it is dropped, also when a test panics.
//!
//! Tests that need root start with [`require_privileged`], which prints a loud `SKIPPED` line
//! (or panics when `TRACER_REQUIRE_PRIVILEGED=1`), so a skip never passes silently.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use serde_json::Value;

pub mod node;
pub mod kube_api;
pub mod kube_proxy;
pub mod traffic;

/// How long a tracer may take to print its `attached` line.
pub const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a tracer may take to exit after SIGINT/SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound for helper commands (ip, iptables, python senders).
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Privilege gate and binary location
// ---------------------------------------------------------------------------------------------

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// Returns true when the test may run. Otherwise prints
/// `SKIPPED <test>: <reason> (kernel <release>)` to stderr and returns false, or panics when
/// `TRACER_REQUIRE_PRIVILEGED=1` (CI), so a skip can never look like a silent pass there.
pub fn require_privileged(test: &str) -> bool {
    skip_unless(test, privileged_reasons())
}

/// Why this machine cannot run privileged tests (empty when it can).
fn privileged_reasons() -> Vec<String> {
    let mut reasons = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        reasons.push("not root (euid != 0)".to_string());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        reasons.push("kernel has no BTF (/sys/kernel/btf/vmlinux missing)".to_string());
    }
    for tool in ["ip", "python3"] {
        if !have_tool(tool) {
            reasons.push(format!("`{tool}` not found in PATH"));
        }
    }
    reasons
}

/// True when `reasons` is empty; otherwise the loud skip (or, under
/// `TRACER_REQUIRE_PRIVILEGED=1`, the panic) of [`require_privileged`].
fn skip_unless(test: &str, reasons: Vec<String>) -> bool {
    if reasons.is_empty() {
        return true;
    }
    let reasons = reasons.join("; ");
    if std::env::var("TRACER_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("SKIPPED {test}: {reasons} (kernel {}); TRACER_REQUIRE_PRIVILEGED=1 forbids skipping", kernel_release());
    }
    skipped(test, &reasons);
    false
}

/// Prints `SKIPPED <what>: <reason> (kernel <release>)` loudly, for a check that cannot apply on
/// this kernel. Unlike a missing privilege this is no failure under CI: the kernel lacks what the
/// check needs, and the line says so.
pub fn skipped(what: &str, reason: &str) {
    // Written to fd 2 directly: libtest captures eprintln! of passing tests, and a skip must be
    // visible even then.
    use std::io::Write as _;
    let msg = format!("SKIPPED {what}: {reason} (kernel {})", kernel_release());
    let _ = writeln!(std::io::stderr().lock(), "\n!!!!!!!! {msg} !!!!!!!!");
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Whether the running kernel's BTF names `name` (a type, a tracepoint's `btf_trace_NAME`, an
/// enumerator): the kernel's own account of what it has, for per-kernel expectations.
pub fn kernel_btf_has(name: &str) -> bool {
    let Ok(bytes) = fs::read("/sys/kernel/btf/vmlinux") else { return false };
    // BTF names are NUL-terminated strings in the string section.
    let mut needle = vec![0u8];
    needle.extend_from_slice(name.as_bytes());
    needle.push(0);
    bytes.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// The tracer binary: `$TRACER_BIN`, else `target/release/tracer`, else `target/debug/tracer`.
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TRACER_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "TRACER_BIN={} does not exist", p.display());
        return p;
    }
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
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

// ---------------------------------------------------------------------------------------------
// Cross-test lock
// ---------------------------------------------------------------------------------------------

/// A file lock shared by every test process. Normal tests hold it shared; tests that inspect
/// machine-wide state (bpftool listings, huge drop bursts) hold it exclusively, so they never
/// see another test's tracer.
pub struct LabLock {
    _file: File,
}

const LOCK_PATH: &str = "/run/tracer-tests.lock";

fn take_lock(op: libc::c_int) -> LabLock {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(LOCK_PATH)
        .unwrap_or_else(|e| panic!("open {LOCK_PATH}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // SAFETY: valid open fd; LOCK_NB makes this non-blocking.
        let r = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if r == 0 {
            return LabLock { _file: file };
        }
        assert!(Instant::now() < deadline, "could not take {LOCK_PATH} within 300 s");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Shared lock: any number of ordinary tests may run together.
pub fn shared_lock() -> LabLock {
    take_lock(libc::LOCK_SH)
}

/// Exclusive lock: no other lab test runs a tracer meanwhile.
pub fn exclusive_lock() -> LabLock {
    take_lock(libc::LOCK_EX)
}

// ---------------------------------------------------------------------------------------------
// Commands with timeouts
// ---------------------------------------------------------------------------------------------

fn spawn_reader<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

/// Runs `cmd` with piped output; kills it (and panics) if it runs longer than `timeout`.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let out_t = spawn_reader(child.stdout.take());
    let err_t = spawn_reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{desc} did not finish within {timeout:?}");
            }
            Err(e) => panic!("wait {desc}: {e}"),
        }
    };
    let stdout = out_t.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    let stderr = err_t.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    Output { status, stdout, stderr }
}

/// Runs a program with arguments (bounded by [`CMD_TIMEOUT`]).
pub fn cmd(args: &[&str]) -> Output {
    let (prog, rest) = args.split_first().expect("cmd: empty argv");
    run_timeout(Command::new(prog).args(rest), CMD_TIMEOUT)
}

/// Like [`cmd`] but panics with the command's stderr if it fails.
pub fn cmd_ok(args: &[&str]) -> Output {
    let out = cmd(args);
    assert!(
        out.status.success(),
        "command failed ({}): {}\nstdout: {}\nstderr: {}",
        out.status,
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Unique names and addresses
// ---------------------------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A name unique to this process and call: `trt` + pid + counter + role. Kept within 15 bytes
/// (IFNAMSIZ - 1) as long as `role` has at most 3 bytes.
pub fn unique_name(role: &str) -> String {
    let name = format!("trt{}{:x}{}", std::process::id() % 100_000, next_id() % 256, role);
    assert!(name.len() <= 15, "name {name} longer than 15 bytes");
    name
}

/// Four private /24 subnets reserved for one lab, inside 198.18.0.0/15 (RFC 2544 benchmark
/// space, never routed on real networks). Distinct labs of one process never share a block.
#[derive(Clone, Debug)]
pub struct AddrBlock {
    /// Third octet base over 198.18.0.0/15: 0..=511, a multiple of 4.
    base: u32,
}

impl AddrBlock {
    pub fn new() -> Self {
        let idx = (std::process::id().wrapping_mul(7919).wrapping_add(next_id())) % 128;
        AddrBlock { base: idx * 4 }
    }

    /// Host `host` (1..=254) of subnet `subnet` (0..=3) as a dotted address.
    pub fn host(&self, subnet: u32, host: u32) -> String {
        assert!(subnet < 4 && (1..=254).contains(&host));
        let third = self.base + subnet;
        format!("198.{}.{}.{}", 18 + third / 256, third % 256, host)
    }

    /// Network `subnet` (0..=3) as CIDR text, e.g. `198.18.12.0/24`.
    pub fn net(&self, subnet: u32) -> String {
        assert!(subnet < 4);
        let third = self.base + subnet;
        format!("198.{}.{}.0/24", 18 + third / 256, third % 256)
    }
}

impl Default for AddrBlock {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

/// A network namespace created with `ip netns add`; deleted on drop, after killing every
/// process still running inside it (all of them were started by this test).
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates a namespace named [`unique_name`]`(role)` with `lo` up.
    pub fn new(role: &str) -> Netns {
        let name = unique_name(role);
        cmd_ok(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// Path of the namespace's bind mount.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// The namespace inode number (what the kernel reports as the netns id).
    pub fn inode(&self) -> u64 {
        fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()))
            .ino()
    }

    /// `ip netns exec NAME args...`, bounded by [`CMD_TIMEOUT`].
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_timeout(args, CMD_TIMEOUT)
    }

    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        run_timeout(Command::new("ip").args(["netns", "exec", &self.name]).args(args), timeout)
    }

    /// Like [`Netns::exec`] but panics on failure.
    pub fn exec_ok(&self, args: &[&str]) -> Output {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in netns {}: `{}` failed ({}): {}{}",
            self.name,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts a background process inside the namespace (killed on drop of the namespace at the
    /// latest). Output is discarded unless the caller collects it from the returned child.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn in {}: {e}", self.name))
    }

    /// `ip -n NAME args...`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        cmd_ok(&v)
    }

    /// Adds an address (CIDR) to a link.
    pub fn addr(&self, link: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", link]);
    }

    /// Sets a link up.
    pub fn up(&self, link: &str) {
        self.ip(&["link", "set", link, "up"]);
    }

    /// `ip route add args...`
    pub fn route(&self, args: &[&str]) {
        let mut v = vec!["route", "add"];
        v.extend_from_slice(args);
        self.ip(&v);
    }

    /// Sets a sysctl inside the namespace (`net.ipv4.ip_forward`, ...).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }

    /// Creates a bridge `name` in this namespace and sets it up.
    pub fn bridge(&self, name: &str) {
        self.ip(&["link", "add", name, "type", "bridge"]);
        self.up(name);
    }

    /// Attaches `link` to bridge `bridge` and sets it up.
    pub fn enslave(&self, link: &str, bridge: &str) {
        self.ip(&["link", "set", link, "master", bridge]);
        self.up(link);
    }

    /// Runs an iptables front end (`iptables-legacy`, `iptables-nft`, `iptables`) in the namespace.
    pub fn iptables(&self, front_end: &str, rule: &[&str]) {
        let mut v = vec![front_end];
        v.extend_from_slice(rule);
        self.exec_ok(&v);
    }

    /// Pids of processes running inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = cmd(&["ip", "netns", "pids", &self.name]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: plain kill(2) on a pid inside our own namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(50));
        }
        let out = Command::new("ip").args(["netns", "del", &self.name]).output();
        if !matches!(&out, Ok(o) if o.status.success()) {
            eprintln!("warning: could not delete netns {}: {out:?}", self.name);
        }
    }
}

/// Creates a veth pair with one end (`a_name`) in `a` and the other (`b_name`) in `b`, both up.
/// The links are created directly inside the namespaces and die with them.
pub fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) {
    cmd_ok(&[
        "ip", "link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name,
        "netns", &b.name,
    ]);
    a.up(a_name);
    b.up(b_name);
}

// ---------------------------------------------------------------------------------------------
// Ready-made topologies
// ---------------------------------------------------------------------------------------------

/// Two hosts joined by one veth: `a` (`a_ip` on `a_if`) <-> `b` (`b_ip` on `b_if`), one /24.
pub struct PairLab {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
    pub a_ip: String,
    pub b_ip: String,
    pub addrs: AddrBlock,
}

impl PairLab {
    pub fn new() -> PairLab {
        let addrs = AddrBlock::new();
        let a = Netns::new("a");
        let b = Netns::new("b");
        let a_if = unique_name("va");
        let b_if = unique_name("vb");
        veth(&a, &a_if, &b, &b_if);
        let a_ip = addrs.host(0, 1);
        let b_ip = addrs.host(0, 2);
        a.addr(&a_if, &format!("{a_ip}/24"));
        b.addr(&b_if, &format!("{b_ip}/24"));
        PairLab { a, b, a_if, b_if, a_ip, b_ip, addrs }
    }
}

impl Default for PairLab {
    fn default() -> Self {
        Self::new()
    }
}

/// A "node" namespace with a bridge and `n` host namespaces attached to it, all in one /24.
/// The node itself has address `.254` on the bridge.
pub struct BridgeLab {
    pub node: Netns,
    pub bridge: String,
    pub node_ip: String,
    /// (namespace, its interface, its address)
    pub hosts: Vec<(Netns, String, String)>,
    pub addrs: AddrBlock,
}

impl BridgeLab {
    pub fn new(n: u32) -> BridgeLab {
        let addrs = AddrBlock::new();
        let node = Netns::new("n");
        let bridge = unique_name("br");
        node.bridge(&bridge);
        let node_ip = addrs.host(0, 254);
        node.addr(&bridge, &format!("{node_ip}/24"));
        let mut hosts = Vec::new();
        for i in 0..n {
            let ns = Netns::new("h");
            let inner = unique_name("e");
            let outer = unique_name("p");
            veth(&ns, &inner, &node, &outer);
            node.enslave(&outer, &bridge);
            let ip = addrs.host(0, i + 1);
            ns.addr(&inner, &format!("{ip}/24"));
            hosts.push((ns, inner, ip));
        }
        BridgeLab { node, bridge, node_ip, hosts, addrs }
    }
}

/// `a` (subnet 0) <-> `r` (router, forwarding on) <-> `b` (subnet 1). Subnets 2 and 3 of the
/// block are routed nowhere.
pub struct RoutedLab {
    pub a: Netns,
    pub r: Netns,
    pub b: Netns,
    pub a_if: String,
    pub ra_if: String,
    pub rb_if: String,
    pub b_if: String,
    pub a_ip: String,
    pub ra_ip: String,
    pub rb_ip: String,
    pub b_ip: String,
    pub addrs: AddrBlock,
}

impl RoutedLab {
    pub fn new() -> RoutedLab {
        let addrs = AddrBlock::new();
        let a = Netns::new("a");
        let r = Netns::new("r");
        let b = Netns::new("b");
        let (a_if, ra_if, rb_if, b_if) =
            (unique_name("va"), unique_name("ra"), unique_name("rb"), unique_name("vb"));
        veth(&a, &a_if, &r, &ra_if);
        veth(&b, &b_if, &r, &rb_if);
        let (a_ip, ra_ip) = (addrs.host(0, 1), addrs.host(0, 254));
        let (b_ip, rb_ip) = (addrs.host(1, 1), addrs.host(1, 254));
        a.addr(&a_if, &format!("{a_ip}/24"));
        r.addr(&ra_if, &format!("{ra_ip}/24"));
        r.addr(&rb_if, &format!("{rb_ip}/24"));
        b.addr(&b_if, &format!("{b_ip}/24"));
        a.route(&["default", "via", &ra_ip]);
        b.route(&["default", "via", &rb_ip]);
        r.sysctl("net.ipv4.ip_forward", "1");
        RoutedLab { a, r, b, a_if, ra_if, rb_if, b_if, a_ip, ra_ip, rb_ip, b_ip, addrs }
    }
}

impl Default for RoutedLab {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------------------------

const UDP_SENDER: &str = r#"
import socket, sys, time
src, sport, dst, dport, count, size, gap = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, sport))
p = b"x" * size
n = 0
for i in range(count):
    try:
        s.sendto(p, (dst, dport))
        n += 1
    except OSError:
        pass
    if gap > 0:
        time.sleep(gap)
print(n)
"#;

/// A UDP send job: `count` datagrams of `size` payload bytes from `src:sport` to `dst:dport`,
/// `gap` seconds apart.
#[derive(Clone, Debug)]
pub struct Udp<'a> {
    pub src: &'a str,
    pub sport: u16,
    pub dst: &'a str,
    pub dport: u16,
    pub count: u32,
    pub size: u32,
    pub gap: f64,
}

impl<'a> Udp<'a> {
    pub fn new(src: &'a str, sport: u16, dst: &'a str, dport: u16) -> Self {
        Udp { src, sport, dst, dport, count: 3, size: 100, gap: 0.01 }
    }

    /// argv of the sender, for `Netns::exec_timeout` or `Pod::exec_timeout`.
    pub fn argv(&self) -> Vec<String> {
        vec![
            "python3".into(),
            "-c".into(),
            UDP_SENDER.into(),
            self.src.into(),
            self.sport.to_string(),
            self.dst.into(),
            self.dport.to_string(),
            self.count.to_string(),
            self.size.to_string(),
            self.gap.to_string(),
        ]
    }

    /// Sends from inside `ns` and waits (bounded); returns how many sendto calls succeeded.
    pub fn send(&self, ns: &Netns) -> u32 {
        assert!(self.count <= 200_000, "bounded traffic only");
        let argv = self.argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = ns.exec_timeout(&argv, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "udp sender failed in {}: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }

    /// Starts the sender in the background.
    pub fn spawn(&self, ns: &Netns) -> Child {
        assert!(self.count <= 200_000, "bounded traffic only");
        let argv = self.argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        ns.spawn(&argv)
    }
}

/// Waits (bounded) for a background child; kills it on timeout.
pub fn wait_child(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                break;
            }
        }
    }
    child.wait_with_output().expect("wait_with_output")
}

// ---------------------------------------------------------------------------------------------
// The tracer runner
// ---------------------------------------------------------------------------------------------

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
        self.status
            .code()
            .unwrap_or_else(|| panic!("tracer {:?} died from a signal: {}\nstderr:\n{}", self.args, self.status, self.stderr))
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

fn parse_json_lines(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("tracer stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

impl Tracer {
    fn spawn(args: &[&str], paused: bool, env: &[(&str, &str)]) -> Tracer {
        Self::spawn_in(None, args, paused, env)
    }

    /// `netns`: run the tracer inside this namespace (`ip netns exec`, which execs it: the
    /// child is the tracer itself, so signals reach it).
    fn spawn_in(netns: Option<&Netns>, args: &[&str], paused: bool, env: &[(&str, &str)]) -> Tracer {
        let bin = tracer_bin();
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
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
                        Ok(_) => lines
                            .lock()
                            .expect("lines lock")
                            .push(line.trim_end_matches('\n').to_string()),
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
        Tracer {
            child: Some(child),
            args: args.iter().map(|s| s.to_string()).collect(),
            lines,
            stderr,
            paused,
            readers,
        }
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
        Self::start_spawned(Self::spawn_in(Some(netns), args, false, &[]), args)
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
                panic!(
                    "tracer {:?} exited ({}) before printing `attached`\nstderr:\n{}",
                    run.args, run.status, run.stderr
                );
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

    fn finish(&mut self, status: ExitStatus) -> TracerRun {
        self.paused.store(false, Ordering::Relaxed);
        self.child = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        TracerRun {
            args: self.args.clone(),
            lines: std::mem::take(&mut *self.lines.lock().expect("lines lock")),
            stderr: self.stderr(),
            status,
        }
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

// ---------------------------------------------------------------------------------------------
// Event checks
// ---------------------------------------------------------------------------------------------

/// Parses `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (exactly nine fraction digits) to Unix nanoseconds.
pub fn parse_rfc3339_nanos(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() != 30 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':'
        || b[19] != b'.' || b[29] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i128> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se, ns) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..29)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000_000) + ns)
}

/// Wall clock now in Unix nanoseconds.
pub fn now_nanos() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

fn is_nullable_string(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(|s| !s.is_empty())
}

/// Checks the fields every event has (CONTRACT "JSON event"), and that `ts` lies within
/// [`window`] (Unix nanoseconds, with 5 s of slack each side).
pub fn check_common(ev: &Value, window: (i128, i128)) {
    let ctx = || format!("event {ev}");
    let obj = ev.as_object().unwrap_or_else(|| panic!("{} is not an object", ctx()));
    for k in ["ts", "kind", "proto", "src", "dst", "src_pod", "dst_pod", "netns", "ifname"] {
        assert!(obj.contains_key(k), "{}: missing field {k:?}", ctx());
    }
    let ts = ev["ts"].as_str().unwrap_or_else(|| panic!("{}: ts not a string", ctx()));
    let t = parse_rfc3339_nanos(ts)
        .unwrap_or_else(|| panic!("{}: ts {ts:?} is not RFC 3339 UTC with nanoseconds (..SS.nnnnnnnnnZ)", ctx()));
    let slack = 5_000_000_000;
    assert!(
        t >= window.0 - slack && t <= window.1 + slack,
        "{}: ts {ts} is outside the test's run window (clock conversion wrong?)",
        ctx()
    );
    let kind = ev["kind"].as_str().unwrap_or_default();
    assert!(
        ["drop", "retransmit", "reset", "connect_fail", "nat", "mtu"].contains(&kind),
        "{}: bad kind",
        ctx()
    );
    let proto = ev["proto"].as_str().map(str::to_string).or_else(|| ev["proto"].as_u64().map(|n| n.to_string()));
    let proto = proto.unwrap_or_else(|| panic!("{}: proto is neither string nor number", ctx()));
    assert!(!proto.is_empty() && proto == proto.to_lowercase(), "{}: proto must be lower case", ctx());
    for k in ["src", "dst"] {
        assert!(ev[k].as_str().is_some_and(|s| !s.is_empty()), "{}: {k} not a non-empty string", ctx());
    }
    for k in ["src_pod", "dst_pod", "ifname"] {
        assert!(is_nullable_string(&ev[k]), "{}: {k} must be a non-empty string or null", ctx());
    }
    for k in ["src_pod", "dst_pod"] {
        if let Some(p) = ev[k].as_str() {
            assert!(p.split('/').count() == 2, "{}: {k} must be namespace/name", ctx());
        }
    }
    assert!(ev["netns"].is_null() || ev["netns"].is_u64(), "{}: netns must be an integer or null", ctx());
}

/// Checks a `kind: drop` event: common fields plus reason, location (`symbol+0xOFF`), len.
pub fn check_drop(ev: &Value, window: (i128, i128)) {
    check_common(ev, window);
    assert_eq!(ev["kind"], "drop", "event {ev}: kind");
    let reason = ev["reason"].as_str().unwrap_or_else(|| panic!("event {ev}: reason not a string"));
    assert!(
        !reason.is_empty()
            && !reason.starts_with("SKB_DROP_REASON_")
            && reason.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'),
        "event {ev}: reason must be the bare enum name"
    );
    let loc = ev["location"].as_str().unwrap_or_else(|| panic!("event {ev}: location not a string"));
    assert!(is_symbol_offset(loc), "event {ev}: location {loc:?} is not symbol+0xOFFSET");
    assert!(ev["len"].is_u64(), "event {ev}: len must be an unsigned integer");
}

/// `sym+0xhex` optionally followed by `/0xhex` (the size, as tracefs prints it).
pub fn is_symbol_offset(loc: &str) -> bool {
    let Some((sym, off)) = loc.split_once('+') else { return false };
    let hex = |h: &str| h.strip_prefix("0x").is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_hexdigit()));
    let off_ok = match off.split_once('/') {
        Some((o, size)) => hex(o) && hex(size),
        None => hex(off),
    };
    !sym.is_empty()
        && sym.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'[' || c == b']' || c == b' ')
        && off_ok
}

/// `sym+0xoff` without a `/size` suffix.
pub fn strip_size(loc: &str) -> &str {
    loc.split('/').next().unwrap_or(loc)
}

/// Events whose `src` and `dst` are exactly these strings.
pub fn with_flow<'a>(events: &'a [Value], src: &str, dst: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["src"] == src && e["dst"] == dst).collect()
}

// ---------------------------------------------------------------------------------------------
// What the kernel itself reports: private tracefs instances
// ---------------------------------------------------------------------------------------------

/// One `skb:kfree_skb` record from tracefs, as the kernel printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDrop {
    /// `sym+0xoff` (size stripped) on kernels that print `%pS`, else what the kernel printed.
    pub location: String,
    pub reason: String,
    pub protocol: u32,
}

/// Text symbols of /proc/kallsyms, to name a raw address the way the kernel's `%pS` does
/// (`sym+0xoff`). The tests' own reading, on purpose independent of the tracer's.
pub struct KernelSymbols {
    /// (address, name) sorted by address; only code (t/T/w/W), so data never captures code.
    text: Vec<(u64, String)>,
}

impl KernelSymbols {
    pub fn load() -> KernelSymbols {
        let raw = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let mut text: Vec<(u64, String)> = raw
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (addr, kind, name) = (w.next()?, w.next()?, w.next()?);
                let addr = u64::from_str_radix(addr, 16).ok().filter(|a| *a != 0)?;
                ["t", "T", "w", "W"].contains(&kind).then(|| (addr, name.to_string()))
            })
            .collect();
        text.sort();
        KernelSymbols { text }
    }

    /// False when kptr_restrict hides the addresses from this process.
    pub fn has_addresses(&self) -> bool {
        !self.text.is_empty()
    }

    /// `sym+0xoff` of the nearest symbol at or below `addr`.
    pub fn name(&self, addr: u64) -> Option<String> {
        let i = self.text.partition_point(|(a, _)| *a <= addr).checked_sub(1)?;
        let (start, name) = &self.text[i];
        Some(format!("{name}+{:#x}", addr - start))
    }
}

/// The mounted tracefs. A fresh machine has none mounted, and a test must not depend on an
/// earlier test (or tracer) having mounted it: this mounts it at the standard place when
/// needed, as tracer itself does, and fails loudly when it cannot.
pub fn tracefs_root() -> PathBuf {
    let mounted = || {
        ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].into_iter().map(PathBuf::from).find(|p| p.join("instances").is_dir())
    };
    if let Some(root) = mounted() {
        return root;
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .status()
        .expect("run mount -t tracefs");
    assert!(status.success(), "tracefs is not mounted and `mount -t tracefs nodev /sys/kernel/tracing` failed: {status}");
    mounted().expect("tracefs mounted at /sys/kernel/tracing, yet it has no instances/ directory")
}

/// How this kernel's `skb:kfree_skb` output gives the drop location. Decided from the event's
/// own `print fmt` and the instance options tracefs offers, never from the kernel version.
enum LocationSource {
    /// `location=%pS` (6.12, 6.18): the kernel prints `sym+0xoff/0xsize` itself.
    Symbolic,
    /// `location=%p` (6.1): the default output is a hashed pointer, useless for comparison.
    /// Instances with the `hash-ptr` option off print the real address, which /proc/kallsyms
    /// names. 6.1 also loses the `%s` reason text in such an instance, so every reason gets its
    /// own instance, filtered in the kernel on the reason's number.
    Addresses { symbols: KernelSymbols, by_reason: Vec<(String, TraceInstance)> },
    /// The location cannot be had on this kernel; the text says why.
    Unavailable(String),
}

/// A private tracefs instance with `skb:kfree_skb` enabled (non-overwriting buffer, so the first
/// records survive a later burst). Disabled and removed on drop.
struct TraceInstance {
    dir: PathBuf,
}

impl TraceInstance {
    /// `filter`: a tracefs event filter; `real_addresses`: turn `hash-ptr` off (the option must
    /// exist: the caller checked).
    fn new(root: &Path, filter: Option<&str>, real_addresses: bool) -> TraceInstance {
        let dir = root.join("instances").join(unique_name("kl"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let inst = TraceInstance { dir };
        let _ = fs::write(inst.dir.join("options/overwrite"), "0");
        if real_addresses {
            fs::write(inst.dir.join("options/hash-ptr"), "0").expect("turn hash-ptr off in a tracefs instance");
        }
        if let Some(f) = filter {
            fs::write(inst.dir.join("events/skb/kfree_skb/filter"), f)
                .unwrap_or_else(|e| panic!("tracefs filter {f:?} on skb:kfree_skb: {e}"));
        }
        fs::write(inst.dir.join("events/skb/kfree_skb/enable"), "1").expect("enable skb:kfree_skb");
        inst
    }

    /// The `field=value` words and the `reason: NAME` tail of each record.
    fn records(&self) -> Vec<(Vec<(String, String)>, String)> {
        let text = fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains("kfree_skb:"))
            .map(|l| {
                let fields = l
                    .split_whitespace()
                    .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                    .collect();
                let reason = l.rsplit_once("reason:").map(|(_, r)| r.trim().to_string()).unwrap_or_default();
                (fields, reason)
            })
            .collect()
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("events/skb/kfree_skb/enable"), "0");
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove tracefs instance {}", self.dir.display());
    }
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `{ 2, "NO_SOCKET" }` pairs of the `__print_symbolic(REC->reason, ...)` in a print fmt: the
/// kernel's own reason numbers, for tracefs filters.
pub fn print_symbolic_values(print_fmt: &str, field: &str) -> BTreeMap<String, u64> {
    let Some((_, rest)) = print_fmt.split_once(&format!("__print_symbolic(REC->{field},")) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for pair in rest.split('{').skip(1) {
        let Some((body, _)) = pair.split_once('}') else { break };
        let Some((num, name)) = body.split_once(',') else { continue };
        let num = num.trim();
        let value = match num.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => num.parse().ok(),
        };
        if let Some(v) = value {
            out.insert(name.trim().trim_matches('"').to_string(), v);
        }
    }
    out
}

/// What the kernel itself reports for `skb:kfree_skb` while a test runs: reasons from one
/// instance with the default output, and drop locations from the best source this kernel offers
/// (see [`LocationSource`]). Create it before causing the drops, naming every reason whose
/// locations the test will ask for.
pub struct KernelDropLog {
    all: TraceInstance,
    locations: LocationSource,
}

impl KernelDropLog {
    pub fn new(reasons: &[&str]) -> KernelDropLog {
        let root = tracefs_root();
        let format = fs::read_to_string(root.join("events/skb/kfree_skb/format")).expect("skb:kfree_skb format");
        let print_fmt = format.lines().find_map(|l| l.strip_prefix("print fmt:")).unwrap_or_default().to_string();
        let locations = if print_fmt.contains("location=%pS") {
            LocationSource::Symbolic
        } else if !print_fmt.contains("location=%p") {
            LocationSource::Unavailable(format!("skb:kfree_skb prints no location=%p: {print_fmt:.80}"))
        } else if !root.join("options/hash-ptr").exists() {
            LocationSource::Unavailable("tracefs prints location as a hashed %p and has no hash-ptr option".into())
        } else {
            let symbols = KernelSymbols::load();
            if !symbols.has_addresses() {
                LocationSource::Unavailable("/proc/kallsyms hides addresses (kptr_restrict)".into())
            } else {
                let values = print_symbolic_values(&print_fmt, "reason");
                let by_reason = reasons
                    .iter()
                    .map(|r| {
                        let v = values.get(*r).unwrap_or_else(|| panic!("skb:kfree_skb print fmt has no reason {r}"));
                        let filter = format!("reason == {v} && protocol == {ETH_P_IP}");
                        (r.to_string(), TraceInstance::new(&root, Some(&filter), true))
                    })
                    .collect();
                LocationSource::Addresses { symbols, by_reason }
            }
        };
        KernelDropLog { all: TraceInstance::new(&root, None, false), locations }
    }

    /// All IPv4/IPv6 records so far, from the instance with the kernel's default output.
    pub fn drops(&self) -> Vec<KernelDrop> {
        self.all
            .records()
            .into_iter()
            .filter_map(|(fields, reason)| {
                Some(KernelDrop {
                    location: strip_size(field(&fields, "location")?).to_string(),
                    reason,
                    protocol: field(&fields, "protocol")?.parse().ok()?,
                })
            })
            .collect()
    }

    /// How many IPv4 drops with `reason` the kernel reported.
    pub fn ipv4_count(&self, reason: &str) -> usize {
        self.drops().iter().filter(|d| d.reason == reason && d.protocol == ETH_P_IP).count()
    }

    /// Distinct `sym+0xoff` locations the kernel reported for IPv4 drops with `reason`, or why
    /// this kernel cannot tell them.
    pub fn ipv4_locations(&self, reason: &str) -> Result<BTreeSet<String>, String> {
        match &self.locations {
            LocationSource::Symbolic => Ok(self
                .drops()
                .into_iter()
                .filter(|d| d.reason == reason && d.protocol == ETH_P_IP)
                .map(|d| d.location)
                .collect()),
            LocationSource::Addresses { symbols, by_reason } => {
                let (_, inst) = by_reason
                    .iter()
                    .find(|(r, _)| r == reason)
                    .unwrap_or_else(|| panic!("KernelDropLog::new was not asked for reason {reason}"));
                Ok(inst
                    .records()
                    .iter()
                    .filter_map(|(fields, _)| {
                        let addr = u64::from_str_radix(field(fields, "location")?, 16).ok()?;
                        Some(symbols.name(addr).unwrap_or_else(|| format!("{addr:#x}")))
                    })
                    .collect())
            }
            LocationSource::Unavailable(why) => Err(why.clone()),
        }
    }
}

/// The EtherType of IPv4 as `skb:kfree_skb` prints `protocol`.
const ETH_P_IP: u32 = 0x0800;

/// Functions that free a packet an nftables rule dropped. Newer kernels free it inside
/// `nft_do_chain` (NF_DROP_REASON, with the reason set there); older ones (6.1) return NF_DROP
/// and `nf_hook_slow` frees it. Which one a kernel uses is read from its own report.
pub const NFT_DROP_FUNCTIONS: &[&str] = &[NFT_FREES_IN_CHAIN, NFT_FREES_AT_HOOK];
pub const NFT_FREES_IN_CHAIN: &str = "nft_do_chain";
pub const NFT_FREES_AT_HOOK: &str = "nf_hook_slow";

// ---------------------------------------------------------------------------------------------
// bpftool snapshots
// ---------------------------------------------------------------------------------------------

/// A loaded BPF program.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BpfProg {
    pub id: u64,
    pub name: String,
    pub kind: String,
}

/// A BPF link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BpfLink {
    pub id: u64,
    pub prog_id: u64,
    pub kind: String,
}

fn bpftool_json(args: &[&str]) -> Value {
    let mut v = vec!["bpftool", "-j"];
    v.extend_from_slice(args);
    let out = cmd_ok(&v);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: bad JSON: {e}"))
}

/// `bpftool prog show`.
pub fn bpf_progs() -> Vec<BpfProg> {
    bpftool_json(&["prog", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| BpfProg {
            id: p["id"].as_u64().unwrap_or(0),
            name: p["name"].as_str().unwrap_or("").to_string(),
            kind: p["type"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// `bpftool link show`.
pub fn bpf_links() -> Vec<BpfLink> {
    bpftool_json(&["link", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|l| BpfLink {
            id: l["id"].as_u64().unwrap_or(0),
            prog_id: l["prog_id"].as_u64().unwrap_or(0),
            kind: l["type"].as_str().unwrap_or("").to_string(),
        })
        .collect()
}

/// Programs whose name starts with any of `prefixes`.
pub fn bpf_progs_named(prefixes: &[&str]) -> Vec<BpfProg> {
    bpf_progs().into_iter().filter(|p| prefixes.iter().any(|x| p.name.starts_with(x))).collect()
}

// =============================================================================================
// retrans helpers
// =============================================================================================
// Helpers for tests/tests/retrans.rs (`tracer retrans`): TCP traffic (a sink, a sender, a timed
// connect), what the kernel itself reports for its TCP tracepoints (a private tracefs instance),
// checks of retrans/reset/connect_fail events, and parsers of the per-flow tables (`--top`
// snapshots and the `=== summary` table).

/// Listens on `ip` (IPv4 or IPv6) and every port given after it, prints `listening` once all listen, then
/// serves one connection per port: reads a 16-byte decimal length, then that many bytes, answers
/// `ok <bytes read>`, and waits (bounded) for the client to close first, so the client's socket
/// never sees a FIN before all its data was acknowledged.
pub const TCP_SINK: &str = r#"
import socket, sys, threading
ip, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
listeners = []
for port in ports:
    l = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((ip, port))
    l.listen(8)
    l.settimeout(60)
    listeners.append(l)
def serve(l):
    try:
        c, _ = l.accept()
        c.settimeout(60)
        head = b""
        while len(head) < 16:
            d = c.recv(16 - len(head))
            if not d:
                return
            head += d
        want, got = int(head.decode().strip()), 0
        while got < want:
            d = c.recv(1 << 16)
            if not d:
                break
            got += len(d)
        c.sendall(b"ok %d\n" % got)
        c.recv(1)
        c.close()
    except OSError:
        pass
threads = [threading.Thread(target=serve, args=(l,)) for l in listeners]
for t in threads:
    t.start()
print("listening", flush=True)
for t in threads:
    t.join()
"#;

/// Connects from `src:sport` to `dst:dport` (IPv4 or IPv6), sends a 16-byte length and `bytes` bytes, waits for
/// the sink's `ok N`, closes; prints `ok N SECONDS` or `error ...`. Bounded by `timeout` per
/// socket operation.
pub const TCP_SEND: &str = r#"
import socket, sys, time
src, sport, dst, dport, size, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, sport))
s.settimeout(timeout)
t = time.time()
try:
    s.connect((dst, dport))
    s.sendall(b"%15d\n" % size)
    chunk = b"x" * (1 << 16)
    left = size
    while left > 0:
        n = min(left, len(chunk))
        s.sendall(chunk[:n])
        left -= n
    r = b""
    while not r.endswith(b"\n"):
        d = s.recv(64)
        if not d:
            break
        r += d
    s.close()
    print("%s %.3f" % (r.decode().strip(), time.time() - t))
except OSError as e:
    # socket.timeout is TimeoutError: it also catches the kernel's ETIMEDOUT, which has an errno.
    print("error %d" % e.errno if e.errno else "error timeout")
"#;

/// argv of [`TCP_SEND`], for `Netns::spawn`/`exec_timeout` or `Pod::spawn`/`exec_timeout`.
pub fn tcp_send_argv(src: &str, sport: u16, dst: &str, dport: u16, bytes: u64, timeout: f64) -> Vec<String> {
    assert!(bytes <= 64 << 20, "bounded traffic only");
    vec![
        "python3".into(),
        "-c".into(),
        TCP_SEND.into(),
        src.into(),
        sport.to_string(),
        dst.into(),
        dport.to_string(),
        bytes.to_string(),
        timeout.to_string(),
    ]
}

/// `Vec<String>` argv as `Vec<&str>`.
pub fn argv_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A running [`TCP_SINK`]; killed on drop.
pub struct TcpSink {
    _process: Announced,
}

impl TcpSink {
    /// Starts the sink through `spawn` (e.g. `|a| ns.spawn(a)` or `|a| pod.spawn(a)`) and waits
    /// (up to 10 s) until it prints `listening`; killed on drop.
    pub fn start(spawn: impl FnOnce(&[&str]) -> Child, ip: &str, ports: &[u16]) -> TcpSink {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut argv = vec!["python3", "-c", TCP_SINK, ip];
        argv.extend(ports.iter().map(String::as_str));
        let what = format!("TCP sink on {ip} {ports:?}");
        TcpSink { _process: Announced::start(spawn, &argv, "listening", &what) }
    }
}

/// Appends an iptables-legacy rule (`-A INPUT ...`) through `exec` (a `Netns::exec_ok` or
/// `Pod::exec_ok`) that drops every `every`-th TCP segment of at least 1000 bytes to `dport`:
/// data segments only, never a SYN, a pure ACK or a FIN, so only the sender's data is
/// retransmitted, and deterministically (statistic `nth`, not random).
pub fn lossy_input_rule(dport: u16, every: u32) -> Vec<String> {
    [
        "iptables-legacy", "-A", "INPUT", "-p", "tcp", "--dport", &dport.to_string(), "-m", "length", "--length",
        "1000:65535", "-m", "statistic", "--mode", "nth", "--every", &every.to_string(), "--packet", "0", "-j", "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// TCP state names as the tracer prints them (the kernel's `TCP_*` without the prefix).
pub const TCP_STATE_NAMES: &[&str] = &[
    "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK",
    "LISTEN", "CLOSING", "NEW_SYN_RECV", "BOUND_INACTIVE",
];

/// `IP:PORT` (or `[IPv6]:PORT`) with a non-zero port.
pub fn is_ip_port(s: &str) -> bool {
    let Some((ip, port)) = s.rsplit_once(':') else { return false };
    let ip = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
    ip.parse::<std::net::IpAddr>().is_ok() && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// Checks a `retransmit`, `reset` or `connect_fail` event: the common fields (see
/// [`check_common`]), `proto` "tcp", both ends `IP:PORT`, `netns` and `netns_pod` present,
/// `ifname` null, and the kind's own fields: retransmit `state` and `count` >= 1; reset
/// `direction` sent|received and `state` (a name, or null where the kernel had no socket);
/// connect_fail `state` and `duration_ms` >= 0.
pub fn check_tcp_event(ev: &Value, window: (i128, i128)) {
    check_common(ev, window);
    let kind = ev["kind"].as_str().unwrap_or_default();
    assert!(["retransmit", "reset", "connect_fail"].contains(&kind), "event {ev}: not a retrans kind");
    assert_eq!(ev["proto"], "tcp", "event {ev}: proto");
    for k in ["src", "dst"] {
        let v = ev[k].as_str().unwrap_or_default();
        assert!(is_ip_port(v), "event {ev}: {k} {v:?} is not IP:PORT");
    }
    let obj = ev.as_object().expect("object");
    assert!(obj.contains_key("netns_pod"), "event {ev}: missing netns_pod");
    assert!(
        ev["netns_pod"].is_null() || ev["netns_pod"].as_str().is_some_and(|p| p.split('/').count() == 2),
        "event {ev}: netns_pod must be namespace/name or null"
    );
    assert!(ev["ifname"].is_null(), "event {ev}: ifname must be null for TCP socket events");
    let state_ok = |v: &Value| v.as_str().is_some_and(|s| TCP_STATE_NAMES.contains(&s));
    match kind {
        "retransmit" => {
            assert!(state_ok(&ev["state"]), "event {ev}: state must be one of {TCP_STATE_NAMES:?}");
            assert!(ev["count"].as_u64().is_some_and(|c| c >= 1), "event {ev}: count must be an integer >= 1");
            assert!(ev["netns"].is_u64(), "event {ev}: netns must be the socket's namespace inode");
        }
        "reset" => {
            let d = ev["direction"].as_str().unwrap_or_default();
            assert!(d == "sent" || d == "received", "event {ev}: direction must be sent or received");
            assert!(obj.contains_key("state"), "event {ev}: missing state");
            assert!(ev["state"].is_null() || state_ok(&ev["state"]), "event {ev}: state must be a TCP state name or null");
            if d == "received" {
                assert!(ev["netns"].is_u64(), "event {ev}: netns must be the socket's namespace inode");
            }
        }
        _ => {
            assert!(state_ok(&ev["state"]), "event {ev}: state must be one of {TCP_STATE_NAMES:?}");
            assert!(ev["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "event {ev}: duration_ms must be a number >= 0");
            assert!(ev["netns"].is_u64(), "event {ev}: netns must be the socket's namespace inode");
        }
    }
}

/// Events of `kind` whose `src`/`dst` are exactly these.
pub fn tcp_events<'a>(events: &'a [Value], kind: &str, src: &str, dst: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind && e["src"] == src && e["dst"] == dst).collect()
}

/// Number of `retransmit` events per (src, dst).
pub fn retransmits_by_flow(events: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == "retransmit") {
        let key = (e["src"].as_str().unwrap_or("").to_string(), e["dst"].as_str().unwrap_or("").to_string());
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// One record of a TCP tracepoint in tracefs.
#[derive(Clone, Debug)]
pub struct KernelTcpRecord {
    /// `tcp_retransmit_skb`, `tcp_retransmit_synack`, `tcp_send_reset`, `tcp_receive_reset`,
    /// `inet_sock_set_state`.
    pub event: String,
    /// Trace clock seconds.
    pub time: f64,
    /// Every `key=value` word.
    pub fields: BTreeMap<String, String>,
}

impl KernelTcpRecord {
    fn field(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }

    /// (src, dst) as `IP:PORT`, in the event's own direction (for `tcp_send_reset`, the RST's:
    /// the kernel reverses the incoming segment's tuple when it has no socket). 6.10+ prints
    /// `tcp_send_reset` as `src=IP:PORT dest=IP:PORT`, older kernels like the other events.
    pub fn flow(&self) -> (String, String) {
        if self.fields.contains_key("src") && self.fields.contains_key("dest") {
            return (self.field("src").to_string(), self.field("dest").to_string());
        }
        (
            format!("{}:{}", self.field("saddr"), self.field("sport")),
            format!("{}:{}", self.field("daddr"), self.field("dport")),
        )
    }

    /// The `state=` word without its `TCP_` prefix (`UNKNOWN` stays as it is).
    pub fn state(&self) -> String {
        self.field("state").trim_start_matches("TCP_").to_string()
    }
}

/// What the kernel itself reports through its TCP tracepoints while a test runs: a private
/// tracefs instance (non-overwriting) with tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack,
/// tcp:tcp_send_reset, tcp:tcp_receive_reset and sock:inet_sock_set_state enabled. Tracepoints
/// that this kernel lacks are left out (see [`KernelTcpLog::missing`]). Removed on drop.
pub struct KernelTcpLog {
    dir: PathBuf,
    enabled: Vec<String>,
    pub missing: Vec<String>,
}

const KERNEL_TCP_EVENTS: &[&str] = &[
    "tcp/tcp_retransmit_skb",
    "tcp/tcp_retransmit_synack",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
    "sock/inet_sock_set_state",
];

impl KernelTcpLog {
    pub fn new() -> KernelTcpLog {
        let root = tracefs_root();
        let dir = root.join("instances").join(unique_name("kt"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut log = KernelTcpLog { dir, enabled: Vec::new(), missing: Vec::new() };
        let _ = fs::write(log.dir.join("options/overwrite"), "0");
        let _ = fs::write(log.dir.join("buffer_size_kb"), "4096");
        for ev in KERNEL_TCP_EVENTS {
            let enable = log.dir.join("events").join(ev).join("enable");
            if enable.exists() {
                fs::write(&enable, "1").unwrap_or_else(|e| panic!("enable {ev}: {e}"));
                log.enabled.push(ev.to_string());
            } else {
                log.missing.push(ev.to_string());
            }
        }
        log
    }

    /// Every record so far (of every namespace on the machine: filter by flow).
    pub fn records(&self) -> Vec<KernelTcpRecord> {
        let text = fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let i = words.iter().position(|w| {
                    w.ends_with(':') && KERNEL_TCP_EVENTS.iter().any(|e| e.ends_with(&format!("/{}", w.trim_end_matches(':'))))
                })?;
                let time = words.get(i.checked_sub(1)?)?.trim_end_matches(':').parse().ok()?;
                let fields = words[i + 1..]
                    .iter()
                    .filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                    .collect();
                Some(KernelTcpRecord { event: words[i].trim_end_matches(':').to_string(), time, fields })
            })
            .collect()
    }

    /// Records of `event` for exactly this flow (in the record's own direction, see
    /// [`KernelTcpRecord::flow`]).
    pub fn of(&self, event: &str, src: &str, dst: &str) -> Vec<KernelTcpRecord> {
        self.records()
            .into_iter()
            .filter(|r| r.event == event && r.flow() == (src.to_string(), dst.to_string()))
            .collect()
    }

    /// How many times the kernel retransmitted from `src` to `dst` (tcp_retransmit_skb and
    /// tcp_retransmit_synack together).
    pub fn retransmits(&self, src: &str, dst: &str) -> usize {
        self.of("tcp_retransmit_skb", src, dst).len() + self.of("tcp_retransmit_synack", src, dst).len()
    }
}

impl Default for KernelTcpLog {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KernelTcpLog {
    fn drop(&mut self) {
        for ev in &self.enabled {
            let _ = fs::write(self.dir.join("events").join(ev).join("enable"), "0");
        }
        for _ in 0..50 {
            if fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove tracefs instance {}", self.dir.display());
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (any number of fraction digits up to 9) to Unix
/// nanoseconds.
pub fn parse_rfc3339_utc(s: &str) -> Option<i128> {
    let body = s.strip_suffix('Z')?;
    let (secs, frac) = match body.split_once('.') {
        Some((a, f)) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) => (a, f.to_string()),
        Some(_) => return None,
        None => (body, String::new()),
    };
    parse_rfc3339_nanos(&format!("{secs}.{frac:0<9}Z"))
}

/// One row of a per-flow table (`--top` snapshot or `=== summary`): the eight columns
/// `SRC DST SRC_POD DST_POD RETRANS RESETS STATE LAST_SEEN` (pods `-` when unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRow {
    pub src: String,
    pub dst: String,
    pub src_pod: String,
    pub dst_pod: String,
    pub retransmits: u64,
    pub resets: u64,
    pub state: String,
    pub last_seen: String,
}

/// One per-flow table: its title (`=== TS  N flows` or `=== summary TS  N flows`) and rows.
#[derive(Clone, Debug)]
pub struct FlowTable {
    pub title: String,
    pub ts_nanos: i128,
    pub is_summary: bool,
    pub rows: Vec<FlowRow>,
}

impl FlowTable {
    /// The row of (src, dst), if any (panics if there are two).
    pub fn row(&self, src: &str, dst: &str) -> Option<&FlowRow> {
        let rows: Vec<&FlowRow> = self.rows.iter().filter(|r| r.src == src && r.dst == dst).collect();
        assert!(rows.len() <= 1, "table {:?} has {} rows for {src} -> {dst}: {rows:?}", self.title, rows.len());
        rows.first().copied()
    }
}

/// Parses a table title: (is_summary, ts nanos, N). `N flows` (or `1 flow`).
pub fn parse_flow_table_title(line: &str) -> Option<(bool, i128, usize)> {
    let rest = line.strip_prefix("=== ")?;
    let (summary, rest) = match rest.strip_prefix("summary ") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    let [ts, n, what] = words[..] else { return None };
    let n: usize = n.parse().ok()?;
    if !(what == "flows" || (what == "flow" && n == 1)) {
        return None;
    }
    Some((summary, parse_rfc3339_utc(ts)?, n))
}

/// Parses one 8-column row.
pub fn parse_flow_row(line: &str) -> Option<FlowRow> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let [src, dst, src_pod, dst_pod, retrans, resets, state, last_seen] = w[..] else { return None };
    Some(FlowRow {
        src: src.into(),
        dst: dst.into(),
        src_pod: src_pod.into(),
        dst_pod: dst_pod.into(),
        retransmits: retrans.parse().ok()?,
        resets: resets.parse().ok()?,
        state: state.into(),
        last_seen: last_seen.into(),
    })
}

/// Parses the table whose title is `lines[i]`: title, a header starting with `SOURCE`, then
/// exactly N rows. Returns the table and the index after it; panics naming the bad line.
pub fn parse_flow_table_at(lines: &[&str], i: usize) -> (FlowTable, usize) {
    let ctx = || lines.join("\n");
    let (is_summary, ts_nanos, n) = parse_flow_table_title(lines[i]).unwrap_or_else(|| {
        panic!("line {:?} is not a table title `=== [summary ]<RFC3339 UTC>  <N> flows`; all:\n{}", lines[i], ctx())
    });
    let header = lines.get(i + 1).copied().unwrap_or_default();
    assert!(header.starts_with("SOURCE"), "after title {:?}: want a header starting with SOURCE, got {header:?}; all:\n{}", lines[i], ctx());
    let mut rows = Vec::new();
    for k in 0..n {
        let l = lines.get(i + 2 + k).copied().unwrap_or_default();
        let row = parse_flow_row(l).unwrap_or_else(|| {
            panic!(
                "table {:?} promises {n} rows; row {k} {l:?} is not `SRC DST SRC_POD DST_POD RETRANS RESETS STATE LAST_SEEN`; all:\n{}",
                lines[i],
                ctx()
            )
        });
        rows.push(row);
    }
    (FlowTable { title: lines[i].to_string(), ts_nanos, is_summary, rows }, i + 2 + n)
}

/// The `--top` text output: nothing but tables (blank lines between them allowed).
pub fn parse_top_text(lines: &[String]) -> Vec<FlowTable> {
    let lines: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let (t, next) = parse_flow_table_at(&lines, i);
        out.push(t);
        i = next;
    }
    out
}

/// The last `=== summary` table among other output (stream stdout, or stderr in JSON mode).
pub fn find_summary_table(lines: &[&str]) -> Option<FlowTable> {
    let lines: Vec<&str> = lines.iter().map(|l| l.trim_end()).collect();
    let i = lines.iter().rposition(|l| l.starts_with("=== summary"))?;
    Some(parse_flow_table_at(&lines, i).0)
}

/// The `--top -o json` output: one object per line,
/// `{"snapshot": TS, "final": BOOL, "flows": [{"src","dst","src_pod","dst_pod","retransmits","resets","state","last_seen"}]}`;
/// pods null become `-` as in the text table.
pub fn parse_top_json(lines: &[String]) -> Vec<FlowTable> {
    parse_json_lines(lines)
        .iter()
        .map(|o| {
            let ts = o["snapshot"].as_str().unwrap_or_else(|| panic!("top JSON {o}: snapshot must be a timestamp string"));
            let ts_nanos = parse_rfc3339_utc(ts).unwrap_or_else(|| panic!("top JSON {o}: snapshot {ts:?} is not RFC 3339 UTC"));
            let is_summary = o["final"].as_bool().unwrap_or_else(|| panic!("top JSON {o}: final must be a bool"));
            let flows = o["flows"].as_array().unwrap_or_else(|| panic!("top JSON {o}: flows must be an array"));
            let rows = flows
                .iter()
                .map(|f| {
                    let s = |k: &str| f[k].as_str().unwrap_or_else(|| panic!("top JSON flow {f}: {k} must be a string")).to_string();
                    let pod = |k: &str| match &f[k] {
                        Value::Null => "-".to_string(),
                        Value::String(p) if p.split('/').count() == 2 => p.clone(),
                        v => panic!("top JSON flow {f}: {k} must be namespace/name or null, got {v}"),
                    };
                    let n = |k: &str| f[k].as_u64().unwrap_or_else(|| panic!("top JSON flow {f}: {k} must be an unsigned integer"));
                    FlowRow {
                        src: s("src"),
                        dst: s("dst"),
                        src_pod: pod("src_pod"),
                        dst_pod: pod("dst_pod"),
                        retransmits: n("retransmits"),
                        resets: n("resets"),
                        state: s("state"),
                        last_seen: s("last_seen"),
                    }
                })
                .collect();
            FlowTable { title: format!("json snapshot {ts}"), ts_nanos, is_summary, rows }
        })
        .collect()
}

/// Ids of the BPF programs process `pid` holds open (program and link file descriptors name
/// them as `prog_id:` in /proc/PID/fdinfo). Empty once the process is gone.
pub fn bpf_prog_ids_of_pid(pid: i32) -> BTreeSet<u64> {
    let dir = PathBuf::from(format!("/proc/{pid}/fdinfo"));
    let Ok(entries) = fs::read_dir(&dir) else { return BTreeSet::new() };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .flat_map(|info| {
            info.lines()
                .filter_map(|l| l.strip_prefix("prog_id:").and_then(|v| v.trim().parse::<u64>().ok()))
                .collect::<Vec<_>>()
        })
        .collect()
}

// =============================================================================================
// nat helpers
// =============================================================================================
// Helpers for tests/tests/nat.rs, general enough for any test: a background server that
// announces with its first line that it serves, and a bounded wait until a tracer's BPF
// programs are released.

/// Answers every TCP connection on `ip:port` with an echo of what it receives, each connection
/// in its own thread (10 s idle timeout), for at most `life` seconds; prints `listening` first.
pub const TCP_ECHO_SERVER: &str = r#"
import socket, sys, threading, time
ip, port, life = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((ip, port))
l.listen(64)
l.settimeout(0.5)
def serve(c):
    c.settimeout(10)
    try:
        while True:
            d = c.recv(4096)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    c.close()
print("listening", flush=True)
end = time.time() + life
while time.time() < end:
    try:
        c, _ = l.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A running [`TCP_ECHO_SERVER`] on `ip:port` for at most `life_s` seconds, started with
/// `spawn` (a namespace's or a pod's); killed on drop.
pub fn tcp_echo_server(spawn: impl FnOnce(&[&str]) -> Child, ip: &str, port: u16, life_s: u32) -> Announced {
    let (port, life) = (port.to_string(), life_s.to_string());
    let what = format!("TCP echo server on {ip}:{port}");
    Announced::start(spawn, &["python3", "-c", TCP_ECHO_SERVER, ip, &port, &life], "listening", &what)
}

/// A background process that prints a ready word as its first stdout line once it serves
/// (its later output is drained, so it never blocks on a full pipe). Killed on drop.
pub struct Announced {
    child: Option<Child>,
}

impl Announced {
    /// Starts `argv` through `spawn` (e.g. `|a| ns.spawn(a)` or `|a| pod.spawn(a)`) and waits up
    /// to 10 s for its first stdout line to be `ready`; panics naming `what` (and the process's
    /// stderr) otherwise.
    pub fn start(spawn: impl FnOnce(&[&str]) -> Child, argv: &[&str], ready: &str, what: &str) -> Announced {
        let mut child = spawn(argv);
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("{what}: stdout must be piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        if line.trim() != ready {
            let _ = child.kill();
            let out = child.wait_with_output().ok();
            panic!(
                "{what} did not start (first line {line:?}, want {ready:?}); stderr: {}",
                out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default()
            );
        }
        Announced { child: Some(child) }
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `kubectl get pods -A -o json` naming the lab's hosts (name, IP) as pods of namespace `lab`,
/// for `--pods-from file:PATH`.
pub fn pods_file(pods: &[(&str, &str)]) -> String {
    pods_and_services_file(pods, &[])
}

/// [`pods_file`] with these Service objects too (`kubectl get pods,services -A -o json`).
pub fn pods_and_services_file(pods: &[(&str, &str)], services: &[Value]) -> String {
    let items: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, (name, ip))| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "lab", "uid": format!("00000000-0000-0000-0000-{i:012}"), "labels": {"app": name}},
                "spec": {"nodeName": "node-lab", "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
            })
        })
        .chain(services.iter().cloned())
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}).to_string()
}

/// A temporary file, removed on drop.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The Python venv scripts/setup.sh installs kubernetes-validate (and PyYAML with it) into.
pub const PY_VENV: &str = "/opt/tracer-py";

/// A YAML file as JSON, parsed by PyYAML (the workspace has no YAML crate).
pub fn yaml_as_json(file: &Path) -> Value {
    let python = Path::new(PY_VENV).join("bin/python3");
    let out = Command::new(&python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh installs it)", python.display()));
    assert!(out.status.success(), "YAML did not parse: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from yaml")
}

/// Polls (bounded: 5 s, since the kernel frees programs deferred) until no program among `ids`
/// is loaded and no link points at one of them; otherwise says what is left.
pub fn wait_bpf_released(ids: &BTreeSet<u64>) -> Result<(), String> {
    let mut left = String::new();
    for _ in 0..50 {
        let progs: BTreeSet<u64> = bpf_progs().into_iter().map(|p| p.id).filter(|id| ids.contains(id)).collect();
        let links: Vec<BpfLink> = bpf_links().into_iter().filter(|l| ids.contains(&l.prog_id)).collect();
        if progs.is_empty() && links.is_empty() {
            return Ok(());
        }
        left = format!("programs {progs:?}, links {links:?}");
        thread::sleep(Duration::from_millis(100));
    }
    Err(left)
}

/// For each case (extra arguments, and how the run ends: `SIGINT`, `SIGTERM`, `--duration`
/// (the case's arguments must contain one) or `SIGKILL`): starts `tracer PROBE BASE... EXTRA...`,
/// checks that it attached `PROBE` with at least one program and one link, ends it, checks exit 0
/// and the `tracer: PROBE: N seen, N delivered, N lost` line (except after SIGKILL), and that
/// every program it held and every link to them is gone ([`wait_bpf_released`]).
pub fn assert_nothing_left_after(probe: &str, base: &[&str], cases: &[(&[&str], &str)]) {
    for (extra, end) in cases {
        let what = format!("{probe} {extra:?}, ended by {end}");
        let mut args = vec![probe];
        args.extend_from_slice(base);
        args.extend_from_slice(extra);
        let t = Tracer::start(&args);
        let attached = format!("attached {probe}");
        assert!(t.attached_lines().join("\n").contains(&attached), "{what}: no `{attached}` line: {}", t.stderr());
        let ids = bpf_prog_ids_of_pid(t.pid());
        assert!(!ids.is_empty(), "{what}: the attached tracer holds no BPF program");
        let links: Vec<BpfLink> = bpf_links().into_iter().filter(|l| ids.contains(&l.prog_id)).collect();
        assert!(!links.is_empty(), "{what}: no link attaches the programs {ids:?}");
        let run = match *end {
            "SIGINT" => t.stop_with(libc::SIGINT),
            "SIGTERM" => t.stop_with(libc::SIGTERM),
            "--duration" => t.wait_exit(Duration::from_secs(15)),
            "SIGKILL" => t.stop_with(libc::SIGKILL),
            other => panic!("{what}: unknown way to end a run: {other}"),
        };
        if *end == "SIGKILL" {
            assert!(run.status.code().is_none(), "{what}: expected death by SIGKILL");
        } else {
            run.assert_code(0);
            assert!(
                parse_summary(&run.stderr, probe).is_some(),
                "{what}: no `tracer: {probe}: N seen, N delivered, N lost` line:\n{}",
                run.stderr
            );
        }
        if let Err(left) = wait_bpf_released(&ids) {
            panic!("{what}: left behind after exit: {left}");
        }
    }
}

/// Runs `tracer ARGS` and checks that it refuses them as bad input: exit 2 within 3 s, exactly
/// one stderr line naming at least one of `words` (and not `attached`), nothing on stdout.
pub fn assert_refused(args: &[&str], words: &[&str]) {
    let t0 = Instant::now();
    let run = run_tracer(args, Duration::from_secs(30));
    run.assert_code(2);
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "{args:?}: want exactly one stderr line, got:\n{}", run.stderr);
    assert!(words.iter().any(|w| lines[0].contains(w)), "{args:?}: the error line should name one of {words:?}: {}", lines[0]);
    assert!(!lines[0].contains("attached"), "{args:?}: attached before failing: {}", lines[0]);
    assert!(run.lines.iter().all(|l| l.trim().is_empty()), "{args:?}: stdout not empty: {:?}", run.lines);
    assert!(t0.elapsed() < Duration::from_secs(3), "{args:?}: took {:?}: it ran instead of refusing", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Conntrack
// ---------------------------------------------------------------------------------------------

/// net.netfilter.nf_conntrack_max is one value for the whole machine (read-only inside a child
/// namespace), checked against each namespace's own entry count: set low for one test (with
/// the shared lock held), restored on drop, also when the test fails.
pub struct ConntrackMax {
    old: String,
}

pub const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl ConntrackMax {
    pub fn set(max: u64) -> ConntrackMax {
        let old = std::fs::read_to_string(CONNTRACK_MAX).unwrap_or_else(|e| panic!("lab: reading {CONNTRACK_MAX}: {e}"));
        std::fs::write(CONNTRACK_MAX, max.to_string()).unwrap_or_else(|e| panic!("lab: writing {CONNTRACK_MAX}: {e}"));
        ConntrackMax { old: old.trim().to_string() }
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(CONNTRACK_MAX, &self.old) {
            eprintln!("!!!!!!!! could not restore {CONNTRACK_MAX} to {}: {e} !!!!!!!!", self.old);
        }
    }
}

/// Listens with a large backlog and never accepts: the kernel completes every handshake, so
/// each connection is an assured conntrack entry that early drop cannot evict.
pub const BACKLOG_SERVER: &str = r#"
import socket, sys, time
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(128)
print("listening", flush=True)
time.sleep(120)
"#;

/// Opens N connections and holds them.
pub const HOLD_CONNECTIONS: &str = r#"
import socket, sys, time
held = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    held.append(s)
print("connected", flush=True)
time.sleep(120)
"#;
