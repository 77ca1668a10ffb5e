//! Which events belong to one connection. A connection is its two endpoints and protocol,
//! whichever way a packet went; a NATed one is also known by its translated tuple, so the
//! client's SYN retransmits to a Service address and the drops at its backend are one story.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use crate::events::{Detail, Event};

/// One end of a flow: an address and, for TCP/UDP, a port.
pub(crate) type End = (IpAddr, Option<u16>);

/// A connection, direction-free: `a <= b`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnKey {
    pub proto: Option<u8>,
    pub a: End,
    pub b: End,
}

impl ConnKey {
    pub(crate) fn new(proto: Option<u8>, x: End, y: End) -> Self {
        if x <= y { Self { proto, a: x, b: y } } else { Self { proto, a: y, b: x } }
    }

    /// The key of an event's own flow, when it has addresses.
    pub(crate) fn of_flow(event: &Event) -> Option<Self> {
        let f = &event.flow;
        Some(Self::new(f.l4_proto, (f.src?, f.sport), (f.dst?, f.dport)))
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or a bare IP, as events print them, back to an end.
pub(crate) fn parse_end(text: &str) -> Option<End> {
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some((sa.ip(), Some(sa.port())));
    }
    text.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

/// What is known of a NATed connection: its original direction.
#[derive(Debug, Clone)]
struct Original {
    key: ConnKey,
    label: String,
}

/// Connections of a run: NAT's translated tuples mapped to the original ones.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    alias: HashMap<ConnKey, Original>,
    /// (protocol, source address, destination) -> the last connection seen with a source
    /// port: a connect that failed before its first retransmit is reported with port 0 (the
    /// kernel had not told its port yet), and belongs to that connection.
    by_client: HashMap<(Option<u8>, IpAddr, End), ConnKey>,
}

impl Connections {
    /// Learns every NAT event's original and translated tuples.
    pub(crate) fn learn(events: &[Event]) -> Self {
        let mut alias = HashMap::new();
        for event in events {
            let Detail::Nat(n) = &event.detail else { continue };
            let proto = event.flow.l4_proto;
            let ends = |a: &Option<String>, b: &Option<String>| Some((parse_end(a.as_deref()?)?, parse_end(b.as_deref()?)?));
            let Some((os, od)) = ends(&n.orig_src, &n.orig_dst) else { continue };
            let original = Original {
                key: ConnKey::new(proto, os, od),
                label: format!("{} -> {}", n.orig_src.as_deref().unwrap_or("-"), n.orig_dst.as_deref().unwrap_or("-")),
            };
            // The translated packets go reply_dst -> reply_src.
            if let Some((rs, rd)) = ends(&n.reply_src, &n.reply_dst) {
                alias.insert(ConnKey::new(proto, rd, rs), original.clone());
            }
            alias.insert(original.key.clone(), original);
        }
        let mut by_client = HashMap::new();
        let mut sorted: Vec<&Event> = events.iter().collect();
        sorted.sort_by_key(|e| e.ts_unix_ns);
        for e in sorted {
            let f = &e.flow;
            if let (Some(src), Some(dst), Some(sport)) = (f.src, f.dst, f.sport)
                && sport != 0
                && let Some(key) = ConnKey::of_flow(e)
            {
                by_client.insert((f.l4_proto, src, (dst, f.dport)), key);
            }
        }
        Self { alias, by_client }
    }

    /// The connection an event belongs to and its label (`SRC -> DST`, the original direction
    /// for NATed ones, else the event's own).
    pub(crate) fn of(&self, event: &Event) -> Option<(ConnKey, String)> {
        if let Detail::Nat(n) = &event.detail {
            let os = parse_end(n.orig_src.as_deref()?)?;
            let od = parse_end(n.orig_dst.as_deref()?)?;
            let key = ConnKey::new(event.flow.l4_proto, os, od);
            return Some((key, format!("{} -> {}", n.orig_src.as_deref()?, n.orig_dst.as_deref()?)));
        }
        let mut key = ConnKey::of_flow(event)?;
        let f = &event.flow;
        if f.sport == Some(0)
            && let Some(known) = self.by_client.get(&(f.l4_proto, f.src?, (f.dst?, f.dport)))
        {
            key = known.clone();
            if !self.alias.contains_key(&key) {
                let label = if key.a.0 == f.src? { (key.a, key.b) } else { (key.b, key.a) };
                let end = |(ip, port): End| crate::events::Flow { src: Some(ip), sport: port, ..Default::default() }.src_endpoint();
                return Some((key, format!("{} -> {}", end(label.0)?, end(label.1)?)));
            }
        }
        match self.alias.get(&key) {
            Some(original) => Some((original.key.clone(), original.label.clone())),
            None => Some((key, flow_label(event)?)),
        }
    }
}

/// `SRC -> DST` of an event's own flow.
pub(crate) fn flow_label(event: &Event) -> Option<String> {
    Some(format!("{} -> {}", event.flow.src_endpoint()?, event.flow.dst_endpoint()?))
}

/// One connection's events in time order.
#[derive(Debug)]
pub(crate) struct Story<'a> {
    pub label: String,
    pub proto: String,
    pub events: Vec<&'a Event>,
}

impl Story<'_> {
    /// Every pod named at either end, or as a NAT backend, sorted.
    pub(crate) fn pods(&self) -> Vec<String> {
        let mut pods: Vec<String> = self
            .events
            .iter()
            .flat_map(|e| {
                let backend = match &e.detail {
                    Detail::Nat(n) => n.backend_pod.clone(),
                    _ => None,
                };
                [e.src_pod.clone(), e.dst_pod.clone(), backend]
            })
            .flatten()
            .collect();
        pods.sort();
        pods.dedup();
        pods
    }
}

/// The events grouped per connection, stories ordered by their first event; events without
/// addresses (non-IP drops) come last, in one story of their own.
pub(crate) fn stories(events: &[Event]) -> Vec<Story<'_>> {
    let connections = Connections::learn(events);
    let mut by_key: BTreeMap<ConnKey, usize> = BTreeMap::new();
    let mut out: Vec<Story<'_>> = Vec::new();
    let mut other: Vec<&Event> = Vec::new();
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by_key(|e| e.ts_unix_ns);
    for event in sorted {
        let Some((key, label)) = connections.of(event) else {
            other.push(event);
            continue;
        };
        match by_key.get(&key) {
            Some(&i) => out[i].events.push(event),
            None => {
                by_key.insert(key, out.len());
                out.push(Story { label, proto: event.flow.proto_name(), events: vec![event] });
            }
        }
    }
    if !other.is_empty() {
        out.push(Story { label: "(no addresses)".into(), proto: "-".into(), events: other });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::Flow,
        probes::{nat::detail::test_dnat_event, tcp::detail::TcpDetail},
    };

    fn tcp_event(src: &str, sport: u16, dst: &str, dport: u16, ts: i128) -> Event {
        let mut e = test_dnat_event();
        e.ts_unix_ns = ts;
        e.flow = Flow { src: src.parse().ok(), dst: dst.parse().ok(), sport: Some(sport), dport: Some(dport), l4_proto: Some(17), ..Flow::default() };
        e.detail = Detail::Retransmit(TcpDetail { state: Some("SYN_SENT"), count: 1, direction: None, duration_ms: None });
        e
    }

    #[test]
    fn a_service_address_and_its_backend_are_one_connection() {
        // The client's view (to the Service address), the NAT event, and a packet after DNAT
        // going the other way (backend -> client).
        let nat = test_dnat_event();
        let before = tcp_event("10.244.1.7", 40000, "10.96.0.10", 53, nat.ts_unix_ns - 5);
        let after = tcp_event("10.244.2.9", 53, "10.244.1.7", 40000, nat.ts_unix_ns + 5);
        let unrelated = tcp_event("10.244.1.7", 40001, "10.96.0.10", 53, nat.ts_unix_ns + 6);
        let events = vec![after.clone(), nat, before.clone(), unrelated];
        let s = stories(&events);
        assert_eq!(s.len(), 2, "{s:#?}");
        assert_eq!(s[0].label, "10.244.1.7:40000 -> 10.96.0.10:53");
        assert_eq!(s[0].events.len(), 3);
        assert_eq!(s[0].events[0], &before, "time order");
        assert_eq!(s[0].events[2], &after);
        assert_eq!(s[1].label, "10.244.1.7:40001 -> 10.96.0.10:53");
    }

    #[test]
    fn a_connect_that_failed_before_its_port_was_known_joins_its_connection() {
        let mut failed = tcp_event("10.0.0.1", 0, "10.0.0.2", 80, 2);
        failed.detail = Detail::ConnectFail(TcpDetail { state: Some("SYN_SENT"), count: 0, direction: None, duration_ms: None });
        let events = vec![tcp_event("10.0.0.1", 41000, "10.0.0.2", 80, 1), failed];
        let s = stories(&events);
        assert_eq!(s.len(), 1, "{s:#?}");
        assert_eq!(s[0].label, "10.0.0.1:41000 -> 10.0.0.2:80");
    }

    #[test]
    fn ends_parse_like_events_print_them() {
        assert_eq!(parse_end("10.0.0.1:80"), Some(("10.0.0.1".parse().unwrap(), Some(80))));
        assert_eq!(parse_end("[fd00::1]:443"), Some(("fd00::1".parse().unwrap(), Some(443))));
        assert_eq!(parse_end("10.0.0.1"), Some(("10.0.0.1".parse().unwrap(), None)));
        assert_eq!(parse_end("nope"), None);
    }
}
