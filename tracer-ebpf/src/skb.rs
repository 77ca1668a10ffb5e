//! Parsing a `struct sk_buff *` seen from a tracing program: device, namespace and the flow from
//! the packet's own headers. Offsets come from [`crate::kernel::OFFSETS`].

use aya_ebpf::{helpers::bpf_probe_read_kernel_buf, macros::map, maps::PerCpuArray};
use tracer_common::flow::{
    ETH_P_IP, ETH_P_IPV6, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP,
    RawFlow, RawTunnel, TCP_FLAGS_OFFSET, TCP_HEADER_TO_FLAGS, TunnelPorts, tunnel,
};

use crate::kernel::{Kmem, Probe, inum, offset, read, read_buf};

/// skb->network_header when the kernel has not set it (`(u16)~0U`).
const HEADER_UNSET: u16 = 0xffff;

/// `sk_buff._nfct` is the conntrack entry's address with ctinfo in its low three bits.
pub(crate) const NFCT_PTRMASK: u64 = !7;

/// A tc classifier's `LINK_HEADER` (the length of the link-layer header in front of the IP
/// header, for the MTU family's check and the NAT family's packet identity) on Ethernet devices
/// (veth, vxlan, geneve, bridges, NICs): the classifier sees the packet from its MAC header
/// (egress after the header is built; ingress with the header pushed back), and an in-band VLAN
/// tag shows as skb->protocol 0x8100, which is not IP and leaves before any read.
pub(crate) const ETHERNET: usize = 14;
/// A tc classifier's `LINK_HEADER` where the loader does not know the device's header.
pub(crate) const UNKNOWN_LINK: usize = usize::MAX;

/// One load of the `u32` at `at` in packet memory (direct packet access: the caller checked
/// `at + 4` against data_end), whatever its alignment. Behind a 14-byte Ethernet header the IP
/// header is only 2-byte aligned, and Rust's unaligned read is split into byte loads for BPF,
/// each with its shifts and, under register pressure, its spill; the verifier allows the one
/// misaligned load wherever the kernel has efficient unaligned access (x86-64, arm64), unless a
/// program is loaded with BPF_F_STRICT_ALIGNMENT, which tracer's are not.
#[inline(always)]
pub(crate) fn packet_u32(at: usize) -> u32 {
    let value: u64;
    // SAFETY: reads 4 bytes at `at`, which the caller bounds-checked; writes nothing. Not
    // `pure`: the load may not be hoisted above that check.
    unsafe {
        core::arch::asm!(
            "{value} = *(u32 *)({at} + 0)",
            at = in(reg) at,
            value = lateout(reg) value,
            options(readonly, nostack, preserves_flags),
        );
    }
    value as u32
}

/// [`packet_u32`] for a `u64`.
#[inline(always)]
pub(crate) fn packet_u64(at: usize) -> u64 {
    let value: u64;
    // SAFETY: as packet_u32's, for 8 bytes.
    unsafe {
        core::arch::asm!(
            "{value} = *(u64 *)({at} + 0)",
            at = in(reg) at,
            value = lateout(reg) value,
            options(readonly, nostack, preserves_flags),
        );
    }
    value
}

/// IPv6 extension headers we step over to find the transport header; bounded for the verifier.
const MAX_IPV6_EXT_HEADERS: usize = 4;

/// The UDP ports taken for VXLAN and Geneve; set by the loader (`--vxlan-port`, `--geneve-port`).
#[unsafe(no_mangle)]
static TUNNEL_PORTS: TunnelPorts = TunnelPorts::DEFAULT;

/// Ethertype of Ethernet inside GRE or Geneve (transparent Ethernet bridging).
const ETH_P_TEB: u16 = 0x6558;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_HLEN: usize = 14;
const UDP_HLEN: usize = 8;
/// VXLAN's header: flags (the I bit says the VNI is valid), reserved, VNI, reserved.
const VXLAN_HLEN: usize = 8;
const VXLAN_FLAG_VNI: u8 = 0x08;

/// The device an skb is on: ifindex, name and the netns inode of the device.
#[derive(Default)]
pub(crate) struct Device {
    pub ifindex: u32,
    pub name: [u8; 16],
    pub netns: u32,
}

/// Reads skb->dev. Zeroes when the skb has no device.
#[inline(always)]
pub(crate) fn device(skb: *const u8) -> Device {
    net_device(dev_ptr(Probe, skb))
}

/// skb->dev (null when the skb has none or the read faulted).
#[inline(always)]
pub(crate) fn dev_ptr<M: Kmem>(m: M, skb: *const u8) -> *const u8 {
    m.get::<*const u8>(skb, offset!(skb_dev)).unwrap_or(core::ptr::null())
}

/// Ifindex, name and netns inode of a `struct net_device *`; zeroes for null.
#[inline(always)]
pub(crate) fn net_device(dev: *const u8) -> Device {
    let mut device = Device::default();
    if dev.is_null() {
        return device;
    }
    dev_identity(Probe, dev, &mut device.ifindex, &mut device.name);
    device.netns = dev_netns(Probe, dev);
    device
}

/// Ifindex and name of a non-null `struct net_device *`, into the event being built (zero
/// when a read faults).
#[inline(always)]
pub(crate) fn dev_identity<M: Kmem>(m: M, dev: *const u8, ifindex: &mut u32, name: &mut [u8; 16]) {
    *ifindex = m.get::<u32>(dev, offset!(net_device_ifindex)).unwrap_or(0);
    *name = m.get::<[u8; 16]>(dev, offset!(net_device_name)).unwrap_or([0; 16]);
}

/// The netns inode of a non-null `struct net_device *` (0 when the read faults).
#[inline(always)]
pub(crate) fn dev_netns<M: Kmem>(m: M, dev: *const u8) -> u32 {
    match m.get::<*const u8>(dev, offset!(net_device_netns_ptr)) {
        Some(net) => inum(m, net),
        None => 0,
    }
}

/// The namespace a packet was seen in: its device's (`dev`, skb->dev), else, before it has one
/// (a local send), its socket's; 0 when it has neither.
#[inline(always)]
pub(crate) fn packet_netns<M: Kmem>(m: M, skb: *const u8, dev: *const u8) -> u32 {
    let netns = if dev.is_null() { 0 } else { dev_netns(m, dev) };
    if netns != 0 { netns } else { socket_netns(m, skb) }
}

/// The netns inode of skb->sk (0 when the skb has no socket).
#[inline(always)]
pub(crate) fn socket_netns<M: Kmem>(m: M, skb: *const u8) -> u32 {
    match m.get::<*const u8>(skb, offset!(skb_sk)) {
        Some(sk) if !sk.is_null() => match m.get::<*const u8>(sk, offset!(sock_netns_ptr)) {
            Some(net) => inum(m, net),
            None => 0,
        },
        _ => 0,
    }
}

#[inline(always)]
pub(crate) fn len<M: Kmem>(m: M, skb: *const u8) -> u32 {
    m.get::<u32>(skb, offset!(skb_len)).unwrap_or(0)
}

/// Where packet bytes come from: kernel memory (tracing programs, `bpf_probe_read_kernel`) or
/// a tc program's packet (`bpf_skb_load_bytes_relative`). The header parsers below are generic
/// over it, so tracing and tc programs parse packets with the same code. Offsets are from the
/// start of the network header.
pub(crate) trait Bytes {
    fn load<T>(&self, off: usize) -> Option<T>;
    fn load_buf(&self, off: usize, dst: &mut [u8]) -> Option<()>;

    /// `f` of the `N` bytes of a header at `off` (None when they cannot be read).
    #[inline(always)]
    fn with_header<const N: usize, R>(&self, off: usize, f: impl FnOnce(&[u8; N]) -> R) -> Option<R> {
        let mut hdr = [0u8; N];
        self.load_buf(off, &mut hdr)?;
        Some(f(&hdr))
    }
}

/// A network header in kernel memory.
pub(crate) struct KernelBytes(pub *const u8);

impl Bytes for KernelBytes {
    #[inline(always)]
    fn load<T>(&self, off: usize) -> Option<T> {
        read::<T>(self.0, off).ok()
    }

    #[inline(always)]
    fn load_buf(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        read_buf(self.0, off, dst).ok()
    }
}

/// Where the skb's network header is in kernel memory, and skb->protocol (host order); None
/// when the header is not set (or the reads faulted).
#[inline(always)]
fn l3_of<M: Kmem>(m: M, skb: *const u8) -> Option<(*const u8, u16)> {
    // `head` is an `unsigned char *`: the packet bytes behind it are read with Probe whatever `m`.
    let head = m.get::<*const u8>(skb, offset!(skb_head))?;
    let network = m.get::<u16>(skb, offset!(skb_network_header))?;
    if head.is_null() || network == HEADER_UNSET {
        return None;
    }
    Some((head.wrapping_add(network as usize), u16::from_be(m.get::<u16>(skb, offset!(skb_protocol)).unwrap_or(0))))
}

/// The packet's ethertype: skb->protocol, checked against the network header `b`.
#[inline(always)]
fn ethertype_of<B: Bytes>(protocol: u16, b: &B) -> u16 {
    match protocol {
        // A tunnel's receive path sets skb->protocol to the inner frame's while the network
        // header is still the outer one (vxlan_rcv, where VXLAN_ENTRY_EXISTS drops: IPv6 pods
        // over an IPv4 underlay); the header's version nibble says which it is.
        ip @ (ETH_P_IP | ETH_P_IPV6) => match b.load::<u8>(0).map(|v| v >> 4) {
            Some(4) => ETH_P_IP,
            Some(6) => ETH_P_IPV6,
            _ => ip,
        },
        other => other,
    }
}

/// The skb's network header in kernel memory, and the packet's ethertype; None when the header
/// is not set (or the reads faulted).
#[inline(always)]
pub(crate) fn network_header<M: Kmem>(m: M, skb: *const u8) -> Option<(KernelBytes, u16)> {
    let (l3, protocol) = l3_of(m, skb)?;
    let b = KernelBytes(l3);
    let ethertype = ethertype_of(protocol, &b);
    Some((b, ethertype))
}

/// Bytes of a packet from its network header, copied with one helper call: enough for the
/// headers of a packet in VXLAN or Geneve over IPv6 with an IPv6 packet inside and its TCP
/// flags (124). Each helper call costs tens of ns (more than the copy), and a parse made three
/// to six. Headers past the bytes copied are not read.
pub(crate) const WINDOW: usize = 128;

/// The most a window holds ([`WindowBytes::widen`]): an ICMP error quoting such a packet (an
/// ICMPv6 packet-too-big about VXLAN over IPv6 with IPv6 inside: 162 bytes to the inner ports).
/// The skb's linear buffer is followed by its `skb_shared_info` (320 bytes), so a copy this long
/// from the network header stays inside the allocation.
pub(crate) const WINDOW_MAX: usize = 256;

/// Enough of the window to tell the IP version and the protocol (byte 9 of IPv4, 6 of IPv6),
/// for a program that leaves on them most of the time.
pub(crate) const WINDOW_PROTOCOL: usize = 16;

/// The per-CPU window of each program that parses through one ([`network_window`]): one slot per
/// program, since programs of different hooks may interrupt one another on a CPU.
pub(crate) mod window {
    /// drop_tp_btf and drop_tp (only one of them is attached).
    pub(crate) const DROPS: u32 = 0;
    /// mtu_drop.
    pub(crate) const MTU_DROP: u32 = 1;
    pub(crate) const SLOTS: u32 = 2;
}

/// One program's window: the bytes copied, and a word of map memory every offset passes through
/// on its way to a load ([`WindowBytes::at`]).
#[repr(C)]
pub(crate) struct Window {
    /// Twice [`WINDOW_MAX`], so that a masked offset plus the longest load stays inside.
    bytes: [u8; 2 * WINDOW_MAX],
    offset: u64,
}

#[map]
static HEADER_WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(window::SLOTS, 0);

/// A network header in kernel memory, its first bytes (up to [`WINDOW_MAX`]) read at once. Reading past
/// the packet's end is harmless: the skb's linear buffer is followed by its `skb_shared_info`
/// (over 300 bytes) in the same allocation, and the parser reads no further than the headers'
/// own lengths say. A header that does not fit in the bytes copied is not read: there is no
/// second source to fall back on, so that every read is one path for the verifier, not two
/// that go on side by side through the rest of the parse (before, a read past the window was
/// a helper call, and the two paths of every read multiplied the verifier's states).
pub(crate) struct WindowBytes {
    /// The network header in kernel memory.
    l3: *const u8,
    /// This CPU's window, filled.
    win: *mut Window,
    /// Bytes copied.
    len: usize,
}

impl WindowBytes {
    /// Copies the largest window ([`WINDOW_MAX`] bytes), for a program that copied only the
    /// first few to decide whether to go on ([`WINDOW_PROTOCOL`]) and now parses an ICMP error's
    /// quote; None when the copy failed.
    #[inline(always)]
    pub(crate) fn widen(self) -> Option<Self> {
        // SAFETY: as in `network_window`.
        unsafe { bpf_probe_read_kernel_buf(self.l3, &mut (&mut *self.win).bytes[..WINDOW_MAX]) }.ok()?;
        Some(Self { len: WINDOW_MAX, ..self })
    }

    /// `off` as the verifier will see it: stored to the window's map memory and loaded back, an
    /// unknown scalar. The offsets a parse computes depend on the headers (IHL, extension
    /// headers, a tunnel's options), and the verifier tracks each path's range of them: used
    /// as they are, in the bounds test and the window's address, they must stay exact, and
    /// every header layout is a state of its own that cannot be pruned against another.
    /// Through map memory, whose contents the verifier does not track, every path reaches the
    /// load with the same unknown offset, and the paths' own offsets never need to be exact. A
    /// store and a load in L1 at run time.
    #[inline(always)]
    fn launder(&self, off: usize) -> usize {
        // SAFETY: this CPU's slot, which the program owns for its run. Volatile, so that LLVM
        // keeps the round trip it could otherwise fold.
        unsafe {
            let slot = &raw mut (*self.win).offset;
            core::ptr::write_volatile(slot, off as u64);
            core::ptr::read_volatile(slot) as usize
        }
    }
}

impl Bytes for WindowBytes {
    #[inline(always)]
    fn load<T>(&self, off: usize) -> Option<T> {
        let off = self.launder(off);
        if size_of::<T>() > self.len || off > self.len - size_of::<T>() {
            return None;
        }
        // SAFETY: in bounds of this CPU's window, which the program owns for its run.
        Some(unsafe { core::ptr::read_unaligned(window_at(self.win, off).cast::<T>()) })
    }

    #[inline(always)]
    fn load_buf(&self, off: usize, dst: &mut [u8]) -> Option<()> {
        let off = self.launder(off);
        if dst.len() > self.len || off > self.len - dst.len() {
            return None;
        }
        // SAFETY: as in `load`.
        unsafe { core::ptr::copy_nonoverlapping(window_at(self.win, off), dst.as_mut_ptr(), dst.len()) };
        Some(())
    }

    /// Without the default's zeroed buffer: zeroing it is a call to a byte-by-byte memset
    /// loop, which the verifier walks byte by byte for every state that reaches it.
    #[inline(always)]
    fn with_header<const N: usize, R>(&self, off: usize, f: impl FnOnce(&[u8; N]) -> R) -> Option<R> {
        let hdr: [u8; N] = self.load(off)?;
        Some(f(&hdr))
    }
}

/// `win + off`, with `off` masked to the window (`WINDOW_MAX - 1`) in the very instructions the
/// verifier checks the access by. The callers have tested `off` against the bytes copied, so
/// the mask changes nothing at run time; it is there for the verifier, which cannot follow
/// LLVM's own test when LLVM tests a related value (`at` for `at + 40`), spills the value
/// between the test and the use (6.1 forgets the bounds of a spilled unbounded scalar), or
/// reuses a register whose earlier bounds contradict the test on a path that cannot happen (6.1
/// walks such a path). In asm, so that LLVM can neither drop the mask (it knows it is a no-op)
/// nor move it away from the addition. Slots are twice [`WINDOW_MAX`] long, so that a masked
/// offset plus the longest load (an IPv6 header) stays inside.
#[inline(always)]
#[expect(clippy::pointers_in_nomem_asm_block, reason = "the asm adds to the pointer; it reads and writes no memory")]
fn window_at(win: *mut Window, off: usize) -> *const u8 {
    let mut at = win.cast::<u8>().cast_const();
    // SAFETY: masks `off` and adds it to `at`; no memory is touched.
    unsafe {
        core::arch::asm!(
            "{off} &= {mask}",
            "{at} += {off}",
            at = inout(reg) at,
            off = inout(reg) off => _,
            mask = const WINDOW_MAX - 1,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    at
}

/// [`network_header`] through this CPU's window `slot` ([`window`]), `len` bytes of it (at
/// most [`WINDOW_MAX`]) copied; None also when the copy failed.
#[inline(always)]
pub(crate) fn network_window<M: Kmem>(m: M, skb: *const u8, slot: u32, len: usize) -> Option<(WindowBytes, u16)> {
    let (l3, protocol) = l3_of(m, skb)?;
    let len = if len < WINDOW_MAX { len } else { WINDOW_MAX };
    let win = HEADER_WINDOW.get_ptr_mut(slot)?;
    // SAFETY: this CPU's slot; the helper writes at most `len` bytes into it.
    unsafe { bpf_probe_read_kernel_buf(l3, &mut (&mut *win).bytes[..len]) }.ok()?;
    let b = WindowBytes { l3, win, len };
    let ethertype = ethertype_of(protocol, &b);
    Some((b, ethertype))
}

/// Parses IPv4/IPv6 and TCP/UDP/ICMP/ICMPv6 headers. Leaves `family` at 0 for anything else
/// (ARP, a packet whose network header is not set yet, a read that faulted). An encapsulated
/// packet's outer flow: for hooks where the stack has already taken tunnels apart (TCP's).
#[inline(always)]
pub(crate) fn flow(skb: *const u8) -> RawFlow {
    let mut flow = RawFlow::default();
    if let Some((l3, ethertype)) = network_header(Probe, skb) {
        parse(&l3, ethertype, &mut flow, None);
    }
    flow
}

/// The packet's flow into `flow` and, when it is encapsulated, its outer headers into `tunnel`
/// (both zeroed first; the flow is then the inner one). Out-parameters, so that a program can
/// keep them in a per-CPU map value rather than on its 512-byte stack.
#[inline(always)]
pub(crate) fn fill_packet(skb: *const u8, flow: &mut RawFlow, tunnel: &mut RawTunnel) {
    *flow = RawFlow::default();
    *tunnel = RawTunnel::default();
    fill_from(network_header(Probe, skb), flow, tunnel);
}

/// [`fill_packet`] from a network header the caller found ([`network_window`],
/// [`network_header`]), into a flow and tunnel the caller has zeroed.
#[inline(always)]
pub(crate) fn fill_from<B: Bytes>(header: Option<(B, u16)>, flow: &mut RawFlow, tunnel: &mut RawTunnel) {
    if let Some((l3, ethertype)) = header {
        parse(&l3, ethertype, flow, Some(tunnel));
    }
}

/// Parses the packet at network offset 0 of `b` into `flow`; returns the transport header's
/// offset when there is one (not for non-first fragments or non-IP). With `tunnel`, an
/// encapsulated packet is parsed inside too ([`parse_ip`]).
#[inline(always)]
pub(crate) fn parse<B: Bytes>(b: &B, ethertype: u16, flow: &mut RawFlow, tunnel: Option<&mut RawTunnel>) -> Option<usize> {
    flow.ethertype = ethertype;
    // Locally built packets can reach a drop point before skb->protocol is set: trust the
    // version nibble then, but only then (ARP's first byte would look like version 0).
    let version = match ethertype {
        ETH_P_IP => 4,
        ETH_P_IPV6 => 6,
        0 => b.load::<u8>(0).map(|v| v >> 4).unwrap_or(0),
        _ => 0,
    };
    parse_ip(b, 0, version, flow, tunnel)
}

/// Parses an IP header of `version` at `at` and the transport header after it into `flow`;
/// returns the transport header's offset. With `tunnel`, an encapsulated packet (VXLAN, Geneve,
/// IPIP, GRE) is parsed once more, inside: `flow` then describes the inner packet and `tunnel`
/// the outer one, and the offset returned is the inner transport header's. Only such packets
/// pay for the second parse: the test is on fields already read (protocol, destination port).
#[inline(always)]
pub(crate) fn parse_ip<B: Bytes>(b: &B, at: usize, version: u8, flow: &mut RawFlow, tunnel: Option<&mut RawTunnel>) -> Option<usize> {
    let l4 = parse_ip_once(b, at, version, flow)?;
    let Some(t) = tunnel else { return Some(l4) };
    let Some((kind, inner, ethertype)) = encapsulation(b, l4, flow, t) else { return Some(l4) };
    t.kind = kind;
    t.family = flow.family;
    t.l4_proto = flow.l4_proto;
    t.saddr = flow.saddr;
    t.daddr = flow.daddr;
    t.sport = flow.sport;
    t.dport = flow.dport;
    // Addresses and ports (the first 36 bytes) zeroed for the inner parse.
    zero_halfwords(flow, 36);
    flow.family = 0;
    flow.l4_proto = 0;
    flow.ethertype = ethertype;
    let version = match ethertype {
        ETH_P_IP => 4,
        ETH_P_IPV6 => 6,
        _ => 0,
    };
    let l4 = parse_ip_once(b, inner, version, flow);
    if flow.family == 0 {
        // Not IP inside, or cut short (an ICMP error's quote): the outer flow is all there is.
        flow.saddr = t.saddr;
        flow.daddr = t.daddr;
        flow.sport = t.sport;
        flow.dport = t.dport;
        flow.family = t.family;
        flow.l4_proto = t.l4_proto;
        zero_halfwords(t, size_of::<RawTunnel>());
    }
    l4
}

/// Zeroes the first `len` bytes of `value` with 2-byte stores. A plain `= [0; 16]` or
/// `= Default::default()` is a call to a byte-by-byte memset loop, which runs four BPF
/// instructions a byte and which the verifier walks byte by byte for every state that calls it
/// (over a third of `drop_tp_btf`'s verification).
#[inline(always)]
fn zero_halfwords<T>(value: &mut T, len: usize) {
    const { assert!(align_of::<T>() >= 2) };
    let words = core::ptr::from_mut(value).cast::<u16>();
    let mut i = 0;
    while i < len / 2 && i < size_of::<T>() / 2 {
        // SAFETY: inside `value` (bounded by its size), 2-aligned (asserted), and every field
        // of the flow and tunnel structs is a plain integer, for which zero is valid. Volatile,
        // so that LLVM does not merge the stores back into a memset call.
        unsafe { words.add(i).write_volatile(0) };
        i += 1;
    }
}

#[inline(always)]
fn parse_ip_once<B: Bytes>(b: &B, at: usize, version: u8, flow: &mut RawFlow) -> Option<usize> {
    let l4 = match version {
        4 => parse_ipv4(b, at, flow),
        6 => parse_ipv6(b, at, flow),
        _ => None,
    }?;
    parse_l4(b, l4, flow);
    Some(l4)
}

/// Whether `port` is one of `ports` (a loader-set global; unused slots are 0).
#[inline(always)]
fn one_of(port: u16, ports: &[u16; tunnel::MAX_PORTS]) -> bool {
    let mut i = 0;
    while i < tunnel::MAX_PORTS {
        // SAFETY: a global of plain integers, read volatile so the compiled default is not folded.
        let p = unsafe { core::ptr::read_volatile(&raw const ports[i]) };
        if p != 0 && p == port {
            return true;
        }
        i += 1;
    }
    false
}

/// When the packet whose transport header is at `l4` carries another packet: the tunnel's kind,
/// the offset of the inner network header and its ethertype; the tunnel's VNI is set here.
#[inline(always)]
fn encapsulation<B: Bytes>(b: &B, l4: usize, flow: &RawFlow, t: &mut RawTunnel) -> Option<(u8, usize, u16)> {
    match flow.l4_proto {
        IPPROTO_IPIP => Some((tunnel::IPIP, l4, ETH_P_IP)),
        IPPROTO_IPV6 => Some((tunnel::IPIP, l4, ETH_P_IPV6)),
        IPPROTO_UDP if one_of(flow.dport, &TUNNEL_PORTS.vxlan) => {
            let hdr: [u8; VXLAN_HLEN] = b.load(l4 + UDP_HLEN)?;
            if hdr[0] & VXLAN_FLAG_VNI == 0 {
                return None;
            }
            t.vni = u32::from_be_bytes([0, hdr[4], hdr[5], hdr[6]]);
            t.has_vni = 1;
            ethernet(b, l4 + UDP_HLEN + VXLAN_HLEN).map(|(at, ethertype)| (tunnel::VXLAN, at, ethertype))
        }
        IPPROTO_UDP if one_of(flow.dport, &TUNNEL_PORTS.geneve) => {
            // Version (2 bits) and options length (6 bits, in 4-byte words), flags, protocol, VNI.
            let hdr: [u8; 8] = b.load(l4 + UDP_HLEN)?;
            if hdr[0] >> 6 != 0 {
                return None;
            }
            t.vni = u32::from_be_bytes([0, hdr[4], hdr[5], hdr[6]]);
            t.has_vni = 1;
            let at = l4 + UDP_HLEN + 8 + (hdr[0] & 0x3f) as usize * 4;
            inner_of(b, at, u16::from_be_bytes([hdr[2], hdr[3]])).map(|(at, ethertype)| (tunnel::GENEVE, at, ethertype))
        }
        IPPROTO_GRE => {
            // Flags (checksum, key, sequence present) and version 0, then the protocol; the
            // optional words follow in that order.
            let hdr: [u8; 4] = b.load(l4)?;
            if hdr[1] & 0x07 != 0 {
                return None;
            }
            let mut at = l4 + 4;
            if hdr[0] & 0x80 != 0 {
                at += 4;
            }
            if hdr[0] & 0x20 != 0 {
                let key: [u8; 4] = b.load(at)?;
                t.vni = u32::from_be_bytes(key);
                t.has_vni = 1;
                at += 4;
            }
            if hdr[0] & 0x10 != 0 {
                at += 4;
            }
            inner_of(b, at, u16::from_be_bytes([hdr[2], hdr[3]])).map(|(at, ethertype)| (tunnel::GRE, at, ethertype))
        }
        _ => None,
    }
}

/// The network header inside a tunnel whose header names the inner protocol: IP directly, or
/// an Ethernet frame first.
#[inline(always)]
fn inner_of<B: Bytes>(b: &B, at: usize, protocol: u16) -> Option<(usize, u16)> {
    match protocol {
        ETH_P_IP | ETH_P_IPV6 => Some((at, protocol)),
        ETH_P_TEB => ethernet(b, at),
        _ => None,
    }
}

/// The network header and ethertype of the Ethernet frame at `at`, past one VLAN tag.
#[inline(always)]
fn ethernet<B: Bytes>(b: &B, at: usize) -> Option<(usize, u16)> {
    let ethertype: [u8; 2] = b.load(at + 12)?;
    match u16::from_be_bytes(ethertype) {
        ETH_P_8021Q => {
            let inner: [u8; 2] = b.load(at + ETH_HLEN + 2)?;
            Some((at + ETH_HLEN + 4, u16::from_be_bytes(inner)))
        }
        other => Some((at + ETH_HLEN, other)),
    }
}

#[inline(always)]
fn parse_ipv4<B: Bytes>(b: &B, at: usize, flow: &mut RawFlow) -> Option<usize> {
    b.with_header(at, |hdr: &[u8; 20]| {
        let ihl = (hdr[0] & 0x0f) as usize * 4;
        if ihl < 20 {
            return None;
        }
        flow.family = FAMILY_IPV4;
        flow.l4_proto = hdr[9];
        flow.saddr[..4].copy_from_slice(&hdr[12..16]);
        flow.daddr[..4].copy_from_slice(&hdr[16..20]);
        // A non-first fragment carries no transport header.
        let frag_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
        if frag_offset != 0 {
            return None;
        }
        Some(at + ihl)
    })?
}

#[inline(always)]
fn parse_ipv6<B: Bytes>(b: &B, at: usize, flow: &mut RawFlow) -> Option<usize> {
    let mut next = b.with_header(at, |hdr: &[u8; 40]| {
        flow.family = FAMILY_IPV6;
        flow.saddr.copy_from_slice(&hdr[8..24]);
        flow.daddr.copy_from_slice(&hdr[24..40]);
        hdr[6]
    })?;
    let mut at = at + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, not counting
            // the first 8.
            0 | 43 | 60 => {
                let ext: [u8; 2] = b.load(at)?;
                next = ext[0];
                at += (ext[1] as usize + 1) * 8;
            }
            // Fragment header: fixed 8 bytes; only the first fragment has the transport header.
            44 => {
                let ext: [u8; 4] = b.load(at)?;
                next = ext[0];
                at += 8;
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    flow.l4_proto = next;
                    return None;
                }
            }
            _ => break,
        }
    }
    flow.l4_proto = next;
    Some(at)
}

#[inline(always)]
fn parse_l4<B: Bytes>(b: &B, l4: usize, flow: &mut RawFlow) {
    match flow.l4_proto {
        // The flags sit 13 bytes into the header: one load of its first 14 bytes has them and
        // the ports, in the same helper call the ports alone took. A header cut short before
        // the flags (a tc program's short packet, an ICMP error quoting 8 bytes) fails that
        // load: the ports alone then, and no flags.
        IPPROTO_TCP => {
            if let Some(h) = b.load::<[u8; TCP_HEADER_TO_FLAGS]>(l4) {
                flow.sport = u16::from_be_bytes([h[0], h[1]]);
                flow.dport = u16::from_be_bytes([h[2], h[3]]);
                flow.tcp_flags = h[TCP_FLAGS_OFFSET];
                flow.has_tcp_flags = 1;
            } else {
                ports(b, l4, flow);
            }
        }
        IPPROTO_UDP => ports(b, l4, flow),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            if let Some(tc) = b.load::<[u8; 2]>(l4) {
                flow.icmp_type = tc[0];
                flow.icmp_code = tc[1];
            }
        }
        _ => {}
    }
}

/// The source and destination ports at transport offset `l4`.
#[inline(always)]
fn ports<B: Bytes>(b: &B, l4: usize, flow: &mut RawFlow) {
    if let Some(p) = b.load::<[u8; 4]>(l4) {
        flow.sport = u16::from_be_bytes([p[0], p[1]]);
        flow.dport = u16::from_be_bytes([p[2], p[3]]);
    }
}
