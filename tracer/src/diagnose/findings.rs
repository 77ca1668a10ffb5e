//! The rules: a run's events (and sysctls read where they point) in, findings out. Pure code:
//! the facts it needs from the machine come through [`Facts`], so every rule is unit-tested.
//! docs/FINDINGS.md is the user's side of this file; keep them in step.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    rc::Rc,
    time::Duration,
};

use serde_json::{Map, Value, json};

use super::flows::{ConnKey, End, EventConns, NatView, parse_end};

mod tunnels;
use crate::{
    events::{Detail, Event},
    kernel::firewall::Rule,
    probes::{
        drops::{CountedPlace, detail::DropDetail},
        mtu::detail::MtuEventKind,
        nat::detail::{NatDetail, NatKind, NatState},
        tcp::detail::{ResetDirection, TcpDetail},
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Finding {
    pub code: &'static str,
    pub severity: Severity,
    pub summary: String,
    pub pods: BTreeSet<String>,
    pub flows: BTreeSet<String>,
    pub evidence: Map<String, Value>,
    /// When its events happened and a few of them, for a person to check the finding against.
    pub seen: Seen,
    /// The connections its events belong to (not printed): a connection one finding told is
    /// not told again by a rule that runs later.
    pub conns: BTreeSet<ConnKey>,
}

/// The time of a finding's first and last event and up to [`MAX_EXAMPLES`] of its events as
/// the CONTRACT's JSON objects (`first`, `last`, `examples` of the report).
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    pub first: Option<i128>,
    pub last: Option<i128>,
    pub examples: Vec<Value>,
    /// The nodes its events were seen on (CONTRACT `nodes`); empty for a configuration fact.
    pub nodes: BTreeSet<String>,
}

/// Example events per finding.
const MAX_EXAMPLES: usize = 3;

impl Seen {
    /// The span of `events` and examples of them: the first event of each kind and namespace
    /// (a NAT `no_reply` and the backend's drop say more together than two drops), then the
    /// earliest others, in time order.
    fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut sorted: Vec<&Event> = events.into_iter().collect();
        sorted.sort_by_key(|e| e.ts_unix_ns);
        let mut picked: Vec<usize> = Vec::new();
        let mut kinds = HashSet::new();
        for (i, e) in sorted.iter().enumerate() {
            if picked.len() < MAX_EXAMPLES && kinds.insert((e.detail.kind(), e.netns)) {
                picked.push(i);
            }
        }
        for i in 0..sorted.len() {
            if picked.len() >= MAX_EXAMPLES {
                break;
            }
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked.sort_unstable();
        let examples = picked
            .into_iter()
            .filter_map(|i| crate::output::json::to_json(sorted[i]).ok())
            .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .collect();
        let nodes: BTreeSet<&str> = sorted.iter().filter_map(|e| e.node.as_deref()).collect();
        let nodes = nodes.into_iter().map(String::from).collect();
        Self { first: sorted.first().map(|e| e.ts_unix_ns), last: sorted.last().map(|e| e.ts_unix_ns), examples, nodes }
    }
}

/// What the rules may ask of the machine, at the end of the run.
pub(crate) trait Facts {
    /// A sysctl (`net.ipv4.ip_forward`) as network namespace `netns` sees it.
    fn sysctl(&mut self, netns: u32, key: &str) -> Option<String>;
    /// A name for the namespace: its pod's, or its /run/netns name.
    fn netns_name(&mut self, netns: u32) -> Option<String>;
    /// The Service (`namespace/name`) answering on `ip:port` for `proto`.
    fn service(&self, ip: IpAddr, port: u16, proto: u8) -> Option<String>;
    /// Whether any Service is known at all (else service-not-translated cannot be told).
    fn knows_services(&self) -> bool;
    /// The firewall rules of namespace `netns` that drop or reject (nftables and legacy
    /// iptables), and the sources that could not be read. Shared: several findings may ask
    /// for one namespace's.
    fn dropping_rules(&mut self, netns: u32) -> Rc<NamespaceRules>;
    /// The tunnels of namespace `netns`: tunnel devices, the VXLAN forwarding database, tunnel
    /// neighbours, addresses (kernel::tunnels); None when they cannot be read.
    fn tunnels(&mut self, _netns: u32) -> Option<crate::kernel::tunnels::TunnelFacts> {
        None
    }
    /// What `ip route get DST` answers in namespace `netns` (device, gateway, preferred source).
    fn route_to(&mut self, _netns: u32, _dst: IpAddr) -> Option<crate::kernel::tunnels::RouteTo> {
        None
    }
}

/// What [`Facts::dropping_rules`] found in one namespace.
#[derive(Debug, Default)]
pub(crate) struct NamespaceRules {
    /// Every rule that drops or rejects, of every source that could be read.
    pub rules: Vec<Rule>,
    /// Each source whose rules could not be read, and why: the finding says so, since the rule
    /// that dropped may be among them.
    pub unreadable: Vec<anyhow::Error>,
}

/// Rules that may have dropped some packets, as a finding names them: the text of each rule
/// that fits them and counted packets (most first) or cannot count (no counter: last), and
/// the sources that could not be read.
#[derive(Debug, Default)]
struct NamedRules {
    rules: Vec<Rule>,
    unreadable: Vec<String>,
}

impl NamedRules {
    fn add(&mut self, found: Rc<NamespaceRules>, ipv6: Option<bool>, proto: Option<u8>, dport: Option<u16>) {
        for rule in &found.rules {
            if rule.packets != Some(0) && rule.may_match(ipv6, proto, dport) && !self.rules.contains(rule) {
                self.rules.push(rule.clone());
            }
        }
        self.rules.sort_by_key(|r| std::cmp::Reverse(r.packets.map_or(0, |p| p.saturating_add(1))));
        for err in &found.unreadable {
            let text = error_text(err);
            if !self.unreadable.contains(&text) {
                self.unreadable.push(text);
            }
        }
    }

    /// `rules` (their texts) and, when a source could not be read, `rules_unreadable`.
    fn write(&self, evidence: &mut Map<String, Value>) {
        evidence.insert("rules".into(), json!(self.rules.iter().map(|r| r.text.as_str()).collect::<Vec<_>>()));
        if !self.unreadable.is_empty() {
            evidence.insert("rules_unreadable".into(), json!(self.unreadable));
        }
    }

    /// What the summary says about the rules: the first one, and the sources it could not read.
    fn words(&self) -> String {
        let mut words = String::new();
        if let Some(rule) = self.rules.first() {
            if rule.packets.is_some() {
                words.push_str(&format!("; the rule counting drops there: {}", rule.text));
            } else {
                words.push_str(&format!("; a rule there that may drop them (it has no counter): {}", rule.text));
            }
            if self.rules.len() > 1 {
                words.push_str(&format!(" (and {} more, see evidence)", self.rules.len() - 1));
            }
        }
        if !self.unreadable.is_empty() {
            words.push_str(&format!(
                "; some firewall rules there could not be read, so the rule may be one tracer cannot name ({})",
                self.unreadable.join("; ")
            ));
        }
        words
    }
}

/// An error and its causes as one line, each said once: some errors repeat their cause in their
/// own message, and the chain would say it twice.
pub(crate) fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let said = cause.to_string();
        if text.ends_with(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// What the run was, besides its events.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunInfo {
    pub reply_timeout: Duration,
    /// Events the kernel could not deliver (ring buffer full).
    pub lost: u64,
    /// Events past the collection limit (counted, not analysed).
    pub beyond_limit: u64,
    /// Probes that could not run, with why.
    pub missing_probes: Vec<(String, String)>,
    /// Device MTU mismatches found at start (devices.rs): devices and what is wrong.
    pub mtu_mismatches: Vec<(Vec<String>, String)>,
    /// Drops over the rate budget (`--max-rate`), counted in the kernel by place, not delivered.
    pub counted: Vec<CountedPlace>,
    /// The NAT family checked packets only where they left the classified devices of the
    /// node (`--nat-hook tc`): a DNAT whose packets left by the uplink was not seen, so the
    /// absence of a DNAT is weaker evidence.
    pub nat_in_classifiers: bool,
}

/// Adds the drops the rate budget counted (without their flows) to the finding of their reason,
/// namespace and location: `drops` counts them too, `counted` says how many of those were
/// counted rather than seen one by one, and the summary says so. A place goes to the first such
/// finding only, so the findings' counts still add up to what the kernel dropped; a place no
/// finding names stays in the report's `counted` total only.
fn add_counted(counted: &[CountedPlace], out: &mut [Finding]) {
    let mut extra = vec![0u64; out.len()];
    for place in counted {
        let names = |f: &Finding| {
            let e = &f.evidence;
            let reason = e.get("reason").and_then(Value::as_str).is_some_and(|r| r.split(',').any(|r| r == place.reason));
            let netns = e.get("netns").and_then(Value::as_u64) == place.netns.map(u64::from);
            let location = match e.get("locations").and_then(Value::as_array) {
                Some(at) => at.iter().any(|l| l.as_str() == Some(place.location.as_str())),
                None => true,
            };
            reason && netns && location
        };
        if let Some(i) = out.iter().position(names) {
            extra[i] += place.count;
        }
    }
    for (f, n) in out.iter_mut().zip(extra).filter(|(_, n)| *n > 0) {
        let drops = f.evidence.get("drops").and_then(Value::as_u64).unwrap_or(0);
        f.evidence.insert("drops".into(), json!(drops + n));
        f.evidence.insert("counted".into(), json!(n));
        f.summary.push_str(&format!(" ({n} more such drops over --max-rate were counted in the kernel, without their flows)"));
    }
}

/// Retransmits of one connection that make a storm when nothing else explains them.
pub(crate) const STORM_RETRANSMITS: u64 = 5;
/// Flows listed per finding; the evidence counts all of them.
const MAX_FLOWS: usize = 20;

/// Forwarded packets without a route are IP_INNOROUTES (6.x, in ip_error); IP_INADDRERRORS is
/// what ip_error gives when the incoming device does not forward.
const ROUTE_REASONS: &[&str] =
    &["IP_INNOROUTES", "IP_INNOROUTE", "IP_NOROUTE", "IP_OUTNOROUTES", "IP_INADDRERRORS", "IPV6_NOROUTE", "IPV6_INADDRERRORS"];
const NEIGH_REASONS: &[&str] = &["NEIGH_FAILED", "NEIGH_QUEUEFULL", "NEIGH_DEAD", "NEIGH_CREATEFAIL"];
const SOCKET_BUFFER_REASONS: &[&str] = &["SOCKET_RCVBUFF", "SOCKET_BACKLOG", "PROTO_MEM", "TCP_OFOMERGE"];

/// Runs every rule.
pub(crate) fn diagnose(events: &[Event], info: &RunInfo, facts: &mut dyn Facts) -> Vec<Finding> {
    diagnose_joined(EventConns::new(events), info, facts).0
}

/// [`diagnose`] over events already joined to their connections; gives the join back, for
/// what runs after the rules over the same events (the cross-node findings of recordings).
pub(crate) fn diagnose_joined<'a>(conns: EventConns<'a>, info: &RunInfo, facts: &mut dyn Facts) -> (Vec<Finding>, EventConns<'a>) {
    let run = Run::new(conns);
    let mut out = Vec::new();
    // First the findings that name where a packet was dropped and why; the rules after them
    // leave out the connections those told (one problem, one finding).
    netfilter_drops(&run, facts, &mut out);
    tunnels::tunnel_findings(&run, facts, &mut out);
    conntrack_drops(&run, facts, &mut out);
    route_drops(&run, facts, &mut out);
    rp_filter_drops(&run, facts, &mut out);
    neighbor_drops(&run, facts, &mut out);
    no_listener(&run, facts, &mut out);
    mtu_blackholes(&run, &mut out);
    nat_no_reply(&run, info, &mut out);
    service_not_translated(&run, info, facts, &mut out);
    dns_no_reply(&run, info.reply_timeout, facts, &mut out);
    socket_buffer_drops(&run, facts, &mut out);
    connects_not_sent(&run, facts, &mut out);
    // Last: only flows that no finding above explains.
    retransmit_storms(&run, &mut out);
    // A tunnel's drop is the cause of its connections' no-reply and retransmits: one finding.
    tunnels::fold_symptoms(&mut out);
    tunnels::name_overlays(facts, &mut out);
    add_counted(&info.counted, &mut out);
    if info.lost > 0 || info.beyond_limit > 0 {
        out.push(Finding {
            code: "events-lost",
            severity: Severity::Warning,
            summary: format!(
                "{} events were lost (ring buffer full) and {} were past the analysis limit: counts below are lower bounds; narrow the run with --pod/--ip or raise --ring-buffer",
                info.lost, info.beyond_limit
            ),
            pods: BTreeSet::new(),
            flows: BTreeSet::new(),
            evidence: obj(json!({"events": 0, "lost": info.lost, "beyond_limit": info.beyond_limit})),
            seen: Seen::default(),
            conns: BTreeSet::new(),
        });
    }
    for (devices, what) in &info.mtu_mismatches {
        // A configuration fact, not traffic: a warning, so a healthy run stays clean; the
        // mtu-blackhole finding is what says packets are really lost.
        out.push(Finding {
            code: "mtu-mismatch",
            severity: Severity::Warning,
            summary: what.clone(),
            pods: BTreeSet::new(),
            flows: BTreeSet::new(),
            evidence: obj(json!({"events": 0, "devices": devices})),
            seen: Seen::default(),
            conns: BTreeSet::new(),
        });
    }
    for (probe, why) in &info.missing_probes {
        out.push(Finding {
            code: "probe-missing",
            severity: Severity::Info,
            summary: format!("the {probe} probe could not run ({why}): problems only it sees cannot be found"),
            pods: BTreeSet::new(),
            flows: BTreeSet::new(),
            evidence: obj(json!({"events": 0, "probe": probe, "reason": why})),
            seen: Seen::default(),
            conns: BTreeSet::new(),
        });
    }
    out.sort_by(|a, b| a.severity.cmp(&b.severity).then(events_of(b).cmp(&events_of(a))).then(a.code.cmp(b.code)));
    (out, run.conns)
}

fn events_of(f: &Finding) -> u64 {
    f.evidence.get("events").and_then(Value::as_u64).unwrap_or(0)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A set looked up once per event: foldhash, not SipHash.
type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A run's events as the rules read them: each connection (through NAT: the client's side, the
/// node's and the backend's are one) with all its events.
struct Run<'a> {
    events: &'a [Event],
    conns: EventConns<'a>,
    /// Every event of each connection (by key id), in time order.
    by_conn: Vec<Vec<&'a Event>>,
    /// The reasons that have findings of their own ([`drop_has_finding`]), and per event the
    /// place of its drop's reason among them plus one (0: none of them, or no drop): a drop's
    /// reason is text on the heap, and reading it again in each rule's pass over the run was a
    /// cache miss per drop per rule.
    named: Vec<&'static str>,
    reasons: Vec<u8>,
}

impl<'a> Run<'a> {
    fn new(conns: EventConns<'a>) -> Self {
        let events = conns.events();
        let mut by_conn: Vec<Vec<&Event>> = vec![Vec::new(); conns.key_count()];
        for e in events {
            if let Some(id) = conns.key_id(e) {
                by_conn[id as usize].push(e);
            }
        }
        for list in &mut by_conn {
            list.sort_by_key(|e| e.ts_unix_ns);
        }
        let named = [&["NETFILTER_DROP", "IP_RPFILTER", "NO_SOCKET", "PKT_TOO_BIG"], ROUTE_REASONS, NEIGH_REASONS, SOCKET_BUFFER_REASONS].concat();
        let place = |d: &DropDetail| named.iter().position(|n| *n == d.reason).map_or(0, |p| p as u8 + 1);
        let reasons = events.iter().map(|e| drop_of(e).map_or(0, place)).collect();
        Self { events, conns, by_conn, named, reasons }
    }

    /// `e`'s drop reason when it is one that has a finding of its own ([`drop_has_finding`]).
    fn reason(&self, e: &Event) -> Option<&'static str> {
        match self.conns.index(e) {
            Some(i) => self.reasons[i].checked_sub(1).map(|p| self.named[p as usize]),
            None => drop_of(e).and_then(|d| self.named.iter().find(|n| **n == d.reason).copied()),
        }
    }

    /// The events of the connection with key id `id`.
    fn conn_events(&self, id: u32) -> &[&'a Event] {
        self.by_conn.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// `primary` and every other event of the connections they belong to, each once, in time
    /// order: the whole story of what a finding rests on, in every namespace that saw it.
    fn joined(&self, primary: &[&'a Event]) -> Vec<&'a Event> {
        // The connections in key order (as a set of keys would give them).
        let mut keys: Vec<u32> = primary.iter().filter_map(|e| self.conns.key_id(e)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.sort_by(|a, b| self.conns.key(*a).cmp(self.conns.key(*b)));
        let mut seen: FastSet<*const Event> = FastSet::default();
        let mut out = Vec::new();
        let related = keys.iter().flat_map(|&k| self.conn_events(k)).copied();
        for e in primary.iter().copied().chain(related) {
            if seen.insert(std::ptr::from_ref(e)) {
                out.push(e);
            }
        }
        out.sort_by_key(|e| e.ts_unix_ns);
        out
    }

    /// The error findings in `out` so far: the connections they told, by key id.
    fn told_by_errors(&self, out: &[Finding]) -> ToldConns {
        let mut told = vec![false; self.conns.key_count()];
        for key in out.iter().filter(|f| f.severity == Severity::Error).flat_map(|f| &f.conns) {
            if let Some(id) = self.conns.id_of_key(key) {
                told[id as usize] = true;
            }
        }
        ToldConns(told)
    }

    /// Whether `e`'s connection is one of `told`'s.
    fn is_told(&self, told: &ToldConns, e: &Event) -> bool {
        self.conns.key_id(e).is_some_and(|id| told.0[id as usize])
    }

    /// Where DNAT sent the connection of one of `events`, when one was NATed.
    fn nat_of_any(&self, events: &[&Event]) -> Option<&NatView> {
        events.iter().filter_map(|e| self.conns.key_id(e)).find_map(|id| self.conns.nat(self.conns.key(id)))
    }
}

/// The connections error findings told, by key id ([`Run::told_by_errors`]).
struct ToldConns(Vec<bool>);

/// What a finding shows of its events: pods, flows, when, examples and its connections.
struct Told {
    pods: BTreeSet<String>,
    flows: BTreeSet<String>,
    seen: Seen,
    conns: BTreeSet<ConnKey>,
}

impl Told {
    fn finding(self, code: &'static str, severity: Severity, summary: String, evidence: Map<String, Value>) -> Finding {
        Finding { code, severity, summary, pods: self.pods, flows: self.flows, evidence, seen: self.seen, conns: self.conns }
    }
}

/// The story of a finding's `primary` events: every event of their connections joins them
/// (before and after NAT, in each namespace), for the pods, the time span and examples, the
/// evidence's `events` and `seen_in` (what each namespace saw). The flows are the connections
/// as their clients opened them (a NATed one by its original tuple), capped at [`MAX_FLOWS`]
/// (the total goes into the evidence when it is larger).
fn told<'a>(run: &Run<'a>, primary: &[&'a Event], evidence: &mut Map<String, Value>) -> Told {
    let joined = run.joined(primary);
    // Borrowed while collecting, copied once each.
    let mut pods: FastSet<&str> = FastSet::default();
    for e in &joined {
        pods.extend(e.src_pod.as_deref());
        pods.extend(e.dst_pod.as_deref());
        if let Detail::Nat(n) = &e.detail {
            pods.extend(n.backend_pod.as_deref());
        }
    }
    let pods: BTreeSet<String> = pods.into_iter().map(String::from).collect();
    let mut flows = BTreeSet::new();
    let mut conns = BTreeSet::new();
    let mut met: FastSet<u32> = FastSet::default();
    for e in primary {
        // A connection's label once: formatting it costs more than finding the connection.
        if let Some(id) = run.conns.key_id(e)
            && met.insert(id)
            && let Some(label) = run.conns.label(e)
        {
            conns.insert(run.conns.key(id).clone());
            flows.insert(label);
        }
    }
    if flows.len() > MAX_FLOWS {
        evidence.insert("flows_total".into(), json!(flows.len()));
        flows = flows.into_iter().take(MAX_FLOWS).collect();
    }
    evidence.insert("events".into(), json!(joined.len()));
    evidence.insert("seen_in".into(), seen_in(&joined));
    Told { pods, flows, seen: Seen::of(joined.iter().copied()), conns }
}

/// What each network namespace saw of a story: `[{"netns": N, "netns_pod": POD, KIND: COUNT,
/// ...}]`, one object per namespace (by inode; null when the kernel could not tell), the
/// events counted by their kind (`drop`, `retransmit`, `nat`, ...).
fn seen_in(events: &[&Event]) -> Value {
    // Per namespace: its pod, and the events by kind.
    type Place = (Option<String>, BTreeMap<&'static str, u64>);
    let mut places: BTreeMap<Option<u32>, Place> = BTreeMap::new();
    for e in events {
        let place = places.entry(e.netns).or_default();
        if place.0.is_none() {
            place.0.clone_from(&e.netns_pod);
        }
        *place.1.entry(e.detail.kind()).or_default() += 1;
    }
    let list: Vec<Value> = places
        .into_iter()
        .map(|(netns, (pod, kinds))| {
            let mut o = obj(json!({"netns": netns, "netns_pod": pod}));
            o.extend(kinds.into_iter().map(|(kind, n)| (kind.to_string(), json!(n))));
            Value::Object(o)
        })
        .collect();
    json!(list)
}

/// `Service NS/NAME (IP:PORT)`, or the address alone.
fn service_words(view: &NatView) -> String {
    match (&view.service, &view.address) {
        (Some(s), Some(a)) => format!("Service {s} ({a})"),
        (None, Some(a)) => a.clone(),
        (Some(s), None) => format!("Service {s}"),
        (None, None) => "a NATed address".into(),
    }
}

/// The NAT part of a finding's evidence: the Service address the clients asked and the backend
/// DNAT sent them to.
fn nat_evidence(view: &NatView, evidence: &mut Map<String, Value>) {
    evidence.insert("service".into(), json!(view.service));
    evidence.insert("address".into(), json!(view.address));
    evidence.insert("backend".into(), json!(view.backend));
    evidence.insert("backend_pod".into(), json!(view.backend_pod));
}

fn drop_of(e: &Event) -> Option<&DropDetail> {
    match &e.detail {
        Detail::Drop(d) => Some(d),
        _ => None,
    }
}

/// How a namespace is called in a sentence: `pod shop/db-0's network namespace`, `network
/// namespace router (4026532…)`, or by inode.
fn netns_words(netns: Option<u32>, events: &[&Event], facts: &mut dyn Facts) -> String {
    let Some(inode) = netns else { return "an unknown network namespace".into() };
    if let Some(pod) = events.iter().find_map(|e| e.netns_pod.clone()) {
        return format!("pod {pod}'s network namespace");
    }
    match facts.netns_name(inode) {
        Some(name) => format!("network namespace {name} ({inode})"),
        None => format!("network namespace {inode}"),
    }
}

/// `N packets from SRC to DST` for a group with one source and destination, or a count of flows.
fn traffic_words(events: &[&Event]) -> String {
    // Each distinct flow and its pods once: formatting per packet was a third of the rule's time.
    let mut distinct: FastMap<_, &Event> = FastMap::default();
    for e in events {
        distinct.entry((e.flow.src, e.flow.sport, e.flow.dst, e.flow.dport, &e.src_pod, &e.dst_pod)).or_insert(e);
    }
    let labels: BTreeSet<String> = distinct.values().filter_map(|e| traffic_label(e)).collect();
    let n = events.len();
    let packets = if n == 1 { "1 packet".to_string() } else { format!("{n} packets") };
    match labels.len() {
        0 => packets,
        1 => format!("{packets} {}", labels.into_iter().next().unwrap_or_default()),
        k => format!("{packets} of {k} flows"),
    }
}

fn traffic_label(e: &Event) -> Option<String> {
    let with = |ep: Option<String>, pod: &Option<String>| -> Option<String> {
        let ep = ep?;
        Some(match pod {
            Some(p) => format!("{ep} ({p})"),
            None => ep,
        })
    };
    Some(format!("from {} to {}", with(e.flow.src_endpoint(), &e.src_pod)?, with(e.flow.dst_endpoint(), &e.dst_pod)?))
}

/// Namespace, source IP, destination IP, protocol, destination port.
type DropGroup = (Option<u32>, Option<IpAddr>, Option<IpAddr>, Option<u8>, Option<u16>);

/// Drops grouped by [`DropGroup`].
fn group_drops<'a>(events: impl IntoIterator<Item = &'a Event>, keep: impl Fn(&Event) -> bool) -> BTreeMap<DropGroup, Vec<&'a Event>> {
    let mut groups: BTreeMap<_, Vec<&Event>> = BTreeMap::new();
    for e in events {
        if drop_of(e).is_some() && keep(e) {
            groups.entry((e.netns, e.flow.src, e.flow.dst, e.flow.l4_proto, e.flow.dport)).or_default().push(e);
        }
    }
    groups
}

/// Distinct values of `f` over the group's drops, sorted.
fn distinct(events: &[&Event], f: impl Fn(&DropDetail) -> &str) -> Vec<String> {
    let set: BTreeSet<&str> = events.iter().filter_map(|e| drop_of(e)).map(f).collect();
    set.into_iter().map(String::from).collect()
}

/// An ICMP frag-needed (3/4) or ICMPv6 packet-too-big (2).
fn is_too_big_error(e: &Event) -> bool {
    matches!((e.flow.l4_proto, e.flow.icmp), (Some(1), Some((3, 4))) | (Some(58), Some((2, _))))
}

/// Client address, server address and port as the client asked them, protocol.
type ConnGroup = (Option<IpAddr>, Option<IpAddr>, Option<u8>, Option<u16>);

/// The group a drop is told in: its connection's client and server as the client opened it (a
/// NATed connection's original tuple: the Service address, not the backend), so its drops before
/// and after NAT, in whichever namespace, are one problem; the drop's own flow when it has none.
fn conn_group(run: &Run<'_>, e: &Event) -> ConnGroup {
    match run.conns.conn(e) {
        Some(c) => (Some(c.client.0), Some(c.server.0), e.flow.l4_proto, c.server.1),
        None => (e.flow.src, e.flow.dst, e.flow.l4_proto, e.flow.dport),
    }
}

/// A group's events per network namespace, the namespace with the most first.
fn by_namespace<'a>(group: &[&'a Event]) -> Vec<(Option<u32>, Vec<&'a Event>)> {
    let mut places: BTreeMap<Option<u32>, Vec<&Event>> = BTreeMap::new();
    for e in group {
        places.entry(e.netns).or_default().push(e);
    }
    let mut places: Vec<_> = places.into_iter().collect();
    places.sort_by_key(|(_, at)| std::cmp::Reverse(at.len()));
    places
}

fn netfilter_drops(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    let events = run.events;
    // Too-big errors the MTU probe saw dropped are told as part of mtu-blackhole, with the
    // flow they were about (the drop's own flow is router -> sender, ICMP).
    let mtu_told: HashSet<Option<u32>> =
        events.iter().filter(|e| matches!(&e.detail, Detail::Mtu(m) if m.event == MtuEventKind::FragNeededDropped)).map(|e| e.netns).collect();
    // Dropped DNS queries are dns-no-reply's, which names the rule too: one problem, one finding.
    let kept = events.iter().filter(|e| {
        run.reason(e) == Some("NETFILTER_DROP")
            && drop_of(e).is_some_and(|d| d.conntrack.is_none())
            && !(is_too_big_error(e) && mtu_told.contains(&e.netns))
            && dns_query_drop(e, &run.conns).is_none()
    });
    // Hashed per drop, told in the groups' order.
    let mut groups: FastMap<ConnGroup, Vec<&Event>> = FastMap::default();
    for e in kept {
        groups.entry(conn_group(run, e)).or_default().push(e);
    }
    let mut groups: Vec<(ConnGroup, Vec<&Event>)> = groups.into_iter().collect();
    groups.sort_unstable_by_key(|g| g.0);
    for (_, group) in groups {
        // Each namespace's rules are matched on the packets as they were there (after DNAT,
        // the backend's port).
        let places = by_namespace(&group);
        let mut rules = NamedRules::default();
        let mut where_ = Vec::new();
        // A tunnel packet was dropped by its outer header (udp/8472, ipip): the rules match that.
        let tunnel = group.first().and_then(|e| e.flow.tunnel);
        for (netns, at) in &places {
            let (ipv6, proto, dport) = match tunnel {
                Some(t) if t.dport.is_some() => (Some(t.dst.is_ipv6()), Some(17), t.dport),
                Some(t) => (Some(t.dst.is_ipv6()), Some(if t.dst.is_ipv6() { 41 } else { 4 }), None),
                None => at.first().map(|e| (e.flow.dst.map(|ip| ip.is_ipv6()), e.flow.l4_proto, e.flow.dport)).unwrap_or_default(),
            };
            if let Some(n) = netns {
                rules.add(facts.dropping_rules(*n), ipv6, proto, dport);
            }
            let words = netns_words(*netns, at, facts);
            where_.push(if places.len() > 1 { format!("{words} ({} packets)", at.len()) } else { words });
        }
        let (netns, most) = (places[0].0, &places[0].1);
        let mut evidence = obj(json!({
            "drops": group.len(),
            "reason": "NETFILTER_DROP",
            "locations": distinct(&group, |d| d.location.as_str()),
            "netns": netns,
            "netns_pod": most.iter().find_map(|e| e.netns_pod.clone()),
            "devices": group.iter().filter_map(|e| e.ifname.as_deref()).collect::<BTreeSet<_>>(),
            "dropped_in": where_,
        }));
        rules.write(&mut evidence);
        let nat = run.nat_of_any(&group).cloned();
        if let Some(view) = &nat {
            nat_evidence(view, &mut evidence);
        }
        let icmp_error = group.iter().any(|e| match (e.flow.l4_proto, e.flow.icmp) {
            (Some(1), Some((t, _))) => matches!(t, 3 | 11 | 12),
            (Some(58), Some((t, _))) => (1..=4).contains(&t),
            _ => false,
        });
        let told = told(run, &group, &mut evidence);
        let via = nat
            .map(|v| {
                let pod = v.backend_pod.as_deref().map(|p| format!(" ({p})")).unwrap_or_default();
                format!(" (connections to {} that DNAT sent to backend {}{pod})", service_words(&v), v.backend.as_deref().unwrap_or("-"))
            })
            .unwrap_or_default();
        let mut summary = format!(
            "{} in {} dropped {}{via}: look for a DROP or REJECT rule there (iptables-save -c / nft list ruleset in that namespace)",
            if places.len() > 1 { "netfilter rules" } else { "a netfilter rule" },
            where_.join(" and "),
            match &tunnel {
                Some(t) => format!("{} carrying {}", tunnels::tunnel_words(t), traffic_words(&group)),
                None => traffic_words(&group),
            }
        );
        summary.push_str(&rules.words());
        if icmp_error {
            summary.push_str("; these are ICMP errors, which path MTU discovery and connection errors depend on");
        }
        out.push(told.finding("netfilter-drop", Severity::Error, summary, evidence));
    }
}

fn conntrack_drops(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    let mut groups: BTreeMap<(Option<u32>, &'static str), Vec<&Event>> = BTreeMap::new();
    for e in run.events {
        if let Some(c) = drop_of(e).and_then(|d| d.conntrack.as_ref()) {
            groups.entry((e.netns, c.cause.name())).or_default().push(e);
        }
    }
    for ((netns, cause), group) in groups {
        let last = group.iter().rev().find_map(|e| drop_of(e).and_then(|d| d.conntrack.clone()));
        let (entries, max) = last.map_or((None, None), |c| (c.entries, c.max));
        let mut evidence = obj(json!({"drops": group.len(), "cause": cause, "entries": entries, "max": max, "netns": netns}));
        let told = told(run, &group, &mut evidence);
        let where_ = netns_words(netns, &group, facts);
        let summary = match cause {
            "table_full" => format!(
                "the conntrack table of {where_} is full{}: {} new connections were dropped; raise net.netfilter.nf_conntrack_max or find what opens so many connections",
                match (entries, max) {
                    (Some(n), Some(m)) => format!(" ({n} of {m} entries)"),
                    _ => String::new(),
                },
                group.len()
            ),
            "insert_failed" => format!(
                "conntrack in {where_} failed to insert {} new connections (a race between packets of one new connection, typical of parallel DNS queries over UDP): consider single-request-reopen or TCP for DNS",
                group.len()
            ),
            _ => format!(
                "conntrack in {where_} found {} packets invalid and they were dropped (out-of-window or out-of-state TCP, often asymmetric routing or a NAT mismatch)",
                group.len()
            ),
        };
        out.push(told.finding("conntrack-drop", Severity::Error, summary, evidence));
    }
}

/// Whether a namespace forwards packets of this family: the device's `forwarding` where the
/// drop names a device, else the namespace-wide switch.
fn forwarding(facts: &mut dyn Facts, netns: u32, dev: Option<&str>, v6: bool) -> (Option<bool>, Map<String, Value>) {
    let mut sysctls = Map::new();
    let keys: Vec<String> = if v6 {
        let mut k = vec!["net.ipv6.conf.all.forwarding".to_string()];
        if let Some(dev) = dev {
            k.push(format!("net.ipv6.conf.{dev}.forwarding"));
        }
        k
    } else {
        let mut k = vec!["net.ipv4.ip_forward".to_string()];
        if let Some(dev) = dev {
            k.push(format!("net.ipv4.conf.{dev}.forwarding"));
        }
        k
    };
    let mut on = None;
    for key in keys {
        if let Some(v) = facts.sysctl(netns, &key) {
            // The most specific one read wins (the device's, read last).
            on = Some(v.trim() != "0");
            sysctls.insert(key, json!(v.trim()));
        }
    }
    (on, sysctls)
}

/// Packets every interface sends by itself, that no route or forwarding switch is meant to
/// carry: multicast and broadcast destinations (IPv6 DAD to solicited-node `ff02::1:ffXX:XXXX`,
/// router solicitations to `ff02::2`, MLD reports to `ff02::16`, IPv4 link-local multicast
/// `224.0.0.0/24` such as IGMP), IPv6 link-local ends (`fe80::/10`: ND and RS come from them),
/// and an unspecified source (`0.0.0.0`, `::`: DAD and DHCP before an address exists). A
/// namespace that does not forward, has no default route or filters reverse paths frees them at
/// each interface start; that is no broken route. IPv4 link-local unicast (169.254/16) stays:
/// metadata services live there and a missing route to one is real.
fn interface_chatter(e: &Event) -> bool {
    let routine_dst = |a: IpAddr| match a {
        IpAddr::V4(v) => v.is_multicast() || v.is_broadcast(),
        IpAddr::V6(v) => v.is_multicast() || v.is_unicast_link_local(),
    };
    let routine_src = |a: IpAddr| a.is_unspecified() || matches!(a, IpAddr::V6(v) if v.is_unicast_link_local());
    e.flow.dst.is_some_and(routine_dst) || e.flow.src.is_some_and(routine_src)
}

fn route_drops(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    // Per namespace, incoming device and family: forwarding is switched per device.
    type Key = (Option<u32>, Option<String>, bool);
    let mut groups: BTreeMap<Key, Vec<&Event>> = BTreeMap::new();
    for e in run.events {
        // Traffic to a Service address that nothing translated is service-not-translated's.
        if run.reason(e).is_some_and(|r| ROUTE_REASONS.contains(&r)) && service_address(e, facts).is_none() && !interface_chatter(e) {
            let v6 = matches!(e.flow.dst, Some(IpAddr::V6(_)));
            groups.entry((e.netns, e.ifname.clone(), v6)).or_default().push(e);
        }
    }
    for ((netns, dev, v6), group) in groups {
        let (forwards, sysctls) = match netns {
            Some(inode) => forwarding(facts, inode, dev.as_deref(), v6),
            None => (None, Map::new()),
        };
        let reasons = distinct(&group, |d| d.reason.as_str());
        let mut evidence = obj(json!({"drops": group.len(), "reason": reasons.join(","), "netns": netns, "device": dev, "sysctls": sysctls}));
        let told = told(run, &group, &mut evidence);
        let where_ = netns_words(netns, &group, facts);
        let traffic = traffic_words(&group);
        let finding = if forwards == Some(false) {
            let key = if v6 { "net.ipv6.conf.all.forwarding" } else { "net.ipv4.ip_forward" };
            let summary = format!(
                "IP forwarding is off in {where_} ({key} = 0{}): it dropped {traffic} that it should have routed; set {key}=1 there",
                dev.as_deref().map(|d| format!(", arriving on {d}")).unwrap_or_default()
            );
            told.finding("ip-forward-disabled", Severity::Error, summary, evidence)
        } else {
            let summary = format!(
                "{where_} has no route for the destination: it dropped {traffic} ({}); add the route (ip route) or check that the pod CIDR does not overlap the host network",
                reasons.join(", ")
            );
            told.finding("no-route", Severity::Error, summary, evidence)
        };
        out.push(finding);
    }
}

fn rp_filter_drops(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    let mut groups: BTreeMap<(Option<u32>, Option<String>), Vec<&Event>> = BTreeMap::new();
    for e in run.events {
        if run.reason(e) == Some("IP_RPFILTER") && !interface_chatter(e) {
            groups.entry((e.netns, e.ifname.clone())).or_default().push(e);
        }
    }
    for ((netns, dev), group) in groups {
        let mut sysctls = Map::new();
        if let Some(inode) = netns {
            let mut keys = vec!["net.ipv4.conf.all.rp_filter".to_string()];
            keys.extend(dev.iter().map(|d| format!("net.ipv4.conf.{d}.rp_filter")));
            for key in keys {
                if let Some(v) = facts.sysctl(inode, &key) {
                    sysctls.insert(key, json!(v.trim()));
                }
            }
        }
        let mut evidence = obj(json!({"drops": group.len(), "netns": netns, "device": dev, "sysctls": sysctls}));
        let told = told(run, &group, &mut evidence);
        let summary = format!(
            "reverse-path filtering in {} dropped {}{}: the route back to the source leaves by another device; fix the routing or set rp_filter to 2 (loose) on that device",
            netns_words(netns, &group, facts),
            traffic_words(&group),
            dev.as_deref().map(|d| format!(" arriving on {d}")).unwrap_or_default()
        );
        out.push(told.finding("rp-filter-drop", Severity::Error, summary, evidence));
    }
}

fn neighbor_drops(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    let mut groups: BTreeMap<(Option<u32>, Option<String>), Vec<&Event>> = BTreeMap::new();
    for e in run.events {
        if run.reason(e).is_some_and(|r| NEIGH_REASONS.contains(&r)) {
            groups.entry((e.netns, e.ifname.clone())).or_default().push(e);
        }
    }
    for ((netns, dev), group) in groups {
        let reasons = distinct(&group, |d| d.reason.as_str());
        let mut evidence = obj(json!({"drops": group.len(), "reason": reasons.join(","), "netns": netns, "device": dev}));
        let told = told(run, &group, &mut evidence);
        let targets: BTreeSet<String> = group.iter().filter_map(|e| e.flow.dst.map(|a| a.to_string())).collect();
        let summary = format!(
            "{} could not resolve the link-layer address (ARP/ND got no answer) of {}{}: {} dropped; the host is down, not on that link, or an address overlaps another network",
            netns_words(netns, &group, facts),
            targets.into_iter().collect::<Vec<_>>().join(", "),
            dev.as_deref().map(|d| format!(" on {d}")).unwrap_or_default(),
            traffic_words(&group)
        );
        out.push(told.finding("neighbor-failed", Severity::Error, summary, evidence));
    }
}

/// The ephemeral port range of `netns` (`net.ipv4.ip_local_port_range`, which IPv6 sockets use
/// too): the ports the kernel gives clients.
fn client_ports(facts: &mut dyn Facts, netns: Option<u32>) -> Option<(u16, u16)> {
    let text = facts.sysctl(netns?, "net.ipv4.ip_local_port_range")?;
    let mut words = text.split_whitespace().map(|w| w.parse::<u16>().ok());
    Some((words.next()??, words.next()??))
}

/// A packet that found no socket.
fn is_no_socket(e: &Event) -> bool {
    drop_of(e).is_some_and(|d| d.reason == "NO_SOCKET")
}

/// Where each connection had a socket, and since when: (connection, end) -> the first event of
/// the run showing a socket at that end. A socket's retransmit, failed connect or reset has
/// the socket's end as its source; a NAT event shows the client end (`orig_src`) sent the first
/// packet; a drop other than NO_SOCKET shows its source sent it. A reset sent for a segment to
/// a closed port comes from no socket: the kernel sends it (`tcp_v4_send_reset`, the
/// `tcp_send_reset` tracepoint with no socket) just before it frees that segment with
/// NO_SOCKET (`tcp_v4_rcv`), so a reset whose next event of the connection is such a drop is
/// that answer and shows nothing. A socket's own reset (`tcp_send_active_reset`: SO_LINGER 0,
/// close with unread data; traced from 6.10) stands alone or is followed by the answer's.
fn sockets_seen(run: &Run<'_>) -> Sockets {
    let mut seen = Sockets::default();
    for (key, list) in run.by_conn.iter().enumerate() {
        let key = key as u32;
        for (i, e) in list.iter().enumerate() {
            let src = e.flow.src.map(|ip| (ip, e.flow.sport));
            let end = match &e.detail {
                Detail::Reset(t) if t.direction == Some(ResetDirection::Sent) && list.get(i + 1).is_some_and(|next| is_no_socket(next)) => None,
                Detail::Drop(_) if is_no_socket(e) => None,
                Detail::Nat(n) => n.orig_src.as_deref().and_then(parse_end),
                _ => src,
            };
            if let Some(end) = end {
                seen.entry((key, end)).or_insert(e.ts_unix_ns);
            }
        }
    }
    seen
}

/// [`sockets_seen`]: (connection key id, end) -> since when.
type Sockets = FastMap<(u32, End), i128>;

/// How long after a late packet its socket's own reset may be traced: `tcp_disconnect` unhashes
/// the socket (`tcp_set_state(CLOSE)`) before `tcp_send_active_reset`, and a segment handled on
/// another CPU in between finds no socket first (without this the busy-node lab raised
/// no-listener for such segments).
const CLOSE_RACE_NS: i128 = 1_000_000_000;

/// Why a packet that found no socket is routine: each sign that it belongs to a connection
/// that was, rather than one being opened (a packet may show several).
#[derive(Debug, Clone, Copy, Default)]
struct LateSigns {
    /// A TCP segment whose flags are no opening (not a SYN without ACK: data, ACK, FIN, RST,
    /// a SYN-ACK): it belongs to a connection that exists or existed at one of its ends.
    by_tcp_flags: bool,
    /// The run saw a socket at the very end the packet went to, before it came (or up to
    /// [`CLOSE_RACE_NS`] after): that socket has closed since.
    after_connection: bool,
    /// From a port outside the namespace's ephemeral range to one inside it: a server's reply
    /// to a client port.
    to_client_port: bool,
}

/// The signs that a packet that found no socket is late, and whether they make it late (None:
/// a missing server). A TCP segment with its flags read is judged by them alone: a SYN without
/// ACK opens a connection, so nothing listening there is a missing server even where a socket
/// was before (a server that went away); any other segment is late. Without flags (UDP, or
/// TCP from a recording or kernel path without them) the run's events and the port range tell.
fn late_signs(e: &Event, run: &Run<'_>, sockets: &Sockets, ports: &mut ClientPorts<'_>) -> Option<LateSigns> {
    let after_connection = match (run.conns.key_id(e), e.flow.dst) {
        (Some(key), Some(dst)) => sockets.get(&(key, (dst, e.flow.dport))).is_some_and(|&t| t < e.ts_unix_ns + CLOSE_RACE_NS),
        _ => false,
    };
    // Servers listen below the ephemeral range and the kernel picks client ports in it, so a
    // packet from outside it to inside it is a reply, even when the run did not see the
    // client's socket (it gave up before the run, or the kernel does not trace its reset).
    let to_client_port = ports.get(e.netns).is_some_and(|(lo, hi)| {
        let client = |p: Option<u16>| p.is_some_and(|p| (lo..=hi).contains(&p));
        client(e.flow.dport) && !client(e.flow.sport)
    });
    let signs = LateSigns { by_tcp_flags: e.flow.tcp_flags.is_some_and(|f| !f.opens_connection()), after_connection, to_client_port };
    let late = match e.flow.tcp_flags {
        Some(flags) => !flags.opens_connection(),
        None => after_connection || to_client_port,
    };
    late.then_some(signs)
}

/// The ephemeral port range per namespace, read once each.
struct ClientPorts<'f> {
    facts: &'f mut dyn Facts,
    read: HashMap<Option<u32>, Option<(u16, u16)>>,
}

impl ClientPorts<'_> {
    fn get(&mut self, netns: Option<u32>) -> Option<(u16, u16)> {
        let facts = &mut *self.facts;
        *self.read.entry(netns).or_insert_with(|| client_ports(facts, netns))
    }
}

/// The flags of a group's TCP segments, counted by name (`{"SYN": 2}`).
fn flag_counts(events: &[&Event]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for flags in events.iter().filter_map(|e| e.flow.tcp_flags) {
        *counts.entry(flags.name()).or_default() += 1;
    }
    counts
}

fn no_listener(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    let sockets = sockets_seen(run);
    let mut ports = ClientPorts { facts, read: HashMap::new() };
    // Per (address, protocol, port) nothing listens on: the packet's own destination (after
    // DNAT, the backend), and for a reset received while connecting to a Service address, the
    // backend DNAT sent the SYN to.
    #[expect(clippy::type_complexity, reason = "a local tally: (events, drops, resets) per destination")]
    let mut groups: BTreeMap<(IpAddr, Option<u8>, Option<u16>), (Vec<&Event>, u64, u64)> = BTreeMap::new();
    // Late packets per (client address, protocol), with their signs.
    type LateGroup<'a> = (Vec<&'a Event>, Vec<LateSigns>);
    let mut late: BTreeMap<(IpAddr, Option<u8>), LateGroup<'_>> = BTreeMap::new();
    for e in run.events {
        match &e.detail {
            // A DNS query that found no socket is dns-no-reply's: one problem, one finding.
            Detail::Drop(d) if d.reason == "NO_SOCKET" && dns_query_drop(e, &run.conns).is_none() => {
                let Some(dst) = e.flow.dst else { continue };
                if let Some(signs) = late_signs(e, run, &sockets, &mut ports) {
                    let g = late.entry((dst, e.flow.l4_proto)).or_default();
                    g.0.push(e);
                    g.1.push(signs);
                    continue;
                }
                let g = groups.entry((dst, e.flow.l4_proto, e.flow.dport)).or_default();
                g.0.push(e);
                g.1 += 1;
            }
            // A reset received while connecting: the peer refused the port.
            Detail::Reset(t) if t.direction == Some(ResetDirection::Received) && t.state == Some("SYN_SENT") && !is_dns(e) => {
                let nat = run.conns.key_of(e).and_then(|key| run.conns.nat(&key)).and_then(|v| v.backend_end);
                let Some((dst, dport)) = nat.or_else(|| e.flow.dst.map(|d| (d, e.flow.dport))) else { continue };
                let g = groups.entry((dst, e.flow.l4_proto, dport)).or_default();
                g.0.push(e);
                g.2 += 1;
            }
            _ => {}
        }
    }
    for ((dst, _, port), (group, drops, resets)) in groups {
        let mut evidence = obj(json!({"drops": drops, "resets": resets}));
        let flags = flag_counts(&group);
        if !flags.is_empty() {
            evidence.insert("tcp_flags".into(), json!(flags));
        }
        // Where the clients asked, when DNAT sent them here.
        let nat = run.nat_of_any(&group).filter(|v| v.backend_end == Some((dst, port))).cloned();
        if let Some(view) = &nat {
            nat_evidence(view, &mut evidence);
        }
        let told = told(run, &group, &mut evidence);
        let target = super::flows::end_text((dst, port));
        let pod = group
            .iter()
            .find_map(|e| e.dst_pod.clone())
            .or_else(|| nat.as_ref().and_then(|v| v.backend_pod.clone()))
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        let via = nat.as_ref().map(|v| format!(", the backend DNAT chose for {}", service_words(v))).unwrap_or_default();
        let proto = group.first().map(|e| e.flow.proto_name()).unwrap_or_default();
        let summary = format!(
            "nothing listens on {proto} {target}{pod}{via}: {drops} packets found no socket and {resets} connects were refused; check that the server runs and listens on that port and address",
        );
        out.push(told.finding("no-listener", Severity::Error, summary, evidence));
    }
    for ((dst, _), (group, signs)) in late {
        let count = |f: fn(&LateSigns) -> bool| signs.iter().filter(|s| f(s)).count();
        let mut evidence = obj(json!({
            "drops": group.len(),
            "by_tcp_flags": count(|s| s.by_tcp_flags),
            "after_connection": count(|s| s.after_connection),
            "to_client_port": count(|s| s.to_client_port),
        }));
        let flags = flag_counts(&group);
        if !flags.is_empty() {
            evidence.insert("tcp_flags".into(), json!(flags));
        }
        let told = told(run, &group, &mut evidence);
        let proto = group.first().map(|e| e.flow.proto_name()).unwrap_or_default();
        let pod = group.iter().find_map(|e| e.dst_pod.clone()).map(|p| format!(" ({p})")).unwrap_or_default();
        let summary = format!(
            "{} {proto} packets reached {dst}{pod} after the socket they were for had closed (late replies, or segments of connections that end had already closed or reset): routine, nothing to fix unless its clients time out",
            group.len()
        );
        out.push(told.finding("late-reply", Severity::Info, summary, evidence));
    }
}

/// What the MTU events of one connection add up to.
#[derive(Default)]
struct MtuStory<'a> {
    label: String,
    events: Vec<&'a Event>,
    sent: u64,
    received: u64,
    dropped: u64,
    too_big: u64,
    oversize: u64,
    mtu: Option<u32>,
    len: u32,
    device: Option<String>,
    dev_mtu: Option<u32>,
    /// The device a packet too big to forward arrived on (its namespace, index, name), from the
    /// PKT_TOO_BIG drop: the pod side, which an overlay's narrower tunnel is compared with
    /// (`device` is the narrow hop itself).
    arrived: Option<(Option<u32>, Option<u32>, String)>,
    /// Where the ICMP error was dropped (namespace inode, its pod) and why.
    dropped_at: Option<(Option<u32>, Option<String>, String)>,
}

/// Retransmits per connection.
fn retransmits_by_conn(run: &Run<'_>) -> Vec<u64> {
    let mut out = vec![0; run.conns.key_count()];
    for e in run.events {
        if matches!(e.detail, Detail::Retransmit(_))
            && let Some(id) = run.conns.key_id(e)
        {
            out[id as usize] += 1;
        }
    }
    out
}

/// Frag-needed sent this many times for one connection, none received, while it retransmits:
/// the sender is not learning the path MTU.
const BLACKHOLE_REPEATS: u64 = 3;

/// The label of `e`'s connection (made only when a connection is first met).
fn label_of(run: &Run<'_>, e: &Event) -> String {
    run.conns.label(e).unwrap_or_default()
}

fn mtu_blackholes(run: &Run<'_>, out: &mut Vec<Finding>) {
    let mut stories: BTreeMap<ConnKey, MtuStory<'_>> = BTreeMap::new();
    for e in run.events {
        let Detail::Mtu(m) = &e.detail else { continue };
        let Some(key) = run.conns.key_of(e) else { continue };
        let s = stories.entry(key).or_insert_with(|| MtuStory { label: label_of(run, e), ..MtuStory::default() });
        s.events.push(e);
        if m.event == MtuEventKind::FragNeededDropped && s.dropped_at.is_none() {
            s.dropped_at = Some((e.netns, e.netns_pod.clone(), m.reason.clone().unwrap_or_default()));
        }
        match m.event {
            MtuEventKind::FragNeededSent => s.sent += 1,
            MtuEventKind::FragNeededReceived => s.received += 1,
            MtuEventKind::FragNeededDropped => s.dropped += 1,
            MtuEventKind::TooBigDrop => s.too_big += 1,
            MtuEventKind::Oversize => s.oversize += 1,
            MtuEventKind::Unknown => {}
        }
        if m.mtu.is_some() {
            s.mtu = s.mtu.min(m.mtu).or(m.mtu);
        }
        if !matches!(m.event, MtuEventKind::FragNeededDropped | MtuEventKind::FragNeededReceived) {
            s.len = s.len.max(m.len);
            if e.ifname.is_some() && s.device.is_none() {
                s.device = e.ifname.clone();
                s.dev_mtu = m.dev_mtu;
            }
        }
    }
    let retransmits = retransmits_by_conn(run);
    for (key, mut s) in stories {
        let id = run.conns.id_of_key(&key);
        s.arrived = id.map(|id| run.conn_events(id)).into_iter().flatten().find_map(|e| match &e.detail {
            Detail::Drop(d) if d.reason == "PKT_TOO_BIG" => e.ifname.clone().map(|dev| (e.netns, e.ifindex, dev)),
            _ => None,
        });
        let retrans = id.map_or(0, |id| retransmits[id as usize]);
        let too_big = s.sent + s.too_big + s.oversize;
        let unlearned = too_big >= BLACKHOLE_REPEATS && s.received == 0 && retrans > 0;
        if s.dropped == 0 && !unlearned {
            continue;
        }
        let mut evidence = obj(json!({
            "mtu": s.mtu, "len": s.len, "device": s.device, "dev_mtu": s.dev_mtu,
            "frag_needed_sent": s.sent, "frag_needed_received": s.received, "frag_needed_dropped": s.dropped,
            "too_big_drops": s.too_big, "oversize": s.oversize, "retransmits": retrans,
            "icmp_dropped_netns": s.dropped_at.as_ref().and_then(|(netns, ..)| *netns),
            "icmp_dropped_pod": s.dropped_at.as_ref().and_then(|(_, pod, _)| pod.clone()),
            "arrived_on": s.arrived.as_ref().map(|(netns, ifindex, dev)| json!({"netns": netns, "ifindex": ifindex, "device": dev})),
        }));
        let mut told = told(run, &s.events, &mut evidence);
        let mtu = s.mtu.map(|m| format!("MTU {m}")).unwrap_or_else(|| "a smaller MTU".into());
        let why = if s.dropped > 0 {
            let at = match &s.dropped_at {
                Some((_, Some(pod), reason)) => format!(" in pod {pod}'s network namespace ({reason})"),
                Some((Some(netns), None, reason)) => format!(" in network namespace {netns} ({reason})"),
                _ => String::new(),
            };
            format!("the ICMP error that would tell the sender was dropped {} times on the way back{at}", s.dropped)
        } else {
            "no ICMP error reached the sender (none was received on a traced device) while it kept retransmitting".to_string()
        };
        let summary = format!(
            "large packets of {} ({} bytes) do not fit a hop with {mtu}{}: {why}, so the sender never shrinks them and the transfer hangs; let ICMP frag-needed / packet-too-big through, or lower the MTU (or clamp the TCP MSS) on the pod side",
            s.label,
            s.len,
            s.device.as_deref().map(|d| format!(" (device {d})")).unwrap_or_default()
        );
        told.flows = BTreeSet::from([s.label]);
        out.push(told.finding("mtu-blackhole", Severity::Error, summary, evidence));
    }
}

fn nat_of(e: &Event) -> Option<&NatDetail> {
    match &e.detail {
        Detail::Nat(n) => Some(n),
        _ => None,
    }
}

fn nat_no_reply(run: &Run<'_>, info: &RunInfo, out: &mut Vec<Finding>) {
    // A connection marked no_reply that got its reply later is fine after all.
    let replied: HashSet<u64> = run.events.iter().filter_map(nat_of).filter(|n| n.reply_seen).map(|n| n.conn).collect();
    // A connection an error above told (a rule's drop at the backend, nothing listening there)
    // is told there, with the Service and the backend: one problem, one finding.
    let told_already = run.told_by_errors(out);
    let mut groups: BTreeMap<Option<String>, Vec<&Event>> = BTreeMap::new();
    for e in run.events {
        // DNS queries are dns-no-reply's, which names the backend too: one finding, not two.
        if let Some(n) = nat_of(e)
            && n.state == NatState::NoReply
            && !replied.contains(&n.conn)
            && !is_dns(e)
            && !run.is_told(&told_already, e)
        {
            groups.entry(n.backend.clone()).or_default().push(e);
        }
    }
    for (backend, group) in groups {
        let first = group.first().and_then(|e| nat_of(e));
        let backend_pod = first.and_then(|n| n.backend_pod.clone());
        let service = first.and_then(|n| n.service.clone());
        let address = first.and_then(|n| n.orig_dst.clone());
        let mut evidence = obj(json!({
            "connections": group.len(), "backend": backend, "backend_pod": backend_pod,
            "service": service, "address": address, "reply_timeout_s": info.reply_timeout.as_secs_f64(),
        }));
        let told = told(run, &group, &mut evidence);
        let target = match (&service, &address) {
            (Some(s), Some(a)) => format!("Service {s} ({a})"),
            (None, Some(a)) => a.clone(),
            _ => "a NATed address".into(),
        };
        let summary = format!(
            "{} connections to {target} were sent to backend {}{} which never replied within {:?}: check that backend (is it ready? does its network path back work?) or remove it from the Service's endpoints",
            group.len(),
            backend.as_deref().unwrap_or("-"),
            backend_pod.as_deref().map(|p| format!(" ({p})")).unwrap_or_default(),
            info.reply_timeout
        );
        out.push(told.finding("nat-no-reply", Severity::Error, summary, evidence));
    }
}

/// The Service address an event was headed for (its own destination), if it is one.
fn service_address(e: &Event, facts: &dyn Facts) -> Option<(String, String)> {
    let (dst, port, proto) = (e.flow.dst?, e.flow.dport?, e.flow.l4_proto?);
    let service = facts.service(dst, port, proto)?;
    Some((service, e.flow.dst_endpoint()?))
}

fn service_not_translated(run: &Run<'_>, info: &RunInfo, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    let events = run.events;
    if !facts.knows_services() {
        return;
    }
    let translated: HashSet<String> =
        events.iter().filter_map(nat_of).filter(|n| n.nat != NatKind::Snat).filter_map(|n| n.orig_dst.clone()).collect();
    #[derive(Default)]
    struct Seen<'a> {
        events: Vec<&'a Event>,
        retransmits: u64,
        connect_fails: u64,
        drops: u64,
    }
    let mut groups: BTreeMap<(String, String), Seen<'_>> = BTreeMap::new();
    for e in events {
        let counts = match &e.detail {
            Detail::Retransmit(t) if t.state == Some("SYN_SENT") => (1, 0, 0),
            Detail::ConnectFail(t) if unanswered(t) => (0, 1, 0),
            Detail::Drop(_) => (0, 0, 1),
            _ => continue,
        };
        let Some((service, address)) = service_address(e, facts) else { continue };
        if translated.contains(&address) {
            continue;
        }
        let g = groups.entry((service, address)).or_default();
        g.events.push(e);
        g.retransmits += counts.0;
        g.connect_fails += counts.1;
        g.drops += counts.2;
    }
    for ((service, address), g) in groups {
        let mut evidence = obj(json!({
            "service": service, "address": address, "retransmits": g.retransmits,
            "connect_fails": g.connect_fails, "drops": g.drops, "dnat_seen": 0,
        }));
        let told = told(run, &g.events, &mut evidence);
        let counts = format!("{} SYN retransmits, {} failed connects, {} drops, no DNAT seen", g.retransmits, g.connect_fails, g.drops);
        // Where NAT was checked only as packets left the node's pod veths and tunnels, a DNAT to
        // a backend reached by the uplink (another node, no overlay) looks the same as none: the
        // failure is as certain, its cause is not.
        let summary = if info.nat_in_classifiers {
            evidence.insert("nat_hook".into(), json!("tc"));
            format!(
                "traffic to Service {service} ({address}) got no answer and no DNAT was seen ({counts}); NAT was checked only where packets leave this node's pod veths and tunnels (--nat-hook tc), so a translation to a backend reached by the uplink is not seen: run diagnose with --nat-hook xmit to tell missing Service rules from a silent backend"
            )
        } else {
            format!(
                "traffic to Service {service} ({address}) was never translated to a backend ({counts}): this node's Service rules are missing; check kube-proxy (or the CNI's service implementation) on this node"
            )
        };
        out.push(told.finding("service-not-translated", Severity::Error, summary, evidence));
    }
}

fn is_dns(e: &Event) -> bool {
    let dns_port = |port: Option<u16>| port == Some(53);
    match &e.detail {
        Detail::Nat(n) => n.orig_dst.as_deref().and_then(super::flows::parse_end).is_some_and(|(_, p)| dns_port(p)),
        _ => dns_port(e.flow.dport) && matches!(e.flow.l4_proto, Some(6 | 17)),
    }
}

/// The DNS server (`IP:53` the client asked, a Service address for a NATed query) a drop of a
/// query was headed for. The connection's original direction says it, not the drop's own
/// destination: after DNAT that is the backend, and the client's question was to the Service.
/// A drop going back to the client (a reply, a late one to a closed port) is not a lost query.
fn dns_query_drop(e: &Event, conns: &EventConns<'_>) -> Option<String> {
    if !matches!(e.flow.l4_proto, Some(6 | 17)) || drop_of(e).is_none() {
        return None;
    }
    // The label's ends compared as ends (the text of an end is one-to-one with it).
    let c = conns.conn(e)?;
    let to_client = e.flow.dst.is_some_and(|d| (d, e.flow.dport) == c.client);
    (c.server.1 == Some(53) && !to_client).then(|| super::flows::end_text(c.server))
}

/// Drops of DNS queries in one namespace: their reasons, and the IP version, protocol and
/// destination port the rules there are matched on.
type DroppedAt = (BTreeSet<String>, Option<bool>, Option<u8>, Option<u16>);

fn dns_no_reply(run: &Run<'_>, reply_timeout: Duration, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    #[derive(Default)]
    struct Server<'a> {
        events: Vec<&'a Event>,
        queries: BTreeSet<ConnKey>,
        no_reply: u64,
        drops: u64,
        retransmits: u64,
        /// TCP connects the server's end refused (a reset in SYN_SENT).
        refused: u64,
        /// NAT backends the unanswered queries were sent to, with their pods.
        backends: BTreeMap<String, Option<String>>,
        service: Option<String>,
        /// Where queries were dropped: (namespace, its pod) -> what was dropped there.
        dropped_in: BTreeMap<(Option<u32>, Option<String>), DroppedAt>,
    }
    let (events, conns) = (run.events, &run.conns);
    let replied: HashSet<u64> = events.iter().filter_map(nat_of).filter(|n| n.reply_seen).map(|n| n.conn).collect();
    // Queries lost for a reason an error above told (no route, ARP, conntrack) are told there.
    let told_already = run.told_by_errors(out);
    let mut servers: BTreeMap<String, Server<'_>> = BTreeMap::new();
    for e in events {
        if run.is_told(&told_already, e) {
            continue;
        }
        let (server, counts) = match &e.detail {
            Detail::Nat(n) if is_dns(e) && n.state == NatState::NoReply && !replied.contains(&n.conn) => (n.orig_dst.clone(), (1, 0, 0, 0)),
            Detail::Drop(_) => (dns_query_drop(e, conns), (0, 1, 0, 0)),
            Detail::Retransmit(t) if is_dns(e) && t.state == Some("SYN_SENT") => (e.flow.dst_endpoint(), (0, 0, 1, 0)),
            Detail::ConnectFail(t) if is_dns(e) && unanswered(t) => (e.flow.dst_endpoint(), (0, 0, 1, 0)),
            Detail::Reset(t) if is_dns(e) && t.state == Some("SYN_SENT") && t.direction == Some(ResetDirection::Received) => {
                (e.flow.dst_endpoint(), (0, 0, 0, 1))
            }
            _ => continue,
        };
        let Some(server) = server else { continue };
        let s = servers.entry(server).or_default();
        if let Some(n) = nat_of(e) {
            if let Some(backend) = &n.backend {
                s.backends.insert(backend.clone(), n.backend_pod.clone());
            }
            s.service = s.service.take().or_else(|| n.service.clone());
        }
        if let Some(d) = drop_of(e) {
            let at = s
                .dropped_in
                .entry((e.netns, e.netns_pod.clone()))
                .or_insert_with(|| (BTreeSet::new(), e.flow.dst.map(|ip| ip.is_ipv6()), e.flow.l4_proto, e.flow.dport));
            at.0.insert(d.reason.clone());
        }
        s.queries.extend(conns.key_of(e));
        s.events.push(e);
        s.no_reply += counts.0;
        s.drops += counts.1;
        s.retransmits += counts.2;
        s.refused += counts.3;
    }
    for (server, s) in servers {
        // Where the queries were lost, and the rules there that may have dropped them (as
        // netfilter-drop tells them: DNS drops are told here only, once).
        let mut places = Vec::new();
        let mut rules = NamedRules::default();
        for ((netns, pod), (reasons, ipv6, proto, dport)) in &s.dropped_in {
            let mut place = match (pod, netns) {
                (Some(pod), _) => format!("pod {pod}'s network namespace"),
                (None, Some(inode)) => match facts.netns_name(*inode) {
                    Some(name) => format!("network namespace {name} ({inode})"),
                    None => format!("network namespace {inode}"),
                },
                (None, None) => "an unknown network namespace".into(),
            };
            let said: Vec<String> = reasons
                .iter()
                .map(|r| {
                    // DNS is UDP or TCP.
                    let proto = if *proto == Some(6) { "tcp" } else { "udp" };
                    if r == "NO_SOCKET" { format!("{r}: nothing listens on {proto}/{} there", dport.unwrap_or(0)) } else { r.clone() }
                })
                .collect();
            place.push_str(&format!(" ({})", said.join(", ")));
            places.push(place);
            if reasons.contains("NETFILTER_DROP")
                && let Some(inode) = netns
            {
                rules.add(facts.dropping_rules(*inode), *ipv6, *proto, *dport);
            }
        }
        let mut evidence = obj(json!({
            "queries": s.queries.len(), "server": server, "no_reply": s.no_reply,
            "drops": s.drops, "retransmits": s.retransmits, "refused": s.refused, "service": s.service,
            "backends": s.backends.keys().collect::<Vec<_>>(),
            "backend_pods": s.backends.values().flatten().collect::<Vec<_>>(),
            "dropped_in": places,
        }));
        rules.write(&mut evidence);
        // The queries as the clients sent them (to the Service address), not as each
        // namespace saw them after DNAT: one query is one flow.
        let told = told(run, &s.events, &mut evidence);
        let mut causes = Vec::new();
        let sent_to: Vec<String> = s.backends.iter().map(|(b, pod)| pod.as_ref().map_or_else(|| b.clone(), |p| format!("{b} ({p})"))).collect();
        if s.no_reply > 0 {
            if sent_to.is_empty() {
                causes.push(format!("{} got no reply", s.no_reply));
            } else {
                causes.push(format!("{} sent to backend {} got no reply within {:?}", s.no_reply, sent_to.join(", "), reply_timeout));
            }
        }
        if s.drops > 0 {
            let mut dropped = format!("{} were dropped in {}", s.drops, places.join(" and "));
            if let Some(rule) = rules.rules.first() {
                dropped.push_str(&format!(" by the rule {}", rule.text));
            }
            if !rules.unreadable.is_empty() {
                dropped.push_str(&format!(" (some firewall rules there could not be read: {})", rules.unreadable.join("; ")));
            }
            causes.push(dropped);
        }
        if s.retransmits > 0 {
            causes.push(format!("{} TCP connects were retransmitted or failed", s.retransmits));
        }
        if s.refused > 0 {
            causes.push(format!("{} TCP connects were refused", s.refused));
        }
        let server_words = match &s.service {
            Some(svc) => format!("Service {svc} ({server})"),
            None => server.clone(),
        };
        let summary = format!(
            "DNS queries to {server_words} are not answered ({}): name resolution in these pods times out; check the DNS server (kube-dns/CoreDNS pods) and the path to it",
            causes.join("; ")
        );
        out.push(told.finding("dns-no-reply", Severity::Error, summary, evidence));
    }
}

fn socket_buffer_drops(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    for ((netns, ..), group) in group_drops(run.events, |e| run.reason(e).is_some_and(|r| SOCKET_BUFFER_REASONS.contains(&r))) {
        let reasons = distinct(&group, |d| d.reason.as_str());
        let mut evidence = obj(json!({"drops": group.len(), "reason": reasons.join(","), "netns": netns}));
        let told = told(run, &group, &mut evidence);
        let summary = format!(
            "a receiving socket in {} could not keep up: {} dropped because its queue was full ({}); the application reads too slowly, or its receive buffer (SO_RCVBUF, net.core.rmem_*) is too small",
            netns_words(netns, &group, facts),
            traffic_words(&group),
            reasons.join(", ")
        );
        out.push(told.finding("socket-buffer-drop", Severity::Warning, summary, evidence));
    }
}

/// Connects that failed on this node before their SYN left (the kernel counted no segment
/// sent): no answer was missing, so they are no retransmit storm or no-reply; they are told by
/// the socket's namespace, for what it says about the node (no source port to be had).
fn connects_not_sent(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    let mut by_netns: BTreeMap<Option<u32>, Vec<&Event>> = BTreeMap::new();
    for e in run.events {
        if let Detail::ConnectFail(t) = &e.detail
            && t.never_sent()
        {
            by_netns.entry(e.netns).or_default().push(e);
        }
    }
    for (netns, group) in by_netns {
        let destinations: BTreeSet<String> = group.iter().filter_map(|e| e.flow.dst_endpoint()).collect();
        let mut evidence = obj(json!({"connect_fails": group.len(), "destinations": destinations, "netns": netns}));
        let told = told(run, &group, &mut evidence);
        let summary = format!(
            "{} connect{} from {} failed on this node before a SYN was sent: the kernel had no source port (or route) for {} (EADDRNOTAVAIL: the address and port still in use by an earlier connection to the same destination, or the ephemeral port range used up); nothing was lost on the network",
            group.len(),
            if group.len() == 1 { "" } else { "s" },
            netns_words(netns, &group, facts),
            if destinations.len() == 1 { "it" } else { "them" },
        );
        out.push(told.finding("connect-not-sent", Severity::Warning, summary, evidence));
    }
}

/// Whether a connect_fail is evidence of a SYN that got no answer: every rule that counts failed
/// connects as loss asks this. One that failed before its SYN left (the kernel counted none) is
/// evidence of nothing lost on the network; [`connects_not_sent`] tells those.
fn unanswered(t: &TcpDetail) -> bool {
    !t.never_sent()
}

/// Drops that have a finding of their own: a connection with one of them is explained by it.
/// Their reasons are [`Run`]'s `named` (NETFILTER_DROP, IP_RPFILTER, NO_SOCKET, PKT_TOO_BIG,
/// and the route, neighbour and socket buffer reasons).
fn drop_has_finding(run: &Run<'_>, e: &Event, d: &DropDetail) -> bool {
    d.conntrack.is_some() || run.reason(e).is_some()
}

fn retransmit_storms(run: &Run<'_>, out: &mut Vec<Finding>) {
    // Connections an error told already explain their retransmits: no reply came, for a reason
    // told (nat-no-reply, no-listener, dns-no-reply, mtu-blackhole, a drop's finding, ...).
    let explained = run.told_by_errors(out);
    struct Conn<'a> {
        /// Its first event: the connection is named as that event's (when it has a finding).
        first: &'a Event,
        events: Vec<&'a Event>,
        retransmits: u64,
        connect_fails: u64,
        states: BTreeSet<&'static str>,
        /// Drops of this connection that have findings of their own.
        drops: u64,
    }
    // By key id; told in key order.
    let mut by_conn: Vec<Option<Conn<'_>>> = Vec::new();
    by_conn.resize_with(run.conns.key_count(), || None);
    for e in run.events {
        let Some(id) = run.conns.key_id(e) else { continue };
        let c = by_conn[id as usize].get_or_insert_with(|| Conn {
            first: e,
            events: Vec::new(),
            retransmits: 0,
            connect_fails: 0,
            states: BTreeSet::new(),
            drops: 0,
        });
        match &e.detail {
            Detail::Retransmit(t) => {
                c.retransmits += 1;
                c.states.extend(t.state);
                c.events.push(e);
            }
            Detail::ConnectFail(t) if unanswered(t) => {
                c.connect_fails += 1;
                c.states.extend(t.state);
                c.events.push(e);
            }
            Detail::Drop(d) if drop_has_finding(run, e, d) => c.drops += 1,
            _ => {}
        }
    }
    let mut ids: Vec<u32> = (0..by_conn.len() as u32).collect();
    ids.sort_by(|a, b| run.conns.key(*a).cmp(run.conns.key(*b)));
    for id in ids {
        let Some(c) = by_conn[id as usize].take() else { continue };
        let quiet = c.retransmits < STORM_RETRANSMITS && c.connect_fails == 0;
        if quiet || explained.0[id as usize] || c.drops > 0 {
            continue;
        }
        let label = label_of(run, c.first);
        let mut evidence = obj(json!({"retransmits": c.retransmits, "connect_fails": c.connect_fails, "states": c.states}));
        let mut told = told(run, &c.events, &mut evidence);
        let connecting = c.states.contains("SYN_SENT");
        let seen_drops = "; no drop on this node explains it, so packets (or the replies) are lost beyond it: check the path back to this node (tunnel source address, firewalls)";
        let summary = if connecting {
            format!(
                "connects {} got no answer: SYN retransmitted {} times{}{seen_drops}",
                label,
                c.retransmits,
                if c.connect_fails > 0 { format!(", {} gave up", c.connect_fails) } else { String::new() }
            )
        } else {
            format!("{label} retransmitted {} times in this run{seen_drops}", c.retransmits)
        };
        let severity = if c.connect_fails > 0 { Severity::Error } else { Severity::Warning };
        told.flows = BTreeSet::from([label]);
        out.push(told.finding("retransmit-storm", severity, summary, evidence));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::Flow,
        kernel::firewall::Family,
        probes::{
            drops::detail::{ConntrackCause, ConntrackDrop, PacketCt},
            mtu::detail::{MtuDetail, MtuHook},
            nat::detail::test_dnat_event,
            tcp::detail::TcpDetail,
        },
    };

    #[derive(Default)]
    struct FakeFacts {
        sysctls: HashMap<(u32, String), String>,
        services: HashMap<(IpAddr, u16, u8), String>,
    }

    impl Facts for FakeFacts {
        fn sysctl(&mut self, netns: u32, key: &str) -> Option<String> {
            self.sysctls.get(&(netns, key.to_string())).cloned()
        }
        fn netns_name(&mut self, netns: u32) -> Option<String> {
            (netns == 7).then(|| "router".into())
        }
        fn service(&self, ip: IpAddr, port: u16, proto: u8) -> Option<String> {
            self.services.get(&(ip, port, proto)).cloned()
        }
        fn knows_services(&self) -> bool {
            !self.services.is_empty()
        }
        fn dropping_rules(&mut self, netns: u32) -> Rc<NamespaceRules> {
            let rule = |text: &str, packets, proto, dport| Rule {
                family: Family::Ipv4,
                table: "filter".into(),
                chain: "INPUT".into(),
                text: text.into(),
                packets,
                proto,
                dport,
            };
            Rc::new(match netns {
                9 => NamespaceRules { rules: vec![rule(HTTP_RULE, Some(2), Some(6), Some((80, 80)))], unreadable: Vec::new() },
                // Rules that do not fit the drops of the tests (other protocol, port, family,
                // no packets), one that counted more and one without a counter, and a source
                // that could not be read.
                10 => NamespaceRules {
                    rules: vec![
                        rule("udp 80", Some(50), Some(17), Some((80, 80))),
                        rule("tcp 81", Some(50), Some(6), Some((81, 81))),
                        Rule { family: Family::Ipv6, ..rule("ip6 tcp 80", Some(50), Some(6), Some((80, 80))) },
                        rule("tcp 80, nothing counted", Some(0), Some(6), Some((80, 80))),
                        rule("no counter", None, None, None),
                        rule("policy", Some(3), None, None),
                        rule("tcp 1-1024", Some(40), Some(6), Some((1, 1024))),
                    ],
                    unreadable: vec![
                        anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EPERM))
                            .context("the kernel refused the rule dump")
                            .context("nftables"),
                    ],
                },
                11 => NamespaceRules { rules: vec![rule("no counter", None, None, None)], unreadable: Vec::new() },
                _ => NamespaceRules::default(),
            })
        }
    }

    const HTTP_RULE: &str = "filter/INPUT: -A INPUT -p tcp -m tcp --dport 80 -j DROP (2 packets)";

    fn flow(src: &str, sport: u16, dst: &str, dport: u16, proto: u8) -> Flow {
        Flow { src: src.parse().ok(), dst: dst.parse().ok(), sport: Some(sport), dport: Some(dport), l4_proto: Some(proto), ..Flow::default() }
    }

    fn drop_event(f: Flow, reason: &str, netns: u32, ts: i128) -> Event {
        let mut e = test_dnat_event();
        e.ts_unix_ns = ts;
        e.flow = f;
        e.netns = Some(netns);
        e.ifname = Some("ra".into());
        e.detail = Detail::Drop(DropDetail {
            reason: reason.into(),
            reason_code: 0,
            location: "ip_error+0x94".into(),
            len: 60,
            packet_ct: PacketCt::Unread,
            conntrack: None,
        });
        e
    }

    fn tcp(f: Flow, state: &'static str, fail: bool, ts: i128) -> Event {
        let mut e = test_dnat_event();
        e.ts_unix_ns = ts;
        e.flow = f;
        let d = TcpDetail { state: Some(state), count: 1, direction: None, duration_ms: None, syns_sent: None };
        e.detail = if fail { Detail::ConnectFail(d) } else { Detail::Retransmit(d) };
        e
    }

    fn run(events: &[Event], facts: &mut FakeFacts) -> Vec<Finding> {
        diagnose(events, &RunInfo { reply_timeout: Duration::from_secs(3), ..RunInfo::default() }, facts)
    }

    fn codes(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.code).collect()
    }

    #[test]
    fn netfilter_drops_name_the_namespace_pods_and_flow() {
        let mut e = drop_event(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "NETFILTER_DROP", 9, 1);
        e.src_pod = Some("shop/web-0".into());
        e.dst_pod = Some("shop/db-0".into());
        e.netns_pod = Some("shop/db-0".into());
        let retrans: Vec<Event> = (0..6).map(|i| tcp(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "SYN_SENT", false, 2 + i)).collect();
        let mut events = vec![e.clone(), e];
        events.extend(retrans);
        let f = run(&events, &mut FakeFacts::default());
        assert_eq!(codes(&f), ["netfilter-drop"], "the retransmits are explained by the drops: {f:#?}");
        assert_eq!(f[0].severity, Severity::Error);
        assert_eq!(f[0].pods, BTreeSet::from(["shop/db-0".to_string(), "shop/web-0".to_string()]));
        assert_eq!(f[0].flows, BTreeSet::from(["10.0.0.1:4000 -> 10.0.0.2:80".to_string()]));
        assert_eq!(f[0].evidence["drops"], 2);
        assert!(f[0].summary.contains("pod shop/db-0's network namespace"), "{}", f[0].summary);
        assert!(f[0].summary.contains(&format!("the rule counting drops there: {HTTP_RULE}")), "{}", f[0].summary);
        assert_eq!(f[0].evidence["rules"], json!([HTTP_RULE]));
        assert!(f[0].evidence.get("rules_unreadable").is_none(), "every source was read: {:?}", f[0].evidence);
    }

    #[test]
    fn drops_over_the_rate_budget_count_in_the_finding_of_their_place_once() {
        let e = drop_event(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "NETFILTER_DROP", 9, 1);
        let other = drop_event(flow("10.0.0.3", 4000, "10.0.0.2", 81, 6), "NETFILTER_DROP", 9, 2);
        let place = |reason: &str, location: &str, netns, count| CountedPlace { reason: reason.into(), location: location.into(), netns, count };
        let counted = vec![
            place("NETFILTER_DROP", "ip_error+0x94", Some(9), 500),
            place("NETFILTER_DROP", "ip_error+0x94", Some(10), 7),
            place("NETFILTER_DROP", "nft_do_chain+0x10", Some(9), 3),
            place("NO_SOCKET", "ip_error+0x94", Some(9), 11),
        ];
        let info = RunInfo { reply_timeout: Duration::from_secs(3), counted, ..RunInfo::default() };
        let f = diagnose(&[e.clone(), e, other], &info, &mut FakeFacts::default());
        assert_eq!(codes(&f), ["netfilter-drop", "netfilter-drop"], "{f:#?}");
        // The first finding of that reason, namespace and location takes the place's count;
        // other namespaces, locations and reasons are not its.
        assert_eq!((f[0].evidence["drops"].clone(), f[0].evidence["counted"].clone()), (json!(502), json!(500)), "{:?}", f[0].evidence);
        assert!(f[0].summary.ends_with("(500 more such drops over --max-rate were counted in the kernel, without their flows)"), "{}", f[0].summary);
        assert_eq!(f[1].evidence["drops"], json!(1), "one place, one finding: {:?}", f[1].evidence);
        assert!(f[1].evidence.get("counted").is_none());
    }

    #[test]
    fn only_rules_that_fit_the_drops_are_named_most_packets_first_and_unreadable_sources_are_said() {
        let e = drop_event(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "NETFILTER_DROP", 10, 1);
        let f = run(&[e], &mut FakeFacts::default());
        assert_eq!(codes(&f), ["netfilter-drop"], "{f:#?}");
        assert_eq!(f[0].evidence["rules"], json!(["tcp 1-1024", "policy", "no counter"]), "{:?}", f[0].evidence);
        let unreadable = "nftables: the kernel refused the rule dump: Operation not permitted (os error 1)";
        assert_eq!(f[0].evidence["rules_unreadable"], json!([unreadable]));
        assert!(f[0].summary.contains("the rule counting drops there: tcp 1-1024 (and 2 more, see evidence)"), "{}", f[0].summary);
        assert!(
            f[0].summary.contains(&format!("some firewall rules there could not be read, so the rule may be one tracer cannot name ({unreadable})")),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn a_rule_without_a_counter_is_named_as_one_that_may_drop() {
        let e = drop_event(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "NETFILTER_DROP", 11, 1);
        let f = run(&[e], &mut FakeFacts::default());
        assert!(f[0].summary.contains("a rule there that may drop them (it has no counter): no counter"), "{}", f[0].summary);
    }

    #[test]
    fn an_error_that_repeats_its_cause_says_it_once() {
        let inner = std::io::Error::from_raw_os_error(libc::EPERM);
        let outer = std::io::Error::other(crate::kernel::netns::NetnsError::Enter { path: "/proc/1/ns/net".into(), source: inner });
        let text = error_text(&anyhow::Error::new(outer).context("every source"));
        assert_eq!(text, "every source: entering network namespace /proc/1/ns/net: Operation not permitted (os error 1)");
    }

    #[test]
    fn forwarding_off_is_told_from_a_missing_route_by_the_namespace_sysctl() {
        let mut facts = FakeFacts::default();
        facts.sysctls.insert((7, "net.ipv4.ip_forward".into()), "0".into());
        facts.sysctls.insert((8, "net.ipv4.ip_forward".into()), "1".into());
        let off = drop_event(flow("10.0.0.1", 4000, "10.0.1.1", 80, 6), "IP_INADDRERRORS", 7, 1);
        let noroute = drop_event(flow("10.0.0.1", 4001, "10.9.0.1", 80, 6), "IP_INNOROUTES", 8, 2);
        let f = run(&[off, noroute], &mut facts);
        let fwd = f.iter().find(|f| f.code == "ip-forward-disabled").expect("ip-forward-disabled");
        assert_eq!(fwd.evidence["sysctls"]["net.ipv4.ip_forward"], "0");
        assert!(fwd.summary.contains("network namespace router (7)"), "{}", fwd.summary);
        let nr = f.iter().find(|f| f.code == "no-route").expect("no-route");
        assert_eq!(nr.flows, BTreeSet::from(["10.0.0.1:4001 -> 10.9.0.1:80".to_string()]));
        assert_eq!(f.len(), 2, "{f:#?}");
    }

    fn nat_event(conn: u64, state: NatState, reply_seen: bool, ts: i128) -> Event {
        let mut e = test_dnat_event();
        e.ts_unix_ns = ts;
        if let Detail::Nat(n) = &mut e.detail {
            n.conn = conn;
            n.state = state;
            n.reply_seen = reply_seen;
            n.backend_pod = Some("kube-system/coredns-1".into());
            n.service = Some("kube-system/kube-dns".into());
        }
        e
    }

    #[test]
    fn a_backend_that_never_replies_is_named_and_a_late_reply_clears_it() {
        let f = run(&[nat_event(1, NatState::New, false, 1), nat_event(1, NatState::NoReply, false, 2)], &mut FakeFacts::default());
        assert_eq!(codes(&f), ["dns-no-reply"], "a DNS query is told once, as DNS: {f:#?}");
        let dns = &f[0];
        assert_eq!(dns.evidence["backend_pods"][0], "kube-system/coredns-1");
        assert_eq!(dns.evidence["service"], "kube-system/kube-dns");
        assert!(dns.pods.contains("kube-system/coredns-1"));
        assert_eq!(dns.flows, BTreeSet::from(["10.244.1.7:40000 -> 10.96.0.10:53".to_string()]));
        assert!(dns.summary.contains("sent to backend 10.244.2.9:53 (kube-system/coredns-1) got no reply within 3s"), "{}", dns.summary);
        // Not DNS: the backend is named by nat-no-reply.
        let mut web: Vec<Event> = [nat_event(2, NatState::New, false, 1), nat_event(2, NatState::NoReply, false, 2)].into();
        for e in &mut web {
            if let Detail::Nat(n) = &mut e.detail {
                n.orig_dst = Some("10.96.0.10:80".into());
            }
        }
        let f = run(&web, &mut FakeFacts::default());
        assert_eq!(codes(&f), ["nat-no-reply"], "{f:#?}");
        assert_eq!(f[0].evidence["backend_pod"], "kube-system/coredns-1");
        assert_eq!(f[0].flows, BTreeSet::from(["10.244.1.7:40000 -> 10.96.0.10:80".to_string()]));
        let late = run(
            &[nat_event(1, NatState::New, false, 1), nat_event(1, NatState::NoReply, false, 2), nat_event(1, NatState::Reply, true, 3)],
            &mut FakeFacts::default(),
        );
        assert!(late.is_empty(), "{late:#?}");
    }

    #[test]
    fn traffic_to_a_service_address_without_dnat_is_not_translated_not_unroutable() {
        let mut facts = FakeFacts::default();
        facts.services.insert(("10.96.0.20".parse().unwrap(), 80, 6), "shop/web".into());
        let to_svc = flow("10.244.1.7", 4000, "10.96.0.20", 80, 6);
        let events = vec![drop_event(to_svc.clone(), "IP_INNOROUTES", 8, 1), tcp(to_svc, "SYN_SENT", true, 2)];
        let f = run(&events, &mut facts);
        assert_eq!(codes(&f), ["service-not-translated"], "{f:#?}");
        assert_eq!(f[0].evidence["service"], "shop/web");
        assert_eq!(f[0].evidence["connect_fails"], 1);
        // With a DNAT for that address in the run, it was translated.
        let mut nat = test_dnat_event();
        if let Detail::Nat(n) = &mut nat.detail {
            n.orig_dst = Some("10.96.0.20:80".into());
        }
        let mut with_nat = events.clone();
        with_nat.push(nat);
        assert!(!codes(&run(&with_nat, &mut facts)).contains(&"service-not-translated"));
    }

    /// Where NAT was checked only in the egress classifiers (`--nat-hook tc`), no DNAT seen is
    /// no proof of missing Service rules: the translated packets may have left by the uplink.
    /// The failure is still the finding's (an error), its cause is not claimed.
    #[test]
    fn no_dnat_seen_by_the_egress_classifiers_does_not_claim_missing_rules() {
        let mut facts = FakeFacts::default();
        facts.services.insert(("10.96.0.20".parse().unwrap(), 80, 6), "shop/web".into());
        let to_svc = flow("10.244.1.7", 4000, "10.96.0.20", 80, 6);
        let events = vec![tcp(to_svc.clone(), "SYN_SENT", false, 1), tcp(to_svc, "SYN_SENT", true, 2)];
        let info = RunInfo { reply_timeout: Duration::from_secs(3), nat_in_classifiers: true, ..RunInfo::default() };
        let f = diagnose(&events, &info, &mut facts);
        assert_eq!(codes(&f), ["service-not-translated"], "{f:#?}");
        assert_eq!(f[0].evidence["nat_hook"], "tc");
        assert!(f[0].summary.contains("--nat-hook xmit") && !f[0].summary.contains("rules are missing"), "{}", f[0].summary);
        let every_transmit = run(&events, &mut facts);
        assert!(every_transmit[0].summary.contains("rules are missing"), "with every transmit checked it is the rules: {every_transmit:#?}");
        assert!(every_transmit[0].evidence.get("nat_hook").is_none());
    }

    #[test]
    fn retransmits_nothing_explains_are_a_storm_and_a_failed_connect_an_error() {
        let f1 = flow("10.0.0.1", 4000, "10.0.0.2", 443, 6);
        let mut events: Vec<Event> = (0..5).map(|i| tcp(f1.clone(), "ESTABLISHED", false, i)).collect();
        let f = run(&events, &mut FakeFacts::default());
        assert_eq!(codes(&f), ["retransmit-storm"]);
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].evidence["retransmits"], 5);
        events.truncate(4);
        assert!(run(&events, &mut FakeFacts::default()).is_empty(), "4 retransmits are not a storm");
        let syn = flow("10.0.0.1", 4001, "10.0.0.3", 80, 6);
        let failed = vec![tcp(syn.clone(), "SYN_SENT", false, 1), tcp(syn.clone(), "SYN_SENT", false, 2), tcp(syn, "SYN_SENT", true, 3)];
        let f = run(&failed, &mut FakeFacts::default());
        assert_eq!((f[0].code, f[0].severity), ("retransmit-storm", Severity::Error));
        assert!(f[0].summary.contains("SYN retransmitted 2 times, 1 gave up"), "{}", f[0].summary);
    }

    #[test]
    fn a_connect_that_sent_no_syn_is_connect_not_sent_not_a_storm() {
        let syn = flow("10.0.0.1", 4001, "10.0.0.3", 80, 6);
        let mut failed = tcp(syn, "SYN_SENT", true, 1);
        if let Detail::ConnectFail(t) = &mut failed.detail {
            t.syns_sent = Some(0);
        }
        let f = run(std::slice::from_ref(&failed), &mut FakeFacts::default());
        assert_eq!(codes(&f), ["connect-not-sent"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(f[0].evidence["connect_fails"], 1);
        assert_eq!(f[0].evidence["destinations"], json!(["10.0.0.3:80"]));
        assert!(f[0].summary.contains("before a SYN was sent"), "{}", f[0].summary);
        // One SYN sent and no answer: the storm's error, as before.
        if let Detail::ConnectFail(t) = &mut failed.detail {
            t.syns_sent = Some(1);
        }
        let f = run(&[failed], &mut FakeFacts::default());
        assert_eq!((f[0].code, f[0].severity), ("retransmit-storm", Severity::Error));
    }

    #[test]
    fn routine_frees_and_unnamed_reasons_make_no_finding() {
        let events = vec![
            drop_event(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "QUEUE_PURGE", 9, 1),
            drop_event(flow("10.0.0.1", 0, "224.0.0.22", 0, 2), "NOT_SPECIFIED", 9, 2),
            drop_event(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "TCP_OLD_DATA", 9, 3),
        ];
        assert!(run(&events, &mut FakeFacts::default()).is_empty());
    }

    #[test]
    fn a_dropped_frag_needed_is_an_mtu_blackhole_not_a_netfilter_drop() {
        let data = flow("10.0.0.1", 4000, "10.0.1.1", 5001, 6);
        let mtu = |event: MtuEventKind, netns: u32, reason: Option<&str>| {
            let mut e = test_dnat_event();
            e.flow = data.clone();
            e.netns = Some(netns);
            e.src_pod = Some("shop/client".into());
            e.netns_pod = (netns == 1).then(|| "shop/client".into());
            e.ifname = Some(if netns == 1 { "eth0" } else { "rb" }.into());
            e.detail = Detail::Mtu(MtuDetail {
                event,
                mtu: Some(1400),
                len: 1500,
                dev_mtu: Some(1400),
                icmp_src: None,
                icmp_dst: None,
                reason: reason.map(str::to_string),
                hook: MtuHook::KfreeSkb,
            });
            e
        };
        let mut icmp = drop_event(flow("10.0.0.254", 0, "10.0.0.1", 0, 1), "NETFILTER_DROP", 1, 5);
        icmp.flow.sport = None;
        icmp.flow.dport = None;
        icmp.flow.icmp = Some((3, 4));
        let events = vec![
            mtu(MtuEventKind::FragNeededSent, 7, None),
            mtu(MtuEventKind::TooBigDrop, 7, Some("PKT_TOO_BIG")),
            mtu(MtuEventKind::FragNeededDropped, 1, Some("NETFILTER_DROP")),
            icmp,
            tcp(data.clone(), "ESTABLISHED", false, 6),
        ];
        let f = run(&events, &mut FakeFacts::default());
        assert_eq!(codes(&f), ["mtu-blackhole"], "{f:#?}");
        assert_eq!(f[0].flows, BTreeSet::from(["10.0.0.1:4000 -> 10.0.1.1:5001".to_string()]));
        assert_eq!(f[0].evidence["mtu"], 1400);
        assert_eq!(f[0].evidence["frag_needed_dropped"], 1);
        assert_eq!(f[0].evidence["icmp_dropped_netns"], 1);
        assert_eq!(f[0].evidence["icmp_dropped_pod"], "shop/client");
        assert!(f[0].summary.contains("dropped 1 times on the way back in pod shop/client's network namespace (NETFILTER_DROP)"), "{}", f[0].summary);
        assert!(f[0].pods.contains("shop/client"));
    }

    #[test]
    fn conntrack_drops_carry_the_fill_level() {
        let mut e = drop_event(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "NETFILTER_DROP", 9, 1);
        if let Detail::Drop(d) = &mut e.detail {
            d.conntrack = Some(ConntrackDrop { cause: ConntrackCause::TableFull, entries: Some(6), max: Some(6) });
        }
        let f = run(&[e], &mut FakeFacts::default());
        assert_eq!(codes(&f), ["conntrack-drop"], "not also a rule's drop: {f:#?}");
        assert_eq!((f[0].evidence["entries"].as_u64(), f[0].evidence["max"].as_u64()), (Some(6), Some(6)));
        assert!(f[0].summary.contains("(6 of 6 entries)"), "{}", f[0].summary);
    }

    fn reset(f: Flow, state: Option<&'static str>, direction: ResetDirection, ts: i128) -> Event {
        let mut e = test_dnat_event();
        e.ts_unix_ns = ts;
        e.flow = f;
        e.detail = Detail::Reset(TcpDetail { state, count: 0, direction: Some(direction), duration_ms: None, syns_sent: None });
        e
    }

    /// FakeFacts whose namespace 9 gives clients the kernel's default ports.
    fn with_client_ports() -> FakeFacts {
        let mut facts = FakeFacts::default();
        facts.sysctls.insert((9, "net.ipv4.ip_local_port_range".into()), "32768\t60999".into());
        facts
    }

    #[test]
    fn server_segments_after_the_client_aborted_with_rst_are_not_no_listener() {
        // An HTTP client closes with SO_LINGER 0: its socket's reset (tcp_send_active_reset),
        // then the server's data in flight finds no socket, each answered by a socketless reset
        // just before its NO_SOCKET drop. The server's port (8080) is not a client port, so only
        // the socket's reset can tell: run without the port range.
        let client = flow("10.0.0.1", 40100, "10.0.0.2", 8080, 6);
        let late = flow("10.0.0.2", 8080, "10.0.0.1", 40100, 6);
        let events = vec![
            reset(client.clone(), Some("CLOSE"), ResetDirection::Sent, 1),
            reset(client.clone(), Some("CLOSE"), ResetDirection::Sent, 5),
            drop_event(late.clone(), "NO_SOCKET", 9, 6),
            reset(client, Some("CLOSE"), ResetDirection::Sent, 7),
            drop_event(late, "NO_SOCKET", 9, 8),
        ];
        let f = run(&events, &mut FakeFacts::default());
        assert_eq!(codes(&f), ["late-reply"], "{f:#?}");
        assert_eq!(f[0].severity, Severity::Info);
        assert_eq!(f[0].evidence["after_connection"], 2);
    }

    #[test]
    fn a_segment_that_races_the_aborting_clients_own_reset_is_not_no_listener() {
        // The socket is unhashed before its reset goes out: the late segment's drop (and its
        // answer) can come first.
        let client = flow("10.0.0.1", 40100, "10.0.0.2", 8080, 6);
        let late = flow("10.0.0.2", 8080, "10.0.0.1", 40100, 6);
        let events = vec![
            reset(client.clone(), Some("CLOSE"), ResetDirection::Sent, 10),
            drop_event(late, "NO_SOCKET", 9, 11),
            reset(client, Some("CLOSE"), ResetDirection::Sent, 50_000),
        ];
        assert_eq!(codes(&run(&events, &mut FakeFacts::default())), ["late-reply"]);
    }

    #[test]
    fn a_syn_to_a_closed_port_with_its_answering_reset_is_no_listener() {
        // The kernel's answer (a socketless reset) comes before the SYN's NO_SOCKET drop and the
        // client's reset received in SYN_SENT after: neither is a socket at the server's end.
        let syn = flow("10.0.0.1", 40200, "10.0.0.2", 5304, 6);
        let answer = flow("10.0.0.2", 5304, "10.0.0.1", 40200, 6);
        let events = vec![
            reset(answer, Some("CLOSE"), ResetDirection::Sent, 1),
            drop_event(syn.clone(), "NO_SOCKET", 9, 2),
            reset(syn, Some("SYN_SENT"), ResetDirection::Received, 3),
        ];
        let f = run(&events, &mut with_client_ports());
        assert_eq!(codes(&f), ["no-listener"], "{f:#?}");
        assert_eq!((f[0].evidence["drops"].as_u64(), f[0].evidence["resets"].as_u64()), (Some(1), Some(1)));
    }

    #[test]
    fn a_late_dns_answer_through_a_service_is_a_late_reply_not_no_listener() {
        // The query's NAT event shows the client's port; the answer, after the client gave up,
        // comes back de-NATed from the Service address and finds no socket there.
        let mut query = nat_event(1, NatState::New, false, 1);
        query.netns = Some(8);
        let mut answer = drop_event(flow("10.96.0.10", 53, "10.244.1.7", 40000, 17), "NO_SOCKET", 9, 2);
        answer.netns_pod = Some("shop/web-0".into());
        let f = run(&[query, answer], &mut FakeFacts::default());
        assert_eq!(codes(&f), ["late-reply"], "not no-listener and not a lost query: {f:#?}");
    }

    #[test]
    fn a_late_udp_reply_to_an_ephemeral_port_is_a_late_reply() {
        // No event of the client's socket in the run (it asked before it): the ports say it.
        let answer = drop_event(flow("10.0.0.2", 53, "10.0.0.1", 45000, 17), "NO_SOCKET", 9, 2);
        let f = run(&[answer], &mut with_client_ports());
        assert_eq!(codes(&f), ["late-reply"], "{f:#?}");
        assert_eq!(f[0].evidence["to_client_port"], 1);
        // UDP to a port nothing listens on, from a client port, is a missing server.
        let missing = drop_event(flow("10.0.0.1", 45000, "10.0.0.2", 5303, 17), "NO_SOCKET", 9, 2);
        assert_eq!(codes(&run(&[missing], &mut with_client_ports())), ["no-listener"]);
    }

    #[test]
    fn ipv6_duplicate_address_detection_is_not_ip_forward_disabled() {
        let mut facts = FakeFacts::default();
        facts.sysctls.insert((7, "net.ipv6.conf.all.forwarding".into()), "0".into());
        let mut dad = drop_event(flow("::", 0, "ff02::1:ff88:248e", 0, 58), "IP_INADDRERRORS", 7, 1);
        (dad.flow.sport, dad.flow.dport, dad.flow.icmp) = (None, None, Some((135, 0)));
        assert!(run(&[dad], &mut facts).is_empty());
    }

    #[test]
    fn router_solicitations_and_mld_reports_from_link_local_are_not_no_route() {
        let icmp6 = |src: &str, dst: &str, t: u8| {
            let mut e = drop_event(flow(src, 0, dst, 0, 58), "IP_INNOROUTES", 8, 1);
            (e.flow.sport, e.flow.dport, e.flow.icmp) = (None, None, Some((t, 0)));
            e
        };
        let events = [icmp6("fe80::1", "ff02::2", 133), icmp6("fe80::1", "ff02::16", 143), icmp6("fe80::1", "fe80::2", 135)];
        assert!(run(&events, &mut FakeFacts::default()).is_empty());
    }

    #[test]
    fn ipv4_link_local_multicast_is_not_rp_filter_drop_or_no_route() {
        let igmp = |reason: &str| {
            let mut e = drop_event(flow("10.0.0.1", 0, "224.0.0.22", 0, 2), reason, 9, 1);
            (e.flow.sport, e.flow.dport) = (None, None);
            e
        };
        assert!(run(&[igmp("IP_RPFILTER"), igmp("IP_INNOROUTES")], &mut FakeFacts::default()).is_empty());
        let dhcp = drop_event(flow("0.0.0.0", 68, "255.255.255.255", 67, 17), "IP_RPFILTER", 9, 2);
        assert!(run(&[dhcp], &mut FakeFacts::default()).is_empty());
        // A unicast address is a route's business.
        let unicast = drop_event(flow("10.0.0.1", 4000, "10.9.0.1", 80, 6), "IP_RPFILTER", 9, 3);
        assert_eq!(codes(&run(&[unicast], &mut FakeFacts::default())), ["rp-filter-drop"]);
    }

    #[test]
    fn vxlan_multicast_without_a_tunnel_target_is_no_finding() {
        // flannel.1 has unicast FDB entries only: ND/MLD it is handed is freed by vxlan_xmit.
        let mut mld = drop_event(flow("fe80::1", 0, "ff02::16", 0, 58), "NO_TX_TARGET", 8, 1);
        mld.ifname = Some("flannel.1".into());
        let mut arp = drop_event(Flow { ethertype: 0x0806, ..Flow::default() }, "NO_TX_TARGET", 8, 2);
        arp.ifname = Some("flannel.1".into());
        assert!(run(&[mld, arp], &mut FakeFacts::default()).is_empty());
    }

    #[test]
    fn dns_through_a_service_whose_backend_drops_is_one_finding() {
        // The node's NAT event (new, then no_reply for the Service address) and the drop of the
        // DNATed query in the backend's namespace (namespace 9, whose rule drops udp/53).
        let mut events = vec![nat_event(1, NatState::New, false, 1)];
        let mut dropped = drop_event(flow("10.244.1.7", 40000, "10.244.2.9", 53, 17), "NETFILTER_DROP", 9, 2);
        dropped.netns_pod = Some("kube-system/coredns-1".into());
        events.push(dropped);
        events.push(nat_event(1, NatState::NoReply, false, 3));
        let mut facts = FakeFacts::default();
        let f = diagnose(&events, &RunInfo { reply_timeout: Duration::from_secs(3), ..RunInfo::default() }, &mut facts);
        assert_eq!(codes(&f), ["dns-no-reply"], "{f:#?}");
        let dns = &f[0];
        assert_eq!(dns.evidence["queries"], 1, "one query, seen twice");
        assert_eq!(dns.evidence["service"], "kube-system/kube-dns");
        assert_eq!(dns.evidence["backends"][0], "10.244.2.9:53");
        assert_eq!(dns.evidence["dropped_in"][0], "pod kube-system/coredns-1's network namespace (NETFILTER_DROP)");
        assert!(dns.summary.contains("Service kube-system/kube-dns (10.96.0.10:53)"), "{}", dns.summary);
        assert!(dns.summary.contains("were dropped in pod kube-system/coredns-1's network namespace"), "{}", dns.summary);
        assert_eq!(dns.flows, BTreeSet::from(["10.244.1.7:40000 -> 10.96.0.10:53".to_string()]));
    }

    #[test]
    fn dns_queries_dropped_where_rules_cannot_all_be_read_say_so() {
        // Namespace 10: an unreadable source, and of its readable rules those a UDP query to
        // port 53 may have met (the policy, and the rule without a counter).
        let e = drop_event(flow("10.0.0.1", 40000, "10.0.0.53", 53, 17), "NETFILTER_DROP", 10, 1);
        let f = run(&[e], &mut FakeFacts::default());
        assert_eq!(codes(&f), ["dns-no-reply"], "{f:#?}");
        assert_eq!(f[0].evidence["rules"], json!(["policy", "no counter"]));
        let unreadable = "nftables: the kernel refused the rule dump: Operation not permitted (os error 1)";
        assert_eq!(f[0].evidence["rules_unreadable"], json!([unreadable]));
        assert!(
            f[0].summary.contains(&format!("by the rule policy (some firewall rules there could not be read: {unreadable})")),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn findings_carry_their_first_and_last_event_and_three_examples() {
        let e = |ts| drop_event(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), "NETFILTER_DROP", 9, ts);
        let f = run(&[e(1_000_000_005), e(1_000_000_001), e(1_000_000_003), e(1_000_000_004)], &mut FakeFacts::default());
        assert_eq!(f[0].seen.first, Some(1_000_000_001));
        assert_eq!(f[0].seen.last, Some(1_000_000_005));
        assert_eq!(f[0].seen.examples.len(), 3);
        assert_eq!(f[0].seen.examples[0]["kind"], "drop");
        assert_eq!(f[0].seen.examples[0]["ts"], "1970-01-01T00:00:01.000000001Z");
        assert_eq!(f[0].seen.examples[0]["reason"], "NETFILTER_DROP");
    }

    // --- TCP segments that find no socket, judged by their flags (issue 20) ---

    /// A TCP segment read from a packet, with these flags.
    fn segment(f: Flow, flags: u8) -> Flow {
        Flow { tcp_flags: Some(crate::events::TcpFlags(flags)), ..f }
    }

    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    const PSH: u8 = 0x08;

    /// A socketless segment with `flags` and nothing else in the run: no socket event, no port
    /// range read (the flags alone must tell).
    fn lone_segment(flags: u8) -> Vec<Finding> {
        let late = segment(flow("10.0.0.2", 8080, "10.0.0.1", 8081, 6), flags);
        run(&[drop_event(late, "NO_SOCKET", 9, 1)], &mut FakeFacts::default())
    }

    #[test]
    fn late_data_after_the_client_aborted_is_a_late_reply_by_its_flags() {
        // The server's data in flight when the client reset: ACK|PSH, no client event traced
        // (a kernel before 6.10 does not trace the client's own reset), ports that are no
        // client's: only the flags tell.
        let f = lone_segment(ACK | PSH);
        assert_eq!(codes(&f), ["late-reply"], "{f:#?}");
        assert_eq!((f[0].evidence["by_tcp_flags"].as_u64(), f[0].evidence["after_connection"].as_u64()), (Some(1), Some(0)));
        assert_eq!(f[0].evidence["tcp_flags"], json!({"ACK|PSH": 1}));
    }

    #[test]
    fn a_fin_or_ack_to_a_port_closed_since_is_a_late_reply() {
        for flags in [ACK | FIN, ACK] {
            assert_eq!(codes(&lone_segment(flags)), ["late-reply"], "flags {flags:#x}");
        }
    }

    #[test]
    fn a_reset_to_a_closed_port_is_a_late_reply() {
        // The kernel answers nothing to a RST that finds no socket, and nothing is wrong.
        for flags in [RST, RST | ACK] {
            assert_eq!(codes(&lone_segment(flags)), ["late-reply"], "flags {flags:#x}");
        }
    }

    #[test]
    fn a_syn_ack_after_the_client_gave_up_is_a_late_reply() {
        // The client's connect timed out and closed; the server's SYN-ACK comes late.
        assert_eq!(codes(&lone_segment(SYN | ACK)), ["late-reply"]);
    }

    #[test]
    fn a_syn_to_a_port_that_had_a_server_is_no_listener() {
        // A socket at 10.0.0.2:8080 retransmitted earlier in the run, then the server went
        // away: a SYN without ACK opens a connection, so it is a missing server, whatever the
        // run's other events say; the same packet without flags would count as late.
        let server = flow("10.0.0.2", 8080, "10.0.0.1", 40300, 6);
        let syn = flow("10.0.0.1", 40300, "10.0.0.2", 8080, 6);
        let before = tcp(server, "ESTABLISHED", false, 1);
        let f = run(&[before.clone(), drop_event(segment(syn.clone(), SYN), "NO_SOCKET", 9, 2)], &mut FakeFacts::default());
        assert_eq!(codes(&f), ["no-listener"], "{f:#?}");
        assert_eq!(f[0].evidence["tcp_flags"], json!({"SYN": 1}));
        assert_eq!(codes(&run(&[before, drop_event(syn, "NO_SOCKET", 9, 2)], &mut FakeFacts::default())), ["late-reply"], "without flags");
    }

    #[test]
    fn an_ecn_setup_syn_to_a_closed_port_is_no_listener() {
        let syn = segment(flow("10.0.0.1", 40301, "10.0.0.2", 5304, 6), SYN | 0x40 | 0x80);
        assert_eq!(codes(&run(&[drop_event(syn, "NO_SOCKET", 9, 1)], &mut with_client_ports())), ["no-listener"]);
    }

    // --- One problem, one finding: a connection through NAT and namespaces (issue 20) ---

    const CLIENT: &str = "10.244.1.7";
    const SVC: &str = "10.96.0.20";
    const BACKEND: &str = "10.244.2.9";

    /// A NAT event of a TCP connection CLIENT:40400 -> SVC:80 that DNAT sent to BACKEND:80, in
    /// the node's namespace (2).
    fn web_nat(state: NatState, reply_seen: bool, ts: i128) -> Event {
        let mut e = nat_event(7, state, reply_seen, ts);
        e.flow = flow(CLIENT, 40400, BACKEND, 80, 6);
        e.netns = Some(2);
        if let Detail::Nat(n) = &mut e.detail {
            n.orig_dst = Some(format!("{SVC}:80"));
            n.reply_src = Some(format!("{BACKEND}:80"));
            n.reply_dst = Some(format!("{CLIENT}:40400"));
            n.backend = Some(format!("{BACKEND}:80"));
            n.backend_pod = Some("shop/web-1".into());
            n.service = Some("shop/web".into());
            n.orig_src = Some(format!("{CLIENT}:40400"));
        }
        e
    }

    /// The client's socket (namespace 1) retransmitting its SYN to the Service address.
    fn client_syn_retransmit(ts: i128) -> Event {
        let mut e = tcp(flow(CLIENT, 40400, SVC, 80, 6), "SYN_SENT", false, ts);
        (e.netns, e.src_pod) = (Some(1), Some("shop/client".into()));
        e
    }

    /// The backend (namespace 9) dropping the DNATed SYN.
    fn backend_drop(reason: &str, ts: i128) -> Event {
        let mut e = drop_event(segment(flow(CLIENT, 40400, BACKEND, 80, 6), SYN), reason, 9, ts);
        (e.src_pod, e.dst_pod, e.netns_pod) = (Some("shop/client".into()), Some("shop/web-1".into()), Some("shop/web-1".into()));
        e
    }

    /// `seen_in`'s counts: netns -> {kind: n}.
    fn seen_in_counts(f: &Finding) -> BTreeMap<u64, BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for place in f.evidence["seen_in"].as_array().expect("seen_in") {
            let kinds = place
                .as_object()
                .expect("an object")
                .iter()
                .filter(|(k, _)| !k.starts_with("netns"))
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)));
            out.insert(place["netns"].as_u64().unwrap_or(0), kinds.collect());
        }
        out
    }

    #[test]
    fn a_connection_through_a_service_whose_backend_drops_it_is_one_netfilter_drop() {
        // The client's SYN retransmits to the Service address, the node's DNAT and its
        // no_reply, the backend's drops of the translated SYNs: one story, told once, as the
        // rule's drop (which says why there was no reply), not also as nat-no-reply.
        let events = vec![
            web_nat(NatState::New, false, 1),
            backend_drop("NETFILTER_DROP", 2),
            client_syn_retransmit(3),
            backend_drop("NETFILTER_DROP", 4),
            web_nat(NatState::NoReply, false, 5),
        ];
        let f = run(&events, &mut FakeFacts::default());
        assert_eq!(codes(&f), ["netfilter-drop"], "{f:#?}");
        let d = &f[0];
        assert_eq!(d.flows, BTreeSet::from([format!("{CLIENT}:40400 -> {SVC}:80")]), "the connection as the client opened it");
        assert_eq!(d.pods, BTreeSet::from(["shop/client".to_string(), "shop/web-1".to_string()]));
        assert_eq!((d.evidence["drops"].as_u64(), d.evidence["events"].as_u64()), (Some(2), Some(5)));
        assert_eq!(
            (&d.evidence["service"], &d.evidence["backend"], &d.evidence["backend_pod"]),
            (&json!("shop/web"), &json!(format!("{BACKEND}:80")), &json!("shop/web-1"))
        );
        assert_eq!(d.evidence["netns"], 9);
        assert_eq!(d.evidence["dropped_in"], json!(["pod shop/web-1's network namespace"]));
        assert_eq!(d.evidence["rules"][0], HTTP_RULE, "the backend's rule, on the backend's port");
        let seen = seen_in_counts(d);
        assert_eq!(seen[&1], BTreeMap::from([("retransmit".to_string(), 1)]), "{seen:?}");
        assert_eq!(seen[&2], BTreeMap::from([("nat".to_string(), 2)]), "{seen:?}");
        assert_eq!(seen[&9], BTreeMap::from([("drop".to_string(), 2)]), "{seen:?}");
        assert!(d.summary.contains("Service shop/web (10.96.0.20:80) that DNAT sent to backend 10.244.2.9:80 (shop/web-1)"), "{}", d.summary);
        let kinds: BTreeSet<&str> = d.seen.examples.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert_eq!(kinds, BTreeSet::from(["drop", "nat", "retransmit"]), "an example from each namespace");
        // Without the drops, the backend's silence is nat-no-reply's.
        let silent: Vec<Event> = events.into_iter().filter(|e| !matches!(e.detail, Detail::Drop(_))).collect();
        assert_eq!(codes(&run(&silent, &mut FakeFacts::default())), ["nat-no-reply"]);
    }

    #[test]
    fn drops_of_one_connection_in_two_namespaces_are_one_finding_counted_per_namespace() {
        // The client's SYN dropped at the server (9), the server's SYN-ACK to a retransmit
        // dropped in the client's namespace (8): one connection, one finding, both places.
        let syn = segment(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), SYN);
        let syn_ack = segment(flow("10.0.0.2", 80, "10.0.0.1", 4000, 6), SYN | ACK);
        let events = vec![
            drop_event(syn.clone(), "NETFILTER_DROP", 9, 1),
            drop_event(syn_ack.clone(), "NETFILTER_DROP", 8, 2),
            drop_event(syn, "NETFILTER_DROP", 9, 3),
            drop_event(syn_ack, "NETFILTER_DROP", 8, 4),
            drop_event(segment(flow("10.0.0.1", 4000, "10.0.0.2", 80, 6), SYN), "NETFILTER_DROP", 9, 5),
        ];
        let f = run(&events, &mut FakeFacts::default());
        assert_eq!(codes(&f), ["netfilter-drop"], "{f:#?}");
        assert_eq!(f[0].flows, BTreeSet::from(["10.0.0.1:4000 -> 10.0.0.2:80".to_string()]), "named the way the SYN went");
        assert_eq!(f[0].evidence["drops"], 5, "each drop once");
        assert_eq!(f[0].evidence["netns"], 9, "the namespace that dropped most");
        assert_eq!(f[0].evidence["dropped_in"].as_array().map(Vec::len), Some(2), "{:#?}", f[0].evidence);
        let seen = seen_in_counts(&f[0]);
        assert_eq!((seen[&9]["drop"], seen[&8]["drop"]), (3, 2), "{seen:?}");
        assert!(
            f[0].summary.starts_with("netfilter rules in network namespace 9 (3 packets) and network namespace 8 (2 packets) dropped"),
            "{}",
            f[0].summary
        );
    }

    #[test]
    fn a_udp_service_whose_backend_has_no_listener_is_one_no_listener() {
        // conntrack never sees a reply (the ICMP port unreachable is no reply), so the node's
        // NAT says no_reply; the backend's drop says why: one finding, naming the Service.
        let nat = |state, ts| {
            let mut e = web_nat(state, false, ts);
            e.flow.l4_proto = Some(17);
            e
        };
        let mut dropped = drop_event(flow(CLIENT, 40400, BACKEND, 80, 17), "NO_SOCKET", 9, 2);
        dropped.dst_pod = Some("shop/web-1".into());
        let f = run(&[nat(NatState::New, 1), dropped, nat(NatState::NoReply, 3)], &mut with_client_ports());
        assert_eq!(codes(&f), ["no-listener"], "{f:#?}");
        assert_eq!(f[0].evidence["service"], "shop/web");
        assert!(
            f[0].summary.contains("nothing listens on udp 10.244.2.9:80 (shop/web-1), the backend DNAT chose for Service shop/web (10.96.0.20:80)"),
            "{}",
            f[0].summary
        );
        assert_eq!(f[0].flows, BTreeSet::from([format!("{CLIENT}:40400 -> {SVC}:80")]));
    }

    #[test]
    fn a_tcp_service_whose_backend_refuses_is_one_no_listener() {
        // The SYN finds no socket at the backend; the client's socket gets the reset in
        // SYN_SENT from the Service address: both are the backend's missing listener.
        let mut refused = reset(flow(CLIENT, 40400, SVC, 80, 6), Some("SYN_SENT"), ResetDirection::Received, 3);
        refused.netns = Some(1);
        let events = vec![web_nat(NatState::New, false, 1), backend_drop("NO_SOCKET", 2), refused, web_nat(NatState::Reply, true, 4)];
        let f = run(&events, &mut with_client_ports());
        assert_eq!(codes(&f), ["no-listener"], "{f:#?}");
        assert_eq!((f[0].evidence["drops"].as_u64(), f[0].evidence["resets"].as_u64()), (Some(1), Some(1)));
        assert_eq!(f[0].evidence["backend_pod"], "shop/web-1");
    }

    #[test]
    fn a_dns_query_to_a_backend_without_a_listener_is_one_dns_no_reply() {
        let mut dropped = drop_event(flow("10.244.1.7", 40000, "10.244.2.9", 53, 17), "NO_SOCKET", 9, 2);
        dropped.netns_pod = Some("kube-system/coredns-1".into());
        let events = vec![nat_event(1, NatState::New, false, 1), dropped, nat_event(1, NatState::NoReply, false, 3)];
        let f = run(&events, &mut with_client_ports());
        assert_eq!(codes(&f), ["dns-no-reply"], "{f:#?}");
        assert!(f[0].summary.contains("NO_SOCKET: nothing listens on udp/53 there"), "{}", f[0].summary);
    }
}
