//! Prometheus metrics for `tracer serve`, through the `metrics` facade and
//! metrics-exporter-prometheus's text renderer. Label sets are bounded per metric, so a busy
//! node (many pods, pod churn) cannot grow the series without limit, and label sets not seen
//! for a while are forgotten, so churn does not fill the bound for good.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use metrics::{Label, counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::{
    events::Event,
    probes::{FamilyId, describe_metrics},
};

/// The label value a collapsed label is counted under.
pub(crate) const OTHER: &str = "other";

/// Labels naming a pod: the first to be collapsed when a metric reaches its bound (pods come
/// and go: these are what churn).
const POD_LABELS: &[&str] = &["pod", "backend_pod"];
/// Labels naming a namespace or something in one (a Service): collapsed only when the label
/// sets with the pod collapsed reach the bound too. Every other label (`reason`, `function`,
/// `direction`, `event`) takes its values from a small, fixed set and is never collapsed.
const NAMESPACE_LABELS: &[&str] = &["namespace", "service"];

/// How often the label sets are looked at for idle ones (at most; when events come).
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// How far a label set was collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    /// Every label as it is.
    Full,
    /// [`POD_LABELS`] are [`OTHER`].
    Pods,
    /// [`POD_LABELS`] and [`NAMESPACE_LABELS`] are [`OTHER`].
    Namespaces,
}

impl Tier {
    /// Whether this tier collapses the label `name`.
    fn collapses(self, name: &str) -> bool {
        match self {
            Tier::Full => false,
            Tier::Pods => POD_LABELS.contains(&name),
            Tier::Namespaces => POD_LABELS.contains(&name) || NAMESPACE_LABELS.contains(&name),
        }
    }
}

/// The label sets of one metric by tier (values in the metric's label order), each with when
/// it was last counted.
#[derive(Debug, Default)]
struct Seen {
    full: HashMap<Vec<String>, Instant>,
    pods: HashMap<Vec<String>, Instant>,
    namespaces: HashMap<Vec<String>, Instant>,
}

impl Seen {
    fn tier(&mut self, tier: Tier) -> &mut HashMap<Vec<String>, Instant> {
        match tier {
            Tier::Full => &mut self.full,
            Tier::Pods => &mut self.pods,
            Tier::Namespaces => &mut self.namespaces,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.full.len() + self.pods.len() + self.namespaces.len()
    }
}

/// Label sets per metric, bounded. A metric keeps up to `limit` label sets as they are; past
/// that, a new label set is counted with its pod labels (`pod`, `backend_pod`) as [`OTHER`],
/// for up to `limit` such sets; past those, with its namespace labels (`namespace`, `service`)
/// as [`OTHER`] too. `reason`, `function`, `direction` and `event` are never collapsed. A label
/// set not counted for `idle` is forgotten (the exporter drops its series after the same
/// time), so its room goes to the next one.
pub(crate) struct Cardinality {
    limit: usize,
    idle: Duration,
    seen: HashMap<&'static str, Seen>,
    last_expiry: Option<Instant>,
    warned: bool,
}

impl Cardinality {
    /// Up to `limit` label sets per metric and tier, each forgotten after `idle` unused.
    pub(crate) fn new(limit: usize, idle: Duration) -> Self {
        Self { limit, idle, seen: HashMap::new(), last_expiry: None, warned: false }
    }

    /// Counts one event in the counter `metric` with `labels` (name, value), collapsed as the
    /// bound says.
    pub(crate) fn increment(&mut self, metric: &'static str, labels: Vec<(&'static str, String)>) {
        let labels: Vec<Label> = self.admit(metric, labels, Instant::now()).into_iter().map(|(k, v)| Label::new(k, v)).collect();
        counter!(metric, labels).increment(1);
    }

    /// `labels` as `metric` counts them at `now`: as they are while the metric has room (or
    /// already has them), else collapsed (see [`Cardinality`]).
    fn admit(&mut self, metric: &'static str, labels: Vec<(&'static str, String)>, now: Instant) -> Vec<(&'static str, String)> {
        if self.last_expiry.is_none_or(|last| now.saturating_duration_since(last) >= EXPIRE_EVERY) {
            self.expire(now);
        }
        let limit = self.limit;
        let seen = self.seen.entry(metric).or_default();
        let mut tier = Tier::Full;
        let mut values: Vec<String> = labels.iter().map(|(_, v)| v.clone()).collect();
        loop {
            let next = match tier {
                Tier::Full => Some(Tier::Pods),
                Tier::Pods => Some(Tier::Namespaces),
                // The last tier is bounded by the values of the labels never collapsed.
                Tier::Namespaces => None,
            };
            let sets = seen.tier(tier);
            if let Some(last) = sets.get_mut(&values) {
                *last = now;
                break;
            }
            if next.is_none() || sets.len() < limit {
                sets.insert(values.clone(), now);
                break;
            }
            tier = next.unwrap_or(Tier::Namespaces);
            values = labels.iter().map(|(k, v)| if tier.collapses(k) { OTHER.to_string() } else { v.clone() }).collect();
        }
        if tier != Tier::Full {
            counter!("tracer_metric_series_capped_total", "metric" => metric).increment(1);
            if !self.warned {
                log::warn!(
                    "{metric} has {limit} label sets (--max-series): new ones are counted with pod=\"{OTHER}\" (and, past {limit} of those, namespace=\"{OTHER}\"); label sets unused for --series-idle are forgotten"
                );
                self.warned = true;
            }
        }
        labels.into_iter().zip(values).map(|((k, _), v)| (k, v)).collect()
    }

    /// Forgets the label sets not counted within `idle` of `now`.
    fn expire(&mut self, now: Instant) {
        let idle = self.idle;
        for seen in self.seen.values_mut() {
            for tier in [Tier::Full, Tier::Pods, Tier::Namespaces] {
                seen.tier(tier).retain(|_, last| now.saturating_duration_since(*last) < idle);
            }
        }
        self.last_expiry = Some(now);
    }

    /// How many label sets `metric` has now.
    #[cfg(test)]
    fn series(&self, metric: &str) -> usize {
        self.seen.get(metric).map_or(0, Seen::len)
    }
}

/// The recorder, installed once for the process; the handle renders the text format. Every
/// series carries `node` (this node's name); counters not updated for `idle` are dropped from
/// the output (gauges stay: they are set once).
pub(crate) fn install(node: &str, idle: Duration) -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new().add_global_label("node", node).idle_timeout(MetricKindMask::COUNTER, Some(idle)).build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    for family in FamilyId::ALL {
        describe_metrics(family);
    }
    describe_counter!("tracer_events_seen_total", "Events the kernel programs matched, by probe");
    describe_counter!("tracer_events_lost_total", "Events lost because the ring buffer was full, by probe");
    describe_counter!(
        "tracer_events_counted_total",
        "Events over the drop rate budget (--max-rate), counted in the kernel by place instead of delivered, by probe (seen = delivered + lost + counted)"
    );
    describe_counter!(
        "tracer_metric_series_capped_total",
        "Events counted with pod (or namespace) \"other\" because their metric had --max-series label sets"
    );
    describe_gauge!("tracer_probe_up", "1 when the probe family runs on this node, 0 when this kernel cannot run it");
    describe_gauge!("tracer_build_info", "Always 1: the tracer version, its git commit (empty when not built from git) and the node's kernel");
}

/// `tracer_build_info{version, git, kernel} 1`.
pub(crate) fn set_build_info() {
    let git = option_env!("TRACER_GIT_COMMIT").unwrap_or_default();
    gauge!("tracer_build_info", "version" => env!("CARGO_PKG_VERSION"), "git" => git, "kernel" => crate::kernel::release()).set(1.0);
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
/// seen = delivered + lost + counted; counted (drops over `--max-rate`) only where there are any.
pub(crate) fn set_kernel_counts(probe: &'static str, seen: u64, lost: u64, counted: u64) {
    counter!("tracer_events_seen_total", "probe" => probe).absolute(seen);
    counter!("tracer_events_lost_total", "probe" => probe).absolute(lost);
    if counted > 0 {
        counter!("tracer_events_counted_total", "probe" => probe).absolute(counted);
    }
}

/// `tracer_probe_up{probe}`: whether the family runs on this node.
pub(crate) fn set_probe_up(probe: &'static str, up: bool) {
    gauge!("tracer_probe_up", "probe" => probe).set(if up { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drop_labels(reason: &str, ns: &str, pod: &str) -> Vec<(&'static str, String)> {
        vec![("reason", reason.into()), ("function", "nf_hook_slow".into()), ("namespace", ns.into()), ("pod", pod.into())]
    }

    fn values(labels: &[(&'static str, String)]) -> Vec<String> {
        labels.iter().map(|(_, v)| v.clone()).collect()
    }

    #[test]
    fn past_the_limit_only_pod_labels_become_other_then_namespaces() {
        let t0 = Instant::now();
        let mut c = Cardinality::new(2, Duration::from_secs(600));
        let admit = |c: &mut Cardinality, reason: &str, ns: &str, pod: &str| values(&c.admit("m", drop_labels(reason, ns, pod), t0)).join(",");
        assert_eq!(admit(&mut c, "NO_SOCKET", "shop", "web-0"), "NO_SOCKET,nf_hook_slow,shop,web-0");
        assert_eq!(admit(&mut c, "NO_SOCKET", "shop", "web-1"), "NO_SOCKET,nf_hook_slow,shop,web-1");
        assert_eq!(admit(&mut c, "NO_SOCKET", "shop", "web-0"), "NO_SOCKET,nf_hook_slow,shop,web-0", "known sets stay");
        // Full: reason, function and namespace stay, the pod is other.
        assert_eq!(admit(&mut c, "NETFILTER_DROP", "shop", "web-2"), "NETFILTER_DROP,nf_hook_slow,shop,other");
        assert_eq!(admit(&mut c, "NETFILTER_DROP", "shop", "web-3"), "NETFILTER_DROP,nf_hook_slow,shop,other", "counted in the same set");
        assert_eq!(admit(&mut c, "NETFILTER_DROP", "ci-1", "job-0"), "NETFILTER_DROP,nf_hook_slow,ci-1,other");
        // Those are full too: the namespace goes, the reason still stays.
        assert_eq!(admit(&mut c, "NO_ROUTE", "ci-2", "job-0"), "NO_ROUTE,nf_hook_slow,other,other");
        assert_eq!(admit(&mut c, "SOCKET_FILTER", "ci-3", "job-0"), "SOCKET_FILTER,nf_hook_slow,other,other");
        assert_eq!(c.series("m"), 6);
        assert_eq!(values(&c.admit("n", vec![("pod", "x".into())], t0)), ["x"], "per metric");
        // A Service and a backend pod: the backend pod goes with the pods, the Service with the namespaces.
        let mut c = Cardinality::new(1, Duration::from_secs(600));
        let nat = |client: &str, backend: &str| {
            vec![
                ("namespace", "shop".to_string()),
                ("pod", client.to_string()),
                ("service", "shop/db".to_string()),
                ("backend_pod", backend.to_string()),
            ]
        };
        c.admit("nat", nat("web-0", "db-0"), t0);
        assert_eq!(values(&c.admit("nat", nat("web-1", "db-1"), t0)), ["shop", "other", "shop/db", "other"]);
    }

    #[test]
    fn idle_label_sets_are_forgotten_and_their_room_reused() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(600);
        let mut c = Cardinality::new(1, idle);
        assert_eq!(values(&c.admit("m", drop_labels("NO_SOCKET", "shop", "web-0"), t0))[3], "web-0");
        // Still in use 9 minutes later: a new pod is other.
        let t9 = t0 + Duration::from_secs(540);
        assert_eq!(values(&c.admit("m", drop_labels("NO_SOCKET", "shop", "web-0"), t9))[3], "web-0");
        assert_eq!(values(&c.admit("m", drop_labels("NO_SOCKET", "shop", "web-1"), t9))[3], "other");
        // web-0 was last counted at t9: at t9 + 10 min it is gone, and web-1 takes its room.
        let later = t9 + idle;
        assert_eq!(values(&c.admit("m", drop_labels("NO_SOCKET", "shop", "web-1"), later))[3], "web-1");
        assert_eq!(c.series("m"), 1, "web-0 and the collapsed set expired");
        // Not yet idle: kept (the expiry looks at most every EXPIRE_EVERY).
        let soon = later + EXPIRE_EVERY;
        assert_eq!(values(&c.admit("m", drop_labels("NO_SOCKET", "shop", "web-2"), soon))[3], "other");
        assert_eq!(c.series("m"), 2);
    }

    #[test]
    fn a_pod_splits_into_namespace_and_name() {
        assert_eq!(split_pod(Some(&"shop/web-0".to_string())), ("shop".into(), "web-0".into()));
        assert_eq!(split_pod(None), (String::new(), String::new()));
    }
}
