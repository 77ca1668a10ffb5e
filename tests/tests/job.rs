//! `tracer job render`: the manifest is a valid Kubernetes Job by the API's own schemas
//! (kubernetes-validate, installed by scripts/setup.sh into /opt/tracer-py) and holds the
//! least-privilege settings; so is deploy/daemonset.yaml. No cluster, no privileges needed.
//! Run: `cargo build --release -p tracer && cargo test --release -p tracer-tests --test job`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tracer_tests::*;

const VENV: &str = "/opt/tracer-py";

/// `kubernetes-validate --strict` (unknown fields rejected) on `file`.
fn validate(file: &Path) {
    let bin = Path::new(VENV).join("bin/kubernetes-validate");
    let out = Command::new(&bin)
        .arg("--strict")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh installs it)", bin.display()));
    assert!(
        out.status.success(),
        "{} is not a valid Kubernetes object:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The YAML file as JSON (PyYAML, which kubernetes-validate brings along).
fn yaml_as_json(file: &Path) -> Value {
    let python = Path::new(VENV).join("bin/python3");
    let out = Command::new(python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(file)
        .output()
        .expect("python3 of the venv");
    assert!(out.status.success(), "YAML did not parse: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from yaml")
}

fn render(args: &[&str]) -> (TracerRun, PathBuf) {
    let mut argv = vec!["job", "render"];
    argv.extend(args);
    let run = run_tracer(&argv, Duration::from_secs(30));
    let file = std::env::temp_dir().join(format!("{}-job.yaml", unique_name("jb")));
    std::fs::write(&file, run.lines.join("\n")).expect("write the manifest");
    (run, file)
}

/// The capabilities the README names, no more.
const CAPABILITIES: &[&str] = &["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "SYS_RESOURCE"];

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
    assert!(pod["tolerations"].as_array().is_some_and(|t| t.iter().any(|t| t["operator"] == "Exists" && t.get("key").is_none())), "runs on tainted nodes: {pod:#}");
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
    assert_eq!(sc["capabilities"]["add"], serde_json::json!(CAPABILITIES));
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
    assert_eq!(c["securityContext"]["capabilities"]["add"], serde_json::json!(CAPABILITIES), "the same set as a Job's");
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
    let kubectl = |args: &[&str]| {
        run_timeout(Command::new("kubectl").arg("tracer").args(args).env("PATH", &path), Duration::from_secs(30))
    };
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
