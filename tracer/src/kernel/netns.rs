//! Working inside another network namespace for a moment: tc attachments and device facts are
//! per namespace (a pod veth's host end lives in the node's namespace, which in a test lab or a
//! nested node is not tracer's own). `setns(2)` switches only the calling thread, and the guard
//! switches it back when dropped, also on errors.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// Where named namespaces live (`ip netns add NAME`).
pub const NAMED_NETNS_DIR: &str = "/var/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
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
pub struct Netns {
    /// None: tracer's own namespace.
    pub path: Option<PathBuf>,
}

impl Netns {
    pub const OWN: Self = Self { path: None };

    /// `NAME` (under /var/run/netns) or an absolute path (`/proc/PID/ns/net`).
    pub fn parse(text: &str) -> Self {
        let path = if text.starts_with('/') { PathBuf::from(text) } else { Path::new(NAMED_NETNS_DIR).join(text) };
        Self { path: Some(path) }
    }

    /// How it is shown in messages: `own`, or the name / path given.
    pub fn label(&self) -> String {
        match &self.path {
            None => "own".into(),
            Some(p) if p.parent() == Some(Path::new(NAMED_NETNS_DIR)) => {
                p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
            }
            Some(p) => p.display().to_string(),
        }
    }

    /// The namespace's inode number (what the kernel reports as the netns of an event).
    pub fn inode(&self) -> Result<u32, NetnsError> {
        let path = self.path.clone().unwrap_or_else(|| PathBuf::from("/proc/thread-self/ns/net"));
        std::fs::metadata(&path).map(|m| m.ino() as u32).map_err(|source| NetnsError::Open { path, source })
    }

    /// Switches this thread into the namespace until the guard drops (a no-op for `OWN`).
    pub fn enter(&self) -> Result<NetnsGuard, NetnsError> {
        let Some(path) = &self.path else { return Ok(NetnsGuard { back: None }) };
        let own = PathBuf::from("/proc/thread-self/ns/net");
        let back = File::open(&own).map_err(|source| NetnsError::Open { path: own, source })?;
        let target = File::open(path).map_err(|source| NetnsError::Open { path: path.clone(), source })?;
        setns(&target).map_err(|source| NetnsError::Enter { path: path.clone(), source })?;
        Ok(NetnsGuard { back: Some(back) })
    }
}

/// Returns the thread to the namespace it came from when dropped.
pub struct NetnsGuard {
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
}
