//! Following the devices of tracer's own network namespace while tracing: pods come and go, and
//! with them their veths. A netlink socket subscribed to link events (RTNLGRP_LINK) says that
//! something changed; the devices are then listed again (the same listing as at start) and
//! [`changes`] tells which ones to attach to and which ones are gone. The messages themselves are
//! not parsed: a burst of them (a CNI adding a pod: veth pair, rename, move of the peer, up) is
//! one listing, taken once the burst has settled.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use super::devices::DeviceFacts;
use crate::kernel::netlink;

/// How long link events must have stopped before the devices are listed again: a CNI's steps
/// for one pod take a few milliseconds, and a device moved into a pod's namespace right after it
/// was created is then never attached to.
pub(crate) const SETTLE: Duration = Duration::from_millis(200);

/// Messages read per call at most (each read takes up to 8 KiB of them): bounded, and what is
/// left is read on the next call.
const MAX_READS: usize = 256;

/// Link events of the namespace the socket was opened in, read without blocking.
pub(crate) struct LinkEvents {
    fd: OwnedFd,
    /// When the devices are to be listed again (events came, and none since [`SETTLE`]).
    due: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FollowError {
    #[error("opening a netlink socket for link events: {0}")]
    Socket(io::Error),
    #[error("subscribing to link events (RTNLGRP_LINK): {0}")]
    Bind(io::Error),
}

impl LinkEvents {
    /// Subscribes to the link events of the calling thread's network namespace.
    pub(crate) fn open() -> Result<Self, FollowError> {
        let fd = netlink::socket(libc::NETLINK_ROUTE, libc::SOCK_NONBLOCK).map_err(FollowError::Socket)?;
        // SAFETY: sockaddr_nl is plain data; all zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = libc::RTMGRP_LINK as u32;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let bound = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), size_of::<libc::sockaddr_nl>() as libc::socklen_t) };
        if bound != 0 {
            return Err(FollowError::Bind(io::Error::last_os_error()));
        }
        Ok(Self { fd, due: None })
    }

    /// Whether the devices should be listed again at `now`: link events came and then none for
    /// [`SETTLE`]. Reads (and drops) what is queued; a queue that overflowed counts as events.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if self.drain() {
            self.due = Some(now + SETTLE);
        }
        match self.due {
            Some(at) if now >= at => {
                self.due = None;
                true
            }
            _ => false,
        }
    }

    /// Reads every queued message; whether there was any.
    fn drain(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut any = false;
        for _ in 0..MAX_READS {
            // SAFETY: buf is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if n > 0 {
                any = true;
                continue;
            }
            match io::Error::last_os_error().raw_os_error() {
                // The kernel dropped messages it had no room for: something changed.
                Some(libc::ENOBUFS) => any = true,
                Some(libc::EINTR) => {}
                _ => break,
            }
        }
        any
    }
}

/// What changed: the devices of `listed` to attach to (traced by default, not attached yet), and
/// the ifindexes of `attached` no longer listed. A device is the same device while its ifindex
/// is (a rename keeps it).
pub(crate) fn changes(attached: &[u32], listed: &[DeviceFacts]) -> (Vec<DeviceFacts>, Vec<u32>) {
    let new = listed.iter().filter(|d| d.traced_by_default() && !attached.contains(&d.ifindex)).cloned().collect();
    let gone = attached.iter().copied().filter(|i| !listed.iter().any(|d| d.ifindex == *i)).collect();
    (new, gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::Netns;

    fn dev(name: &str, ifindex: u32, driver: &str) -> DeviceFacts {
        DeviceFacts { netns: Netns::OWN, name: name.into(), ifindex, mtu: 1500, driver: driver.into(), uplink: false, up: true, ethernet: true }
    }

    #[test]
    fn new_veths_and_tunnels_are_attached_and_gone_ones_forgotten() {
        let listed =
            [dev("eth0", 2, "virtio_net"), dev("vxlan0", 3, "vxlan"), dev("veth1", 5, "veth"), dev("cni0", 6, "bridge"), dev("veth9", 9, "veth")];
        let (new, gone) = changes(&[3, 4, 5], &listed);
        assert_eq!(new.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["veth9"], "a bridge or the uplink is not traced by default");
        assert_eq!(gone, [4]);
        let renamed = [dev("eth0", 2, "virtio_net"), dev("vxlan0", 3, "vxlan"), dev("lxc12ab", 5, "veth")];
        assert_eq!(changes(&[3, 5], &renamed), (Vec::new(), Vec::new()), "a rename keeps the device");
    }

    #[test]
    fn link_events_of_a_new_device_make_the_devices_due_once_settled() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: creating a device needs root");
            return;
        }
        // In a namespace of its own, so nothing of the machine's is touched.
        let outcome = std::thread::spawn(|| -> Result<(), String> {
            // SAFETY: unshare(2) of this thread's network namespace; the thread ends after.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(format!("unshare: {}", io::Error::last_os_error()));
            }
            let mut events = LinkEvents::open().map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            if events.due(t0) {
                return Err("due without events".into());
            }
            let out = std::process::Command::new("ip").args(["link", "add", "fl0", "type", "veth", "peer", "name", "fl1"]).output();
            // `ip` runs in this thread's namespace: a child inherits the namespaces of the thread that forks it.
            match out {
                Ok(o) if o.status.success() => {}
                other => return Err(format!("ip link add: {other:?}")),
            }
            let now = Instant::now();
            if events.due(now) {
                return Err("due before settling".into());
            }
            if !events.due(now + SETTLE) {
                return Err("not due after settling".into());
            }
            if events.due(now + SETTLE * 2) {
                return Err("due twice for one burst".into());
            }
            Ok(())
        })
        .join()
        .expect("the thread");
        outcome.expect("link events");
    }
}
