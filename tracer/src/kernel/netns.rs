//! Working inside another network namespace for a moment: tc attachments and device facts are
//! per namespace (a pod veth's host end lives in the node's namespace, which in a test lab or a
//! nested node is not tracer's own). `setns(2)` switches only the calling thread, and the guard
//! switches it back when dropped, also on errors. Events name a namespace by its inode only:
//! [`Namespaces`] finds a way into one (a process in it, or a /run/netns file) to read facts
//! that can only be had from inside (conntrack counters, conntrack's netlink events).

use std::{
    collections::HashMap,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Where named namespaces live (`ip netns add NAME`).
pub(crate) const NAMED_NETNS_DIR: &str = "/var/run/netns";

#[derive(Debug, thiserror::Error)]
pub(crate) enum NetnsError {
    #[error("network namespace {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {}: {source}", path.display())]
    Enter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A network namespace: tracer's own (`path` None) or one named by path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Netns {
    /// None: tracer's own namespace.
    pub path: Option<PathBuf>,
}

impl Netns {
    pub(crate) const OWN: Self = Self { path: None };

    /// `NAME` (under /var/run/netns) or an absolute path (`/proc/PID/ns/net`).
    pub(crate) fn parse(text: &str) -> Self {
        let path = if text.starts_with('/') { PathBuf::from(text) } else { Path::new(NAMED_NETNS_DIR).join(text) };
        Self { path: Some(path) }
    }

    /// How it is shown in messages: `own`, or the name / path given.
    pub(crate) fn label(&self) -> String {
        match &self.path {
            None => "own".into(),
            Some(p) if p.parent() == Some(Path::new(NAMED_NETNS_DIR)) => {
                p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
            }
            Some(p) => p.display().to_string(),
        }
    }

    /// The namespace's inode number (what the kernel reports as the netns of an event).
    pub(crate) fn inode(&self) -> Result<u32, NetnsError> {
        let path = self.path.clone().unwrap_or_else(|| PathBuf::from("/proc/thread-self/ns/net"));
        std::fs::metadata(&path).map(|m| m.ino() as u32).map_err(|source| NetnsError::Open { path, source })
    }

    /// Switches this thread into the namespace until the guard drops (a no-op for `OWN`).
    pub(crate) fn enter(&self) -> Result<NetnsGuard, NetnsError> {
        let Some(path) = &self.path else { return Ok(NetnsGuard { back: None }) };
        let own = PathBuf::from("/proc/thread-self/ns/net");
        let back = File::open(&own).map_err(|source| NetnsError::Open { path: own, source })?;
        let target = File::open(path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        setns(&target).map_err(|source| NetnsError::Enter { path: path.clone(), source })?;
        Ok(NetnsGuard { back: Some(back) })
    }
}

/// Returns the thread to the namespace it came from when dropped.
pub(crate) struct NetnsGuard {
    back: Option<File>,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Some(back) = &self.back
            && let Err(err) = setns(back)
        {
            // Staying in the wrong namespace would make every later step lie: stop here.
            eprintln!("tracer: error: cannot return to tracer's own network namespace: {err}");
            std::process::exit(1);
        }
    }
}

fn setns(file: &File) -> std::io::Result<()> {
    // SAFETY: a valid fd of a namespace file; CLONE_NEWNET checks that it is a network one.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How often a lookup of an unknown inode may rescan /proc and /run/netns.
const RESCAN: Duration = Duration::from_secs(1);

/// How to get into one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A process in it (`/proc/PID`): its `net/` shows the namespace without entering it.
    Process(PathBuf),
    /// A namespace file with no process (`ip netns add` bind mounts in /run/netns).
    File(PathBuf),
}

/// Every network namespace this host shows, by inode: processes' and /run/netns'.
#[derive(Debug, Default)]
pub(crate) struct Namespaces {
    entries: HashMap<u32, Entry>,
    scanned_at: Option<Instant>,
}

impl Namespaces {
    pub(crate) fn scan() -> Self {
        let mut n = Namespaces::default();
        n.rescan();
        n
    }

    /// The inodes found by the last scan.
    pub(crate) fn inodes(&self) -> Vec<u32> {
        self.entries.keys().copied().collect()
    }

    /// Reads `/proc/net/<file>` as namespace `inode` sees it.
    pub(crate) fn read_proc_net(&mut self, inode: u32, file: &str) -> io::Result<String> {
        match self.find(inode)? {
            Entry::Process(proc) => fs::read_to_string(proc.join("net").join(file)),
            Entry::File(ns) => run_in(&ns, || fs::read_to_string(Path::new("/proc/thread-self/net").join(file))),
        }
    }

    /// Runs `f` on a thread moved into namespace `inode` (sockets it opens belong there).
    pub(crate) fn run_in<T: Send>(&mut self, inode: u32, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        let path = match self.find(inode)? {
            Entry::Process(proc) => proc.join("ns/net"),
            Entry::File(ns) => ns,
        };
        run_in(&path, f)
    }

    fn find(&mut self, inode: u32) -> io::Result<Entry> {
        if let Some(e) = self.entries.get(&inode) {
            // A process may have exited since: then look again.
            if !matches!(e, Entry::Process(p) if !p.exists()) {
                return Ok(e.clone());
            }
        }
        if self.scanned_at.is_none_or(|t| t.elapsed() >= RESCAN) {
            self.rescan();
        }
        self.entries
            .get(&inode)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no process or /run/netns file in network namespace {inode}")))
    }

    fn rescan(&mut self) {
        self.scanned_at = Some(Instant::now());
        self.entries.clear();
        // Namespace files first, so that a process (read without entering) wins.
        for dir in ["/run/netns", "/var/run/netns"] {
            let Ok(list) = fs::read_dir(dir) else { continue };
            for e in list.flatten() {
                if let Ok(meta) = fs::metadata(e.path()) {
                    self.entries.insert(meta.ino() as u32, Entry::File(e.path()));
                }
            }
        }
        let Ok(procs) = fs::read_dir("/proc") else { return };
        for e in procs.flatten() {
            if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Some(inode) = fs::read_link(e.path().join("ns/net")).ok().and_then(|l| inode_of(&l)) else { continue };
            self.entries.insert(inode, Entry::Process(e.path()));
        }
    }
}

/// `net:[4026531840]` -> 4026531840.
fn inode_of(link: &Path) -> Option<u32> {
    link.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// `f` on a short-lived thread inside the namespace at `ns`, so that nothing else moves.
fn run_in<T: Send>(ns: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let netns = Netns { path: Some(ns.to_path_buf()) };
    std::thread::scope(|s| {
        s.spawn(|| {
            let _inside = netns.enter().map_err(io::Error::other)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// A named network namespace for the unit tests that ask the real kernel (`ip netns add`),
/// deleted on drop, also when the test panics.
#[cfg(test)]
pub(crate) struct ScratchNetns(pub String);

#[cfg(test)]
impl ScratchNetns {
    /// `trt-PREFIX-PID`, or None after a loud skip when it cannot be made (not root), which
    /// `TRACER_REQUIRE_PRIVILEGED` turns into a failure.
    pub(crate) fn create(prefix: &str, test: &str) -> Option<Self> {
        let name = format!("trt-{prefix}-{}", std::process::id());
        if !Self::ip(&["netns", "add", &name]) {
            eprintln!("SKIPPED {test}: cannot create a network namespace (not root?)");
            assert!(std::env::var_os("TRACER_REQUIRE_PRIVILEGED").is_none(), "privileged test could not run");
            return None;
        }
        Some(Self(name))
    }

    /// `ip ARGS...` succeeded.
    pub(crate) fn ip(args: &[&str]) -> bool {
        std::process::Command::new("ip").args(args).status().is_ok_and(|s| s.success())
    }
}

#[cfg(test)]
impl Drop for ScratchNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(Netns::parse("node1").path.as_deref(), Some(Path::new("/var/run/netns/node1")));
        assert_eq!(Netns::parse("node1").label(), "node1");
        assert_eq!(Netns::parse("/proc/1/ns/net").label(), "/proc/1/ns/net");
        assert_eq!(Netns::OWN.label(), "own");
    }

    #[test]
    fn namespace_links_are_parsed() {
        assert_eq!(inode_of(Path::new("net:[4026531840]")), Some(4026531840));
        assert_eq!(inode_of(Path::new("mnt:[1]")), None);
    }
}
