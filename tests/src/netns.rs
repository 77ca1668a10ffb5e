//! Network namespaces and what joins them: names unique to this process ([`unique_name`]),
//! private address blocks ([`AddrBlock`]), the [`Netns`] guard that kills what runs inside and
//! deletes the namespace on drop, and [`veth`] pairs between two namespaces.

use std::{
    fs,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::Duration,
};

use crate::{CMD_TIMEOUT, cmd, cmd_ok, run_timeout};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub(crate) fn next_id() -> u32 {
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
        fs::metadata(self.path()).unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display())).ino()
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

    /// The NUD states (`INCOMPLETE`, `FAILED`, ...) of this namespace's neighbour entry for `ip`
    /// on `dev` (`ip neigh`); None when it holds no entry.
    pub fn neigh_state(&self, dev: &str, ip: &str) -> Option<Vec<String>> {
        let out = self.ip(&["-j", "neigh", "show", "to", ip, "dev", dev]);
        let entries: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("ip -j neigh in {}: bad JSON ({e}): {}", self.name, String::from_utf8_lossy(&out.stdout)));
        let entry = entries.as_array()?.iter().find(|e| e["dst"] == ip)?;
        Some(entry["state"].as_array().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default())
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

    /// Runs `f` on a new thread of this process that entered the namespace (setns(2) moves only
    /// the calling thread, so the test stays where it is); sockets `f` opens belong to the
    /// namespace for their whole life, also once returned.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        thread::spawn(move || {
            let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: a valid namespace fd, for this thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {}: {}", path.display(), std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }

    /// Pids of processes running inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        let out = cmd(&["ip", "netns", "pids", &self.name]);
        String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|s| s.parse().ok()).collect()
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
    cmd_ok(&["ip", "link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name, "netns", &b.name]);
    a.up(a_name);
    b.up(b_name);
}
