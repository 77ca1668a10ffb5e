//! A recorded event's JSON line (CONTRACT "JSON event") back into an [`Event`], as the rules
//! read it. One flat struct with every kind's fields, borrowed from the line: no `Value` tree
//! per event (the reader's cost is the bench's events/s). Unknown fields (another version's)
//! are ignored; a field of the wrong type, or a line that is not an event, is None.

use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use serde::Deserialize;

use crate::{
    diagnose::flows::parse_end,
    events::{Detail, Event, Flow, TcpFlags, Tunnel, TunnelKind},
    probes::{
        drops::detail::{ConntrackCause, ConntrackDrop, DropDetail, PacketCt},
        mtu::detail::{MtuDetail, MtuEventKind, MtuHook},
        nat::detail::{NatDetail, NatKind, NatState},
        tcp::detail::{ResetDirection, TcpDetail, tcp_state_name},
    },
};

mod fast;

/// Every field any event kind writes (output/json.rs and each family's `write_json`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Line<'a> {
    #[serde(borrow)]
    ts: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    proto: Option<Cow<'a, str>>,
    #[serde(borrow)]
    src: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dst: Option<Cow<'a, str>>,
    #[serde(borrow)]
    src_pod: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dst_pod: Option<Cow<'a, str>>,
    netns: Option<u32>,
    #[serde(borrow)]
    netns_pod: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ifname: Option<Cow<'a, str>>,
    ifindex: Option<u32>,
    #[serde(borrow)]
    node: Option<Cow<'a, str>>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    #[serde(borrow)]
    tcp_flags: Option<Cow<'a, str>>,
    #[serde(borrow)]
    tunnel: Option<LineTunnel<'a>>,
    // drop (and mtu: reason, len)
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
    reason_code: Option<u32>,
    #[serde(borrow)]
    location: Option<Cow<'a, str>>,
    len: Option<u32>,
    #[serde(borrow)]
    packet_ct: Option<Cow<'a, str>>,
    #[serde(borrow)]
    conntrack: Option<LineConntrack<'a>>,
    // tcp (and nat: state)
    #[serde(borrow)]
    state: Option<Cow<'a, str>>,
    count: Option<u32>,
    #[serde(borrow)]
    direction: Option<Cow<'a, str>>,
    duration_ms: Option<f64>,
    syns_sent: Option<u32>,
    // nat
    #[serde(borrow)]
    nat: Option<Cow<'a, str>>,
    #[serde(borrow)]
    orig_src: Option<Cow<'a, str>>,
    #[serde(borrow)]
    orig_dst: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reply_src: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reply_dst: Option<Cow<'a, str>>,
    reply_seen: Option<bool>,
    assured: Option<bool>,
    #[serde(borrow)]
    backend: Option<Cow<'a, str>>,
    #[serde(borrow)]
    backend_pod: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    conn: Option<u64>,
    // mtu
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    mtu: Option<u32>,
    dev_mtu: Option<u32>,
    icmp_src: Option<IpAddr>,
    icmp_dst: Option<IpAddr>,
    #[serde(borrow)]
    hook: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LineTunnel<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    vni: Option<u32>,
    #[serde(borrow)]
    src: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dst: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LineConntrack<'a> {
    #[serde(borrow)]
    cause: Option<Cow<'a, str>>,
    entries: Option<u64>,
    max: Option<u64>,
}

/// What a line is, by its `kind`.
#[expect(clippy::large_enum_variant, reason = "one per line, moved straight into its node's events: a box was a malloc and a copy more per event")]
pub(super) enum Parsed {
    Event(Event),
    /// Not an event kind: a recording's own record (or unknown), for the caller to read.
    Other,
    /// An event kind whose fields do not make an event (truncated, wrong types).
    Bad,
}

/// Node names repeat on every line: one allocation per node.
#[derive(Default)]
pub(super) struct Nodes(Vec<Arc<str>>);

impl Nodes {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.0.iter().find(|n| &***n == name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        self.0.push(n.clone());
        n
    }
}

/// One line: an event, another record, or bad.
pub(super) fn parse(line: &str, nodes: &mut Nodes) -> Parsed {
    // The lines `watch` writes take the fast path; any other spelling of JSON, serde.
    let Some(l) = fast::line(line).or_else(|| serde_json::from_str::<Line<'_>>(line).ok()) else {
        // Another record's fields may share a name with an event's and not its type (a `fact`'s
        // `proto` is a number): what the line is, is its kind's to say.
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            kind: Cow<'a, str>,
        }
        return match serde_json::from_str::<Head<'_>>(line) {
            Ok(head) if !is_event_kind(&head.kind) => Parsed::Other,
            _ => Parsed::Bad,
        };
    };
    let Some(kind) = l.kind.as_deref() else { return Parsed::Bad };
    if !is_event_kind(kind) {
        return Parsed::Other;
    }
    event(&l, kind, nodes).map_or(Parsed::Bad, Parsed::Event)
}

/// A field of the line, as the event's own string.
fn own(field: &Option<Cow<'_, str>>) -> Option<String> {
    field.as_deref().map(String::from)
}

fn is_event_kind(kind: &str) -> bool {
    matches!(kind, "drop" | "retransmit" | "reset" | "connect_fail" | "nat" | "mtu")
}

fn event(l: &Line<'_>, kind: &str, nodes: &mut Nodes) -> Option<Event> {
    let ts_unix_ns = parse_rfc3339(l.ts.as_deref()?)?;
    let (l4_proto, ethertype) = proto_of(l.proto.as_deref()?);
    let src = l.src.as_deref().and_then(parse_end);
    let dst = l.dst.as_deref().and_then(parse_end);
    let flow = Flow {
        src: src.map(|e| e.0),
        dst: dst.map(|e| e.0),
        sport: src.and_then(|e| e.1),
        dport: dst.and_then(|e| e.1),
        l4_proto,
        ethertype,
        icmp: l.icmp_type.zip(l.icmp_code),
        tunnel: l.tunnel.as_ref().and_then(tunnel_of),
        tcp_flags: l.tcp_flags.as_deref().map(flags_of),
    };
    let detail = match kind {
        "drop" => Detail::Drop(DropDetail {
            reason: own(&l.reason)?,
            reason_code: l.reason_code.unwrap_or(0),
            location: own(&l.location).unwrap_or_default(),
            len: l.len.unwrap_or(0),
            packet_ct: match l.packet_ct.as_deref() {
                Some("absent") => PacketCt::Absent,
                Some("unconfirmed") => PacketCt::Unconfirmed,
                Some("confirmed") => PacketCt::Confirmed,
                _ => PacketCt::Unread,
            },
            conntrack: l.conntrack.as_ref().and_then(|c| {
                let cause = match c.cause.as_deref()? {
                    "table_full" => ConntrackCause::TableFull,
                    "insert_failed" => ConntrackCause::InsertFailed,
                    "invalid" => ConntrackCause::Invalid,
                    _ => return None,
                };
                Some(ConntrackDrop { cause, entries: c.entries, max: c.max })
            }),
        }),
        "retransmit" | "reset" | "connect_fail" => {
            let tcp = TcpDetail {
                state: l.state.as_deref().and_then(state_of),
                count: l.count.unwrap_or(0),
                direction: match l.direction.as_deref() {
                    Some("sent") => Some(ResetDirection::Sent),
                    Some("received") => Some(ResetDirection::Received),
                    _ => None,
                },
                duration_ms: l.duration_ms,
                syns_sent: l.syns_sent,
            };
            match kind {
                "retransmit" => Detail::Retransmit(tcp),
                "reset" => Detail::Reset(tcp),
                _ => Detail::ConnectFail(tcp),
            }
        }
        "nat" => {
            let nat = match l.nat.as_deref()? {
                "dnat" => NatKind::Dnat,
                "snat" => NatKind::Snat,
                "both" => NatKind::Both,
                _ => return None,
            };
            Detail::Nat(NatDetail {
                nat,
                orig_dst_addr: l.orig_dst.as_deref().and_then(|d| d.parse::<SocketAddr>().ok()),
                orig_src: own(&l.orig_src),
                orig_dst: own(&l.orig_dst),
                reply_src: own(&l.reply_src),
                reply_dst: own(&l.reply_dst),
                reply_seen: l.reply_seen.unwrap_or(false),
                assured: l.assured.unwrap_or(false),
                state: match l.state.as_deref()? {
                    "new" => NatState::New,
                    "reply" => NatState::Reply,
                    "assured" => NatState::Assured,
                    "no_reply" => NatState::NoReply,
                    "closed" => NatState::Closed,
                    "timed_out" => NatState::TimedOut,
                    "destroyed" => NatState::Destroyed,
                    _ => return None,
                },
                backend_ip: l.backend.as_deref().and_then(parse_end).map(|e| e.0),
                backend: own(&l.backend),
                backend_pod: own(&l.backend_pod),
                service: own(&l.service),
                conn: l.conn.unwrap_or(0),
            })
        }
        _ => Detail::Mtu(MtuDetail {
            event: match l.event.as_deref()? {
                "frag_needed_sent" => MtuEventKind::FragNeededSent,
                "frag_needed_received" => MtuEventKind::FragNeededReceived,
                "frag_needed_dropped" => MtuEventKind::FragNeededDropped,
                "too_big_drop" => MtuEventKind::TooBigDrop,
                "oversize" => MtuEventKind::Oversize,
                _ => MtuEventKind::Unknown,
            },
            mtu: l.mtu,
            len: l.len.unwrap_or(0),
            dev_mtu: l.dev_mtu,
            icmp_src: l.icmp_src,
            icmp_dst: l.icmp_dst,
            reason: own(&l.reason),
            hook: match l.hook.as_deref() {
                Some("icmp_send") => MtuHook::IcmpSend,
                Some("tc_ingress") => MtuHook::TcIngress,
                Some("tc_egress") => MtuHook::TcEgress,
                Some("kfree_skb") => MtuHook::KfreeSkb,
                _ => MtuHook::Unknown,
            },
        }),
    };
    Some(Event {
        ts_unix_ns,
        flow,
        netns: l.netns,
        ifindex: l.ifindex,
        ifname: own(&l.ifname),
        src_pod: own(&l.src_pod),
        dst_pod: own(&l.dst_pod),
        netns_pod: own(&l.netns_pod),
        node: l.node.as_deref().map(|n| nodes.get(n)),
        detail,
    })
}

/// `proto` back to (IP protocol, ethertype), the inverse of [`Flow::proto_name`].
fn proto_of(name: &str) -> (Option<u8>, u16) {
    let ip = match name {
        "icmp" => 1,
        "igmp" => 2,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "icmpv6" => 58,
        "sctp" => 132,
        "arp" => return (None, 0x0806),
        "ip" => return (None, tracer_common::flow::ETH_P_IP),
        "ipv6" => return (None, tracer_common::flow::ETH_P_IPV6),
        "lldp" => return (None, 0x88cc),
        other => match other.parse::<u8>() {
            Ok(n) => n,
            Err(_) => {
                let hex = other.strip_prefix("ethertype_0x").and_then(|h| u16::from_str_radix(h, 16).ok());
                return (None, hex.unwrap_or(0));
            }
        },
    };
    (Some(ip), 0)
}

fn state_of(name: &str) -> Option<&'static str> {
    (0..=u8::MAX).find_map(|n| tcp_state_name(n).filter(|s| *s == name))
}

fn flags_of(names: &str) -> TcpFlags {
    let bits = names.split('|').filter_map(|n| TcpFlags::NAMES.iter().find(|(_, name)| *name == n).map(|(bit, _)| *bit)).fold(0, |a, b| a | b);
    TcpFlags(bits)
}

fn tunnel_of(t: &LineTunnel<'_>) -> Option<Tunnel> {
    let kind = match t.kind.as_deref()? {
        "vxlan" => TunnelKind::Vxlan,
        "geneve" => TunnelKind::Geneve,
        "ipip" => TunnelKind::Ipip,
        "gre" => TunnelKind::Gre,
        _ => return None,
    };
    let src = parse_end(t.src.as_deref()?)?;
    let dst = parse_end(t.dst.as_deref()?)?;
    Some(Tunnel { kind, vni: t.vni, src: src.0, dst: dst.0, sport: src.1, dport: dst.1 })
}

/// `2026-11-22T02:30:01.123456789Z` (as [`crate::events::rfc3339`] writes it; a shorter
/// fraction, or none, too) to Unix nanoseconds.
pub(crate) fn parse_rfc3339(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { text.get(r)?.parse::<u32>().ok().map(i64::from) };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let nanos = match &text[19..text.len() - 1] {
        "" => 0,
        frac => {
            let digits = frac.strip_prefix('.').filter(|f| !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()))?;
            digits.parse::<i128>().ok()? * 10i128.pow(9 - digits.len() as u32)
        }
    };
    // Days from civil (Howard Hinnant's algorithm), the inverse of events.rs's.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(i128::from(days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000_000 + nanos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::rfc3339;

    #[test]
    fn rfc3339_round_trips() {
        for ns in [0, 1_795_314_601_123_456_789, 1_709_164_800_000_000_001, 951_782_400_000_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ns)), Some(ns), "{}", rfc3339(ns));
        }
        assert_eq!(parse_rfc3339("2026-11-22T02:30:01Z"), Some(1_795_314_601_000_000_000));
        assert_eq!(parse_rfc3339("2026-11-22T02:30:01.5Z"), Some(1_795_314_601_500_000_000));
        for bad in ["", "2026-11-22", "2026-13-22T02:30:01Z", "2026-11-22T02:30:01.Z", "2026-11-22T02:30:01.1234567891Z", "2026-11-22T0é:30:01Z"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn protocols_round_trip() {
        for (l4, eth) in [(Some(6), 0), (Some(17), 0), (Some(58), 0), (Some(99), 0), (None, 0x0806), (None, 0x86dd), (None, 0x1234), (None, 0)] {
            let name = Flow { l4_proto: l4, ethertype: eth, ..Flow::default() }.proto_name();
            assert_eq!(proto_of(&name), (l4, eth), "{name}");
        }
    }
}
