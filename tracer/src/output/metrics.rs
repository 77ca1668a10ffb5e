//! Prometheus metrics for `tracer serve`, through the `metrics` facade and
//! metrics-exporter-prometheus's text renderer. Label values are bounded per metric, so a busy
//! node (many pods, many drop locations) cannot grow the series without limit.

use std::collections::{HashMap, HashSet};

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::events::{Detail, Event, NatState, ResetDirection};

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
    fn admit(&mut self, metric: &'static str, values: Vec<String>) -> Vec<String> {
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
    describe_counter!("tracer_drops_total", "Packets the kernel dropped, by drop reason, kernel function and the pod it concerns");
    describe_counter!("tracer_retransmits_total", "TCP retransmits, by the sending pod");
    describe_counter!("tracer_resets_total", "TCP resets sent or received, by pod");
    describe_counter!("tracer_connect_failures_total", "TCP connects that gave up (SYN_SENT to CLOSE), by pod");
    describe_counter!("tracer_nat_no_reply_total", "NATed connections with no reply within --reply-timeout, by client pod, Service and backend pod");
    describe_counter!("tracer_mtu_events_total", "MTU events (frag-needed sent/received/dropped, too-big drops, oversize), by pod");
    describe_counter!("tracer_events_seen_total", "Events the kernel programs matched, by probe");
    describe_counter!("tracer_events_lost_total", "Events lost because the ring buffer was full, by probe");
    describe_counter!("tracer_metric_series_capped_total", "Events counted as \"other\" because their metric had --max-series label sets");
    metrics::describe_gauge!("tracer_probe_up", "1 when the probe family runs on this node, 0 when this kernel cannot run it");
}

/// `namespace`, `pod` of `namespace/name` (empty strings when not a pod's).
fn split_pod(pod: Option<&String>) -> (String, String) {
    match pod.and_then(|p| p.split_once('/')) {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (String::new(), String::new()),
    }
}

/// The kernel function of `symbol+0xoff` (offsets would make a series per call site).
fn function(location: &str) -> String {
    location.split('+').next().unwrap_or(location).to_string()
}

/// Counts one event.
pub(crate) fn observe(event: &Event, limits: &mut Cardinality) {
    match &event.detail {
        Detail::Drop(d) => {
            // The pod the drop concerns: where it happened, else either end.
            let pod = event.netns_pod.as_ref().or(event.dst_pod.as_ref()).or(event.src_pod.as_ref());
            let (ns, name) = split_pod(pod);
            let v = limits.admit("tracer_drops_total", vec![d.reason.clone(), function(&d.location), ns, name]);
            counter!("tracer_drops_total", "reason" => v[0].clone(), "function" => v[1].clone(), "namespace" => v[2].clone(), "pod" => v[3].clone())
                .increment(1);
        }
        Detail::Retransmit(_) | Detail::ConnectFail(_) => {
            // A socket's flow starts at its own end.
            let (ns, name) = split_pod(event.src_pod.as_ref());
            let metric = if matches!(event.detail, Detail::Retransmit(_)) { "tracer_retransmits_total" } else { "tracer_connect_failures_total" };
            let v = limits.admit(metric, vec![ns, name]);
            counter!(metric, "namespace" => v[0].clone(), "pod" => v[1].clone()).increment(1);
        }
        Detail::Reset(t) => {
            let pod = if t.direction == Some(ResetDirection::Received) {
                event.src_pod.as_ref()
            } else {
                event.src_pod.as_ref().or(event.dst_pod.as_ref())
            };
            let (ns, name) = split_pod(pod);
            let v = limits.admit("tracer_resets_total", vec![t.direction.map_or("", ResetDirection::as_str).to_string(), ns, name]);
            counter!("tracer_resets_total", "direction" => v[0].clone(), "namespace" => v[1].clone(), "pod" => v[2].clone()).increment(1);
        }
        Detail::Nat(n) if n.state == NatState::NoReply => {
            let (ns, name) = split_pod(event.src_pod.as_ref());
            let v = limits
                .admit("tracer_nat_no_reply_total", vec![ns, name, n.service.clone().unwrap_or_default(), n.backend_pod.clone().unwrap_or_default()]);
            counter!(
                "tracer_nat_no_reply_total",
                "namespace" => v[0].clone(), "pod" => v[1].clone(), "service" => v[2].clone(), "backend_pod" => v[3].clone()
            )
            .increment(1);
        }
        Detail::Nat(_) => {}
        Detail::Mtu(m) => {
            let (ns, name) = split_pod(event.src_pod.as_ref().or(event.dst_pod.as_ref()));
            let v = limits.admit("tracer_mtu_events_total", vec![m.event.as_str().to_string(), ns, name]);
            counter!("tracer_mtu_events_total", "event" => v[0].clone(), "namespace" => v[1].clone(), "pod" => v[2].clone()).increment(1);
        }
    }
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
        assert_eq!(function("nf_hook_slow+0x9c"), "nf_hook_slow");
        assert_eq!(split_pod(Some(&"shop/web-0".to_string())), ("shop".into(), "web-0".into()));
    }
}
