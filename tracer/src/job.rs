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
pub const DEADLINE_SLACK_S: u64 = 120;
/// The tracer container's name in the Job's pod (`job logs` reads its log).
pub const CONTAINER: &str = "tracer";
/// Finished Jobs (and their logs) are kept this long.
const TTL_AFTER_FINISHED_S: u64 = 3600;

/// The capabilities the tracer command in `args` needs (`args[0]` is the command), as a
/// securityContext names them: what each command was measured to need with one capability
/// taken away at a time (README, "Capabilities"; `probes::CommandId::needs` has the
/// reason for each). A manifest cannot know the node's kernel, so it assumes one with CAP_BPF
/// (5.8+) that does not charge BPF maps to RLIMIT_MEMLOCK (5.11+); on older kernels tracer
/// names what it misses when it starts.
pub fn capabilities(args: &[String]) -> Vec<&'static str> {
    let command = args.first().map(String::as_str).unwrap_or_default();
    // `--iface NETNS:DEV` makes tracer attach inside another namespace: setns(2).
    let ifaces = args.windows(2).filter(|w| w[0] == "--iface").map(|w| w[1].as_str());
    let other_namespace = ifaces.chain(args.iter().filter_map(|a| a.strip_prefix("--iface="))).any(|i| i.contains(':'));
    crate::probes::CommandId::parse(command)
        .map(|c| c.needs(other_namespace))
        .unwrap_or_default()
        .iter()
        .map(|n| n.cap.k8s_name())
        .collect()
}

/// The Job manifest.
pub fn manifest(spec: &JobSpec) -> Value {
    let mut job = manifest_of(spec);
    // tc programs go on the node's veths and tunnels, which only the node's network namespace
    // holds. Tracing hooks see every namespace from any, so the other commands keep a pod network.
    if capabilities(&spec.args).contains(&"NET_ADMIN") {
        let pod = &mut job["spec"]["template"]["spec"];
        pod["hostNetwork"] = json!(true);
        pod["dnsPolicy"] = json!("ClusterFirstWithHostNet");
    }
    job
}

fn manifest_of(spec: &JobSpec) -> Value {
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
                    // The node's processes: pod network namespaces are found through them.
                    "hostPID": true,
                    // Tainted nodes (control plane, NoExecute) are where problems hide too.
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": CONTAINER,
                        "image": spec.image,
                        "args": spec.args,
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {
                            "privileged": false,
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"], "add": capabilities(&spec.args)},
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
        assert_eq!(sc["capabilities"]["add"], json!(["BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"]));
        assert_eq!(m["spec"]["template"]["spec"]["hostNetwork"], Value::Null, "drops needs no node devices");
        assert_eq!(m["spec"]["template"]["spec"]["hostPID"], true);
        let mtu = manifest(&JobSpec { args: vec!["mtu".into()], ..spec });
        assert_eq!(mtu["spec"]["template"]["spec"]["hostNetwork"], true, "tc goes on the node's devices");
    }

    #[test]
    fn capabilities_follow_the_command() {
        let caps = |args: &[&str]| capabilities(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(caps(&["retrans", "--pod", "a/b"]), ["BPF", "PERFMON", "SYS_PTRACE"]);
        assert!(!caps(&["mtu"]).contains(&"SYS_ADMIN"), "tc in its own namespace needs no setns");
        assert!(caps(&["mtu", "--iface", "node1:veth1"]).contains(&"SYS_ADMIN"));
        assert!(caps(&["mtu", "--iface=node1:veth1"]).contains(&"SYS_ADMIN"));
        assert!(!caps(&["mtu", "--iface", "eth0"]).contains(&"SYS_ADMIN"));
        assert_eq!(caps(&["serve"]), ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "SYSLOG", "SYS_ADMIN"]);
    }
}
