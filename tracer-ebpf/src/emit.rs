//! The one ring buffer every family writes to, and the per-CPU counters that make losses visible.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf, ring_buf::RingBufEntry},
};
use tracer_common::event::counter;

/// Shared by all programs. The loader overrides the size (`--ring-buffer`); this default is
/// only what an object loaded without the loader would get.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// `counter::index(kind, slot)` -> count, per CPU so that incrementing needs no atomics.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::MAP_ENTRIES, 0);

/// Set by the loader: how much unread data in [`EVENTS`] makes a record wake the reader (an
/// eighth of the ring). The kernel's default wakes the reader for every record written into an
/// empty ring, which under a storm is one irq_work (a self-IPI: a VM exit in a virtual machine)
/// per event on the CPU that pays for the drop. Instead, a record wakes the reader only when it
/// takes the unread data past this mark; records below it wait for the reader's own timer
/// (`runner::POLL`, which bounds their latency). 0 (an object loaded without the loader): every
/// record is committed with the kernel's default.
#[unsafe(no_mangle)]
static RING_WAKE_BYTES: u64 = 0;

/// The flags a record of `T` is committed with (see [`RING_WAKE_BYTES`]).
#[inline(always)]
pub(crate) fn commit_flags<T>() -> u64 {
    // SAFETY: a read of a plain u64 static; volatile so the zero initialiser is not folded.
    let wake_at = unsafe { core::ptr::read_volatile(&raw const RING_WAKE_BYTES) };
    if wake_at == 0 {
        return 0;
    }
    // The record is reserved already, so it is counted in the unread data: this one crossed
    // the mark when the data before it was below. (Records of other CPUs reserved at the same
    // moment may jump over the mark together; the reader's timer then picks them up.)
    let record = (size_of::<T>() as u64 + 8 + 7) & !7;
    let avail = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if avail >= wake_at && avail < wake_at + record { u64::from(BPF_RB_FORCE_WAKEUP) } else { u64::from(BPF_RB_NO_WAKEUP) }
}

#[inline(always)]
pub(crate) fn count(kind: u16, slot: u32) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter::index(kind, slot)) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and programs do not nest on one
        // CPU for the same hook.
        unsafe { *value += 1 };
    }
}

/// Counts `event` as matched and copies it into the ring buffer, or counts it as lost when the
/// buffer is full. Never blocks. Returns whether the event went into the buffer.
#[inline(always)]
pub(crate) fn output<T: 'static>(kind: u16, event: &T) -> bool {
    count(kind, counter::MATCHED);
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            // SAFETY: T is a plain #[repr(C)] struct from tracer-common; copying it is a memcpy.
            unsafe { core::ptr::copy_nonoverlapping(event, entry.as_mut_ptr(), 1) };
            entry.submit(commit_flags::<T>());
            true
        }
        None => {
            count(kind, counter::LOST);
            false
        }
    }
}

/// Counts a matched event and reserves its record in the ring buffer, for programs that fill
/// the record in place (saves the stack copy); counts it as lost when the buffer is full. The
/// caller must write every field and submit it with [`commit_flags`].
#[inline(always)]
pub(crate) fn reserve<T: 'static>(kind: u16) -> Option<RingBufEntry<T>> {
    count(kind, counter::MATCHED);
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(kind, counter::LOST);
    }
    entry
}
