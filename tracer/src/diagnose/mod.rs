//! `tracer diagnose`'s analysis: connections (`flows`), the rules (`findings`), the machine
//! facts the rules read (`facts`), and the report's JSON and text.

pub mod facts;
pub mod findings;
pub mod flows;

use std::collections::BTreeMap;

use serde_json::{Value, json};

use findings::{Finding, Severity};

/// What `diagnose` prints.
#[derive(Debug)]
pub struct Report {
    pub duration_s: f64,
    pub events: u64,
    pub lost: u64,
    /// Each family's hook, or why it did not run.
    pub probes: BTreeMap<String, String>,
    pub findings: Vec<Finding>,
}

impl Report {
    /// The CONTRACT's object (one line).
    pub fn to_json(&self) -> Value {
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
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "tracer diagnose: {:.0}s, {} events, {} lost\n",
            self.duration_s, self.events, self.lost
        );
        if !self.findings.iter().any(|f| f.severity == Severity::Error) {
            out.push_str("no problems found");
            out.push_str(if self.findings.is_empty() { "\n" } else { " (notes below)\n" });
        }
        for f in &self.findings {
            out.push('\n');
            out.push_str(&format!("{:<8} {}\n", f.severity.name().to_uppercase(), f.code));
            out.push_str(&format!("         {}\n", f.summary));
            if !f.pods.is_empty() {
                out.push_str(&format!("         pods:     {}\n", f.pods.iter().cloned().collect::<Vec<_>>().join(", ")));
            }
            if !f.flows.is_empty() {
                out.push_str(&format!("         flows:    {}\n", f.flows.iter().cloned().collect::<Vec<_>>().join(", ")));
            }
            let evidence: Vec<String> = f
                .evidence
                .iter()
                .filter(|(_, v)| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()) && v.as_array().is_none_or(|a| !a.is_empty()))
                .map(|(k, v)| match v {
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect();
            out.push_str(&format!("         evidence: {}\n", evidence.join(", ")));
        }
        out
    }
}
