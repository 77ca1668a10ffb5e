//! Which events belong to one connection. A connection is its two endpoints and protocol,
//! whichever way a packet went; a NATed one is also known by its translated tuple, so the
//! client's SYN retransmits to a Service address and the drops at its backend are one story.

use std::{
    cell::OnceCell,
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
};

use crate::{
    events::{Detail, Event, Flow},
    probes::{
        nat::detail::NatKind,
        tcp::detail::{ResetDirection, TcpDetail},
    },
};

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

    /// The end that is not `end` (`end` itself when both are the same).
    fn other(&self, end: End) -> End {
        if self.a == end { self.b } else { self.a }
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or a bare IP, as events print them, back to an end.
pub(crate) fn parse_end(text: &str) -> Option<End> {
    if let Some(end) = v4_end(text) {
        return Some(end);
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some((sa.ip(), Some(sa.port())));
    }
    text.parse::<IpAddr>().ok().map(|ip| (ip, None))
}

/// `A.B.C.D:PORT` exactly as events print it (no leading zeros), parsed in one pass: most ends
/// of a recording are, and the general parser was a tenth of reading one. None for any other
/// text, which [`parse_end`] then reads with the standard parsers (to the same end, for these).
fn v4_end(text: &str) -> Option<End> {
    let b = text.as_bytes();
    let mut at = 0;
    // A decimal number of at most `digits` digits, without a leading zero, then `then`.
    let mut number = |digits: usize, then: Option<u8>| -> Option<u32> {
        let start = at;
        let mut value = 0u32;
        while at < b.len() && at - start < digits && b[at].is_ascii_digit() {
            value = value * 10 + u32::from(b[at] - b'0');
            at += 1;
        }
        let len = at - start;
        if len == 0 || (len > 1 && b[start] == b'0') || b.get(at).copied() != then {
            return None;
        }
        at += usize::from(then.is_some());
        Some(value)
    };
    let mut octets = [0u8; 4];
    for (i, octet) in octets.iter_mut().enumerate() {
        *octet = u8::try_from(number(3, Some(if i < 3 { b'.' } else { b':' }))?).ok()?;
    }
    let port = u16::try_from(number(5, None)?).ok()?;
    Some((IpAddr::from(octets), Some(port)))
}

/// An end as events print it.
pub(crate) fn end_text((ip, port): End) -> String {
    Flow { src: Some(ip), sport: port, ..Flow::default() }.src_endpoint().unwrap_or_default()
}

/// What is known of a NATed connection: its original direction.
#[derive(Debug, Clone)]
struct Original {
    key: ConnKey,
    client: End,
    server: End,
}

/// Where DNAT sent a connection, from its NAT events: the Service address the client asked,
/// the backend conntrack chose (the reply tuple's source), their names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NatView {
    /// The Service (`namespace/name`) whose address the client asked, when known.
    pub service: Option<String>,
    /// The address the client asked (`IP:PORT`).
    pub address: Option<String>,
    /// Where DNAT sent it (`IP:PORT`), and that end parsed.
    pub backend: Option<String>,
    pub backend_end: Option<End>,
    pub backend_pod: Option<String>,
}

/// A connection as findings and stories name it: its key, and its ends in the direction it was
/// opened when the run showed that (the original tuple of a NATed one; the side that sent a
/// SYN), else in the direction of the event at hand.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Conn {
    pub key: ConnKey,
    pub client: End,
    pub server: End,
}

impl Conn {
    /// `CLIENT -> SERVER`.
    pub(crate) fn label(&self) -> String {
        format!("{} -> {}", end_text(self.client), end_text(self.server))
    }
}

/// The maps every event is looked up in, several times per rule: foldhash, not SipHash (which
/// was a fifth of `diagnose --from`'s time). Seeded per process; the keys are the node's own
/// flows, read from its kernel or its recording.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Connections of a run: NAT's translated tuples mapped to the original ones.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    alias: FastMap<ConnKey, Original>,
    /// Where DNAT sent each NATed connection (by its original key).
    nat: FastMap<ConnKey, NatView>,
    /// The end that opened each connection that is not NATed, where an event of the run says
    /// it: a segment's SYN (the sender) or SYN-ACK (the receiver), a socket's retransmit,
    /// failed connect or received reset in SYN_SENT (its own end), a SYN-ACK retransmitted in
    /// SYN_RECV (the other end).
    opener: FastMap<ConnKey, End>,
    /// (protocol, source address, destination) -> the last connection seen with a source
    /// port: a connect that failed before its first retransmit is reported with port 0 (the
    /// kernel had not told its port yet), and belongs to that connection.
    by_client: FastMap<(Option<u8>, IpAddr, End), ConnKey>,
}

/// The end that opened the connection, when `event` shows it.
fn opener_of(event: &Event) -> Option<End> {
    let f = &event.flow;
    let (src, dst) = ((f.src?, f.sport), (f.dst?, f.dport));
    let syn_sent = |t: &TcpDetail| t.state == Some("SYN_SENT");
    match &event.detail {
        Detail::Retransmit(t) if t.state == Some("SYN_RECV") => Some(dst),
        Detail::Retransmit(t) | Detail::ConnectFail(t) if syn_sent(t) => Some(src),
        Detail::Reset(t) if syn_sent(t) && t.direction == Some(ResetDirection::Received) => Some(src),
        _ => match f.tcp_flags {
            Some(flags) if flags.opens_connection() => Some(src),
            Some(flags) if flags.answers_opening() => Some(dst),
            _ => None,
        },
    }
}

impl Connections {
    /// Learns every NAT event's original and translated tuples, and who opened the others.
    pub(crate) fn learn<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        // Collected once here: any iterator will do.
        let events: Vec<&Event> = events.into_iter().collect();
        Self::learn_with(events.iter().copied(), true)
    }

    /// [`Self::learn`] for [`Self::key_of`] alone: who opened each connection only names its
    /// ends, and learning it was a hash insert per event.
    pub(crate) fn learn_keys<'a, I>(events: I) -> Self
    where
        I: IntoIterator<Item = &'a Event>,
        I::IntoIter: Clone,
    {
        Self::learn_with(events.into_iter(), false)
    }

    fn learn_with<'a>(events: impl Iterator<Item = &'a Event> + Clone, openers: bool) -> Self {
        // NAT events in the order given, then the openers in time order (borrowed into one
        // list only when that order is needed).
        let mut alias = FastMap::default();
        let mut nat: FastMap<ConnKey, NatView> = FastMap::default();
        for event in events.clone() {
            let Detail::Nat(n) = &event.detail else { continue };
            let proto = event.flow.l4_proto;
            let ends = |a: &Option<String>, b: &Option<String>| Some((parse_end(a.as_deref()?)?, parse_end(b.as_deref()?)?));
            let Some((os, od)) = ends(&n.orig_src, &n.orig_dst) else { continue };
            let original = Original { key: ConnKey::new(proto, os, od), client: os, server: od };
            if n.nat != NatKind::Snat && n.backend.is_some() {
                let view = nat.entry(original.key.clone()).or_default();
                if view.backend.is_none() {
                    *view = NatView {
                        service: n.service.clone(),
                        address: n.orig_dst.clone(),
                        backend: n.backend.clone(),
                        backend_end: n.backend.as_deref().and_then(parse_end),
                        backend_pod: n.backend_pod.clone(),
                    };
                }
            }
            // The translated packets go reply_dst -> reply_src.
            if let Some((rs, rd)) = ends(&n.reply_src, &n.reply_dst) {
                alias.insert(ConnKey::new(proto, rd, rs), original.clone());
            }
            alias.insert(original.key.clone(), original);
        }
        let mut by_client = FastMap::default();
        let mut opener = FastMap::default();
        // Only an event without its source port is looked up by client: without one, no map.
        let portless = events.clone().any(|e| e.flow.sport == Some(0));
        if !portless && !openers {
            return Self { alias, nat, opener, by_client };
        }
        let mut events: Vec<&Event> = events.collect();
        events.sort_by_key(|e| e.ts_unix_ns);
        for e in events {
            let f = &e.flow;
            if portless
                && let (Some(src), Some(dst), Some(sport)) = (f.src, f.dst, f.sport)
                && sport != 0
                && let Some(key) = ConnKey::of_flow(e)
            {
                by_client.insert((f.l4_proto, src, (dst, f.dport)), key);
            }
            if openers && let (Some(end), Some(key)) = (opener_of(e), ConnKey::of_flow(e)) {
                opener.entry(key).or_insert(end);
            }
        }
        Self { alias, nat, opener, by_client }
    }

    /// The connection an event belongs to, with its ends.
    pub(crate) fn conn(&self, event: &Event) -> Option<Conn> {
        if let Detail::Nat(n) = &event.detail {
            let client = parse_end(n.orig_src.as_deref()?)?;
            let server = parse_end(n.orig_dst.as_deref()?)?;
            return Some(Conn { key: ConnKey::new(event.flow.l4_proto, client, server), client, server });
        }
        let (key, own) = self.flow_key(event)?;
        if let Some(original) = self.alias.get(&key) {
            return Some(Conn { key: original.key.clone(), client: original.client, server: original.server });
        }
        let (client, server) = match self.opener.get(&key) {
            Some(&opener) => (opener, key.other(opener)),
            None => own,
        };
        Some(Conn { key, client, server })
    }

    /// The key of an event's own flow (that of its connection when it was reported without its
    /// source port), and its ends in the event's direction. Not for NAT events.
    fn flow_key(&self, event: &Event) -> Option<(ConnKey, (End, End))> {
        let mut key = ConnKey::of_flow(event)?;
        let f = &event.flow;
        let mut own = ((f.src?, f.sport), (f.dst?, f.dport));
        if f.sport == Some(0)
            && let Some(known) = self.by_client.get(&(f.l4_proto, f.src?, (f.dst?, f.dport)))
        {
            key = known.clone();
            let src = if key.a.0 == own.0.0 { key.a } else { key.b };
            own = (src, key.other(src));
        }
        Some((key, own))
    }

    /// The connection an event belongs to and its label (`CLIENT -> SERVER`, see [`Conn`]).
    pub(crate) fn of(&self, event: &Event) -> Option<(ConnKey, String)> {
        self.conn(event).map(|c| {
            let label = c.label();
            (c.key, label)
        })
    }

    /// The connection of `event`, without its label (formatting it costs more than finding it).
    pub(crate) fn key_of(&self, event: &Event) -> Option<ConnKey> {
        if matches!(event.detail, Detail::Nat(_)) {
            return self.conn(event).map(|c| c.key);
        }
        // As conn's, without the ends: no lookup of who opened it.
        let (key, _) = self.flow_key(event)?;
        Some(self.alias.get(&key).map_or(key, |original| original.key.clone()))
    }

    /// Where DNAT sent a connection (by its key, as [`Self::conn`] gives it), if it was NATed.
    pub(crate) fn nat(&self, key: &ConnKey) -> Option<&NatView> {
        self.nat.get(key)
    }
}

/// A connection id of [`EventConns`] for "no connection" (an event without addresses).
const NO_CONN: u32 = u32::MAX;

/// Every event of a run joined to its connection once: the rules ask for each event's
/// connection many times (each rule, each finding's story), and finding it through
/// [`Connections::conn`] (several map lookups) and naming it (formatting addresses) each time
/// was most of `diagnose --from`'s time. Connections and their keys get small ids; an event of
/// the run is found by its place in the run's slice, so a lookup is an index.
#[derive(Debug)]
pub(crate) struct EventConns<'a> {
    events: &'a [Event],
    conns: Connections,
    /// Per event of `events`: its connection's id in `table`, or [`NO_CONN`].
    of_event: Vec<u32>,
    /// The distinct connections (key and direction) and, per connection, its key's id.
    table: Vec<(Conn, u32)>,
    table_ids: FastMap<Conn, u32>,
    /// `CLIENT -> SERVER` per connection, made when first asked.
    labels: Vec<OnceCell<String>>,
    /// The distinct keys, by id.
    keys: Vec<ConnKey>,
    key_ids: FastMap<ConnKey, u32>,
}

impl<'a> EventConns<'a> {
    /// Learns the run's connections ([`Connections::learn`]) and joins each event to one.
    pub(crate) fn new(events: &'a [Event]) -> Self {
        let conns = Connections::learn_with(events.iter(), true);
        let mut this = Self {
            events,
            conns,
            of_event: Vec::with_capacity(events.len()),
            table: Vec::new(),
            table_ids: FastMap::default(),
            labels: Vec::new(),
            keys: Vec::new(),
            key_ids: FastMap::default(),
        };
        for e in events {
            let id = match this.conns.conn(e) {
                Some(c) => this.intern(c),
                None => NO_CONN,
            };
            this.of_event.push(id);
        }
        this
    }

    fn intern(&mut self, c: Conn) -> u32 {
        if let Some(&id) = self.table_ids.get(&c) {
            return id;
        }
        let key_id = match self.key_ids.get(&c.key) {
            Some(&k) => k,
            None => {
                let k = self.keys.len() as u32;
                self.keys.push(c.key.clone());
                self.key_ids.insert(c.key.clone(), k);
                k
            }
        };
        let id = self.table.len() as u32;
        self.table_ids.insert(c.clone(), id);
        self.table.push((c, key_id));
        self.labels.push(OnceCell::new());
        id
    }

    /// The events joined.
    pub(crate) fn events(&self) -> &'a [Event] {
        self.events
    }

    /// The place of `event` in the run's slice, when it is one of the run's events.
    pub(crate) fn index(&self, event: &Event) -> Option<usize> {
        let size = size_of::<Event>();
        let offset = std::ptr::from_ref(event).addr().wrapping_sub(self.events.as_ptr().addr());
        (offset.is_multiple_of(size) && offset / size < self.events.len()).then_some(offset / size)
    }

    /// The id of `event`'s connection (key and direction). An event that is not the run's is
    /// joined to the run's connection of the same key and direction, if the run has one.
    fn conn_id(&self, event: &Event) -> Option<u32> {
        match self.index(event) {
            Some(i) => Some(self.of_event[i]).filter(|&id| id != NO_CONN),
            None => self.table_ids.get(&self.conns.conn(event)?).copied(),
        }
    }

    /// The connection an event belongs to, with its ends ([`Connections::conn`]).
    pub(crate) fn conn(&self, event: &Event) -> Option<Conn> {
        match self.index(event) {
            Some(_) => self.conn_id(event).map(|id| self.table[id as usize].0.clone()),
            None => self.conns.conn(event),
        }
    }

    /// The connection of `event`, without its label.
    pub(crate) fn key_of(&self, event: &Event) -> Option<ConnKey> {
        self.conn(event).map(|c| c.key)
    }

    /// The id of `event`'s connection key (ids run from 0 to [`Self::key_count`]).
    pub(crate) fn key_id(&self, event: &Event) -> Option<u32> {
        match self.index(event) {
            Some(_) => self.conn_id(event).map(|id| self.table[id as usize].1),
            None => self.key_ids.get(&self.conns.conn(event)?.key).copied(),
        }
    }

    /// The id of a key one of the run's events has.
    pub(crate) fn id_of_key(&self, key: &ConnKey) -> Option<u32> {
        self.key_ids.get(key).copied()
    }

    /// The key of an id [`Self::key_id`] gave.
    pub(crate) fn key(&self, id: u32) -> &ConnKey {
        &self.keys[id as usize]
    }

    /// How many distinct keys the run's events have.
    pub(crate) fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// `CLIENT -> SERVER` of `event`'s connection ([`Conn::label`]), made once per connection.
    pub(crate) fn label(&self, event: &Event) -> Option<String> {
        match self.conn_id(event) {
            Some(id) if self.index(event).is_some() => Some(self.labels[id as usize].get_or_init(|| self.table[id as usize].0.label()).clone()),
            _ => self.conns.conn(event).map(|c| c.label()),
        }
    }

    /// The connection an event belongs to and its label.
    pub(crate) fn of(&self, event: &Event) -> Option<(ConnKey, String)> {
        Some((self.key_of(event)?, self.label(event)?))
    }

    /// Where DNAT sent a connection (by its key), if it was NATed ([`Connections::nat`]).
    pub(crate) fn nat(&self, key: &ConnKey) -> Option<&NatView> {
        self.conns.nat(key)
    }
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
        e.detail = Detail::Retransmit(TcpDetail { state: Some("SYN_SENT"), count: 1, direction: None, duration_ms: None, syns_sent: None });
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
        failed.detail = Detail::ConnectFail(TcpDetail { state: Some("SYN_SENT"), count: 0, direction: None, duration_ms: None, syns_sent: None });
        let events = vec![tcp_event("10.0.0.1", 41000, "10.0.0.2", 80, 1), failed];
        let s = stories(&events);
        assert_eq!(s.len(), 1, "{s:#?}");
        assert_eq!(s[0].label, "10.0.0.1:41000 -> 10.0.0.2:80");
    }

    #[test]
    fn a_connection_is_named_the_way_its_syn_went_whichever_event_came_first() {
        // A drop of the server's SYN-ACK comes before the client's SYN retransmit: the story is
        // still client -> server, as the SYN-ACK's flags and the socket in SYN_SENT say.
        let mut syn_ack = tcp_event("10.0.0.2", 80, "10.0.0.1", 41000, 1);
        (syn_ack.flow.l4_proto, syn_ack.flow.tcp_flags) = (Some(6), Some(crate::events::TcpFlags(0x12)));
        syn_ack.detail = Detail::Drop(crate::probes::drops::detail::DropDetail {
            reason: "NETFILTER_DROP".into(),
            reason_code: 0,
            location: "nf_hook_slow+0x9c".into(),
            len: 40,
            packet_ct: crate::probes::drops::detail::PacketCt::Unread,
            conntrack: None,
        });
        let s = stories(std::slice::from_ref(&syn_ack));
        assert_eq!(s[0].label, "10.0.0.1:41000 -> 10.0.0.2:80", "told by the flags alone");
        let mut retransmit = tcp_event("10.0.0.1", 41000, "10.0.0.2", 80, 2);
        retransmit.flow.l4_proto = Some(6);
        syn_ack.flow.tcp_flags = None;
        let events = vec![syn_ack, retransmit];
        let s = stories(&events);
        assert_eq!(s.len(), 1, "{s:#?}");
        assert_eq!(s[0].label, "10.0.0.1:41000 -> 10.0.0.2:80", "told by the socket in SYN_SENT");
    }

    #[test]
    fn the_ipv4_fast_path_parses_as_the_standard_parser_or_not_at_all() {
        for text in ["10.0.0.1:80", "0.0.0.0:0", "255.255.255.255:65535", "10.244.0.12:30010", "1.2.3.4:5"] {
            assert_eq!(v4_end(text), text.parse::<SocketAddr>().ok().map(|sa| (sa.ip(), Some(sa.port()))), "{text}");
            assert!(v4_end(text).is_some(), "{text}");
        }
        // Left to the standard parser (which takes some of them: the same end either way).
        for text in [
            "10.0.0.1",
            "10.0.0.01:80",
            "10.0.0.1:080",
            "256.0.0.1:80",
            "1.2.3.4:65536",
            "1.2.3:4",
            "1.2.3.4:",
            "1.2.3.4:5x",
            "1.2.3.1000:5",
            "[::1]:80",
            "",
        ] {
            assert_eq!(v4_end(text), None, "{text}");
        }
    }

    #[test]
    fn ends_parse_like_events_print_them() {
        assert_eq!(parse_end("10.0.0.1:80"), Some(("10.0.0.1".parse().unwrap(), Some(80))));
        assert_eq!(parse_end("[fd00::1]:443"), Some(("fd00::1".parse().unwrap(), Some(443))));
        assert_eq!(parse_end("10.0.0.1"), Some(("10.0.0.1".parse().unwrap(), None)));
        assert_eq!(parse_end("nope"), None);
    }
}
