//! Packet drops: skb:kfree_skb (tracepoint since 2.6; `reason` since 5.17, `rx_sk` since 6.11).

use crate::{
    event::EventHeader,
    flow::{RawFlow, RawTunnel},
};

/// Size of `ifname`, the kernel's IFNAMSIZ.
pub const IFNAMSIZ: usize = 16;

/// Reasons below this are selected by the bitmap in [`DropConfig`]; larger values (subsystem
/// reasons, `SKB_DROP_REASON_SUBSYS_*` << 16) by [`DropConfig::high_reasons`].
pub const REASON_BITMAP_BITS: u32 = 1024;

/// Which hook the drops program uses; the loader picks one at run time.
pub mod hook {
    /// BTF tracepoint `tp_btf/kfree_skb`: args by position, positions read from BTF.
    pub const TP_BTF: u32 = 1;
    /// Classic tracepoint `skb/kfree_skb`: record offsets read from the tracefs format file.
    pub const TRACEPOINT: u32 = 2;
}

/// One dropped packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub header: EventHeader,
    /// Kernel address that freed the skb (`location` argument).
    pub location: u64,
    /// `enum skb_drop_reason` value (0 when the kernel has no reasons).
    pub reason: u32,
    /// skb->len.
    pub len: u32,
    /// Network namespace inode of the device (or of the socket when there is no device); 0 unknown.
    pub netns: u32,
    /// Device ifindex; 0 when the skb had no device.
    pub ifindex: u32,
    /// Device name, NUL-padded.
    pub ifname: [u8; IFNAMSIZ],
    pub flow: RawFlow,
    /// The outer headers when the dropped packet was encapsulated.
    pub tunnel: RawTunnel,
    /// The conntrack entry the packet carried, for netfilter drops: 0 when it had none (or the
    /// layout is unknown), else [`CT_PRESENT`] | the entry's `enum ip_conntrack_status` bits.
    /// A drop with no entry, or with one never confirmed, may be conntrack's own (table full,
    /// insert failed, invalid); userspace tells which from the namespace's conntrack counters.
    pub ct: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<DropEvent>() == 16 + 8 + 16 + IFNAMSIZ + 96 + 8);

/// A drop the ring buffer had no room for, counted in the kernel instead (storm mode): the
/// `DROP_STORM` per-CPU hash map's key. Userspace sums it per key at stop, so a storm still ends
/// with exact counts per reason, location and namespace. Kernel >= 4.6 (per-CPU hash maps).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StormKey {
    /// [`DropEvent::location`].
    pub location: u64,
    /// [`DropEvent::reason`].
    pub reason: u32,
    /// [`DropEvent::netns`].
    pub netns: u32,
}
const _: () = assert!(size_of::<StormKey>() == 16);

/// Distinct (location, reason, netns) keys storm mode counts; a lost drop of a key beyond them
/// is counted as lost only (the summary says how many).
pub const STORM_ENTRIES: u32 = 4096;

/// The drop rate budget (`--max-rate`): drops per second the program delivers per CPU and per
/// (location, reason, netns) before it counts the rest in `DROP_COUNTED` instead. 0: no budget.
/// Chosen so that a storm costs at most this many events per second per CPU and place (~10 ms
/// of CPU per second on each side), far above the bounded bursts a person reads one by one.
pub const DEFAULT_MAX_RATE: u64 = 5_000;

/// The budget's window: a place may deliver `max_rate` drops per CPU in each window, counted
/// from its first drop in it (a fixed window, restarted by the first drop after it ends).
pub const BUDGET_WINDOW_NS: u64 = 1_000_000_000;

/// One place's budget on one CPU: the `DROP_BUDGET` per-CPU hash map's value, keyed by
/// [`StormKey`] (at most [`STORM_ENTRIES`] places; a place that finds the map full has no
/// budget: its drops are delivered, never dropped from the books).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BudgetPlace {
    /// Boot-time ns of the current window's first drop.
    pub start_ns: u64,
    /// Drops delivered in the current window.
    pub delivered: u64,
    /// Drops over the budget, counted instead of delivered, over the whole run.
    pub counted: u64,
}
const _: () = assert!(size_of::<BudgetPlace>() == 24);

/// Set in [`DropEvent::ct`] when the packet carried a conntrack entry (status bits below it).
pub const CT_PRESENT: u32 = 1 << 31;

/// Words in the reason bitmap (the `DROP_REASONS` array map).
pub const REASON_BITMAP_WORDS: u32 = REASON_BITMAP_BITS / 64;

/// Which reasons to report: bit `r` of word `r / 64` for `r` < [`REASON_BITMAP_BITS`]. Lives in
/// an array map rather than a global: the map lookup bounds the index for the verifier, which a
/// global array indexed by a computed word does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReasonFilter {
    pub words: [u64; REASON_BITMAP_WORDS as usize],
    /// Report reasons >= [`REASON_BITMAP_BITS`] (subsystem reasons).
    pub high: bool,
}

impl ReasonFilter {
    pub const NONE: Self = Self { words: [0; REASON_BITMAP_WORDS as usize], high: false };
    pub const ALL: Self = Self { words: [u64::MAX; REASON_BITMAP_WORDS as usize], high: true };

    pub fn wants(&self, reason: u32) -> bool {
        if reason >= REASON_BITMAP_BITS {
            return self.high;
        }
        self.words[(reason / 64) as usize] & (1u64 << (reason % 64)) != 0
    }

    pub fn select(&mut self, reason: u32) {
        if reason >= REASON_BITMAP_BITS {
            self.high = true;
        } else {
            self.words[(reason / 64) as usize] |= 1u64 << (reason % 64);
        }
    }

    pub fn unselect(&mut self, reason: u32) {
        if reason < REASON_BITMAP_BITS {
            self.words[(reason / 64) as usize] &= !(1u64 << (reason % 64));
        }
    }
}

/// Read-only configuration of the drops program, set by the loader before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropConfig {
    /// One of [`hook`].
    pub hook: u32,
    /// tp_btf: argument positions of skb, location and reason (`ABSENT`: the kernel's
    /// tracepoint has no such argument); the program loads them from the context at the
    /// positions every kernel has had, 0, 1 and 2, and the plan refuses a kernel with others.
    /// Classic tracepoint: byte offsets in the record.
    pub skb_arg: u32,
    pub location_arg: u32,
    pub reason_arg: u32,
    /// Report reasons >= [`REASON_BITMAP_BITS`]; smaller ones are looked up in `DROP_REASONS`.
    pub high_reasons: u32,
    /// `SKB_DROP_REASON_NETFILTER_DROP` on this kernel (`ABSENT`: no reasons, then every drop
    /// is looked at): the drops whose conntrack entry is read.
    pub netfilter_reason: u32,
    /// Offsets of `sk_buff._nfct` and `nf_conn.status` (`ABSENT`: conntrack's BTF unknown).
    pub skb_nfct: u32,
    pub ct_status: u32,
}
const _: () = assert!(size_of::<DropConfig>() == 32);

impl DropConfig {
    /// Marks an argument or field the running kernel's tracepoint does not have.
    pub const ABSENT: u32 = u32::MAX;

    /// A config that reports nothing until the loader fills it.
    pub const fn empty() -> Self {
        Self {
            hook: 0,
            skb_arg: Self::ABSENT,
            location_arg: Self::ABSENT,
            reason_arg: Self::ABSENT,
            high_reasons: 0,
            netfilter_reason: Self::ABSENT,
            skb_nfct: Self::ABSENT,
            ct_status: Self::ABSENT,
        }
    }
}

impl Default for DropConfig {
    fn default() -> Self {
        Self::empty()
    }
}

#[cfg(feature = "user")]
user_pod!(DropEvent, DropConfig, StormKey, BudgetPlace);
