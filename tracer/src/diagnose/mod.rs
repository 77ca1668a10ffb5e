//! `tracer diagnose`'s analysis: connections (`flows`), the rules (`findings`), the machine
//! facts the rules read (`facts`), and the report's JSON and text.

pub(crate) mod facts;
pub(crate) mod findings;
pub(crate) mod flows;

use std::collections::BTreeMap;

use findings::{Finding, Severity};
use serde_json::{Value, json};

/// What `diagnose` prints.
#[derive(Debug)]
pub(crate) struct Report {
    pub duration_s: f64,
    pub events: u64,
    pub lost: u64,
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
                json!({
                    "code": f.code, "severity": f.severity.name(), "summary": f.summary,
                    "pods": f.pods, "flows": f.flows, "evidence": f.evidence,
                })
            })
            .collect();
        json!({
            "duration_s": self.duration_s, "events": self.events, "lost": self.lost,
            "probes": self.probes, "findings": findings,
        })
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
    let mut out = format!(
        "tracer diagnose: {:.0}s, {} events, {} lost\n",
        v["duration_s"].as_f64().unwrap_or(0.0),
        v["events"].as_u64().unwrap_or(0),
        v["lost"].as_u64().unwrap_or(0)
    );
    if !findings.iter().any(|f| f["severity"] == Severity::Error.name()) {
        out.push_str("no problems found");
        out.push_str(if findings.is_empty() { "\n" } else { " (notes below)\n" });
    }
    let strings =
        |v: &Value| -> Vec<String> { v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default() };
    for f in findings {
        let text = |k: &str| f[k].as_str().unwrap_or("").to_string();
        out.push('\n');
        out.push_str(&format!("{:<8} {}\n", text("severity").to_uppercase(), text("code")));
        out.push_str(&format!("         {}\n", text("summary")));
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
    }
    Some(out)
}
