//! `tracer diagnose`'s analysis: connections (`flows`), the rules (`findings`), the machine
//! facts the rules read (`facts`), and the report's JSON and text.

pub(crate) mod facts;
pub(crate) mod findings;
pub(crate) mod flows;
pub(crate) mod recordings;
mod tunnel_facts;

use std::collections::BTreeMap;

use findings::{Finding, Severity};
use serde_json::{Value, json};

use crate::{events::rfc3339, output::json::event_text};

/// What `diagnose` prints.
#[derive(Debug)]
pub(crate) struct Report {
    /// The node it ran on (CONTRACT `node`); for recordings of several nodes, None, and
    /// `nodes` lists them.
    pub node: Option<String>,
    /// The nodes of merged recordings (empty for one node's run): each finding then says its own.
    pub nodes: Vec<String>,
    pub duration_s: f64,
    pub events: u64,
    pub lost: u64,
    /// Drops over the rate budget (`--max-rate`), counted in the kernel, not in `events`.
    pub counted: u64,
    /// Each family's hook, or why it did not run.
    pub probes: BTreeMap<String, String>,
    pub findings: Vec<Finding>,
}

impl Report {
    /// The CONTRACT's object (one line).
    pub(crate) fn to_json(&self) -> Value {
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                // The node of its evidence: the one node its events were seen on, else the run's
                // (a configuration fact of this node); `nodes` when they were seen on several.
                // A finding across nodes names the node where its cause is (`drop_node`).
                let node = match f.seen.nodes.len() {
                    1 => f.seen.nodes.first().cloned(),
                    _ => f.evidence.get("drop_node").and_then(Value::as_str).map(String::from).or_else(|| self.node.clone()),
                };
                let mut v = json!({
                    "code": f.code, "severity": f.severity.name(), "summary": f.summary,
                    "pods": f.pods, "flows": f.flows, "evidence": f.evidence, "node": node,
                });
                if f.seen.nodes.len() > 1
                    && let Some(o) = v.as_object_mut()
                {
                    o.insert("nodes".into(), json!(f.seen.nodes));
                }
                // The contract's optional fields: only findings that rest on events have them
                // (a configuration fact like mtu-mismatch has no time).
                if let (Some(first), Some(last), Some(o)) = (f.seen.first, f.seen.last, v.as_object_mut()) {
                    o.insert("first".into(), json!(rfc3339(first)));
                    o.insert("last".into(), json!(rfc3339(last)));
                    o.insert("examples".into(), json!(f.seen.examples));
                }
                v
            })
            .collect();
        let mut report = json!({
            "node": self.node, "duration_s": self.duration_s, "events": self.events, "lost": self.lost,
            "probes": self.probes, "findings": findings,
        });
        if !self.nodes.is_empty()
            && let Some(o) = report.as_object_mut()
        {
            o.insert("nodes".into(), json!(self.nodes));
        }
        if self.counted > 0
            && let Some(o) = report.as_object_mut()
        {
            o.insert("counted".into(), json!(self.counted));
        }
        report
    }

    /// For people: one block per finding, errors first; a clean run says so.
    pub(crate) fn to_text(&self) -> String {
        report_text(&self.to_json()).unwrap_or_default()
    }
}

/// A report's text from its JSON (also for reports read back from a Job's log), None if `v`
/// is not a report.
pub(crate) fn report_text(v: &Value) -> Option<String> {
    let findings = v.get("findings")?.as_array()?;
    let strings =
        |v: &Value| -> Vec<String> { v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default() };
    // The node shows when the report is one node's; merged recordings name each finding's.
    let merged = v["nodes"].as_array().is_some_and(|n| n.len() > 1);
    let on = match (v["node"].as_str(), merged) {
        (_, true) => format!(" nodes {},", strings(&v["nodes"]).join(", ")),
        (Some(node), false) => format!(" node {node},"),
        (None, false) => String::new(),
    };
    let counted = match v["counted"].as_u64() {
        Some(n) if n > 0 => format!(", {n} drops counted over --max-rate"),
        _ => String::new(),
    };
    let mut out = format!(
        "tracer diagnose:{on} {:.0}s, {} events, {} lost{counted}\n",
        v["duration_s"].as_f64().unwrap_or(0.0),
        v["events"].as_u64().unwrap_or(0),
        v["lost"].as_u64().unwrap_or(0)
    );
    if !findings.iter().any(|f| f["severity"] == Severity::Error.name()) {
        out.push_str("no problems found");
        out.push_str(if findings.is_empty() { "\n" } else { " (notes below)\n" });
    }
    for f in findings {
        let text = |k: &str| f[k].as_str().unwrap_or("").to_string();
        out.push('\n');
        out.push_str(&format!("{:<8} {}\n", text("severity").to_uppercase(), text("code")));
        out.push_str(&format!("         {}\n", text("summary")));
        if merged {
            let nodes = strings(&f["nodes"]);
            let nodes = if nodes.is_empty() { f["node"].as_str().map(String::from).into_iter().collect() } else { nodes };
            out.push_str(&format!("         node:     {}\n", if nodes.is_empty() { "-".to_string() } else { nodes.join(", ") }));
        }
        let pods = strings(&f["pods"]);
        if !pods.is_empty() {
            out.push_str(&format!("         pods:     {}\n", pods.join(", ")));
        }
        let flows = strings(&f["flows"]);
        if !flows.is_empty() {
            out.push_str(&format!("         flows:    {}\n", flows.join(", ")));
        }
        let evidence: Vec<String> = f["evidence"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()) && v.as_array().is_none_or(|a| !a.is_empty()))
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        out.push_str(&format!("         evidence: {}\n", evidence.join(", ")));
        if let (Some(first), Some(last)) = (f["first"].as_str(), f["last"].as_str()) {
            out.push_str(&format!("         seen:     {first} .. {last}\n"));
        }
        // The example events as `watch` prints them, so a person can find them in a trace.
        for example in f["examples"].as_array().into_iter().flatten().filter_map(event_text) {
            out.push_str(&format!("         example:  {example}\n"));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        diagnose::findings::{Seen, Severity},
        probes::nat::detail::test_dnat_event,
    };

    #[test]
    fn first_last_and_examples_are_in_the_json_and_the_text() {
        let example: Value = serde_json::from_slice(&crate::output::json::to_json(&test_dnat_event()).expect("json")).expect("an event");
        let finding = |seen| Finding {
            code: "dns-no-reply",
            severity: Severity::Error,
            summary: "DNS queries are not answered".into(),
            pods: Default::default(),
            flows: Default::default(),
            evidence: serde_json::Map::new(),
            seen,
            conns: Default::default(),
        };
        let report = Report {
            node: Some("node-a".into()),
            nodes: Vec::new(),
            duration_s: 6.0,
            events: 1,
            lost: 0,
            counted: 0,
            probes: BTreeMap::new(),
            findings: vec![
                finding(Seen { first: Some(0), last: Some(1_000_000_000), examples: vec![example.clone()], ..Seen::default() }),
                finding(Seen::default()),
            ],
        };
        let json = report.to_json();
        let f = &json["findings"][0];
        assert_eq!((f["first"].as_str(), f["last"].as_str()), (Some("1970-01-01T00:00:00.000000000Z"), Some("1970-01-01T00:00:01.000000000Z")));
        assert_eq!(f["examples"], json!([example]));
        let bare = json["findings"][1].as_object().expect("an object");
        assert!(!bare.contains_key("first") && !bare.contains_key("examples"), "no events, no times: {bare:?}");
        let text = report.to_text();
        assert!(text.contains("seen:     1970-01-01T00:00:00.000000000Z .. 1970-01-01T00:00:01.000000000Z"), "{text}");
        let line = event_text(&example).expect("an event line");
        assert!(text.contains(&format!("example:  {line}")), "{text}");
    }
}
