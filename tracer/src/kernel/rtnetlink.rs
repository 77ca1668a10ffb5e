//! rtnetlink requests tracer makes itself: deleting the clsact qdisc it added to a device (aya
//! adds one but cannot delete it), and the socket, message and attribute helpers the read-only
//! dumps of `tunnels` use. Done with a netlink socket of the calling thread's network namespace,
//! so the image needs no `tc`/`ip`/`bridge` and a namespace entered with `Netns::enter` (or
//! `Namespaces::run_in`) is the one the request acts in.

use std::{ffi::CString, io};

use super::netlink::{self, NLMSG_HDRLEN};

/// `RTM_DELQDISC` (linux/rtnetlink.h).
const RTM_DELQDISC: u16 = 37;
/// `TCA_KIND` (linux/rtnetlink.h).
const TCA_KIND: u16 = 1;
/// `TC_H_CLSACT` (= `TC_H_INGRESS`): the clsact qdisc's parent.
const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
/// `TC_H_MAKE(TC_H_CLSACT, 0)`: the clsact qdisc's handle.
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
/// `struct tcmsg`: family, two pad bytes' worth, ifindex, handle, parent, info.
const TCMSG_LEN: usize = 20;

/// Deletes the clsact qdisc of `device` in this thread's network namespace (and with it every tc
/// filter on it). An error says why, errno included.
pub(crate) fn delete_clsact(device: &str) -> io::Result<()> {
    let name = CString::new(device).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "device name with a NUL byte"))?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let socket = netlink::socket(libc::NETLINK_ROUTE, 0)?;
    netlink::send(&socket, &del_clsact_request(ifindex, 1))?;
    let mut answer = [0u8; 1024];
    let got = netlink::receive(&socket, &mut answer)?;
    netlink::ack_result(&answer[..got])
}

/// The `RTM_DELQDISC` request for the clsact qdisc of `ifindex`, asking for an ack.
fn del_clsact_request(ifindex: u32, seq: u32) -> Vec<u8> {
    let kind = b"clsact\0";
    let attr_len = 4 + kind.len();
    let total = NLMSG_HDRLEN + TCMSG_LEN + attr_len.next_multiple_of(4);
    let mut msg = netlink::header(total, RTM_DELQDISC, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16, seq);
    // struct tcmsg
    msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    msg.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    msg.extend_from_slice(&CLSACT_HANDLE.to_ne_bytes());
    msg.extend_from_slice(&TC_H_CLSACT.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    // TCA_KIND "clsact"
    msg.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    msg.extend_from_slice(&TCA_KIND.to_ne_bytes());
    msg.extend_from_slice(kind);
    msg.resize(total, 0);
    msg
}

/// A request message: the netlink header (`kind`, `flags`, sequence 1), the fixed `body` and
/// the attributes (`type`, value), each padded to 4 bytes.
pub(crate) fn message(kind: u16, flags: u16, body: &[u8], attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut msg = netlink::header(0, kind, flags, 1);
    msg.extend_from_slice(body);
    msg.resize(msg.len().next_multiple_of(4), 0);
    for (kind, value) in attrs {
        msg.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(value);
        msg.resize(msg.len().next_multiple_of(4), 0);
    }
    let len = msg.len() as u32;
    msg[..4].copy_from_slice(&len.to_ne_bytes());
    msg
}

/// The most answer messages one request reads: a bound on a kernel that never says done.
const MAX_ANSWERS: usize = 100_000;
/// How long one answer may take: the kernel answers at once.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends `request` (a dump when it has `NLM_F_DUMP`, else one request) on a `NETLINK_ROUTE`
/// socket of the calling thread's namespace and returns every answer message as (type, payload
/// after the netlink header), up to `NLMSG_DONE`. An `NLMSG_ERROR` with an errno is the error.
pub(crate) fn ask(request: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let socket = netlink::socket(libc::NETLINK_ROUTE, 0)?;
    netlink::set_receive_timeout(&socket, ANSWER_TIMEOUT)?;
    netlink::send(&socket, request)?;
    let dump = u16::from_ne_bytes([request[6], request[7]]) & (libc::NLM_F_DUMP as u16) != 0;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while out.len() < MAX_ANSWERS {
        let got = netlink::receive(&socket, &mut buf)?;
        if got == 0 {
            break;
        }
        for message in netlink::messages(&buf[..got]) {
            match message.kind {
                k if k == libc::NLMSG_DONE as u16 => return Ok(out),
                k if k == libc::NLMSG_ERROR as u16 => {
                    return match netlink::error_code(message.payload) {
                        Some(0) | None => Ok(out),
                        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
                    };
                }
                kind => out.push((kind, message.payload.to_vec())),
            }
        }
        if !dump {
            return Ok(out);
        }
    }
    Ok(out)
}

/// The attributes (`rtattr`/`nlattr`) packed in `buf`: (type without the nested/byte-order
/// bits, value). A truncated attribute ends the list.
pub(crate) fn attributes(buf: &[u8]) -> Vec<(u16, &[u8])> {
    netlink::attrs(buf).collect()
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_an_acked_delqdisc_of_clsact() {
        let msg = del_clsact_request(7, 1);
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), RTM_DELQDISC);
        assert_eq!(i32::from_ne_bytes(msg[20..24].try_into().unwrap()), 7, "ifindex");
        assert_eq!(u32::from_ne_bytes(msg[28..32].try_into().unwrap()), TC_H_CLSACT, "parent");
        assert_eq!(&msg[40..46], b"clsact");
    }

    /// Real kernel: adds a clsact qdisc to a veth of a namespace of its own, deletes it
    /// through [`delete_clsact`], and checks with the kernel that it is gone.
    #[test]
    fn deletes_a_real_clsact_qdisc() {
        use std::process::Command;
        let Some(scratch) = crate::kernel::netns::ScratchNetns::create("rtnl", "deletes_a_real_clsact_qdisc") else { return };
        let ns = scratch.0.clone();
        let ip = crate::kernel::netns::ScratchNetns::ip;
        assert!(ip(&["-n", &ns, "link", "add", "trt0", "type", "veth", "peer", "name", "trt1"]));
        assert!(Command::new("ip").args(["netns", "exec", &ns, "tc", "qdisc", "add", "dev", "trt0", "clsact"]).status().unwrap().success());
        let netns = crate::kernel::netns::Netns::parse(&ns);
        let guard = netns.enter().expect("entering the test namespace");
        delete_clsact("trt0").expect("deleting clsact");
        let again = delete_clsact("trt0").expect_err("a second delete finds nothing");
        assert!(matches!(again.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)), "{again}");
        assert_eq!(delete_clsact("nosuchdev0").unwrap_err().raw_os_error(), Some(libc::ENODEV));
        drop(guard);
        let shown = Command::new("ip").args(["netns", "exec", &ns, "tc", "qdisc", "show", "dev", "trt0", "clsact"]).output().unwrap();
        assert!(String::from_utf8_lossy(&shown.stdout).trim().is_empty(), "clsact still there: {shown:?}");
    }
}
