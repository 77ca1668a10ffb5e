//! A small BTF encoder: the types tracer looks up, laid out as a kernel's BTF lays them out (an
//! anonymous union at the head of `sk_buff`, `sock` starting with its `sock_common`, tracepoint
//! typedefs to function prototypes behind a pointer, `const` on arguments), so the `btf` target
//! starts from input that reaches every lookup, not only the header checks. Also the base the
//! target parses a module's split BTF over.
//!
//! The encoding is the kernel's (include/uapi/linux/btf.h): a 24-byte header, the type section,
//! then the string section.

use std::collections::HashMap;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_CONST: u32 = 10;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_ENUM64: u32 = 19;

/// One member of a struct or union: name ("" for anonymous), type id, bit offset, and bitfield
/// size (0: not a bitfield).
type Member<'a> = (&'a str, u32, u32, u32);

/// Types and strings being encoded. Ids are given in the order types are added.
pub(crate) struct BtfWriter {
    types: Vec<u8>,
    strings: Vec<u8>,
    names: HashMap<String, u32>,
    next_id: u32,
    /// Where this BTF's string offsets start (a split BTF's follow its base's).
    str_base: u32,
}

impl BtfWriter {
    /// An empty base BTF: ids start at 1 (0 is `void`).
    pub(crate) fn new() -> Self {
        Self::split(1, 0)
    }

    /// An empty split BTF over a base with `base_types` types (`void` included) and `base_str_len`
    /// bytes of strings: its ids and string offsets continue the base's.
    pub(crate) fn split(base_types: u32, base_str_len: u32) -> Self {
        Self { types: Vec::new(), strings: vec![0], names: HashMap::new(), next_id: base_types, str_base: base_str_len }
    }

    fn name(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        if let Some(off) = self.names.get(name) {
            return *off;
        }
        let off = self.str_base + self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        self.names.insert(name.to_string(), off);
        off
    }

    fn push(&mut self, name: &str, kind: u32, vlen: u32, kind_flag: bool, size_or_type: u32, rest: &[u32]) -> u32 {
        let name_off = self.name(name);
        let info = vlen | (kind << 24) | (u32::from(kind_flag) << 31);
        for word in [name_off, info, size_or_type].iter().chain(rest) {
            self.types.extend_from_slice(&word.to_le_bytes());
        }
        self.next_id += 1;
        self.next_id - 1
    }

    /// The id the next type added gets.
    pub(crate) const fn next_id(&self) -> u32 {
        self.next_id
    }

    pub(crate) fn int(&mut self, name: &str, bytes: u32, signed: bool) -> u32 {
        let encoding = if signed { 1 << 24 } else { 0 };
        self.push(name, KIND_INT, 0, false, bytes, &[encoding | (bytes * 8)])
    }

    pub(crate) fn ptr(&mut self, to: u32) -> u32 {
        self.push("", KIND_PTR, 0, false, to, &[])
    }

    pub(crate) fn konst(&mut self, of: u32) -> u32 {
        self.push("", KIND_CONST, 0, false, of, &[])
    }

    /// `const T *`, as tracepoints take most of their arguments.
    pub(crate) fn const_ptr(&mut self, to: u32) -> u32 {
        let konst = self.konst(to);
        self.ptr(konst)
    }

    pub(crate) fn typedef(&mut self, name: &str, of: u32) -> u32 {
        self.push(name, KIND_TYPEDEF, 0, false, of, &[])
    }

    pub(crate) fn array(&mut self, of: u32, index: u32, len: u32) -> u32 {
        self.push("", KIND_ARRAY, 0, false, 0, &[of, index, len])
    }

    fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[Member<'_>]) -> u32 {
        let bitfields = members.iter().any(|m| m.3 != 0);
        let mut rest = Vec::new();
        for (member, ty, bits, bitfield) in members {
            let offset = if bitfields { (bitfield << 24) | bits } else { *bits };
            rest.extend([self.name(member), *ty, offset]);
        }
        self.push(name, kind, members.len() as u32, bitfields, size, &rest)
    }

    pub(crate) fn strukt(&mut self, name: &str, size: u32, members: &[Member<'_>]) -> u32 {
        self.composite(KIND_STRUCT, name, size, members)
    }

    pub(crate) fn union(&mut self, name: &str, size: u32, members: &[Member<'_>]) -> u32 {
        self.composite(KIND_UNION, name, size, members)
    }

    pub(crate) fn enumeration(&mut self, name: &str, values: &[(&str, i32)]) -> u32 {
        let mut rest = Vec::new();
        for (value, v) in values {
            rest.extend([self.name(value), *v as u32]);
        }
        self.push(name, KIND_ENUM, values.len() as u32, false, 4, &rest)
    }

    pub(crate) fn enumeration64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
        let mut rest = Vec::new();
        for (value, v) in values {
            rest.extend([self.name(value), *v as u32, (*v >> 32) as u32]);
        }
        self.push(name, KIND_ENUM64, values.len() as u32, false, 8, &rest)
    }

    pub(crate) fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
        let mut rest = Vec::new();
        for (param, ty) in params {
            rest.extend([self.name(param), *ty]);
        }
        self.push("", KIND_FUNC_PROTO, params.len() as u32, false, ret, &rest)
    }

    /// A global function (linkage 1).
    pub(crate) fn func(&mut self, name: &str, proto: u32) -> u32 {
        self.push(name, KIND_FUNC, 1, false, proto, &[])
    }

    /// `btf_trace_NAME`: a typedef of a pointer to `void (void *__data, params...)`, as the
    /// kernel declares every BTF tracepoint.
    pub(crate) fn tracepoint(&mut self, name: &str, void_ptr: u32, params: &[(&str, u32)]) -> u32 {
        let mut all = vec![("__data", void_ptr)];
        all.extend_from_slice(params);
        let proto = self.func_proto(0, &all);
        let ptr = self.ptr(proto);
        self.typedef(&format!("btf_trace_{name}"), ptr)
    }

    /// The encoded BTF: header, types, strings.
    pub(crate) fn finish(&self) -> Vec<u8> {
        let (type_len, str_len) = (self.types.len() as u32, self.strings.len() as u32);
        let mut out = Vec::with_capacity(24 + self.types.len() + self.strings.len());
        out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for word in [24, 0, type_len, type_len, str_len] {
            out.extend_from_slice(&u32::to_le_bytes(word));
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }

    /// Bytes of strings so far (a split BTF over this one starts its offsets there).
    #[cfg(test)]
    pub(crate) const fn str_len(&self) -> u32 {
        self.strings.len() as u32
    }
}

/// A vmlinux in miniature: every struct, enum and tracepoint tracer's plans look up, with
/// conntrack's types too when `with_conntrack` (as a kernel with conntrack built in has them).
/// Returns the writer, so a split BTF can be made over it.
pub(crate) fn vmlinux(with_conntrack: bool) -> BtfWriter {
    let mut w = BtfWriter::new();
    let u8_t = w.int("unsigned char", 1, false);
    let u16_t = w.int("short unsigned int", 2, false);
    let u32_t = w.int("unsigned int", 4, false);
    let int_t = w.int("int", 4, true);
    let u64_t = w.int("long unsigned int", 8, false);
    let void_ptr = w.ptr(0);
    let name16 = w.array(u8_t, int_t, 16);
    let inum = w.strukt("ns_common", 8, &[("stashed", u32_t, 0, 0), ("inum", u32_t, 32, 0)]);
    let net = w.strukt("net", 256, &[("passive", u32_t, 0, 0), ("ns", inum, 64, 0)]);
    let net_ptr = w.ptr(net);
    let possible_net = w.strukt("possible_net_t", 8, &[("net", net_ptr, 0, 0)]);
    let in6 = w.array(u8_t, int_t, 16);
    // `skc_daddr`/`skc_rcv_saddr` sit in an anonymous struct inside an anonymous union.
    let addrpair = w.strukt("", 8, &[("skc_daddr", u32_t, 0, 0), ("skc_rcv_saddr", u32_t, 32, 0)]);
    let addr_union = w.union("", 8, &[("skc_addrpair", u64_t, 0, 0), ("", addrpair, 0, 0)]);
    let sock_common = w.strukt(
        "sock_common",
        136,
        &[
            ("", addr_union, 0, 0),
            ("skc_dport", u16_t, 96, 0),
            ("skc_num", u16_t, 112, 0),
            ("skc_family", u16_t, 128, 0),
            ("skc_state", u8_t, 144, 0),
            ("skc_reuse", u8_t, 152, 4),
            ("skc_net", possible_net, 192, 0),
            ("skc_v6_daddr", in6, 448, 0),
            ("skc_v6_rcv_saddr", in6, 576, 0),
        ],
    );
    let sock = w.strukt("sock", 760, &[("__sk_common", sock_common, 0, 0), ("sk_protocol", u16_t, 4192, 0)]);
    let sock_ptr = w.ptr(sock);
    let const_sock_ptr = w.const_ptr(sock);
    let request_sock = w.strukt("request_sock", 232, &[("__req_common", sock_common, 0, 0)]);
    let const_req_ptr = w.const_ptr(request_sock);
    let net_device = w.strukt(
        "net_device",
        2560,
        &[("name", name16, 0, 0), ("ifindex", int_t, 1792, 0), ("mtu", u32_t, 1856, 0), ("nd_net", possible_net, 8192, 0)],
    );
    let dev_ptr = w.ptr(net_device);
    let const_dev_ptr = w.const_ptr(net_device);
    w.strukt("dst_entry", 128, &[("dev", dev_ptr, 0, 0), ("_metrics", u64_t, 192, 0)]);
    // The skb: `next` inside an anonymous union first, the headers in an anonymous struct (the
    // kernel's struct_group), one bitfield.
    let skb_fwd = w.next_id();
    // Four types ahead: this pointer, the list, the union, the headers, then the skb.
    let skb_ptr = w.ptr(skb_fwd + 4);
    let list = w.strukt("", 16, &[("next", skb_ptr, 0, 0), ("prev", skb_ptr, 64, 0)]);
    let head_union = w.union("", 16, &[("", list, 0, 0), ("rbnode", u64_t, 0, 0)]);
    let headers = w.strukt("", 16, &[("protocol", u16_t, 0, 0), ("transport_header", u16_t, 16, 0), ("network_header", u16_t, 32, 0)]);
    let sk_buff = w.strukt(
        "sk_buff",
        232,
        &[
            ("", head_union, 0, 0),
            ("sk", sock_ptr, 192, 0),
            ("dev", dev_ptr, 256, 0),
            ("_skb_refdst", u64_t, 704, 0),
            ("_nfct", u64_t, 832, 0),
            ("len", u32_t, 896, 0),
            ("pkt_type", u8_t, 1024, 3),
            ("", headers, 1440, 0),
            ("head", void_ptr, 1600, 0),
        ],
    );
    assert_eq!(sk_buff, skb_fwd + 4, "the pointer above points at the skb");
    let const_skb_ptr = w.const_ptr(sk_buff);
    let reasons = w.enumeration(
        "skb_drop_reason",
        &[
            ("SKB_NOT_DROPPED_YET", 0),
            ("SKB_CONSUMED", 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
            ("SKB_DROP_REASON_NO_SOCKET", 3),
            ("SKB_DROP_REASON_NETFILTER_DROP", 8),
            ("SKB_DROP_REASON_PKT_TOO_BIG", 60),
            ("SKB_DROP_REASON_MAX", 130),
            ("SKB_DROP_REASON_SUBSYS_MASK", -65536),
        ],
    );
    let rst_reason = w.enumeration64("sk_rst_reason", &[("SK_RST_REASON_NOT_SPECIFIED", 0), ("SK_RST_REASON_MAX", 1 << 40)]);
    let const_int = w.konst(int_t);
    w.tracepoint("kfree_skb", void_ptr, &[("skb", skb_ptr), ("location", void_ptr), ("reason", reasons), ("rx_sk", sock_ptr)]);
    w.tracepoint("tcp_retransmit_skb", void_ptr, &[("sk", const_sock_ptr), ("skb", const_skb_ptr)]);
    w.tracepoint("tcp_send_reset", void_ptr, &[("sk", const_sock_ptr), ("skb", const_skb_ptr), ("reason", rst_reason)]);
    w.tracepoint("tcp_receive_reset", void_ptr, &[("sk", sock_ptr)]);
    w.tracepoint("inet_sock_set_state", void_ptr, &[("sk", const_sock_ptr), ("oldstate", const_int), ("newstate", const_int)]);
    w.tracepoint("tcp_retransmit_synack", void_ptr, &[("sk", const_sock_ptr), ("req", const_req_ptr)]);
    w.tracepoint("net_dev_start_xmit", void_ptr, &[("skb", const_skb_ptr), ("dev", const_dev_ptr)]);
    w.tracepoint("icmp_send", void_ptr, &[("skb", const_skb_ptr), ("type", int_t), ("code", int_t)]);
    let proto = w.func_proto(0, &[("skb", skb_ptr)]);
    w.func("kfree_skb_reason", proto);
    w.func("tcp_v4_connect", proto);
    if with_conntrack {
        conntrack(&mut w, [u8_t, u16_t, u32_t, int_t], TUPLE_HASH_SIZE);
        conntrack_info(&mut w);
    }
    w
}

/// `sizeof(struct nf_conntrack_tuple_hash)` on 64-bit kernels.
const TUPLE_HASH_SIZE: u32 = 56;

/// [`vmlinux`] with conntrack, its `nf_conntrack_tuple_hash` `size` bytes long.
#[cfg(test)]
pub(crate) fn vmlinux_with_tuple_hash_size(size: u32) -> Vec<u8> {
    let mut w = vmlinux(false);
    conntrack(&mut w, BASE_INTS, size);
    conntrack_info(&mut w);
    w.finish()
}

/// [`vmlinux`] with conntrack's structs but not `enum ip_conntrack_info`.
#[cfg(test)]
pub(crate) fn vmlinux_without_conntrack_info() -> Vec<u8> {
    let mut w = vmlinux(false);
    conntrack(&mut w, BASE_INTS, TUPLE_HASH_SIZE);
    w.finish()
}

/// The ids of [`vmlinux`]'s first types, its integers: u8, u16, u32, int.
#[cfg(test)]
const BASE_INTS: [u32; 4] = [1, 2, 3, 4];

/// nf_conntrack's types: as a module's split BTF over [`vmlinux`]`(false)` (a seed).
#[cfg(test)]
pub(crate) fn nf_conntrack_split(base: &BtfWriter) -> Vec<u8> {
    let mut w = BtfWriter::split(base.next_id(), base.str_len());
    conntrack(&mut w, BASE_INTS, TUPLE_HASH_SIZE);
    conntrack_info(&mut w);
    w.finish()
}

/// `enum ip_conntrack_info`, as the kernel's uAPI header has it.
fn conntrack_info(w: &mut BtfWriter) {
    w.enumeration(
        "ip_conntrack_info",
        &[
            ("IP_CT_ESTABLISHED", 0),
            ("IP_CT_RELATED", 1),
            ("IP_CT_NEW", 2),
            ("IP_CT_IS_REPLY", 3),
            ("IP_CT_ESTABLISHED_REPLY", 3),
            ("IP_CT_RELATED_REPLY", 4),
        ],
    );
}

/// nf_conntrack's types, given the ids of u8, u16, u32 and int.
fn conntrack(w: &mut BtfWriter, [u8_t, u16_t, u32_t, int_t]: [u32; 4], hash_size: u32) {
    let addr = w.union("nf_inet_addr", 16, &[("all", u32_t, 0, 0), ("ip", u32_t, 0, 0)]);
    let port = w.union("nf_conntrack_man_proto", 2, &[("all", u16_t, 0, 0)]);
    let man = w.strukt("nf_conntrack_man", 20, &[("u3", addr, 0, 0), ("u", port, 128, 0), ("l3num", u16_t, 144, 0)]);
    let dst = w.strukt("", 20, &[("u3", addr, 0, 0), ("u", port, 128, 0), ("protonum", u8_t, 144, 0), ("dir", u8_t, 152, 0)]);
    let tuple = w.strukt("nf_conntrack_tuple", 40, &[("src", man, 0, 0), ("dst", dst, 160, 0)]);
    let hash = w.strukt("nf_conntrack_tuple_hash", hash_size, &[("hnnode", u32_t, 0, 0), ("tuple", tuple, 128, 0)]);
    let hashes = w.array(hash, int_t, 2);
    w.strukt("nf_conn", 256, &[("ct_general", u32_t, 0, 0), ("tuplehash", hashes, 128, 0), ("status", u32_t, 1024, 0)]);
    w.enumeration(
        "ip_conntrack_status",
        &[("IPS_EXPECTED", 1), ("IPS_SEEN_REPLY", 2), ("IPS_ASSURED", 4), ("IPS_CONFIRMED", 8), ("IPS_SRC_NAT", 16), ("IPS_DST_NAT", 32)],
    );
}
