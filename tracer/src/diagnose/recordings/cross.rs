//! What no single node can say: a connection one node opened (or DNATed) and another node
//! dropped. Each node's findings are made from its own events and facts; here every node's
//! events are joined per connection (across NAT: a NAT event's original and reply tuples join
//! the client's view and the backend's), and an error finding of one node whose connections
//! other nodes also saw gets a `cross-node` finding naming both ends, linked to it.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::{
    diagnose::{
        findings::{Finding, Seen, Severity},
        flows::{ConnKey, Connections, EventConns},
    },
    events::{Detail, Event},
};

/// Codes whose finding names where packets were dropped: the cause a cross-node finding points at.
const CAUSES: &[&str] = &[
    "netfilter-drop",
    "no-listener",
    "tunnel-source-mismatch",
    "tunnel-drop",
    "no-route",
    "ip-forward-disabled",
    "rp-filter-drop",
    "neighbor-failed",
    "conntrack-drop",
];

/// An event without a connection (no addresses), in the per-event ids below.
const NONE: u32 = u32::MAX;

/// The cross-node findings of `findings` (each node's, by node), from every node's `events`.
pub(super) fn findings(nodes: &[(&str, &EventConns<'_>, &[Finding])]) -> Vec<Finding> {
    // Every node's events at once, borrowed: a copy of them doubled the peak memory.
    let merged = Connections::learn_keys(nodes.iter().flat_map(|(_, conns, _)| conns.events().iter()));
    // Each event's merged connection found once, as a small id: the joins below are by id.
    let mut ids: HashMap<ConnKey, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut keys: Vec<ConnKey> = Vec::new();
    // Per merged connection: the nodes that saw it, and its first NAT event.
    let mut seen_on: Vec<BTreeSet<&str>> = Vec::new();
    let mut nat_on: Vec<Option<(&str, &Event)>> = Vec::new();
    let mut of_event: Vec<Vec<u32>> = Vec::with_capacity(nodes.len());
    for &(node, conns, _) in nodes {
        let events = conns.events();
        let mut mine = Vec::with_capacity(events.len());
        for e in events {
            let Some(key) = merged.key_of(e) else {
                mine.push(NONE);
                continue;
            };
            let id = *ids.entry(key).or_insert_with_key(|key| {
                keys.push(key.clone());
                seen_on.push(BTreeSet::new());
                nat_on.push(None);
                keys.len() as u32 - 1
            });
            let at = id as usize;
            if !seen_on[at].contains(node) {
                seen_on[at].insert(node);
            }
            if matches!(e.detail, Detail::Nat(_)) && nat_on[at].is_none() {
                nat_on[at] = Some((node, e));
            }
            mine.push(id);
        }
        of_event.push(mine);
    }
    let mut out = Vec::new();
    for (&(node, local, found), merged_ids) in nodes.iter().zip(&of_event) {
        let events = local.events();
        let mut causes = found.iter().filter(|f| f.severity == Severity::Error && CAUSES.contains(&f.code)).peekable();
        if causes.peek().is_none() {
            continue;
        }
        // Each connection as this node names it (as its rules did) -> the same connection as
        // every node names it, made once per node (not once per finding).
        let mut named: Vec<Vec<u32>> = vec![Vec::new(); local.key_count()];
        for (e, &all) in events.iter().zip(merged_ids) {
            if all != NONE
                && let Some(own) = local.key_id(e)
            {
                let list = &mut named[own as usize];
                if list.last() != Some(&all) {
                    list.push(all);
                }
            }
        }
        for list in &mut named {
            list.sort_unstable();
            list.dedup();
        }
        for f in causes {
            // The finding's connections as every node names them, in key order.
            let mut all: Vec<u32> = f.conns.iter().filter_map(|k| local.id_of_key(k)).flat_map(|own| &named[own as usize]).copied().collect();
            all.sort_unstable();
            all.dedup();
            all.sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
            let others: BTreeSet<&str> = all.iter().flat_map(|&id| &seen_on[id as usize]).copied().filter(|n| *n != node).collect();
            let Some(client_node) = others.first() else { continue };
            let nat = all.iter().find_map(|&id| nat_on[id as usize]).filter(|(n, _)| *n != node).map(|(_, e)| e);
            out.push(cross(node, client_node, f, nat, all.len(), &others));
        }
    }
    out
}

fn cross(node: &str, client_node: &str, f: &Finding, nat: Option<&Event>, connections: usize, others: &BTreeSet<&str>) -> Finding {
    let text = |k: &str| f.evidence.get(k).map(|v| v.as_str().map_or_else(|| v.to_string(), String::from));
    let location = f.evidence.get("locations").and_then(Value::as_array).and_then(|l| l.first()).and_then(Value::as_str).map(String::from);
    let reason = text("reason").unwrap_or_else(|| f.code.to_string());
    let at = location.map_or_else(String::new, |l| format!(" at {l}"));
    let nat = nat.and_then(|e| match &e.detail {
        Detail::Nat(n) => Some((e, n)),
        _ => None,
    });
    let client = |e: &Event| e.src_pod.clone().or_else(|| e.flow.src_endpoint()).unwrap_or_else(|| "?".into());
    let summary = match nat {
        Some((e, n)) => format!(
            "connection from {} on node {client_node} to {} was DNATed to {}{} on node {node}; node {node} dropped its packets{at} ({reason}): see the {} finding of node {node}",
            client(e),
            n.service.clone().or_else(|| n.orig_dst.clone()).unwrap_or_else(|| "?".into()),
            n.backend.clone().unwrap_or_else(|| "?".into()),
            n.backend_pod.as_ref().map_or_else(String::new, |p| format!(" ({p})")),
            f.code
        ),
        None => format!(
            "{} connection(s) seen on node {client_node} were dropped on node {node}{at} ({reason}): {}; see the {} finding of node {node}",
            connections,
            f.flows.iter().next().cloned().unwrap_or_default(),
            f.code
        ),
    };
    let mut nodes: BTreeSet<String> = others.iter().map(|n| n.to_string()).collect();
    nodes.insert(node.to_string());
    let mut evidence = serde_json::Map::new();
    evidence.insert("events".into(), f.evidence.get("events").cloned().unwrap_or(json!(0)));
    evidence.insert("cause".into(), json!({"code": f.code, "node": node, "summary": f.summary}));
    evidence.insert("client_node".into(), json!(client_node));
    evidence.insert("drop_node".into(), json!(node));
    evidence.insert("reason".into(), json!(reason));
    evidence.insert("connections".into(), json!(connections));
    if let Some((_, n)) = nat {
        evidence.insert("service".into(), json!(n.service));
        evidence.insert("backend".into(), json!(n.backend));
        evidence.insert("backend_pod".into(), json!(n.backend_pod));
    }
    Finding {
        code: "cross-node",
        severity: Severity::Error,
        summary,
        pods: f.pods.clone(),
        flows: f.flows.clone(),
        evidence,
        seen: Seen { first: f.seen.first, last: f.seen.last, examples: Vec::new(), nodes },
        conns: BTreeSet::new(),
    }
}
