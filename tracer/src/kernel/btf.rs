//! The running kernel's BTF: struct field offsets, enum values and tracepoint argument layouts.
//!
//! Every offset a program uses comes from here, at start-up; nothing is compiled in. Code that
//! lives in a module (nf_conntrack, say) is described by that module's split BTF under
//! /sys/kernel/btf/MODULE, which [`KernelBtf::with_module`] adds.

use std::path::{Path, PathBuf};

use tracer_common::offsets::KernelOffsets;

use super::btf_format::{BtfData, FormatError, RawType, View, kind};

/// Where the kernel publishes its own BTF (CONFIG_DEBUG_INFO_BTF, kernel >= 5.4).
pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
/// Directory of per-module split BTF (kernel >= 5.11).
pub(crate) const MODULE_BTF_DIR: &str = "/sys/kernel/btf";

#[derive(Debug, thiserror::Error)]
pub(crate) enum BtfError {
    #[error("cannot read BTF from {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: FormatError,
    },
    #[error("BTF file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("BTF has no {kind} named `{name}`")]
    NoType { kind: &'static str, name: String },
    #[error("BTF: `{strukt}` has no member `{member}`")]
    NoMember { strukt: String, member: String },
    #[error("BTF: `{strukt}.{member}` is a bitfield; tracer reads whole bytes only")]
    Bitfield { strukt: String, member: String },
    #[error("BTF: `{strukt}.{member}` is not a struct or union, cannot look inside it")]
    NotComposite { strukt: String, member: String },
    #[error("BTF: anonymous members nest more than {MAX_ANONYMOUS_NESTING} deep looking for `{member}` (malformed BTF, or a cycle)")]
    TooDeep { member: String },
    #[error("BTF: the offset of `{member}` does not fit in 32 bits (malformed BTF)")]
    OffsetOverflow { member: String },
    #[error("BTF lookup of `{name}` failed")]
    Lookup {
        name: String,
        #[source]
        source: FormatError,
    },
}

/// The kernel's BTF plus any module BTF loaded on demand.
pub(crate) struct KernelBtf {
    vmlinux: BtfData,
    modules: Vec<(String, BtfData)>,
    /// Read from the running kernel's /sys/kernel/btf/vmlinux (not a `--btf` file): its ids are
    /// the ones the kernel takes for kfunc calls.
    running: bool,
}

/// Where a BTF type came from, so lookups resolve ids in the right (split) BTF.
type Found<'a> = (View<'a>, RawType<'a>);

impl KernelBtf {
    /// Loads `path` (a `--btf` override) or the running kernel's BTF.
    pub(crate) fn load(path: Option<&Path>) -> Result<Self, BtfError> {
        let path = path.map_or_else(|| PathBuf::from(VMLINUX_BTF), Path::to_path_buf);
        if !path.exists() {
            return Err(BtfError::Missing { path });
        }
        let bytes = std::fs::read(&path).map_err(|source| BtfError::Read { path: path.clone(), source: source.into() })?;
        let running = path == Path::new(VMLINUX_BTF);
        let btf = Self::from_owned_bytes(bytes).map_err(|source| BtfError::Read { path, source })?;
        Ok(Self { running, ..btf })
    }

    /// Whether this is the running kernel's own BTF (see [`KernelBtf::vmlinux_id`]).
    pub(crate) fn is_running_kernels(&self) -> bool {
        self.running
    }

    /// Parses a whole BTF (a `--btf` file's or vmlinux's bytes), copying them.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, FormatError> {
        Self::from_owned_bytes(bytes.to_vec())
    }

    fn from_owned_bytes(bytes: Vec<u8>) -> Result<Self, FormatError> {
        Ok(Self { vmlinux: BtfData::parse(bytes)?, modules: Vec::new(), running: false })
    }

    /// Adds the split BTF of kernel module `name` (e.g. "nf_conntrack"), if the module is loaded.
    /// Returns whether it was found; a module built into the kernel has no file and needs none.
    pub(crate) fn with_module(&mut self, name: &str) -> Result<bool, BtfError> {
        if self.modules.iter().any(|(n, _)| n == name) {
            return Ok(true);
        }
        let path = Path::new(MODULE_BTF_DIR).join(name);
        if !path.exists() {
            return Ok(false);
        }
        let bytes = std::fs::read(&path).map_err(|source| BtfError::Read { path: path.clone(), source: source.into() })?;
        self.add_module(name, &bytes).map_err(|source| BtfError::Read { path, source })?;
        Ok(true)
    }

    /// Parses `bytes` as module `name`'s split BTF over vmlinux's and adds it.
    pub(crate) fn add_module(&mut self, name: &str, bytes: &[u8]) -> Result<(), FormatError> {
        let btf = BtfData::parse_split(bytes.to_vec(), &self.vmlinux)?;
        self.modules.push((name.to_string(), btf));
        Ok(())
    }

    fn all(&self) -> impl Iterator<Item = View<'_>> {
        std::iter::once(View { own: &self.vmlinux, base: None }).chain(self.modules.iter().map(|(_, b)| View { own: b, base: Some(&self.vmlinux) }))
    }

    /// Finds a named type accepted by `pick`, searching vmlinux then modules (each module's own
    /// types: vmlinux's were searched first).
    fn find(&self, name: &str, what: &'static str, pick: fn(u8) -> bool) -> Result<Found<'_>, BtfError> {
        for view in self.all() {
            for id in view.own.ids_named(name) {
                if let Ok(t) = view.ty(id)
                    && pick(t.kind)
                {
                    return Ok((view, t));
                }
            }
        }
        Err(BtfError::NoType { kind: what, name: name.to_string() })
    }

    fn find_struct(&self, name: &str) -> Result<Found<'_>, BtfError> {
        self.find(name, "struct", is_composite)
    }

    /// Byte offset of `path` (dot-separated, e.g. "nd_net.net") inside `struct strukt`.
    /// Members of anonymous structs and unions are found as the C compiler finds them.
    pub(crate) fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let (view, mut current) = self.find_struct(strukt)?;
        let mut total_bits = 0u32;
        let mut owner = strukt.to_string();
        for member in path.split('.') {
            if !is_composite(current.kind) {
                return Err(BtfError::NotComposite { strukt: owner, member: member.to_string() });
            }
            let (bits, ty) =
                find_member(view, current, member)?.ok_or_else(|| BtfError::NoMember { strukt: owner.clone(), member: member.to_string() })?;
            total_bits = total_bits.checked_add(bits).ok_or_else(|| BtfError::OffsetOverflow { member: path.to_string() })?;
            current = skip_modifiers(view, ty)?;
            owner = format!("{owner}.{member}");
        }
        if !total_bits.is_multiple_of(8) {
            return Err(BtfError::Bitfield { strukt: strukt.to_string(), member: path.to_string() });
        }
        Ok(total_bits / 8)
    }

    /// Size in bytes of `struct name` (or union).
    pub(crate) fn size_of(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.find_struct(name)?.1.size_or_type)
    }

    /// The (name, value) pairs of `enum name` (plain or 64-bit enum).
    pub(crate) fn enum_values(&self, name: &str) -> Result<Vec<(String, u64)>, BtfError> {
        let (view, t) = self.find(name, "enum", |k| k == kind::ENUM || k == kind::ENUM64)?;
        let lookup = |source| BtfError::Lookup { name: name.to_string(), source };
        // ENUM: (name, value) per enumerator; ENUM64: (name, low 32 bits, high 32 bits).
        let words = if t.kind == kind::ENUM { 2 } else { 3 };
        (0..usize::from(t.vlen))
            .map(|i| {
                let w = |j| t.word(i * words + j);
                let value = if t.kind == kind::ENUM { u64::from(w(1)) } else { u64::from(w(1)) | (u64::from(w(2)) << 32) };
                Ok((view.name(w(0)).map_err(lookup)?.to_string(), value))
            })
            .collect()
    }

    /// The parameter types of BTF tracepoint `name` (from the `btf_trace_NAME` typedef), without
    /// the leading `void *__data`: index i is the program's argument i.
    pub(crate) fn tracepoint_params(&self, name: &str) -> Result<Vec<ParamType>, BtfError> {
        let typedef = format!("btf_trace_{name}");
        let (view, t) = self.find(&typedef, "typedef", |k| k == kind::TYPEDEF)?;
        let lookup = |source| BtfError::Lookup { name: typedef.clone(), source };
        let mut ty = view.ty(t.size_or_type).map_err(lookup)?;
        if ty.kind == kind::PTR {
            ty = view.ty(ty.size_or_type).map_err(lookup)?;
        }
        if ty.kind != kind::FUNC_PROTO {
            return Err(BtfError::NoType { kind: "function prototype", name: typedef });
        }
        // Each parameter is (name, type).
        (1..usize::from(ty.vlen)).map(|i| describe(view, skip_modifiers(view, view.ty(ty.word(i * 2 + 1)).map_err(lookup)?)?)).collect()
    }

    /// The id of a function (`want_func`) or typedef named `name` in vmlinux BTF: what the kernel
    /// takes as `attach_btf_id` when loading fentry and tp_btf programs.
    pub(crate) fn vmlinux_id(&self, name: &str, want_func: bool) -> Result<u32, BtfError> {
        let what = if want_func { "function" } else { "typedef" };
        let want = if want_func { kind::FUNC } else { kind::TYPEDEF };
        let view = View { own: &self.vmlinux, base: None };
        view.own
            .ids_named(name)
            .into_iter()
            .find(|id| view.ty(*id).is_ok_and(|t| t.kind == want))
            .ok_or_else(|| BtfError::NoType { kind: what, name: name.to_string() })
    }

    /// The offsets every packet probe needs, resolved for this kernel.
    pub(crate) fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        Ok(KernelOffsets {
            valid: 1,
            skb_len: self.offset_of("sk_buff", "len")?,
            skb_head: self.offset_of("sk_buff", "head")?,
            skb_protocol: self.offset_of("sk_buff", "protocol")?,
            skb_network_header: self.offset_of("sk_buff", "network_header")?,
            skb_transport_header: self.offset_of("sk_buff", "transport_header")?,
            skb_dev: self.offset_of("sk_buff", "dev")?,
            skb_sk: self.offset_of("sk_buff", "sk")?,
            net_device_ifindex: self.offset_of("net_device", "ifindex")?,
            net_device_name: self.offset_of("net_device", "name")?,
            net_device_netns_ptr: self.offset_of("net_device", "nd_net.net")?,
            net_ns_inum: self.offset_of("net", "ns.inum")?,
            sock_netns_ptr: self.offset_of("sock", "__sk_common.skc_net.net")?,
            skc_daddr: self.offset_of("sock_common", "skc_daddr")?,
            skc_rcv_saddr: self.offset_of("sock_common", "skc_rcv_saddr")?,
            skc_dport: self.offset_of("sock_common", "skc_dport")?,
            skc_num: self.offset_of("sock_common", "skc_num")?,
            skc_family: self.offset_of("sock_common", "skc_family")?,
            skc_state: self.offset_of("sock_common", "skc_state")?,
            skc_v6_daddr: self.offset_of("sock_common", "skc_v6_daddr").unwrap_or(KernelOffsets::ABSENT),
            skc_v6_rcv_saddr: self.offset_of("sock_common", "skc_v6_rcv_saddr").unwrap_or(KernelOffsets::ABSENT),
            sk_protocol: self.offset_of("sock", "sk_protocol").unwrap_or(KernelOffsets::ABSENT),
            net_device_mtu: self.offset_of("net_device", "mtu")?,
            skb_refdst: self.offset_of("sk_buff", "_skb_refdst")?,
            dst_dev: self.offset_of("dst_entry", "dev")?,
            dst_metrics: self.offset_of("dst_entry", "_metrics")?,
            tcp_sock_segs_out: self.offset_of("tcp_sock", "segs_out").unwrap_or(KernelOffsets::ABSENT),
        })
    }
}

/// What a tracepoint parameter is, as far as the probes care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParamType {
    /// Pointer to `struct NAME` (or union).
    StructPtr(String),
    /// Any other pointer (`void *location`).
    OtherPtr,
    /// `enum NAME`.
    Enum(String),
    /// Anything else.
    Other,
}

const fn is_composite(k: u8) -> bool {
    k == kind::STRUCT || k == kind::UNION
}

/// Follows typedefs, const, volatile, restrict and type tags to the underlying type.
fn skip_modifiers<'a>(view: View<'a>, mut t: RawType<'a>) -> Result<RawType<'a>, BtfError> {
    // Bounded: BTF chains of modifiers are short; a cycle would be malformed BTF.
    for _ in 0..32 {
        match t.kind {
            kind::TYPEDEF | kind::CONST | kind::VOLATILE | kind::RESTRICT | kind::TYPE_TAG => {
                t = view.ty(t.size_or_type).map_err(|source| BtfError::Lookup { name: "modifier".into(), source })?;
            }
            _ => return Ok(t),
        }
    }
    Err(BtfError::NoType { kind: "non-cyclic type", name: view.name(t.name_off).unwrap_or_default().to_string() })
}

/// How deep anonymous members may nest: the kernel's go 3 or 4 deep (`sk_buff`'s headers group
/// inside its anonymous union); BTF nesting deeper is malformed, or a cycle.
const MAX_ANONYMOUS_NESTING: usize = 16;

/// Finds `name` among `s`'s members (`s` a struct or union), descending into anonymous members.
/// Returns the bit offset and the member's type.
fn find_member<'a>(view: View<'a>, s: RawType<'a>, name: &str) -> Result<Option<(u32, RawType<'a>)>, BtfError> {
    find_member_within(view, s, name, MAX_ANONYMOUS_NESTING)
}

fn find_member_within<'a>(view: View<'a>, s: RawType<'a>, name: &str, depth: usize) -> Result<Option<(u32, RawType<'a>)>, BtfError> {
    if depth == 0 {
        return Err(BtfError::TooDeep { member: name.to_string() });
    }
    // Each member is (name, type, offset); with the kind flag, the offset word holds the
    // bitfield size in its top 8 bits and the bit offset in the low 24.
    for i in 0..usize::from(s.vlen) {
        let (name_off, type_id, offset) = (s.word(i * 3), s.word(i * 3 + 1), s.word(i * 3 + 2));
        let (bit_offset, bitfield_size) = if s.kind_flag { (offset & 0xff_ffff, offset >> 24) } else { (offset, 0) };
        let member_name = view.name(name_off).unwrap_or_default();
        let ty = view.ty(type_id).map_err(|source| BtfError::Lookup { name: name.to_string(), source })?;
        if member_name == name {
            if bitfield_size != 0 {
                return Err(BtfError::Bitfield { strukt: "(struct)".into(), member: name.to_string() });
            }
            return Ok(Some((bit_offset, ty)));
        }
        if member_name.is_empty() {
            let inner = skip_modifiers(view, ty)?;
            if is_composite(inner.kind)
                && let Some((bits, found)) = find_member_within(view, inner, name, depth - 1)?
            {
                let bits = bit_offset.checked_add(bits).ok_or_else(|| BtfError::OffsetOverflow { member: name.to_string() })?;
                return Ok(Some((bits, found)));
            }
        }
    }
    Ok(None)
}

fn describe(view: View<'_>, t: RawType<'_>) -> Result<ParamType, BtfError> {
    let name = |t: RawType<'_>| view.name(t.name_off).unwrap_or_default().to_string();
    Ok(match t.kind {
        kind::PTR => {
            // A target that cannot be read is taken as `void`, as a `void *` is.
            let target = view.ty(t.size_or_type).map(|t| skip_modifiers(view, t)).unwrap_or(Ok(super::btf_format::VOID))?;
            match target.kind {
                kind::STRUCT | kind::UNION | kind::FWD => ParamType::StructPtr(name(target)),
                _ => ParamType::OtherPtr,
            }
        }
        kind::ENUM | kind::ENUM64 => ParamType::Enum(name(t)),
        _ => ParamType::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Skips (loudly) when this machine has no kernel BTF: these tests prove offsets against
    /// the running kernel and have nothing to check without it.
    fn kernel_btf() -> Option<KernelBtf> {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIPPED: no {VMLINUX_BTF} on kernel {}", crate::kernel::release());
            return None;
        }
        Some(KernelBtf::load(None).expect("load kernel BTF"))
    }

    #[test]
    fn offsets_resolve_on_running_kernel() {
        let Some(btf) = kernel_btf() else { return };
        let off = btf.kernel_offsets().expect("offsets");
        // Facts that hold on every kernel: `next` is the first member of sk_buff (inside an
        // anonymous union), and the header offsets are consecutive u16s.
        assert_eq!(btf.offset_of("sk_buff", "next").unwrap(), 0);
        assert!(off.skb_len > 0 && off.skb_head > 0);
        assert_eq!(off.skb_network_header, off.skb_transport_header + 2, "transport then network header (u16 each)");
        assert_ne!(off.skb_dev, off.skb_sk);
        assert!(off.net_ns_inum > 0);
    }

    #[test]
    fn offsets_match_bpftool_dump() {
        // The independent witness: bpftool's own BTF dump of the running kernel.
        let Some(btf) = kernel_btf() else { return };
        let Ok(out) = std::process::Command::new("bpftool").args(["btf", "dump", "file", VMLINUX_BTF, "format", "raw"]).output() else {
            eprintln!("SKIPPED: bpftool not installed (scripts/setup.sh installs it)");
            return;
        };
        let dump = String::from_utf8_lossy(&out.stdout);
        for (strukt, member) in [("net_device", "ifindex"), ("net_device", "name"), ("sk_buff", "len"), ("sk_buff", "head")] {
            let witness = bpftool_member_bits(&dump, strukt, member).unwrap_or_else(|| panic!("{strukt}.{member} in dump"));
            assert_eq!(btf.offset_of(strukt, member).unwrap() * 8, witness, "{strukt}.{member}");
        }
    }

    /// bits_offset of a direct member of `struct name` in `bpftool btf dump ... format raw`.
    fn bpftool_member_bits(dump: &str, strukt: &str, member: &str) -> Option<u32> {
        let header = format!("STRUCT '{strukt}' size=");
        let mut lines = dump.lines().skip_while(|l| !l.contains(&header));
        lines.next()?;
        let needle = format!("'{member}' type_id=");
        lines
            .take_while(|l| l.starts_with('\t'))
            .find(|l| l.trim_start().starts_with(&needle))
            .and_then(|l| l.split("bits_offset=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn socket_offsets_follow_sock_common_layout() {
        let Some(btf) = kernel_btf() else { return };
        let off = btf.kernel_offsets().expect("offsets");
        // skc_addrpair and skc_portpair pack (daddr, rcv_saddr) and (dport, num) together: the
        // socket lookup compares them as one word, so this layout holds on every kernel.
        assert_eq!(off.skc_rcv_saddr, off.skc_daddr + 4);
        assert_eq!(off.skc_num, off.skc_dport + 2);
        assert_ne!(off.skc_v6_daddr, KernelOffsets::ABSENT, "Debian kernels have IPv6");
        assert_ne!(off.sk_protocol, KernelOffsets::ABSENT, "sk_protocol is a u16 since 5.6");
        // `struct sock` starts with its sock_common: the same offsets serve request sockets.
        assert_eq!(btf.offset_of("sock", "__sk_common").unwrap(), 0);
        assert_eq!(btf.offset_of("request_sock", "__req_common").unwrap(), 0);
    }

    #[test]
    fn tcp_tracepoint_params() {
        let Some(btf) = kernel_btf() else { return };
        let sock = ParamType::StructPtr("sock".into());
        for tp in ["tcp_retransmit_skb", "tcp_send_reset", "tcp_receive_reset", "inet_sock_set_state", "tcp_retransmit_synack"] {
            let params = btf.tracepoint_params(tp).unwrap_or_else(|e| panic!("{tp}: {e}"));
            assert_eq!(params[0], sock, "{tp}: the socket comes first");
        }
    }

    #[test]
    fn anonymous_members_are_found() {
        let Some(btf) = kernel_btf() else { return };
        // skb->protocol sits inside an anonymous struct (struct_group headers) on 6.x kernels.
        assert!(btf.offset_of("sk_buff", "protocol").is_ok());
    }

    #[test]
    fn missing_members_and_types_are_errors() {
        let Some(btf) = kernel_btf() else { return };
        assert!(matches!(btf.offset_of("sk_buff", "no_such_member"), Err(BtfError::NoMember { .. })));
        assert!(matches!(btf.offset_of("no_such_struct_xyz", "len"), Err(BtfError::NoType { .. })));
    }

    #[test]
    fn kfree_skb_tracepoint_params() {
        let Some(btf) = kernel_btf() else { return };
        let params = btf.tracepoint_params("kfree_skb").expect("btf_trace_kfree_skb");
        assert_eq!(params[0], ParamType::StructPtr("sk_buff".into()));
        assert_eq!(params[1], ParamType::OtherPtr);
    }

    #[test]
    fn module_btf_is_split_over_vmlinux() {
        let Some(mut btf) = kernel_btf() else { return };
        // Any loaded module will do; a kernel with everything built in has none to test.
        let module = std::fs::read_dir(MODULE_BTF_DIR)
            .ok()
            .and_then(|dir| dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| n != "vmlinux"));
        let Some(module) = module else {
            eprintln!("SKIPPED: no module BTF under {MODULE_BTF_DIR} on {} (all built in)", crate::kernel::release());
            assert!(!btf.with_module("nf_conntrack_not_a_module").unwrap());
            return;
        };
        assert!(btf.with_module(&module).expect("split BTF parses"));
        // vmlinux types stay visible through the module's split BTF.
        assert!(btf.offset_of("sk_buff", "len").is_ok());
    }

    /// Found by fuzzing (`cargo xtask fuzz`, target btf): a struct whose anonymous member is the
    /// struct itself sent `find_member` into endless recursion, a stack overflow on a `--btf` file.
    #[test]
    fn an_anonymous_member_cycle_is_an_error_not_a_stack_overflow() {
        let mut w = crate::fuzzing::btf_writer::BtfWriter::new();
        let u32_t = w.int("unsigned int", 4, false);
        let itself = w.next_id();
        w.strukt("loop", 8, &[("", itself, 0, 0), ("x", u32_t, 32, 0)]);
        let btf = KernelBtf::from_bytes(&w.finish()).expect("parses");
        assert!(matches!(btf.offset_of("loop", "missing"), Err(BtfError::TooDeep { .. })));
    }

    /// Offsets past 4 Gbit (malformed BTF) are an error, not a wrapped (or, with overflow checks,
    /// panicking) sum.
    #[test]
    fn an_offset_past_32_bits_is_an_error_not_a_wrapped_offset() {
        let mut w = crate::fuzzing::btf_writer::BtfWriter::new();
        let u32_t = w.int("unsigned int", 4, false);
        let inner = w.strukt("inner", 8, &[("x", u32_t, 0x100, 0)]);
        w.strukt("outer", 8, &[("", inner, 0xffff_ff00, 0), ("named", inner, 0xffff_ff00, 0)]);
        let btf = KernelBtf::from_bytes(&w.finish()).expect("parses");
        assert!(matches!(btf.offset_of("outer", "x"), Err(BtfError::OffsetOverflow { .. })), "through the anonymous member");
        assert!(matches!(btf.offset_of("outer", "named.x"), Err(BtfError::OffsetOverflow { .. })), "through the path");
    }

    /// A module's split BTF continues vmlinux's ids and strings: its types are found through
    /// it, their members' types and names resolved in either half, as from one whole BTF.
    #[test]
    fn split_btf_resolves_like_the_whole() {
        use crate::fuzzing::btf_writer;
        let whole = KernelBtf::from_bytes(&btf_writer::vmlinux(true).finish()).expect("parses");
        let base = btf_writer::vmlinux(false);
        let mut split = KernelBtf::from_bytes(&base.finish()).expect("the base parses");
        assert!(matches!(split.offset_of("nf_conn", "status"), Err(BtfError::NoType { .. })), "not in vmlinux");
        split.add_module("nf_conntrack", &btf_writer::nf_conntrack_split(&base)).expect("the split parses");
        for (strukt, path) in
            [("nf_conn", "status"), ("nf_conn", "tuplehash"), ("nf_conntrack_tuple", "dst.protonum"), ("nf_conntrack_tuple", "src.l3num")]
        {
            let (a, b) = (whole.offset_of(strukt, path).expect("whole"), split.offset_of(strukt, path).expect("split"));
            assert_eq!(a, b, "{strukt}.{path}");
        }
        assert_eq!(split.offset_of("nf_conntrack_tuple", "dst.dir").unwrap(), 20 + 19);
        assert_eq!(split.enum_values("ip_conntrack_status").unwrap(), whole.enum_values("ip_conntrack_status").unwrap());
        assert_eq!(split.size_of("nf_conn").unwrap(), 256);
        // A 64-bit enumerator keeps its high half.
        assert!(whole.enum_values("sk_rst_reason").unwrap().contains(&("SK_RST_REASON_MAX".to_string(), 1 << 40)));
    }

    /// Malformed BTF is an error, never a panic or a read outside the data.
    #[test]
    fn malformed_btf_is_an_error() {
        use crate::{fuzzing::btf_writer, kernel::btf_format::FormatError};
        let good = btf_writer::vmlinux(true).finish();
        assert!(matches!(KernelBtf::from_bytes(&[]), Err(FormatError::Magic)));
        assert!(matches!(KernelBtf::from_bytes(&good[..20]), Err(FormatError::Header)));
        let mut big_strings = good.clone();
        big_strings[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(KernelBtf::from_bytes(&big_strings), Err(FormatError::Header)));
        // The type section cut in the middle of a type: its length no longer ends on a type.
        let mut cut = good.clone();
        let type_len = u32::from_le_bytes(cut[12..16].try_into().unwrap());
        cut[12..16].copy_from_slice(&(type_len - 2).to_le_bytes());
        assert!(matches!(KernelBtf::from_bytes(&cut), Err(FormatError::Type { .. })));
        // An unknown kind in the first type.
        let mut unknown = good;
        unknown[24 + 7] = 0x1f;
        assert!(matches!(KernelBtf::from_bytes(&unknown), Err(FormatError::Type { id: 1, kind: 0x1f })));
    }

    #[test]
    fn missing_file_is_reported() {
        let err = KernelBtf::load(Some(Path::new("/nonexistent/vmlinux"))).err().expect("error");
        assert!(matches!(err, BtfError::Missing { .. }));
    }
}
