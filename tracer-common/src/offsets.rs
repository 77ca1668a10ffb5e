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
    /// `sock_common` fields (also the start of `struct sock` and `struct request_sock`):
    /// `skc_daddr`, `skc_rcv_saddr` (__be32), `skc_dport` (__be16), `skc_num` (host order),
    /// `skc_family` (u16), `skc_state` (u8).
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_family: u32,
    pub skc_state: u32,
    /// `skc_v6_daddr`, `skc_v6_rcv_saddr`; [`Self::ABSENT`] on kernels built without IPv6.
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `sock.sk_protocol` (u16 since 5.6); [`Self::ABSENT`] where it is a bitfield.
    pub sk_protocol: u32,
    /// `net_device.mtu`.
    pub net_device_mtu: u32,
    /// `sk_buff._skb_refdst` (dst_entry pointer | SKB_DST_NOREF in bit 0).
    pub skb_refdst: u32,
    /// `dst_entry.dev` (struct net_device *) and `dst_entry._metrics` (u32 array pointer |
    /// flags in the low 2 bits).
    pub dst_dev: u32,
    pub dst_metrics: u32,
    /// `tcp_sock.segs_out` (u32: segments the socket sent, its SYNs while connecting);
    /// [`Self::ABSENT`] where the kernel has no such field.
    pub tcp_sock_segs_out: u32,
}
const _: () = assert!(size_of::<KernelOffsets>() == 27 * 4);

impl KernelOffsets {
    /// An optional field this kernel does not have.
    pub const ABSENT: u32 = u32::MAX;
}

#[cfg(feature = "user")]
user_pod!(KernelOffsets);
