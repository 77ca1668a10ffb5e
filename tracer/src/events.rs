//! Typed events: what the probes decode raw kernel records into, and what outputs print.
//! Only this side of the kernel/user boundary knows about names, pods and time zones.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use tracer_common::flow::{
    ETH_P_IP, ETH_P_IPV6, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, RawFlow, RawTunnel, tcp_flag, tunnel,
};

pub(crate) use crate::probes::Detail;

/// One decoded event from any probe family.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    pub ts_unix_ns: i128,
    pub flow: Flow,
    /// Network namespace inode, when the kernel could tell.
    pub netns: Option<u32>,
    pub ifindex: Option<u32>,
    pub ifname: Option<String>,
    pub src_pod: Option<String>,
    pub dst_pod: Option<String>,
    /// The pod whose network namespace the event was seen in (which may be neither end: traffic
    /// a pod sends to a Service address before NAT, say).
    pub netns_pod: Option<String>,
    /// The node that saw it (CONTRACT `node`): `--node-name`, else `NODE_NAME`, else the host
    /// name; set with the pods, by the pod layer.
    pub node: Option<Arc<str>>,
    pub detail: Detail,
}

impl Event {
    /// An event with nothing but its time and detail, for tests.
    #[cfg(test)]
    pub(crate) fn bare(ts_unix_ns: i128, detail: Detail) -> Self {
        Event {
            ts_unix_ns,
            flow: Flow::default(),
            netns: None,
            ifindex: None,
            ifname: None,
            src_pod: None,
            dst_pod: None,
            netns_pod: None,
            node: None,
            detail,
        }
    }
}

/// A NUL-padded kernel device name, None when empty.
pub(crate) fn ifname(raw: &[u8; 16]) -> Option<String> {
    let len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    (len > 0).then(|| String::from_utf8_lossy(&raw[..len]).into_owned())
}

/// Packet addresses, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Flow {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// Ports, for TCP and UDP.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// IP protocol number, when the packet is IP.
    pub l4_proto: Option<u8>,
    /// Ethertype, when the packet is not IP.
    pub ethertype: u16,
    /// ICMP/ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
    /// The outer headers, when the packet was encapsulated (the fields above are the inner flow).
    pub tunnel: Option<Tunnel>,
    /// The TCP segment's flags, when the flow was read from a TCP packet (not from a socket or
    /// a conntrack tuple).
    pub tcp_flags: Option<TcpFlags>,
}

/// A TCP header's flags byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TcpFlags(pub u8);

impl TcpFlags {
    /// Names, most significant bit first, as `tcp_flags` prints them.
    pub(crate) const NAMES: [(u8, &'static str); 8] = [
        (tcp_flag::CWR, "CWR"),
        (tcp_flag::ECE, "ECE"),
        (tcp_flag::URG, "URG"),
        (tcp_flag::ACK, "ACK"),
        (tcp_flag::PSH, "PSH"),
        (tcp_flag::RST, "RST"),
        (tcp_flag::SYN, "SYN"),
        (tcp_flag::FIN, "FIN"),
    ];

    /// A segment that opens a connection: SYN without ACK (nor RST). Every other segment
    /// belongs to a connection that exists, or existed, at one of its ends.
    pub(crate) const fn opens_connection(self) -> bool {
        self.0 & (tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST) == tcp_flag::SYN
    }

    /// A SYN-ACK: the answer to a segment that opened a connection (its sender is the server).
    pub(crate) const fn answers_opening(self) -> bool {
        self.0 & (tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST) == tcp_flag::SYN | tcp_flag::ACK
    }

    /// The set flags joined by `|` (`SYN`, `ACK|FIN`, `ACK|PSH`), `NONE` when no flag is set.
    pub(crate) fn name(self) -> String {
        let names: Vec<&str> = Self::NAMES.iter().filter(|(bit, _)| self.0 & bit != 0).map(|(_, name)| *name).collect();
        if names.is_empty() { "NONE".into() } else { names.join("|") }
    }
}

/// An encapsulated packet's outer headers (CONTRACT: the event's `tunnel` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tunnel {
    pub kind: TunnelKind,
    /// VXLAN/Geneve VNI, GRE key.
    pub vni: Option<u32>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// The outer UDP ports (VXLAN, Geneve).
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// The encapsulations the kernel programs take apart, by their CONTRACT names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum TunnelKind {
    Vxlan,
    Geneve,
    Ipip,
    Gre,
}

impl TunnelKind {
    /// The CONTRACT's `tunnel.type`.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Vxlan => "vxlan",
            Self::Geneve => "geneve",
            Self::Ipip => "ipip",
            Self::Gre => "gre",
        }
    }
}

impl Tunnel {
    /// None when the packet was not encapsulated (or in a way the programs do not know).
    pub(crate) fn from_raw(raw: &RawTunnel) -> Option<Self> {
        let kind = match raw.kind {
            tunnel::VXLAN => TunnelKind::Vxlan,
            tunnel::GENEVE => TunnelKind::Geneve,
            tunnel::IPIP => TunnelKind::Ipip,
            tunnel::GRE => TunnelKind::Gre,
            _ => return None,
        };
        let udp = matches!(kind, TunnelKind::Vxlan | TunnelKind::Geneve);
        Some(Self {
            kind,
            vni: (raw.has_vni != 0).then_some(raw.vni),
            src: ip_of(raw.family, &raw.saddr)?,
            dst: ip_of(raw.family, &raw.daddr)?,
            sport: udp.then_some(raw.sport),
            dport: udp.then_some(raw.dport),
        })
    }

    /// The outer source as the CONTRACT writes it: `IP:PORT` for UDP tunnels, else the bare IP.
    pub(crate) fn src_endpoint(&self) -> String {
        endpoint(self.src, self.sport)
    }

    pub(crate) fn dst_endpoint(&self) -> String {
        endpoint(self.dst, self.dport)
    }

    /// Compact, for tables: `vxlan:1 10.78.0.1->10.78.0.2`.
    pub(crate) fn short(&self) -> String {
        let vni = self.vni.map(|v| format!(":{v}")).unwrap_or_default();
        format!("{}{vni} {}->{}", self.kind.name(), self.src, self.dst)
    }
}

fn ip_of(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

impl Flow {
    /// A packet's flow with its outer headers, when it was encapsulated.
    pub(crate) fn from_packet(raw: &RawFlow, tunnel: &RawTunnel) -> Self {
        Self { tunnel: Tunnel::from_raw(tunnel), ..Self::from_raw(raw) }
    }

    pub(crate) fn from_raw(raw: &RawFlow) -> Self {
        let addr = |bytes: &[u8; 16]| ip_of(raw.family, bytes);
        let is_ip = matches!(raw.family, FAMILY_IPV4 | FAMILY_IPV6);
        let has_ports = is_ip && matches!(raw.l4_proto, IPPROTO_TCP | IPPROTO_UDP);
        let is_icmp = is_ip && matches!(raw.l4_proto, IPPROTO_ICMP | IPPROTO_ICMPV6);
        let has_flags = is_ip && raw.l4_proto == IPPROTO_TCP && raw.has_tcp_flags == 1;
        Self {
            src: addr(&raw.saddr),
            dst: addr(&raw.daddr),
            sport: has_ports.then_some(raw.sport),
            dport: has_ports.then_some(raw.dport),
            l4_proto: is_ip.then_some(raw.l4_proto),
            ethertype: raw.ethertype,
            icmp: is_icmp.then_some((raw.icmp_type, raw.icmp_code)),
            tunnel: None,
            tcp_flags: has_flags.then_some(TcpFlags(raw.tcp_flags)),
        }
    }

    /// The CONTRACT's `proto`: tcp, udp, icmp, icmpv6, another lower-case name, or a number.
    pub(crate) fn proto_name(&self) -> String {
        match self.l4_proto {
            Some(n) => crate::kernel::ip_proto_name(n),
            None => match self.ethertype {
                0x0806 => "arp".into(),
                ETH_P_IP => "ip".into(),
                ETH_P_IPV6 => "ipv6".into(),
                0x88cc => "lldp".into(),
                0 => "unknown".into(),
                other => format!("ethertype_{other:#06x}"),
            },
        }
    }

    /// `IP:PORT`, `[IPv6]:PORT` or a bare IP (no port for this protocol); None for non-IP.
    pub(crate) fn src_endpoint(&self) -> Option<String> {
        self.src.map(|ip| endpoint(ip, self.sport))
    }

    pub(crate) fn dst_endpoint(&self) -> Option<String> {
        self.dst.map(|ip| endpoint(ip, self.dport))
    }
}

fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
    match (ip, port) {
        (IpAddr::V4(v4), Some(p)) => format!("{v4}:{p}"),
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (ip, None) => ip.to_string(),
    }
}

/// Turns kernel CLOCK_BOOTTIME stamps into wall-clock time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// realtime - boottime, in ns, measured once at start.
    offset_ns: i128,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        Self { offset_ns: real - boot }
    }

    pub(crate) const fn to_unix_ns(self, boot_ns: u64) -> i128 {
        boot_ns as i128 + self.offset_ns
    }

    /// Now, as an event seen now would be stamped (CLOCK_BOOTTIME, as the kernel's
    /// `bpf_ktime_get_boot_ns`, through this clock's offset).
    pub(crate) fn now_unix_ns(self) -> i128 {
        clock_ns(libc::CLOCK_BOOTTIME) + self.offset_ns
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// CLOCK_BOOTTIME now, in ns: a recording states it beside its wall clock.
pub(crate) fn boot_ns() -> i128 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid out-pointer; both clocks exist on every Linux we support.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-22T02:30:01.123456789Z`.
pub(crate) fn rfc3339(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, (sod / 60) % 60, sod % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A UDP query from 10.244.1.7:40000 to 10.96.0.10:53, DNATed to 10.244.2.9:53, as decoded:
/// for the tests of what annotates and prints events.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // 2026-11-22T02:30:01.123456789Z
        assert_eq!(rfc3339(1_795_314_601_123_456_789), "2026-11-22T02:30:01.123456789Z");
        // Leap day.
        assert_eq!(rfc3339(1_709_164_800_000_000_001), "2024-02-29T00:00:00.000000001Z");
    }

    fn raw(family: u8, proto: u8) -> RawFlow {
        let mut r = RawFlow { family, l4_proto: proto, sport: 1234, dport: 53, ..RawFlow::default() };
        r.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        r.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        r
    }

    #[test]
    fn ipv4_udp_endpoints() {
        let f = Flow::from_raw(&raw(FAMILY_IPV4, IPPROTO_UDP));
        assert_eq!(f.proto_name(), "udp");
        assert_eq!(f.src_endpoint().as_deref(), Some("10.0.0.1:1234"));
        assert_eq!(f.dst_endpoint().as_deref(), Some("10.0.0.2:53"));
    }

    #[test]
    fn icmp_has_bare_addresses_and_type() {
        let mut r = raw(FAMILY_IPV4, IPPROTO_ICMP);
        r.icmp_type = 3;
        r.icmp_code = 4;
        let f = Flow::from_raw(&r);
        assert_eq!(f.src_endpoint().as_deref(), Some("10.0.0.1"));
        assert_eq!(f.icmp, Some((3, 4)));
        assert_eq!(f.sport, None);
    }

    #[test]
    fn ipv6_endpoints_are_bracketed() {
        let mut r = RawFlow { family: FAMILY_IPV6, l4_proto: IPPROTO_TCP, sport: 80, dport: 40000, ..RawFlow::default() };
        r.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        r.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let f = Flow::from_raw(&r);
        assert_eq!(f.src_endpoint().as_deref(), Some("[fd00::1]:80"));
        assert_eq!(f.proto_name(), "tcp");
    }

    #[test]
    fn tcp_flags_are_read_only_when_the_packet_had_them() {
        let mut r = raw(FAMILY_IPV4, IPPROTO_TCP);
        assert_eq!(Flow::from_raw(&r).tcp_flags, None, "a socket's flow has no segment");
        r.has_tcp_flags = 1;
        r.tcp_flags = tcp_flag::SYN;
        let f = Flow::from_raw(&r);
        assert_eq!(f.tcp_flags.map(TcpFlags::name).as_deref(), Some("SYN"));
        // UDP has none, whatever the bytes say.
        let mut u = raw(FAMILY_IPV4, IPPROTO_UDP);
        (u.has_tcp_flags, u.tcp_flags) = (1, tcp_flag::SYN);
        assert_eq!(Flow::from_raw(&u).tcp_flags, None);
    }

    #[test]
    fn tcp_flag_names() {
        let name = |f| TcpFlags(f).name();
        assert_eq!(name(tcp_flag::ACK | tcp_flag::FIN), "ACK|FIN");
        assert_eq!(name(tcp_flag::SYN | tcp_flag::ACK), "ACK|SYN");
        assert_eq!(name(tcp_flag::ACK | tcp_flag::PSH), "ACK|PSH");
        assert_eq!(name(tcp_flag::SYN | tcp_flag::ECE | tcp_flag::CWR), "CWR|ECE|SYN");
        assert_eq!(name(0), "NONE");
        assert_eq!(name(0xff), "CWR|ECE|URG|ACK|PSH|RST|SYN|FIN");
    }

    #[test]
    fn only_a_syn_without_ack_opens_a_connection() {
        assert!(TcpFlags(tcp_flag::SYN).opens_connection());
        assert!(TcpFlags(tcp_flag::SYN | tcp_flag::ECE | tcp_flag::CWR).opens_connection(), "an ECN-setup SYN");
        for late in [tcp_flag::SYN | tcp_flag::ACK, tcp_flag::ACK, tcp_flag::ACK | tcp_flag::FIN, tcp_flag::RST, tcp_flag::RST | tcp_flag::ACK, 0] {
            assert!(!TcpFlags(late).opens_connection(), "{}", TcpFlags(late).name());
        }
        assert!(TcpFlags(tcp_flag::SYN | tcp_flag::ACK).answers_opening());
        assert!(!TcpFlags(tcp_flag::SYN).answers_opening() && !TcpFlags(tcp_flag::ACK).answers_opening());
    }

    #[test]
    fn non_ip_has_no_endpoints() {
        let f = Flow::from_raw(&RawFlow { ethertype: 0x0806, ..RawFlow::default() });
        assert_eq!(f.proto_name(), "arp");
        assert_eq!(f.src_endpoint(), None);
    }
}
