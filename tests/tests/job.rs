//! `tracer job` and `tracer install print`: the manifests are valid Kubernetes objects by the
//! API's own schemas (kubernetes-validate, installed by scripts/setup.sh into /opt/tracer-py),
//! hold the least-privilege settings, follow the command's flags, and are what deploy/ holds;
//! `job run/logs/list/delete` against the fake API server (tests/src/kube_api.rs), which plays
//! the Job controller, the scheduler's and kubelet's Events, the pods' logs and RBAC.
//! Run: `cargo build --release -p tracer && cargo test --release -p tracer-tests --test job`.
//! `TRACER_WRITE_DEPLOY=1` rewrites deploy/ from `tracer install print` instead of comparing.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tracer_tests::*;

/// `kubernetes-validate --strict` (unknown fields rejected) on `file`.
fn validate(file: &Path) {
    let bin = Path::new(PY_VENV).join("bin/kubernetes-validate");
    let out =
        Command::new(&bin).arg("--strict").arg(file).output().unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh installs it)", bin.display()));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} is not a valid Kubernetes object:\n{said}", file.display());
    // A kind it has no schema for is only a warning: every object here must have been checked.
    assert!(!said.contains("Couldn't find schema"), "{} holds an object kubernetes-validate cannot check:\n{said}", file.display());
}

/// The tracer, with `$TRACER_IMAGE` as given (None: unset) rather than inherited.
fn tracer_with_image_env(image_env: Option<&str>, args: &[&str]) -> TracerRun {
    let env = match image_env {
        Some(image) => vec!["env".to_string(), format!("TRACER_IMAGE={image}")],
        None => vec!["env".to_string(), "-u".to_string(), "TRACER_IMAGE".to_string()],
    };
    let env: Vec<&str> = env.iter().map(String::as_str).collect();
    run_tracer_wrapped(&env, args, Duration::from_secs(30))
}

/// The tracer with `$TRACER_IMAGE` unset: its image is the built-in one.
fn tracer_cli(args: &[&str]) -> TracerRun {
    tracer_with_image_env(None, args)
}

/// `tracer ARGS`'s stdout in a temporary file (removed with the guard).
fn output_file(args: &[&str]) -> (TracerRun, TempFile) {
    let run = tracer_cli(args);
    let file = std::env::temp_dir().join(format!("{}.yaml", unique_name("jb")));
    std::fs::write(&file, run.lines.join("\n") + "\n").expect("write the manifest");
    (run, TempFile(file))
}

fn render(args: &[&str]) -> (TracerRun, TempFile) {
    output_file(&[&["job", "render"][..], args].concat())
}

/// `job render ARGS`, which must succeed and validate, as JSON.
fn rendered(args: &[&str]) -> Value {
    let (run, file) = render(args);
    run.assert_code(0);
    validate(&file.0);
    yaml_as_json(&file.0)
}

/// This tracer's version, as `--version` says it.
fn version() -> String {
    let run = tracer_cli(&["--version"]);
    run.assert_code(0);
    run.lines[0].trim_start_matches("tracer ").to_string()
}

/// The image the project publishes for this version.
fn versioned_image() -> String {
    format!("ghcr.io/tracer-project/tracer:{}", version())
}

/// The capabilities the README's table gives `drops` and `serve` (the DaemonSet), no more.
const DROPS_CAPABILITIES: &[&str] = &["BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"];
const SERVE_CAPABILITIES: &[&str] = &["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "SYSLOG", "SYS_ADMIN"];
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
const K3S_SOCKET: &str = "/run/k3s/containerd/containerd.sock";
const CRIO_SOCKET: &str = "/var/run/crio/crio.sock";

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Linux, and the architectures the image is built for, as the pod spec says.
fn assert_placed_on_image_platforms(pod: &Value) {
    assert_eq!(pod["nodeSelector"], serde_json::json!({"kubernetes.io/os": "linux"}), "{pod:#}");
    let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let arch = &terms[0]["matchExpressions"][0];
    assert_eq!((arch["key"].as_str(), arch["operator"].as_str()), (Some("kubernetes.io/arch"), Some("In")), "{pod:#}");
    assert_eq!(strings(&arch["values"]), ["amd64", "arm64"]);
}

/// The host paths a pod spec mounts: (path, type).
fn host_paths(pod: &Value) -> Vec<(String, String)> {
    pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["hostPath"]["path"].as_str().unwrap_or("").into(), v["hostPath"]["type"].as_str().unwrap_or("").into()))
        .collect()
}

#[test]
fn rendered_job_is_valid_pinned_bounded_and_least_privilege() {
    let job = rendered(&["--node", "node-1", "--duration", "90s", "--namespace", "tracing", "--", "drops", "--pod", "shop/web-0"]);
    assert_eq!((job["apiVersion"].as_str(), job["kind"].as_str()), (Some("batch/v1"), Some("Job")));
    assert_eq!(job["metadata"]["namespace"], "tracing");
    let spec = &job["spec"];
    assert_eq!(spec["activeDeadlineSeconds"], 210, "--duration + 120 s: {spec:#}");
    assert!(spec["ttlSecondsAfterFinished"].as_u64().is_some_and(|t| t > 0), "finished Jobs go away: {spec:#}");
    assert_eq!(spec["backoffLimit"], 0, "a trace is not retried: {spec:#}");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["nodeName"], "node-1", "pinned to the node: {pod:#}");
    assert_eq!(pod["restartPolicy"], "Never");
    assert_placed_on_image_platforms(pod);
    assert!(
        pod["tolerations"].as_array().is_some_and(|t| t.iter().any(|t| t["operator"] == "Exists" && t.get("key").is_none())),
        "runs on tainted nodes: {pod:#}"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(strings(&c["args"]), ["drops", "--pod", "shop/web-0", "-o", "json", "--duration", "90s"]);
    assert_eq!((c["image"].as_str(), c["imagePullPolicy"].as_str()), (Some(versioned_image().as_str()), Some("IfNotPresent")), "{c:#}");
    let sc = &c["securityContext"];
    assert_ne!(sc["privileged"], true, "never privileged: {sc:#}");
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], serde_json::json!(DROPS_CAPABILITIES));
    assert!(c["resources"]["limits"]["memory"].is_string() && c["resources"]["requests"]["cpu"].is_string(), "bounded: {c:#}");
    for m in c["volumeMounts"].as_array().expect("mounts") {
        assert_eq!(m["readOnly"], true, "every host mount read-only: {m}");
    }
    // The one host path it mounts is the CRI socket its command reads pods from; BTF comes
    // from the container's own /sys (btf_needs_no_mount_and_a_host_path_there_would_stop_the_pod).
    assert_eq!(host_paths(pod), [(CONTAINERD_SOCKET.to_string(), "Socket".to_string())]);
    let default_ns = rendered(&["--node", "node-1", "--", "drops"]);
    assert_eq!(default_ns["metadata"]["namespace"], "tracer", "tracer's own namespace, not kube-system");
}

/// `job render -- drops --cri-socket /run/k3s/...` changes the mount with the flag; a command
/// that reads no CRI mounts none.
#[test]
fn mounts_follow_the_command_flags() {
    for (command, mounts) in [
        (&["drops", "--cri-socket", K3S_SOCKET][..], &[K3S_SOCKET][..]),
        (&["retrans", &format!("--cri-socket={CRIO_SOCKET}")], &[CRIO_SOCKET]),
        (&["pods", "--cri-socket", CRIO_SOCKET], &[CRIO_SOCKET]),
        (&["nat", "--pods-from", "kube"], &[]),
        (&["drops", "--pods-from", "none"], &[]),
        (&["check"], &[]),
    ] {
        let job = rendered(&[&["--node", "node-1", "--"][..], command].concat());
        let pod = &job["spec"]["template"]["spec"];
        let paths: Vec<String> = host_paths(pod).into_iter().map(|(p, t)| format!("{p} {t}")).collect();
        let want: Vec<String> = mounts.iter().map(|p| format!("{p} Socket")).collect();
        assert_eq!(paths, want, "{command:?}");
        let c = &pod["containers"][0];
        let container_paths: Vec<&str> = c["volumeMounts"].as_array().into_iter().flatten().filter_map(|m| m["mountPath"].as_str()).collect();
        assert_eq!(container_paths, mounts, "{command:?}: at the path the command opens");
        // As the node will parse it: the flag stays in the command.
        assert_eq!(strings(&c["args"])[..command.len()], *command);
    }
}

/// `check` and `pods` run as Jobs as they are (their own output, no --duration), with what they
/// need: `check` tries every family's hooks, `pods` reads the pods' network namespaces.
#[test]
fn check_and_pods_render_as_jobs() {
    let check = rendered(&["--node", "node-1", "--", "check"]);
    let pod = &check["spec"]["template"]["spec"];
    assert_eq!(strings(&pod["containers"][0]["args"]), ["check"]);
    assert_eq!(pod["containers"][0]["securityContext"]["capabilities"]["add"], serde_json::json!(SERVE_CAPABILITIES));
    assert_eq!(pod["hostNetwork"], true, "tc hooks are tried on the node's devices");
    let pods = rendered(&["--node", "node-1", "--", "pods", "-o", "json"]);
    let pod = &pods["spec"]["template"]["spec"];
    assert_eq!(strings(&pod["containers"][0]["args"]), ["pods", "-o", "json"]);
    assert_eq!(pod["containers"][0]["securityContext"]["capabilities"]["add"], serde_json::json!(["SYS_PTRACE"]));
}

/// The image: `--image`, else `$TRACER_IMAGE` at run time, else the one built in (this
/// version's tag, never `latest`); a tag other than this version is warned about, once.
#[test]
fn the_image_defaults_to_this_version_and_warns_when_it_differs() {
    let image_of = |run: &TracerRun| -> String {
        run.assert_code(0);
        let line = run.lines.iter().find(|l| l.trim_start().starts_with("image: ")).unwrap_or_else(|| panic!("{:?}", run.lines));
        line.trim().trim_start_matches("image: ").to_string()
    };
    let args = ["job", "render", "--node", "node-1", "--", "drops"];
    let default = tracer_cli(&args);
    // A build with TRACER_IMAGE set has that as its default (option_env!): then it is that.
    let built_in = std::env::var("TRACER_IMAGE").ok().filter(|i| !i.is_empty() && !i.contains(".tar")).unwrap_or_else(versioned_image);
    assert_eq!(image_of(&default), built_in);
    assert!(!image_of(&default).ends_with(":latest"));
    assert!(default.stderr.trim().is_empty(), "the built-in image is this version: no warning: {}", default.stderr);
    let from_env = tracer_with_image_env(Some("registry.example/tracer:9.9.9"), &args);
    assert_eq!(image_of(&from_env), "registry.example/tracer:9.9.9");
    let warnings: Vec<&str> = from_env.stderr_lines().into_iter().filter(|l| l.starts_with("tracer: warning: ")).collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", from_env.stderr);
    assert!(warnings[0].contains("tagged 9.9.9") && warnings[0].contains(&version()), "{}", warnings[0]);
    let flag = tracer_with_image_env(
        Some("registry.example/tracer:9.9.9"),
        &[&args[..3], &["node-1", "--image", "r.example/t:latest", "--", "drops"]].concat(),
    );
    assert_eq!(image_of(&flag), "r.example/t:latest", "--image wins over the environment");
    assert!(flag.stderr.contains("tagged latest"), "{}", flag.stderr);
    let exact = tracer_cli(&["job", "render", "--node", "node-1", "--image", &format!("localhost:5000/tracer:v{}", version()), "--", "drops"]);
    assert!(exact.stderr.trim().is_empty(), "v{} is this version: {}", version(), exact.stderr);
    for (env, args) in [(Some("not an image"), &args[..]), (None, &["job", "render", "--node", "n", "--image", "Upper/Case", "--", "drops"])] {
        let bad = tracer_with_image_env(env, args);
        bad.assert_code(2);
        assert_eq!(bad.stderr_lines().len(), 1, "one line: {}", bad.stderr);
        assert!(
            bad.stderr.contains("not an image reference") && bad.stderr.contains(if env.is_some() { "$TRACER_IMAGE" } else { "--image" }),
            "{}",
            bad.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// tracer install print, deploy/
// ---------------------------------------------------------------------------------------------

/// Every document of a YAML file as JSON (PyYAML's safe_load_all).
fn yaml_documents(file: &Path) -> Vec<Value> {
    let python = Path::new(PY_VENV).join("bin/python3");
    let out = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))"])
        .arg(file)
        .output()
        .expect("python3 of the venv");
    assert!(out.status.success(), "YAML did not parse: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).expect("JSON").as_array().cloned().expect("documents")
}

fn deploy(file: &str) -> PathBuf {
    workspace_root().join("deploy").join(file)
}

/// The object of `kind` named `name` among `docs`.
fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// deploy/install.yaml is `tracer install print` for this version's image, and
/// deploy/podmonitor.yaml the PodMonitor `--podmonitor` adds: generated, so they cannot drift
/// from what the binary prints (TRACER_WRITE_DEPLOY=1 rewrites them).
#[test]
fn deploy_holds_what_install_print_prints() {
    let image = versioned_image();
    let install = tracer_cli(&["install", "print", "--image", &image]);
    install.assert_code(0);
    let install = install.lines.join("\n") + "\n";
    let with_monitor = tracer_cli(&["install", "print", "--image", &image, "--podmonitor"]);
    with_monitor.assert_code(0);
    let with_monitor = with_monitor.lines.join("\n") + "\n";
    let podmonitor = with_monitor.strip_prefix(&install).and_then(|m| m.strip_prefix("---\n")).expect("the PodMonitor comes last").to_string();
    for (file, want) in [("install.yaml", &install), ("podmonitor.yaml", &podmonitor)] {
        if std::env::var("TRACER_WRITE_DEPLOY").as_deref() == Ok("1") {
            std::fs::write(deploy(file), want).expect("write deploy/");
        }
        let have = std::fs::read_to_string(deploy(file)).unwrap_or_default();
        assert!(have == *want, "deploy/{file} is not what `tracer install print` prints now: TRACER_WRITE_DEPLOY=1 rewrites it\n--- now:\n{want}");
    }
    // kubernetes-validate has no schema for prometheus-operator's CRDs: the PodMonitor is
    // checked by the_podmonitor_and_scrape_config_find_the_daemonset instead.
    validate(&deploy("install.yaml"));
}

#[test]
fn the_installed_namespace_rbac_and_daemonset_fit_a_cluster() {
    let docs = yaml_documents(&deploy("install.yaml"));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds.first(), Some(&"Namespace"), "applied first: {kinds:?}");
    let ns = find(&docs, "Namespace", "tracer");
    assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged", "hostPID and capabilities are admitted: {ns:#}");
    for d in &docs {
        if d["kind"] != "Namespace" && d["metadata"]["namespace"].is_string() {
            assert_eq!(d["metadata"]["namespace"], "tracer", "{d:#}");
        }
    }
    let ds = find(&docs, "DaemonSet", "tracer");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], find(&docs, "ServiceAccount", "tracer")["metadata"]["name"]);
    assert_placed_on_image_platforms(pod);
    let c = &pod["containers"][0];
    assert_ne!(c["securityContext"]["privileged"], true);
    assert_eq!(c["securityContext"]["capabilities"]["add"], serde_json::json!(SERVE_CAPABILITIES), "the same set as a serve Job's");
    assert_eq!(strings(&c["args"]), ["serve", "--metrics", "0.0.0.0:9464", "--quiet", "--pods-from", "cri"]);
    assert_eq!((c["image"].as_str(), c["imagePullPolicy"].as_str()), (Some(versioned_image().as_str()), Some("IfNotPresent")));
    assert_eq!(host_paths(pod), [(CONTAINERD_SOCKET.to_string(), "Socket".to_string())], "no BTF mount");
    let port = &c["ports"][0];
    assert_eq!((port["name"].as_str(), port["containerPort"].as_u64()), (Some("metrics"), Some(9464)));
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!((get["path"].as_str(), get["port"].as_str()), (Some("/healthz"), Some("metrics")), "{probe}: {c:#}");
    }
    let selector = &ds["spec"]["selector"]["matchLabels"];
    assert_eq!(*selector, ds["spec"]["template"]["metadata"]["labels"]);
    assert_eq!(selector["app.kubernetes.io/component"], "metrics", "Job pods (component trace-job) are not the DaemonSet's");
    // Its Jobs' ServiceAccount: the same namespace as `job render`'s default.
    let job = rendered(&["--node", "node-1", "--", "drops"]);
    assert_eq!(job["metadata"]["namespace"], ns["metadata"]["name"]);
    assert_eq!(job["spec"]["template"]["spec"]["serviceAccountName"], find(&docs, "ServiceAccount", "tracer")["metadata"]["name"]);
}

/// `install print --cri-socket` fits k3s/RKE2 and CRI-O: the mount and serve's flag follow;
/// groups get the job roles bound; `--uninstall` says how to remove it all.
#[test]
fn install_print_follows_its_flags_and_says_how_to_uninstall() {
    for socket in [K3S_SOCKET, CRIO_SOCKET] {
        let (run, file) = output_file(&["install", "print", "--cri-socket", socket, "--job-user-group", "sre", "--job-user-group", "oncall"]);
        run.assert_code(0);
        validate(&file.0);
        let docs = yaml_documents(&file.0);
        let pod = &find(&docs, "DaemonSet", "tracer")["spec"]["template"]["spec"];
        assert_eq!(host_paths(pod), [(socket.to_string(), "Socket".to_string())]);
        assert_eq!(pod["containers"][0]["volumeMounts"][0]["mountPath"], socket);
        assert!(strings(&pod["containers"][0]["args"]).ends_with(&["--cri-socket", socket]), "{pod:#}");
        for (kind, name, role) in
            [("RoleBinding", "tracer-job-users", "tracer-job-user"), ("ClusterRoleBinding", "tracer-cluster-readers", "tracer-cluster-reader")]
        {
            let b = find(&docs, kind, name);
            assert_eq!(b["roleRef"]["name"], role);
            let groups: Vec<&str> = b["subjects"].as_array().expect("subjects").iter().filter_map(|s| s["name"].as_str()).collect();
            assert_eq!(groups, ["sre", "oncall"]);
        }
    }
    let (jobs_only, file) = output_file(&["install", "print", "--no-daemonset"]);
    jobs_only.assert_code(0);
    assert!(yaml_documents(&file.0).iter().all(|d| d["kind"] != "DaemonSet"));
    let uninstall = tracer_cli(&["install", "print", "--uninstall"]);
    uninstall.assert_code(0);
    assert_eq!(uninstall.lines.len(), 1, "{:?}", uninstall.lines);
    let line = &uninstall.lines[0];
    assert!(line.starts_with("kubectl delete --ignore-not-found "), "{line}");
    // Everything install print creates outside the namespace is named, and the namespace itself.
    let (all, file) = output_file(&["install", "print", "--job-user-group", "sre", "--podmonitor"]);
    all.assert_code(0);
    for d in yaml_documents(&file.0) {
        let name = d["metadata"]["name"].as_str().expect("named");
        let kind = d["kind"].as_str().expect("a kind").to_lowercase();
        if d["metadata"]["namespace"].is_null() {
            assert!(line.split_whitespace().any(|w| w == format!("{kind}/{name}")), "{kind}/{name} is left behind by: {line}");
        }
    }
    let help = tracer_cli(&["install", "print", "--help"]);
    help.assert_code(0);
    let help = help.lines.join("\n");
    assert!(help.contains("Examples:") && help.contains("tracer install print | kubectl apply -f -") && help.contains("--uninstall"), "{help}");
    assert!(help.contains("node-root-equivalent"), "honest about what it grants: {help}");
    for bad in [&["install", "print", "--cri-socket", "crio.sock"][..], &["install", "print", "--image", "no spaces allowed"]] {
        let run = tracer_cli(bad);
        run.assert_code(2);
        assert_eq!(run.stderr_lines().len(), 1, "{bad:?}: {}", run.stderr);
        assert!(run.lines.is_empty(), "{bad:?}");
    }
}

/// The PodMonitor (prometheus-operator) and the plain Prometheus scrape config select the
/// DaemonSet's pods (not the Jobs') on their `metrics` port; promtool checks the config.
#[test]
fn the_podmonitor_and_scrape_config_find_the_daemonset() {
    let docs = yaml_documents(&deploy("install.yaml"));
    let ds = find(&docs, "DaemonSet", "tracer");
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let pm = &yaml_documents(&deploy("podmonitor.yaml"))[0];
    assert_eq!((pm["apiVersion"].as_str(), pm["kind"].as_str()), (Some("monitoring.coreos.com/v1"), Some("PodMonitor")));
    assert_eq!(pm["metadata"]["namespace"], "tracer");
    // The fields used are those of the CRD's schema (monitoring.coreos.com_podmonitors.yaml).
    let spec = pm["spec"].as_object().expect("spec");
    assert!(spec.keys().all(|k| ["selector", "podMetricsEndpoints"].contains(&k.as_str())), "{pm:#}");
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels") {
        assert_eq!(&pod_labels[k], v, "the DaemonSet's pods carry {k}={v}");
    }
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert!(
        endpoint.as_object().expect("endpoint").keys().all(|k| ["port", "path", "interval", "honorLabels", "relabelings"].contains(&k.as_str())),
        "{endpoint}"
    );
    // tracer's `node`, `namespace` and `pod` are kept, not renamed exported_* (docs/kubernetes.md).
    assert_eq!(endpoint["honorLabels"], true, "{endpoint}");
    let scrape = yaml_as_json(&deploy("prometheus-scrape.yaml"));
    assert_eq!(scrape["scrape_configs"][0]["honor_labels"], true, "{scrape}");
    assert_eq!(endpoint["port"], ds["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"]);
    // Debian's promtool (2.42) is built without Kubernetes service discovery: it checks the
    // rest of the job with the discovery swapped for a static target, and the discovery is
    // checked here.
    let mut config = yaml_as_json(&deploy("prometheus-scrape.yaml"));
    let job = &mut config["scrape_configs"][0];
    assert_eq!(job["kubernetes_sd_configs"], serde_json::json!([{"role": "pod", "namespaces": {"names": ["tracer"]}}]));
    job.as_object_mut().expect("a job").remove("kubernetes_sd_configs");
    job["static_configs"] = serde_json::json!([{"targets": ["192.0.2.10:9464"]}]);
    let keep = &job["relabel_configs"][0];
    assert_eq!(keep["action"], "keep");
    let labels = |k: &str| pod_labels[k].as_str().unwrap_or("").to_string();
    assert_eq!(keep["regex"], format!("{};{}", labels("app.kubernetes.io/name"), labels("app.kubernetes.io/component")), "the DaemonSet's pods");
    let checked = TempFile(std::env::temp_dir().join(format!("{}.yaml", unique_name("ps"))));
    std::fs::write(&checked.0, config.to_string()).expect("write the config");
    let out = run_timeout(Command::new("promtool").args(["check", "config"]).arg(&checked.0), Duration::from_secs(30));
    assert!(out.status.success(), "promtool check config: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The read-only ServiceAccount, and roles that say what they grant.
#[test]
fn rbac_is_read_only_for_tracer_pods() {
    let docs = yaml_documents(&deploy("install.yaml"));
    let binding = find(&docs, "ClusterRoleBinding", "tracer");
    assert_eq!((binding["subjects"][0]["name"].as_str(), binding["subjects"][0]["namespace"].as_str()), (Some("tracer"), Some("tracer")));
    let rules = api::rules_of(&docs, "ClusterRole", "tracer", None);
    assert!(rules.iter().all(|r| ["get", "list", "watch"].contains(&r.verb.as_str())), "read only: {rules:?}");
    for resource in ["pods", "services"] {
        for verb in ["list", "watch"] {
            assert!(rules.iter().any(|r| r.resource == resource && r.verb == verb), "{verb} {resource}: {rules:?}");
        }
    }
    // Creating Jobs is granted in tracer's namespace only (a Role), and no reader writes.
    let job_user = find(&docs, "Role", "tracer-job-user");
    assert_eq!(job_user["metadata"]["namespace"], "tracer");
    let reader = api::rules_of(&docs, "ClusterRole", "tracer-cluster-reader", None);
    assert!(reader.iter().all(|r| ["get", "list"].contains(&r.verb.as_str())), "{reader:?}");
}

#[test]
fn bad_job_input_is_one_line_and_exit_2() {
    for (args, says) in [
        (&["--node", "node-1", "--", "serve"][..], "is not one of"),
        (&["--node", "node-1", "--", "drops", "--ip", "nonsense"][..], "--ip nonsense"),
        (&["--node", "node-1", "--", "drops", "-o", "table"][..], "set by the Job"),
        (&["--node", "Node_1", "--", "drops"][..], "--node"),
        (&["--node", "node-1", "--duration", "soon", "--", "drops"][..], "--duration soon"),
        (&["--node", "node-1", "--", "drops", "--cri-socket", "k3s.sock"][..], "--cri-socket"),
    ] {
        let (run, _file) = render(args);
        run.assert_code(2);
        assert!(run.lines.is_empty(), "{args:?}: nothing on stdout: {:?}", run.lines);
        assert_eq!(run.stderr_lines().len(), 1, "{args:?}: one line: {}", run.stderr);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}

/// `kubectl tracer ...`: kubectl finds `kubectl-tracer` on PATH (here a link to the binary, as
/// krew installs it) and runs it; it answers as `kubectl tracer`.
#[test]
fn kubectl_runs_it_as_a_plugin() {
    let dir = std::env::temp_dir().join(unique_name("kp"));
    std::fs::create_dir_all(&dir).expect("plugin dir");
    struct RemoveDir(PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = RemoveDir(dir.clone());
    std::os::unix::fs::symlink(tracer_bin(), dir.join("kubectl-tracer")).expect("link kubectl-tracer");
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
    let kubectl = |args: &[&str]| {
        run_timeout(Command::new("kubectl").arg("tracer").args(args).env("PATH", &path).env_remove("TRACER_IMAGE"), Duration::from_secs(30))
    };
    let out = kubectl(&["job", "render", "--node", "node-1", "--", "drops"]);
    assert!(out.status.success(), "kubectl tracer job render (kubectl: scripts/setup.sh installs it): {}", String::from_utf8_lossy(&out.stderr));
    let direct = tracer_cli(&["job", "render", "--node", "node-1", "--", "drops"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(), direct.lines, "the plugin is the same program");
    let help = kubectl(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl tracer"), "{}", String::from_utf8_lossy(&help.stdout));
    let bad = kubectl(&["no-such-command"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("see 'kubectl tracer --help'"), "{}", String::from_utf8_lossy(&bad.stderr));
}

// ---------------------------------------------------------------------------------------------
// Real parts: the node lab's containerd, the serve binary
// ---------------------------------------------------------------------------------------------

/// Why the Job mounts no BTF, checked with a real containerd through the CRI: a container
/// (unprivileged, every capability dropped) sees the kernel's BTF in its own read-only /sys, and
/// a hostPath to a sysfs path the node lacks cannot be made optional — containerd creates a
/// missing source with mkdir, which sysfs refuses, so the pod would not start on a node without
/// BTF (where tracer would otherwise fall back to tracefs).
#[test]
fn btf_needs_no_mount_and_a_host_path_there_would_stop_the_pod() {
    let test = "btf_needs_no_mount_and_a_host_path_there_would_stop_the_pod";
    if !node::require_node(test) {
        return;
    }
    let lab = node::NodeLab::new();
    let pod = lab.run_pod_for_containers("tracer", "btf", false, true);
    let spec = node::ContainerSpec {
        name: "plain".into(),
        image: node::SANDBOX_IMAGE.into(),
        args: vec!["300".into()],
        cap_drop: vec!["ALL".into()],
        read_only_root: true,
        no_new_privs: true,
        host_pid: true,
        ..node::ContainerSpec::default()
    };
    let plain = lab.run_container(&pod, &spec).unwrap_or_else(|e| panic!("a container without mounts: {e:#}"));
    let pid = lab.container_pid(&plain).expect("its pid");
    let host_btf = Path::new("/sys/kernel/btf/vmlinux");
    let seen = PathBuf::from(format!("/proc/{pid}/root/sys/kernel/btf/vmlinux"));
    assert_eq!(seen.exists(), host_btf.exists(), "the container's /sys shows the kernel's BTF exactly when the node has it");
    let missing = format!("/sys/kernel/{}", unique_name("nb"));
    let mount = node::HostMount { host: PathBuf::from(&missing), container: "/sys/kernel/btf".into(), read_only: true };
    let err = lab
        .run_container(&pod, &node::ContainerSpec { name: "mounted".into(), mounts: vec![mount], ..spec })
        .map(|c| c.id)
        .expect_err("a hostPath to a missing sysfs path");
    let err = format!("{err:#}");
    assert!(err.contains("mkdir") && err.contains(&missing), "containerd's reason: {err}");
}

/// The DaemonSet's probes, as deploy/install.yaml writes them, against the real `tracer serve`
/// with the DaemonSet's arguments: /healthz on the `metrics` port answers `ok`, /metrics the
/// metrics.
#[test]
fn serve_answers_the_daemonsets_probes() {
    let test = "serve_answers_the_daemonsets_probes";
    if !require_privileged(test) {
        return;
    }
    let docs = yaml_documents(&deploy("install.yaml"));
    let c = &find(&docs, "DaemonSet", "tracer")["spec"]["template"]["spec"]["containers"][0];
    let port = c["ports"].as_array().expect("ports").iter().find(|p| p["name"] == c["livenessProbe"]["httpGet"]["port"]).expect("the probe's port");
    let port = port["containerPort"].as_u64().expect("a number");
    let path = c["livenessProbe"]["httpGet"]["path"].as_str().expect("a path");
    // Its arguments, but pods from nowhere: there is no CRI socket here (the node lab's
    // containerd is not needed to answer a probe).
    let mut args: Vec<String> = strings(&c["args"]).iter().map(|s| s.to_string()).collect();
    let from = args.iter().position(|a| a == "--pods-from").expect("--pods-from") + 1;
    args[from] = "none".into();
    let ns = Netns::new("pr");
    ns.ip(&["link", "set", "lo", "up"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Tracer::start_in(&ns, &args);
    let get = |path: &str| {
        let script =
            "import sys, urllib.request\nr = urllib.request.urlopen(sys.argv[1], timeout=5)\nprint(r.status)\nprint(r.read().decode(), end='')";
        let out = ns.exec_ok(&["python3", "-c", script, &format!("http://127.0.0.1:{port}{path}")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get(path), "200\nok\n", "the probe's answer");
    assert!(get("/metrics").contains("tracer_probe_up"), "the metrics are still on /metrics");
    t.stop();
}

// ---------------------------------------------------------------------------------------------
// job run / logs / list / delete, against the fake API server of tests/src/kube_api.rs, which
// plays the Job controller, the scheduler's and kubelet's Events and the pods' logs
// (kube_api/jobs.rs, kube_api/events.rs), and enforces RBAC (kube_api/rbac.rs)
// ---------------------------------------------------------------------------------------------

mod api {
    use std::time::Instant;

    use tracer_tests::kube_api::{ApiRequest, FakeApi, JobScript, PodFixture, Rule, Start, write_kubeconfig};

    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    /// A drop event as a tracer in a Job prints it (CONTRACT's JSON).
    fn drop_line() -> String {
        serde_json::json!({
            "ts": "2026-11-22T02:30:01.123456789Z", "kind": "drop", "proto": "tcp",
            "src": "10.244.1.7:40312", "dst": "10.244.2.9:8080", "src_pod": "shop/web-0", "dst_pod": "shop/db-0",
            "netns": 4026532301u64, "netns_pod": "shop/web-0", "ifname": "eth0", "ifindex": 3,
            "reason": "NETFILTER_DROP", "reason_code": 6, "location": "nft_do_chain+0x3c5", "len": 60,
        })
        .to_string()
    }

    fn script(log: &[&str], exit_code: i32) -> JobScript {
        JobScript { log: log.iter().map(|s| s.to_string()).collect(), exit_code, ..JobScript::default() }
    }

    fn tracer(api: &FakeApi, args: &[&str]) -> TracerRun {
        let kc = api.kubeconfig();
        let mut argv: Vec<&str> = args.to_vec();
        let at = argv.iter().position(|a| *a == "--").unwrap_or(argv.len());
        let kc = kc.to_str().expect("utf-8 path");
        argv.splice(at..at, ["--kubeconfig", kc]);
        let env = ["env", "-u", "TRACER_IMAGE"];
        run_tracer_wrapped(&env, &argv, WAIT)
    }

    fn posts(api: &FakeApi) -> Vec<ApiRequest> {
        api.requests().into_iter().filter(|r| r.method == "POST").collect()
    }

    #[test]
    fn job_run_creates_the_rendered_job_and_prints_its_log() {
        let api = FakeApi::start(&[]);
        let done = "tracer: drops: 1 seen, 1 delivered, 0 lost";
        api.script_jobs(script(&[&drop_line(), done], 0));
        let job_args =
            ["--node", "node-1", "--namespace", "tracing", "--duration", "30s", "--name", "tracer-t1", "--", "drops", "--pod", "shop/web-0"];
        let run = tracer(&api, &[&["job", "run"][..], &job_args].concat());
        run.assert_code(0);
        // What was sent is what `job render` prints.
        let (rendered, file) = render(&job_args);
        rendered.assert_code(0);
        let sent = posts(&api);
        assert_eq!(sent.len(), 1, "one Job created:\n{}", api.request_log());
        assert_eq!(sent[0].path, "/apis/batch/v1/namespaces/tracing/jobs");
        let body: Value = serde_json::from_str(&sent[0].body).expect("JSON body");
        assert_eq!(body, yaml_as_json(&file.0), "the Job sent is the rendered one");
        // Its log, pretty-printed: the event as a timeline line, the tracer's words on stderr.
        let out = run.lines.join("\n");
        assert!(run.lines.first().is_some_and(|l| l.starts_with("TIME(UTC)")), "a header first:\n{out}");
        let line = run.lines.iter().find(|l| l.contains("NETFILTER_DROP")).unwrap_or_else(|| panic!("the drop:\n{out}"));
        assert!(
            line.contains("10.244.1.7:40312 (shop/web-0) -> 10.244.2.9:8080 (shop/db-0)") && line.contains("location=nft_do_chain+0x3c5"),
            "{line}"
        );
        assert!(run.stderr.contains(done), "the tracer's own line on stderr: {}", run.stderr);
        assert!(run.stderr.contains("job tracing/tracer-t1 on node node-1 finished"), "{}", run.stderr);
        let log = api.requests().into_iter().find(|r| r.path.ends_with("/log")).expect("the log was read");
        assert_eq!((log.param("follow"), log.param("container")), (Some("true"), Some("tracer")), "{log}");
    }

    #[test]
    fn job_run_for_a_pod_runs_on_its_node() {
        let api = FakeApi::start(&[PodFixture::new("shop", "web-0", "node-7", &["10.244.7.5"])]);
        api.script_jobs(script(&[&drop_line()], 0));
        let run = tracer(&api, &["job", "run", "--pod", "shop/web-0", "-o", "json", "--", "drops", "--pod", "shop/web-0"]);
        run.assert_code(0);
        let jobs = api.jobs();
        assert_eq!(jobs.len(), 1);
        let name = jobs[0]["metadata"]["name"].as_str().expect("name");
        assert!(name.starts_with("tracer-drops-node-7-") && name.len() == "tracer-drops-node-7-".len() + 5, "{name}");
        assert_eq!(jobs[0]["spec"]["template"]["spec"]["nodeName"], "node-7");
        assert_eq!(run.lines, [drop_line()], "-o json: the lines as they are");
        // Two runs do not collide; without a selection of its own the command traces the pod.
        tracer(&api, &["job", "run", "--pod", "shop/web-0", "--", "drops"]).assert_code(0);
        let jobs = api.jobs();
        assert_eq!(jobs.len(), 2, "{}", api.request_log());
        let args: Vec<Vec<Value>> =
            jobs.iter().map(|j| j["spec"]["template"]["spec"]["containers"][0]["args"].as_array().cloned().unwrap_or_default()).collect();
        assert!(args.iter().all(|a| a[..3] == ["drops", "--pod", "shop/web-0"]), "{args:?}");
        let ghost = tracer(&api, &["job", "run", "--pod", "shop/ghost", "--", "drops"]);
        ghost.assert_code(1);
        assert!(ghost.stderr.contains("pod shop/ghost not found"), "{}", ghost.stderr);
        assert_eq!(api.jobs().len(), 2, "no Job for a pod that does not exist");
    }

    /// `job run -- check` and `-- pods`: their answer printed as they print it, on stdout; the
    /// tracer's messages on stderr.
    #[test]
    fn check_and_pods_run_as_jobs() {
        let api = FakeApi::start(&[]);
        let table = ["COMMAND   RUNS  HOOK", "drops     yes   tp_btf/kfree_skb"];
        api.script_jobs(script(&[table[0], "tracer: warning: tracefs was not mounted", table[1]], 0));
        let run = tracer(&api, &["job", "run", "--node", "node-1", "--", "check"]);
        run.assert_code(0);
        assert_eq!(run.lines, table, "the table as it is");
        assert!(run.stderr.contains("tracer: warning: tracefs was not mounted"), "{}", run.stderr);
        let job = &api.jobs()[0];
        assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["args"], serde_json::json!(["check"]));
        let pods_json = ["[", "  {", "    \"pod\": \"shop/web-0\"", "  }", "]"];
        api.script_jobs(script(&pods_json, 0));
        let run = tracer(&api, &["job", "run", "--node", "node-1", "--", "pods", "-o", "json"]);
        run.assert_code(0);
        assert_eq!(run.lines, pods_json, "JSON over many lines, as pods -o json prints it");
    }

    #[test]
    fn ctrl_c_on_job_run_deletes_the_job_and_its_pod() {
        let api = FakeApi::start(&[]);
        api.script_jobs(JobScript { hold: true, ..script(&[&drop_line()], 0) });
        let kc = api.kubeconfig();
        let t = Tracer::launch(&["job", "run", "--node", "node-1", "--name", "tracer-held", "--kubeconfig", kc.to_str().unwrap(), "--", "drops"]);
        let deadline = Instant::now() + WAIT;
        while !(api.open_logs() == 1 && t.stdout_lines().iter().any(|l| l.contains("NETFILTER_DROP"))) {
            assert!(Instant::now() < deadline, "the log was never followed:\n{}\n{}", api.request_log(), t.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(api.job_pods("tracer", "tracer-held").len(), 1, "the Job's pod runs");
        let run = t.stop();
        run.assert_code(130);
        assert!(run.stderr.contains("deleted job tracer/tracer-held"), "{}", run.stderr);
        let delete = api.requests().into_iter().find(|r| r.method == "DELETE").expect("a DELETE");
        assert_eq!(delete.path, "/apis/batch/v1/namespaces/tracer/jobs/tracer-held");
        let body: Value = serde_json::from_str(&delete.body).expect("DeleteOptions");
        assert_eq!(body["propagationPolicy"], "Background", "the pod goes too (Jobs orphan it by default)");
        assert!(api.jobs().is_empty() && api.job_pods("tracer", "tracer-held").is_empty(), "nothing left tracing");
    }

    /// `--pod` and `--node` repeated, and `--all-nodes`: one Job per node (pods of one node
    /// share its Job, which traces them), every log followed at once into one timeline whose
    /// lines name their node; `job render` prints one Job per node.
    #[test]
    fn several_nodes_are_one_job_each_and_one_merged_timeline() {
        let api = FakeApi::start(&[
            PodFixture::new("shop", "web-0", "node-7", &["10.244.7.5"]),
            PodFixture::new("shop", "web-1", "node-7", &["10.244.7.6"]),
            PodFixture::new("shop", "db-0", "node-8", &["10.244.8.5"]),
        ]);
        api.script_jobs(script(&[&drop_line(), "tracer: drops: 1 seen, 1 delivered, 0 lost"], 0));
        let run =
            tracer(&api, &["job", "run", "--pod", "shop/web-0", "--pod", "shop/db-0", "--pod", "shop/web-1", "--node", "node-1", "--", "drops"]);
        run.assert_code(0);
        let jobs = api.jobs();
        let mut placed: Vec<(String, Vec<String>)> = jobs
            .iter()
            .map(|j| {
                let pod = &j["spec"]["template"]["spec"];
                let args = strings(&pod["containers"][0]["args"]).iter().map(|s| s.to_string()).collect();
                (pod["nodeName"].as_str().unwrap_or("").to_string(), args)
            })
            .collect();
        placed.sort();
        let args = |pods: &[&str]| -> Vec<String> {
            let mut v = vec!["drops".to_string()];
            for p in pods {
                v.extend(["--pod".to_string(), p.to_string()]);
            }
            v.extend(["-o", "json", "--duration", "60s"].map(String::from));
            v
        };
        assert_eq!(
            placed,
            [("node-1".into(), args(&[])), ("node-7".into(), args(&["shop/web-0", "shop/web-1"])), ("node-8".into(), args(&["shop/db-0"]))],
            "one Job per node, tracing the pods given there"
        );
        let out = run.lines.join("\n");
        assert!(run.lines.first().is_some_and(|l| l.starts_with("NODE") && l.contains("TIME(UTC)")), "one header, the node first:\n{out}");
        let mut nodes: Vec<&str> = run.lines.iter().filter(|l| l.contains("NETFILTER_DROP")).filter_map(|l| l.split_whitespace().next()).collect();
        nodes.sort_unstable();
        assert_eq!(nodes, ["node-1", "node-7", "node-8"], "each Job's drop, named by its node:\n{out}");
        assert!(run.stderr.contains("node-8: tracer: drops: 1 seen"), "each tracer's words, with its node: {}", run.stderr);
        assert!(run.stderr.contains("3 jobs created in tracer on nodes node-1, node-7, node-8"), "{}", run.stderr);

        // --all-nodes lists the nodes.
        for node in ["node-a", "node-b"] {
            api.add_node(node);
        }
        let before = api.jobs().len();
        let all = tracer(&api, &["job", "run", "--all-nodes", "-o", "json", "--", "drops"]);
        all.assert_code(0);
        assert_eq!(all.lines, [drop_line(), drop_line()], "-o json: each Job's lines as they are");
        assert_eq!(api.jobs().len(), before + 2);
        let list = api.requests().into_iter().find(|r| r.path == "/api/v1/nodes").expect("the nodes were listed");
        assert_eq!(list.param("labelSelector"), Some("kubernetes.io/os=linux"), "{list}");

        // render: a YAML stream, one Job per node.
        let (rendered, file) = render(&["--node", "node-a", "--node", "node-b", "--", "drops"]);
        rendered.assert_code(0);
        let docs = yaml_documents(&file.0);
        let nodes: Vec<&str> = docs.iter().filter_map(|d| d["spec"]["template"]["spec"]["nodeName"].as_str()).collect();
        assert_eq!(nodes, ["node-a", "node-b"]);
        validate(&file.0);

        // diagnose across nodes: each node's Job records (`watch`), the report is made here from
        // both recordings (the real processes: job_diagnose_on_two_nodes_names_the_cause_...).
        let diagnose = tracer(&api, &["job", "run", "--pod", "shop/web-0", "--pod", "shop/db-0", "-o", "json", "--", "diagnose"]);
        diagnose.assert_code(0);
        let jobs: Vec<Value> =
            api.jobs().into_iter().filter(|j| j["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("tracer-diagnose-"))).collect();
        let args: Vec<&str> = jobs.iter().filter_map(|j| j["spec"]["template"]["spec"]["containers"][0]["args"][0].as_str()).collect();
        assert_eq!(args, ["watch", "watch"], "each node records");
        let report: Value =
            serde_json::from_str(diagnose.lines.join("\n").trim()).unwrap_or_else(|e| panic!("one report ({e}): {:?}", diagnose.lines));
        assert_eq!(report["nodes"], serde_json::json!(["node-7", "node-8"]), "{report:#}");
        assert!(diagnose.stderr.contains("the recording of node node-7 has no `recording` record"), "a cut recording is said: {}", diagnose.stderr);
        // Pods of one node are one node: diagnose runs there as before.
        tracer(&api, &["job", "run", "--pod", "shop/web-0", "--pod", "shop/web-1", "--", "diagnose"]).assert_code(0);
    }

    /// Ctrl-C on a run with Jobs on several nodes deletes every one of them, and their pods.
    #[test]
    fn ctrl_c_deletes_every_job_of_several_nodes() {
        let api = FakeApi::start(&[]);
        api.script_jobs(JobScript { hold: true, ..script(&[&drop_line()], 0) });
        let kc = api.kubeconfig();
        let args =
            ["job", "run", "--node", "node-1", "--node", "node-2", "--name", "tracer-many", "--kubeconfig", kc.to_str().unwrap(), "--", "drops"];
        let t = Tracer::launch(&args);
        let deadline = Instant::now() + WAIT;
        while !(api.open_logs() == 2 && t.stdout_lines().iter().filter(|l| l.contains("NETFILTER_DROP")).count() == 2) {
            assert!(Instant::now() < deadline, "the logs were never followed:\n{}\n{}", api.request_log(), t.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        let run = t.stop();
        run.assert_code(130);
        for name in ["tracer-many-node-1", "tracer-many-node-2"] {
            assert!(run.stderr.contains(&format!("deleted job tracer/{name}")), "{}", run.stderr);
            assert!(api.job_pods("tracer", name).is_empty(), "{name}: its pod went too");
        }
        assert!(api.jobs().is_empty(), "nothing left tracing: {:?}", api.jobs());
    }

    /// The fake API's kubelet runs each Job's tracer for real inside its node's namespace: two
    /// "nodes" on this one kernel, each dropping its own traffic, each Job scoped to its node
    /// (`--this-node`); the merged output has both nodes' drops, each with its `node`. Then a
    /// run stopped with Ctrl-C stops both tracers.
    #[test]
    fn several_nodes_run_real_tracers_and_merge_their_drops() {
        let test = "several_nodes_run_real_tracers_and_merge_their_drops";
        if !require_privileged(test) {
            return;
        }
        let _lock = shared_lock();
        const PORT: u16 = 5651;
        let (one, two) = (PairLab::new(), PairLab::new());
        let api = FakeApi::start(&[]);
        for (node, lab) in [("node-a", &one), ("node-b", &two)] {
            lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]);
            // The node is the namespace that drops: its tracer runs there.
            api.kubelet(node, &lab.b.path());
        }
        let port = PORT.to_string();
        let kc = api.kubeconfig();
        let kc = kc.to_str().unwrap();
        let cmd = ["--", "drops", "--this-node", "--pods-from", "none", "--proto", "udp", "--port", &port];
        let args = [&["job", "run", "--node", "node-a", "--node", "node-b", "--duration", "8s", "-o", "json", "--kubeconfig", kc][..], &cmd].concat();
        let t = Tracer::launch(&args);
        for node in ["node-a", "node-b"] {
            assert!(t.wait_for_stderr(WAIT, &format!("{node}: tracer: attached drops")), "{node}'s tracer never attached:\n{}", t.stderr());
        }
        for lab in [&one, &two] {
            assert_eq!(Udp::new(&lab.a_ip, 40651, &lab.b_ip, PORT).send(&lab.a), 3);
        }
        let run = t.wait_exit(WAIT);
        run.assert_code(0);
        let events = run.events();
        let seen: BTreeSet<(String, u64)> =
            events.iter().map(|e| (e["node"].as_str().unwrap_or("").to_string(), e["netns"].as_u64().unwrap_or(0))).collect();
        assert_eq!(
            seen,
            BTreeSet::from([("node-a".to_string(), one.b.inode()), ("node-b".to_string(), two.b.inode())]),
            "each node's drops, named by their node, none twice:\n{}",
            dump(&events)
        );
        assert_eq!(events.len(), 6, "{}", dump(&events));
        assert!(run.stderr.contains("node-a: tracer: drops: 3 seen") && run.stderr.contains("node-b: tracer: drops: 3 seen"), "{}", run.stderr);
        assert_eq!(api.running_containers(), 0, "both tracers ended");

        // Ctrl-C: both Jobs deleted, both real tracers stopped.
        let args = [&["job", "run", "--node", "node-a", "--node", "node-b", "--duration", "60s", "--kubeconfig", kc][..], &cmd].concat();
        let t = Tracer::launch(&args);
        for node in ["node-a", "node-b"] {
            assert!(t.wait_for_stderr(WAIT, &format!("{node}: tracer: attached drops")), "{node}'s tracer never attached:\n{}", t.stderr());
        }
        assert_eq!(api.running_containers(), 2);
        let run = t.stop();
        run.assert_code(130);
        let left: Vec<&str> =
            ["node-a", "node-b"].into_iter().filter(|node| run.stderr.contains(&format!("deleted job tracer/tracer-drops-{node}-"))).collect();
        assert_eq!(left, ["node-a", "node-b"], "both Jobs deleted:\n{}", run.stderr);
        assert!(api.jobs().iter().all(|j| j["status"]["succeeded"] == 1), "only the first run's finished Jobs remain: {:?}", api.jobs());
        let deadline = Instant::now() + WAIT;
        while api.running_containers() > 0 {
            assert!(Instant::now() < deadline, "a tracer kept running after its Job was deleted");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Issue 22's "done means" through Jobs: two overlay nodes on this one kernel, each a node of
    /// the fake API whose kubelet runs the Job's real tracer in that node's namespace. A Service
    /// address on node A is DNATed to the pod on node B, whose firewall drops the VXLAN packets.
    /// `job run --node node-a --node node-b -- diagnose` records on both nodes (each tracer
    /// scoped with `--this-node`) and diagnoses across them: the cross-node finding names node B,
    /// the client on node A and the backend.
    #[test]
    fn job_diagnose_on_two_nodes_names_the_cause_on_the_right_node() {
        use tracer_tests::{
            overlay::{CrossNodeFault, can_build},
            traffic::tcp_connect,
        };
        let test = "job_diagnose_on_two_nodes_names_the_cause_on_the_right_node";
        let Some(_lock) = can_build(test, "vxlan") else { return };
        let CrossNodeFault { lab, service, backend, pods_from: from, pods: _pods } = CrossNodeFault::build();
        let api = FakeApi::start(&[]);
        api.kubelet("node-a", &lab.a.ns.path());
        api.kubelet("node-b", &lab.b.ns.path());
        let kc = api.kubeconfig();
        let kc = kc.to_str().unwrap();
        let block = lab.addrs.net(0).replace("/24", "/22");
        let args = [
            "job",
            "run",
            "--node",
            "node-a",
            "--node",
            "node-b",
            "--duration",
            "8s",
            "-o",
            "json",
            "--kubeconfig",
            kc,
            "--",
            "diagnose",
            "--this-node",
            "--pods-from",
            &from,
            "--ip",
            &block,
            "--reply-timeout",
            "1s",
        ];
        let t = Tracer::launch(&args);
        for node in ["node-a", "node-b"] {
            assert!(t.wait_for_stderr(WAIT, &format!("{node}: tracer: attached")), "{node}'s tracer never attached:\n{}", t.stderr());
        }
        let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 41040, &service, 80, 3.0);
        assert_eq!(got, "timeout", "lab: node B must drop the tunnel packets");
        let run = t.wait_exit(Duration::from_secs(90));
        run.assert_code(0);
        let text = run.lines.join("\n");
        let report: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("one report ({e}):\n{text}\nstderr:\n{}", run.stderr));
        eprintln!("{test}: {report}");
        assert_eq!(report["nodes"], serde_json::json!(["node-a", "node-b"]), "{report:#}");
        let all = report["findings"].as_array().cloned().unwrap_or_default();
        let cross: Vec<&Value> = all.iter().filter(|f| f["code"] == "cross-node").collect();
        assert_eq!(cross.len(), 1, "one cross-node finding: {report:#}");
        let c = cross[0];
        assert_eq!((c["node"].as_str(), c["severity"].as_str()), (Some("node-b"), Some("error")), "the cause is on node B: {c:#}");
        assert_eq!(c["evidence"]["client_node"], "node-a", "{c:#}");
        assert_eq!(c["evidence"]["backend"], backend.as_str(), "{c:#}");
        let summary = c["summary"].as_str().unwrap_or_default();
        for words in ["lab/client on node node-a", &format!("DNATed to {backend}"), "node node-b dropped", "NETFILTER_DROP"] {
            assert!(summary.contains(words), "the summary says {words:?}: {summary}");
        }
        assert!(all.iter().any(|f| f["code"] == "netfilter-drop" && f["node"] == "node-b"), "node B's own finding: {report:#}");
        assert_eq!(api.running_containers(), 0, "both tracers ended");
    }

    #[test]
    fn job_logs_list_and_delete() {
        let api = FakeApi::start(&[]);
        api.script_jobs(script(&[&drop_line(), "tracer: drops: 1 seen, 1 delivered, 0 lost"], 0));
        let mut names = Vec::new();
        for node in ["node-1", "node-2"] {
            let run = tracer(&api, &["job", "run", "--detach", "--node", node, "--", "drops", "--namespace", "shop"]);
            run.assert_code(0);
            assert_eq!(run.lines.len(), 1, "the name alone on stdout: {:?}", run.lines);
            names.push(run.lines[0].clone());
        }
        assert!(api.open_logs() == 0 && !api.requests().iter().any(|r| r.path.ends_with("/log")), "--detach does not follow");
        let list = tracer(&api, &["job", "list", "-o", "json"]);
        list.assert_code(0);
        let rows: Value = serde_json::from_str(&list.lines.join("\n")).expect("a JSON array");
        let rows = rows.as_array().expect("array");
        assert_eq!(rows.len(), 2, "{rows:?}");
        for (row, node) in rows.iter().zip(["node-1", "node-2"]) {
            assert_eq!((row["node"].as_str(), row["state"].as_str()), (Some(node), Some("running")), "{row}");
            assert_eq!(row["command"], "drops --namespace shop -o json --duration 60s");
        }
        let lreq = api.requests().into_iter().find(|r| r.method == "GET" && r.path == "/apis/batch/v1/namespaces/tracer/jobs").expect("listed");
        assert_eq!(lreq.param("labelSelector"), Some("app.kubernetes.io/name=tracer,app.kubernetes.io/component=trace-job"));
        // Logs: as they are with -o json; the tracer's message on stderr.
        let logs = tracer(&api, &["job", "logs", &names[0], "-o", "json"]);
        logs.assert_code(0);
        assert_eq!(logs.lines, [drop_line()]);
        assert!(logs.stderr.contains("1 seen, 1 delivered, 0 lost"), "{}", logs.stderr);
        let table = tracer(&api, &["job", "list"]);
        table.assert_code(0);
        let first = table.lines.iter().find(|l| l.starts_with(&names[0])).unwrap_or_else(|| panic!("{:?}", table.lines));
        assert!(first.contains("succeeded") && first.contains("node-1"), "{first}");
        // Delete: both; then again, which names what is missing.
        let del = tracer(&api, &["job", "delete", &names[0], &names[1]]);
        del.assert_code(0);
        assert!(api.jobs().is_empty(), "{}", api.request_log());
        let again = tracer(&api, &["job", "delete", &names[0]]);
        again.assert_code(1);
        assert!(again.stderr.contains(&format!("job tracer/{} not found", names[0])), "{}", again.stderr);
        let gone = tracer(&api, &["job", "logs", &names[0]]);
        gone.assert_code(1);
        assert!(gone.stderr.contains("not found"), "{}", gone.stderr);
    }

    #[test]
    fn a_failing_tracer_fails_the_run_and_says_so() {
        let api = FakeApi::start(&[]);
        let words = "tracer: error: tracer drops needs CAP_BPF";
        api.script_jobs(script(&[words], 1));
        let run = tracer(&api, &["job", "run", "--node", "node-1", "--name", "tracer-f", "--", "drops"]);
        run.assert_code(1);
        assert!(run.stderr.contains(words), "the tracer's own error: {}", run.stderr);
        assert!(run.stderr.contains("job tracer/tracer-f: the tracer on node node-1 exited with code 1"), "{}", run.stderr);
    }

    /// Each way a Job's pod fails to start on a cluster, as the fake reports it (status and
    /// Events): `job run` fails within seconds, not at its start bound (DUR + 120 s), exit 1,
    /// one error line with Kubernetes' reason and message and what to do, and the Job it made
    /// is deleted.
    #[test]
    fn a_job_whose_pod_cannot_start_fails_at_once_with_the_reason() {
        let image = versioned_image();
        let sa = "Error creating: pods \"tracer-s-x7k2p\" is forbidden: error looking up service account tracer/tracer: serviceaccount \"tracer\" not found";
        let psa = "Error creating: pods \"tracer-s-x7k2p\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostPID=true), non-default capabilities (container \"tracer\" must not include \"BPF\", \"PERFMON\", \"SYS_PTRACE\", \"SYSLOG\" in securityContext.capabilities.add), hostPath volumes (volume \"cri\")";
        let mount = "MountVolume.SetUp failed for volume \"cri\" : hostPath type check failed: /run/containerd/containerd.sock is not a socket file";
        let sched = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
        let pull = format!("rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found");
        let affinity = "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector";
        let cases: Vec<(&str, JobScript, Vec<&str>)> = vec![
            (
                "no ServiceAccount",
                JobScript { start: Start::Refused(sa.into()), ..JobScript::default() },
                vec!["its pod cannot start: FailedCreate", "serviceaccount \"tracer\" not found", "tracer install print"],
            ),
            (
                "PodSecurity",
                JobScript { start: Start::Refused(psa.into()), ..JobScript::default() },
                vec!["FailedCreate", "violates PodSecurity \"baseline:latest\"", "level privileged"],
            ),
            (
                "no CRI socket",
                JobScript { start: Start::FailedMount(mount.into()), ..JobScript::default() },
                vec!["FailedMount", "is not a socket file", "--cri-socket", "/run/k3s/containerd/containerd.sock"],
            ),
            (
                "unschedulable",
                JobScript { start: Start::Unschedulable(sched.into()), ..JobScript::default() },
                vec!["Unschedulable", "0/3 nodes are available"],
            ),
            (
                "image, by Events",
                JobScript { start: Start::ImagePull { reason: "ErrImagePull".into(), message: pull }, ..JobScript::default() },
                vec!["ErrImagePull", "failed to pull and unpack image", "--image"],
            ),
            (
                "image, status only",
                JobScript {
                    start: Start::ImagePull { reason: "ImagePullBackOff".into(), message: format!("Back-off pulling image \"{image}\"") },
                    no_events: true,
                    ..JobScript::default()
                },
                vec!["ImagePullBackOff", "Back-off pulling image"],
            ),
            (
                "rejected by the kubelet",
                JobScript { start: Start::Rejected { reason: "NodeAffinity".into(), message: affinity.into() }, ..JobScript::default() },
                vec!["NodeAffinity", "Pod was rejected: Predicate NodeAffinity failed", "amd64 or arm64"],
            ),
        ];
        for (case, js, says) in cases {
            let api = FakeApi::start(&[]);
            api.script_jobs(js);
            let started = Instant::now();
            let run = tracer(&api, &["job", "run", "--node", "node-1", "--name", "tracer-s", "--duration", "10m", "--", "drops"]);
            let took = started.elapsed();
            run.assert_code(1);
            assert!(took < Duration::from_secs(15), "{case}: failed fast, not at the start bound: {took:?}\n{}", run.stderr);
            let errors: Vec<&str> = run.stderr_lines().into_iter().filter(|l| l.starts_with("tracer: error: ")).collect();
            assert_eq!(errors.len(), 1, "{case}: one error line: {}", run.stderr);
            eprintln!("{case} ({took:.1?}):\n{}", run.stderr);
            assert!(errors[0].starts_with("tracer: error: job tracer/tracer-s: "), "{case}: {}", errors[0]);
            for s in &says {
                assert!(errors[0].contains(s), "{case}: {s:?} in: {}", errors[0]);
            }
            assert!(errors[0].contains("the Job was deleted"), "{case}: {}", errors[0]);
            assert!(api.jobs().is_empty(), "{case}: the Job it made is taken away: {}", api.request_log());
        }
    }

    /// While the pod starts, `job run` says how far it got (the pod's state and the newest
    /// Event), from the Events of its Job and pod (by uid); a mount failure that comes later
    /// still ends the wait.
    #[test]
    fn job_run_says_how_far_its_pod_got_while_it_waits() {
        let api = FakeApi::start(&[]);
        let mount =
            "MountVolume.SetUp failed for volume \"cri\" : hostPath type check failed: /run/k3s/containerd/containerd.sock is not a socket file";
        api.script_jobs(JobScript { start: Start::FailedMount(mount.into()), events_after: Duration::from_secs(3), ..JobScript::default() });
        let run = tracer(
            &api,
            &["job", "run", "--node", "node-1", "--name", "tracer-w", "--", "drops", "--cri-socket", "/run/k3s/containerd/containerd.sock"],
        );
        run.assert_code(1);
        let lines = run.stderr_lines();
        let waiting = lines
            .iter()
            .position(|l| l.contains("job tracer/tracer-w: waiting for its pod: ContainerCreating"))
            .unwrap_or_else(|| panic!("progress first: {}", run.stderr));
        let error =
            lines.iter().position(|l| l.starts_with("tracer: error: ") && l.contains("FailedMount")).unwrap_or_else(|| panic!("{}", run.stderr));
        assert!(waiting < error, "{}", run.stderr);
        eprintln!("{}", run.stderr);
        let events: Vec<ApiRequest> = api.requests().into_iter().filter(|r| r.path == "/api/v1/namespaces/tracer/events").collect();
        let selectors: Vec<&str> = events.iter().filter_map(|r| r.param("fieldSelector")).collect();
        assert!(!selectors.is_empty() && selectors.iter().all(|s| s.starts_with("involvedObject.uid=")), "{selectors:?}");
        assert!(selectors.iter().collect::<std::collections::BTreeSet<_>>().len() == 2, "the Job's and the pod's: {selectors:?}");
    }

    /// A pod that waits without anyone saying why keeps being reported, not silently waited on.
    #[test]
    fn a_long_wait_keeps_saying_what_it_waits_for() {
        let api = FakeApi::start(&[]);
        api.script_jobs(JobScript { start: Start::Waiting("ContainerCreating".into()), ..JobScript::default() });
        let kc = api.kubeconfig();
        let t = Tracer::launch(&["job", "run", "--node", "node-1", "--name", "tracer-l", "--kubeconfig", kc.to_str().unwrap(), "--", "drops"]);
        let deadline = Instant::now() + Duration::from_secs(25);
        while !t.stderr().contains("still waiting for its pod after") {
            assert!(Instant::now() < deadline, "no progress line in 25 s: {}", t.stderr());
            std::thread::sleep(Duration::from_millis(200));
        }
        let run = t.stop();
        run.assert_code(130);
        assert!(run.stderr.contains("still waiting for its pod after 1") && run.stderr.contains(": ContainerCreating"), "{}", run.stderr);
    }

    /// kubectl's own `--context`: the kubeconfig's context, not its current one.
    #[test]
    fn context_picks_the_kubeconfig_context() {
        let api = FakeApi::start(&[]);
        let kc = api.dir().join("two-contexts");
        write_kubeconfig(&kc, &api.url(), Some(tracer_tests::kube_api::TOKEN));
        // The current context points at nothing; `fake` is the server.
        let text = std::fs::read_to_string(&kc).expect("kubeconfig");
        let text = text
            .replace("current-context: fake", "current-context: nowhere")
            .replace("contexts:\n", "contexts:\n- name: nowhere\n  context:\n    cluster: nowhere\n    user: tester\n")
            .replace("clusters:\n", "clusters:\n- name: nowhere\n  cluster:\n    server: http://127.0.0.1:9\n");
        std::fs::write(&kc, text).expect("write kubeconfig");
        let kc = kc.to_str().expect("utf-8");
        let run = |args: &[&str]| run_tracer_wrapped(&["env", "-u", "TRACER_IMAGE"], args, WAIT);
        let current = run(&["job", "list", "--kubeconfig", kc]);
        current.assert_code(1);
        let chosen = run(&["job", "list", "--kubeconfig", kc, "--context", "fake"]);
        chosen.assert_code(0);
        assert_eq!(chosen.lines, ["no tracer jobs"]);
        let missing = run(&["job", "list", "--kubeconfig", kc, "--context", "prod"]);
        missing.assert_code(2);
        assert_eq!(missing.stderr_lines().len(), 1, "{}", missing.stderr);
        assert!(missing.stderr.contains("--context prod") && missing.stderr.contains("no such context"), "{}", missing.stderr);
    }

    /// The rules of `kind` `name` among `docs`, granted in `namespace` (None: cluster-wide).
    pub(super) fn rules_of(docs: &[Value], kind: &str, name: &str, namespace: Option<&str>) -> Vec<Rule> {
        let role = find(docs, kind, name);
        let mut out = Vec::new();
        for rule in role["rules"].as_array().expect("rules") {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        out.push(Rule { namespace: namespace.map(String::from), group: group.into(), resource: resource.into(), verb: verb.into() });
                    }
                }
            }
        }
        out
    }

    /// A user bound as `install print --job-user-group` binds: tracer-job-user in namespace
    /// tracer and, with `cluster_reader`, tracer-cluster-reader everywhere.
    fn job_user_rules(cluster_reader: bool) -> Vec<Rule> {
        let docs = yaml_documents(&deploy("install.yaml"));
        let mut rules = rules_of(&docs, "Role", "tracer-job-user", Some("tracer"));
        if cluster_reader {
            rules.extend(rules_of(&docs, "ClusterRole", "tracer-cluster-reader", None));
        }
        rules
    }

    /// Every request `tracer job run/logs/list/delete` makes is one the roles of
    /// deploy/install.yaml allow — the fake refuses anything else, as RBAC would — so a user
    /// bound to them is not stopped half-way (a Job created and never deleted).
    #[test]
    fn the_job_roles_allow_every_request_tracer_job_makes() {
        let api = FakeApi::start(&[PodFixture::new("shop", "web-0", "node-7", &["10.244.7.5"])]);
        api.enforce_rbac("alice", job_user_rules(true));
        api.script_jobs(script(&[&drop_line()], 0));
        tracer(&api, &["job", "run", "--pod", "shop/web-0", "--name", "tracer-r", "--", "drops"]).assert_code(0);
        tracer(&api, &["job", "logs", "tracer-r"]).assert_code(0);
        tracer(&api, &["job", "list"]).assert_code(0);
        tracer(&api, &["job", "list", "-A"]).assert_code(0);
        tracer(&api, &["job", "delete", "tracer-r"]).assert_code(0);
        api.script_jobs(JobScript {
            start: Start::FailedMount("hostPath type check failed: /x.sock is not a socket file".into()),
            ..JobScript::default()
        });
        tracer(&api, &["job", "run", "--node", "node-1", "--", "drops"]).assert_code(1);
        api.script_jobs(JobScript { hold: true, ..script(&[&drop_line()], 0) });
        let kc = api.kubeconfig();
        let t = Tracer::launch(&["job", "run", "--node", "node-1", "--name", "tracer-i", "--kubeconfig", kc.to_str().unwrap(), "--", "drops"]);
        assert!(api.wait_requests(WAIT, |r| r.iter().any(|r| r.path.ends_with("/log") && r.path.contains("tracer-i"))), "{}", api.request_log());
        t.stop().assert_code(130);
        let requests = api.requests();
        let refused: Vec<String> = requests.iter().filter(|r| r.status == 403).map(ToString::to_string).collect();
        assert!(refused.is_empty(), "refused by the roles:\n{}", refused.join("\n"));
        for what in ["DELETE", "/log", "/events"] {
            assert!(requests.iter().any(|r| r.method == what || r.path.ends_with(what)), "{what} was exercised:\n{}", api.request_log());
        }
    }

    /// With tracer-job-user alone, `job run --pod` in another namespace is refused by RBAC; the
    /// error says what to bind (or to pass --node), and no Job is created; `--node` works.
    #[test]
    fn without_the_cluster_reader_a_pod_elsewhere_says_what_to_bind() {
        let api = FakeApi::start(&[PodFixture::new("shop", "web-0", "node-7", &["10.244.7.5"])]);
        api.enforce_rbac("alice", job_user_rules(false));
        api.script_jobs(script(&[&drop_line()], 0));
        let run = tracer(&api, &["job", "run", "--pod", "shop/web-0", "--", "drops"]);
        run.assert_code(1);
        assert_eq!(run.stderr_lines().len(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("403 Forbidden")
                && run.stderr.contains("cannot get resource \"pods\" in API group \"\" in the namespace \"shop\"")
                && run.stderr.contains("tracer-cluster-reader")
                && run.stderr.contains("--node"),
            "{}",
            run.stderr
        );
        assert!(api.jobs().is_empty());
        tracer(&api, &["job", "run", "--node", "node-7", "--", "drops", "--pod", "shop/web-0"]).assert_code(0);
    }

    #[test]
    fn bad_job_input_asks_nothing_of_the_api() {
        let api = FakeApi::start(&[]);
        for args in [
            &["job", "run", "--pod", "web-0", "--", "drops"][..],
            &["job", "run", "--node", "node-1", "--", "serve"][..],
            &["job", "logs", "Not_A_Name"][..],
            &["job", "delete", "ok-name", "Bad_Name"][..],
            &["job", "list", "--namespace", "Bad_NS"][..],
            &["job", "list", "--context", ""][..],
        ] {
            let run = tracer(&api, args);
            run.assert_code(2);
            assert_eq!(run.stderr_lines().len(), 1, "{args:?}: one line: {}", run.stderr);
        }
        let missing = tracer_cli(&["job", "list", "--kubeconfig", "/nonexistent/kubeconfig"]);
        missing.assert_code(2);
        assert!(missing.stderr.contains("--kubeconfig /nonexistent/kubeconfig: no such file"), "{}", missing.stderr);
        let render_pod = tracer_cli(&["job", "render", "--pod", "shop/web-0", "--", "drops"]);
        render_pod.assert_code(2);
        assert!(render_pod.stderr.contains("--node"), "{}", render_pod.stderr);
        assert!(api.requests().is_empty(), "bad input never reaches the API:\n{}", api.request_log());
    }
}
