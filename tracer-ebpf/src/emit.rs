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

/// Records of one kind a CPU writes between two reads of the ring's fill level (a power of two).
/// The read is a helper call that loads the positions the reader moves; one in sixteen records
/// pays for it, and the wake-up comes at most sixteen records after the mark.
const FILL_EVERY: u64 = 16;

/// A record reserved in [`EVENTS`], to be filled in place and submitted.
pub(crate) struct Record<T: 'static> {
    entry: RingBufEntry<T>,
    /// This CPU's count of matched events of the record's kind, this one included: which
    /// records read the fill level.
    nth: u64,
}

impl<T: 'static> Record<T> {
    /// The record's memory. The caller must write every byte before [`Record::submit`]: the
    /// ring's memory holds older records.
    #[inline(always)]
    pub(crate) fn as_mut_ptr(&mut self) -> *mut T {
        self.entry.as_mut_ptr()
    }

    /// Hands the record to the reader, waking it if this record took the ring past the mark.
    #[inline(always)]
    pub(crate) fn submit(self) {
        self.entry.submit(commit_flags::<T>(self.nth));
    }
}

/// The flags a record of `T`, the `nth` of its kind on this CPU, is committed with (see
/// [`RING_WAKE_BYTES`]).
#[inline(always)]
fn commit_flags<T>(nth: u64) -> u64 {
    // SAFETY: a read of a plain u64 static; volatile so the zero initialiser is not folded.
    let wake_at = unsafe { core::ptr::read_volatile(&raw const RING_WAKE_BYTES) };
    if wake_at == 0 {
        return 0;
    }
    if nth & (FILL_EVERY - 1) != 0 {
        return u64::from(BPF_RB_NO_WAKEUP);
    }
    // The record is reserved already, so it is counted in the unread data. Since this CPU last
    // looked, its own FILL_EVERY records added FILL_EVERY * record bytes: if the reader read
    // nothing and no other CPU wrote, the unread data cannot have jumped over a window that wide
    // above the mark, and this look wakes the reader once. (With other CPUs writing meanwhile it
    // may jump over; the reader's timer then picks the records up.)
    let record = (size_of::<T>() as u64 + 8 + 7) & !7;
    let avail = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if avail >= wake_at && avail < wake_at + FILL_EVERY * record { u64::from(BPF_RB_FORCE_WAKEUP) } else { u64::from(BPF_RB_NO_WAKEUP) }
}

/// Adds one to this CPU's `counter::index(kind, slot)` and returns the new count (0 when the
/// slot is missing).
#[inline(always)]
pub(crate) fn count(kind: u16, slot: u32) -> u64 {
    match COUNTERS.get_ptr_mut(counter::index(kind, slot)) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and programs do not nest on one
        // CPU for the same hook.
        Some(value) => unsafe {
            *value += 1;
            *value
        },
        None => 0,
    }
}

/// Counts `event` as matched and copies it into the ring buffer, or counts it as lost when the
/// buffer is full. Never blocks. Returns whether the event went into the buffer.
#[inline(always)]
pub(crate) fn output<T: 'static>(kind: u16, event: &T) -> bool {
    match reserve::<T>(kind) {
        Some(mut record) => {
            // SAFETY: T is a plain #[repr(C)] struct from tracer-common; copying it is a memcpy.
            unsafe { core::ptr::copy_nonoverlapping(event, record.as_mut_ptr(), 1) };
            record.submit();
            true
        }
        None => false,
    }
}

/// Counts a matched event and reserves its record in the ring buffer, for programs that fill
/// the record in place (saves the stack copy); counts it as lost when the buffer is full. The
/// caller must write every field and [`Record::submit`] it.
#[inline(always)]
pub(crate) fn reserve<T: 'static>(kind: u16) -> Option<Record<T>> {
    let nth = count(kind, counter::MATCHED);
    match EVENTS.reserve::<T>(0) {
        Some(entry) => Some(Record { entry, nth }),
        None => {
            count(kind, counter::LOST);
            None
        }
    }
}
