//! Parsing a `struct sk_buff *` seen from a tracing program: device, namespace and the flow from
//! the packet's own headers. Offsets come from [`crate::kernel::OFFSETS`].

use tracer_common::flow::{
    ETH_P_IP, ETH_P_IPV6, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP, RawFlow,
};

use crate::kernel::{netns_inum, offset, read, read_buf};

/// skb->network_header when the kernel has not set it (`(u16)~0U`).
const HEADER_UNSET: u16 = 0xffff;

/// `sk_buff._nfct` is the conntrack entry's address with ctinfo in its low three bits.
pub const NFCT_PTRMASK: u64 = !7;

/// IPv6 extension headers we step over to find the transport header; bounded for the verifier.
const MAX_IPV6_EXT_HEADERS: usize = 4;

/// The device an skb is on: ifindex, name and the netns inode of the device.
#[derive(Default)]
pub struct Device {
    pub ifindex: u32,
    pub name: [u8; 16],
    pub netns: u32,
}

/// Reads skb->dev. Zeroes when the skb has no device.
#[inline(always)]
pub fn device(skb: *const u8) -> Device {
    let mut device = Device::default();
    let Ok(dev) = read::<*const u8>(skb, offset!(skb_dev)) else {
        return device;
    };
    if dev.is_null() {
        return device;
    }
    device.ifindex = read::<u32>(dev, offset!(net_device_ifindex)).unwrap_or(0);
    let _ = read_buf(dev, offset!(net_device_name), &mut device.name);
    if let Ok(net) = read::<*const u8>(dev, offset!(net_device_netns_ptr)) {
        device.netns = netns_inum(net);
    }
    device
}

/// The netns inode of skb->sk (0 when the skb has no socket).
#[inline(always)]
pub fn socket_netns(skb: *const u8) -> u32 {
    match read::<*const u8>(skb, offset!(skb_sk)) {
        Ok(sk) if !sk.is_null() => match read::<*const u8>(sk, offset!(sock_netns_ptr)) {
            Ok(net) => netns_inum(net),
            Err(_) => 0,
        },
        _ => 0,
    }
}

#[inline(always)]
pub fn len(skb: *const u8) -> u32 {
    read::<u32>(skb, offset!(skb_len)).unwrap_or(0)
}

/// Parses IPv4/IPv6 and TCP/UDP/ICMP/ICMPv6 headers. Leaves `family` at 0 for anything else
/// (ARP, a packet whose network header is not set yet, a read that faulted).
#[inline(always)]
pub fn flow(skb: *const u8) -> RawFlow {
    let mut flow = RawFlow::default();
    fill_flow(skb, &mut flow);
    flow
}

/// [`flow`] into `flow` (zeroed first): lets a program keep the flow in a per-CPU map value
/// rather than on its 512-byte stack.
#[inline(always)]
pub fn fill_flow(skb: *const u8, flow: &mut RawFlow) {
    *flow = RawFlow::default();
    let Ok(head) = read::<*const u8>(skb, offset!(skb_head)) else {
        return;
    };
    let Ok(network) = read::<u16>(skb, offset!(skb_network_header)) else {
        return;
    };
    if head.is_null() || network == HEADER_UNSET {
        return;
    }
    let ethertype = u16::from_be(read::<u16>(skb, offset!(skb_protocol)).unwrap_or(0));
    flow.ethertype = ethertype;
    let l3 = head.wrapping_add(network as usize);

    // Locally built packets can reach a drop point before skb->protocol is set: trust the
    // version nibble then, but only then (ARP's first byte would look like version 0).
    let version = match ethertype {
        ETH_P_IP => 4,
        ETH_P_IPV6 => 6,
        0 => read::<u8>(l3, 0).map(|b| b >> 4).unwrap_or(0),
        _ => 0,
    };
    let l4 = match version {
        4 => parse_ipv4(l3, flow),
        6 => parse_ipv6(l3, flow),
        _ => None,
    };
    if let Some(l4) = l4 {
        parse_l4(l4, flow);
    }
}

#[inline(always)]
fn parse_ipv4(l3: *const u8, flow: &mut RawFlow) -> Option<*const u8> {
    let mut hdr = [0u8; 20];
    read_buf(l3, 0, &mut hdr).ok()?;
    let ihl = (hdr[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return None;
    }
    flow.family = FAMILY_IPV4;
    flow.l4_proto = hdr[9];
    flow.saddr[..4].copy_from_slice(&hdr[12..16]);
    flow.daddr[..4].copy_from_slice(&hdr[16..20]);
    // A non-first fragment carries no transport header.
    let frag_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    if frag_offset != 0 {
        return None;
    }
    Some(l3.wrapping_add(ihl))
}

#[inline(always)]
fn parse_ipv6(l3: *const u8, flow: &mut RawFlow) -> Option<*const u8> {
    let mut hdr = [0u8; 40];
    read_buf(l3, 0, &mut hdr).ok()?;
    flow.family = FAMILY_IPV6;
    flow.saddr.copy_from_slice(&hdr[8..24]);
    flow.daddr.copy_from_slice(&hdr[24..40]);
    let mut next = hdr[6];
    let mut at = l3.wrapping_add(40);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, not counting
            // the first 8.
            0 | 43 | 60 => {
                let ext: [u8; 2] = read(at, 0).ok()?;
                next = ext[0];
                at = at.wrapping_add((ext[1] as usize + 1) * 8);
            }
            // Fragment header: fixed 8 bytes; only the first fragment has the transport header.
            44 => {
                let ext: [u8; 4] = read(at, 0).ok()?;
                next = ext[0];
                at = at.wrapping_add(8);
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    flow.l4_proto = next;
                    return None;
                }
            }
            _ => break,
        }
    }
    flow.l4_proto = next;
    Some(at)
}

#[inline(always)]
fn parse_l4(l4: *const u8, flow: &mut RawFlow) {
    match flow.l4_proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            if let Ok(ports) = read::<[u8; 4]>(l4, 0) {
                flow.sport = u16::from_be_bytes([ports[0], ports[1]]);
                flow.dport = u16::from_be_bytes([ports[2], ports[3]]);
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if let Ok(tc) = read::<[u8; 2]>(l4, 0) {
                flow.icmp_type = tc[0];
                flow.icmp_code = tc[1];
            }
        }
        _ => {}
    }
}
