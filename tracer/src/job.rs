//! kubectl-trace-style Jobs: a tracer command run once on one node, as a Kubernetes Job with the
//! least privilege it needs. `render` builds the manifest without a cluster.

use std::time::Duration;

use serde_json::{Value, json};

/// What a Job runs and where.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name (a DNS label).
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub image: String,
    /// The tracer command line inside the container (without the program name), with
    /// `-o json` and `--duration` already in it.
    pub args: Vec<String>,
    pub duration: Duration,
}

/// Seconds past --duration the Job may run (start-up, pulling the image) before Kubernetes
/// stops it.
const DEADLINE_SLACK_S: u64 = 120;
/// Finished Jobs (and their logs) are kept this long.
const TTL_AFTER_FINISHED_S: u64 = 3600;

/// The capabilities tracer needs, each for a reason (README, "Jobs"): BPF loads programs and
/// creates maps; PERFMON lets tracing programs read kernel memory (BTF tracepoints); NET_ADMIN
/// attaches tc/TCX programs; SYS_ADMIN is what setns(2) into a pod's network namespace demands
/// (conntrack counters, sysctls); SYS_PTRACE opens /proc/PID/ns/net of other users' processes;
/// SYS_RESOURCE raises RLIMIT_MEMLOCK on kernels before 5.11.
pub const CAPABILITIES: &[&str] = &["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"];

/// The Job manifest.
pub fn manifest(spec: &JobSpec) -> Value {
    let labels = json!({"app.kubernetes.io/name": "tracer", "app.kubernetes.io/component": "trace-job"});
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "namespace": spec.namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": spec.duration.as_secs() + DEADLINE_SLACK_S,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_S,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    // Pinned: the trace is of this node's kernel.
                    "nodeName": spec.node,
                    "restartPolicy": "Never",
                    "serviceAccountName": "tracer",
                    // The node's devices (tc) and the node's processes (pod network namespaces).
                    "hostNetwork": true,
                    "hostPID": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    // Tainted nodes (control plane, NoExecute) are where problems hide too.
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "tracer",
                        "image": spec.image,
                        "args": spec.args,
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {
                            "privileged": false,
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"], "add": CAPABILITIES},
                        },
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"cpu": "1", "memory": "256Mi"},
                        },
                        "volumeMounts": [
                            {"name": "btf", "mountPath": "/sys/kernel/btf", "readOnly": true},
                            {"name": "cri", "mountPath": "/run/containerd/containerd.sock", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "btf", "hostPath": {"path": "/sys/kernel/btf", "type": "Directory"}},
                        {"name": "cri", "hostPath": {"path": "/run/containerd/containerd.sock", "type": "Socket"}},
                    ],
                },
            },
        },
    })
}

/// YAML for a JSON value: block style, string values double-quoted JSON-style (valid YAML 1.2,
/// and no string can be misread as a number, a boolean or null), plain keys unquoted.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    emit(value, 0, &mut out);
    out
}

fn scalar(v: &Value) -> String {
    // serde_json's rendering of a scalar is valid YAML for it.
    v.to_string()
}

/// A mapping key as it is when plainly safe (Kubernetes field names, label keys), else quoted.
fn yaml_key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && k.starts_with(|c: char| c.is_ascii_alphabetic())
        && !["y", "n", "yes", "no", "on", "off", "true", "false", "null"].contains(&k.to_ascii_lowercase().as_str());
    if plain { k.to_string() } else { Value::String(k.to_string()).to_string() }
}

fn is_empty_collection(v: &Value) -> bool {
    matches!(v, Value::Object(m) if m.is_empty()) || matches!(v, Value::Array(a) if a.is_empty())
}

fn emit(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = yaml_key(k);
                match v {
                    Value::Object(_) | Value::Array(_) if !is_empty_collection(v) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        emit(v, indent + 2, out);
                    }
                    Value::Object(_) => out.push_str(&format!("{pad}{key}: {{}}\n")),
                    Value::Array(_) => out.push_str(&format!("{pad}{key}: []\n")),
                    _ => out.push_str(&format!("{pad}{key}: {}\n", scalar(v))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) if !is_empty_collection(item) => {
                        // `- ` then the first line of the item, the rest indented under it.
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        let inner = inner.strip_prefix(&" ".repeat(indent + 2)).unwrap_or(&inner);
                        out.push_str(&format!("{pad}- {inner}"));
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", if is_empty_collection(item) { item.to_string() } else { scalar(item) })),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_is_block_style_with_quoted_strings() {
        let v = json!({"a": {"b": ["x", 1, {"c": true, "d": "on"}]}, "e": [], "f": {}, "on": 1});
        assert_eq!(
            to_yaml(&v),
            "a:\n  b:\n    - \"x\"\n    - 1\n    - c: true\n      d: \"on\"\ne: []\nf: {}\n\"on\": 1\n"
        );
    }

    #[test]
    fn the_job_is_pinned_bounded_and_unprivileged() {
        let spec = JobSpec {
            name: "tracer-drops-x".into(),
            namespace: "kube-system".into(),
            node: "node-1".into(),
            image: "img".into(),
            args: vec!["drops".into(), "-o".into(), "json".into(), "--duration".into(), "30s".into()],
            duration: Duration::from_secs(30),
        };
        let m = manifest(&spec);
        assert_eq!(m["spec"]["template"]["spec"]["nodeName"], "node-1");
        assert_eq!(m["spec"]["activeDeadlineSeconds"], 150);
        let sc = &m["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"][0], "ALL");
    }
}
