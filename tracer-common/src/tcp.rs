//! TCP family: retransmits (tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack), resets
//! (tcp:tcp_send_reset, tcp:tcp_receive_reset) and failed connects (sock:inet_sock_set_state
//! SYN_SENT -> CLOSE), read from the socket through BTF offsets. Kernel >= 5.10 with BTF.

use crate::{event::EventHeader, flow::RawFlow};

/// `TcpEvent::direction` of a reset.
pub mod direction {
    pub const SENT: u8 = 1;
    pub const RECEIVED: u8 = 2;
}

/// One TCP event; `header.kind` is `RETRANSMIT`, `RESET` or `CONNECT_FAIL`. The flow is the
/// local socket's view: source = local address and port, destination = the peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpEvent {
    pub header: EventHeader,
    pub flow: RawFlow,
    /// Inode of the socket's network namespace.
    pub netns: u32,
    /// RETRANSMIT: retransmits of this flow so far (from the per-flow map). CONNECT_FAIL: the
    /// segments the socket sent (its SYNs; 0: the connect failed on this node before sending
    /// anything, e.g. no source port), [`SYNS_UNKNOWN`] where the kernel does not say.
    pub count: u32,
    /// CONNECT_FAIL: how long the socket was in SYN_SENT (0 when the start was not seen).
    pub duration_ns: u64,
    /// TCP state (`TCP_ESTABLISHED` = 1 ...): the socket's state when the event happened; for
    /// CONNECT_FAIL, the state it left.
    pub state: u8,
    /// [`direction`] for RESET.
    pub direction: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<TcpEvent>() == 88);

/// [`TcpEvent::count`] of a CONNECT_FAIL when the kernel has no `tcp_sock.segs_out`.
pub const SYNS_UNKNOWN: u32 = u32::MAX;

/// Argument positions (tp_btf context slots) of each hook, from BTF; [`TcpConfig::ABSENT`]
/// where the kernel's tracepoint has no such argument or does not exist.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpConfig {
    pub retransmit_sk: u32,
    pub synack_sk: u32,
    pub synack_req: u32,
    pub send_reset_sk: u32,
    pub send_reset_skb: u32,
    pub receive_reset_sk: u32,
    pub set_state_sk: u32,
    pub set_state_old: u32,
    pub set_state_new: u32,
    /// 1: send each retransmit to userspace; 0: only count it in the flow map (`--top`).
    pub stream_retransmits: u32,
}
const _: () = assert!(size_of::<TcpConfig>() == 40);

impl TcpConfig {
    pub const ABSENT: u32 = u32::MAX;

    pub const fn empty() -> Self {
        Self {
            retransmit_sk: Self::ABSENT,
            synack_sk: Self::ABSENT,
            synack_req: Self::ABSENT,
            send_reset_sk: Self::ABSENT,
            send_reset_skb: Self::ABSENT,
            receive_reset_sk: Self::ABSENT,
            set_state_sk: Self::ABSENT,
            set_state_old: Self::ABSENT,
            set_state_new: Self::ABSENT,
            stream_retransmits: 1,
        }
    }
}

/// Key of the per-flow map: the local socket's flow and namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u8,
    pub _pad: [u8; 3],
    pub netns: u32,
}
const _: () = assert!(size_of::<FlowKey>() == 44);

/// Per-flow counters, kept in an LRU map so a storm is summarised in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub first_ns: u64,
    pub last_ns: u64,
    pub retransmits: u64,
    pub resets: u64,
    pub connect_fails: u64,
    /// Last TCP state seen.
    pub state: u8,
    pub _pad: [u8; 7],
}
const _: () = assert!(size_of::<FlowStats>() == 48);

/// Capacity of the per-flow map (least recently updated flows are evicted beyond it).
pub const MAX_FLOWS: u32 = 16384;
/// Capacity of the map of sockets in SYN_SENT (to time failed connects).
pub const MAX_CONNECTING: u32 = 16384;

/// TCP states as the kernel numbers them (include/net/tcp_states.h; part of the uAPI through
/// tcp_info, so stable).
pub mod state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const CLOSE: u8 = 7;
    pub const SYN_RECV: u8 = 3;
    pub const NEW_SYN_RECV: u8 = 12;
}

#[cfg(feature = "user")]
user_pod!(TcpEvent, TcpConfig, FlowKey, FlowStats);
