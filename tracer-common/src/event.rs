//! The header that starts every record in the shared ring buffer.
//!
//! All probe families write into one ring buffer so that userspace sees one stream, in the order
//! the kernel produced it; the header's `kind` says which struct follows.

/// Record kinds: assigned with the families in [`crate::family`].
pub use crate::family::kind;

/// Counter slots in the per-CPU `COUNTERS` map: `kind * COUNTERS_PER_KIND + slot`.
pub mod counter {
    /// Events that passed the kernel-side filters (delivered + lost + counted).
    pub const MATCHED: u32 = 0;
    /// Events that matched but found the ring buffer full.
    pub const LOST: u32 = 1;
    /// Events that matched but were over the drop rate budget (`--max-rate`): counted in the
    /// kernel by place instead of delivered. seen = delivered + lost + counted.
    pub const COUNTED: u32 = 2;
    /// Slots reserved per kind.
    pub const PER_KIND: u32 = 4;
    /// Number of entries in the `COUNTERS` map (kinds 0..16).
    pub const MAP_ENTRIES: u32 = 16 * PER_KIND;

    /// Index of `slot` for record kind `kind`.
    #[inline(always)]
    pub const fn index(kind: u16, slot: u32) -> u32 {
        kind as u32 * PER_KIND + slot
    }
}

/// First 16 bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME) when the kernel saw the event.
    pub ts_ns: u64,
    /// One of [`kind`].
    pub kind: u16,
    /// CPU the event was recorded on.
    pub cpu: u16,
    pub _pad: [u8; 4],
}
const _: () = assert!(size_of::<EventHeader>() == 16);

#[cfg(feature = "user")]
user_pod!(EventHeader);
