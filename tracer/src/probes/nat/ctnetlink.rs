//! How NATed connections end: conntrack's destroy events over netlink.
//!
//! No tracepoint marks the end of a conntrack entry, and kprobes are not on every kernel (not on
//! this one). The kernel multicasts every destroyed entry to netlink listeners of its namespace
//! (`NETLINK_NETFILTER`, group `NFNLGRP_CONNTRACK_DESTROY`, since 2.6.14) with the entry's tuples
//! and protocol state, which says how it ended. With `net.netfilter.nf_conntrack_events = 2`
//! (the default since 6.0) the kernel keeps events only for entries created while a listener
//! existed: subscribing early is what makes them complete.

use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{Interest, unix::AsyncFd},
    sync::mpsc,
};

use crate::{
    events::Flow,
    kernel::{
        netlink::{self, NETLINK_NETFILTER, NFGENMSG_LEN, attrs},
        netns::Namespaces,
    },
    probes::nat::detail::NatState,
};

/// Legacy group bitmask of NFNLGRP_CONNTRACK_DESTROY (group 3).
const NF_NETLINK_CONNTRACK_DESTROY: u32 = 1 << 2;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

/// `enum tcp_conntrack` (uapi, stable).
mod tcp_ct {
    pub(super) const FIN_WAIT: u8 = 4;
    pub(super) const CLOSE_WAIT: u8 = 5;
    pub(super) const LAST_ACK: u8 = 6;
    pub(super) const TIME_WAIT: u8 = 7;
    pub(super) const CLOSE: u8 = 8;
    pub(super) const SYN_SENT: u8 = 1;
    pub(super) const SYN_RECV: u8 = 2;
    pub(super) const SYN_SENT2: u8 = 9;
}

/// One destroyed conntrack entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destroyed {
    /// The original direction's tuple (as the client opened it).
    pub orig: Flow,
    pub reply: Flow,
    /// TCP's conntrack state when the entry went; None for other protocols.
    pub tcp_state: Option<u8>,
}

impl Destroyed {
    /// How the connection ended, as a nat event `state`. Without a TCP state (UDP, ICMP) only
    /// whether a reply was ever seen tells an expired query from an idle connection.
    pub(crate) const fn ending(&self, reply_seen: bool) -> NatState {
        match self.tcp_state {
            Some(tcp_ct::FIN_WAIT | tcp_ct::CLOSE_WAIT | tcp_ct::LAST_ACK | tcp_ct::TIME_WAIT | tcp_ct::CLOSE) => NatState::Closed,
            Some(tcp_ct::SYN_SENT | tcp_ct::SYN_RECV | tcp_ct::SYN_SENT2) => NatState::TimedOut,
            Some(_) => NatState::Destroyed,
            None if reply_seen => NatState::Destroyed,
            None => NatState::TimedOut,
        }
    }
}

/// A non-blocking netlink socket subscribed to destroy events of the calling thread's network
/// namespace (call it inside the namespace: the socket stays bound to it).
pub(crate) fn subscribe() -> io::Result<OwnedFd> {
    let fd = netlink::socket(NETLINK_NETFILTER, libc::SOCK_NONBLOCK)?;
    // SAFETY: sockaddr_nl is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = NF_NETLINK_CONNTRACK_DESTROY;
    // A large receive buffer: a burst of ends must not overrun it (ENOBUFS is reported).
    let size: libc::c_int = 4 << 20;
    // SAFETY: valid fd, pointers to live locals of the sizes given.
    unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, (&raw const size).cast(), size_of::<libc::c_int>() as libc::socklen_t);
        if libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), size_of::<libc::sockaddr_nl>() as libc::socklen_t) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

fn tuple(buf: &[u8]) -> Flow {
    let mut flow = Flow::default();
    for (kind, payload) in attrs(buf) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, p) in attrs(payload) {
                    let ip = match p.len() {
                        4 => <[u8; 4]>::try_from(p).ok().map(|a| IpAddr::V4(Ipv4Addr::from(a))),
                        16 => <[u8; 16]>::try_from(p).ok().map(|a| IpAddr::V6(Ipv6Addr::from(a))),
                        _ => None,
                    };
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => flow.src = ip,
                        CTA_IP_V4_DST | CTA_IP_V6_DST => flow.dst = ip,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, p) in attrs(payload) {
                    match (k, p) {
                        (CTA_PROTO_NUM, [n, ..]) => flow.l4_proto = Some(*n),
                        (CTA_PROTO_SRC_PORT, [a, b, ..]) => flow.sport = Some(u16::from_be_bytes([*a, *b])),
                        (CTA_PROTO_DST_PORT, [a, b, ..]) => flow.dport = Some(u16::from_be_bytes([*a, *b])),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    // Ports mean something for TCP and UDP only (ICMP puts its id there).
    if !matches!(flow.l4_proto, Some(6 | 17)) {
        (flow.sport, flow.dport) = (None, None);
    }
    flow
}

/// The destroy events in one datagram of netlink messages; anything else is skipped.
pub(crate) fn parse(buf: &[u8]) -> Vec<Destroyed> {
    let mut out = Vec::new();
    for message in netlink::messages(buf) {
        let Some(body) = message.payload.get(NFGENMSG_LEN..) else { continue };
        if message.kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE {
            continue;
        }
        let mut d = Destroyed { orig: Flow::default(), reply: Flow::default(), tcp_state: None };
        for (k, payload) in attrs(body) {
            match k {
                CTA_TUPLE_ORIG => d.orig = tuple(payload),
                CTA_TUPLE_REPLY => d.reply = tuple(payload),
                CTA_PROTOINFO => {
                    d.tcp_state = attrs(payload)
                        .filter(|(k, _)| *k == CTA_PROTOINFO_TCP)
                        .flat_map(|(_, p)| attrs(p))
                        .find(|(k, _)| *k == CTA_PROTOINFO_TCP_STATE)
                        .and_then(|(_, p)| p.first().copied());
                }
                _ => {}
            }
        }
        if d.orig.src.is_some() {
            out.push(d);
        }
    }
    out
}

/// Destroy events of every namespace it subscribed in, gathered by one reader task per socket.
pub(crate) struct EndWatch {
    namespaces: Namespaces,
    subscribed: HashSet<u32>,
    tx: mpsc::UnboundedSender<(u32, Vec<Destroyed>)>,
    rx: mpsc::UnboundedReceiver<(u32, Vec<Destroyed>)>,
    /// Datagrams the kernel could not queue (ENOBUFS): ends that were missed.
    overruns: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl EndWatch {
    /// Subscribes in every namespace found now (see the module doc for why not later).
    pub(crate) fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut w =
            EndWatch { namespaces: Namespaces::scan(), subscribed: HashSet::new(), tx, rx, overruns: Arc::new(AtomicU64::new(0)), tasks: Vec::new() };
        // `subscribed` also holds the namespaces that failed (tried once each), so count here.
        let (mut ok, mut first_error) = (0, None);
        for inode in w.namespaces.inodes() {
            match w.subscribe_in(inode) {
                Ok(()) => ok += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let (0, Some(e)) = (ok, first_error) {
            log::warn!(
                "cannot subscribe to conntrack's destroy events ({e}; nf_conntrack_netlink? CAP_SYS_ADMIN for setns?): connection ends are not shown"
            );
        }
        w
    }

    /// Subscribes in a namespace first seen in an event (its earlier entries may not report).
    pub(crate) fn ensure(&mut self, inode: u32) {
        if !self.subscribed.contains(&inode) {
            // Once per namespace, even if it fails.
            if let Err(e) = self.subscribe_in(inode) {
                log::debug!("conntrack destroy events of netns {inode}: {e}");
            }
        }
    }

    fn subscribe_in(&mut self, inode: u32) -> io::Result<()> {
        self.subscribed.insert(inode);
        let fd = self.namespaces.run_in(inode, subscribe)?;
        // SAFETY: AsyncFd owns the socket, so the fd stays open for as long as it is registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)?;
        let (tx, overruns) = (self.tx.clone(), self.overruns.clone());
        self.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let Ok(mut guard) = fd.readable().await else { return };
                match guard.try_io(|fd| {
                    // SAFETY: recv into our buffer of the length given.
                    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
                }) {
                    Ok(Ok(n)) => {
                        let ended = parse(&buf[..n]);
                        if !ended.is_empty() && tx.send((inode, ended)).is_err() {
                            return;
                        }
                    }
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        overruns.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(_)) => return,
                    Err(_would_block) => {}
                }
            }
        }));
        Ok(())
    }

    /// Ends received since the last call, with their namespace.
    pub(crate) fn drain(&mut self) -> Vec<(u32, Destroyed)> {
        let mut out = Vec::new();
        while let Ok((inode, ended)) = self.rx.try_recv() {
            out.extend(ended.into_iter().map(|d| (inode, d)));
        }
        out
    }

    pub(crate) fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }
}

impl Drop for EndWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Builders of conntrack netlink messages, for the tests and the fuzz seeds.
#[cfg(test)]
pub(crate) mod wire {
    use super::*;

    /// A conntrack NEW event's message type.
    pub(crate) const IPCTNL_MSG_CT_NEW: u16 = 0;
    /// The message types of a destroy and a new event.
    pub(crate) const DELETE: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    pub(crate) const NEW: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;

    pub(crate) use crate::kernel::netlink::wire::{attr, nested};

    /// An address tuple (`CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY`) with IPv4 or IPv6 addresses.
    pub(crate) fn tuple(kind: u16, src: IpAddr, dst: IpAddr, proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let ip = |src_kind: u16, dst_kind: u16| match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => [attr(src_kind, &s.octets()), attr(dst_kind, &d.octets())],
            (s, d) => [attr(src_kind + 2, &v6(s).octets()), attr(dst_kind + 2, &v6(d).octets())],
        };
        nested(
            kind,
            &[
                nested(CTA_TUPLE_IP, &ip(CTA_IP_V4_SRC, CTA_IP_V4_DST)),
                nested(
                    CTA_TUPLE_PROTO,
                    &[attr(CTA_PROTO_NUM, &[proto]), attr(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()), attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes())],
                ),
            ],
        )
    }

    fn v6(ip: IpAddr) -> Ipv6Addr {
        match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        }
    }

    pub(crate) fn v4_tuple(kind: u16, src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        tuple(kind, src.into(), dst.into(), proto, sport, dport)
    }

    /// `CTA_PROTOINFO` with a TCP conntrack state.
    pub(crate) fn tcp_state(state: u8) -> Vec<u8> {
        nested(CTA_PROTOINFO, &[nested(CTA_PROTOINFO_TCP, &[attr(CTA_PROTOINFO_TCP_STATE, &[state])])])
    }

    /// A conntrack event message of an IPv4 (`AF_INET`) entry.
    pub(crate) fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        crate::kernel::netlink::wire::nfnl_message(kind, 0, 2, body)
    }
}

#[cfg(test)]
mod tests {
    use super::{wire::*, *};

    #[test]
    fn destroy_messages_give_tuples_and_tcp_state() {
        let body = [
            v4_tuple(CTA_TUPLE_ORIG, [10, 0, 0, 5], [10, 96, 0, 10], 6, 40000, 80),
            v4_tuple(CTA_TUPLE_REPLY, [10, 244, 1, 7], [10, 0, 0, 5], 6, 8080, 40000),
            attr(3, &0x19eu32.to_be_bytes()),
            tcp_state(tcp_ct::SYN_SENT),
        ]
        .concat();
        let mut datagram = message(DELETE, &body);
        // A NEW event in the same datagram is not an end.
        datagram.extend(message(NEW, &body));
        let got = parse(&datagram);
        assert_eq!(got.len(), 1);
        let d = &got[0];
        assert_eq!(d.orig.src_endpoint().as_deref(), Some("10.0.0.5:40000"));
        assert_eq!(d.orig.dst_endpoint().as_deref(), Some("10.96.0.10:80"));
        assert_eq!(d.reply.src_endpoint().as_deref(), Some("10.244.1.7:8080"));
        assert_eq!(d.tcp_state, Some(tcp_ct::SYN_SENT));
        assert_eq!(d.ending(false).as_str(), "timed_out");
    }

    #[test]
    fn endings_follow_the_protocol_state() {
        let d = |tcp_state| Destroyed { orig: Flow::default(), reply: Flow::default(), tcp_state };
        assert_eq!(d(Some(tcp_ct::TIME_WAIT)).ending(true).as_str(), "closed");
        assert_eq!(d(Some(tcp_ct::CLOSE)).ending(true).as_str(), "closed");
        assert_eq!(d(Some(3)).ending(true).as_str(), "destroyed", "ESTABLISHED removed: idle timeout or flush");
        assert_eq!(d(None).ending(false).as_str(), "timed_out", "UDP never answered");
        assert_eq!(d(None).ending(true).as_str(), "destroyed");
    }

    #[test]
    fn truncated_input_is_not_a_panic() {
        let body = v4_tuple(CTA_TUPLE_ORIG, [1, 2, 3, 4], [5, 6, 7, 8], 17, 1, 2);
        let m = message(DELETE, &body);
        for cut in 0..m.len() {
            let _ = parse(&m[..cut]);
        }
        assert_eq!(parse(&m).len(), 1);
    }
}
