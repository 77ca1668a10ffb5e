//! kubectl-trace-style Jobs: a tracer command run once on one node, as a Kubernetes Job with the
//! least privilege it needs. `render` builds the manifest without a cluster.
//!
//! The pieces every tracer pod shares (the image, where it may run, its security context, the
//! host paths its command needs) live here too: `install` builds the DaemonSet from them.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        batch::v1::{Job, JobSpec as BatchJobSpec},
        core::v1::{
            Affinity, Capabilities, Container, EnvVar, EnvVarSource, HostPathVolumeSource, NodeAffinity, NodeSelector, NodeSelectorRequirement,
            NodeSelectorTerm, ObjectFieldSelector, PodSpec, PodTemplateSpec, ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::ObjectMeta},
};

use crate::{kernel::features, probes::CommandId};

/// The environment variable that names the image (at run time, and when tracer is built).
pub(crate) const IMAGE_ENV: &str = "TRACER_IMAGE";

/// The image manifests run unless `--image` or `$TRACER_IMAGE` say otherwise: `TRACER_IMAGE` as
/// it was when this binary was built, else the project's image tagged with this version (never
/// `latest`: with `imagePullPolicy: IfNotPresent` a moving tag would run whatever a node pulled
/// first).
pub(crate) const BUILD_IMAGE: &str = match option_env!("TRACER_IMAGE") {
    Some(image) => image,
    None => concat!("ghcr.io/tracer-project/tracer:", env!("CARGO_PKG_VERSION")),
};

/// The namespace tracer's Jobs, DaemonSet and ServiceAccount live in unless told otherwise. It
/// is tracer's own, labelled for PodSecurity `privileged` (`install print`): hostPID and the
/// capabilities below are refused by the `baseline` and `restricted` levels.
pub(crate) const NAMESPACE: &str = "tracer";
/// The ServiceAccount every tracer pod runs as (read-only: pods and Services).
pub(crate) const SERVICE_ACCOUNT: &str = "tracer";
/// The CPU architectures the project's image is built for (`kubernetes.io/arch`).
pub(crate) const IMAGE_ARCHES: [&str; 2] = ["amd64", "arm64"];
/// containerd's CRI socket, which tracer uses when the command names none.
pub(crate) const DEFAULT_CRI_SOCKET: &str = "/run/containerd/containerd.sock";

/// What a Job runs and where.
#[derive(Debug, Clone)]
pub(crate) struct JobSpec {
    /// Job name (a DNS label).
    pub name: String,
    /// The Job's namespace (its ServiceAccount `tracer` must exist there).
    pub namespace: String,
    /// The node it is pinned to.
    pub node: String,
    /// The image, checked.
    pub image: Image,
    /// The tracer command line inside the container (without the program name), with
    /// `-o json` and `--duration` already in it for tracing commands.
    pub args: Vec<String>,
    /// How long the command traces.
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
#[error("writing the manifest as YAML")]
pub(crate) struct YamlError(#[from] serde_saphyr::SerializeError);

/// Why a text is not an image reference.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImageError {
    #[error("empty")]
    Empty,
    #[error("{0:?} is not allowed in an image reference")]
    Character(char),
    #[error("the repository {0:?} must be lower-case letters, digits and . _ - separated by /")]
    Repository(String),
    #[error("the tag {0:?} must be letters, digits, _ . - (at most 128, not starting with . or -)")]
    Tag(String),
    #[error("the digest {0:?} must be ALGORITHM:HEX, e.g. sha256:...")]
    Digest(String),
}

/// A container image reference (`[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`), checked as the
/// distribution spec writes them, so that a typo fails here and not as a pull error on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image {
    reference: String,
    tag: Option<String>,
    digest: bool,
}

impl Image {
    /// Checks `text` as an image reference.
    pub(crate) fn parse(text: &str) -> Result<Self, ImageError> {
        if text.is_empty() {
            return Err(ImageError::Empty);
        }
        if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()) {
            return Err(ImageError::Character(c));
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                let ok = digest.split_once(':').is_some_and(|(alg, hex)| {
                    !alg.is_empty()
                        && alg.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                        && hex.len() >= 32
                        && hex.bytes().all(|b| b.is_ascii_hexdigit())
                });
                if !ok {
                    return Err(ImageError::Digest(digest.into()));
                }
                (name, true)
            }
            None => (text, false),
        };
        // A `:` after the last `/` starts the tag; one before it is a registry's port.
        let (repository, tag) = match name.rfind(':') {
            Some(colon) if name[colon..].find('/').is_none() => (&name[..colon], Some(&name[colon + 1..])),
            _ => (name, None),
        };
        if let Some(tag) = tag {
            let ok = (1..=128).contains(&tag.len())
                && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                && !tag.starts_with(['.', '-']);
            if !ok {
                return Err(ImageError::Tag(tag.into()));
            }
        }
        let mut parts: Vec<&str> = repository.split('/').collect();
        // The first part is a registry when it looks like a host: a dot, a port or localhost.
        if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
            let host = parts.remove(0);
            if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b)) || host.starts_with(['.', '-', ':']) {
                return Err(ImageError::Repository(repository.into()));
            }
        }
        let component_ok = |c: &&str| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if parts.is_empty() || !parts.iter().all(component_ok) {
            return Err(ImageError::Repository(repository.into()));
        }
        Ok(Self { reference: text.into(), tag: tag.map(String::from), digest })
    }

    /// The reference as given.
    pub(crate) fn as_str(&self) -> &str {
        &self.reference
    }

    /// Why this image may hold another tracer than this one, if it may: its tag is not this
    /// version (`v` prefix allowed), or it has none (`latest`). A digest alone pins an exact
    /// image on purpose and says nothing about its version, so it is trusted.
    pub(crate) fn version_mismatch(&self) -> Option<String> {
        let version = env!("CARGO_PKG_VERSION");
        match &self.tag {
            Some(tag) if tag == version || tag.strip_prefix('v') == Some(version) => None,
            Some(tag) => Some(format!(
                "image {} is tagged {tag}, this tracer is {version}: the tracer in the pod may not take the same flags or print the same JSON (use the :{version} tag)",
                self.reference
            )),
            None if self.digest => None,
            None => Some(format!(
                "image {} has no tag, so it runs whatever `latest` is on each node, not necessarily tracer {version} (use the :{version} tag)",
                self.reference
            )),
        }
    }
}

impl std::fmt::Display for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reference)
    }
}

/// Says once, as a warning, when `image` may not hold this tracer's version.
pub(crate) fn warn_version(image: &Image) {
    if let Some(why) = image.version_mismatch() {
        log::warn!("{why}");
    }
}

/// The commands a Job may run whose needs are not one probe command's.
const CHECK: &str = "check";
const PODS: &str = "pods";

/// The capabilities the tracer command in `args` needs (`args[0]` is the command), as a
/// securityContext names them: what each command was measured to need with one capability
/// taken away at a time (README, "Capabilities"; `probes::CommandId::needs` has the
/// reason for each). A manifest cannot know the node's kernel, so it assumes one with CAP_BPF
/// (5.8+) that does not charge BPF maps to RLIMIT_MEMLOCK (5.11+); on older kernels tracer
/// names what it misses when it starts. `check` tries every family's hooks, so it gets what
/// all of them need (`serve`'s); `pods` only reads /proc/PID/ns/net of the pods' processes.
pub(crate) fn capabilities(args: &[String]) -> Vec<&'static str> {
    let command = args.first().map(String::as_str).unwrap_or_default();
    // `--iface NETNS:DEV` makes tracer attach inside another namespace: setns(2).
    let ifaces = args.windows(2).filter(|w| w[0] == "--iface").map(|w| w[1].as_str());
    let other_namespace = ifaces.chain(args.iter().filter_map(|a| a.strip_prefix("--iface="))).any(|i| i.contains(':'));
    // `--probes` of watch, diagnose and serve narrows the families (checked before this).
    let chosen: Vec<String> = flag_values(args, "--probes").flat_map(|v| v.split(',')).map(String::from).collect();
    let needs = match command {
        CHECK => CommandId::Serve.needs(false),
        PODS => vec![features::SYS_PTRACE],
        _ => match CommandId::parse(command) {
            Some(c) if !chosen.is_empty() && !c.alone() => {
                crate::probes::needs_of(&crate::probes::parse_families(&chosen).unwrap_or_else(|_| c.families().to_vec()), other_namespace)
            }
            Some(c) => c.needs(other_namespace),
            None => Vec::new(),
        },
    };
    needs.iter().map(|n| n.cap.k8s_name()).collect()
}

/// The last value of `--flag V` or `--flag=V` in `args`.
fn flag_value<'a>(args: &'a [String], flag: &'a str) -> Option<&'a str> {
    flag_values(args, flag).last()
}

/// Every value of `--flag V` and `--flag=V` in `args`, in order.
fn flag_values<'a>(args: &'a [String], flag: &'a str) -> impl Iterator<Item = &'a str> {
    args.iter().enumerate().filter_map(move |(i, arg)| {
        if arg == flag { args.get(i + 1).map(String::as_str) } else { arg.strip_prefix(flag).and_then(|rest| rest.strip_prefix('=')) }
    })
}

/// The CRI socket the command in `args` will open, which the pod must mount: `--cri-socket`,
/// else containerd's; none when its pods come from elsewhere (`--pods-from kube|file:|none`)
/// or the command reads no pods (`check`).
pub(crate) fn cri_socket(args: &[String]) -> Option<String> {
    if args.first().is_none_or(|c| c == CHECK) {
        return None;
    }
    match flag_value(args, "--pods-from") {
        Some("kube" | "none") => return None,
        Some(from) if from.starts_with("file:") => return None,
        _ => {}
    }
    Some(flag_value(args, "--cri-socket").unwrap_or(DEFAULT_CRI_SOCKET).to_string())
}

/// The labels of every tracer Job and its pod, as a map.
fn job_labels() -> BTreeMap<String, String> {
    LABELS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The node's name, from the downward API: the pod source and the events' `node` field use it.
pub(crate) fn node_name_env() -> EnvVar {
    EnvVar {
        name: "NODE_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "spec.nodeName".into(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Not privileged: every capability dropped but `capabilities`, a read-only root, no privilege
/// escalation.
pub(crate) fn security_context(capabilities: &[&str]) -> SecurityContext {
    SecurityContext {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: Some(capabilities.iter().map(|c| c.to_string()).collect()) }),
        ..SecurityContext::default()
    }
}

/// Requests and limits: tracing is light, a storm is bounded by the ring buffer.
pub(crate) fn resources() -> ResourceRequirements {
    let quantities = |pairs: [(&str, &str); 2]| Some(pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect());
    ResourceRequirements {
        requests: quantities([("cpu", "50m"), ("memory", "64Mi")]),
        limits: quantities([("cpu", "1"), ("memory", "256Mi")]),
        ..ResourceRequirements::default()
    }
}

/// The CRI socket at the same path in the container, read-only. `Socket`: a path that is not
/// one stops the pod with a FailedMount Event naming the path (which `job run` reports at once
/// with what to pass instead). The unchecked type (`""`) would be worse: the runtime then
/// creates a missing source as a directory (containerd does, checked in the node lab), which
/// leaves a directory where a runtime that starts later wants its socket.
pub(crate) fn cri_volume(socket: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: "cri".into(),
        host_path: Some(HostPathVolumeSource { path: socket.into(), type_: Some("Socket".into()) }),
        ..Volume::default()
    };
    (volume, VolumeMount { name: "cri".into(), mount_path: socket.into(), read_only: Some(true), ..VolumeMount::default() })
}

/// Linux nodes of the architectures the image is built for. A Job is pinned with `nodeName`,
/// which skips the scheduler (it runs while the scheduler is down, too); the kubelet still
/// checks these at admission and rejects the pod (`NodeAffinity`) on another OS or arch, which
/// `job run` reports, rather than running an image that cannot execute there.
pub(crate) fn node_placement() -> (BTreeMap<String, String>, Affinity) {
    let selector = BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]);
    let arch = NodeSelectorRequirement {
        key: "kubernetes.io/arch".into(),
        operator: "In".into(),
        values: Some(IMAGE_ARCHES.iter().map(|a| a.to_string()).collect()),
    };
    let affinity = Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm { match_expressions: Some(vec![arch]), ..NodeSelectorTerm::default() }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    };
    (selector, affinity)
}

/// Every taint tolerated: control-plane and NoExecute nodes are where problems hide too.
pub(crate) fn tolerate_everything() -> Vec<Toleration> {
    vec![Toleration { operator: Some("Exists".into()), ..Toleration::default() }]
}

/// The Job manifest.
pub(crate) fn manifest(spec: &JobSpec) -> Job {
    let capabilities = capabilities(&spec.args);
    // tc programs go on the node's veths and tunnels, which only the node's network namespace
    // holds. Tracing hooks see every namespace from any, so the other commands keep a pod network,
    // unless `--this-node` scopes them to tracer's own namespace, which must then be the node's.
    let node_network = capabilities.contains(&"NET_ADMIN") || spec.args.iter().any(|a| a == "--this-node");
    // The kernel's BTF (/sys/kernel/btf) needs no mount: the container's own read-only /sys
    // shows it, and a node without it still starts the pod (tracer then reads tracefs). A
    // hostPath there would stop such a pod (no type: the runtime's mkdir in sysfs fails).
    let (volumes, mounts): (Vec<_>, Vec<_>) = cri_socket(&spec.args).map(|s| cri_volume(&s)).into_iter().unzip();
    let container = Container {
        name: CONTAINER.into(),
        image: Some(spec.image.as_str().into()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(spec.args.clone()),
        env: Some(vec![node_name_env()]),
        security_context: Some(security_context(&capabilities)),
        resources: Some(resources()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    };
    let (node_selector, affinity) = node_placement();
    let pod = PodSpec {
        // Pinned: the trace is of this node's kernel.
        node_name: Some(spec.node.clone()),
        node_selector: Some(node_selector),
        affinity: Some(affinity),
        restart_policy: Some("Never".into()),
        service_account_name: Some(SERVICE_ACCOUNT.into()),
        // The node's processes: pod network namespaces are found through them.
        host_pid: Some(true),
        host_network: node_network.then_some(true),
        // A pod on the node's network still resolves cluster names.
        dns_policy: node_network.then(|| "ClusterFirstWithHostNet".into()),
        tolerations: Some(tolerate_everything()),
        containers: vec![container],
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..PodSpec::default()
    };
    // --duration is at most a year (cli::config::parse_duration): it fits.
    let deadline = i64::try_from(spec.duration.as_secs() + DEADLINE_SLACK_S).unwrap_or(i64::MAX);
    Job {
        metadata: ObjectMeta {
            name: Some(spec.name.clone()),
            namespace: Some(spec.namespace.clone()),
            labels: Some(job_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(BatchJobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline),
            ttl_seconds_after_finished: Some(TTL_AFTER_FINISHED_S),
            template: PodTemplateSpec { metadata: Some(ObjectMeta { labels: Some(job_labels()), ..ObjectMeta::default() }), spec: Some(pod) },
            ..BatchJobSpec::default()
        }),
        status: None,
    }
}

/// An object as YAML, block style as kubectl writes it. Strings a YAML 1.1 reader would take
/// for a number, a boolean or null (a CPU quantity of `1`) are quoted by the serializer; long
/// strings stay on one line, since folded scalars only make a manifest harder to grep.
pub(crate) fn to_yaml<T: serde::Serialize>(object: &T) -> Result<String, YamlError> {
    let options = serde_saphyr::ser_options! {
        compact_list_indent: false,
        prefer_block_scalars: false,
    };
    Ok(serde_saphyr::to_string_with_options(object, options)?)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn drops_spec() -> JobSpec {
        JobSpec {
            name: "tracer-drops-x".into(),
            namespace: NAMESPACE.into(),
            node: "node-1".into(),
            image: Image::parse("registry.example/tracer:1").expect("an image"),
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
        let pod = &m["spec"]["template"]["spec"];
        assert_eq!(pod["nodeName"], "node-1");
        assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
        let arch = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"][0];
        assert_eq!(*arch, json!({"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]}));
        assert_eq!(m["spec"]["activeDeadlineSeconds"], 150);
        let c = &pod["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["capabilities"]["drop"][0], "ALL");
        assert_eq!(sc["capabilities"]["add"], json!(["BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"]));
        assert_eq!(pod["hostNetwork"], Value::Null, "drops needs no node devices");
        assert_eq!(pod["hostPID"], true);
        assert_eq!(pod["volumes"], json!([{"name": "cri", "hostPath": {"path": DEFAULT_CRI_SOCKET, "type": "Socket"}}]), "no BTF mount");
        let this_node = serde_json::to_value(manifest(&JobSpec { args: vec!["drops".into(), "--this-node".into()], ..spec.clone() })).expect("JSON");
        assert_eq!(this_node["spec"]["template"]["spec"]["hostNetwork"], true, "--this-node scopes to tracer's own namespace: the node's");
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
        // --probes narrows them to the families chosen; without mtu, no NET_ADMIN (so no hostNetwork).
        assert_eq!(caps(&["watch", "--probes", "drops,tcp"]), ["BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"]);
        assert_eq!(caps(&["diagnose", "--probes=tcp", "--probes", "mtu"]), ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE"]);
        assert_eq!(caps(&["check"]), caps(&["serve"]), "check tries every family's hooks");
        assert_eq!(caps(&["pods"]), ["SYS_PTRACE"]);
    }

    #[test]
    fn the_cri_mount_follows_the_command_flags() {
        let socket = |args: &[&str]| cri_socket(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert_eq!(socket(&["drops"]).as_deref(), Some(DEFAULT_CRI_SOCKET));
        assert_eq!(socket(&["drops", "--cri-socket", "/run/k3s/containerd/containerd.sock"]).as_deref(), Some("/run/k3s/containerd/containerd.sock"));
        assert_eq!(socket(&["pods", "--cri-socket=/var/run/crio/crio.sock"]).as_deref(), Some("/var/run/crio/crio.sock"));
        assert_eq!(socket(&["drops", "--pods-from", "kube"]), None);
        assert_eq!(socket(&["drops", "--pods-from=file:/x.json"]), None);
        assert_eq!(socket(&["drops", "--pods-from", "none", "--pods-from", "cri"]).as_deref(), Some(DEFAULT_CRI_SOCKET), "the last one counts");
        assert_eq!(socket(&["check"]), None);
    }

    #[test]
    fn image_references_are_checked() {
        for good in [
            "tracer",
            "ghcr.io/tracer-project/tracer:0.1.0",
            "localhost:5000/tracer:v1",
            "127.0.0.1:5000/a/b_c/d-e:1.2.3-rc.1",
            "registry.example/tracer@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(Image::parse(good).is_ok(), "{good}");
        }
        for bad in
            ["", "Tracer:1", "ghcr.io/Tracer/tracer", "a b", "tracer:", "tracer:-x", "tracer@sha256:xyz", "/target/image.tar", "a//b", "tracer:ä"]
        {
            assert!(Image::parse(bad).is_err(), "{bad}");
        }
        let image = |s: &str| Image::parse(s).expect("an image");
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(image(&format!("r.example/t:{version}")).version_mismatch(), None);
        assert_eq!(image(&format!("localhost:5000/t:v{version}")).version_mismatch(), None, "the port is not a tag");
        assert!(image("r.example/t:latest").version_mismatch().is_some_and(|w| w.contains("tagged latest")));
        assert!(image("localhost:5000/t").version_mismatch().is_some_and(|w| w.contains("no tag")));
        assert_eq!(image("t@sha256:0123456789abcdef0123456789abcdef").version_mismatch(), None, "a digest is a deliberate pin");
        assert!(!BUILD_IMAGE.ends_with(":latest") && Image::parse(BUILD_IMAGE).is_ok(), "{BUILD_IMAGE}");
    }
}
