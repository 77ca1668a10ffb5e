//! The one ring buffer every family writes to, and the per-CPU counters that make losses visible.

use aya_ebpf::{
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
            entry.submit(0);
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
/// caller must write every field and submit.
#[inline(always)]
pub(crate) fn reserve<T: 'static>(kind: u16) -> Option<RingBufEntry<T>> {
    count(kind, counter::MATCHED);
    let entry = EVENTS.reserve::<T>(0);
    if entry.is_none() {
        count(kind, counter::LOST);
    }
    entry
}
