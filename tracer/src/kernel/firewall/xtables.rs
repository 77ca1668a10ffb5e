//! Legacy iptables (x_tables: `iptables-legacy`, `ip6tables-legacy`), read as `iptables-save`
//! reads them: `getsockopt(IPT_SO_GET_INFO)` for a table's size and chain offsets, then
//! `getsockopt(IPT_SO_GET_ENTRIES)` for its entries, with their counters.
//!
//! Only tables listed in `/proc/net/ip_tables_names` (as the namespace sees it) are asked for:
//! asking for another one would make the kernel create it in that namespace (and load its
//! module), hooking a legacy table into every packet path of a node that never used one.
//!
//! The socket is a UDP one, not the raw socket `iptables` opens: the kernel hands every
//! `SOL_IP`/`SOL_IPV6` option it does not know itself to netfilter whatever the socket's type,
//! and a UDP socket needs no `CAP_NET_RAW` (netfilter itself checks `CAP_NET_ADMIN`).
//!
//! The structs read here (`ipt_getinfo`, `ipt_get_entries`, `ipt_entry`, `ip6t_entry`,
//! `xt_entry_match`, `xt_entry_target`, `xt_tcp`, `xt_udp`) are the uapi ABI that
//! iptables-legacy itself is built against, so their layout is written down, as the uapi
//! headers give it for 64-bit targets (x86_64, arm64: `__u64` aligned to 8; checked against
//! the headers with a C compiler). These are not kernel-internal structs, which are only ever
//! read through BTF.

use std::{
    ffi::CStr,
    io,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::{Family, Rule};
use crate::kernel::ip_proto_name;

/// Which of the two x_tables front ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpVersion {
    /// `iptables-legacy` (`ip_tables`).
    V4,
    /// `ip6tables-legacy` (`ip6_tables`).
    V6,
}

impl IpVersion {
    /// The tool that shows these tables.
    pub(crate) const fn tool(self) -> &'static str {
        match self {
            Self::V4 => "iptables-legacy",
            Self::V6 => "ip6tables-legacy",
        }
    }

    /// The `/proc/net` file that lists the tables of a namespace.
    pub(crate) const fn names_file(self) -> &'static str {
        match self {
            Self::V4 => "ip_tables_names",
            Self::V6 => "ip6_tables_names",
        }
    }

    const fn layout(self) -> &'static Layout {
        match self {
            Self::V4 => &IPT,
            Self::V6 => &IP6T,
        }
    }
}

/// Where the fields of an `ipt_entry` / `ip6t_entry` are (uapi, 64-bit).
struct Layout {
    /// `AF_INET` / `AF_INET6`, and the `getsockopt` level (`SOL_IP` / `SOL_IPV6`).
    af: libc::c_int,
    level: libc::c_int,
    /// `sizeof(struct ipt_entry)`: where the first match starts.
    entry_size: usize,
    /// Address length, and the offsets of src, dst, smsk, dmsk in `ipt_ip` / `ip6t_ip6`.
    addr_len: usize,
    src: usize,
    dst: usize,
    smsk: usize,
    dmsk: usize,
    iniface: usize,
    outiface: usize,
    proto: usize,
    /// `ip6t_ip6.flags` (`IP6T_F_PROTO`: the protocol is matched); None for IPv4, whose proto
    /// is matched when it is not 0.
    flags: Option<usize>,
    invflags: usize,
    target_offset: usize,
    next_offset: usize,
    counters: usize,
}

const IPT: Layout = Layout {
    af: libc::AF_INET,
    level: libc::SOL_IP,
    entry_size: 112,
    addr_len: 4,
    src: 0,
    dst: 4,
    smsk: 8,
    dmsk: 12,
    iniface: 16,
    outiface: 32,
    proto: 80,
    flags: None,
    invflags: 83,
    target_offset: 88,
    next_offset: 90,
    counters: 96,
};

const IP6T: Layout = Layout {
    af: libc::AF_INET6,
    level: libc::SOL_IPV6,
    entry_size: 168,
    addr_len: 16,
    src: 0,
    dst: 16,
    smsk: 32,
    dmsk: 48,
    iniface: 64,
    outiface: 80,
    proto: 128,
    flags: Some(131),
    invflags: 132,
    target_offset: 140,
    next_offset: 142,
    counters: 152,
};

/// `IPT_SO_GET_INFO` / `IP6T_SO_GET_INFO` (both `IPT_BASE_CTL`, 64) and `..._GET_ENTRIES`.
const SO_GET_INFO: libc::c_int = 64;
const SO_GET_ENTRIES: libc::c_int = 65;
/// `sizeof(struct ipt_getinfo)`: name[32], valid_hooks, hook_entry[5], underflow[5],
/// num_entries, size; and where its fields are.
const GETINFO_LEN: usize = 84;
const VALID_HOOKS_AT: usize = 32;
const HOOK_ENTRY_AT: usize = 36;
const UNDERFLOW_AT: usize = 56;
const SIZE_AT: usize = 80;
/// `XT_TABLE_MAXNAMELEN`.
const TABLE_NAME_LEN: usize = 32;
/// `sizeof(struct ipt_get_entries)`: name[32], size, then the entries at 8-byte alignment.
const GET_ENTRIES_LEN: usize = 40;
/// `sizeof(struct xt_entry_match)` and `xt_entry_target`: size, name[29], revision.
const XT_HEADER_LEN: usize = 32;
/// `IFNAMSIZ`: an interface name field.
const IFNAMSIZ: usize = 16;
/// `XT_FUNCTION_MAXNAMELEN`: the chain name an `ERROR` target carries.
const XT_FUNCTION_MAXNAMELEN: usize = 30;
/// The hooks, in `NF_INET_*` order, by the name iptables gives their chains.
const HOOKS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];
/// A standard target's verdict for `NF_DROP`: `-NF_DROP - 1`.
const VERDICT_DROP: i32 = -1;
/// `XT_INV_PROTO`, `IPT_INV_SRCIP`, `IPT_INV_DSTIP`, `IPT_INV_VIA_IN`, `IPT_INV_VIA_OUT`.
const INV_PROTO: u8 = 0x40;
const INV_SRCIP: u8 = 0x08;
const INV_DSTIP: u8 = 0x10;
const INV_VIA_IN: u8 = 0x01;
const INV_VIA_OUT: u8 = 0x02;
/// `IP6T_F_PROTO`.
const F_PROTO: u8 = 0x01;
/// A table read while it changes is read again this many times.
const ATTEMPTS: u32 = 3;

/// Why a legacy table could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum XtError {
    #[error("opening a socket to ask x_tables")]
    Socket(#[source] io::Error),
    #[error("getsockopt SO_GET_INFO")]
    Info(#[source] io::Error),
    #[error("getsockopt SO_GET_ENTRIES")]
    Entries(#[source] io::Error),
    #[error("the table changed during each of {0} reads")]
    Changing(u32),
    #[error("malformed table: {0}")]
    Malformed(String),
}

/// The legacy tables of the calling thread's network namespace (`/proc/thread-self/net/...`:
/// `/proc/net` would be the process's namespace). None at all when the file is missing: the
/// module is not loaded, so no namespace has a table.
pub(crate) fn table_names(version: IpVersion) -> io::Result<Vec<String>> {
    match std::fs::read_to_string(format!("/proc/thread-self/net/{}", version.names_file())) {
        Ok(text) => Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The dropping rules (and dropping chain policies) of legacy table `table`, read in the
/// calling thread's network namespace. The table must be one [`table_names`] listed.
pub(crate) fn dropping_rules(version: IpVersion, table: &str) -> Result<Vec<Rule>, XtError> {
    let (info, entries) = read_table(version, table)?;
    parse_table(version, &info, &entries)
}

/// The table's `ipt_getinfo` and its entries, as the kernel gives them.
fn read_table(version: IpVersion, table: &str) -> Result<(Vec<u8>, Vec<u8>), XtError> {
    let layout = version.layout();
    let name = table.as_bytes();
    if name.len() >= TABLE_NAME_LEN || name.contains(&0) {
        return Err(XtError::Malformed(format!("table name {table:?}")));
    }
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(layout.af, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::IPPROTO_UDP) };
    if fd < 0 {
        return Err(XtError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    for _ in 0..ATTEMPTS {
        let mut info = vec![0u8; GETINFO_LEN];
        info[..name.len()].copy_from_slice(name);
        getsockopt(&socket, layout.level, SO_GET_INFO, &mut info).map_err(XtError::Info)?;
        let size = u32_at(&info, SIZE_AT).ok_or_else(|| XtError::Malformed("short SO_GET_INFO answer".into()))? as usize;
        let mut get = vec![0u8; GET_ENTRIES_LEN + size];
        get[..name.len()].copy_from_slice(name);
        get[TABLE_NAME_LEN..TABLE_NAME_LEN + 4].copy_from_slice(&(size as u32).to_ne_bytes());
        match getsockopt(&socket, layout.level, SO_GET_ENTRIES, &mut get) {
            Ok(()) => return Ok((info, get.split_off(GET_ENTRIES_LEN))),
            // The table was replaced between the two calls: its size no longer fits.
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue,
            Err(e) => return Err(XtError::Entries(e)),
        }
    }
    Err(XtError::Changing(ATTEMPTS))
}

/// A table as [`parse_capture`] reads it (test fixtures).
#[cfg(test)]
pub(super) fn capture(version: IpVersion, table: &str) -> Result<Vec<u8>, XtError> {
    let (mut info, entries) = read_table(version, table)?;
    info.extend(entries);
    Ok(info)
}

/// getsockopt(2) into all of `buf`, whose length the kernel checks to the byte.
fn getsockopt(socket: &OwnedFd, level: libc::c_int, name: libc::c_int, buf: &mut [u8]) -> io::Result<()> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf is valid for writes of len bytes; len is a live local.
    let got = unsafe { libc::getsockopt(socket.as_raw_fd(), level, name, buf.as_mut_ptr().cast(), &raw mut len) };
    if got != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A table as captured for tests and fuzzing: its `ipt_getinfo` (84 bytes), then its entries.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_capture(version: IpVersion, bytes: &[u8]) -> Result<Vec<Rule>, XtError> {
    let (info, entries) = bytes.split_at_checked(GETINFO_LEN).ok_or_else(|| XtError::Malformed("shorter than ipt_getinfo".into()))?;
    parse_table(version, info, entries)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A NUL-terminated name in a fixed-size field (the whole field when it has no NUL).
fn c_name(field: &[u8]) -> String {
    CStr::from_bytes_until_nul(field).map_or_else(|_| String::from_utf8_lossy(field).into_owned(), |c| c.to_string_lossy().into_owned())
}

/// The dropping rules of one table: its `ipt_getinfo` and its entries.
pub(crate) fn parse_table(version: IpVersion, info: &[u8], entries: &[u8]) -> Result<Vec<Rule>, XtError> {
    let malformed = |what: String| XtError::Malformed(what);
    if info.len() < GETINFO_LEN {
        return Err(malformed("short ipt_getinfo".into()));
    }
    let table = c_name(&info[..TABLE_NAME_LEN]);
    let valid_hooks = u32_at(info, VALID_HOOKS_AT).unwrap_or(0);
    let hook = |base: usize, h: usize| u32_at(info, base + 4 * h).map(|o| o as usize);
    let layout = version.layout();
    let mut rules = Vec::new();
    let mut chain = String::new();
    let mut at = 0;
    while at < entries.len() {
        let e = &entries[at..];
        let (Some(target_offset), Some(next_offset)) = (u16_at(e, layout.target_offset), u16_at(e, layout.next_offset)) else {
            return Err(malformed(format!("entry at {at} is cut short")));
        };
        let (target_offset, next_offset) = (target_offset as usize, next_offset as usize);
        if target_offset < layout.entry_size || target_offset + XT_HEADER_LEN > next_offset || next_offset > e.len() {
            return Err(malformed(format!("entry at {at}: target at {target_offset}, next at {next_offset}, {} bytes left", e.len())));
        }
        let hooks = (0..HOOKS.len()).filter(|h| valid_hooks & (1 << h) != 0);
        if let Some(h) = hooks.clone().find(|&h| hook(HOOK_ENTRY_AT, h) == Some(at)) {
            chain = HOOKS[h].to_string();
        }
        let policy = hooks.clone().any(|h| hook(UNDERFLOW_AT, h) == Some(at));
        let target = &e[target_offset..next_offset];
        let target_name = c_name(&target[2..XT_HEADER_LEN - 1]);
        let data = &target[XT_HEADER_LEN..];
        let verdict = match target_name.as_str() {
            "ERROR" => {
                // A user chain starts here (the chain's name), or the table ends ("ERROR").
                let name = c_name(data.get(..XT_FUNCTION_MAXNAMELEN).unwrap_or(data));
                if name == "ERROR" {
                    break;
                }
                chain = name;
                None
            }
            "" => data.get(..4).map(|v| i32::from_ne_bytes([v[0], v[1], v[2], v[3]])).filter(|v| *v == VERDICT_DROP).map(|_| "DROP"),
            "REJECT" => Some("REJECT"),
            _ => None,
        };
        if let Some(verdict) = verdict {
            let matches = &e[layout.entry_size..target_offset];
            rules.push(rule(version, &table, &chain, e, matches, verdict, policy)?);
        }
        at += next_offset;
    }
    Ok(rules)
}

/// One dropping entry as a [`Rule`], in iptables-save's words.
fn rule(version: IpVersion, table: &str, chain: &str, e: &[u8], matches: &[u8], verdict: &str, policy: bool) -> Result<Rule, XtError> {
    let layout = version.layout();
    let packets = u64_at(e, layout.counters);
    let mut words = Vec::new();
    let mut proto = None;
    let mut dport = None;
    if policy {
        words.push(format!("-P {chain} {verdict}"));
    } else {
        words.push(format!("-A {chain}"));
        let invflags = e[layout.invflags];
        let not = |flag: u8| if invflags & flag != 0 { "! " } else { "" };
        for (flag, letter, addr, mask) in [(INV_SRCIP, 's', layout.src, layout.smsk), (INV_DSTIP, 'd', layout.dst, layout.dmsk)] {
            if let Some(net) = network(&e[addr..addr + layout.addr_len], &e[mask..mask + layout.addr_len]) {
                words.push(format!("{}-{letter} {net}", not(flag)));
            }
        }
        for (flag, letter, name) in [(INV_VIA_IN, 'i', layout.iniface), (INV_VIA_OUT, 'o', layout.outiface)] {
            // iptables keeps a wildcard's `+` in the name (`eth+`); the mask only repeats it.
            let iface = c_name(&e[name..name + IFNAMSIZ]);
            if !iface.is_empty() {
                words.push(format!("{}-{letter} {iface}", not(flag)));
            }
        }
        let number = u16::from_ne_bytes([e[layout.proto], e[layout.proto + 1]]);
        let matched = layout.flags.map_or(number != 0, |flags| e[flags] & F_PROTO != 0);
        if matched && let Ok(number) = u8::try_from(number) {
            words.push(format!("{}-p {}", not(INV_PROTO), ip_proto_name(number)));
            if invflags & INV_PROTO == 0 {
                proto = Some(number);
            }
        }
        let mut rest = matches;
        while !rest.is_empty() {
            let size = u16_at(rest, 0).map_or(0, usize::from);
            if size < XT_HEADER_LEN || size > rest.len() {
                return Err(XtError::Malformed(format!("a match of {size} bytes in {} in chain {chain}", rest.len())));
            }
            let name = c_name(&rest[2..XT_HEADER_LEN - 1]);
            match PortMatch::parse(&name, &rest[XT_HEADER_LEN..size]) {
                Some(ports) => {
                    words.push(format!("-m {name}"));
                    words.extend(ports.iptables_words());
                    proto = proto.or(Some(ports.proto));
                    dport = dport.or(ports.judged_dport());
                }
                None => words.push(format!("-m {name}")),
            }
            rest = &rest[size..];
        }
        words.push(format!("-j {verdict}"));
    }
    let family = match version {
        IpVersion::V4 => Family::Ipv4,
        IpVersion::V6 => Family::Ipv6,
    };
    let prefix = if version == IpVersion::V6 { "ip6 " } else { "" };
    let counted = packets.map(|p| format!(" ({p} packets)")).unwrap_or_default();
    Ok(Rule {
        family,
        table: table.to_string(),
        chain: chain.to_string(),
        text: format!("{prefix}{table}/{chain}: {}{counted}", words.join(" ")),
        packets,
        proto,
        dport,
    })
}

/// `ADDR/PREFIX` of an address and its mask, as iptables-save prints it; None for the zero
/// mask, which matches everything.
fn network(addr: &[u8], mask: &[u8]) -> Option<String> {
    let prefix: u32 = mask.iter().map(|b| b.count_ones()).sum();
    if prefix == 0 {
        return None;
    }
    let ip = match addr.len() {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(addr).ok()?).to_string(),
        _ => Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?).to_string(),
    };
    Some(format!("{ip}/{prefix}"))
}

/// What an x_tables `tcp` or `udp` match compares (`struct xt_tcp` / `struct xt_udp`, uapi:
/// source and destination port ranges in host byte order, then an inversion byte). nftables
/// rules made by older iptables-nft carry the same structs in their `match` expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PortMatch {
    /// 6 for `tcp`, 17 for `udp`: the match implies the protocol.
    pub proto: u8,
    /// Source ports (inclusive; `0..=65535` is any), and whether the match is `!`.
    pub sport: (u16, u16),
    pub sport_inverted: bool,
    /// Destination ports, the same way.
    pub dport: (u16, u16),
    pub dport_inverted: bool,
}

impl PortMatch {
    /// The match's data for match `name`; None for another match or data too short.
    pub(crate) fn parse(name: &str, data: &[u8]) -> Option<Self> {
        // xt_tcp: spts[2], dpts[2], option, flg_mask, flg_cmp, invflags; xt_udp: spts[2],
        // dpts[2], invflags. XT_TCP_INV_SRCPT / XT_UDP_INV_SRCPT = 1, ..._DSTPT = 2.
        let (proto, invflags_at) = match name {
            "tcp" => (6, 11),
            "udp" => (17, 8),
            _ => return None,
        };
        let invflags = *data.get(invflags_at)?;
        Some(Self {
            proto,
            sport: (u16_at(data, 0)?, u16_at(data, 2)?),
            sport_inverted: invflags & 1 != 0,
            dport: (u16_at(data, 4)?, u16_at(data, 6)?),
            dport_inverted: invflags & 2 != 0,
        })
    }

    /// The destination ports a packet must have, when the match restricts them.
    pub(crate) fn judged_dport(&self) -> Option<(u16, u16)> {
        (!self.dport_inverted && self.dport != (0, u16::MAX)).then_some(self.dport)
    }

    /// The port ranges that restrict packets, source first: (`sport`/`dport`, range, inverted).
    fn restrictions(&self) -> impl Iterator<Item = (&'static str, (u16, u16), bool)> {
        [("sport", self.sport, self.sport_inverted), ("dport", self.dport, self.dport_inverted)]
            .into_iter()
            .filter(|(_, range, inverted)| *range != (0, u16::MAX) || *inverted)
    }

    /// The port options as iptables-save prints them (`--sport 1:2`, `! --dport 53`).
    fn iptables_words(&self) -> Vec<String> {
        self.restrictions()
            .map(|(field, (lo, hi), inverted)| {
                let not = if inverted { "! " } else { "" };
                if lo == hi { format!("{not}--{field} {lo}") } else { format!("{not}--{field} {lo}:{hi}") }
            })
            .collect()
    }

    /// The port matches as nft prints them (`udp sport 1-2`, `udp dport != 53`).
    pub(crate) fn nft_words(&self) -> Vec<String> {
        let name = ip_proto_name(self.proto);
        self.restrictions()
            .map(|(field, (lo, hi), inverted)| {
                let not = if inverted { "!= " } else { "" };
                if lo == hi { format!("{name} {field} {not}{lo}") } else { format!("{name} {field} {not}{lo}-{hi}") }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab's (`lab.rs`) legacy filter tables on 6.18: `ipt_getinfo`, then the entries.
    const FILTER: &[u8] = include_bytes!("testdata/ipt-filter.bin");
    const FILTER6: &[u8] = include_bytes!("testdata/ip6t-filter.bin");

    fn texts(rules: &[Rule]) -> Vec<&str> {
        rules.iter().map(|r| r.text.as_str()).collect()
    }

    #[test]
    fn a_captured_table_reads_as_iptables_save_prints_it_dropping_entries_and_policies_only() {
        let rules = parse_capture(IpVersion::V4, FILTER).expect("parses");
        assert_eq!(
            texts(&rules),
            [
                "filter/INPUT: -A INPUT -p udp -m udp --dport 5302 -j DROP (1 packets)",
                "filter/INPUT: -A INPUT -s 10.0.0.0/8 -i eth+ -p tcp -m tcp --dport 5000:5400 -j REJECT (0 packets)",
                "filter/FORWARD: -P FORWARD DROP (0 packets)",
                "filter/TRT: -A TRT ! -p udp -m conntrack -j DROP (0 packets)",
            ],
            "`-j TRT` and `! --dport 9 -j ACCEPT` do not drop"
        );
        let judged: Vec<_> = rules.iter().map(|r| (r.family, r.chain.as_str(), r.proto, r.dport, r.packets)).collect();
        assert_eq!(
            judged,
            [
                (Family::Ipv4, "INPUT", Some(17), Some((5302, 5302)), Some(1)),
                (Family::Ipv4, "INPUT", Some(6), Some((5000, 5400)), Some(0)),
                (Family::Ipv4, "FORWARD", None, None, Some(0)),
                // `! -p udp` says nothing a dropped packet's protocol must be.
                (Family::Ipv4, "TRT", None, None, Some(0)),
            ]
        );
    }

    #[test]
    fn a_captured_ipv6_table_has_the_ip6t_layout() {
        let rules = parse_capture(IpVersion::V6, FILTER6).expect("parses");
        assert_eq!(texts(&rules), ["ip6 filter/INPUT: -A INPUT -d fd00::1/128 -p udp -m udp --dport 53 -j DROP (0 packets)"]);
        assert_eq!((rules[0].family, rules[0].proto, rules[0].dport), (Family::Ipv6, Some(17), Some((53, 53))));
    }

    #[test]
    fn a_cut_or_bent_table_is_an_error_not_a_panic() {
        for cut in 0..FILTER.len() {
            let _ = parse_capture(IpVersion::V4, &FILTER[..cut]);
        }
        assert!(parse_capture(IpVersion::V4, &FILTER[..GETINFO_LEN + 100]).is_err(), "an entry cut short");
        let mut bent = FILTER.to_vec();
        // The first entry's next_offset past the end.
        bent[GETINFO_LEN + IPT.next_offset..GETINFO_LEN + IPT.next_offset + 2].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert!(matches!(parse_capture(IpVersion::V4, &bent), Err(XtError::Malformed(_))));
    }

    #[test]
    fn port_matches_read_xt_tcp_and_xt_udp() {
        let mut tcp = Vec::new();
        for port in [1024u16, 2048, 53, 53] {
            tcp.extend_from_slice(&port.to_ne_bytes());
        }
        tcp.extend_from_slice(&[0, 0, 0, 2]);
        let m = PortMatch::parse("tcp", &tcp).expect("xt_tcp");
        assert_eq!((m.proto, m.sport, m.dport, m.dport_inverted), (6, (1024, 2048), (53, 53), true));
        assert_eq!(m.judged_dport(), None, "an inverted port is no port a packet must have");
        assert_eq!(m.iptables_words(), ["--sport 1024:2048", "! --dport 53"]);
        assert_eq!(m.nft_words(), ["tcp sport 1024-2048", "tcp dport != 53"]);
        assert!(PortMatch::parse("udp", &tcp[..8]).is_none(), "too short for xt_udp");
        assert!(PortMatch::parse("multiport", &tcp).is_none());
    }
}
