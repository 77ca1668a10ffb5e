//! The flow filter (`--ip`, `--port`, `--proto`), the pod filter and the node scope (`--netns`,
//! `--this-node`), applied before anything is copied.

use aya_ebpf::{macros::map, maps::HashMap};
use tracer_common::{
    filter::{Cidr, FlowFilter, MAX_CIDRS, MAX_POD_ADDRS, MAX_POD_NETNS, MAX_SCOPE_NETNS, PodAddrKey},
    flow::{RawFlow, RawTunnel},
};

/// Addresses of the selected pods; userspace adds and removes them as pods come and go.
#[map]
static POD_ADDRS: HashMap<PodAddrKey, u8> = HashMap::with_max_entries(MAX_POD_ADDRS, 0);

/// Network-namespace inodes of the selected pods (not host-network ones: theirs is the node's).
#[map]
static POD_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_POD_NETNS, 0);

/// Network-namespace inodes of the node scope (`--netns`, `--this-node`); userspace keeps it
/// current as pods come and go.
#[map]
static NETNS_SCOPE: HashMap<u32, u8> = HashMap::with_max_entries(MAX_SCOPE_NETNS, 0);

/// Set by the loader before load; all zero matches everything.
#[unsafe(no_mangle)]
static FLOW_FILTER: FlowFilter = FlowFilter {
    cidrs: [Cidr { net: [0; 4], mask: [0; 4], family: 0, _pad: [0; 3] }; MAX_CIDRS],
    n_cidrs: 0,
    port: 0,
    proto: 0,
    pods: 0,
    netns: 0,
    _pad: [0; 3],
};

macro_rules! filter_field {
    ($($path:tt)+) => {
        // SAFETY: FLOW_FILTER is a static of plain integers.
        unsafe { core::ptr::read_volatile(&raw const FLOW_FILTER.$($path)+) }
    };
}

#[inline(always)]
fn words(addr: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ]
}

/// Whether `addr` is in CIDR `i`. Fields are read one by one into registers: copying whole
/// `Cidr`s (36 bytes each, loop unrolled) would take most of the 512-byte stack.
#[inline(always)]
fn in_cidr(i: usize, family: u8, addr: &[u32; 4]) -> bool {
    filter_field!(cidrs[i].family) == family
        && addr[0] & filter_field!(cidrs[i].mask[0]) == filter_field!(cidrs[i].net[0])
        && addr[1] & filter_field!(cidrs[i].mask[1]) == filter_field!(cidrs[i].net[1])
        && addr[2] & filter_field!(cidrs[i].mask[2]) == filter_field!(cidrs[i].net[2])
        && addr[3] & filter_field!(cidrs[i].mask[3]) == filter_field!(cidrs[i].net[3])
}

#[inline(always)]
fn pod_addr(family: u8, addr: &[u8; 16]) -> bool {
    let key = PodAddrKey { addr: *addr, family, _pad: [0; 3] };
    // SAFETY: the value is only tested for presence, never held across a map update.
    unsafe { POD_ADDRS.get(&key) }.is_some()
}

/// Whether the network namespace an event was seen in is in the node scope (always, without
/// one). An event with no namespace (0) is outside any scope. A packet's namespace is known
/// before any of its headers is read: programs ask this first, so that a node's drops of other
/// nodes' namespaces (kind, k3d: one kernel) cost no parse.
#[inline(always)]
pub(crate) fn in_scope(netns: u32) -> bool {
    // SAFETY: presence test only.
    filter_field!(netns) == 0 || (netns != 0 && unsafe { NETNS_SCOPE.get(&netns) }.is_some())
}

/// Whether the packet touches a selected pod and was seen in the node scope (pods and scope
/// are two filters: both must pass).
#[inline(always)]
pub(crate) fn matches_pods(flow: &RawFlow, netns: u32) -> bool {
    in_scope(netns) && touches_pods(flow, netns)
}

/// Whether the packet touches a selected pod: by either address, or by the network namespace it
/// was seen in (which catches what a pod sends before NAT and traffic without pod addresses).
#[inline(always)]
fn touches_pods(flow: &RawFlow, netns: u32) -> bool {
    if filter_field!(pods) == 0 {
        return true;
    }
    // SAFETY: presence test only.
    if netns != 0 && unsafe { POD_NETNS.get(&netns) }.is_some() {
        return true;
    }
    flow.family != 0 && (pod_addr(flow.family, &flow.saddr) || pod_addr(flow.family, &flow.daddr))
}

/// [`matches_pods`] for a packet that may be encapsulated: the inner flow, or the outer headers'
/// addresses (a node's, for a host-network pod); the scope is the namespace's either way.
#[inline(always)]
pub(crate) fn matches_pods_packet(flow: &RawFlow, tunnel: &RawTunnel, netns: u32) -> bool {
    in_scope(netns) && touches_pods_packet(flow, tunnel, netns)
}

/// The pod half of [`matches_pods_packet`], for a program that checked [`in_scope`] already.
#[inline(always)]
pub(crate) fn touches_pods_packet(flow: &RawFlow, tunnel: &RawTunnel, netns: u32) -> bool {
    touches_pods(flow, netns) || (tunnel.kind != 0 && (pod_addr(tunnel.family, &tunnel.saddr) || pod_addr(tunnel.family, &tunnel.daddr)))
}

/// Whether any filter needs the packet's headers (addresses, port, protocol, pods). Without one,
/// every drop in scope is one the user asked for, so the rate budget can decide before the parse.
#[inline(always)]
pub(crate) fn needs_headers() -> bool {
    filter_field!(n_cidrs) != 0 || filter_field!(port) != 0 || filter_field!(proto) != 0 || filter_field!(pods) != 0
}

/// Whether `flow` passes the configured address, port and protocol filter.
#[inline(always)]
pub(crate) fn matches(flow: &RawFlow) -> bool {
    matches_headers(flow.family, flow.l4_proto, flow.sport, flow.dport, &flow.saddr, &flow.daddr)
}

/// [`matches`] for a packet that may be encapsulated: the inner flow or the outer headers (a
/// user may name the pods' addresses or the nodes', the pods' ports or the tunnel's).
#[inline(always)]
pub(crate) fn matches_packet(flow: &RawFlow, tunnel: &RawTunnel) -> bool {
    matches(flow) || (tunnel.kind != 0 && matches_headers(tunnel.family, tunnel.l4_proto, tunnel.sport, tunnel.dport, &tunnel.saddr, &tunnel.daddr))
}

#[inline(always)]
fn matches_headers(family: u8, l4_proto: u8, sport: u16, dport: u16, saddr: &[u8; 16], daddr: &[u8; 16]) -> bool {
    let proto = filter_field!(proto);
    if proto != 0 && l4_proto != proto {
        return false;
    }
    let port = filter_field!(port);
    if port != 0 && sport != port && dport != port {
        return false;
    }
    let n = filter_field!(n_cidrs) as usize;
    if n == 0 {
        return true;
    }
    let saddr = words(saddr);
    let daddr = words(daddr);
    for i in 0..MAX_CIDRS {
        if i >= n {
            break;
        }
        if in_cidr(i, family, &saddr) || in_cidr(i, family, &daddr) {
            return true;
        }
    }
    false
}

/// [`matches`] and [`matches_pods`] as one BPF subprogram: programs that filter more than one
/// flow would otherwise inline the filter's temporaries twice and pass the 512-byte stack.
#[inline(never)]
pub(crate) fn passes(flow: &RawFlow, netns: u32) -> bool {
    matches(flow) && matches_pods(flow, netns)
}

/// [`passes`] for a packet that may be encapsulated ([`matches_packet`], [`matches_pods_packet`]).
#[inline(never)]
pub(crate) fn passes_packet(flow: &RawFlow, tunnel: &RawTunnel, netns: u32) -> bool {
    matches_packet(flow, tunnel) && matches_pods_packet(flow, tunnel, netns)
}
