//! The project's image run as a cluster would run it: `cargo xtask image`'s tarball imported
//! into the node lab's containerd, and the container created through the CRI with exactly the
//! settings `tracer job render` puts in the Job (capabilities, read-only root, no privilege
//! escalation, hostNetwork/hostPID, the read-only host mounts), taken from the rendered YAML
//! itself. It runs `tracer drops --duration ... -o json` and must report a drop caused in the
//! lab; with a capability it cannot work without removed, it must fail naming that capability.
//!
//! The install path too: the same tarball pushed with skopeo to a registry (Debian's
//! `docker-registry`, on 127.0.0.1 in the node's namespace), pulled by containerd through the
//! CRI as kubelet pulls a Job's image, and run the same way.
//!
//! Run: `cargo xtask image && cargo test --release -p tracer-tests --test image` (as root;
//! `cargo xtask test` builds the image and passes the tarball as TRACER_IMAGE_ARCHIVE). The
//! release image: `TRACER_BIN=target/release-artifacts/tracer-linux-amd64
//! TRACER_IMAGE_ARCHIVE=target/release-artifacts/tracer-image-<version>-linux-amd64.tar`.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use tracer_tests::{
    node::{Container, ContainerSpec, HostMount, NodeLab, Pod, Registry, cri_log_lines, image_id, image_reference, require_node, require_registry},
    *,
};

/// The node name the Job is rendered for (`spec.nodeName`, and NODE_NAME inside).
const NODE: &str = "node-lab";
/// Where the manifest mounts the CRI socket from; in the lab, the lab's socket is that node path.
const NODE_CRI_SOCKET: &str = "/run/containerd/containerd.sock";
/// UDP port the server pod drops with an iptables rule.
const PORT: u16 = 5733;
/// How long the traced command runs (`job render --duration`).
const TRACE_FOR: &str = "10s";
/// The same for the registry test, which only needs one drop seen to prove the pulled image runs.
const TRACE_FOR_PULLED: &str = "4s";
/// The environment variable with the image tarball's path.
const ARCHIVE_ENV: &str = "TRACER_IMAGE_ARCHIVE";
/// Bound for the container from start to exit: start-up, the trace, the summary.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(60);

/// The image tarball: `$TRACER_IMAGE_ARCHIVE` (set by `cargo xtask test`), else
/// target/tracer-image.tar. It must hold the tracer under test (the one that renders the Job):
/// another build is refused.
fn image_tar() -> PathBuf {
    let tar = std::env::var_os(ARCHIVE_ENV).map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target/tracer-image.tar"));
    assert!(tar.is_file(), "no image at {}: build it with `cargo xtask image` (or set {ARCHIVE_ENV})", tar.display());
    let inner = format!("tar -xOf '{}' layer.tar | tar -xO tracer", tar.display());
    let out = run_timeout(std::process::Command::new("sh").args(["-c", &inner]), CMD_TIMEOUT);
    assert!(out.status.success() && !out.stdout.is_empty(), "{inner}: {}", String::from_utf8_lossy(&out.stderr));
    let bin = std::fs::read(tracer_bin()).expect("read the tracer binary");
    assert!(
        out.stdout == bin,
        "{} holds another build than {}: rebuild it with `cargo xtask image --no-build`",
        tar.display(),
        tracer_bin().display()
    );
    tar
}

/// The rendered Job's container, as the CRI will get it from kubelet.
struct Rendered {
    spec: ContainerSpec,
    /// The container's `imagePullPolicy` (None: Kubernetes' default, IfNotPresent for a tag
    /// other than `latest`).
    pull_policy: Option<String>,
    /// `volumes[].hostPath.path` by the mount's path in the container.
    host_paths: BTreeMap<String, String>,
}

/// `tracer job render ... -- COMMAND...` parsed and turned into the CRI's terms. Every field of
/// the pod and container that the CRI would see must be one this translation knows, so that a
/// setting added to the manifest later cannot silently go untested.
fn render(image: &str, duration: &str, command: &[&str]) -> Rendered {
    let mut argv = vec!["job", "render", "--node", NODE, "--image", image, "--duration", duration, "--"];
    argv.extend(command);
    let run = run_tracer(&argv, Duration::from_secs(30));
    run.assert_code(0);
    let file = std::env::temp_dir().join(format!("{}-job.yaml", unique_name("im")));
    let _cleanup = TempFile(file.clone());
    std::fs::write(&file, run.lines.join("\n")).expect("write the manifest");
    let job = yaml_as_json(&file);
    let pod = &job["spec"]["template"]["spec"];
    // nodeSelector and affinity only place the pod (the kubelet checks them, nothing reaches the
    // CRI), as do nodeName and tolerations.
    let known_pod = [
        "nodeName",
        "nodeSelector",
        "affinity",
        "restartPolicy",
        "serviceAccountName",
        "hostNetwork",
        "hostPID",
        "dnsPolicy",
        "tolerations",
        "containers",
        "volumes",
    ];
    for key in pod.as_object().expect("pod spec").keys() {
        assert!(known_pod.contains(&key.as_str()), "pod spec field {key:?} is not translated to the CRI by this test: {pod:#}");
    }
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{pod:#}");
    let c = &containers[0];
    assert!(c.get("command").is_none(), "the manifests rely on the image's entrypoint: {c:#}");
    let sc = &c["securityContext"];
    for key in sc.as_object().expect("securityContext").keys() {
        let known = ["privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities"];
        assert!(known.contains(&key.as_str()), "securityContext field {key:?} is not translated to the CRI by this test: {sc:#}");
    }
    let strings = |v: &Value| -> Vec<String> { v.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect() };
    let volumes: BTreeMap<&str, &str> = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().expect("volume name"), v["hostPath"]["path"].as_str().expect("only hostPath volumes")))
        .collect();
    let mut host_paths = BTreeMap::new();
    let mut mounts = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().expect("mount name");
        let host = *volumes.get(name).unwrap_or_else(|| panic!("mount {name} has no volume: {pod:#}"));
        let container = m["mountPath"].as_str().expect("mountPath").to_string();
        host_paths.insert(container.clone(), host.to_string());
        mounts.push(HostMount { host: PathBuf::from(host), container, read_only: m["readOnly"] == true });
    }
    let env = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let value = match (e["value"].as_str(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()) {
                (Some(v), _) => v.to_string(),
                (None, Some("spec.nodeName")) => NODE.to_string(),
                other => panic!("env {e} ({other:?}) is not translated by this test"),
            };
            (e["name"].as_str().expect("env name").to_string(), value)
        })
        .collect();
    let spec = ContainerSpec {
        name: c["name"].as_str().expect("container name").to_string(),
        image: c["image"].as_str().expect("image").to_string(),
        command: strings(&c["command"]),
        args: strings(&c["args"]),
        env,
        cap_add: strings(&sc["capabilities"]["add"]),
        cap_drop: strings(&sc["capabilities"]["drop"]),
        privileged: sc["privileged"] == true,
        read_only_root: sc["readOnlyRootFilesystem"] == true,
        no_new_privs: sc["allowPrivilegeEscalation"] == false,
        host_network: pod["hostNetwork"] == true,
        host_pid: pod["hostPID"] == true,
        mounts,
    };
    Rendered { spec, pull_policy: c["imagePullPolicy"].as_str().map(str::to_string), host_paths }
}

/// What a tracer container did.
struct Outcome {
    code: i32,
    /// CapEff of the container's process while it traced (None when it never attached).
    cap_eff: Option<u64>,
    events: Vec<Value>,
    stderr: Vec<String>,
}

/// A lab with a client and a server pod, the server dropping UDP to [`PORT`], and the image.
struct DropLab {
    /// The registry the image was pulled from, if it was: dropped (killed) before the lab.
    registry: Option<Registry>,
    lab: NodeLab,
    client: Pod,
    server: Pod,
    image: String,
}

impl DropLab {
    /// The lab with the image tarball imported (`ctr images import`).
    fn new() -> DropLab {
        let tar = image_tar();
        let image = image_reference(&tar).unwrap_or_else(|e| panic!("{e:#}"));
        let lab = NodeLab::new();
        lab.import_image(&tar, &image).unwrap_or_else(|e| panic!("importing {}: {e:#}", tar.display()));
        DropLab::with_pods(lab, image, None)
    }

    /// Makes the pods and the dropping rule in `lab`, which has `image`.
    fn with_pods(lab: NodeLab, image: String, registry: Option<Registry>) -> DropLab {
        let server = lab.run_pod("shop", "api-0", &[("app", "api")]);
        let client = lab.run_pod("shop", "web-0", &[("app", "web")]);
        server.exec_ok(&["iptables", "-A", "INPUT", "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]);
        DropLab { registry, lab, client, server, image }
    }

    /// The rendered `drops` Job for the server's address, its CRI socket mount pointed at the lab's.
    fn drops_job(&self, duration: &str) -> Rendered {
        let ip = format!("{}/32", self.server.ip);
        self.job(duration, &["drops", "--ip", &ip, "--port", &PORT.to_string(), "--pods-from", "cri"])
    }

    /// The rendered Job of `command`, its CRI socket mount pointed at the lab's.
    fn job(&self, duration: &str, command: &[&str]) -> Rendered {
        let mut r = render(&self.image, duration, command);
        // The node's CRI socket is, in the lab, the lab's own containerd socket.
        for m in &mut r.spec.mounts {
            if m.host == Path::new(NODE_CRI_SOCKET) {
                m.host = self.lab.socket_path();
            }
        }
        r
    }

    /// Runs the container in a pod of its own (hostNetwork/hostPID as the manifest says); once
    /// it says it attached, sends `datagrams` UDP datagrams from the client to the dropping
    /// server; collects its exit and its log.
    fn run(&self, spec: &ContainerSpec, datagrams: u32) -> Outcome {
        let pod = self.lab.run_pod_for_containers("kube-system", &unique_name("tj"), spec.host_network, spec.host_pid);
        let container = self.lab.run_container(&pod, spec).unwrap_or_else(|e| panic!("{e:#}\ncontainerd log:\n{}", self.lab.containerd_log_tail()));
        let mut cap_eff = None;
        if datagrams > 0 && self.wait_attached(&container) {
            let pid = self.lab.container_pid(&container).unwrap_or_else(|e| panic!("{e:#}"));
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            cap_eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
            let send = format!(
                "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range({datagrams}):\n    s.sendto(b'x' * 16, ('{}', {PORT}))\n    time.sleep(0.05)\n",
                self.server.ip
            );
            self.client.exec_ok(&["python3", "-c", &send]);
        }
        let exit =
            self.lab.wait_container(&container, CONTAINER_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}\ncontainer log:\n{}", log_text(&container)));
        let lines = cri_log_lines(&container.log);
        let events = lines
            .iter()
            .filter(|(stream, _)| stream == "stdout")
            .map(|(_, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
            .collect();
        let stderr = lines.into_iter().filter(|(stream, _)| stream == "stderr").map(|(_, l)| l).collect();
        self.lab.remove_pod(&pod);
        Outcome { code: exit.code, cap_eff, events, stderr }
    }

    /// Polls the container's log for tracer's `attached` line; false when it did not come within
    /// [`ATTACH_TIMEOUT`].
    fn wait_attached(&self, container: &Container) -> bool {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        while Instant::now() < deadline {
            if cri_log_lines(&container.log).iter().any(|(_, l)| l.starts_with("tracer: attached")) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// The lab and its rendered `drops` Job, or None (after saying why) when this machine cannot
/// run a node lab.
fn start(test: &str) -> Option<(DropLab, Rendered)> {
    if !require_node(test) {
        return None;
    }
    let lab = DropLab::new();
    let job = lab.drops_job(TRACE_FOR);
    Some((lab, job))
}

fn log_text(container: &Container) -> String {
    cri_log_lines(&container.log).into_iter().map(|(s, l)| format!("{s}: {l}")).collect::<Vec<_>>().join("\n")
}

/// The capability bits (linux/capability.h) of Kubernetes capability names.
fn cap_bits(names: &[String]) -> u64 {
    let bit = |name: &str| match name {
        "NET_ADMIN" => 12,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "SYSLOG" => 34,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other} is not in this test's table"),
    };
    names.iter().fold(0, |bits, n| bits | 1u64 << bit(n))
}

/// Drops the lab (its registry first) and checks nothing of it is left.
fn assert_cleaned_up(lab: DropLab) {
    let left = lab.lab.leftovers();
    drop(lab);
    let found = left.find();
    assert!(found.is_empty(), "the lab (or its registry) left behind: {found:#?}");
}

/// The drops of our datagrams among `events`.
fn our_drops<'a>(events: &'a [Value], server: &Pod) -> Vec<&'a Value> {
    let dst = format!("{}:{PORT}", server.ip);
    events.iter().filter(|e| e["kind"] == "drop" && e["dst"] == dst.as_str()).collect()
}

#[test]
fn the_image_runs_drops_with_the_manifests_settings_and_reports_the_labs_drop() {
    let Some((lab, job)) = start("the_image_runs_drops_with_the_manifests_settings_and_reports_the_labs_drop") else { return };
    let spec = &job.spec;
    // The settings the issue asks for, as rendered, are what is about to run.
    assert!(!spec.privileged && spec.read_only_root && spec.no_new_privs, "{spec:?}");
    assert_eq!(spec.cap_drop, ["ALL"]);
    // No BTF mount: the container's own read-only /sys has the kernel's BTF (checked by the
    // drop it reports below, which needs it), and a hostPath there would stop the pod on a node
    // without BTF (tests/tests/job.rs).
    assert!(!job.host_paths.contains_key("/sys/kernel/btf"), "{:?}", job.host_paths);
    assert_eq!(job.host_paths.get(NODE_CRI_SOCKET).map(String::as_str), Some(NODE_CRI_SOCKET));
    assert!(spec.mounts.iter().all(|m| m.read_only), "every host mount read-only: {:?}", spec.mounts);

    let out = lab.run(spec, 5);
    let stderr = out.stderr.join("\n");
    assert_eq!(out.code, 0, "the container failed:\n{stderr}");
    assert!(!stderr.contains("warning: CAP_"), "the manifest's capabilities should leave nothing missing:\n{stderr}");
    assert_eq!(out.cap_eff, Some(cap_bits(&spec.cap_add)), "the container ran with exactly the manifest's capabilities {:?}", spec.cap_add);
    let drops = our_drops(&out.events, &lab.server);
    assert!(!drops.is_empty(), "no drop of {}:{PORT} reported; events: {:?}\n{stderr}", lab.server.ip, out.events);
    for d in &drops {
        assert_eq!(d["reason"], "NETFILTER_DROP", "{d}");
        assert_eq!(d["proto"], "udp", "{d}");
        assert_eq!(d["src"].as_str().and_then(|s| s.split(':').next()), Some(lab.client.ip.as_str()), "{d}");
        // Pod names came through the read-only CRI socket mount.
        assert_eq!(d["src_pod"], lab.client.key().as_str(), "{d}");
        assert_eq!(d["dst_pod"], lab.server.key().as_str(), "{d}");
        // The server's namespace, named through its sandbox process: hostPID and SYS_PTRACE.
        assert_eq!(d["netns"], lab.server.netns_inode, "{d}");
        assert_eq!(d["netns_pod"], lab.server.key().as_str(), "{d}");
        // A function name, not a bare address: /proc/kallsyms was readable (SYSLOG).
        let location = d["location"].as_str().unwrap_or_default();
        assert!(location.contains("+0x") && !location.starts_with("0x"), "location not symbolised: {d}");
    }
    eprintln!("{} drops reported from the container, e.g. {}", drops.len(), drops[0]);
    let summary = parse_summary(&stderr, "drops").unwrap_or_else(|| panic!("no drops summary:\n{stderr}"));
    assert!(summary.seen >= drops.len() as u64 && summary.lost == 0, "{summary:?}\n{stderr}");
    assert_cleaned_up(lab);
}

#[test]
fn without_a_capability_it_cannot_work_without_the_container_fails_naming_it() {
    let Some((lab, job)) = start("without_a_capability_it_cannot_work_without_the_container_fails_naming_it") else { return };
    for cap in ["BPF", "PERFMON"] {
        let mut spec = job.spec.clone();
        assert!(spec.cap_add.iter().any(|c| c == cap), "{cap} is not in the manifest: {:?}", spec.cap_add);
        spec.cap_add.retain(|c| c != cap);
        let out = lab.run(&spec, 0);
        let stderr = out.stderr.join("\n");
        assert_ne!(out.code, 0, "without {cap} the container must fail:\n{stderr}");
        assert_eq!(out.code, 2, "a missing capability is refused before anything is loaded (exit 2):\n{stderr}");
        assert_eq!(out.stderr.len(), 1, "one line:\n{stderr}");
        assert!(stderr.contains(&format!("needs CAP_{cap} (")) && stderr.contains("securityContext"), "the error names CAP_{cap}:\n{stderr}");
        assert!(out.events.is_empty(), "nothing traced: {:?}", out.events);
    }
}

/// SYS_PTRACE and SYSLOG cost part of the output, not the run: without them the container
/// still reports the drop, warns naming each, and cannot name the namespace's pod or the
/// dropping function. That is what they are in the manifest for.
#[test]
fn without_sys_ptrace_and_syslog_drops_lose_the_namespaces_pod_and_the_location() {
    let test = "without_sys_ptrace_and_syslog_drops_lose_the_namespaces_pod_and_the_location";
    let Some((lab, job)) = start(test) else { return };
    let mut spec = job.spec;
    spec.cap_add.retain(|c| c != "SYS_PTRACE" && c != "SYSLOG");
    let out = lab.run(&spec, 5);
    let stderr = out.stderr.join("\n");
    assert_eq!(out.code, 0, "{stderr}");
    assert!(stderr.contains("warning: CAP_SYS_PTRACE is missing"), "{stderr}");
    let drops = our_drops(&out.events, &lab.server);
    assert!(!drops.is_empty(), "the drop is still reported: {:?}\n{stderr}", out.events);
    // kallsyms hides addresses from a reader without SYSLOG under kptr_restrict 1, or 0 with
    // perf_event_paranoid above 1 (this machine: 0 and 2); under 2 it hides them from everyone.
    let sysctl = |name: &str| std::fs::read_to_string(format!("/proc/sys/kernel/{name}")).ok().and_then(|v| v.trim().parse::<i32>().ok());
    let syslog_matters = match sysctl("kptr_restrict") {
        Some(0) => sysctl("perf_event_paranoid").is_none_or(|p| p > 1),
        Some(1) => true,
        _ => false,
    };
    if syslog_matters {
        assert!(stderr.contains("warning: CAP_SYSLOG is missing"), "{stderr}");
    } else {
        skipped(&format!("{test}: the SYSLOG half"), "this kernel's kallsyms does not depend on CAP_SYSLOG (kptr_restrict/perf_event_paranoid)");
    }
    for d in drops {
        assert_eq!(d["dst_pod"], lab.server.key().as_str(), "addresses still name pods (CRI): {d}");
        assert_eq!(d["netns_pod"], Value::Null, "without SYS_PTRACE the sandbox's /proc/PID/ns/net is closed: {d}");
        if syslog_matters {
            let location = d["location"].as_str().unwrap_or_default();
            assert!(location.starts_with("0x"), "without SYSLOG kallsyms shows no addresses: {d}");
        }
    }
}

/// `diagnose` from inside the image, with the Job's settings, names the server pod's firewall
/// rule (added with `iptables`, which is iptables-nft here) with its counter: the rules are
/// read through netlink from the pod's namespace, though the image has no iptables-save or nft.
#[test]
fn the_image_runs_diagnose_and_names_the_firewall_rule_that_dropped() {
    let test = "the_image_runs_diagnose_and_names_the_firewall_rule_that_dropped";
    if !require_node(test) {
        return;
    }
    let lab = DropLab::new();
    let ip = format!("{}/32", lab.server.ip);
    let job = lab.job(TRACE_FOR, &["diagnose", "--ip", &ip, "--pods-from", "cri"]);
    assert!(job.spec.args.iter().any(|a| a == "json"), "the Job asks for JSON: {:?}", job.spec.args);
    let out = lab.run(&job.spec, 5);
    let stderr = out.stderr.join("\n");
    assert_eq!(out.code, 0, "the container failed:\n{stderr}");
    assert_eq!(out.events.len(), 1, "diagnose -o json prints one object: {:?}\n{stderr}", out.events);
    let report = &out.events[0];
    let findings: Vec<&Value> = report["findings"].as_array().into_iter().flatten().filter(|f| f["code"] == "netfilter-drop").collect();
    assert_eq!(findings.len(), 1, "one netfilter-drop, for the lab's datagrams: {report:#}\n{stderr}");
    let f = findings[0];
    assert_eq!(f["evidence"]["netns"], lab.server.netns_inode, "dropped in the server pod's namespace: {f:#}");
    assert_eq!(f["evidence"]["netns_pod"], lab.server.key().as_str(), "{f:#}");
    let rules: Vec<&str> = f["evidence"]["rules"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let drops = f["evidence"]["drops"].as_u64().unwrap_or(0);
    let named = format!("ip filter/INPUT: udp dport {PORT} counter packets {drops} bytes ");
    assert!(drops >= 1 && rules.len() == 1 && rules[0].starts_with(&named), "evidence.rules names the pod's rule ({named}...): {f:#}\n{stderr}");
    assert!(f["evidence"].get("rules_unreadable").is_none(), "every source was read: {f:#}");
    assert!(f["summary"].as_str().is_some_and(|s| s.contains(rules[0])), "{f:#}");
    eprintln!("diagnose from the image named: {}", rules[0]);
    assert_cleaned_up(lab);
}

/// `REGISTRY/PATH:TAG` as (`PATH`, `TAG`): the repository the image keeps in another registry.
/// The first component is a registry host when it has a dot or a port, or is `localhost`.
fn repository_and_tag(reference: &str) -> (String, String) {
    let (name, tag) = reference.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or_else(|| panic!("{reference} has no tag"));
    let path = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => name,
    };
    (path.to_string(), tag.to_string())
}

/// The install path with real parts: the image pushed with skopeo to a registry, containerd told
/// it speaks plain HTTP, the image pulled through the CRI as kubelet pulls a Job's image (by the
/// manifest's imagePullPolicy, on a node that does not have it), and run with the Job's settings:
/// it must be the very image of the tarball and report the lab's drop.
#[test]
fn the_image_pushed_to_a_registry_is_pulled_through_the_cri_and_runs_with_the_jobs_settings() {
    let test = "the_image_pushed_to_a_registry_is_pulled_through_the_cri_and_runs_with_the_jobs_settings";
    if !require_registry(test) {
        return;
    }
    let t0 = Instant::now();
    let tar = image_tar();
    let archived = image_reference(&tar).unwrap_or_else(|e| panic!("{e:#}"));
    let id = image_id(&tar).unwrap_or_else(|e| panic!("{e:#}"));
    let (repository, tag) = repository_and_tag(&archived);
    let lab = NodeLab::new();
    let registry = Registry::start(&lab).unwrap_or_else(|e| panic!("{e:#}"));
    lab.trust_plain_http_registry(&registry.host).unwrap_or_else(|e| panic!("{e:#}"));
    let push_started = Instant::now();
    let reference = registry.push(&tar, &repository, &tag).unwrap_or_else(|e| panic!("{e:#}"));
    let pushed_in = push_started.elapsed();
    let host = registry.host.clone();
    let lab = DropLab::with_pods(lab, reference.clone(), Some(registry));
    let job = lab.drops_job(TRACE_FOR_PULLED);
    assert_eq!(job.spec.image, reference, "the Job runs the image it was rendered with");

    // What kubelet does before it creates the container.
    let present = lab.lab.has_image(&reference).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(!present, "a fresh node has no tracer image: the pull below must be real");
    let policy = job.pull_policy.as_deref().unwrap_or("IfNotPresent");
    assert_ne!(policy, "Never", "the Job must let the node pull an image it does not have");
    let pull_started = Instant::now();
    let pulled = lab.lab.pull_image(&reference).unwrap_or_else(|e| {
        let registry_log = lab.registry.as_ref().map(Registry::log_text).unwrap_or_default();
        panic!(
            "{e:#}
registry log:
{registry_log}
containerd log:
{}",
            lab.lab.containerd_log_tail()
        )
    });
    let pulled_in = pull_started.elapsed();
    assert_eq!(pulled.id, id, "containerd has the tarball's image (its config digest): {pulled:?}");
    assert!(pulled.repo_digests.iter().any(|d| d.starts_with(&format!("{host}/{repository}@sha256:"))), "pulled from {host}: {pulled:?}");
    assert!(pulled.repo_tags.contains(&reference), "{pulled:?}");

    let out = lab.run(&job.spec, 5);
    let stderr = out.stderr.join("\n");
    assert_eq!(out.code, 0, "the pulled image failed:\n{stderr}");
    let drops = our_drops(&out.events, &lab.server);
    assert!(!drops.is_empty(), "no drop of {}:{PORT} reported by the pulled image; events: {:?}\n{stderr}", lab.server.ip, out.events);
    assert_eq!(drops[0]["dst_pod"], lab.server.key().as_str(), "{}", drops[0]);
    // Written to fd 2: libtest captures eprintln! of passing tests.
    let timing = format!("registry test: push {pushed_in:.1?}, pull {pulled_in:.1?}, whole test {:.1?}", t0.elapsed());
    let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{timing}\n").as_bytes());
    assert_cleaned_up(lab);
}

#[test]
fn references_split_into_repository_and_tag() {
    let split = |r: &str| repository_and_tag(r);
    assert_eq!(split("ghcr.io/tracer-project/tracer:0.1.0"), ("tracer-project/tracer".into(), "0.1.0".into()));
    assert_eq!(split("127.0.0.1:5000/a/b:1"), ("a/b".into(), "1".into()));
    assert_eq!(split("localhost/tracer:0.1.0"), ("tracer".into(), "0.1.0".into()));
    assert_eq!(split("team/tracer:2"), ("team/tracer".into(), "2".into()));
}
