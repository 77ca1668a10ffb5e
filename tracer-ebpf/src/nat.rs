//! The NAT family: every transmitted packet's conntrack entry, reported once per NATed
//! connection and again when its reply/assured state changes. A packet without an entry costs
//! two loads; a later packet of a settled connection (see [`NAT_SETTLED`]) a few more and
//! an inlined array lookup, of one awaiting assured a read of its status word too; any other
//! conntracked packet one read of its entry.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
    programs::BtfTracePointContext,
};
use tracer_common::{
    event::{EventHeader, kind},
    flow::{FAMILY_IPV4, FAMILY_IPV6, RawFlow, RawTunnel},
    nat::{MAX_NAT_CONNS, NAT_SPAN, NatConfig, NatEvent, NatSeen, SETTLED_SLOTS},
};

use crate::{
    emit, filter,
    kernel::{Kmem as _, Typed, offset, read, read_buf},
    skb,
};

#[unsafe(no_mangle)]
static NAT_CONFIG: NatConfig = NatConfig {
    valid: 0,
    skb_arg: 0,
    skb_nfct: 0,
    ct_status: 0,
    ct_orig_tuple: 0,
    ct_reply_tuple: 0,
    tuple_src_u3: 0,
    tuple_src_port: 0,
    tuple_src_l3num: 0,
    tuple_dst_u3: 0,
    tuple_dst_port: 0,
    tuple_dst_protonum: 0,
    nat_mask: 0,
    report_mask: 0,
    span_fits: 0,
    ctinfo_established: NatConfig::NO_CTINFO,
    ctinfo_established_reply: NatConfig::NO_CTINFO,
};

macro_rules! config {
    ($field:ident) => {
        // SAFETY: NAT_CONFIG is a static of plain integers.
        unsafe { core::ptr::read_volatile(&raw const NAT_CONFIG.$field) }
    };
}

/// Connection (nf_conn address) -> what was last reported about it.
#[map]
static NAT_SEEN: LruHashMap<u64, NatSeen> = LruHashMap::with_max_entries(MAX_NAT_CONNS, 0);

/// This CPU's copy of a connection's [`NAT_SPAN`] bytes from the original tuple on (through the
/// status): the per-packet check's one read of the entry.
#[map]
static NAT_SPAN_COPY: PerCpuArray<[u8; NAT_SPAN]> = PerCpuArray::with_max_entries(1, 0);

/// What [`NAT_SEEN`] said last about a connection, cached per CPU in a small direct-mapped
/// table: a connection whose every packet is conntracked and NATed (a Service's) is checked with
/// an array lookup the verifier inlines instead of the LRU hash's lookup. A hint only: a miss
/// asks [`NAT_SEEN`], which decides; a hit is exactly the state [`NAT_SEEN`] last held for
/// that entry, so it says nothing new.
#[map]
static NAT_RECENT: PerCpuArray<Recent> = PerCpuArray::with_max_entries(RECENT_SLOTS, 0);

const RECENT_SLOTS: u32 = 256;

/// What a packet's read of its entry last found, by entry address, direct-mapped
/// ([`settled_slot`]): the address with [`SETTLED`] (not NATed, or NATed with its reply and
/// assured state both reported: nothing more to report) or [`AWAITING_ASSURED`] (NATed, new
/// and reply reported: only the assured bit can still change) set, or the bare address
/// (anything else). Any read of an entry that maps to the slot overwrites it.
///
/// A packet of a settled connection needs no read of its entry, and one awaiting assured only a
/// read of its status word. Only the entry's address is known without a read, and a freed
/// entry's address is soon reused for another connection, so the slot may describe the entry's
/// previous occupant. It is trusted only for a packet that cannot be a new entry's first sight
/// here, one sent after its connection's first reply:
/// - ctinfo ESTABLISHED (the original direction), from a local socket or forwarded: the
///   connection's first packet went out of a device the same way, before any reply existed,
///   with a NEW ctinfo, so its read rewrote the slot;
/// - ctinfo ESTABLISHED_REPLY and forwarded (no socket): the original direction was forwarded
///   out, the same argument. A locally delivered connection's first packet never leaves a
///   device, so its replies (from a local socket) are always read.
///
/// Global, not per CPU: the first packet and the later ones may run on different CPUs. Written
/// only when its value changes, so a settled connection's packets share the cache line without
/// writing it.
#[map]
static NAT_SETTLED: Array<u64> = Array::with_max_entries(SETTLED_SLOTS, 0);

/// The marks of [`NAT_SETTLED`], in the low bits of an entry's address (entries are 8-byte
/// aligned at least: `_nfct` keeps ctinfo there too).
const SETTLED: u64 = 1;
const AWAITING_ASSURED: u64 = 2;

/// One slot of [`NAT_RECENT`].
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Recent {
    ct: u64,
    seen: NatSeen,
}

/// [packet's flow, original-direction flow] for the filters; per CPU, off the 512-byte stack.
#[map]
static NAT_SCRATCH: PerCpuArray<RawFlow> = PerCpuArray::with_max_entries(2, 0);

/// The packet's outer headers when it is encapsulated, beside [`NAT_SCRATCH`] for the same reason.
#[map]
static NAT_TUNNEL: PerCpuArray<RawTunnel> = PerCpuArray::with_max_entries(1, 0);

const AF_INET: u16 = 2;

/// A tuple's addresses and ports as a flow, for the address filters.
#[inline(always)]
fn tuple_flow(ct: *const u8, tuple: u32, flow: &mut RawFlow) {
    let base = ct.wrapping_add(tuple as usize);
    let l3 = read::<u16>(base, config!(tuple_src_l3num) as usize).unwrap_or(0);
    flow.family = if l3 == AF_INET { FAMILY_IPV4 } else { FAMILY_IPV6 };
    flow.l4_proto = read::<u8>(base, config!(tuple_dst_protonum) as usize).unwrap_or(0);
    let _ = read_buf(base, config!(tuple_src_u3) as usize, &mut flow.saddr);
    let _ = read_buf(base, config!(tuple_dst_u3) as usize, &mut flow.daddr);
    if flow.family == FAMILY_IPV4 {
        flow.saddr[4..].fill(0);
        flow.daddr[4..].fill(0);
    }
    flow.sport = u16::from_be(read::<u16>(base, config!(tuple_src_port) as usize).unwrap_or(0));
    flow.dport = u16::from_be(read::<u16>(base, config!(tuple_dst_port) as usize).unwrap_or(0));
}

/// net:net_dev_start_xmit (skb, dev).
pub(crate) fn try_xmit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    if config!(valid) != 1 || !crate::kernel::offsets_valid() {
        return Ok(());
    }
    // The healthy packet's path makes no helper call: two loads without conntrack; with it, the
    // ctinfo, the socket and the settled table (NAT_SETTLED). Argument 0, read straight from the
    // context (a load at a fixed offset: what keeps the verifier's BTF type on the pointer); the
    // plan refuses a kernel whose BTF puts the skb elsewhere. `_nfct` read straight through that
    // typed pointer: the offset is a constant of the read-only NAT_CONFIG, so the verifier checks
    // it against sk_buff's BTF and the JIT emits one fault-safe load instead of a
    // bpf_probe_read_kernel call.
    let skb = ctx.arg::<*const u8>(0);
    if skb.is_null() {
        return Ok(());
    }
    let nfct_at = skb.wrapping_add(config!(skb_nfct) as usize).cast::<u64>();
    // SAFETY: a verifier-checked load of sk_buff::_nfct (see above); a fault reads as zero.
    let nfct = unsafe { core::ptr::read_volatile(nfct_at) };
    let ct = (nfct & skb::NFCT_PTRMASK) as *const u8;
    if ct.is_null() {
        return Ok(());
    }
    let key = ct as u64;
    let ctinfo = (nfct & !skb::NFCT_PTRMASK) as u32;
    let original = ctinfo == config!(ctinfo_established);
    let established = original || ctinfo == config!(ctinfo_established_reply);
    // See NAT_SETTLED: a reply is trusted only forwarded, not sent by a local socket.
    let trusted = original || (established && Typed.get::<u64>(skb, offset!(skb_sk)).is_some_and(|sk| sk == 0));
    let settled = NAT_SETTLED.get_ptr_mut(settled_slot(key));
    if trusted && let Some(slot) = settled {
        // SAFETY: an 8-byte aligned slot of a global array; one load.
        let known = unsafe { core::ptr::read_volatile(slot) };
        if known == key | SETTLED {
            return Ok(());
        }
        // Reply reported, assured not yet: the status word says whether that is still so.
        let report_mask = config!(report_mask);
        if known == key | AWAITING_ASSURED && read::<u32>(ct, config!(ct_status) as usize).is_ok_and(|st| st & report_mask != report_mask) {
            return Ok(());
        }
    }
    let Some((status, nat)) = connection_state(ct) else { return Ok(()) };
    if let Some(slot) = settled {
        let reported = status & config!(report_mask);
        let value = match (established, nat.is_some()) {
            (true, false) => key | SETTLED,
            (true, true) if reported == config!(report_mask) => key | SETTLED,
            (true, true) if reported != 0 => key | AWAITING_ASSURED,
            _ => key,
        };
        // SAFETY: as above; one 8-byte store (atomic on 64-bit architectures), made only when the
        // value changes.
        unsafe {
            if core::ptr::read_volatile(slot) != value {
                core::ptr::write_volatile(slot, value);
            }
        }
    }
    let Some(now_seen) = nat else { return Ok(()) };
    let slot = NAT_RECENT.get_ptr_mut(recent_slot(key));
    // SAFETY: this CPU's slot, read and written only by this program on this CPU.
    if slot.is_some_and(|r| unsafe { (*r).ct == key && (*r).seen == now_seen }) {
        return Ok(());
    }
    let remember = || {
        if let Some(r) = slot {
            // SAFETY: as above.
            unsafe { *r = Recent { ct: key, seen: now_seen } };
        }
    };
    // SAFETY: the value is compared at once, not held.
    if unsafe { NAT_SEEN.get(&key) }.is_some_and(|seen| *seen == now_seen) {
        remember();
        return Ok(());
    }
    remember();
    let _ = NAT_SEEN.insert(&key, &now_seen, 0);

    // Filters: the packet as sent, or the connection as the client opened it (before DNAT the
    // Service address, the client pod) — either may be what the user named.
    // Both flows live in per-CPU scratch, not on the stack: with filter::passes' frame on top,
    // 6.1 and 6.12 refuse more than 512 bytes for the two together.
    let (Some(flow), Some(original), Some(tunnel)) = (NAT_SCRATCH.get_ptr_mut(0), NAT_SCRATCH.get_ptr_mut(1), NAT_TUNNEL.get_ptr_mut(0)) else {
        return Ok(());
    };
    // SAFETY: the per-CPU scratch entries are ours for this program run.
    let (flow, original, tunnel) = unsafe { (&mut *flow, &mut *original, &mut *tunnel) };
    skb::fill_packet(skb, flow, tunnel);
    let device = skb::device(skb);
    if !filter::passes_packet(flow, tunnel, device.netns) {
        *original = RawFlow::default();
        tuple_flow(ct, config!(ct_orig_tuple), original);
        if !filter::passes(original, device.netns) {
            return Ok(());
        }
    }
    let Some(mut entry) = emit::reserve::<NatEvent>(kind::NAT) else { return Ok(()) };
    let ev = entry.as_mut_ptr();
    // SAFETY: a reserved record of the right size; every field is written before submit.
    unsafe {
        (*ev).header = EventHeader {
            // SAFETY: helpers without preconditions.
            ts_ns: bpf_ktime_get_boot_ns(),
            kind: kind::NAT,
            cpu: bpf_get_smp_processor_id() as u16,
            _pad: [0; 4],
        };
        (*ev).flow = *flow;
        (*ev).tunnel = *tunnel;
        (*ev).ct = key;
        (*ev).status = status;
        (*ev).netns = device.netns;
        (*ev).ifindex = device.ifindex;
        (*ev)._pad = 0;
        (*ev).ifname = device.name;
    }
    let (orig_off, reply_off) = (config!(ct_orig_tuple), config!(ct_reply_tuple));
    // SAFETY: as above; the tuples are the last fields written.
    unsafe {
        write_tuple(ct, orig_off, &mut (*ev).orig);
        write_tuple(ct, reply_off, &mut (*ev).reply);
    }
    entry.submit();
    Ok(())
}

/// The slot of [`NAT_SETTLED`] for the entry at `ct`, spread as [`recent_slot`]'s.
#[inline(always)]
fn settled_slot(ct: u64) -> u32 {
    ((ct >> 8) ^ (ct >> 20)) as u32 & (SETTLED_SLOTS - 1)
}

/// The slot of [`NAT_RECENT`] for the entry at `ct`: nf_conn entries come from their own slab,
/// a few hundred bytes apart, so the bits above the object size spread them.
#[inline(always)]
fn recent_slot(ct: u64) -> u32 {
    ((ct >> 8) ^ (ct >> 16)) as u32 & (RECENT_SLOTS - 1)
}

/// The status of the conntrack entry at `ct` and, when it is NATed, what [`NAT_SEEN`] keeps of
/// it; None when it cannot be read. Where the layout allows ([`NatConfig::span_fits`]) one read
/// copies the original tuple and the status together (the status comes after both tuples): a
/// NATed packet then costs one read, and a conntracked one that is not NATed (pod to pod) a
/// little more than a read of the status alone would (measured per run: 85 and 76 ns; 95 and 70
/// with the status read first and the tuple after; 140 and 70 with a read per field and the LRU
/// lookup for every NATed packet).
#[inline(always)]
fn connection_state(ct: *const u8) -> Option<(u32, Option<NatSeen>)> {
    let nat_mask = config!(nat_mask);
    let orig_off = config!(ct_orig_tuple) as usize;
    let orig = ct.wrapping_add(orig_off);
    let copy = if config!(span_fits) == 1 { NAT_SPAN_COPY.get_ptr_mut(0) } else { None };
    let Some(copy) = copy else {
        // `status` is an unsigned long; the bits used are in its low word (little-endian).
        let status = read::<u32>(ct, config!(ct_status) as usize).ok()?;
        return Some((status, (status & nat_mask != 0).then(|| seen_of(&Fields(orig), status))));
    };
    // SAFETY: this CPU's buffer; bpf_probe_read_kernel copes with any address.
    unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_buf(orig, &mut *copy) }.ok()?;
    // SAFETY: as above; the loader checked that every offset read here ends inside the span.
    let span = Span(unsafe { &*copy });
    let status = span.get::<u32>((config!(ct_status) as usize).wrapping_sub(orig_off))?;
    Some((status, (status & nat_mask != 0).then(|| seen_of(&span, status))))
}

/// Where [`seen_of`] reads the original tuple: the entry itself, a read per field ([`Fields`]),
/// or this CPU's copy of it ([`Span`]).
trait Tuple {
    /// The `T` at `off` of the tuple; None when it cannot be read.
    fn get<T: Copy>(&self, off: usize) -> Option<T>;
}

/// The original tuple in the kernel, at this address.
struct Fields(*const u8);

impl Tuple for Fields {
    #[inline(always)]
    fn get<T: Copy>(&self, off: usize) -> Option<T> {
        read::<T>(self.0, off).ok()
    }
}

/// The copy of [`NAT_SPAN`] bytes from the original tuple on.
struct Span<'a>(&'a [u8; NAT_SPAN]);

impl Tuple for Span<'_> {
    /// None past the copy's end (which the loader rules out: the check is for the verifier).
    #[inline(always)]
    fn get<T: Copy>(&self, off: usize) -> Option<T> {
        if off > NAT_SPAN - size_of::<T>() {
            return None;
        }
        // SAFETY: in bounds, checked just above.
        Some(unsafe { core::ptr::read_unaligned(self.0.as_ptr().add(off).cast::<T>()) })
    }
}

/// What [`NAT_SEEN`] keeps of a NATed connection with this status and original tuple.
#[inline(always)]
fn seen_of(tuple: &impl Tuple, status: u32) -> NatSeen {
    let sport = tuple.get::<u16>(config!(tuple_src_port) as usize).unwrap_or(0);
    let dport = tuple.get::<u16>(config!(tuple_dst_port) as usize).unwrap_or(0);
    NatSeen {
        orig_ports: (u32::from(sport) << 16) | u32::from(dport),
        orig_src_word: tuple.get::<u32>(config!(tuple_src_u3) as usize).unwrap_or(0),
        orig_dst_word: tuple.get::<u32>(config!(tuple_dst_u3) as usize).unwrap_or(0),
        reported: status & (config!(nat_mask) | config!(report_mask)),
    }
}

#[inline(always)]
fn write_tuple(ct: *const u8, tuple: u32, out: &mut tracer_common::nat::NatTuple) {
    let base = ct.wrapping_add(tuple as usize);
    if read_buf(base, config!(tuple_src_u3) as usize, &mut out.src).is_err() {
        out.src = [0; 16];
    }
    if read_buf(base, config!(tuple_dst_u3) as usize, &mut out.dst).is_err() {
        out.dst = [0; 16];
    }
    out.sport_be = read::<u16>(base, config!(tuple_src_port) as usize).unwrap_or(0);
    out.dport_be = read::<u16>(base, config!(tuple_dst_port) as usize).unwrap_or(0);
    out.l3num = read::<u16>(base, config!(tuple_src_l3num) as usize).unwrap_or(0);
    out.protonum = read::<u8>(base, config!(tuple_dst_protonum) as usize).unwrap_or(0);
    out._pad = 0;
}
