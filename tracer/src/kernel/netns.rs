//! Network namespaces by inode: events name a namespace by its inode, and some facts about it
//! (conntrack counters, conntrack's netlink events) can only be had from inside it.

use std::{
    collections::HashMap,
    fs, io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

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
pub struct Namespaces {
    entries: HashMap<u32, Entry>,
    scanned_at: Option<Instant>,
}

impl Namespaces {
    pub fn scan() -> Self {
        let mut n = Namespaces::default();
        n.rescan();
        n
    }

    /// The inodes found by the last scan.
    pub fn inodes(&self) -> Vec<u32> {
        self.entries.keys().copied().collect()
    }

    /// Reads `/proc/net/<file>` as namespace `inode` sees it.
    pub fn read_proc_net(&mut self, inode: u32, file: &str) -> io::Result<String> {
        match self.find(inode)? {
            Entry::Process(proc) => fs::read_to_string(proc.join("net").join(file)),
            Entry::File(ns) => run_in(&ns, || fs::read_to_string(Path::new("/proc/thread-self/net").join(file))),
        }
    }

    /// Runs `f` on a thread moved into namespace `inode` (sockets it opens belong there).
    pub fn run_in<T: Send>(&mut self, inode: u32, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
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

/// setns(2) moves only the calling thread: `f` runs on a short-lived one, so nothing else moves.
fn run_in<T: Send>(ns: &Path, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let ns = fs::File::open(ns)?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace fd we own; it affects this thread only.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_links_are_parsed() {
        assert_eq!(inode_of(Path::new("net:[4026531840]")), Some(4026531840));
        assert_eq!(inode_of(Path::new("mnt:[1]")), None);
    }
}
