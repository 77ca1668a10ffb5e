//! Recordings: `tracer watch -o json` records a run (its events, then the facts diagnose's rules
//! read); `tracer diagnose --from` and `tracer watch --from` read recordings of one or many nodes
//! instead of tracing. The first test runs a live `diagnose` and a recording `watch` side by
//! side on the same lab and traffic, and requires `diagnose --from` of the recording to give
//! the live run's findings. Run as root:
//! `cargo build --release -p tracer && TRACER_BIN=$PWD/target/release/tracer cargo test --release -p tracer-tests --test recording`.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{
    io::Write as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use tracer_tests::{traffic::tcp_connect, *};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// `--duration` of both runs, in seconds: 6, times `TRACER_TEST_SLOWDOWN` (the VMs of `cargo
/// xtask vm-test` emulate the CPU and set 3): both tracers must be attached and the traffic over
/// within the first tracer's run.
fn duration_s() -> u64 {
    6 * std::env::var("TRACER_TEST_SLOWDOWN").ok().and_then(|v| v.parse().ok()).filter(|n: &u64| *n >= 1).unwrap_or(1)
}

/// A temporary file holding `text`, removed on drop.
fn temp_file(name: &str, text: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("tracer-recording-{}-{name}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("create a temporary file");
    f.write_all(text.as_bytes()).expect("write a temporary file");
    TempFile(path)
}

/// A finding without what differs between two tracers watching the same events: the wall
/// time of each event (each process turns the kernel's boot clock into wall time with the
/// offset it measured at its own start, microseconds apart) and a failed connect's
/// `duration_ms` (each process times the connect from when it saw it start).
fn without_times(f: &Value) -> Value {
    let mut f = f.clone();
    if let Some(o) = f.as_object_mut() {
        o.remove("first");
        o.remove("last");
        if let Some(examples) = o.get_mut("examples").and_then(Value::as_array_mut) {
            for e in examples {
                if let Some(e) = e.as_object_mut() {
                    e.remove("ts");
                    e.remove("duration_ms");
                }
            }
        }
    }
    f
}

fn findings(report: &Value) -> Vec<Value> {
    report["findings"].as_array().cloned().unwrap_or_default().iter().map(without_times).collect()
}

fn one_object(run: &TracerRun, what: &str) -> Value {
    run.assert_code(0);
    let text = run.lines.join("\n");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{what} must print one JSON object ({e}):\n{text}\nstderr:\n{}", run.stderr))
}

/// A router lab with two faults: a firewall rule in `b` drops UDP to one port (netfilter-drop,
/// which names the rule from the rules read at stop), and a destination the router has no route
/// to (no-route, with the router's sysctls). A live `diagnose` and a recording `watch -o json`
/// trace it together; `diagnose --from` the recording gives the live findings, node named. The
/// same recording with bad lines added (truncated, an unknown kind, wrong field types) gives
/// them too, with one warning counting what was skipped.
#[test]
fn a_recording_diagnoses_like_a_live_run() {
    let test = "a_recording_diagnoses_like_a_live_run";
    if !require_privileged(test) {
        return;
    }
    let _serial = serial();
    let _lock = shared_lock();
    let lab = RoutedLab::new();
    const UDP_PORT: u16 = 5401;
    lab.b.exec_ok(&["iptables-legacy", "-A", "INPUT", "-p", "udp", "--dport", &UDP_PORT.to_string(), "-j", "DROP"]);
    let nowhere = lab.addrs.host(2, 1);
    let block = lab.addrs.net(0).replace("/24", "/22");
    let duration = format!("{}s", duration_s());
    let common = [
        "--duration",
        &duration,
        "-o",
        "json",
        "--ip",
        &block,
        "--pods-from",
        "none",
        "--node-name",
        "lab-node",
        "--reply-timeout",
        "2s",
        NAT_FROM_OUTSIDE[0],
        NAT_FROM_OUTSIDE[1],
    ];
    let t0 = Instant::now();
    let live = Tracer::start(&[&["diagnose"][..], &common].concat());
    let recording = Tracer::start(&[&["watch"][..], &common].concat());
    let sent = Udp { count: 3, gap: 0.0, ..Udp::new(&lab.a_ip, 40101, &lab.b_ip, UDP_PORT) }.send(&lab.a);
    assert_eq!(sent, 3, "lab: the UDP sender sent too few");
    let _ = tcp_connect(&lab.a, &lab.a_ip, 40102, &nowhere, 5402, 2.0);
    assert!(
        t0.elapsed() < Duration::from_secs(duration_s() - 2),
        "attaching both tracers and the traffic took {:?}: the live run may have missed it",
        t0.elapsed()
    );
    let live = live.wait_exit(Duration::from_secs(duration_s() + 60));
    let recording = recording.wait_exit(Duration::from_secs(duration_s() + 60));
    recording.assert_code(0);
    let live_report = one_object(&live, "live diagnose");
    eprintln!("live: {live_report}");

    // The recording: the events, then one `recording` record and the facts.
    let records = recording.events();
    let kinds: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
    let at = kinds.iter().position(|k| *k == "recording").unwrap_or_else(|| panic!("a `recording` record at the end: {kinds:?}"));
    assert!(kinds[..at].iter().all(|k| !matches!(*k, "recording" | "fact")), "events first: {kinds:?}");
    assert!(kinds[at + 1..].iter().all(|k| *k == "fact"), "then facts only: {kinds:?}");
    assert_eq!(records[at]["node"], "lab-node", "{}", records[at]);
    assert!(kinds.contains(&"fact"), "the rules read facts (the rule in b, the router's sysctls): {kinds:?}");
    let file = temp_file("one.jsonl", &(recording.lines.join("\n") + "\n"));
    if std::env::var_os("TRACER_KEEP_RECORDING").is_some() {
        let _ = std::fs::copy(&file.0, "/tmp/tracer-recording-kept.jsonl");
    }

    let replay = run_tracer(&["diagnose", "--from", &file.0.display().to_string(), "-o", "json"], Duration::from_secs(60));
    let replay_report = one_object(&replay, "diagnose --from");
    eprintln!("replay: {replay_report}");
    let (want, got) = (findings(&live_report), findings(&replay_report));
    let codes = |fs: &[Value]| -> Vec<String> { fs.iter().map(|f| f["code"].as_str().unwrap_or("").to_string()).collect() };
    assert!(
        codes(&want).contains(&"netfilter-drop".to_string()) && codes(&want).contains(&"no-route".to_string()),
        "lab: the live run must see both faults: {live_report:#}"
    );
    assert_eq!(got, want, "diagnose --from the recording must give the live run's findings");
    assert_eq!(replay_report["node"], "lab-node", "{replay_report}");
    assert!(got.iter().all(|f| f["node"] == "lab-node"), "every finding names its node: {replay_report:#}");
    let rules = serde_json::to_string(&got).unwrap_or_default();
    assert!(rules.contains(&format!("--dport {UDP_PORT}")), "the rule read at stop is in the recording: {replay_report:#}");
    assert!(!replay.stderr.contains("skipped"), "nothing to skip: {}", replay.stderr);

    // Bad lines: skipped, counted once, the findings unchanged.
    let bad = format!(
        "{}\n{{\"ts\":\"2026-01-01T00:00:00.0Z\",\"kind\":\"drop\",\"proto\":\"udp\",\"src\n{{\"kind\":\"telepathy\",\"node\":\"lab-node\"}}\n{{\"ts\":5,\"kind\":\"drop\",\"reason\":[1]}}\n\u{0}\u{ff}garbage\n",
        recording.lines.join("\n")
    );
    let bad_file = temp_file("bad.jsonl", &bad);
    let replay = run_tracer(&["diagnose", "--from", &bad_file.0.display().to_string(), "-o", "json"], Duration::from_secs(60));
    assert_eq!(findings(&one_object(&replay, "diagnose --from a damaged recording")), want, "bad lines change nothing");
    let warnings: Vec<&str> = replay.stderr_lines().into_iter().filter(|l| l.contains("skipped")).collect();
    assert_eq!(warnings.len(), 1, "one warning: {}", replay.stderr);
    assert!(warnings[0].contains("4 lines"), "it counts them: {}", replay.stderr);

    // watch --from: the same events, a recording again with -o json; a timeline for people.
    let again = run_tracer(&["watch", "--from", &file.0.display().to_string(), "-o", "json"], Duration::from_secs(60));
    again.assert_code(0);
    let again = again.events();
    assert_eq!(again.len(), records.len(), "watch --from -o json writes the recording back");
    let table = run_tracer(&["watch", "--from", &file.0.display().to_string()], Duration::from_secs(60));
    table.assert_code(0);
    assert!(table.lines.iter().any(|l| l.contains("NETFILTER_DROP")), "{:?}", table.lines);
    assert!(!table.lines[0].starts_with("NODE"), "one node: no node column: {:?}", table.lines);
}

/// `--from` a file that does not exist is bad input: exit 2, one line, nothing traced.
#[test]
fn a_missing_recording_is_bad_input() {
    for command in ["diagnose", "watch"] {
        let run = run_tracer(&[command, "--from", "/nonexistent/recording.jsonl"], Duration::from_secs(30));
        run.assert_code(2);
        let lines = run.stderr_lines();
        assert_eq!(lines.len(), 1, "{command}: one line: {}", run.stderr);
        assert!(lines[0].contains("--from /nonexistent/recording.jsonl"), "{command}: names the file: {}", run.stderr);
    }
}

/// Two overlay nodes: a Service address on node A is DNATed to the pod on node B, and node B's
/// firewall drops the VXLAN packets that carry it. Recorded as node A and node B by two tracers
/// each scoped with `--netns` to its node (issue 22's "done means"), `diagnose
/// --from A --from B` says what neither says alone: the connection from the client on node A
/// was DNATed to the backend on node B, and node B dropped its packets (NETFILTER_DROP), linked
/// to node B's own netfilter-drop finding.
#[test]
fn two_nodes_recorded_name_the_cause_on_the_right_node() {
    use tracer_tests::overlay::{CrossNodeFault, can_build};
    let test = "two_nodes_recorded_name_the_cause_on_the_right_node";
    let _serial = serial();
    let Some(_lock) = can_build(test, "vxlan") else { return };
    let CrossNodeFault { lab, service, backend, pods_from: from, pods: _pods } = CrossNodeFault::build();
    let block = lab.addrs.net(0).replace("/24", "/22");
    // One tracer per node, each scoped to its node's namespaces (the node's and its pod's), as
    // on a cluster whose nodes share one kernel.
    let record = |node: &str, scope: [&Netns; 2]| {
        let mut args =
            vec!["watch", "-o", "json", "--duration", "8s", "--reply-timeout", "1s", "--pods-from", &from, "--ip", &block, "--node-name", node];
        args.extend(NAT_FROM_OUTSIDE);
        for ns in scope {
            args.extend(["--netns", ns.name.as_str()]);
        }
        Tracer::start(&args)
    };
    let (ta, tb) = (record("node-a", [&lab.a.ns, &lab.a.pod]), record("node-b", [&lab.b.ns, &lab.b.pod]));
    let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 41020, &service, 80, 3.0);
    assert_eq!(got, "timeout", "lab: node B must drop the tunnel packets");
    let mut files = Vec::new();
    for (node, t, mine, theirs) in [("node-a", ta, &lab.a, &lab.b), ("node-b", tb, &lab.b, &lab.a)] {
        let run = t.wait_exit(Duration::from_secs(duration_s() + 60));
        run.assert_code(0);
        let records = run.events();
        let seen: Vec<u64> = records.iter().filter(|r| r["kind"] != "fact").filter_map(|r| r["netns"].as_u64()).collect();
        assert!(!seen.is_empty(), "{node} recorded nothing: {}", run.stderr);
        let own = [mine.ns.inode(), mine.pod.inode()];
        assert!(seen.iter().all(|n| own.contains(n)), "{node}'s tracer is scoped to its namespaces {own:?}: {seen:?}");
        assert!(!seen.contains(&theirs.ns.inode()), "{node} saw the other node");
        files.push(temp_file(&format!("{node}.jsonl"), &(run.lines.join("\n") + "\n")));
    }
    let (a, b) = (&files[0], &files[1]);
    let merged =
        run_tracer(&["diagnose", "--from", &a.0.display().to_string(), "--from", &b.0.display().to_string(), "-o", "json"], Duration::from_secs(60));
    let report = one_object(&merged, "diagnose --from A --from B");
    eprintln!("{test}: {report}");
    assert_eq!(report["nodes"], serde_json::json!(["node-a", "node-b"]), "{report:#}");
    assert!(report["node"].is_null(), "several nodes: no one node: {report:#}");
    let all = report["findings"].as_array().cloned().unwrap_or_default();
    let cross: Vec<&Value> = all.iter().filter(|f| f["code"] == "cross-node").collect();
    assert_eq!(cross.len(), 1, "one cross-node finding: {report:#}");
    let c = cross[0];
    assert_eq!(c["node"], "node-b", "the cause is on node B: {c:#}");
    assert_eq!(c["nodes"], serde_json::json!(["node-a", "node-b"]), "{c:#}");
    assert_eq!(c["evidence"]["client_node"], "node-a", "{c:#}");
    assert_eq!(c["evidence"]["backend"], backend.as_str(), "{c:#}");
    assert_eq!(c["evidence"]["cause"]["code"], "netfilter-drop", "{c:#}");
    let summary = c["summary"].as_str().unwrap_or_default();
    for words in ["lab/client on node node-a", &format!("DNATed to {backend}"), "node node-b dropped", "NETFILTER_DROP"] {
        assert!(summary.contains(words), "the summary says {words:?}: {summary}");
    }
    // The per-node finding it links is still there, on node B.
    assert!(all.iter().any(|f| f["code"] == "netfilter-drop" && f["node"] == "node-b"), "node B's own finding: {report:#}");
    assert!(all.iter().all(|f| f["node"] == "node-a" || f["node"] == "node-b"), "every finding names its node: {report:#}");
    // The merged timeline shows both nodes.
    let table = run_tracer(&["watch", "--from", &a.0.display().to_string(), "--from", &b.0.display().to_string()], Duration::from_secs(60));
    table.assert_code(0);
    assert!(table.lines[0].starts_with("NODE"), "a node column: {:?}", table.lines);
    assert!(table.lines.iter().any(|l| l.starts_with("node-a")) && table.lines.iter().any(|l| l.starts_with("node-b")), "{:?}", table.lines);
}
