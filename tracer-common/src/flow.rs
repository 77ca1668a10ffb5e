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
/// IPv4 in IP (IPIP: Calico's `tunl0`, `ipip` devices).
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6 in IP (`sit` devices, 6in4).
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_GRE: u8 = 47;

/// Ethertypes (host byte order).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// TCP header flags (the header's byte 13), as [`RawFlow::tcp_flags`] carries them.
pub mod tcp_flag {
    /// No more data from the sender.
    pub const FIN: u8 = 0x01;
    /// Synchronise sequence numbers: opens a connection (with ACK: answers an opening).
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push the data to the application.
    pub const PSH: u8 = 0x08;
    /// The acknowledgement number is valid: every segment after the first SYN has it.
    pub const ACK: u8 = 0x10;
    /// The urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECN echo.
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced.
    pub const CWR: u8 = 0x80;
}

/// Byte offset of the flags in a TCP header: the ports (0..4), sequence and acknowledgement
/// numbers (4..12) and the data offset (12) come first, so one load of
/// [`TCP_HEADER_TO_FLAGS`] bytes has the ports and the flags.
pub const TCP_FLAGS_OFFSET: usize = 13;
/// Bytes of a TCP header up to and including its flags.
pub const TCP_HEADER_TO_FLAGS: usize = TCP_FLAGS_OFFSET + 1;

/// The flow of one packet. Addresses are in network byte order; an IPv4 address fills the first
/// 4 bytes. Ports are in host byte order. For ICMP/ICMPv6 the ports are 0 and `icmp_type` /
/// `icmp_code` are set. For TCP parsed from a packet, `tcp_flags` holds the header's flags and
/// `has_tcp_flags` is 1; a flow made from a socket or a conntrack tuple has no segment, so no
/// flags (`has_tcp_flags` 0: all eight bits are flags, so 0 cannot mean "unknown"). For an
/// encapsulated packet the flow is the inner (pod) one, and the event's [`RawTunnel`] beside it
/// holds the outer headers.
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
    /// TCP flags ([`tcp_flag`]) of the segment, valid when `has_tcp_flags` is 1.
    pub tcp_flags: u8,
    /// 1 when `tcp_flags` was read from the packet's TCP header, else 0.
    pub has_tcp_flags: u8,
    pub _pad: [u8; 4],
}
// The layout is the kernel/user protocol: the two flag bytes took two of the six padding bytes
// after `icmp_code`, so every other field kept its offset and the size is unchanged.
const _: () = assert!(size_of::<RawFlow>() == 48);
const _: () = assert!(core::mem::offset_of!(RawFlow, icmp_code) == 41);
const _: () = assert!(core::mem::offset_of!(RawFlow, tcp_flags) == 42);
const _: () = assert!(core::mem::offset_of!(RawFlow, has_tcp_flags) == 43);

/// Encapsulations the packet parser recognises (`RawTunnel::kind`).
pub mod tunnel {
    /// Not encapsulated (or not in a way the parser knows).
    pub const NONE: u8 = 0;
    /// VXLAN over UDP (4789, flannel's 8472, or a port the loader configured).
    pub const VXLAN: u8 = 1;
    /// Geneve over UDP (6081 or a configured port).
    pub const GENEVE: u8 = 2;
    /// IPv4 or IPv6 in IPv4/IPv6 (protocols 4 and 41: ipip, sit, ip6tnl).
    pub const IPIP: u8 = 3;
    /// GRE (protocol 47), Ethernet or IP inside.
    pub const GRE: u8 = 4;

    /// Most UDP ports per encapsulation the loader can configure.
    pub const MAX_PORTS: usize = 4;
    /// IANA's VXLAN port, and the one Linux and flannel (before they agreed on it) use.
    pub const VXLAN_PORT: u16 = 4789;
    pub const VXLAN_PORT_LINUX: u16 = 8472;
    pub const GENEVE_PORT: u16 = 6081;
}

/// The outer headers of an encapsulated packet (kind [`tunnel::NONE`] for a packet that was not):
/// addresses as in [`RawFlow`], the outer UDP ports
/// for VXLAN and Geneve (0 otherwise), and the VNI (VXLAN, Geneve) or key (GRE) when it has one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawTunnel {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// VNI (24 bits) or GRE key; valid when `has_vni` is 1.
    pub vni: u32,
    /// One of [`tunnel`]'s kinds.
    pub kind: u8,
    /// The outer family ([`FAMILY_IPV4`] or [`FAMILY_IPV6`]).
    pub family: u8,
    /// The outer IP protocol (UDP, IPIP, IPv6, GRE).
    pub l4_proto: u8,
    pub has_vni: u8,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<RawTunnel>() == 48);

/// The UDP ports the packet parser takes for VXLAN and Geneve (`TUNNEL_PORTS`, set by the
/// loader from `--vxlan-port`/`--geneve-port`); 0 is an unused slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelPorts {
    pub vxlan: [u16; tunnel::MAX_PORTS],
    pub geneve: [u16; tunnel::MAX_PORTS],
}
const _: () = assert!(size_of::<TunnelPorts>() == 4 * tunnel::MAX_PORTS);

impl TunnelPorts {
    /// The standard ports: VXLAN 4789 and 8472, Geneve 6081.
    pub const DEFAULT: Self = Self { vxlan: [tunnel::VXLAN_PORT, tunnel::VXLAN_PORT_LINUX, 0, 0], geneve: [tunnel::GENEVE_PORT, 0, 0, 0] };
}

impl Default for TunnelPorts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(feature = "user")]
user_pod!(RawFlow, RawTunnel, TunnelPorts);
