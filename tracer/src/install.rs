//! `tracer install print`: the manifests that install tracer on a cluster, for this version —
//! its namespace (PodSecurity `privileged`), the read-only ServiceAccount, the roles of the
//! people who run Jobs, the DaemonSet of `tracer serve`, and a PodMonitor — built as typed
//! objects from the same pieces as the Jobs (`job.rs`), so the two cannot drift apart.
//! `deploy/*.yaml` are this output, checked by the tests.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, DaemonSetSpec},
        core::v1::{Container, ContainerPort, HTTPGetAction, Namespace, PodSpec, PodTemplateSpec, Probe, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use serde_json::json;

use crate::{
    cli::config::InstallConfig,
    job::{self, DEFAULT_CRI_SOCKET, NAMESPACE, SERVICE_ACCOUNT, YamlError},
};

/// The ClusterRole (and its binding) of the ServiceAccount: read pods and Services.
pub(crate) const READER_ROLE: &str = "tracer";
/// The Role of the people who run `tracer job` in the namespace.
pub(crate) const JOB_USER_ROLE: &str = "tracer-job-user";
/// The ClusterRole that finds pods (and lists tracer Jobs) in every namespace.
pub(crate) const CLUSTER_READER_ROLE: &str = "tracer-cluster-reader";
/// The bindings `--job-user-group` adds.
const JOB_USERS_BINDING: &str = "tracer-job-users";
const CLUSTER_READERS_BINDING: &str = "tracer-cluster-readers";
/// Where `serve` listens in the DaemonSet, on every address of the node (hostNetwork).
const METRICS_PORT: i32 = 9464;

/// The labels of everything installed; the DaemonSet's pods add [`METRICS_COMPONENT`], which
/// tells them from Job pods (the PodMonitor and scrape config select on it).
const NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "tracer");
const METRICS_COMPONENT: (&str, &str) = ("app.kubernetes.io/component", "metrics");

fn labels(extra: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(std::iter::once(&NAME_LABEL).chain(extra).map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

fn meta(name: &str, namespace: Option<&str>, extra_labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta { name: Some(name.into()), namespace: namespace.map(String::from), labels: labels(extra_labels), ..ObjectMeta::default() }
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> PolicyRule {
    let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    PolicyRule { api_groups: Some(vec![group.into()]), resources: Some(strings(resources)), verbs: strings(verbs), ..PolicyRule::default() }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef { api_group: "rbac.authorization.k8s.io".into(), kind: kind.into(), name: name.into() }
}

fn groups(names: &[String]) -> Option<Vec<Subject>> {
    Some(
        names
            .iter()
            .map(|g| Subject { kind: "Group".into(), api_group: Some("rbac.authorization.k8s.io".into()), name: g.clone(), namespace: None })
            .collect(),
    )
}

const NAMESPACE_COMMENT: &str = "\
tracer's own namespace: its DaemonSet, its ServiceAccount and the Jobs of `tracer job run`.
PodSecurity level `privileged`: tracer's pods need hostPID and capabilities (BPF, PERFMON,
SYS_PTRACE, ...) that the `baseline` and `restricted` levels refuse. They are not privileged
containers, but those capabilities are node-root-equivalent: whoever may create pods here is
root on every node.";

const SERVICE_ACCOUNT_COMMENT: &str = "\
The ServiceAccount tracer's pods run as (the DaemonSet, `tracer job run`'s Jobs). It may read
what the pod source and Service names need, nothing else: get/list/watch pods (tracer asks
only for its node's, with the field selector spec.nodeName; RBAC itself cannot narrow a read
to one node) and Services (`tracer nat`, `diagnose`: which Service a NATed address is). No
write verbs, no Secrets.";

const JOB_USER_COMMENT: &str = "\
For the people who run `tracer job run/logs/list/delete` in namespace tracer: create, read and
delete Jobs, find their pods, read their logs and Events (why a pod does not start). This is
not a narrow grant: a Job in this namespace may run any pod, with hostPID and capabilities,
on any node, not only tracer's. Bind it only to people you would give root on the nodes.";

const CLUSTER_READER_COMMENT: &str = "\
Read-only, cluster-wide: `tracer job run --pod NS/NAME` reads that pod (its node) in its own
namespace, `tracer job list -A` lists Jobs in all of them, and `tracer job run --all-nodes`
lists the nodes (names and labels: which are Linux) to make one Job on each. Without it, pass
--node.";

const DAEMONSET_COMMENT: &str = "\
tracer serve on every Linux node (amd64, arm64): Prometheus metrics on port 9464 of each node.
Why each setting (see also `tracer check` on a node):
- hostNetwork: the MTU probe's tc programs go on the node's pod veths and tunnels, which live
  in the node's network namespace; the metrics port is then the node's.
- hostPID: pod network namespaces are found through /proc/PID/ns/net of their processes.
- capabilities: what `tracer serve` was measured to need (README, \"Capabilities\"), no more:
  BPF (load programs, create maps), PERFMON (tracing programs read kernel memory), NET_ADMIN
  (load and attach the tc/TCX programs), SYS_PTRACE (open /proc/PID/ns/net of processes that
  hold capabilities tracer lacks: how pod network namespaces are found), SYSLOG (kernel
  addresses in /proc/kallsyms, to name the dropping function in tracer_drops_total), SYS_ADMIN
  (setns(2) into pod namespaces: conntrack end events of connections there). Not SYS_RESOURCE:
  kernels from 5.11 do not charge BPF maps to RLIMIT_MEMLOCK (add it on older ones; tracer
  names it when it is missing there). No privileged: true, but these capabilities are still
  node-root-equivalent.
- the CRI socket (read-only): pod names (`tracer install print --cri-socket PATH` for k3s,
  RKE2 or CRI-O). The kernel's BTF needs no mount: the container's own /sys shows it, and a
  node without it still runs tracer (on tracefs).
- probes: /healthz answers once every probe is attached; the startup probe allows 5 minutes
  for that (BTF parsing on a slow node).
- NODE_NAME (spec.nodeName): the `node` label of every metric.
- resources: they bound tracer's own process (reading events, naming pods, metrics). The eBPF
  programs run in the softirq or task that handles each packet: that CPU is charged to the
  node and the pods whose packets they are, not to this limit (docs/cost.md).
- image: this tracer's version, pulled IfNotPresent.";

const PODMONITOR_COMMENT: &str = "\
For prometheus-operator: scrape the DaemonSet's metrics (needs its CRDs; without the operator,
deploy/prometheus-scrape.yaml is the same for a plain Prometheus). honorLabels: every series of
tracer carries `node` itself, and `namespace`/`pod` name the pods of the events, not tracer's
pod: kept as tracer wrote them, not renamed to exported_*. The relabelling gives `node` to the
target's own series (`up`).";

/// The namespace, labelled for PodSecurity `privileged`.
fn namespace() -> Namespace {
    Namespace { metadata: meta(NAMESPACE, None, &[("pod-security.kubernetes.io/enforce", "privileged")]), ..Namespace::default() }
}

fn reader() -> (ServiceAccount, ClusterRole, ClusterRoleBinding) {
    let sa = ServiceAccount { metadata: meta(SERVICE_ACCOUNT, Some(NAMESPACE), &[]), ..ServiceAccount::default() };
    let role = ClusterRole {
        metadata: meta(READER_ROLE, None, &[]),
        rules: Some(vec![rule("", &["pods", "services"], &["get", "list", "watch"])]),
        ..ClusterRole::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta(READER_ROLE, None, &[]),
        role_ref: role_ref("ClusterRole", READER_ROLE),
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: SERVICE_ACCOUNT.into(),
            namespace: Some(NAMESPACE.into()),
            api_group: None,
        }]),
    };
    (sa, role, binding)
}

fn job_user() -> Role {
    Role {
        metadata: meta(JOB_USER_ROLE, Some(NAMESPACE), &[]),
        rules: Some(vec![
            rule("batch", &["jobs"], &["create", "get", "list", "delete"]),
            rule("", &["pods"], &["get", "list"]),
            rule("", &["pods/log"], &["get"]),
            rule("", &["events"], &["list"]),
        ]),
    }
}

fn cluster_reader() -> ClusterRole {
    ClusterRole {
        metadata: meta(CLUSTER_READER_ROLE, None, &[]),
        rules: Some(vec![rule("", &["pods"], &["get", "list"]), rule("batch", &["jobs"], &["list"]), rule("", &["nodes"], &["list"])]),
        ..ClusterRole::default()
    }
}

/// `serve`'s probes: all on /healthz of the metrics port.
fn probe(period_s: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction { path: Some("/healthz".into()), port: IntOrString::String("metrics".into()), ..HTTPGetAction::default() }),
        period_seconds: Some(period_s),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

/// The DaemonSet of `tracer serve`.
fn daemonset(config: &InstallConfig) -> DaemonSet {
    let mut args: Vec<String> =
        ["serve", "--metrics", &format!("0.0.0.0:{METRICS_PORT}"), "--quiet", "--pods-from", "cri"].iter().map(|a| a.to_string()).collect();
    if config.cri_socket != DEFAULT_CRI_SOCKET {
        args.extend(["--cri-socket".into(), config.cri_socket.clone()]);
    }
    if config.this_node {
        // Nodes sharing one kernel (kind, k3d, minikube): each pod reports its own node only.
        args.push("--this-node".into());
    }
    let capabilities = job::capabilities(&args);
    let (volume, mount) = job::cri_volume(&config.cri_socket);
    let container = Container {
        name: "tracer".into(),
        image: Some(config.image.as_str().into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(vec![job::node_name_env()]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".into()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        startup_probe: Some(probe(5, 60)),
        liveness_probe: Some(probe(20, 3)),
        readiness_probe: Some(probe(10, 3)),
        security_context: Some(job::security_context(&capabilities)),
        resources: Some(job::resources()),
        volume_mounts: Some(vec![mount]),
        ..Container::default()
    };
    let (node_selector, affinity) = job::node_placement();
    let pod = PodSpec {
        service_account_name: Some(SERVICE_ACCOUNT.into()),
        host_network: Some(true),
        host_pid: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".into()),
        node_selector: Some(node_selector),
        affinity: Some(affinity),
        tolerations: Some(job::tolerate_everything()),
        containers: vec![container],
        volumes: Some(vec![volume]),
        ..PodSpec::default()
    };
    let pod_labels = labels(&[METRICS_COMPONENT]);
    DaemonSet {
        metadata: meta("tracer", Some(NAMESPACE), &[METRICS_COMPONENT]),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: pod_labels.clone(), ..LabelSelector::default() },
            template: PodTemplateSpec { metadata: Some(ObjectMeta { labels: pod_labels, ..ObjectMeta::default() }), spec: Some(pod) },
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

/// prometheus-operator's PodMonitor (not a type k8s-openapi knows: its documented fields).
fn podmonitor() -> serde_json::Value {
    let selector: BTreeMap<&str, &str> = [NAME_LABEL, METRICS_COMPONENT].into_iter().collect();
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {"name": "tracer", "namespace": NAMESPACE, "labels": {NAME_LABEL.0: NAME_LABEL.1}},
        "spec": {
            "selector": {"matchLabels": selector},
            "podMetricsEndpoints": [{
                "port": "metrics",
                "path": "/metrics",
                "interval": "30s",
                // tracer's own labels win over the target's: its `namespace` and `pod` (of the
                // event's pod, not tracer's) and `node` (the same node as the relabelling's).
                "honorLabels": true,
                "relabelings": [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}],
            }],
        },
    })
}

/// One document of the stream: its comment, then the object.
fn document<T: serde::Serialize>(comment: &str, object: &T) -> Result<String, YamlError> {
    let comment: String = comment.lines().map(|l| if l.is_empty() { "#\n".to_string() } else { format!("# {l}\n") }).collect();
    Ok(comment + &job::to_yaml(object)?)
}

/// Everything `install print` prints, as one YAML stream (`kubectl apply -f -` order: the
/// namespace first).
pub(crate) fn manifests(config: &InstallConfig) -> Result<String, YamlError> {
    let (sa, reader_role, reader_binding) = reader();
    let mut docs = vec![
        document(NAMESPACE_COMMENT, &namespace())?,
        document(SERVICE_ACCOUNT_COMMENT, &sa)?,
        job::to_yaml(&reader_role)?,
        job::to_yaml(&reader_binding)?,
        document(JOB_USER_COMMENT, &job_user())?,
        document(CLUSTER_READER_COMMENT, &cluster_reader())?,
    ];
    if !config.job_user_groups.is_empty() {
        let subjects = groups(&config.job_user_groups);
        let users = RoleBinding {
            metadata: meta(JOB_USERS_BINDING, Some(NAMESPACE), &[]),
            role_ref: role_ref("Role", JOB_USER_ROLE),
            subjects: subjects.clone(),
        };
        let readers = ClusterRoleBinding {
            metadata: meta(CLUSTER_READERS_BINDING, None, &[]),
            role_ref: role_ref("ClusterRole", CLUSTER_READER_ROLE),
            subjects,
        };
        docs.push(job::to_yaml(&users)?);
        docs.push(job::to_yaml(&readers)?);
    }
    if config.daemonset {
        docs.push(document(DAEMONSET_COMMENT, &daemonset(config))?);
    }
    if config.podmonitor {
        docs.push(document(PODMONITOR_COMMENT, &podmonitor())?);
    }
    let header = format!(
        "# tracer {}, image {}: printed by `tracer install print`; apply with `kubectl apply -f`.\n# Uninstall: {}",
        env!("CARGO_PKG_VERSION"),
        config.image,
        uninstall_line()
    );
    Ok(header + &docs.join("---\n"))
}

/// The command that removes everything [`manifests`] creates: the namespace (with the
/// DaemonSet, the ServiceAccount, the Role, its binding and every Job) and the cluster-wide
/// roles and bindings.
pub(crate) fn uninstall_line() -> String {
    format!(
        "kubectl delete --ignore-not-found namespace/{NAMESPACE} clusterrolebinding/{READER_ROLE} clusterrolebinding/{CLUSTER_READERS_BINDING} \
         clusterrole/{READER_ROLE} clusterrole/{CLUSTER_READER_ROLE}\n"
    )
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::job::Image;

    fn config() -> InstallConfig {
        InstallConfig {
            image: Image::parse("registry.example/tracer:1.2.3").expect("image"),
            cri_socket: DEFAULT_CRI_SOCKET.into(),
            daemonset: true,
            podmonitor: false,
            job_user_groups: vec![],
            uninstall: false,
            this_node: false,
        }
    }

    fn documents(yaml: &str) -> Vec<Value> {
        yaml.split("---\n").map(|d| serde_saphyr::from_str::<Value>(d).expect("a YAML document")).collect()
    }

    #[test]
    fn the_stream_starts_with_the_namespace_and_holds_the_daemonset() {
        let docs = documents(&manifests(&config()).expect("YAML"));
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds, ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "ClusterRole", "DaemonSet"]);
        assert_eq!(docs[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");
        let ds = &docs[6];
        let c = &ds["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "registry.example/tracer:1.2.3");
        assert_eq!(c["args"], json!(["serve", "--metrics", "0.0.0.0:9464", "--quiet", "--pods-from", "cri"]));
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"]);
    }

    #[test]
    fn the_cri_socket_goes_to_the_mount_and_the_flag() {
        let docs = documents(&manifests(&InstallConfig { cri_socket: "/var/run/crio/crio.sock".into(), ..config() }).expect("YAML"));
        let pod = &docs.last().expect("the DaemonSet")["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"][0]["hostPath"]["path"], "/var/run/crio/crio.sock");
        assert_eq!(pod["containers"][0]["volumeMounts"][0]["mountPath"], "/var/run/crio/crio.sock");
        let args = pod["containers"][0]["args"].as_array().expect("args");
        assert_eq!(args[args.len() - 2..], [json!("--cri-socket"), json!("/var/run/crio/crio.sock")]);
    }

    #[test]
    fn this_node_scopes_the_daemonset() {
        let docs = documents(&manifests(&InstallConfig { this_node: true, ..config() }).expect("YAML"));
        let pod = &docs.last().expect("the DaemonSet")["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["args"].as_array().and_then(|a| a.last()), Some(&json!("--this-node")));
        assert_eq!(pod["hostNetwork"], true, "its own namespace is the node's");
    }

    #[test]
    fn groups_get_bindings_and_options_leave_parts_out() {
        let yaml = manifests(&InstallConfig { job_user_groups: vec!["sre".into()], daemonset: false, ..config() }).expect("YAML");
        let docs = documents(&yaml);
        let binding = docs.iter().find(|d| d["kind"] == "RoleBinding").expect("a RoleBinding");
        assert_eq!((binding["metadata"]["namespace"].as_str(), binding["roleRef"]["name"].as_str()), (Some(NAMESPACE), Some(JOB_USER_ROLE)));
        assert_eq!(binding["subjects"][0]["name"], "sre");
        assert!(docs.iter().all(|d| d["kind"] != "DaemonSet"));
        let with_monitor = documents(&manifests(&InstallConfig { podmonitor: true, ..config() }).expect("YAML"));
        assert_eq!(with_monitor.last().expect("docs")["kind"], "PodMonitor");
        assert!(uninstall_line().starts_with("kubectl delete --ignore-not-found namespace/tracer "));
    }
}
