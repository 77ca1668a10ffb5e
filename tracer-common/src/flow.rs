//! Packet addresses as the kernel programs parse them from an skb's headers.

/// `family` values.
pub const FAMILY_NONE: u8 = 0;
pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;

/// IP protocol numbers the programs parse further.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Ethertypes (host byte order).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// The flow of one packet. Addresses are in network byte order; an IPv4 address fills the first
/// 4 bytes. Ports are in host byte order. For ICMP/ICMPv6 the ports are 0 and `icmp_type` /
/// `icmp_code` are set.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawFlow {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// skb->protocol, host byte order (0 when unknown).
    pub ethertype: u16,
    /// [`FAMILY_NONE`], [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// IP protocol number (valid when `family` is not [`FAMILY_NONE`]).
    pub l4_proto: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<RawFlow>() == 48);

#[cfg(feature = "user")]
user_pod!(RawFlow);
