//! MTU family: frag-needed / packet-too-big ICMP errors this node sends (icmp:icmp_send as a BTF
//! tracepoint, kernel >= 6.10; tc egress for ICMPv6), receives (tc ingress) or drops (kfree_skb),
//! packets dropped with `SKB_DROP_REASON_PKT_TOO_BIG` (kernel >= 6.3 names it), and packets
//! longer than their device's MTU (tc, `bpf_check_mtu`, kernel >= 5.12).

use crate::{
    drop::IFNAMSIZ,
    event::EventHeader,
    flow::{RawFlow, RawTunnel},
};

/// `MtuEvent::event` values; userspace prints the CONTRACT's names.
pub mod event {
    /// This node sent a frag-needed (ICMP 3/4) or packet-too-big (ICMPv6 2).
    pub const FRAG_NEEDED_SENT: u8 = 1;
    /// One came in on a traced device (for this node, or forwarded through it).
    pub const FRAG_NEEDED_RECEIVED: u8 = 2;
    /// One was dropped here (kfree_skb with a reason): the sender never learns the path MTU.
    pub const FRAG_NEEDED_DROPPED: u8 = 3;
    /// A packet dropped with SKB_DROP_REASON_PKT_TOO_BIG.
    pub const TOO_BIG_DROP: u8 = 4;
    /// A packet longer than the MTU of the traced device it was on.
    pub const OVERSIZE: u8 = 5;
}

/// `MtuEvent::hook`: where the event was seen.
pub mod hook {
    pub const ICMP_SEND: u8 = 1;
    pub const TC_INGRESS: u8 = 2;
    pub const TC_EGRESS: u8 = 3;
    pub const KFREE_SKB: u8 = 4;
}

/// One MTU event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MtuEvent {
    pub header: EventHeader,
    /// The flow the problem is about: for an ICMP error the original packet quoted in its
    /// payload (the sender that must shrink its packets is `saddr`), else the packet itself.
    pub flow: RawFlow,
    /// The outer headers when `flow`'s packet was encapsulated (for an ICMP error: the quoted packet's).
    pub tunnel: RawTunnel,
    /// The ICMP error's own source and destination (family as `flow`); zero when not an ICMP
    /// error or not known (an error being sent has no source address yet).
    pub icmp_src: [u8; 16],
    pub icmp_dst: [u8; 16],
    /// Packet length in bytes: the IP packet's length (the frame's for a GSO packet at tc).
    pub len: u32,
    /// The MTU that applies: the ICMP error's MTU field, or the route's/device's MTU; 0 unknown.
    pub mtu: u32,
    /// The MTU of the device in `ifindex`; 0 unknown.
    pub dev_mtu: u32,
    /// Network namespace inode of the device (0 at tc: userspace knows where it attached).
    pub netns: u32,
    pub ifindex: u32,
    /// `enum skb_drop_reason` for FRAG_NEEDED_DROPPED and TOO_BIG_DROP.
    pub reason: u32,
    pub ifname: [u8; IFNAMSIZ],
    /// One of [`event`].
    pub event: u8,
    /// One of [`hook`].
    pub hook: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<MtuEvent>() == 16 + 96 + 32 + 24 + IFNAMSIZ + 8);

/// Read-only configuration of the MTU programs, set by the loader before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MtuConfig {
    /// 1 when filled.
    pub valid: u32,
    /// tp_btf/icmp_send argument positions ([`MtuConfig::ABSENT`]: no such tracepoint).
    pub icmp_skb_arg: u32,
    pub icmp_type_arg: u32,
    pub icmp_code_arg: u32,
    /// `enum skb_drop_reason` values: PKT_TOO_BIG ([`MtuConfig::ABSENT`] when the kernel has
    /// none) and the reasons that are not drops of interest (NOT_SPECIFIED, SKB_CONSUMED).
    pub reason_pkt_too_big: u32,
    pub reason_not_specified: u32,
    pub reason_consumed: u32,
    /// 1: tc egress reports IPv4 frag-needed this node generated as sent (no icmp_send
    /// tracepoint on this kernel). ICMPv6 packet-too-big has no tracepoint: always from tc.
    pub egress_sent_v4: u32,
}
const _: () = assert!(size_of::<MtuConfig>() == 32);

impl MtuConfig {
    pub const ABSENT: u32 = u32::MAX;

    /// A config that reports nothing until the loader fills it.
    pub const fn empty() -> Self {
        Self {
            valid: 0,
            icmp_skb_arg: Self::ABSENT,
            icmp_type_arg: Self::ABSENT,
            icmp_code_arg: Self::ABSENT,
            reason_pkt_too_big: Self::ABSENT,
            reason_not_specified: Self::ABSENT,
            reason_consumed: Self::ABSENT,
            egress_sent_v4: 0,
        }
    }
}

impl Default for MtuConfig {
    fn default() -> Self {
        Self::empty()
    }
}

/// ICMP type/code of "fragmentation needed" (RFC 792) and ICMPv6 "packet too big" (RFC 4443).
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMPV6_PKT_TOOBIG: u8 = 2;

#[cfg(feature = "user")]
user_pod!(MtuEvent, MtuConfig);
