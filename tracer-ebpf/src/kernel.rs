//! Reading kernel memory at offsets the loader found in BTF.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use tracer_common::offsets::KernelOffsets;

/// Filled by the loader from BTF before load (read-only once loaded, so the verifier sees
/// constants). All zero means "not filled": the programs then emit nothing.
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    skb_len: 0,
    skb_head: 0,
    skb_protocol: 0,
    skb_network_header: 0,
    skb_transport_header: 0,
    skb_dev: 0,
    skb_sk: 0,
    net_device_ifindex: 0,
    net_device_name: 0,
    net_device_netns_ptr: 0,
    net_ns_inum: 0,
    sock_netns_ptr: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_family: 0,
    skc_state: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    sk_protocol: 0,
    net_device_mtu: 0,
    skb_refdst: 0,
    dst_dev: 0,
    dst_metrics: 0,
    tcp_sock_segs_out: 0,
};

/// Reads one field of [`OFFSETS`]; volatile so the compiler cannot fold the zero initialiser.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: OFFSETS is a static; the read is of a plain u32.
        unsafe { core::ptr::read_volatile(&raw const $crate::kernel::OFFSETS.$field) } as usize
    };
}
pub(crate) use offset;

#[inline(always)]
pub(crate) fn offsets_valid() -> bool {
    // SAFETY: as in `offset!`.
    let valid = unsafe { core::ptr::read_volatile(&raw const OFFSETS.valid) };
    valid == 1
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub(crate) fn read<T>(base: *const u8, off: usize) -> Result<T, i64> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one returns an error.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off).cast::<T>()) }.map_err(i64::from)
}

/// Reads `dst.len()` bytes at `base + off`.
#[inline(always)]
pub(crate) fn read_buf(base: *const u8, off: usize, dst: &mut [u8]) -> Result<(), i64> {
    // SAFETY: as in `read`.
    unsafe { bpf_probe_read_kernel_buf(base.wrapping_add(off), dst) }.map_err(i64::from)
}

/// How a program reads the kernel structs it holds pointers to: [`Probe`] or [`Typed`]. The
/// struct readers in `skb` are generic over it, so the programs that may load through typed
/// pointers do, and the others share the same code.
pub(crate) trait Kmem: Copy {
    /// The `T` at `base + off`; None when the read faulted.
    fn get<T>(self, base: *const u8, off: usize) -> Option<T>;
}

/// `bpf_probe_read_kernel`: any address, one helper call per read. For pointers the verifier
/// has no type for: a classic tracepoint's record, addresses kept in integers (`_nfct`,
/// `_skb_refdst`), `unsigned char *` (packet bytes).
#[derive(Clone, Copy)]
pub(crate) struct Probe;

impl Kmem for Probe {
    #[inline(always)]
    fn get<T>(self, base: *const u8, off: usize) -> Option<T> {
        read::<T>(base, off).ok()
    }
}

/// A plain load through a BTF-typed pointer: a tp_btf argument loaded straight from the
/// context, or a struct pointer loaded from such a pointer this way. `off` is a field of
/// [`OFFSETS`] (read-only once loaded), so the verifier sees a constant, checks the access against
/// the struct's BTF, and types the pointers it loads; the JIT emits one fault-safe load (a fault
/// reads as zero) instead of a helper call. A pointer of any other origin here is refused at load.
#[derive(Clone, Copy)]
pub(crate) struct Typed;

impl Kmem for Typed {
    #[inline(always)]
    fn get<T>(self, base: *const u8, off: usize) -> Option<T> {
        // SAFETY: a verifier-checked load through a BTF-typed pointer (above); volatile so that
        // it stays one load of the field's size at the field's offset.
        Some(unsafe { core::ptr::read_volatile(base.wrapping_add(off).cast::<T>()) })
    }
}

/// The inode number of the network namespace a `struct net *` points to (0 when null).
#[inline(always)]
pub(crate) fn netns_inum(net: *const u8) -> u32 {
    inum(Probe, net)
}

/// [`netns_inum`] read through `m`.
#[inline(always)]
pub(crate) fn inum<M: Kmem>(m: M, net: *const u8) -> u32 {
    if net.is_null() {
        return 0;
    }
    m.get::<u32>(net, offset!(net_ns_inum)).unwrap_or(0)
}

/// Argument `position` of a BTF tracepoint (each argument is one u64 slot of the context), or
/// 0 when the kernel's tracepoint has no such argument (`position` is the config's ABSENT).
#[inline(always)]
pub(crate) fn tp_btf_arg(ctx: *const u8, position: u32) -> Result<u64, i64> {
    if position == u32::MAX {
        return Ok(0);
    }
    read::<u64>(ctx, position as usize * 8)
}
