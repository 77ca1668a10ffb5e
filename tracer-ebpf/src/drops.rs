//! Packet drops from skb:kfree_skb: the reason, where in the kernel, and the packet's flow.

use core::mem::offset_of;

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{Array, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use tracer_common::{
    drop::{CT_PRESENT, DropConfig, DropEvent, REASON_BITMAP_BITS, REASON_BITMAP_WORDS, STORM_ENTRIES, StormKey, hook},
    event::{EventHeader, kind},
    flow::{RawFlow, RawTunnel},
};

use crate::{
    budget, emit, filter,
    kernel::{self, Kmem, Probe, Typed},
    skb::{self, Bytes},
};

/// Set by the loader: hook layout (argument positions or record offsets) and the reason filter.
#[unsafe(no_mangle)]
static DROP_CONFIG: DropConfig = DropConfig::empty();

macro_rules! config {
    ($($path:tt)+) => {
        // SAFETY: DROP_CONFIG is a static of plain integers.
        unsafe { core::ptr::read_volatile(&raw const DROP_CONFIG.$($path)+) }
    };
}

/// The reason bitmap, REASON_BITMAP_WORDS words, filled by the loader.
#[map]
static DROP_REASONS: Array<u64> = Array::with_max_entries(REASON_BITMAP_WORDS, 0);

/// Storm mode: drops the ring buffer had no room for, counted per (location, reason, netns).
#[map]
static DROP_STORM: PerCpuHashMap<StormKey, u64> = PerCpuHashMap::with_max_entries(STORM_ENTRIES, 0);

/// The event being built, per CPU and off the 512-byte stack: with a tunnel's outer headers it
/// is 160 bytes, and the parser's and filter's temporaries come on top.
#[map]
static DROP_SCRATCH: PerCpuArray<DropEvent> = PerCpuArray::with_max_entries(1, 0);

/// Counts a drop that was not delivered because the ring buffer was full.
#[inline(always)]
fn storm_count(key: &StormKey) {
    budget::count_at(&DROP_STORM, key);
}

#[inline(always)]
fn wants_reason(reason: u32) -> bool {
    if reason >= REASON_BITMAP_BITS {
        return config!(high_reasons) != 0;
    }
    match DROP_REASONS.get(reason / 64) {
        Some(bits) => bits & (1u64 << (reason % 64)) != 0,
        None => false,
    }
}

/// Reads the u64 at `base + off` of a classic tracepoint's record.
#[inline(always)]
fn read_slot(base: *const u8, off: u32) -> Result<u64, i64> {
    if off == DropConfig::ABSENT {
        return Ok(0);
    }
    kernel::read::<u64>(base, off as usize)
}

pub(crate) fn try_drop_tp_btf(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let Some((skb, location, reason)) = tp_btf_args(ctx) else { return Ok(()) };
    // The packet's headers through the window: one helper call for the parse.
    record(Typed, skb, location, reason, |skb| skb::network_window(Typed, skb, skb::window::DROPS, skb::WINDOW))
}

/// skb, location and reason of tp_btf/kfree_skb; None when DROP_CONFIG is not laid out for the
/// BTF tracepoint. Also used by the MTU family's own kfree_skb program. The skb is a BTF-typed
/// pointer ([`Typed`] reads through it).
#[inline(always)]
pub(crate) fn tp_btf_args(ctx: &BtfTracePointContext) -> Option<(*const u8, u64, u32)> {
    if config!(hook) != hook::TP_BTF {
        return None;
    }
    // Loads from the context at constant offsets: the only context access the verifier allows,
    // and the one that types the skb. kfree_skb has always been (skb, location[, reason[, rx_sk]]):
    // the plan refuses a kernel whose BTF says otherwise, and the classic tracepoint serves it.
    let skb = ctx.arg::<*const u8>(0);
    let location = ctx.arg::<u64>(1);
    let reason = if config!(reason_arg) == DropConfig::ABSENT { 0 } else { ctx.arg::<u64>(2) as u32 };
    Some((skb, location, reason))
}

pub(crate) fn try_drop_tp(ctx: &TracePointContext) -> Result<(), i64> {
    if config!(hook) != hook::TRACEPOINT {
        return Ok(());
    }
    let base = ctx.as_ptr() as *const u8;
    let skb = read_slot(base, config!(skb_arg))?;
    let location = read_slot(base, config!(location_arg))?;
    let reason_off = config!(reason_arg);
    let reason = if reason_off == DropConfig::ABSENT { 0 } else { kernel::read::<u32>(base, reason_off as usize)? };
    // The skb is an address in the record, not a typed pointer. This hook is for kernels
    // without BTF, where tp_btf cannot run: it parses one header at a time (the window's bounds
    // checks would take this program past LLVM's 512-byte stack).
    record(Probe, skb as *const u8, location, reason, |skb| skb::network_header(Probe, skb))
}

#[inline(always)]
fn record<M: Kmem, B: Bytes>(
    m: M,
    skb: *const u8,
    location: u64,
    reason: u32,
    headers: impl FnOnce(*const u8) -> Option<(B, u16)>,
) -> Result<(), i64> {
    if skb.is_null() || !kernel::offsets_valid() || !wants_reason(reason) {
        return Ok(());
    }
    // The node scope (--netns, --this-node) needs only the packet's namespace: a drop out of
    // scope leaves before any header is read.
    let dev = skb::dev_ptr(m, skb);
    let netns = skb::packet_netns(m, skb, dev);
    if !filter::in_scope(netns) {
        return Ok(());
    }
    // SAFETY: helper without preconditions.
    let ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    let place = StormKey { location, reason, netns };
    // The rate budget counts only drops the user asked for. Without a flow or pod filter that is
    // every drop in scope, so it is decided here and a counted drop costs no parse; with one, it
    // is decided once the filters passed. Either way before the event is built.
    let budget_first = !filter::needs_headers();
    if budget_first {
        if budget::counted_instead(&place, ts_ns) {
            return Ok(());
        }
        // No filter reads the headers (the always-on case): every drop here is delivered, so its
        // record is reserved now and the packet parsed straight into it, nothing copied after.
        deliver(m, &place, skb, dev, ts_ns, |event| {
            clear_packet(event);
            skb::fill_from(headers(skb), &mut event.flow, &mut event.tunnel);
        });
        return Ok(());
    }
    // A filter reads the headers: the packet is parsed into the per-CPU scratch, and only a drop
    // the filters keep is reserved (a record reserved and discarded for each refused drop would
    // hold ring space until the reader passed it, and be counted as lost when the ring is full).
    // Two parse sites rather than one with an optional record: a branch on whether the record
    // pointer is null is not pruned by 6.1's verifier, which then sees a second reservation
    // with the first one still held.
    let Some(scratch) = DROP_SCRATCH.get_ptr_mut(0) else { return Ok(()) };
    // SAFETY: the per-CPU scratch entry is ours for this program run.
    let scratch = unsafe { &mut *scratch };
    clear_packet(scratch);
    skb::fill_from(headers(skb), &mut scratch.flow, &mut scratch.tunnel);
    if !filter::matches_packet(&scratch.flow, &scratch.tunnel) || !filter::touches_pods_packet(&scratch.flow, &scratch.tunnel, netns) {
        return Ok(());
    }
    if budget::counted_instead(&place, ts_ns) {
        return Ok(());
    }
    deliver(m, &place, skb, dev, ts_ns, |event| copy_packet(scratch, event));
    Ok(())
}

/// Reserves the drop's record in the ring, has `packet` write its flow and tunnel, writes every
/// other field (the ring's memory holds older records' bytes) and submits it; when the ring is
/// full, counts the drop by `place` instead.
#[inline(always)]
fn deliver<M: Kmem>(m: M, place: &StormKey, skb: *const u8, dev: *const u8, ts_ns: u64, packet: impl FnOnce(&mut DropEvent)) {
    let Some(mut record) = emit::reserve::<DropEvent>(kind::DROP) else {
        storm_count(place);
        return;
    };
    // SAFETY: a reserved record of the right size, written whole below before submit.
    let event = unsafe { &mut *record.as_mut_ptr() };
    packet(event);
    let StormKey { location, reason, netns } = *place;
    event.header = EventHeader {
        ts_ns,
        kind: kind::DROP,
        // SAFETY: helper without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() } as u16,
        _pad: [0; 4],
    };
    event.location = location;
    event.reason = reason;
    event.len = skb::len(m, skb);
    event.netns = netns;
    if dev.is_null() {
        event.ifindex = 0;
        event.ifname = [0; 16];
    } else {
        skb::dev_identity(m, dev, &mut event.ifindex, &mut event.ifname);
    }
    event.ct = conntrack_of(m, skb, reason);
    event._pad = 0;
    record.submit();
}

/// The event's flow and tunnel, as 8-byte words: where they start and how many (both are
/// 8-aligned inside the event and adjacent, checked here).
const PACKET_FROM: usize = offset_of!(DropEvent, flow);
const PACKET_WORDS: usize = (size_of::<RawFlow>() + size_of::<RawTunnel>()) / 8;
const _: () = assert!(
    PACKET_FROM.is_multiple_of(8)
        && (size_of::<RawFlow>() + size_of::<RawTunnel>()).is_multiple_of(8)
        && offset_of!(DropEvent, tunnel) == PACKET_FROM + size_of::<RawFlow>()
);

/// The words of `event`'s flow and tunnel.
#[inline(always)]
fn packet_words(event: *mut DropEvent) -> *mut u64 {
    // SAFETY: DropEvent is 8-aligned (it holds u64s) and so is PACKET_FROM (checked above).
    unsafe { event.cast::<u8>().add(PACKET_FROM).cast::<u64>() }
}

/// Copies the flow and tunnel of the scratch event into the reserved record, with 8-byte loads
/// and stores (a `RawFlow` alone is align 2: LLVM would copy it two bytes at a time).
#[inline(always)]
fn copy_packet(from: &mut DropEvent, to: &mut DropEvent) {
    let (from, to) = (packet_words(from), packet_words(to));
    for i in 0..PACKET_WORDS {
        // SAFETY: both point at the words of a whole event; volatile so that LLVM does not
        // merge them into a memcpy call.
        unsafe { to.add(i).write_volatile(from.add(i).read_volatile()) };
    }
}

/// Zeroes the event's flow and tunnel with 8-byte stores: a `RawFlow` alone is align 2, and
/// LLVM zeroes one with a call to a byte-by-byte memset loop (four BPF instructions a byte: ~400
/// for the two).
#[inline(always)]
fn clear_packet(event: &mut DropEvent) {
    let words = packet_words(event);
    for i in 0..PACKET_WORDS {
        // SAFETY: the words of a whole event, for which all zero is a valid value; volatile so
        // that LLVM does not merge them back into a memset call.
        unsafe { words.add(i).write_volatile(0) };
    }
}

/// [`DropEvent::ct`]: the conntrack entry of a netfilter drop. Two loads, only for the drops
/// netfilter made (or every drop on kernels without reasons).
#[inline(always)]
fn conntrack_of<M: Kmem>(m: M, skb: *const u8, reason: u32) -> u32 {
    let (nfct_off, status_off) = (config!(skb_nfct), config!(ct_status));
    let netfilter = config!(netfilter_reason);
    if nfct_off == DropConfig::ABSENT || status_off == DropConfig::ABSENT || (netfilter != DropConfig::ABSENT && reason != netfilter) {
        return 0;
    }
    let Some(nfct) = m.get::<u64>(skb, nfct_off as usize) else { return 0 };
    // A value below a page is ctinfo alone (untracked), not an entry.
    let ct = (nfct & skb::NFCT_PTRMASK) as *const u8;
    if (ct as u64) < 4096 {
        return 0;
    }
    let status = kernel::read::<u32>(ct, status_off as usize).unwrap_or(0);
    CT_PRESENT | (status & !CT_PRESENT)
}
