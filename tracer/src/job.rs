//! kubectl-trace-style Jobs: a tracer command run once on one node, as a Kubernetes Job with the
//! least privilege it needs. `render` builds the manifest without a cluster.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec as BatchJobSpec},
        core::v1::{
            Capabilities, Container, EnvVar, EnvVarSource, HostPathVolumeSource, ObjectFieldSelector, PodSpec, PodTemplateSpec, ResourceRequirements,
            SecurityContext, Toleration, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

/// What a Job runs and where.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
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
pub(crate) const DEADLINE_SLACK_S: u64 = 120;
/// The tracer container's name in the Job's pod (`job logs` reads its log).
pub(crate) const CONTAINER: &str = "tracer";
/// Finished Jobs (and their logs) are kept this long.
const TTL_AFTER_FINISHED_S: i32 = 3600;
/// The labels every tracer Job and its pod carry: `job list` finds them by these.
pub(crate) const LABELS: [(&str, &str); 2] = [("app.kubernetes.io/name", "tracer"), ("app.kubernetes.io/component", "trace-job")];

/// The manifest could not be written as YAML.
#[derive(Debug, thiserror::Error)]
#[error("writing the Job as YAML")]
pub(crate) struct YamlError(#[from] serde_saphyr::SerializeError);

/// The capabilities the tracer command in `args` needs (`args[0]` is the command), as a
/// securityContext names them: what each command was measured to need with one capability
/// taken away at a time (README, "Capabilities"; `probes::CommandId::needs` has the
/// reason for each). A manifest cannot know the node's kernel, so it assumes one with CAP_BPF
/// (5.8+) that does not charge BPF maps to RLIMIT_MEMLOCK (5.11+); on older kernels tracer
/// names what it misses when it starts.
pub(crate) fn capabilities(args: &[String]) -> Vec<&'static str> {
    let command = args.first().map(String::as_str).unwrap_or_default();
    // `--iface NETNS:DEV` makes tracer attach inside another namespace: setns(2).
    let ifaces = args.windows(2).filter(|w| w[0] == "--iface").map(|w| w[1].as_str());
    let other_namespace = ifaces.chain(args.iter().filter_map(|a| a.strip_prefix("--iface="))).any(|i| i.contains(':'));
    crate::probes::CommandId::parse(command).map(|c| c.needs(other_namespace)).unwrap_or_default().iter().map(|n| n.cap.k8s_name()).collect()
}

/// The Job manifest.
pub(crate) fn manifest(spec: &JobSpec) -> Job {
    let labels = || Some(LABELS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>());
    let quantities = |pairs: [(&str, &str); 2]| Some(pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect());
    let read_only_mount =
        |name: &str, path: &str| VolumeMount { name: name.into(), mount_path: path.into(), read_only: Some(true), ..VolumeMount::default() };
    let host_path = |name: &str, path: &str, kind: &str| Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource { path: path.into(), type_: Some(kind.into()) }),
        ..Volume::default()
    };
    let capabilities = capabilities(&spec.args);
    // tc programs go on the node's veths and tunnels, which only the node's network namespace
    // holds. Tracing hooks see every namespace from any, so the other commands keep a pod network.
    let node_network = capabilities.contains(&"NET_ADMIN");
    let container = Container {
        name: CONTAINER.into(),
        image: Some(spec.image.clone()),
        args: Some(spec.args.clone()),
        env: Some(vec![EnvVar {
            name: "NODE_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector { field_path: "spec.nodeName".into(), ..ObjectFieldSelector::default() }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: Some(capabilities.iter().map(|c| c.to_string()).collect()) }),
            ..SecurityContext::default()
        }),
        resources: Some(ResourceRequirements {
            requests: quantities([("cpu", "50m"), ("memory", "64Mi")]),
            limits: quantities([("cpu", "1"), ("memory", "256Mi")]),
            ..ResourceRequirements::default()
        }),
        volume_mounts: Some(vec![read_only_mount("btf", "/sys/kernel/btf"), read_only_mount("cri", "/run/containerd/containerd.sock")]),
        ..Container::default()
    };
    let pod = PodSpec {
        // Pinned: the trace is of this node's kernel.
        node_name: Some(spec.node.clone()),
        restart_policy: Some("Never".into()),
        service_account_name: Some("tracer".into()),
        // The node's processes: pod network namespaces are found through them.
        host_pid: Some(true),
        host_network: node_network.then_some(true),
        // A pod on the node's network still resolves cluster names.
        dns_policy: node_network.then(|| "ClusterFirstWithHostNet".into()),
        // Tainted nodes (control plane, NoExecute) are where problems hide too.
        tolerations: Some(vec![Toleration { operator: Some("Exists".into()), ..Toleration::default() }]),
        containers: vec![container],
        volumes: Some(vec![host_path("btf", "/sys/kernel/btf", "Directory"), host_path("cri", "/run/containerd/containerd.sock", "Socket")]),
        ..PodSpec::default()
    };
    // --duration is at most a year (cli::config::parse_duration): it fits.
    let deadline = i64::try_from(spec.duration.as_secs() + DEADLINE_SLACK_S).unwrap_or(i64::MAX);
    Job {
        metadata: ObjectMeta { name: Some(spec.name.clone()), namespace: Some(spec.namespace.clone()), labels: labels(), ..ObjectMeta::default() },
        spec: Some(BatchJobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_S),
            template: PodTemplateSpec { metadata: Some(ObjectMeta { labels: labels(), ..ObjectMeta::default() }), spec: Some(pod) },
            ..BatchJobSpec::default()
        }),
        status: None,
    }
}

/// The Job as YAML, block style as kubectl writes it. Strings a YAML 1.1 reader would take for
/// a number, a boolean or null (a CPU quantity of `1`) are quoted by the serializer; long
/// strings stay on one line, since folded scalars only make a manifest harder to grep.
pub(crate) fn to_yaml(job: &Job) -> Result<String, YamlError> {
    let options = serde_saphyr::ser_options! {
        compact_list_indent: false,
        prefer_block_scalars: false,
    };
    Ok(serde_saphyr::to_string_with_options(job, options)?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn drops_spec() -> JobSpec {
        JobSpec {
            name: "tracer-drops-x".into(),
            namespace: "kube-system".into(),
            node: "node-1".into(),
            image: "img".into(),
            args: vec!["drops".into(), "-o".into(), "json".into(), "--duration".into(), "30s".into()],
            duration: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_yaml_reads_back_as_the_same_job() {
        let job = manifest(&JobSpec { args: vec!["mtu".into(), "--iface".into(), "node1:veth1".into()], ..drops_spec() });
        let yaml = to_yaml(&job).expect("YAML");
        assert!(yaml.starts_with("apiVersion: batch/v1\nkind: Job\n"), "{yaml}");
        // Read back untyped: a quantity of `1` must stay the string Kubernetes wants, not 1.
        let back: Value = serde_saphyr::from_str(&yaml).expect("the YAML parses");
        assert_eq!(back, serde_json::to_value(&job).expect("JSON"), "{yaml}");
        assert_eq!(back["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"], "1", "{yaml}");
    }

    #[test]
    fn the_job_is_pinned_bounded_and_unprivileged() {
        let spec = drops_spec();
        let m = serde_json::to_value(manifest(&spec)).expect("JSON");
        assert_eq!(m["spec"]["template"]["spec"]["nodeName"], "node-1");
        assert_eq!(m["spec"]["activeDeadlineSeconds"], 150);
        let sc = &m["spec"]["template"]["spec"]["containers"][0]["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"][0], "ALL");
        assert_eq!(sc["capabilities"]["add"], json!(["BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"]));
        assert_eq!(m["spec"]["template"]["spec"]["hostNetwork"], Value::Null, "drops needs no node devices");
        assert_eq!(m["spec"]["template"]["spec"]["hostPID"], true);
        let mtu = serde_json::to_value(manifest(&JobSpec { args: vec!["mtu".into()], ..spec })).expect("JSON");
        assert_eq!(mtu["spec"]["template"]["spec"]["hostNetwork"], true, "tc goes on the node's devices");
        assert_eq!(mtu["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirstWithHostNet");
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
