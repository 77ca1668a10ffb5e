//! Prometheus metrics for `tracer serve`, through the `metrics` facade and
//! metrics-exporter-prometheus's text renderer. Label values are bounded per metric, so a busy
//! node (many pods, many drop locations) cannot grow the series without limit.

use std::collections::{HashMap, HashSet};

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{
    events::Event,
    probes::{FamilyId, describe_metrics},
};

/// The label value series over the limit are counted under.
pub(crate) const OTHER: &str = "other";

/// Label sets seen per metric, up to a limit.
pub(crate) struct Cardinality {
    limit: usize,
    seen: HashMap<&'static str, HashSet<Vec<String>>>,
    warned: bool,
}

impl Cardinality {
    pub(crate) fn new(limit: usize) -> Self {
        Self { limit, seen: HashMap::new(), warned: false }
    }

    /// `values` as they are when the metric has room (or already has them), else every value
    /// replaced by [`OTHER`] (one series for everything past the limit).
    pub(crate) fn admit(&mut self, metric: &'static str, values: Vec<String>) -> Vec<String> {
        let seen = self.seen.entry(metric).or_default();
        if seen.contains(&values) || seen.len() < self.limit {
            seen.insert(values.clone());
            return values;
        }
        counter!("tracer_metric_series_capped_total", "metric" => metric).increment(1);
        if !self.warned {
            log::warn!("{metric} has {} label sets (--max-series): later ones are counted as \"{OTHER}\"", self.limit);
            self.warned = true;
        }
        vec![OTHER.to_string(); values.len()]
    }
}

/// The recorder, installed once for the process; the handle renders the text format.
pub(crate) fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::describe_counter;
    for family in FamilyId::ALL {
        describe_metrics(family);
    }
    describe_counter!("tracer_events_seen_total", "Events the kernel programs matched, by probe");
    describe_counter!("tracer_events_lost_total", "Events lost because the ring buffer was full, by probe");
    describe_counter!("tracer_metric_series_capped_total", "Events counted as \"other\" because their metric had --max-series label sets");
    metrics::describe_gauge!("tracer_probe_up", "1 when the probe family runs on this node, 0 when this kernel cannot run it");
}

/// `namespace`, `pod` of `namespace/name` (empty strings when not a pod's).
pub(crate) fn split_pod(pod: Option<&String>) -> (String, String) {
    match pod.and_then(|p| p.split_once('/')) {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), String::new()),
    }
}

/// Counts one event, in its family's metric.
pub(crate) fn observe(event: &Event, limits: &mut Cardinality) {
    event.detail.observe(event, limits);
}

/// Sets the kernel's own counts of one probe (absolute values, read from its counters).
pub(crate) fn set_kernel_counts(probe: &'static str, seen: u64, lost: u64) {
    counter!("tracer_events_seen_total", "probe" => probe).absolute(seen);
    counter!("tracer_events_lost_total", "probe" => probe).absolute(lost);
}

pub(crate) fn set_probe_up(probe: &'static str, up: bool) {
    gauge!("tracer_probe_up", "probe" => probe).set(if up { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_past_the_limit_become_other() {
        let mut c = Cardinality::new(2);
        let a = vec!["x".to_string(), "a".to_string()];
        let b = vec!["x".to_string(), "b".to_string()];
        assert_eq!(c.admit("m", a.clone()), a);
        assert_eq!(c.admit("m", b.clone()), b);
        assert_eq!(c.admit("m", a.clone()), a, "known sets stay");
        assert_eq!(c.admit("m", vec!["y".into(), "c".into()]), vec![OTHER.to_string(), OTHER.to_string()]);
        assert_eq!(c.admit("n", vec!["y".into()]), vec!["y".to_string()], "per metric");
        assert_eq!(split_pod(Some(&"shop/web-0".to_string())), ("shop".into(), "web-0".into()));
    }
}
