//! The MTU family: frag-needed / packet-too-big errors sent (icmp:icmp_send, tc egress for
//! ICMPv6), received (tc ingress) and dropped (kfree_skb), PKT_TOO_BIG drops, and packets longer
//! than their device's MTU (tc). ICMP errors are reported with the flow quoted in their payload:
//! the connection whose packets are too big, not the ICMP packet itself.

use aya_ebpf::{
    EbpfContext,
    bindings::{bpf_check_mtu_ret::BPF_MTU_CHK_RET_FRAG_NEEDED, bpf_hdr_start_off::BPF_HDR_START_NET},
    helpers::{bpf_check_mtu, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, bpf_skb_load_bytes_relative},
    macros::map,
    maps::{Array, PerCpuArray},
    programs::{BtfTracePointContext, TcContext},
};
use tracer_common::{
    event::{EventHeader, kind},
    flow::{ETH_P_IP, ETH_P_IPV6, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, RawFlow, RawTunnel},
    mtu::{ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMPV6_PKT_TOOBIG, MtuConfig, MtuEvent, event, hook},
};

use crate::{
    drops, emit, filter,
    kernel::{Probe, Typed, offset, offsets_valid, read, tp_btf_arg},
    skb::{self, Bytes, Device, UNKNOWN_LINK},
};

/// Set by the loader: tracepoint layout, drop-reason values, which hook reports what.
#[unsafe(no_mangle)]
static MTU_CONFIG: MtuConfig = MtuConfig::empty();

macro_rules! config {
    ($field:ident) => {
        // SAFETY: MTU_CONFIG is a static of plain integers.
        unsafe { core::ptr::read_volatile(&raw const MTU_CONFIG.$field) }
    };
}

/// `skb->_skb_refdst` keeps SKB_DST_NOREF in bit 0; `dst->_metrics` keeps two flag bits
/// (DST_METRICS_READ_ONLY, DST_METRICS_REFCOUNTED). Kernel ABI since 3.x, not struct layout.
const SKB_DST_PTRMASK: u64 = !1;
const DST_METRICS_PTRMASK: u64 = !3;
/// Index of RTAX_MTU (uAPI value 2) in the metrics array, which starts at RTAX_MTU's
/// predecessor RTAX_LOCK = 1.
const RTAX_MTU_INDEX: usize = 1;

/// An event being built, and the ICMP error's own flow, off the 512-byte stack: a per-CPU
/// slot per hook (a tc program can interrupt a tracing program on the same CPU; one program does
/// not nest in itself). Being map memory also keeps the verifier's states few: it does not track
/// what is stored there, so paths that parsed different headers meet again afterwards.
struct Work {
    event: MtuEvent,
    outer: RawFlow,
    /// The transport header's offset, stored and read back for the same reason.
    l4: u32,
}

#[map]
static MTU_WORK: PerCpuArray<Work> = PerCpuArray::with_max_entries(4, 0);

/// The narrowest MTU among the devices the classifiers are attached to, at most 1280, kept by
/// the loader (0 until then: every packet is checked). An IP packet no longer than it fits every
/// traced device, so the healthy small packet is judged without bpf_check_mtu. A single-entry
/// array: the verifier inlines its lookup.
#[map]
static MTU_FLOOR: Array<u32> = Array::with_max_entries(1, 0);

/// The work slot of `hook`, cleared.
#[inline(always)]
fn work(at: u8) -> Option<&'static mut Work> {
    let w = MTU_WORK.get_ptr_mut(u32::from(at) & 3)?;
    // SAFETY: this CPU's slot for this hook; nothing else runs it until the program returns.
    // Zeroed in place (all zero is a valid Work): a Default value would be built on the stack.
    let w = unsafe {
        core::ptr::write_bytes(w, 0, 1);
        &mut *w
    };
    w.l4 = u32::MAX;
    Some(w)
}

/// Stamps the header and copies the event into the ring buffer.
#[inline(always)]
fn submit(event: &mut MtuEvent, what: u8, at: u8) {
    event.event = what;
    event.hook = at;
    // SAFETY: helpers without preconditions.
    let ts_ns = unsafe { bpf_ktime_get_boot_ns() };
    // SAFETY: as above.
    let cpu = unsafe { bpf_get_smp_processor_id() } as u16;
    event.header = EventHeader { ts_ns, kind: kind::MTU, cpu, _pad: [0; 4] };
    emit::output(kind::MTU, event);
}

/// Fills the event's device fields.
#[inline(always)]
fn set_device(event: &mut MtuEvent, device: &Device) {
    event.ifindex = device.ifindex;
    event.ifname = device.name;
    event.netns = device.netns;
}

/// The ICMP error's addresses into the event.
#[inline(always)]
fn set_icmp(event: &mut MtuEvent, outer: &RawFlow) {
    event.icmp_src = outer.saddr;
    event.icmp_dst = outer.daddr;
}

/// The MTU of a `struct net_device *` (0 for null).
#[inline(always)]
fn device_mtu(dev: *const u8) -> u32 {
    if dev.is_null() {
        return 0;
    }
    read::<u32>(dev, offset!(net_device_mtu)).unwrap_or(0)
}

/// The device the skb's route leads out of and the MTU forwarding applies to it: the route's
/// MTU metric when set, else the device's MTU (ip_dst_mtu_maybe_forward). Null and 0 when the
/// skb has no route.
#[inline(always)]
fn route_mtu(skb: *const u8) -> (*const u8, u32) {
    let none = (core::ptr::null(), 0);
    let Ok(refdst) = read::<u64>(skb, offset!(skb_refdst)) else { return none };
    let dst = (refdst & SKB_DST_PTRMASK) as *const u8;
    if dst.is_null() {
        return none;
    }
    let dev = read::<*const u8>(dst, offset!(dst_dev)).unwrap_or(core::ptr::null());
    let metrics = read::<u64>(dst, offset!(dst_metrics)).unwrap_or(0) & DST_METRICS_PTRMASK;
    let metric = if metrics == 0 { 0 } else { read::<u32>(metrics as *const u8, RTAX_MTU_INDEX * 4).unwrap_or(0) };
    (dev, if metric != 0 { metric } else { device_mtu(dev) })
}

/// When `outer` is a frag-needed or packet-too-big at transport offset `l4` of `b`: the MTU it
/// announces and the length of the packet it quotes (the one that was too big), with that
/// packet's headers parsed into `inner` (and, when it was a tunnel's, its outer ones into
/// `tunnel`: the pods' flow is what the user asks about).
#[inline(always)]
fn icmp_error<B: Bytes>(b: &B, l4: usize, outer: &RawFlow, inner: &mut RawFlow, tunnel: &mut RawTunnel) -> Option<(u32, u32)> {
    let (mtu, version) = if outer.family == FAMILY_IPV4
        && outer.l4_proto == IPPROTO_ICMP
        && outer.icmp_type == ICMP_DEST_UNREACH
        && outer.icmp_code == ICMP_FRAG_NEEDED
    {
        // RFC 1191: the next-hop MTU is the low 16 bits of the header's second word.
        let m: [u8; 2] = b.load(l4 + 6)?;
        (u32::from(u16::from_be_bytes(m)), 4)
    } else if outer.family == FAMILY_IPV6 && outer.l4_proto == IPPROTO_ICMPV6 && outer.icmp_type == ICMPV6_PKT_TOOBIG {
        let m: [u8; 4] = b.load(l4 + 4)?;
        (u32::from_be_bytes(m), 6)
    } else {
        return None;
    };
    // The quote may stop before the ports (or be a fragment): the addresses still name the flow.
    let _ = skb::parse_ip(b, l4 + 8, version, inner, Some(tunnel));
    // A quote in kernel memory may end before the quoted segment's flags, and a read past its
    // end does not fail there: no flags are claimed for a quoted packet.
    inner.tcp_flags = 0;
    inner.has_tcp_flags = 0;
    Some((mtu, ip_len(b, l4 + 8, inner.family).unwrap_or(0)))
}

/// Whether the event passes the user's filters: by the flow it is about, or (for an ICMP
/// error) by the error's own addresses.
#[inline(always)]
fn wanted(flow: &RawFlow, tunnel: &RawTunnel, icmp: Option<&RawFlow>, netns: u32) -> bool {
    filter::passes_packet(flow, tunnel, netns) || icmp.is_some_and(|outer| filter::passes(outer, netns))
}

/// Parses the packet at network offset 0 of `b` into `w.outer`, keeping the transport offset
/// in `w.l4` (u32::MAX: none).
#[inline(always)]
fn parse_outer<B: Bytes>(b: &B, ethertype: u16, w: &mut Work) {
    // The error itself as the device sees it: an error still inside a tunnel is not taken apart.
    if let Some(l4) = skb::parse(b, ethertype, &mut w.outer, None) {
        w.l4 = l4 as u32;
    }
}

/// When `w.outer` is a frag-needed / packet-too-big: parses the quoted packet into the event's
/// flow and sets the event's MTU and length; false otherwise.
#[inline(always)]
fn quoted<B: Bytes>(b: &B, w: &mut Work) -> bool {
    // SAFETY: a plain read of our own map memory; volatile so the verifier sees an unknown
    // offset rather than one state per header layout.
    let l4 = unsafe { core::ptr::read_volatile(&raw const w.l4) };
    if l4 == u32::MAX {
        return false;
    }
    match icmp_error(b, l4 as usize, &w.outer, &mut w.event.flow, &mut w.event.tunnel) {
        Some((mtu, len)) => {
            w.event.mtu = mtu;
            w.event.len = len;
            true
        }
        None => false,
    }
}

/// icmp:icmp_send (skb, type, code), kernel >= 6.10: IPv4 errors this node sends, with the
/// packet that caused them. Only frag-needed is reported; its MTU is not an argument, so it is
/// taken from the offending packet's route as __icmp_send's caller computed it.
pub(crate) fn try_icmp_send(ctx: &BtfTracePointContext) -> Result<(), i64> {
    if config!(valid) != 1 || !offsets_valid() {
        return Ok(());
    }
    let base = ctx.as_ptr() as *const u8;
    let ty = tp_btf_arg(base, config!(icmp_type_arg))? as u32;
    let code = tp_btf_arg(base, config!(icmp_code_arg))? as u32;
    if ty != u32::from(ICMP_DEST_UNREACH) || code != u32::from(ICMP_FRAG_NEEDED) {
        return Ok(());
    }
    let skb = tp_btf_arg(base, config!(icmp_skb_arg))? as *const u8;
    if skb.is_null() {
        return Ok(());
    }
    let Some(w) = work(hook::ICMP_SEND) else { return Ok(()) };
    let Some((l3, ethertype)) = skb::network_header(Probe, skb) else { return Ok(()) };
    let _ = skb::parse(&l3, ethertype, &mut w.event.flow, Some(&mut w.event.tunnel));
    let (route_dev, mtu) = route_mtu(skb);
    let dev = if route_dev.is_null() { skb::dev_ptr(Probe, skb) } else { route_dev };
    set_device(&mut w.event, &skb::net_device(dev));
    if !wanted(&w.event.flow, &w.event.tunnel, None, w.event.netns) {
        return Ok(());
    }
    w.event.len = skb::len(Probe, skb);
    w.event.mtu = mtu;
    w.event.dev_mtu = device_mtu(dev);
    submit(&mut w.event, event::FRAG_NEEDED_SENT, hook::ICMP_SEND);
    Ok(())
}

/// tp_btf/kfree_skb (layout from DROP_CONFIG): PKT_TOO_BIG drops, and frag-needed /
/// packet-too-big errors that are themselves dropped (filtered ICMP: the black hole).
pub(crate) fn try_drop(ctx: &BtfTracePointContext) -> Result<(), i64> {
    if config!(valid) != 1 || !offsets_valid() {
        return Ok(());
    }
    let Some((skb, _location, reason)) = drops::tp_btf_args(ctx) else { return Ok(()) };
    if skb.is_null() || reason == config!(reason_not_specified) || reason == config!(reason_consumed) {
        return Ok(());
    }
    // The skb is BTF-typed: its fields are plain loads (Typed); the IP header's version and
    // protocol are one helper call of 16 bytes (the rare packet that is ours is then copied
    // whole into the window for its parse).
    let Some((l3, ethertype)) = skb::network_window(Typed, skb, skb::window::MTU_DROP, skb::WINDOW_PROTOCOL) else { return Ok(()) };
    // Every other drop (a storm of them, say) leaves here, after one read of the IP header and
    // before the work slot is cleared or anything parsed: only an ICMP error can be ours.
    if reason != config!(reason_pkt_too_big) && !may_be_icmp(&l3, ethertype) {
        return Ok(());
    }
    // Out of the node scope: decided by the namespace alone, before anything is parsed.
    let skb_dev = skb::dev_ptr(Typed, skb);
    if !filter::in_scope(skb::packet_netns(Typed, skb, skb_dev)) {
        return Ok(());
    }
    let Some(l3) = l3.widen() else { return Ok(()) };
    let Some(w) = work(hook::KFREE_SKB) else { return Ok(()) };
    w.event.reason = reason;
    if reason == config!(reason_pkt_too_big) {
        let _ = skb::parse(&l3, ethertype, &mut w.event.flow, Some(&mut w.event.tunnel));
        let (route_dev, mtu) = route_mtu(skb);
        let dev = if route_dev.is_null() { skb_dev } else { route_dev };
        set_device(&mut w.event, &skb::net_device(dev));
        if !wanted(&w.event.flow, &w.event.tunnel, None, w.event.netns) {
            return Ok(());
        }
        w.event.dev_mtu = device_mtu(dev);
        w.event.mtu = if mtu != 0 { mtu } else { w.event.dev_mtu };
        w.event.len = skb::len(Typed, skb);
        submit(&mut w.event, event::TOO_BIG_DROP, hook::KFREE_SKB);
        return Ok(());
    }
    parse_outer(&l3, ethertype, w);
    if !quoted(&l3, w) {
        return Ok(());
    }
    set_device(&mut w.event, &skb::net_device(skb_dev));
    if w.event.netns == 0 {
        w.event.netns = skb::socket_netns(Typed, skb);
    }
    if !wanted(&w.event.flow, &w.event.tunnel, Some(&w.outer), w.event.netns) {
        return Ok(());
    }
    w.event.dev_mtu = device_mtu(skb_dev);
    set_icmp(&mut w.event, &w.outer);
    submit(&mut w.event, event::FRAG_NEEDED_DROPPED, hook::KFREE_SKB);
    Ok(())
}

/// A tc program's packet from its network header (bpf_skb_load_bytes_relative, kernel >= 4.18):
/// the same offsets on devices with and without a link-layer header.
struct TcBytes<'a>(&'a TcContext);

impl Bytes for TcBytes<'_> {
    #[inline(always)]
    fn load<T>(&self, off: usize) -> Option<T> {
        let mut value = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: the helper writes exactly size_of::<T>() bytes into `value` or fails.
        let ret =
            unsafe { bpf_skb_load_bytes_relative(self.0.as_ptr(), off as u32, value.as_mut_ptr().cast(), size_of::<T>() as u32, BPF_HDR_START_NET) };
        // SAFETY: ret == 0 means every byte was written.
        (ret == 0).then(|| unsafe { value.assume_init() })
    }

    #[inline(always)]
    fn load_buf(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        // SAFETY: the helper writes at most dst.len() bytes into dst.
        let ret = unsafe { bpf_skb_load_bytes_relative(self.0.as_ptr(), off as u32, dst.as_mut_ptr().cast(), dst.len() as u32, BPF_HDR_START_NET) };
        (ret == 0).then_some(())
    }
}

/// The device's MTU via bpf_check_mtu (kernel >= 5.12), and whether a packet of `l3_len` bytes
/// (0: the skb's own length, segments for GSO) exceeds it.
#[inline(always)]
fn check_mtu(ctx: &TcContext, l3_len: u32) -> (bool, u32) {
    let mut mtu = l3_len;
    // SAFETY: ctx is the program's context; `mtu` is a valid in/out pointer.
    let ret = unsafe { bpf_check_mtu(ctx.as_ptr(), 0, &mut mtu, 0, 0) };
    if ret < 0 {
        return (false, 0);
    }
    (ret == i64::from(BPF_MTU_CHK_RET_FRAG_NEEDED), mtu)
}

/// tc ingress/egress on a traced device. Ingress: frag-needed/packet-too-big arriving (for
/// this node or forwarded through it). Egress: those this node generated (the skb carries the
/// ICMP socket; forwarded ones were seen arriving), for ICMPv6 always, for IPv4 only where
/// icmp:icmp_send is missing. Both: IP packets longer than the device's MTU.
///
/// `LINK_HEADER`: the length of the link-layer header in front of the IP header as the
/// classifier sees the packet, when the loader knows it for the device ([`skb::ETHERNET`]: the
/// healthy packet's header is then read straight from the packet, no helper call), or
/// [`UNKNOWN_LINK`] (read through bpf_skb_load_bytes_relative, which knows where the network
/// header is on any device).
///
/// The healthy packet's exit is inlined into the classifier itself; the rest is a function of
/// its own ([`tc_event`]), so a packet that is no event makes no BPF-to-BPF call.
#[inline(always)]
pub(crate) fn try_tc<const LINK_HEADER: usize>(ctx: &TcContext, at: u8) -> Option<()> {
    if config!(valid) != 1 {
        return None;
    }
    // __sk_buff.protocol is skb->protocol, __be16 in a u32.
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    if !worth_parsing::<LINK_HEADER>(ctx, &TcBytes(ctx), ethertype)? {
        return None;
    }
    tc_event(ctx, ethertype, at)
}

/// [`try_tc`] for a packet that may be an event: an ICMP error or a packet longer than the
/// floor.
#[inline(never)]
fn tc_event(ctx: &TcContext, ethertype: u16, at: u8) -> Option<()> {
    let b = TcBytes(ctx);
    let w = work(at)?;
    parse_outer(&b, ethertype, w);
    if w.outer.family == 0 {
        return None;
    }
    // SAFETY: the context is a valid __sk_buff for the program's run.
    let (ifindex, gso_size, sk) = unsafe {
        let s = &*ctx.skb.skb;
        (s.ifindex, s.gso_size, s.__bindgen_anon_2.sk)
    };
    w.event.ifindex = ifindex;
    if quoted(&b, w) {
        let what = if at == hook::TC_INGRESS {
            event::FRAG_NEEDED_RECEIVED
        } else if !sk.is_null() && (w.outer.family == FAMILY_IPV6 || config!(egress_sent_v4) == 1) {
            event::FRAG_NEEDED_SENT
        } else {
            return None;
        };
        if !wanted(&w.event.flow, &w.event.tunnel, Some(&w.outer), 0) {
            return None;
        }
        w.event.dev_mtu = check_mtu(ctx, 0).1;
        set_icmp(&mut w.event, &w.outer);
        submit(&mut w.event, what, at);
        return Some(());
    }
    // GSO packets are checked segment by segment (by the helper) and reported with the
    // aggregate's frame length.
    let len = if gso_size != 0 { 0 } else { ip_len(&b, 0, w.outer.family)? };
    let (too_big, dev_mtu) = check_mtu(ctx, len);
    if !too_big {
        return None;
    }
    // Only an oversize packet is parsed again, inside its tunnel if it is one: the pods' flow.
    let _ = skb::parse(&b, ethertype, &mut w.event.flow, Some(&mut w.event.tunnel));
    if !wanted(&w.event.flow, &w.event.tunnel, None, 0) {
        return None;
    }
    w.event.len = if len == 0 { ctx.len() } else { len };
    w.event.mtu = dev_mtu;
    w.event.dev_mtu = dev_mtu;
    submit(&mut w.event, event::OVERSIZE, at);
    Some(())
}

/// IPv6 extension headers that may stand between the fixed header and an ICMPv6 error:
/// hop-by-hop, routing, fragment, destination options.
const IPV6_EXT_HEADERS: [u8; 4] = [0, 43, 44, 60];

/// Whether the IP packet at offset 0 of `b` is ICMP/ICMPv6 (or IPv6 with an extension header
/// first, which may hide one): the one read that keeps everything else off the slow path.
#[inline(always)]
fn may_be_icmp<B: Bytes>(b: &B, ethertype: u16) -> bool {
    match ethertype {
        ETH_P_IP => b.load::<u8>(9).is_some_and(|p| p == IPPROTO_ICMP),
        ETH_P_IPV6 => b.load::<u8>(6).is_some_and(|p| p == IPPROTO_ICMPV6 || IPV6_EXT_HEADERS.contains(&p)),
        _ => false,
    }
}

/// The healthy packet's exit, taken before anything else is done (no work slot cleared, no
/// header parsed, no tunnel taken apart): whether this packet may be an event at all, i.e. an
/// ICMP/ICMPv6 packet (a frag-needed or packet-too-big, maybe) or an IP packet longer than the
/// device's MTU. Decided from the IP header's length and protocol (one load straight from the
/// packet on Ethernet devices, else a helper's copy of its first ten bytes), then, for a packet longer than
/// [`MTU_FLOOR`], the GSO size and bpf_check_mtu (the device's MTU). The packet's own bytes come
/// first because they are in the cache already; the GSO size lives in the skb's shared info,
/// another cache line, which a small packet never needs. None: not an IP packet, or its header
/// cannot be read.
#[inline(always)]
fn worth_parsing<const LINK_HEADER: usize>(ctx: &TcContext, b: &TcBytes<'_>, ethertype: u16) -> Option<bool> {
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return None;
    }
    let (len, proto) = match length_and_protocol::<LINK_HEADER>(ctx, ethertype) {
        Some(found) => found,
        None => {
            let hdr: [u8; 10] = b.load(0)?;
            if ethertype == ETH_P_IP {
                (u32::from(u16::from_be_bytes([hdr[2], hdr[3]])), hdr[9])
            } else {
                (u32::from(u16::from_be_bytes([hdr[4], hdr[5]])) + 40, hdr[6])
            }
        }
    };
    if proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6 || (ethertype == ETH_P_IPV6 && IPV6_EXT_HEADERS.contains(&proto)) {
        return Some(true);
    }
    // A GSO packet's header length may be anything (a segment's, the total, 0): whichever way
    // this or the next test goes, it is let pass, as below.
    if MTU_FLOOR.get(0).is_some_and(|floor| len <= *floor) {
        return Some(false);
    }
    // SAFETY: the context is a valid __sk_buff for the program's run.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size };
    // A GSO packet is TCP or UDP, never an ICMP error, and bpf_check_mtu passes it unless asked
    // to check segment by segment, which the oversize rule does not do.
    if gso_size != 0 {
        return Some(false);
    }
    Some(check_mtu(ctx, len).0)
}

/// The length of the IP packet whose header is at `at`, from the header.
#[inline(always)]
fn ip_len<B: Bytes>(b: &B, at: usize, family: u8) -> Option<u32> {
    match family {
        FAMILY_IPV4 => b.load::<[u8; 2]>(at + 2).map(|l| u32::from(u16::from_be_bytes(l))),
        FAMILY_IPV6 => b.load::<[u8; 2]>(at + 4).map(|l| u32::from(u16::from_be_bytes(l)) + 40),
        _ => None,
    }
}

/// The IP packet's length and protocol (IPv6: the next header) straight from the packet (direct
/// packet access: two context loads, a bounds check and one load of the header's words), where
/// the link-layer header's length is known and the bytes are in the linear part; None otherwise
/// (the caller then asks the helper).
#[inline(always)]
fn length_and_protocol<const LINK_HEADER: usize>(ctx: &TcContext, ethertype: u16) -> Option<(u32, u8)> {
    if LINK_HEADER == UNKNOWN_LINK {
        return None;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    let ip = start + LINK_HEADER;
    if ip + 10 > end {
        return None;
    }
    if ethertype == ETH_P_IP {
        // Bytes 2..10: total length, id, flags and fragment offset, TTL, protocol.
        let words = u64::from_le(skb::packet_u64(ip + 2));
        Some((u32::from(u16::from_be_bytes([words as u8, (words >> 8) as u8])), (words >> 56) as u8))
    } else {
        // Bytes 4..8: payload length, next header, hop limit.
        let words = u32::from_le(skb::packet_u32(ip + 4));
        Some((u32::from(u16::from_be_bytes([words as u8, (words >> 8) as u8])) + 40, (words >> 16) as u8))
    }
}
