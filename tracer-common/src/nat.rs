//! NAT family: conntrack entries of transmitted packets (net:net_dev_start_xmit as a BTF
//! tracepoint, or inside the tc egress classifiers), reported once per connection and again when
//! its state changes. Offsets of
//! `struct nf_conn` come from vmlinux or nf_conntrack's module BTF. Kernel >= 5.10 with BTF.

use crate::{
    event::EventHeader,
    flow::{RawFlow, RawTunnel},
};

/// One direction's tuple of a conntrack entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatTuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Network byte order, as conntrack keeps them.
    pub sport_be: u16,
    pub dport_be: u16,
    /// `l3num`: AF_INET (2) or AF_INET6 (10).
    pub l3num: u16,
    pub protonum: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<NatTuple>() == 40);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEvent {
    pub header: EventHeader,
    /// The transmitted packet (after NAT).
    pub flow: RawFlow,
    /// The outer headers when the transmitted packet was encapsulated.
    pub tunnel: RawTunnel,
    pub orig: NatTuple,
    pub reply: NatTuple,
    /// The entry's address: identifies the connection within a run.
    pub ct: u64,
    /// `nf_conn.status` bits (enum ip_conntrack_status).
    pub status: u32,
    pub netns: u32,
    pub ifindex: u32,
    pub _pad: u32,
    pub ifname: [u8; 16],
}
const _: () = assert!(size_of::<NatEvent>() == 184 + 48);

/// Where things are, from BTF; the status bits from `enum ip_conntrack_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    /// 1 when filled (conntrack types found).
    pub valid: u32,
    /// tp_btf argument position of the skb in net_dev_start_xmit.
    pub skb_arg: u32,
    /// `sk_buff._nfct` (unsigned long: nf_conn pointer | ctinfo in the low 3 bits).
    pub skb_nfct: u32,
    pub ct_status: u32,
    /// `nf_conn.tuplehash[0].tuple` and `[1].tuple`.
    pub ct_orig_tuple: u32,
    pub ct_reply_tuple: u32,
    /// Inside `struct nf_conntrack_tuple`.
    pub tuple_src_u3: u32,
    pub tuple_src_port: u32,
    pub tuple_src_l3num: u32,
    pub tuple_dst_u3: u32,
    pub tuple_dst_port: u32,
    pub tuple_dst_protonum: u32,
    /// IPS_SRC_NAT | IPS_DST_NAT.
    pub nat_mask: u32,
    /// The bits whose change is reported: IPS_SEEN_REPLY | IPS_ASSURED.
    pub report_mask: u32,
    /// Whether the original tuple and `status` lie within [`NAT_SPAN`] bytes from the original
    /// tuple's start (1), so the per-packet check copies them in one read; 0: they are read one
    /// by one.
    pub span_fits: u32,
    /// `enum ip_conntrack_info`'s IP_CT_ESTABLISHED and IP_CT_ESTABLISHED_REPLY: the ctinfo in
    /// `_nfct`'s low bits of a packet sent after its connection's first reply, which alone may
    /// take the settled exit (see tracer-ebpf's nat.rs). [`NatConfig::NO_CTINFO`] when the
    /// kernel's BTF does not say: every packet is then checked.
    pub ctinfo_established: u32,
    pub ctinfo_established_reply: u32,
    /// Whether the tc egress classifiers check each packet's entry (the NAT check riding in
    /// the classifiers instead of net_dev_start_xmit), and how they read `sk_buff._nfct`:
    /// [`NatConfig::TC_OFF`], [`NatConfig::TC_KFUNC`] or [`NatConfig::TC_PROBE_READ`].
    pub tc_read: u32,
}
const _: () = assert!(size_of::<NatConfig>() == 72);

impl NatConfig {
    /// A ctinfo no packet carries (it is three bits).
    pub const NO_CTINFO: u32 = u32::MAX;
    /// The classifiers do not check NAT (the tracepoint does, or the family is off).
    pub const TC_OFF: u32 = 0;
    /// `_nfct` through `bpf_cast_to_kern_ctx` (kernel >= 6.2): one BTF-checked load.
    pub const TC_KFUNC: u32 = 1;
    /// `_nfct` through `bpf_probe_read_kernel` at the context's address, which is the kernel's
    /// `struct sk_buff *` (kernels without the kfunc).
    pub const TC_PROBE_READ: u32 = 2;
}

/// Slots of the direct-mapped table of settled connections (a power of two).
pub const SETTLED_SLOTS: u32 = 8192;

/// Bytes of `nf_conn` copied from the original tuple on for the per-packet check: the tuple
/// (40 bytes), the reply's hash entry (56) and the low word of `status` (the `unsigned long`
/// right after) on 64-bit kernels.
pub const NAT_SPAN: usize = 104;

/// Last reported state of a connection (the LRU map's value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSeen {
    /// Original source and destination ports and the first address words: a freed entry
    /// reused for another connection differs here.
    pub orig_ports: u32,
    pub orig_src_word: u32,
    pub orig_dst_word: u32,
    /// status & (nat_mask | report_mask) when last reported.
    pub reported: u32,
}
const _: () = assert!(size_of::<NatSeen>() == 16);

/// Connections remembered for deduplication.
pub const MAX_NAT_CONNS: u32 = 65536;

#[cfg(feature = "user")]
user_pod!(NatEvent, NatConfig, NatSeen, NatTuple);
