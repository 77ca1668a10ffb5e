//! `tracer job render`: the manifest is a valid Kubernetes Job by the API's own schemas
//! (kubernetes-validate, installed by scripts/setup.sh into /opt/tracer-py) and holds the
//! least-privilege settings; so is deploy/daemonset.yaml. No cluster, no privileges needed.
//! Run: `cargo build --release -p tracer && cargo test --release -p tracer-tests --test job`.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{
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
    assert!(
        out.status.success(),
        "{} is not a valid Kubernetes object:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn render(args: &[&str]) -> (TracerRun, PathBuf) {
    let mut argv = vec!["job", "render"];
    argv.extend(args);
    let run = run_tracer(&argv, Duration::from_secs(30));
    let file = std::env::temp_dir().join(format!("{}-job.yaml", unique_name("jb")));
    std::fs::write(&file, run.lines.join("\n")).expect("write the manifest");
    (run, file)
}

/// The capabilities the README's table gives `drops` and `serve` (the DaemonSet), no more.
const DROPS_CAPABILITIES: &[&str] = &["BPF", "PERFMON", "SYS_PTRACE", "SYSLOG"];
const SERVE_CAPABILITIES: &[&str] = &["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "SYSLOG", "SYS_ADMIN"];

#[test]
fn rendered_job_is_valid_pinned_bounded_and_least_privilege() {
    let (run, file) = render(&["--node", "node-1", "--duration", "90s", "--namespace", "tracing", "--", "drops", "--pod", "shop/web-0"]);
    let _cleanup = TempFile(file.clone());
    run.assert_code(0);
    validate(&file);
    let job = yaml_as_json(&file);
    assert_eq!((job["apiVersion"].as_str(), job["kind"].as_str()), (Some("batch/v1"), Some("Job")));
    assert_eq!(job["metadata"]["namespace"], "tracing");
    let spec = &job["spec"];
    assert_eq!(spec["activeDeadlineSeconds"], 210, "--duration + 120 s: {spec:#}");
    assert!(spec["ttlSecondsAfterFinished"].as_u64().is_some_and(|t| t > 0), "finished Jobs go away: {spec:#}");
    assert_eq!(spec["backoffLimit"], 0, "a trace is not retried: {spec:#}");
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["nodeName"], "node-1", "pinned to the node: {pod:#}");
    assert_eq!(pod["restartPolicy"], "Never");
    assert!(
        pod["tolerations"].as_array().is_some_and(|t| t.iter().any(|t| t["operator"] == "Exists" && t.get("key").is_none())),
        "runs on tainted nodes: {pod:#}"
    );
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(args, ["drops", "--pod", "shop/web-0", "-o", "json", "--duration", "90s"]);
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
    // Every host path it mounts is one of the two it needs.
    let paths: Vec<&str> = pod["volumes"].as_array().expect("volumes").iter().filter_map(|v| v["hostPath"]["path"].as_str()).collect();
    assert_eq!(paths, ["/sys/kernel/btf", "/run/containerd/containerd.sock"]);
}

#[test]
fn the_daemonset_is_valid_and_least_privilege() {
    let file = workspace_root().join("deploy/daemonset.yaml");
    validate(&file);
    let ds = yaml_as_json(&file);
    let c = &ds["spec"]["template"]["spec"]["containers"][0];
    assert_ne!(c["securityContext"]["privileged"], true);
    assert_eq!(c["securityContext"]["capabilities"]["add"], serde_json::json!(SERVE_CAPABILITIES), "the same set as a serve Job's");
    let args: Vec<&str> = c["args"].as_array().expect("args").iter().filter_map(Value::as_str).collect();
    assert_eq!(&args[..3], ["serve", "--metrics", "0.0.0.0:9464"]);
}

#[test]
fn bad_job_input_is_one_line_and_exit_2() {
    for (args, says) in [
        (&["--node", "node-1", "--", "pods"][..], "is not one of"),
        (&["--node", "node-1", "--", "drops", "--ip", "nonsense"][..], "--ip nonsense"),
        (&["--node", "node-1", "--", "drops", "-o", "table"][..], "set by the Job"),
        (&["--node", "Node_1", "--", "drops"][..], "--node"),
        (&["--node", "node-1", "--duration", "soon", "--", "drops"][..], "--duration soon"),
    ] {
        let (run, file) = render(args);
        let _cleanup = TempFile(file);
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
    let kubectl = |args: &[&str]| run_timeout(Command::new("kubectl").arg("tracer").args(args).env("PATH", &path), Duration::from_secs(30));
    let out = kubectl(&["job", "render", "--node", "node-1", "--", "drops"]);
    assert!(out.status.success(), "kubectl tracer job render (kubectl: scripts/setup.sh installs it): {}", String::from_utf8_lossy(&out.stderr));
    let direct = run_tracer(&["job", "render", "--node", "node-1", "--", "drops"], Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(), direct.lines, "the plugin is the same program");
    let help = kubectl(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl tracer"), "{}", String::from_utf8_lossy(&help.stdout));
    let bad = kubectl(&["no-such-command"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("see 'kubectl tracer --help'"), "{}", String::from_utf8_lossy(&bad.stderr));
}

// ---------------------------------------------------------------------------------------------
// job run / logs / list / delete, against the fake API server of tests/src/kube_api.rs, which
// plays the Job controller and the kubelet's logs (kube_api/jobs.rs)
// ---------------------------------------------------------------------------------------------

mod api {
    use tracer_tests::kube_api::{ApiRequest, FakeApi, JobScript, PodFixture};

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
        run_tracer(&argv, WAIT)
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
        let _cleanup = TempFile(file.clone());
        rendered.assert_code(0);
        let sent = posts(&api);
        assert_eq!(sent.len(), 1, "one Job created:\n{}", api.request_log());
        assert_eq!(sent[0].path, "/apis/batch/v1/namespaces/tracing/jobs");
        let body: Value = serde_json::from_str(&sent[0].body).expect("JSON body");
        assert_eq!(body, yaml_as_json(&file), "the Job sent is the rendered one");
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

    #[test]
    fn ctrl_c_on_job_run_deletes_the_job_and_its_pod() {
        let api = FakeApi::start(&[]);
        api.script_jobs(JobScript { hold: true, ..script(&[&drop_line()], 0) });
        let kc = api.kubeconfig();
        let t = Tracer::launch(&["job", "run", "--node", "node-1", "--name", "tracer-held", "--kubeconfig", kc.to_str().unwrap(), "--", "drops"]);
        let deadline = std::time::Instant::now() + WAIT;
        while !(api.open_logs() == 1 && t.stdout_lines().iter().any(|l| l.contains("NETFILTER_DROP"))) {
            assert!(std::time::Instant::now() < deadline, "the log was never followed:\n{}\n{}", api.request_log(), t.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(api.job_pods("kube-system", "tracer-held").len(), 1, "the Job's pod runs");
        let run = t.stop();
        run.assert_code(130);
        assert!(run.stderr.contains("deleted job kube-system/tracer-held"), "{}", run.stderr);
        let delete = api.requests().into_iter().find(|r| r.method == "DELETE").expect("a DELETE");
        assert_eq!(delete.path, "/apis/batch/v1/namespaces/kube-system/jobs/tracer-held");
        let body: Value = serde_json::from_str(&delete.body).expect("DeleteOptions");
        assert_eq!(body["propagationPolicy"], "Background", "the pod goes too (Jobs orphan it by default)");
        assert!(api.jobs().is_empty() && api.job_pods("kube-system", "tracer-held").is_empty(), "nothing left tracing");
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
        let lreq = api.requests().into_iter().find(|r| r.method == "GET" && r.path == "/apis/batch/v1/namespaces/kube-system/jobs").expect("listed");
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
        assert!(again.stderr.contains(&format!("job kube-system/{} not found", names[0])), "{}", again.stderr);
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
        assert!(run.stderr.contains("job kube-system/tracer-f: the tracer on node node-1 exited with code 1"), "{}", run.stderr);
    }

    #[test]
    fn a_job_that_cannot_start_is_deleted_and_says_why() {
        let api = FakeApi::start(&[]);
        let why = "Back-off pulling image \"ghcr.io/tracer/tracer:latest\"";
        api.script_jobs(JobScript { stuck: Some(("ImagePullBackOff".into(), why.into())), ..JobScript::default() });
        let run = tracer(&api, &["job", "run", "--node", "node-1", "--name", "tracer-s", "--", "drops"]);
        run.assert_code(1);
        assert!(run.stderr.contains("cannot start: ImagePullBackOff: Back-off pulling image"), "{}", run.stderr);
        assert!(api.jobs().is_empty(), "the Job it made is taken away: {}", api.request_log());
    }

    /// Every request `tracer job run/logs/list/delete` makes is one that deploy/rbac.yaml's
    /// `tracer-job-user` allows: a user bound to it is not stopped half-way (a Job created and
    /// never deleted).
    #[test]
    fn the_job_user_role_allows_every_request_tracer_job_makes() {
        let api = FakeApi::start(&[PodFixture::new("shop", "web-0", "node-7", &["10.244.7.5"])]);
        api.script_jobs(script(&[&drop_line()], 0));
        tracer(&api, &["job", "run", "--pod", "shop/web-0", "--name", "tracer-r", "--", "drops"]).assert_code(0);
        tracer(&api, &["job", "logs", "tracer-r"]).assert_code(0);
        tracer(&api, &["job", "list", "-A"]).assert_code(0);
        tracer(&api, &["job", "delete", "tracer-r"]).assert_code(0);
        api.script_jobs(JobScript { hold: true, ..script(&[&drop_line()], 0) });
        let kc = api.kubeconfig();
        let t = Tracer::launch(&["job", "run", "--node", "node-1", "--name", "tracer-i", "--kubeconfig", kc.to_str().unwrap(), "--", "drops"]);
        assert!(api.wait_requests(WAIT, |r| r.iter().any(|r| r.path.ends_with("/log") && r.path.contains("tracer-i"))), "{}", api.request_log());
        t.stop().assert_code(130);
        let allowed = role_rules("tracer-job-user");
        let requests = api.requests();
        for r in &requests {
            let seg: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
            let (group, rest) = match seg.as_slice() {
                ["apis", "batch", "v1", rest @ ..] => ("batch", rest),
                ["api", "v1", rest @ ..] => ("", rest),
                _ => panic!("unexpected path {r}"),
            };
            let rest = match rest {
                ["namespaces", _, rest @ ..] => rest,
                rest => rest,
            };
            let (resource, named) = match rest {
                [res] => (res.to_string(), false),
                [res, _] => (res.to_string(), true),
                [res, _, sub] => (format!("{res}/{sub}"), true),
                _ => panic!("unexpected path {r}"),
            };
            let verb = match (r.method.as_str(), named) {
                ("GET", false) => "list",
                ("GET", true) => "get",
                ("POST", _) => "create",
                ("DELETE", _) => "delete",
                (m, _) => panic!("unexpected method {m} in {r}"),
            };
            assert!(
                allowed.contains(&(group.into(), resource.clone(), verb.into())),
                "{r}: {verb} {group}/{resource} is not in tracer-job-user: {allowed:?}"
            );
        }
        assert!(requests.iter().any(|r| r.method == "DELETE") && requests.iter().any(|r| r.path.ends_with("/log")), "{}", api.request_log());
    }

    #[test]
    fn bad_job_input_asks_nothing_of_the_api() {
        let api = FakeApi::start(&[]);
        for args in [
            &["job", "run", "--pod", "web-0", "--", "drops"][..],
            &["job", "run", "--node", "node-1", "--", "pods"][..],
            &["job", "logs", "Not_A_Name"][..],
            &["job", "delete", "ok-name", "Bad_Name"][..],
            &["job", "list", "--namespace", "Bad_NS"][..],
        ] {
            let run = tracer(&api, args);
            run.assert_code(2);
            assert_eq!(run.stderr_lines().len(), 1, "{args:?}: one line: {}", run.stderr);
        }
        let missing = run_tracer(&["job", "list", "--kubeconfig", "/nonexistent/kubeconfig"], WAIT);
        missing.assert_code(2);
        assert!(missing.stderr.contains("--kubeconfig /nonexistent/kubeconfig: no such file"), "{}", missing.stderr);
        let render_pod = run_tracer(&["job", "render", "--pod", "shop/web-0", "--", "drops"], WAIT);
        render_pod.assert_code(2);
        assert!(render_pod.stderr.contains("--node"), "{}", render_pod.stderr);
        assert!(api.requests().is_empty(), "bad input never reaches the API:\n{}", api.request_log());
    }
}

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

/// The rules of ClusterRole `name` in deploy/rbac.yaml, as (apiGroup, resource, verb).
fn role_rules(name: &str) -> Vec<(String, String, String)> {
    let docs = yaml_documents(&workspace_root().join("deploy/rbac.yaml"));
    let role = docs.iter().find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name).unwrap_or_else(|| panic!("ClusterRole {name}"));
    let strs = |v: &Value| v.as_array().expect("list").iter().map(|s| s.as_str().expect("string").to_string()).collect::<Vec<_>>();
    let mut out = Vec::new();
    for rule in role["rules"].as_array().expect("rules") {
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                for v in strs(&rule["verbs"]) {
                    out.push((g.clone(), r.clone(), v));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_is_valid_and_read_only_for_tracer_pods() {
    let file = workspace_root().join("deploy/rbac.yaml");
    validate(&file);
    let docs = yaml_documents(&file);
    let sa = docs.iter().find(|d| d["kind"] == "ServiceAccount").expect("a ServiceAccount");
    let (job, job_file) = render(&["--node", "node-1", "--", "drops"]);
    let _cleanup = TempFile(job_file.clone());
    job.assert_code(0);
    let job = yaml_as_json(&job_file);
    assert_eq!(sa["metadata"]["name"], job["spec"]["template"]["spec"]["serviceAccountName"], "the Job runs as it");
    assert_eq!(sa["metadata"]["namespace"], job["metadata"]["namespace"], "in the Job's default namespace");
    let ds = yaml_as_json(&workspace_root().join("deploy/daemonset.yaml"));
    assert_eq!(ds["spec"]["template"]["spec"]["serviceAccountName"], sa["metadata"]["name"], "so does the DaemonSet");
    let binding = docs.iter().find(|d| d["kind"] == "ClusterRoleBinding" && d["roleRef"]["name"] == "tracer").expect("bound");
    assert_eq!(binding["subjects"][0]["name"], sa["metadata"]["name"]);
    let rules = role_rules("tracer");
    assert!(rules.iter().all(|(_, _, v)| ["get", "list", "watch"].contains(&v.as_str())), "read only: {rules:?}");
    for r in ["pods", "services"] {
        for v in ["list", "watch"] {
            assert!(rules.contains(&(String::new(), r.into(), v.into())), "{v} {r}: {rules:?}");
        }
    }
}
