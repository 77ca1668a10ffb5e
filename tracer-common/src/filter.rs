//! The flow filter every packet probe applies in the kernel before it copies an event.

/// Most CIDRs `--ip` may give; the kernel loop is bounded by this.
pub const MAX_CIDRS: usize = 8;

/// One CIDR, pre-masked by the loader so the kernel only does `addr & mask == net`.
/// Words hold the address bytes in network order, as loaded by a plain `u32` read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cidr {
    pub net: [u32; 4],
    pub mask: [u32; 4],
    /// `crate::flow::FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<Cidr>() == 36);

/// A packet matches when every set part matches: proto (0 = any), port (0 = any, else source or
/// destination), CIDRs (none = any, else source or destination in one of them), pods (0 = any,
/// else source or destination address in the pod address map, or the packet's network namespace
/// in the pod netns map; both maps are kept current by userspace as pods come and go).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub cidrs: [Cidr; MAX_CIDRS],
    pub n_cidrs: u32,
    pub port: u16,
    pub proto: u8,
    /// 1 when a pod selection (`--pod`, `--namespace`, `--selector`) is active.
    pub pods: u8,
    /// 1 when a node scope (`--netns`, `--this-node`) is active: only packets and sockets seen in
    /// a network namespace of the netns scope map pass, whatever else matches (an AND with the
    /// other parts).
    pub netns: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FlowFilter>() == 36 * MAX_CIDRS + 12);

impl FlowFilter {
    /// True when nothing is filtered.
    pub const fn is_empty(&self) -> bool {
        self.n_cidrs == 0 && self.port == 0 && self.proto == 0 && self.pods == 0 && self.netns == 0
    }
}

/// Key of the pod address map: an address as the packet carries it (IPv4 in the first 4 bytes,
/// the rest zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PodAddrKey {
    pub addr: [u8; 16],
    /// `crate::flow::FAMILY_IPV4` or `FAMILY_IPV6`.
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<PodAddrKey>() == 20);

/// Capacity of the pod address map (selected pods' IPs).
pub const MAX_POD_ADDRS: u32 = 8192;
/// Capacity of the pod network-namespace map (selected pods' netns inodes).
pub const MAX_POD_NETNS: u32 = 4096;
/// Capacity of the node-scope map (`--netns` inodes, or with `--this-node` tracer's own
/// namespace and every pod's of this node): a node runs at most a few hundred pods.
pub const MAX_SCOPE_NETNS: u32 = 4096;

#[cfg(feature = "user")]
user_pod!(Cidr, FlowFilter, PodAddrKey);
