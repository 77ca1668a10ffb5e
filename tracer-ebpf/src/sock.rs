//! Reading a `struct sock` (or the `sock_common` at the start of a `request_sock`): the local
//! socket's flow, state and namespace. Offsets come from [`crate::kernel::OFFSETS`].

use tracer_common::{
    flow::{FAMILY_IPV4, FAMILY_IPV6, IPPROTO_TCP, RawFlow},
    offsets::KernelOffsets,
};

use crate::kernel::{netns_inum, offset, read, read_buf};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The socket's flow as the local side sees it: source = local address and port.
#[inline(always)]
pub(crate) fn flow(sk: *const u8) -> RawFlow {
    let mut flow = RawFlow { l4_proto: IPPROTO_TCP, ..RawFlow::default() };
    let family = read::<u16>(sk, offset!(skc_family)).unwrap_or(0);
    flow.sport = read::<u16>(sk, offset!(skc_num)).unwrap_or(0);
    flow.dport = u16::from_be(read::<u16>(sk, offset!(skc_dport)).unwrap_or(0));
    match family {
        AF_INET => {
            flow.family = FAMILY_IPV4;
            let _ = read_buf(sk, offset!(skc_rcv_saddr), &mut flow.saddr[..4]);
            let _ = read_buf(sk, offset!(skc_daddr), &mut flow.daddr[..4]);
        }
        AF_INET6 if offset!(skc_v6_daddr) != KernelOffsets::ABSENT as usize => {
            flow.family = FAMILY_IPV6;
            let _ = read_buf(sk, offset!(skc_v6_rcv_saddr), &mut flow.saddr);
            let _ = read_buf(sk, offset!(skc_v6_daddr), &mut flow.daddr);
            // An IPv6 socket talking IPv4 holds v4-mapped addresses: show them as IPv4, as the
            // packets on the wire are.
            if is_v4_mapped(&flow.daddr) {
                flow.family = FAMILY_IPV4;
                unmap(&mut flow.saddr);
                unmap(&mut flow.daddr);
            }
        }
        _ => {}
    }
    flow
}

#[inline(always)]
fn is_v4_mapped(a: &[u8; 16]) -> bool {
    a[0] == 0
        && a[1] == 0
        && a[2] == 0
        && a[3] == 0
        && a[4] == 0
        && a[5] == 0
        && a[6] == 0
        && a[7] == 0
        && a[8] == 0
        && a[9] == 0
        && a[10] == 0xff
        && a[11] == 0xff
}

/// `::ffff:a.b.c.d` -> `a.b.c.d` in the IPv4 layout (first four bytes, rest zero), in place.
#[inline(always)]
fn unmap(a: &mut [u8; 16]) {
    a[0] = a[12];
    a[1] = a[13];
    a[2] = a[14];
    a[3] = a[15];
    a[4..].fill(0);
}

#[inline(always)]
pub(crate) fn state(sk: *const u8) -> u8 {
    read::<u8>(sk, offset!(skc_state)).unwrap_or(0)
}

/// The inode of the socket's network namespace.
#[inline(always)]
pub(crate) fn netns(sk: *const u8) -> u32 {
    match read::<*const u8>(sk, offset!(sock_netns_ptr)) {
        Ok(net) => netns_inum(net),
        Err(_) => 0,
    }
}

/// Whether a full `struct sock` is TCP (inet_sock_set_state also fires for SCTP). Kernels where
/// `sk_protocol` is a bitfield (< 5.6) cannot be asked: assume TCP, the states tell.
#[inline(always)]
pub(crate) fn is_tcp(sk: *const u8) -> bool {
    let off = offset!(sk_protocol);
    if off == KernelOffsets::ABSENT as usize {
        return true;
    }
    read::<u16>(sk, off).is_ok_and(|p| p == IPPROTO_TCP as u16)
}
