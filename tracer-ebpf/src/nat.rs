//! The NAT family: every transmitted packet's conntrack entry, reported once per NATed
//! connection and again when its reply/assured state changes. Checked where a packet is
//! transmitted (net:net_dev_start_xmit, [`try_xmit`]) or, where the classifiers ride, where it
//! leaves a classified device ([`try_tc`]). A packet without an entry costs two loads; a later
//! packet of a settled connection (see [`NAT_SETTLED`]) a few more and an inlined array lookup,
//! of one awaiting assured a read of its status word too; any other conntracked packet one read
//! of its entry.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, TcContext},
};
use tracer_common::{
    event::{EventHeader, kind},
    flow::{ETH_P_IP, ETH_P_IPV6, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_TCP, IPPROTO_UDP, RawFlow, RawTunnel},
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
    tc_read: NatConfig::TC_OFF,
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
/// Inside the tc classifiers ([`try_tc`]) only the first argument holds, and only for the
/// devices they are on: a connection's packets of one direction leave by one route, so the
/// first packet went out of the same classified device as the later ones. Its replies may
/// come back out of a classified device (a pod's veth) while its original direction left by
/// one without a classifier (the uplink, for a pod's masqueraded traffic): a slot written by
/// the entry's previous occupant would then pass for this connection's. So the classifiers
/// trust only [`NAT_KNOWN`] for a reply, which names the connection by its flow hash too.
///
/// Global, not per CPU: the first packet and the later ones may run on different CPUs. Written
/// only when its value changes, so a settled connection's packets share the cache line without
/// writing it.
#[map]
static NAT_SETTLED: Array<u64> = Array::with_max_entries(SETTLED_SLOTS, 0);

/// Flows the classifiers need not read again, direct-mapped by [`known_slot`]: the entry's
/// address and the flow hash of a packet whose read found nothing that a later packet of the
/// same flow and ctinfo could change ([`flow_ident`], [`read_entry`]). For the packets
/// [`NAT_SETTLED`] cannot answer in the classifiers (replies, see there, and packets of a
/// connection not yet answered, a one-way UDP stream's): the skb's flow hash tells this
/// connection's packets from those of the entry's previous occupant. A socket sets it from its
/// own random `sk_txhash` (a new connection has another; a TCP retransmission timeout draws a new
/// one, and the packet is then read again), a forwarded packet keeps the hash it came with. A
/// packet without one is read every time. The tracepoint does not use it.
#[map]
static NAT_KNOWN: Array<u64> = Array::with_max_entries(SETTLED_SLOTS, 0);

/// When the status word of an entry awaiting assured ([`AWAITING_ASSURED`]) was last read, by
/// [`NAT_SETTLED`]'s slot: the jiffy (upper half) and the entry's address (its bits above the
/// 8-byte alignment, low word). A packet of the same entry in the same jiffy takes that read's
/// answer, so a connection's packets read it once a jiffy (1-10 ms), not each: a UDP stream
/// through a Service spends its first two seconds awaiting assured (conntrack sets it only then),
/// reading the status word for every packet. The cost: the assured state is reported by the
/// first packet in a later jiffy than the one that set it, or, should none follow, not at all
/// (the connection's end still is).
#[map]
static AWAITING_CHECKED: Array<u64> = Array::with_max_entries(SETTLED_SLOTS, 0);

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

/// net:net_dev_start_xmit (skb, dev): every packet a device transmits, in every namespace.
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
    // See NAT_SETTLED: a reply is trusted only forwarded, not sent by a local socket.
    check(skb, nfct, |original, established| original || (established && Typed.get::<u64>(skb, offset!(skb_sk)).is_some_and(|sk| sk == 0)), || 0);
    Ok(())
}

/// The check of [`try_xmit`] inside a tc egress classifier (tracer-ebpf's main.rs calls it
/// before the MTU family's): the packet leaving a device the classifiers are attached to, when
/// the loader set [`NatConfig::tc_read`]. The healthy packet's path is one load of `_nfct` (the
/// kfunc's, on kernels >= 6.2) or one helper call (before), then the settled table; only a
/// packet of the original direction may take the settled exit (see [`NAT_SETTLED`]); any other
/// asks [`NAT_KNOWN`] by the flow's identity ([`flow_hash`]). `LINK_HEADER`: as the MTU
/// family's (skb::ETHERNET or skb::UNKNOWN_LINK).
#[inline(always)]
pub(crate) fn try_tc<const LINK_HEADER: usize>(ctx: &TcContext) {
    let how = config!(tc_read);
    if how == NatConfig::TC_OFF || config!(valid) != 1 || !crate::kernel::offsets_valid() {
        return;
    }
    let off = config!(skb_nfct) as usize;
    let (skb, nfct) = if how == NatConfig::TC_KFUNC {
        let skb = kernel_skb(ctx);
        // SAFETY: a verifier-checked load through the trusted `struct sk_buff *` the kfunc
        // returns; the offset is a constant of the read-only NAT_CONFIG.
        (skb, unsafe { core::ptr::read_volatile(skb.wrapping_add(off).cast::<u64>()) })
    } else {
        // The context register holds the kernel's `struct sk_buff *` (the verifier rewrites
        // `__sk_buff` loads into `sk_buff` ones), which bpf_probe_read_kernel may read at any
        // offset.
        let skb = ctx.skb.skb as *const u8;
        (skb, read::<u64>(skb, off).unwrap_or(0))
    };
    check(skb, nfct, |original, _| original, || flow_hash::<LINK_HEADER>(ctx));
}

/// The identity of a classified packet's flow for [`NAT_KNOWN`] (0: none): the skb's flow hash
/// when it has one (a socket's random `sk_txhash`, or the hash a forwarded packet came with);
/// else, for a TCP or UDP packet that is no fragment, read straight from an Ethernet frame
/// ([`packet_flow_hash`]), its addresses and ports as it leaves (after NAT) and the device it
/// came in by: one-way UDP from an unconnected socket (a DNS client's, iperf3's) has no hash,
/// and would otherwise read its entry for every packet.
#[inline(always)]
fn flow_hash<const LINK_HEADER: usize>(ctx: &TcContext) -> u32 {
    // SAFETY: the context is a valid __sk_buff for the program's run.
    let hash = unsafe { (*ctx.skb.skb).hash };
    if hash != 0 || LINK_HEADER == skb::UNKNOWN_LINK {
        return hash;
    }
    packet_flow_hash::<LINK_HEADER>(ctx)
}

/// [`flow_hash`] from the packet itself: its IP addresses, transport ports and protocol and the
/// skb's ingress ifindex (0 for a packet sent by this namespace), mixed into 32 bits (never 0);
/// 0 where the packet is not an unfragmented TCP or UDP packet in the linear part.
///
/// Unlike a socket's random hash, this identity is the same for a later connection with the
/// same addresses and ports after NAT, come in by the same device: should the kernel place that
/// connection in the freed entry of the earlier one, it is not read, and not reported, until
/// its ctinfo changes (its first reply). NAT_SEEN would not report it either when its original
/// tuple is the earlier one's; what is lost is a connection whose original tuple differs but
/// whose translated one and device are the same (a masquerade mapping two of one pod's source
/// ports to one, the first gone).
#[inline(always)]
fn packet_flow_hash<const LINK_HEADER: usize>(ctx: &TcContext) -> u32 {
    const IPV4_HLEN: usize = 20;
    const IPV6_HLEN: usize = 40;
    const PORTS: usize = 4;
    let (start, end) = (ctx.data(), ctx.data_end());
    let ip = start + LINK_HEADER;
    // SAFETY: the context is a valid __sk_buff for the program's run.
    let (ethertype, iif) = unsafe { (u16::from_be((*ctx.skb.skb).protocol as u16), (*ctx.skb.skb).ingress_ifindex) };
    let transport = |proto: u8| proto == IPPROTO_TCP || proto == IPPROTO_UDP;
    // Each header read is one load (skb::packet_u32/u64) of words within [data, data_end),
    // bounds-checked first (the verifier checks it too).
    let (addrs, l4, proto) = if ethertype == ETH_P_IP {
        if ip + IPV4_HLEN > end {
            return 0;
        }
        // Bytes 6..10: flags and fragment offset, TTL, protocol.
        let word = u32::from_le(skb::packet_u32(ip + 6));
        let proto = (word >> 24) as u8;
        // A fragment (more to come, or an offset) may carry no ports.
        if !transport(proto) || word & 0xff3f != 0 {
            return 0;
        }
        // SAFETY: within the checked header.
        let ihl = usize::from(unsafe { *(ip as *const u8) } & 0xf);
        (skb::packet_u64(ip + 12).wrapping_mul(MIX_A), ip + ihl * 4, proto)
    } else if ethertype == ETH_P_IPV6 {
        if ip + IPV6_HLEN + PORTS > end {
            return 0;
        }
        // SAFETY: within the checked header.
        let next = unsafe { *((ip + 6) as *const u8) };
        // An extension header first (rare on a pod's traffic) is let through to the read.
        if !transport(next) {
            return 0;
        }
        let mut addrs = 0u64;
        for word in [8, 16, 24, 32] {
            addrs = (addrs ^ skb::packet_u64(ip + word)).wrapping_mul(MIX_A);
        }
        (addrs, ip + IPV6_HLEN, next)
    } else {
        return 0;
    };
    if l4 + PORTS > end {
        return 0;
    }
    let rest = u64::from(skb::packet_u32(l4)) | (u64::from(proto) << 32) | (u64::from(iif) << 40);
    let h = (addrs ^ rest).wrapping_mul(MIX_B);
    match (h ^ (h >> 32)) as u32 {
        0 => 1,
        v => v,
    }
}

/// Odd multipliers for [`packet_flow_hash`] (splitmix64's): each multiplication is a bijection
/// of u64 that spreads every input bit into the upper half, which the fold keeps.
const MIX_A: u64 = 0x9e37_79b9_7f4a_7c15;
const MIX_B: u64 = 0xbf58_476d_1ce4_e5b9;

/// The kernel's `struct sk_buff *` behind a tc context, typed for the verifier
/// (`bpf_cast_to_kern_ctx`, kernel >= 6.2, inlined by the verifier into a register move). aya
/// cannot link a kfunc (it does not resolve `.ksyms` externs): the call is a helper call to a
/// marker id the loader rewrites (tracer-common's `kfunc`); on a kernel without the kfunc it
/// becomes `r0 = 0`, and NAT_CONFIG's tc_read keeps this code unreached.
#[inline(always)]
fn kernel_skb(ctx: &TcContext) -> *const u8 {
    let skb: *const u8;
    // SAFETY: the loader rewrites the marker into bpf_cast_to_kern_ctx(ctx), which returns its
    // argument typed; r1-r5 are clobbered as by any call.
    unsafe {
        core::arch::asm!(
            "call {mark}",
            mark = const tracer_common::kfunc::KFUNC_MARK_CAST_TO_KERN_CTX,
            inlateout("r1") ctx.skb.skb => _,
            lateout("r0") skb,
            lateout("r2") _, lateout("r3") _, lateout("r4") _, lateout("r5") _,
        );
    }
    skb
}

/// The per-packet check of a packet whose `_nfct` is `nfct`: the settled exits when `trusted`
/// (given whether the packet is of the original direction, and of an established connection)
/// says the settled table may answer, or, for any other packet, when [`NAT_KNOWN`] knows its
/// connection by the flow's identity `hash` gives (taken only then; 0: none), else
/// [`read_entry`].
#[inline(always)]
fn check(skb: *const u8, nfct: u64, trusted: impl FnOnce(bool, bool) -> bool, hash: impl FnOnce() -> u32) {
    let ct = nfct & skb::NFCT_PTRMASK;
    if ct == 0 {
        return;
    }
    let ctinfo = (nfct & !skb::NFCT_PTRMASK) as u32;
    let original = ctinfo == config!(ctinfo_established);
    let established = original || ctinfo == config!(ctinfo_established_reply);
    let trust = trusted(original, established);
    if trust && let Some(slot) = NAT_SETTLED.get_ptr_mut(settled_slot(ct)) {
        // SAFETY: an 8-byte aligned slot of a global array; one load.
        let known = unsafe { core::ptr::read_volatile(slot) };
        if known == ct | SETTLED {
            return;
        }
        // Reply reported, assured not yet: the status word says whether that is still so,
        // read at most once a jiffy for the entry (AWAITING_CHECKED).
        if known == ct | AWAITING_ASSURED && still_awaiting_assured(ct) {
            return;
        }
    }
    let ident = if trust { 0 } else { flow_ident(ct, hash()) };
    if ident != 0
        && let Some(slot) = NAT_KNOWN.get_ptr_mut(known_slot(ident))
        // SAFETY: an 8-byte aligned slot of a global array; one load.
        && unsafe { core::ptr::read_volatile(slot) } == ident
    {
        return;
    }
    let _ = read_entry(skb, ct, established, ident);
}

/// Whether the entry at `ct`, last found NATed with its reply reported and not yet assured
/// ([`AWAITING_ASSURED`]), is still so: its status word, or without a read when it was read
/// for this entry in this jiffy already ([`AWAITING_CHECKED`]).
#[inline(always)]
fn still_awaiting_assured(ct: u64) -> bool {
    // SAFETY: a helper without preconditions (the verifier inlines it into a load of jiffies).
    let now = unsafe { bpf_jiffies64() };
    let stamp = (now << 32) | ((ct >> 3) & 0xffff_ffff);
    if let Some(slot) = AWAITING_CHECKED.get_ptr_mut(settled_slot(ct)) {
        // SAFETY: an 8-byte aligned slot of a global array; one load.
        if unsafe { core::ptr::read_volatile(slot) } == stamp {
            return true;
        }
        store_changed(slot, stamp);
    }
    let report_mask = config!(report_mask);
    read::<u32>(ct as *const u8, config!(ct_status) as usize).is_ok_and(|st| st & report_mask != report_mask)
}

/// What [`NAT_KNOWN`] holds for a packet of the entry at `ct` with flow hash `hash`: the entry's
/// address (its bits above the 8-byte alignment, low word) and the hash; 0 (nothing to look up)
/// without a hash.
#[inline(always)]
fn flow_ident(ct: u64, hash: u32) -> u64 {
    if hash == 0 {
        return 0;
    }
    (u64::from((ct >> 3) as u32) << 32) | u64::from(hash)
}

/// The slot of [`NAT_KNOWN`] for `ident`: by the entry's address as [`settled_slot`], and the
/// hash, so the two directions of a connection (two sockets, two hashes) take two slots.
#[inline(always)]
fn known_slot(ident: u64) -> u32 {
    ((ident >> 37) ^ (ident >> 49) ^ ident) as u32 & (SETTLED_SLOTS - 1)
}

/// The part of the check that reads the entry at `ct` (the packet's `_nfct` without ctinfo):
/// records what it found in the settled table and reports a NATed connection whose state is new
/// to [`NAT_SEEN`]. A function of its own, so the classifier's healthy path makes no call.
///
/// `ident`: the packet's [`flow_ident`] (0: none), written to [`NAT_KNOWN`] when no later packet
/// of this flow can have anything new to report but a change of ctinfo: a packet of a
/// connection not yet answered (NEW: its answer makes the next ones ESTABLISHED, another path),
/// or of a settled one; not one awaiting assured, whose status may still change.
#[inline(never)]
fn read_entry(skb: *const u8, key: u64, established: bool, ident: u64) -> Option<()> {
    let ct = key as *const u8;
    let (status, nat) = connection_state(ct)?;
    let reported = status & config!(report_mask);
    let value = match (established, nat.is_some()) {
        (true, false) => key | SETTLED,
        (true, true) if reported == config!(report_mask) => key | SETTLED,
        (true, true) if reported != 0 => key | AWAITING_ASSURED,
        _ => key,
    };
    if let Some(slot) = NAT_SETTLED.get_ptr_mut(settled_slot(key)) {
        store_changed(slot, value);
    }
    // Written before the event is: what NAT_SEEN holds from here on is this state, reported (or
    // filtered out, or lost with the ring full: counted) once.
    if ident != 0
        && (!established || value == key | SETTLED)
        && let Some(slot) = NAT_KNOWN.get_ptr_mut(known_slot(ident))
    {
        store_changed(slot, ident);
    }
    let now_seen = nat?;
    let slot = NAT_RECENT.get_ptr_mut(recent_slot(key));
    // SAFETY: this CPU's slot, read and written only by this program on this CPU.
    if slot.is_some_and(|r| unsafe { (*r).ct == key && (*r).seen == now_seen }) {
        return None;
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
        return None;
    }
    remember();
    let _ = NAT_SEEN.insert(&key, &now_seen, 0);

    // Filters: the packet as sent, or the connection as the client opened it (before DNAT the
    // Service address, the client pod) — either may be what the user named.
    // Both flows live in per-CPU scratch, not on the stack: with filter::passes' frame on top,
    // 6.1 and 6.12 refuse more than 512 bytes for the two together.
    let (Some(flow), Some(original), Some(tunnel)) = (NAT_SCRATCH.get_ptr_mut(0), NAT_SCRATCH.get_ptr_mut(1), NAT_TUNNEL.get_ptr_mut(0)) else {
        return None;
    };
    // SAFETY: the per-CPU scratch entries are ours for this program run.
    let (flow, original, tunnel) = unsafe { (&mut *flow, &mut *original, &mut *tunnel) };
    skb::fill_packet(skb, flow, tunnel);
    let device = skb::device(skb);
    if !filter::passes_packet(flow, tunnel, device.netns) {
        *original = RawFlow::default();
        tuple_flow(ct, config!(ct_orig_tuple), original);
        if !filter::passes(original, device.netns) {
            return None;
        }
    }
    let mut entry = emit::reserve::<NatEvent>(kind::NAT)?;
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
    Some(())
}

/// Stores `value` in a slot of a global array when it differs from what is there: one 8-byte
/// store (atomic on 64-bit architectures), and none for a value already there, so the CPUs that
/// keep reading the slot share its cache line.
#[inline(always)]
fn store_changed(slot: *mut u64, value: u64) {
    // SAFETY: an 8-byte aligned slot of a global array (the callers' map lookups).
    unsafe {
        if core::ptr::read_volatile(slot) != value {
            core::ptr::write_volatile(slot, value);
        }
    }
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
