//! Typed events: what the probes decode raw kernel records into, and what outputs print.
//! Only this side of the kernel/user boundary knows about names, pods and time zones.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tracer_common::flow::{ETH_P_IP, ETH_P_IPV6, FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, RawFlow};

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
    pub detail: Detail,
}

/// Kind-specific part of an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Detail {
    Drop(DropDetail),
    Retransmit(TcpDetail),
    Reset(TcpDetail),
    ConnectFail(TcpDetail),
    Nat(NatDetail),
    Mtu(MtuDetail),
}

/// A NATed connection, as conntrack holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NatDetail {
    pub nat: NatKind,
    pub orig_src: Option<String>,
    pub orig_dst: Option<String>,
    /// The original destination as an address, to find the Service it belongs to.
    pub orig_dst_addr: Option<SocketAddr>,
    pub reply_src: Option<String>,
    pub reply_dst: Option<String>,
    pub reply_seen: bool,
    pub assured: bool,
    pub state: NatState,
    /// Where DNAT sent the connection (the reply tuple's source), and its pod.
    pub backend: Option<String>,
    pub backend_ip: Option<IpAddr>,
    pub backend_pod: Option<String>,
    /// For DNAT, the Service whose address the original destination is (`namespace/name`).
    pub service: Option<String>,
    /// The conntrack entry's address: one connection within a run.
    pub conn: u64,
}

/// An MTU failure (`tracer mtu`). The event's flow is the one whose packets are too big: for an
/// ICMP error, the original packet quoted in it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MtuDetail {
    pub event: MtuEventKind,
    /// The MTU that applies: the ICMP error's, or the route's / device's.
    pub mtu: Option<u32>,
    /// Packet length in bytes.
    pub len: u32,
    /// The MTU of the event's device.
    pub dev_mtu: Option<u32>,
    /// The ICMP error's own addresses (who reported the MTU, to whom).
    pub icmp_src: Option<IpAddr>,
    pub icmp_dst: Option<IpAddr>,
    /// Drop reason name, for the two drop events.
    pub reason: Option<String>,
    pub hook: MtuHook,
}

/// Which addresses conntrack rewrote: the CONTRACT's nat event `nat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatKind {
    /// The destination only (a Service address sent to a backend).
    Dnat,
    /// The source only (masquerading on the way out).
    Snat,
    /// Source and destination.
    Both,
}

impl NatKind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Dnat => "dnat",
            Self::Snat => "snat",
            Self::Both => "both",
        }
    }
}

/// Where a NATed connection stands: the nat event's `state`, from conntrack's status bits
/// when it was seen, from the reply timeout, or from conntrack's destroy event when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatState {
    /// No reply seen yet.
    New,
    /// A reply was seen.
    Reply,
    /// Conntrack marked the connection assured (traffic both ways, past the handshake).
    Assured,
    /// No reply within --reply-timeout.
    NoReply,
    /// Ended by TCP closing it (FIN or RST).
    Closed,
    /// Ended unanswered: a handshake that did not finish, or a UDP/ICMP entry that expired.
    TimedOut,
    /// An answered entry removed otherwise: idle timeout, flush.
    Destroyed,
}

impl NatState {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Reply => "reply",
            Self::Assured => "assured",
            Self::NoReply => "no_reply",
            Self::Closed => "closed",
            Self::TimedOut => "timed_out",
            Self::Destroyed => "destroyed",
        }
    }
}

/// What an MTU event saw: the CONTRACT's mtu event `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MtuEventKind {
    /// This node sent a frag-needed / packet-too-big error.
    FragNeededSent,
    /// One arrived on a traced device.
    FragNeededReceived,
    /// One was dropped here, so its sender never learns the MTU.
    FragNeededDropped,
    /// A packet dropped with reason PKT_TOO_BIG.
    TooBigDrop,
    /// A packet larger than the MTU of the device it leaves by.
    Oversize,
    /// A value the BPF side sent that this build does not know (a newer BPF object).
    Unknown,
}

impl MtuEventKind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::FragNeededSent => "frag_needed_sent",
            Self::FragNeededReceived => "frag_needed_received",
            Self::FragNeededDropped => "frag_needed_dropped",
            Self::TooBigDrop => "too_big_drop",
            Self::Oversize => "oversize",
            Self::Unknown => "unknown",
        }
    }
}

/// Where an MTU event was seen: its JSON `hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MtuHook {
    /// The tp_btf/icmp_send tracepoint.
    IcmpSend,
    /// tc ingress of a traced device.
    TcIngress,
    /// tc egress of a traced device.
    TcEgress,
    /// The kfree_skb tracepoint (drops).
    KfreeSkb,
    /// A value the BPF side sent that this build does not know (a newer BPF object).
    Unknown,
}

impl MtuHook {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::IcmpSend => "icmp_send",
            Self::TcIngress => "tc_ingress",
            Self::TcEgress => "tc_egress",
            Self::KfreeSkb => "kfree_skb",
            Self::Unknown => "unknown",
        }
    }
}

/// A NUL-padded kernel device name, None when empty.
pub(crate) fn ifname(raw: &[u8; 16]) -> Option<String> {
    let len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    (len > 0).then(|| String::from_utf8_lossy(&raw[..len]).into_owned())
}

impl Detail {
    /// The CONTRACT's `kind` value.
    pub(crate) const fn kind(&self) -> &'static str {
        match self {
            Self::Drop(_) => "drop",
            Self::Retransmit(_) => "retransmit",
            Self::Reset(_) => "reset",
            Self::ConnectFail(_) => "connect_fail",
            Self::Nat(_) => "nat",
            Self::Mtu(_) => "mtu",
        }
    }
}

/// A TCP event's socket facts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TcpDetail {
    /// TCP state name (`SYN_SENT`, `ESTABLISHED`, ...): the socket's state at the event; for
    /// connect_fail the state it left. None when there was no socket (a reset to a closed port).
    pub state: Option<&'static str>,
    /// Retransmits of this flow so far in this run (retransmit).
    pub count: u32,
    /// Which way the reset went (reset; None for the other kinds).
    pub direction: Option<ResetDirection>,
    /// How long the connect tried, in ms (connect_fail; None when its start was not seen).
    pub duration_ms: Option<f64>,
}

/// Which way a TCP reset went: the CONTRACT's reset event `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetDirection {
    /// This node's socket sent it.
    Sent,
    /// It arrived for one of this node's sockets.
    Received,
}

impl ResetDirection {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

/// The kernel's TCP state names (include/net/tcp_states.h; the numbering is visible to userspace
/// through tcp_info and `ss`, so it is stable across kernels).
pub(crate) fn tcp_state_name(state: u8) -> Option<&'static str> {
    Some(match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DropDetail {
    /// `enum skb_drop_reason` name without the SKB_DROP_REASON_ prefix.
    pub reason: String,
    /// Raw reason value, for reasons this kernel's BTF does not name.
    pub reason_code: u32,
    /// `symbol+0xoff` of the kernel code that dropped the packet.
    pub location: String,
    pub len: u32,
    /// The conntrack entry the packet carried (read for netfilter drops only).
    pub packet_ct: PacketCt,
    /// Set when conntrack itself made (or marked the packet for) this drop.
    pub conntrack: Option<ConntrackDrop>,
}

/// The conntrack entry a dropped packet carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PacketCt {
    /// Not read: not a netfilter drop, or conntrack's layout is unknown (module not loaded).
    #[default]
    Unread,
    /// No entry: conntrack could not make one (table full), found the packet invalid, or
    /// never saw it.
    Absent,
    /// A new connection's entry not yet in the table (inserting it happens last).
    Unconfirmed,
    Confirmed,
}

/// A drop that conntrack caused, told apart by the namespace's own conntrack counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConntrackDrop {
    pub cause: ConntrackCause,
    /// The namespace's table fill level when the drop was classified: entries and
    /// net.netfilter.nf_conntrack_max.
    pub entries: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConntrackCause {
    /// No room for a new entry (the `drop` counter, without `invalid`).
    TableFull,
    /// A new entry clashed with one inserted meanwhile (`insert_failed`).
    InsertFailed,
    /// Conntrack found the packet invalid and it, or a rule matching INVALID, dropped it.
    Invalid,
}

impl ConntrackCause {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::TableFull => "table_full",
            Self::InsertFailed => "insert_failed",
            Self::Invalid => "invalid",
        }
    }
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
}

impl Flow {
    pub(crate) fn from_raw(raw: &RawFlow) -> Self {
        let addr = |bytes: &[u8; 16]| match raw.family {
            FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
            FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
            _ => None,
        };
        let is_ip = matches!(raw.family, FAMILY_IPV4 | FAMILY_IPV6);
        let has_ports = is_ip && matches!(raw.l4_proto, IPPROTO_TCP | IPPROTO_UDP);
        let is_icmp = is_ip && matches!(raw.l4_proto, IPPROTO_ICMP | IPPROTO_ICMPV6);
        Self {
            src: addr(&raw.saddr),
            dst: addr(&raw.daddr),
            sport: has_ports.then_some(raw.sport),
            dport: has_ports.then_some(raw.dport),
            l4_proto: is_ip.then_some(raw.l4_proto),
            ethertype: raw.ethertype,
            icmp: is_icmp.then_some((raw.icmp_type, raw.icmp_code)),
        }
    }

    /// The CONTRACT's `proto`: tcp, udp, icmp, icmpv6, another lower-case name, or a number.
    pub(crate) fn proto_name(&self) -> String {
        match self.l4_proto {
            Some(IPPROTO_TCP) => "tcp".into(),
            Some(IPPROTO_UDP) => "udp".into(),
            Some(IPPROTO_ICMP) => "icmp".into(),
            Some(IPPROTO_ICMPV6) => "icmpv6".into(),
            Some(2) => "igmp".into(),
            Some(47) => "gre".into(),
            Some(50) => "esp".into(),
            Some(132) => "sctp".into(),
            Some(n) => n.to_string(),
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
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
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
pub(crate) fn test_dnat_event() -> Event {
    let ip = |s: &str| s.parse::<IpAddr>().ok();
    Event {
        ts_unix_ns: 1_795_314_601_123_456_789,
        flow: Flow { src: ip("10.244.1.7"), dst: ip("10.244.2.9"), sport: Some(40000), dport: Some(53), l4_proto: Some(17), ..Flow::default() },
        netns: Some(4026531840),
        ifindex: Some(3),
        ifname: Some("cni0".into()),
        src_pod: None,
        dst_pod: None,
        netns_pod: None,
        detail: Detail::Nat(NatDetail {
            nat: NatKind::Dnat,
            orig_src: Some("10.244.1.7:40000".into()),
            orig_dst: Some("10.96.0.10:53".into()),
            orig_dst_addr: Some(SocketAddr::from(([10, 96, 0, 10], 53))),
            reply_src: Some("10.244.2.9:53".into()),
            reply_dst: Some("10.244.1.7:40000".into()),
            reply_seen: false,
            assured: false,
            state: NatState::New,
            backend: Some("10.244.2.9:53".into()),
            backend_ip: ip("10.244.2.9"),
            backend_pod: None,
            service: None,
            conn: 1,
        }),
    }
}

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
    fn non_ip_has_no_endpoints() {
        let f = Flow::from_raw(&RawFlow { ethertype: 0x0806, ..RawFlow::default() });
        assert_eq!(f.proto_name(), "arp");
        assert_eq!(f.src_endpoint(), None);
    }
}
