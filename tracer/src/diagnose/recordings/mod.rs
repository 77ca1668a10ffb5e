//! Recordings: what `tracer watch -o json` writes beyond its events when it stops (a
//! `recording` record: the run; `fact` records: every answer the rules got from the machine),
//! and reading recordings of one or many nodes back (`watch --from`, `diagnose --from`).
//!
//! The facts are recorded by running the rules at stop over the events seen, through
//! [`Recorder`], which keeps every answer [`MachineFacts`](super::facts::MachineFacts) gave:
//! the replay ([`FactLog`] as the rules' [`Facts`]) answers the same questions the same way,
//! so one node's recording diagnoses exactly like a live run on that node. Each node is
//! diagnosed with its own facts (namespace inodes of two nodes may collide); the findings of
//! all nodes are then merged.

mod cross;
mod event;

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    io::{self, BufRead, Write},
    net::IpAddr,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

pub(crate) use event::parse_rfc3339;
use serde::{Deserialize, Serialize};

use super::{
    Report,
    findings::{Facts, NamespaceRules, RunInfo, error_text},
    flows::EventConns,
};
use crate::{
    events::{Event, rfc3339},
    kernel::{
        firewall::Rule,
        tunnels::{RouteTo, TunnelFacts},
    },
};

/// The recording format's version (`recording.version`); a reader reads other versions' records
/// as far as their fields agree.
pub(crate) const VERSION: u32 = 1;

/// A recording's `recording` record: the run, as diagnose's report needs it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct RunRecord {
    pub kind: String,
    pub version: u32,
    pub node: Option<String>,
    /// Wall clock when tracing started and stopped (RFC 3339), and the boot clock
    /// (CLOCK_BOOTTIME, ns) at start: the pair states this node's clock against the others'.
    pub start: String,
    pub end: String,
    pub start_boot_ns: u64,
    pub duration_s: f64,
    /// Events seen (recorded and past the analysis limit), lost in the kernel, and past the limit.
    pub events: u64,
    pub lost: u64,
    pub beyond_limit: u64,
    pub reply_timeout_ms: u64,
    pub probes: BTreeMap<String, String>,
    pub missing_probes: Vec<(String, String)>,
    pub mtu_mismatches: Vec<(Vec<String>, String)>,
    /// Drops over the rate budget, by place (absent when there were none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub counted: Vec<crate::probes::drops::CountedPlace>,
}

impl RunRecord {
    /// The run facts of the rules.
    fn info(&self) -> RunInfo {
        RunInfo {
            reply_timeout: Duration::from_millis(self.reply_timeout_ms),
            lost: self.lost,
            beyond_limit: self.beyond_limit,
            missing_probes: self.missing_probes.clone(),
            mtu_mismatches: self.mtu_mismatches.clone(),
            counted: self.counted.clone(),
            nat_in_classifiers: self.probes.get("nat").is_some_and(|how| crate::probes::nat::in_classifiers(how)),
        }
    }
}

/// One answer of [`Facts`], as a `fact` record's `fact` and fields. Addresses are strings
/// here: serde cannot read an `IpAddr` back through an internally tagged, flattened enum.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "fact", rename_all = "snake_case")]
enum Fact {
    Sysctl { netns: u32, key: String, value: Option<String> },
    NetnsName { netns: u32, value: Option<String> },
    Service { ip: String, port: u16, proto: u8, value: Option<String> },
    ServicesKnown { value: bool },
    Rules { netns: u32, rules: Vec<Rule>, unreadable: Vec<String> },
    Tunnels { netns: u32, value: Option<TunnelFacts> },
    Route { netns: u32, dst: String, value: Option<RouteTo> },
}

#[derive(Serialize, Deserialize)]
struct FactRecord {
    kind: String,
    node: Option<String>,
    #[serde(flatten)]
    fact: Fact,
}

/// The Service at (address, port, protocol), by the rules' questions.
type ServiceAnswers = HashMap<(IpAddr, u16, u8), Option<String>, foldhash::fast::RandomState>;

/// Every answer the rules got: written as `fact` records, and answering as [`Facts`] on replay
/// (a question not in it has no answer: the rules then say less, as on a machine that cannot
/// tell).
#[derive(Debug, Default, Clone)]
pub(crate) struct FactLog {
    sysctls: HashMap<(u32, String), Option<String>>,
    names: HashMap<u32, Option<String>>,
    /// Asked for every packet to a Service port: foldhash, not SipHash.
    services: RefCell<ServiceAnswers>,
    knows_services: Option<bool>,
    rules: HashMap<u32, Rc<NamespaceRules>>,
    tunnels: HashMap<u32, Option<TunnelFacts>>,
    routes: HashMap<(u32, IpAddr), Option<RouteTo>>,
}

impl FactLog {
    fn add(&mut self, fact: Fact) {
        match fact {
            Fact::Sysctl { netns, key, value } => drop(self.sysctls.insert((netns, key), value)),
            Fact::NetnsName { netns, value } => drop(self.names.insert(netns, value)),
            Fact::Service { ip, port, proto, value } => {
                if let Ok(ip) = ip.parse() {
                    self.services.get_mut().insert((ip, port, proto), value);
                }
            }
            Fact::ServicesKnown { value } => self.knows_services = Some(value),
            Fact::Rules { netns, rules, unreadable } => {
                let unreadable = unreadable.into_iter().map(anyhow::Error::msg).collect();
                drop(self.rules.insert(netns, Rc::new(NamespaceRules { rules, unreadable })));
            }
            Fact::Tunnels { netns, value } => drop(self.tunnels.insert(netns, value)),
            Fact::Route { netns, dst, value } => {
                if let Ok(dst) = dst.parse() {
                    self.routes.insert((netns, dst), value);
                }
            }
        }
    }

    /// Every answer, in a stable order (so two recordings of one run are the same bytes).
    fn facts(&self) -> Vec<Fact> {
        let mut out: Vec<Fact> = Vec::new();
        if let Some(value) = self.knows_services {
            out.push(Fact::ServicesKnown { value });
        }
        let sorted = |mut v: Vec<Fact>| {
            v.sort_by_cached_key(|f| serde_json::to_string(f).unwrap_or_default());
            v
        };
        out.extend(sorted(
            self.sysctls.iter().map(|((netns, key), value)| Fact::Sysctl { netns: *netns, key: key.clone(), value: value.clone() }).collect(),
        ));
        out.extend(sorted(self.names.iter().map(|(netns, value)| Fact::NetnsName { netns: *netns, value: value.clone() }).collect()));
        out.extend(sorted(
            self.services
                .borrow()
                .iter()
                .map(|((ip, port, proto), value)| Fact::Service { ip: ip.to_string(), port: *port, proto: *proto, value: value.clone() })
                .collect(),
        ));
        out.extend(sorted(
            self.rules
                .iter()
                .map(|(netns, r)| Fact::Rules { netns: *netns, rules: r.rules.clone(), unreadable: r.unreadable.iter().map(error_text).collect() })
                .collect(),
        ));
        out.extend(sorted(self.tunnels.iter().map(|(netns, value)| Fact::Tunnels { netns: *netns, value: value.clone() }).collect()));
        out.extend(sorted(
            self.routes.iter().map(|((netns, dst), value)| Fact::Route { netns: *netns, dst: dst.to_string(), value: value.clone() }).collect(),
        ));
        out
    }
}

impl Facts for FactLog {
    fn sysctl(&mut self, netns: u32, key: &str) -> Option<String> {
        self.sysctls.get(&(netns, key.to_string())).cloned().flatten()
    }

    fn netns_name(&mut self, netns: u32) -> Option<String> {
        self.names.get(&netns).cloned().flatten()
    }

    fn service(&self, ip: IpAddr, port: u16, proto: u8) -> Option<String> {
        self.services.borrow().get(&(ip, port, proto)).cloned().flatten()
    }

    fn knows_services(&self) -> bool {
        self.knows_services.unwrap_or(false)
    }

    fn dropping_rules(&mut self, netns: u32) -> Rc<NamespaceRules> {
        self.rules
            .get(&netns)
            .cloned()
            .unwrap_or_else(|| Rc::new(NamespaceRules { rules: Vec::new(), unreadable: vec![anyhow::Error::msg("not in the recording")] }))
    }

    fn tunnels(&mut self, netns: u32) -> Option<TunnelFacts> {
        self.tunnels.get(&netns).cloned().flatten()
    }

    fn route_to(&mut self, netns: u32, dst: IpAddr) -> Option<RouteTo> {
        self.routes.get(&(netns, dst)).cloned().flatten()
    }
}

/// The machine's [`Facts`], keeping every answer in a [`FactLog`].
pub(crate) struct Recorder<'a> {
    inner: &'a mut dyn Facts,
    log: FactLog,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(inner: &'a mut dyn Facts) -> Self {
        Self { inner, log: FactLog::default() }
    }
}

impl Facts for Recorder<'_> {
    fn sysctl(&mut self, netns: u32, key: &str) -> Option<String> {
        let value = self.inner.sysctl(netns, key);
        self.log.sysctls.insert((netns, key.to_string()), value.clone());
        value
    }

    fn netns_name(&mut self, netns: u32) -> Option<String> {
        let value = self.inner.netns_name(netns);
        self.log.names.insert(netns, value.clone());
        value
    }

    fn service(&self, ip: IpAddr, port: u16, proto: u8) -> Option<String> {
        let value = self.inner.service(ip, port, proto);
        self.log.services.borrow_mut().insert((ip, port, proto), value.clone());
        value
    }

    fn knows_services(&self) -> bool {
        self.inner.knows_services()
    }

    fn dropping_rules(&mut self, netns: u32) -> Rc<NamespaceRules> {
        let value = self.inner.dropping_rules(netns);
        self.log.rules.insert(netns, value.clone());
        value
    }

    fn tunnels(&mut self, netns: u32) -> Option<TunnelFacts> {
        let value = self.inner.tunnels(netns);
        self.log.tunnels.insert(netns, value.clone());
        value
    }

    fn route_to(&mut self, netns: u32, dst: IpAddr) -> Option<RouteTo> {
        let value = self.inner.route_to(netns, dst);
        self.log.routes.insert((netns, dst), value.clone());
        value
    }
}

/// Runs the rules over a run's `events` against the machine (`facts`) and writes the
/// `recording` record and a `fact` record per answer to `out`: the end of a recording.
pub(crate) fn write_end(out: &mut dyn Write, run: &RunRecord, events: &[Event], facts: &mut dyn Facts) -> io::Result<()> {
    let knows = facts.knows_services();
    let mut recorder = Recorder::new(facts);
    let _ = super::findings::diagnose(events, &run.info(), &mut recorder);
    recorder.log.knows_services = Some(knows);
    let mut run = run.clone();
    run.kind = "recording".into();
    run.version = VERSION;
    writeln!(out, "{}", serde_json::to_string(&run)?)?;
    for fact in recorder.log.facts() {
        writeln!(out, "{}", serde_json::to_string(&FactRecord { kind: "fact".into(), node: run.node.clone(), fact })?)?;
    }
    out.flush()
}

/// One node's part of the recordings read.
#[derive(Default)]
pub(crate) struct NodeRecording {
    /// Its events, in the order it recorded them.
    pub events: Vec<Event>,
    /// Its `recording` record: None when the recording was cut before its end.
    pub run: Option<RunRecord>,
    pub facts: FactLog,
}

/// Recordings read, by node.
#[derive(Default)]
pub(crate) struct Recordings {
    pub nodes: BTreeMap<String, NodeRecording>,
    /// Lines that were not records this version reads (truncated, unknown kinds, bad fields).
    pub skipped: u64,
}

impl Recordings {
    /// Reads one recording (`source` names it: a file, `-`) into the others; a line that is no
    /// record is counted in `skipped`, never an error. Records without a node are `source`'s.
    pub(crate) fn read(&mut self, source: &str, mut input: impl BufRead) -> io::Result<()> {
        let mut nodes = event::Nodes::default();
        let mut line = Vec::new();
        let fallback: Arc<str> = Arc::from(source);
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            let Ok(text) = std::str::from_utf8(&line) else {
                self.skipped += 1;
                continue;
            };
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            match event::parse(text, &mut nodes) {
                event::Parsed::Event(mut e) => {
                    let node = e.node.get_or_insert_with(|| fallback.clone()).clone();
                    // The node's name is copied only when the node is new.
                    match self.nodes.get_mut(&*node) {
                        Some(rec) => rec.events.push(e),
                        None => self.node(node.to_string()).events.push(e),
                    }
                }
                event::Parsed::Bad => self.skip(source, text),
                event::Parsed::Other => {
                    if !self.read_record(text, source) {
                        self.skip(source, text);
                    }
                }
            }
        }
    }

    /// Counts a line that is no record; the first few are shown with RUST_LOG=debug.
    fn skip(&mut self, source: &str, text: &str) {
        self.skipped += 1;
        if self.skipped <= 3 {
            log::debug!("{source}: skipped: {}", text.chars().take(200).collect::<String>());
        }
    }

    fn node(&mut self, name: String) -> &mut NodeRecording {
        self.nodes.entry(name).or_default()
    }

    /// A `recording` or `fact` record; false for anything else.
    fn read_record(&mut self, text: &str, source: &str) -> bool {
        #[derive(Deserialize)]
        struct Head<'a> {
            kind: &'a str,
        }
        match serde_json::from_str::<Head<'_>>(text).map(|h| h.kind) {
            Ok("recording") => {
                let Ok(run) = serde_json::from_str::<RunRecord>(text) else { return false };
                let node = run.node.clone().unwrap_or_else(|| source.to_string());
                self.node(node).run = Some(run);
                true
            }
            Ok("fact") => {
                let Ok(record) = serde_json::from_str::<FactRecord>(text) else { return false };
                let node = record.node.unwrap_or_else(|| source.to_string());
                self.node(node).facts.add(record.fact);
                true
            }
            _ => false,
        }
    }

    /// The warnings a reader owes its user: lines skipped, recordings cut short, clocks.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.skipped > 0 {
            out.push(format!("{} lines of the recordings were skipped (truncated, unknown kinds or another version's fields)", self.skipped));
        }
        for (node, rec) in &self.nodes {
            match &rec.run {
                None => out.push(format!(
                    "the recording of node {node} has no `recording` record (cut short?): its findings rest on its events alone, without the machine's facts"
                )),
                Some(run) => out.push(format!(
                    "node {node}: recorded {} .. {} (wall clock; boot clock {} ns at start)",
                    run.start, run.end, run.start_boot_ns
                )),
            }
        }
        out.extend(clock_skew(self));
        out
    }
}

/// Says when the nodes' recorded spans do not overlap: their wall clocks may then disagree (or
/// they were recorded at different times), and the merged timeline's order across nodes is only
/// as good as their clocks.
fn clock_skew(recordings: &Recordings) -> Vec<String> {
    let spans: Vec<(&String, i128, i128)> = recordings
        .nodes
        .iter()
        .filter_map(|(node, r)| {
            let run = r.run.as_ref()?;
            Some((node, parse_rfc3339(&run.start)?, parse_rfc3339(&run.end)?))
        })
        .collect();
    let mut out = Vec::new();
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            if a.2 < b.1 || b.2 < a.1 {
                let gap = (b.1 - a.2).max(a.1 - b.2) as f64 / 1e9;
                out.push(format!(
                    "the recordings of {} and {} do not overlap in time ({gap:.3}s apart): recorded at different times, or their clocks differ by that much; the merged timeline orders them by their own clocks",
                    a.0, b.0
                ));
            }
        }
    }
    out
}

/// `diagnose` over recordings: each node's findings from its own events and facts (as its live
/// run would have found them), merged into one report. The entry point for every reader of
/// recordings (`diagnose --from`, a multi-node `job run -- diagnose`).
pub(crate) fn diagnose(recordings: &mut Recordings) -> Report {
    let mut findings = Vec::new();
    let (mut events, mut lost, mut counted, mut duration_s) = (0u64, 0u64, 0u64, 0f64);
    let mut probes = BTreeMap::new();
    let several = recordings.nodes.len() > 1;
    let mut per_node: Vec<(usize, usize)> = Vec::new();
    // Each node's events joined to their connections by its rules, kept for the cross-node
    // findings (which join them again across nodes).
    let mut joined = Vec::new();
    let nodes: Vec<String> = recordings.nodes.keys().cloned().collect();
    for (node, rec) in &mut recordings.nodes {
        let run = rec.run.clone().unwrap_or_else(|| RunRecord { node: Some(node.clone()), events: rec.events.len() as u64, ..RunRecord::default() });
        let (mut found, conns) = super::findings::diagnose_joined(EventConns::new(&rec.events), &run.info(), &mut rec.facts);
        joined.push(conns);
        for f in &mut found {
            // A configuration fact (no events) is its node's too.
            if f.seen.nodes.is_empty() {
                f.seen.nodes.insert(node.clone());
            }
        }
        per_node.push((findings.len(), findings.len() + found.len()));
        findings.extend(found);
        events += run.events.max(rec.events.len() as u64);
        lost += run.lost;
        counted += run.counted.iter().map(|c| c.count).sum::<u64>();
        duration_s = f64::max(duration_s, run.duration_s);
        for (family, how) in run.probes {
            probes.insert(if several { format!("{node}: {family}") } else { family }, how);
        }
    }
    if several {
        // Cross-node findings first: they say what the per-node findings they link cannot.
        let parts: Vec<(&str, &EventConns<'_>, &[crate::diagnose::findings::Finding])> =
            nodes.iter().zip(&joined).zip(&per_node).map(|((node, conns), &(from, to))| (node.as_str(), conns, &findings[from..to])).collect();
        let mut crossing = cross::findings(&parts);
        crossing.append(&mut findings);
        findings = crossing;
    }
    Report {
        node: if several { None } else { nodes.first().cloned() },
        nodes: if several { nodes } else { Vec::new() },
        duration_s,
        events,
        lost,
        counted,
        probes,
        findings,
    }
}

/// Every node's events in one timeline, ordered by time (each node's own clock; ties keep each
/// recording's order).
pub(crate) fn timeline(recordings: &Recordings) -> Vec<&Event> {
    let mut all: Vec<&Event> = recordings.nodes.values().flat_map(|r| r.events.iter()).collect();
    all.sort_by_key(|e| e.ts_unix_ns);
    all
}

/// The `recording` and `fact` records of every node again, for `watch --from -o json`: its
/// output is a recording too (of several nodes when several were read).
pub(crate) fn write_records(out: &mut dyn Write, recordings: &Recordings) -> io::Result<()> {
    for (node, rec) in &recordings.nodes {
        if let Some(run) = &rec.run {
            writeln!(out, "{}", serde_json::to_string(run)?)?;
        }
        for fact in rec.facts.facts() {
            writeln!(out, "{}", serde_json::to_string(&FactRecord { kind: "fact".into(), node: Some(node.clone()), fact })?)?;
        }
    }
    out.flush()
}

/// `start`/`end` of a [`RunRecord`].
pub(crate) fn wall(unix_ns: i128) -> String {
    rfc3339(unix_ns)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_fact_reads_back() {
        let facts = vec![
            Fact::Sysctl { netns: 7, key: "net.ipv4.ip_forward".into(), value: Some("1".into()) },
            Fact::NetnsName { netns: 7, value: None },
            Fact::Service { ip: "10.96.0.10".into(), port: 53, proto: 17, value: Some("kube-system/kube-dns".into()) },
            Fact::ServicesKnown { value: true },
            Fact::Rules { netns: 7, rules: Vec::new(), unreadable: vec!["nftables: EPERM".into()] },
            Fact::Tunnels { netns: 7, value: Some(TunnelFacts::default()) },
            Fact::Route { netns: 7, dst: "10.0.0.2".into(), value: Some(RouteTo::default()) },
        ];
        for fact in facts {
            let line = serde_json::to_string(&FactRecord { kind: "fact".into(), node: Some("n".into()), fact: fact.clone() }).expect("json");
            let back: FactRecord = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(back.fact, fact, "{line}");
        }
    }

    fn two_nodes(b_start: &str, b_end: &str) -> Recordings {
        let run = |node: &str, start: &str, end: &str| {
            format!(
                r#"{{"kind":"recording","version":1,"node":"{node}","start":"{start}","end":"{end}","start_boot_ns":5,"duration_s":10.0,"events":1,"lost":0,"beyond_limit":0,"reply_timeout_ms":1000,"probes":{{}},"missing_probes":[],"mtu_mismatches":[]}}"#
            )
        };
        let a = format!(
            "{}\n{}\n",
            r#"{"ts":"2026-11-22T02:30:01.000000000Z","kind":"nat","proto":"tcp","src":"10.1.0.5:41020","dst":"10.96.0.10:80","src_pod":"lab/client","netns":100,"node":"node-a","nat":"dnat","orig_src":"10.1.0.5:41020","orig_dst":"10.96.0.10:80","reply_src":"10.2.0.9:8080","reply_dst":"10.1.0.5:41020","reply_seen":false,"assured":false,"state":"new","backend":"10.2.0.9:8080","backend_pod":"lab/server","service":"lab/web","conn":1}"#,
            run("node-a", "2026-11-22T02:30:00Z", "2026-11-22T02:30:10Z")
        );
        let b = format!(
            "{}\n{}\n{}\n",
            r#"{"ts":"2026-11-22T02:30:01.000100000Z","kind":"drop","proto":"tcp","src":"10.1.0.5:41020","dst":"10.2.0.9:8080","src_pod":"lab/client","dst_pod":"lab/server","netns":200,"node":"node-b","tcp_flags":"SYN","reason":"NETFILTER_DROP","reason_code":8,"location":"nf_hook_slow+0x9c","len":60}"#,
            run("node-b", b_start, b_end),
            r#"{"kind":"fact","node":"node-b","fact":"rules","netns":200,"rules":[],"unreadable":[]}"#
        );
        let mut read = Recordings::default();
        read.read("a.jsonl", a.as_bytes()).expect("reads");
        read.read("b.jsonl", b.as_bytes()).expect("reads");
        read
    }

    #[test]
    fn a_drop_on_one_node_of_a_connection_natted_on_another_is_one_cross_node_finding() {
        let mut read = two_nodes("2026-11-22T02:30:00Z", "2026-11-22T02:30:10Z");
        assert_eq!(read.skipped, 0);
        let order: Vec<Option<&str>> = timeline(&read).iter().map(|e| e.node.as_deref()).collect();
        assert_eq!(order, [Some("node-a"), Some("node-b")], "one timeline, by time");
        assert!(read.warnings().iter().all(|w| !w.contains("overlap")), "{:?}", read.warnings());
        let report = diagnose(&mut read);
        let json = report.to_json();
        assert_eq!(json["nodes"], json!(["node-a", "node-b"]), "{json:#}");
        let first = &json["findings"][0];
        assert_eq!((first["code"].as_str(), first["node"].as_str()), (Some("cross-node"), Some("node-b")), "{json:#}");
        let summary = first["summary"].as_str().unwrap_or_default();
        assert!(
            summary.contains("lab/client on node node-a") && summary.contains("DNATed to 10.2.0.9:8080 (lab/server) on node node-b"),
            "{summary}"
        );
        assert!(summary.contains("node node-b dropped its packets at nf_hook_slow+0x9c (NETFILTER_DROP)"), "{summary}");
        let per_node: Vec<(&str, &str)> =
            json["findings"].as_array().into_iter().flatten().filter_map(|f| Some((f["code"].as_str()?, f["node"].as_str()?))).collect();
        assert!(per_node.contains(&("netfilter-drop", "node-b")), "the linked finding stays: {per_node:?}");
        assert!(report.to_text().contains("node:     node-a, node-b"), "{}", report.to_text());
    }

    #[test]
    fn recordings_that_do_not_overlap_in_time_are_said() {
        let read = two_nodes("2026-11-22T03:30:00Z", "2026-11-22T03:30:10Z");
        let warnings = read.warnings();
        assert!(warnings.iter().any(|w| w.contains("node-a and node-b do not overlap in time (3590.000s apart)")), "{warnings:?}");
    }
}
