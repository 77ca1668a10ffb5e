//! Kernel struct field offsets, read from the running kernel's BTF by the loader at start-up and
//! written into the programs' read-only globals before load. Nothing here is a default: a zero
//! `valid` means the loader did not fill it and the programs emit nothing.

/// Byte offsets of the fields the packet probes read. Nested members are already summed, e.g.
/// `net_device_netns_ptr` is `offsetof(struct net_device, nd_net) + offsetof(possible_net_t, net)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// 1 when the loader filled this struct.
    pub valid: u32,
    pub skb_len: u32,
    pub skb_head: u32,
    /// `skb->protocol` (__be16).
    pub skb_protocol: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub net_device_ifindex: u32,
    pub net_device_name: u32,
    /// `net_device.nd_net.net` (struct net *).
    pub net_device_netns_ptr: u32,
    /// `net.ns.inum`.
    pub net_ns_inum: u32,
    /// `sock.__sk_common.skc_net.net` (struct net *).
    pub sock_netns_ptr: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 14 * 4);
