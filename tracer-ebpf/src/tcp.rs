//! The TCP family: retransmits, resets and failed connects, from BTF tracepoints, with per-flow
//! counters in an LRU map so a storm can be summarised in the kernel (`--top`).

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_boot_ns, generated},
    macros::map,
    maps::LruHashMap,
    programs::BtfTracePointContext,
};
use tracer_common::{
    event::{EventHeader, counter, kind},
    flow::RawFlow,
    offsets::KernelOffsets,
    tcp::{FlowKey, FlowStats, MAX_CONNECTING, MAX_FLOWS, SYNS_UNKNOWN, TcpConfig, TcpEvent, direction, state},
};

use crate::{
    emit, filter,
    kernel::{offset, tp_btf_arg},
    skb, sock,
};

/// Set by the loader: argument positions from BTF, and whether retransmits are streamed.
#[unsafe(no_mangle)]
static TCP_CONFIG: TcpConfig = TcpConfig::empty();

macro_rules! config {
    ($field:ident) => {
        // SAFETY: TCP_CONFIG is a static of plain integers.
        unsafe { core::ptr::read_volatile(&raw const TCP_CONFIG.$field) }
    };
}

/// Per-flow counters (`--top` reads them; streamed retransmits carry the running count).
#[map]
static TCP_FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(MAX_FLOWS, 0);

/// Sockets in SYN_SENT -> [when they entered it, their source port]. The port is learnt from
/// the socket's retransmits and resets: it is not assigned yet when the socket enters SYN_SENT,
/// and already released when it leaves for CLOSE.
#[map]
static CONNECTING: LruHashMap<u64, [u64; 2]> = LruHashMap::with_max_entries(MAX_CONNECTING, 0);

/// Remembers a connecting socket's source port for its connect_fail.
#[inline(always)]
fn note_port(sk: *const u8, sport: u16) {
    if let Some(entry) = CONNECTING.get_ptr_mut(&(sk as u64)) {
        // SAFETY: a pointer into the map's value; a plain store.
        unsafe { (*entry)[1] = u64::from(sport) };
    }
}

/// Which counter of a flow an event bumps.
#[derive(Clone, Copy)]
enum Counter {
    Retransmits,
    Resets,
    ConnectFails,
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
fn wanted(flow: &RawFlow, netns: u32) -> bool {
    flow.family != 0 && filter::matches(flow) && filter::matches_pods(flow, netns)
}

/// Adds one to the flow's `counter` (creating the flow) and returns the new value. The key is
/// built on this program's stack: a per-CPU scratch slot would be shared by the family's five
/// programs, and one of them interrupting another on the same CPU (a softirq) would overwrite it.
#[inline(always)]
fn bump(flow: &RawFlow, netns: u32, ts: u64, tcp_state: u8, counter: Counter) -> u32 {
    let mut key = FlowKey::default();
    set_key(&mut key, flow, netns);
    if let Some(stats) = TCP_FLOWS.get_ptr_mut(&key) {
        // SAFETY: a pointer into the map's value. A flow is one socket, and every hook here runs
        // under that socket's lock, so updates of one flow do not race; a plain add is enough
        // (and the BPF target offers no atomic read-modify-write to Rust).
        unsafe {
            let field = match counter {
                Counter::Retransmits => &raw mut (*stats).retransmits,
                Counter::Resets => &raw mut (*stats).resets,
                Counter::ConnectFails => &raw mut (*stats).connect_fails,
            };
            *field += 1;
            (*stats).last_ns = ts;
            (*stats).state = tcp_state;
            return core::ptr::read_volatile(field) as u32;
        }
    }
    let mut stats = FlowStats { first_ns: ts, last_ns: ts, state: tcp_state, ..FlowStats::default() };
    match counter {
        Counter::Retransmits => stats.retransmits = 1,
        Counter::Resets => stats.resets = 1,
        Counter::ConnectFails => stats.connect_fails = 1,
    }
    // Another CPU may have created it in between; then this one event is not counted in the
    // map (the stream still has it).
    let _ = TCP_FLOWS.insert(&key, &stats, u64::from(BPF_NOEXIST));
    1
}

#[inline(always)]
fn set_key(key: &mut FlowKey, flow: &RawFlow, netns: u32) {
    key.saddr = flow.saddr;
    key.daddr = flow.daddr;
    key.sport = flow.sport;
    key.dport = flow.dport;
    key.family = flow.family;
    key._pad = [0; 3];
    key.netns = netns;
}

/// Writes one event straight into the ring buffer (no stack copy: the verifier's 512-byte stack
/// is tight with the flow, key and filter already on it).
#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "inlined into each program: a struct of the arguments would be one more copy on the BPF stack")]
fn emit(kind: u16, ts: u64, flow: &RawFlow, netns: u32, tcp_state: u8, count: u32, duration_ns: u64, dir: u8) {
    let Some(mut entry) = emit::reserve::<TcpEvent>(kind) else { return };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points at a reserved record of the right size; every field is written before
    // it is submitted.
    unsafe {
        (*ev).header = EventHeader { ts_ns: ts, kind, cpu: bpf_get_smp_processor_id() as u16, _pad: [0; 4] };
        (*ev).flow = *flow;
        (*ev).flow._pad = [0; 4];
        (*ev).netns = netns;
        (*ev).count = count;
        (*ev).duration_ns = duration_ns;
        (*ev).state = tcp_state;
        (*ev).direction = dir;
        (*ev)._pad = [0; 6];
    }
    entry.submit();
}

#[inline(always)]
fn retransmit(flow: RawFlow, netns: u32, tcp_state: u8) {
    if !wanted(&flow, netns) {
        return;
    }
    let ts = now();
    let count = bump(&flow, netns, ts, tcp_state, Counter::Retransmits);
    if config!(stream_retransmits) == 0 {
        // Summarised in the map only; still counted, so the summary accounts for it.
        emit::count(kind::RETRANSMIT, counter::MATCHED);
        return;
    }
    emit(kind::RETRANSMIT, ts, &flow, netns, tcp_state, count, 0, 0);
}

/// The socket argument at `position`, its flow and state; None without a socket. A socket still
/// connecting has its source port noted for its connect_fail.
#[inline(always)]
fn socket_arg(ctx: &BtfTracePointContext, position: u32) -> Result<Option<(RawFlow, u32, u8)>, i64> {
    let sk = tp_btf_arg(ctx.as_ptr() as *const u8, position)? as *const u8;
    if sk.is_null() || !crate::kernel::offsets_valid() {
        return Ok(None);
    }
    let flow = sock::flow(sk);
    let tcp_state = sock::state(sk);
    if tcp_state == state::SYN_SENT {
        note_port(sk, flow.sport);
    }
    Ok(Some((flow, sock::netns(sk), tcp_state)))
}

/// tcp:tcp_retransmit_skb (sk, skb[, err]).
pub(crate) fn try_retransmit(ctx: &BtfTracePointContext) -> Result<(), i64> {
    if let Some((flow, netns, tcp_state)) = socket_arg(ctx, config!(retransmit_sk))? {
        retransmit(flow, netns, tcp_state);
    }
    Ok(())
}

/// tcp:tcp_retransmit_synack (sk, req): the request socket holds the flow.
pub(crate) fn try_retransmit_synack(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let req = tp_btf_arg(ctx.as_ptr() as *const u8, config!(synack_req))? as *const u8;
    if req.is_null() || !crate::kernel::offsets_valid() {
        return Ok(());
    }
    retransmit(sock::flow(req), sock::netns(req), state::SYN_RECV);
    Ok(())
}

#[inline(always)]
fn reset(flow: RawFlow, netns: u32, tcp_state: u8, dir: u8) {
    if !wanted(&flow, netns) {
        return;
    }
    let ts = now();
    bump(&flow, netns, ts, tcp_state, Counter::Resets);
    emit(kind::RESET, ts, &flow, netns, tcp_state, 0, 0, dir);
}

/// tcp:tcp_send_reset (sk, skb[, reason]). Without a socket (a segment to a closed port) the
/// flow is the incoming segment's, turned around: the reset goes from its destination.
pub(crate) fn try_send_reset(ctx: &BtfTracePointContext) -> Result<(), i64> {
    if !crate::kernel::offsets_valid() {
        return Ok(());
    }
    let base = ctx.as_ptr() as *const u8;
    let sk = tp_btf_arg(base, config!(send_reset_sk))? as *const u8;
    if !sk.is_null() {
        reset(sock::flow(sk), sock::netns(sk), sock::state(sk), direction::SENT);
        return Ok(());
    }
    let skb = tp_btf_arg(base, config!(send_reset_skb))? as *const u8;
    if skb.is_null() {
        return Ok(());
    }
    let incoming = skb::flow(skb);
    // The reset's own flags are not the incoming segment's: the turned-around flow has none.
    let flow = RawFlow {
        saddr: incoming.daddr,
        daddr: incoming.saddr,
        sport: incoming.dport,
        dport: incoming.sport,
        tcp_flags: 0,
        has_tcp_flags: 0,
        ..incoming
    };
    let device = skb::device(skb);
    reset(flow, device.netns, state::CLOSE, direction::SENT);
    Ok(())
}

/// tcp:tcp_receive_reset (sk).
pub(crate) fn try_receive_reset(ctx: &BtfTracePointContext) -> Result<(), i64> {
    if let Some((flow, netns, tcp_state)) = socket_arg(ctx, config!(receive_reset_sk))? {
        reset(flow, netns, tcp_state, direction::RECEIVED);
    }
    Ok(())
}

/// sock:inet_sock_set_state (sk, oldstate, newstate): times SYN_SENT and reports connects that
/// end in CLOSE from it; keeps the flow map's last state current.
pub(crate) fn try_set_state(ctx: &BtfTracePointContext) -> Result<(), i64> {
    let base = ctx.as_ptr() as *const u8;
    let sk = tp_btf_arg(base, config!(set_state_sk))? as *const u8;
    if sk.is_null() || !crate::kernel::offsets_valid() || !sock::is_tcp(sk) {
        return Ok(());
    }
    let old = tp_btf_arg(base, config!(set_state_old))? as u8;
    let new = tp_btf_arg(base, config!(set_state_new))? as u8;
    let id = sk as u64;
    let ts = now();
    if new == state::SYN_SENT {
        let _ = CONNECTING.insert(&id, &[ts, 0], 0);
        return Ok(());
    }
    if old != state::SYN_SENT {
        return update_state(sk, new, ts);
    }
    // [when it entered SYN_SENT, its source port | the SYNs it sent << 32].
    let [started, port_and_syns] = match CONNECTING.get_ptr_mut(&id) {
        Some(value) if new == state::CLOSE => syns_sent_into(sk, value),
        // SAFETY: a pointer into the map's value, copied out at once.
        Some(value) => unsafe { *value },
        None => [0, u64::from(SYNS_UNKNOWN) << 32],
    };
    let _ = CONNECTING.remove(&id);
    if new != state::CLOSE {
        return update_state(sk, new, ts);
    }
    let mut flow = sock::flow(sk);
    if flow.sport == 0 {
        flow.sport = port_and_syns as u16;
    }
    // The SYN count waits in the flow's padding (on the stack already) until the event is
    // written: one more value kept in a register across the filter's call took 6.1's verifier
    // past its 512-byte stack.
    flow._pad = ((port_and_syns >> 32) as u32).to_ne_bytes();
    let netns = sock::netns(sk);
    if !wanted(&flow, netns) {
        return Ok(());
    }
    // The flow's last state stays the one the connect gave up in: SYN_SENT says "no answer".
    bump(&flow, netns, ts, state::SYN_SENT, Counter::ConnectFails);
    let tried = if started != 0 && started <= ts { ts - started } else { 0 };
    emit(kind::CONNECT_FAIL, ts, &flow, netns, state::SYN_SENT, u32::from_ne_bytes(flow._pad), tried, 0);
    Ok(())
}

/// Reads how many segments the connecting socket `sk` sent (`tcp_sock.segs_out`: its SYNs) into
/// the high half of its [`CONNECTING`] value's second word, [`SYNS_UNKNOWN`] where the kernel
/// does not say, and returns the value. Whether a SYN left at all tells a connect that failed on
/// this node (no free source port, the 4-tuple still in use: none sent, no answer missing) from
/// one that got no answer. The map value is the helper's destination, not a stack temporary.
#[inline(always)]
fn syns_sent_into(sk: *const u8, value: *mut [u64; 2]) -> [u64; 2] {
    let at = offset!(tcp_sock_segs_out);
    // SAFETY: `value` points at this socket's map value for the program's run; the helper copes
    // with any source address. Little-endian (bpfel): the word's high half is its bytes 4..8.
    unsafe {
        let port = (*value)[1] & 0xffff;
        (*value)[1] = port;
        let high = (&raw mut (*value)[1]).cast::<u32>().add(1);
        if at == KernelOffsets::ABSENT as usize || generated::bpf_probe_read_kernel(high.cast(), 4, sk.wrapping_add(at).cast()) != 0 {
            (*value)[1] = port | (u64::from(SYNS_UNKNOWN) << 32);
        }
        *value
    }
}

/// Records `new` as the flow's last state, only for flows already in the map: a state change
/// alone does not make a flow worth tracking.
#[inline(always)]
fn update_state(sk: *const u8, new: u8, ts: u64) -> Result<(), i64> {
    let flow = sock::flow(sk);
    if flow.family == 0 {
        return Ok(());
    }
    let mut key = FlowKey::default();
    set_key(&mut key, &flow, sock::netns(sk));
    if let Some(stats) = TCP_FLOWS.get_ptr_mut(&key) {
        // SAFETY: a pointer into the map's value; plain stores.
        unsafe {
            (*stats).state = new;
            (*stats).last_ns = ts;
        }
    }
    Ok(())
}
