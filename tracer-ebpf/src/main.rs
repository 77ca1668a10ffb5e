//! Program entry points only. Each is a thin wrapper that calls a `try_` function in its family's
//! module and ignores the error: a tracing program cannot fail the kernel path it observes.
#![no_std]
#![no_main]
// Two instructions of asm bound an offset where the verifier must see it bounded
// (skb::window_at); BPF asm is nightly-only, and this crate is built with nightly.
#![feature(asm_experimental_arch)]
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values are passed by reference: by value (the maps take `impl Borrow`), LLVM emits larger tcp programs"
)]

mod budget;
mod drops;
mod emit;
mod filter;
mod kernel;
mod mtu;
mod nat;
mod skb;
mod sock;
mod tcp;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC,
    macros::{btf_tracepoint, classifier, tracepoint},
    programs::{BtfTracePointContext, TcContext, TracePointContext},
};
// The (empty) library target, there for tracer's build dependency.
use tracer_ebpf as _;

/// skb:kfree_skb as a BTF tracepoint (kernel >= 5.5 with BTF). Argument positions come from BTF.
#[btf_tracepoint(function = "kfree_skb")]
pub(crate) fn drop_tp_btf(ctx: BtfTracePointContext) -> i32 {
    let _ = drops::try_drop_tp_btf(&ctx);
    0
}

/// skb:kfree_skb as a classic tracepoint, for kernels without BTF in /sys/kernel/btf (offsets
/// then come from --btf and the tracefs format file).
#[tracepoint(category = "skb", name = "kfree_skb")]
pub(crate) fn drop_tp(ctx: TracePointContext) -> u32 {
    let _ = drops::try_drop_tp(&ctx);
    0
}

/// tcp:tcp_retransmit_skb (kernel >= 4.15; BTF tracepoint >= 5.5).
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub(crate) fn tcp_retransmit(ctx: BtfTracePointContext) -> i32 {
    let _ = tcp::try_retransmit(&ctx);
    0
}

/// tcp:tcp_retransmit_synack (kernel >= 4.15).
#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub(crate) fn tcp_retransmit_synack(ctx: BtfTracePointContext) -> i32 {
    let _ = tcp::try_retransmit_synack(&ctx);
    0
}

/// tcp:tcp_send_reset (kernel >= 4.15; called without a socket for no-socket resets on 6.x).
#[btf_tracepoint(function = "tcp_send_reset")]
pub(crate) fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    let _ = tcp::try_send_reset(&ctx);
    0
}

/// tcp:tcp_receive_reset (kernel >= 4.15).
#[btf_tracepoint(function = "tcp_receive_reset")]
pub(crate) fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    let _ = tcp::try_receive_reset(&ctx);
    0
}

/// sock:inet_sock_set_state (kernel >= 4.16).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub(crate) fn tcp_set_state(ctx: BtfTracePointContext) -> i32 {
    let _ = tcp::try_set_state(&ctx);
    0
}

/// net:net_dev_start_xmit (kernel >= 4.14): the conntrack entry of every transmitted packet.
#[btf_tracepoint(function = "net_dev_start_xmit")]
pub(crate) fn nat_xmit(ctx: BtfTracePointContext) -> i32 {
    let _ = nat::try_xmit(&ctx);
    0
}

/// icmp:icmp_send (kernel >= 6.10): frag-needed this node sends, with the offending packet.
#[btf_tracepoint(function = "icmp_send")]
pub(crate) fn mtu_icmp_send(ctx: BtfTracePointContext) -> i32 {
    let _ = mtu::try_icmp_send(&ctx);
    0
}

/// skb:kfree_skb for the MTU family: PKT_TOO_BIG drops and dropped frag-needed/packet-too-big.
#[btf_tracepoint(function = "kfree_skb")]
pub(crate) fn mtu_drop(ctx: BtfTracePointContext) -> i32 {
    let _ = mtu::try_drop(&ctx);
    0
}

/// tc ingress (clsact or TCX) on a traced device. Returns TC_ACT_UNSPEC (TCX_NEXT): it only
/// looks, and the next program or the default action decides the packet's fate.
#[classifier]
pub(crate) fn mtu_tc_ingress(ctx: TcContext) -> i32 {
    let _ = mtu::try_tc::<{ skb::UNKNOWN_LINK }>(&ctx, tracer_common::mtu::hook::TC_INGRESS);
    TC_ACT_UNSPEC
}

/// tc egress on a traced device; as [`mtu_tc_ingress`]. Carries the NAT family's per-packet
/// check too when the loader says so (NAT_CONFIG's tc_read): one classifier a packet instead of
/// a tracepoint for every transmit.
#[classifier]
pub(crate) fn mtu_tc_egress(ctx: TcContext) -> i32 {
    nat::try_tc::<{ skb::UNKNOWN_LINK }>(&ctx);
    let _ = mtu::try_tc::<{ skb::UNKNOWN_LINK }>(&ctx, tracer_common::mtu::hook::TC_EGRESS);
    TC_ACT_UNSPEC
}

/// [`mtu_tc_ingress`] for Ethernet devices (the loader knows the device's type): the healthy
/// packet is judged from the packet itself, without a helper call.
#[classifier]
pub(crate) fn mtu_eth_ingress(ctx: TcContext) -> i32 {
    let _ = mtu::try_tc::<{ skb::ETHERNET }>(&ctx, tracer_common::mtu::hook::TC_INGRESS);
    TC_ACT_UNSPEC
}

/// [`mtu_tc_egress`] for Ethernet devices; as [`mtu_eth_ingress`], with the NAT check.
#[classifier]
pub(crate) fn mtu_eth_egress(ctx: TcContext) -> i32 {
    nat::try_tc::<{ skb::ETHERNET }>(&ctx);
    let _ = mtu::try_tc::<{ skb::ETHERNET }>(&ctx, tracer_common::mtu::hook::TC_EGRESS);
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so this is never executed.
    loop {}
}

// bpf_probe_read_kernel and friends need a GPL-compatible licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
