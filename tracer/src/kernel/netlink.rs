//! Netlink plumbing shared by every netlink conversation tracer has: the qdisc it deletes
//! (rtnetlink), conntrack's destroy events, link events and the nftables rule dump. A socket of
//! the calling thread's network namespace, the walk over the messages of a datagram and over a
//! message's attributes, and the kernel's error answer. What is asked and how the answer reads
//! stay with the asker.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

/// `NETLINK_NETFILTER` (linux/netlink.h): conntrack, nftables and the other nfnetlink subsystems.
pub(crate) const NETLINK_NETFILTER: libc::c_int = 12;
/// `NLMSG_HDRLEN`: `struct nlmsghdr` (len, type, flags, seq, pid), aligned.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg` (family, version, res_id) that starts every nfnetlink message's payload.
pub(crate) const NFGENMSG_LEN: usize = 4;
/// An attribute type without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// A netlink socket of `protocol` in the calling thread's network namespace (it stays bound to
/// that namespace whichever thread uses it later). `flags` are added to `SOCK_RAW |
/// SOCK_CLOEXEC` (`SOCK_NONBLOCK` for listeners).
pub(crate) fn socket(protocol: libc::c_int, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes blocking receives on `socket` give up (EAGAIN) after `timeout`: the kernel answers a
/// request at once, and a read that waits longer would hang the command.
pub(crate) fn set_receive_timeout(socket: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: timeout.as_secs() as libc::time_t, tv_usec: timeout.subsec_micros() as libc::suseconds_t };
    // SAFETY: valid fd; a live timeval of the size given.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one request to the kernel.
pub(crate) fn send(socket: &OwnedFd, request: &[u8]) -> io::Result<()> {
    // SAFETY: the buffer is valid for its length; the kernel is the destination (no address).
    let sent = unsafe { libc::send(socket.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one datagram into `buf` and returns its length. A datagram larger than `buf` is an
/// error, not a truncated answer read as if it were whole.
pub(crate) fn receive(socket: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for writes of its length. MSG_TRUNC: the datagram's real
    // length is returned even when it did not fit.
    let got = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    if got > buf.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a netlink datagram of {got} bytes, over the {} bytes read", buf.len())));
    }
    Ok(got)
}

/// The header of a request: `len` bytes in all (header included), message type `kind`.
pub(crate) fn header(len: usize, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&seq.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    /// `nlmsg_type`: `NLMSG_ERROR`, `NLMSG_DONE`, or the protocol's own type.
    pub kind: u16,
    /// `nlmsg_flags` (`NLM_F_MULTI`, `NLM_F_DUMP_INTR`, ...).
    pub flags: u16,
    /// What follows the header, up to the message's length.
    pub payload: &'a [u8],
}

/// The messages of one datagram, in order; the walk stops at the first header whose length does
/// not fit (what the kernel never sends).
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let header = buf.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let message = Message {
            kind: u16::from_ne_bytes([header[4], header[5]]),
            flags: u16::from_ne_bytes([header[6], header[7]]),
            payload: &buf[NLMSG_HDRLEN..len],
        };
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some(message)
    })
}

/// The errno of an `NLMSG_ERROR` message's payload (`struct nlmsgerr`: a negative errno, then
/// the request's header): 0 is an acknowledgement. None when the payload is too short.
pub(crate) fn error_code(payload: &[u8]) -> Option<i32> {
    Some(-i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

/// The kernel's answer to a request with `NLM_F_ACK`: an `NLMSG_ERROR` whose error is 0 for
/// success, else the errno.
pub(crate) fn ack_result(answer: &[u8]) -> io::Result<()> {
    let message = messages(answer).next().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short netlink answer"))?;
    if message.kind != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("netlink answered message type {}, not an ack", message.kind)));
    }
    match error_code(message.payload) {
        Some(0) => Ok(()),
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        None => Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink error message")),
    }
}

/// Netlink attributes in `buf`: (type without flags, payload). The walk stops at the first
/// attribute whose length does not fit.
pub(crate) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, payload))
    })
}

/// Builders of netlink messages, for the tests and the fuzz seeds.
#[cfg(test)]
pub(crate) mod wire {
    /// An attribute.
    pub(crate) fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// A nested attribute (`NLA_F_NESTED` set) holding `parts`.
    pub(crate) fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | 0x8000, &parts.concat())
    }

    /// An nfnetlink message: header, `nfgenmsg` of `family`, `body`.
    pub(crate) fn nfnl_message(kind: u16, flags: u16, family: u8, body: &[u8]) -> Vec<u8> {
        let mut m = super::header(super::NLMSG_HDRLEN + super::NFGENMSG_LEN + body.len(), kind, flags, 0);
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(body);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::{wire::*, *};

    #[test]
    fn an_ack_is_ok_and_an_error_names_its_errno() {
        let mut ack = vec![0u8; 36];
        ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        assert!(ack_result(&ack).is_ok());
        ack[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(ack_result(&ack).unwrap_err().raw_os_error(), Some(libc::ENOENT));
        assert!(ack_result(&ack[..10]).is_err(), "short");
    }

    #[test]
    fn messages_and_attributes_stop_at_a_length_that_does_not_fit() {
        let body = [attr(1, b"filter\0"), nested(4, &[attr(1, &[1, 2, 3])])].concat();
        let mut datagram = nfnl_message(0x0a06, 2, 1, &body);
        datagram.extend(nfnl_message(3, 2, 0, &[]));
        let all: Vec<Message<'_>> = messages(&datagram).collect();
        assert_eq!(all.iter().map(|m| (m.kind, m.flags)).collect::<Vec<_>>(), [(0x0a06, 2), (3, 2)]);
        let found: Vec<(u16, usize)> = attrs(&all[0].payload[NFGENMSG_LEN..]).map(|(k, p)| (k, p.len())).collect();
        assert_eq!(found, [(1, 7), (4, 8)], "types come without NLA_F_NESTED");
        for cut in 0..datagram.len() {
            let _ = messages(&datagram[..cut]).flat_map(|m| attrs(m.payload)).count();
        }
        assert_eq!(messages(&datagram[..datagram.len() - 1]).count(), 1, "a cut message is not read");
    }
}
