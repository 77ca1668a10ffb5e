//! tracer's Kubernetes API pod source (`--pods-from kube`) against a fake API server in the test
//! ([`tracer_tests::kube_api`]) that answers the pods API's real list and watch wire format.
//!
//! `tracer pods` needs no privileges (it attaches nothing), so those tests run as any user; the
//! `tracer drops` tests attach programs and start with [`require_privileged`].
//!
//! What kube-rs 5 sends (asserted below, read from kube-core's params and kube-runtime's
//! watcher): tracer's start-up list `GET /api/v1/pods?&fieldSelector=spec.nodeName%3DNODE`,
//! then the watcher's list `...&fieldSelector=..&limit=500` and its watch
//! `...&watch=true&timeoutSeconds=290&fieldSelector=..&allowWatchBookmarks=true&resourceVersion=RV`
//! from the version the list returned. This has not been run against a live cluster here.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use tracer_tests::{
    kube_api::{self, ApiRequest, FakeApi, PodFixture},
    *,
};

const NODE: &str = "node-a";
const OTHER_NODE: &str = "node-b";
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the tracer to completion with `env` set and NODE_NAME/KUBECONFIG/proxies/RUST_LOG cleared.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> TracerRun {
    let mut c = Command::new(tracer_bin());
    c.args(args).env("RUST_BACKTRACE", "0");
    for k in ["NODE_NAME", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "HTTPS_PROXY", "https_proxy", "RUST_LOG"] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run_timeout(&mut c, RUN_TIMEOUT);
    TracerRun {
        args: args.iter().map(|s| s.to_string()).collect(),
        lines: String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        status: out.status,
    }
}

/// `tracer pods -o json` output as one JSON array.
fn pods_json(run: &TracerRun) -> Vec<Value> {
    let text = run.lines.join("\n");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("tracer pods -o json printed no JSON array ({e}):\n{text}\nstderr:\n{}", run.stderr));
    v.as_array().cloned().unwrap_or_else(|| panic!("not an array: {v}"))
}

fn names(pods: &[Value]) -> Vec<String> {
    let mut v: Vec<String> =
        pods.iter().map(|p| format!("{}/{}", p["namespace"].as_str().unwrap_or("?"), p["name"].as_str().unwrap_or("?"))).collect();
    v.sort();
    v
}

fn find<'a>(pods: &'a [Value], key: &str) -> &'a Value {
    pods.iter()
        .find(|p| format!("{}/{}", p["namespace"].as_str().unwrap_or(""), p["name"].as_str().unwrap_or("")) == key)
        .unwrap_or_else(|| panic!("no pod {key} in {pods:?}"))
}

fn is_list(r: &ApiRequest) -> bool {
    r.method == "GET" && r.path == "/api/v1/pods" && !r.is_watch()
}

/// Every request the fake got carried this node's field selector and the kubeconfig's token.
fn assert_requests_scoped(api: &FakeApi, node: &str) {
    let reqs = api.requests();
    assert!(reqs.iter().any(is_list), "no list request reached the fake API:\n{}", api.request_log());
    let want = format!("spec.nodeName={node}");
    for r in &reqs {
        assert_eq!(r.path, "/api/v1/pods", "unexpected path: {r}");
        assert_eq!(r.param("fieldSelector"), Some(want.as_str()), "request without the node's field selector: {r}");
        assert_eq!(
            r.header("authorization").map(str::to_string),
            Some(format!("Bearer {}", kube_api::TOKEN)),
            "request without the kubeconfig's bearer token: {r}"
        );
        assert_eq!(r.status, 200, "request the fake refused: {r}");
    }
}

/// The node's pods: a dual-stack pod, a host-network pod, a pod without an IP yet, a finished
/// pod (left out by tracer: its address may already be another pod's), and a pod of another
/// node (left out by the API's field selector).
fn listing_fixture() -> Vec<PodFixture> {
    vec![
        PodFixture::new("shop", "web-0", NODE, &["10.244.1.7", "fd00:10:244:1::7"]).label("app", "web").label("tier", "frontend"),
        PodFixture::new("kube-system", "kube-proxy-x7k2p", NODE, &["192.0.2.10"]).host_network().label("k8s-app", "kube-proxy"),
        PodFixture::new("shop", "cart-0", NODE, &[]).phase("Pending").label("app", "cart"),
        PodFixture::new("batch", "report-28712", NODE, &["10.244.1.9"]).phase("Succeeded"),
        PodFixture::new("shop", "web-1", OTHER_NODE, &["10.244.2.7"]).label("app", "web"),
    ]
}

#[test]
fn pods_lists_exactly_this_nodes_pods_from_the_api() {
    let fixture = listing_fixture();
    let api = FakeApi::start(&fixture);
    let kc = api.kubeconfig();
    let kc = kc.to_str().expect("utf-8 path");
    let run = run_env(&["pods", "--pods-from", "kube", "--kubeconfig", kc, "--node-name", NODE, "-o", "json"], &[]);
    run.assert_code(0);
    let pods = pods_json(&run);
    assert_eq!(
        names(&pods),
        ["kube-system/kube-proxy-x7k2p", "shop/cart-0", "shop/web-0"],
        "tracer pods must list node-a's pods that hold addresses or will (not node-b's, not finished ones):\n{pods:#?}"
    );

    let web = find(&pods, "shop/web-0");
    assert_eq!(web["ips"], serde_json::json!(["10.244.1.7", "fd00:10:244:1::7"]), "both IPs of {web}");
    assert_eq!(web["host_network"], false);
    assert_eq!(web["labels"], serde_json::json!({"app": "web", "tier": "frontend"}));
    assert_eq!(web["uid"], fixture[0].uid.as_str());
    assert!(web["netns"].is_null(), "the API does not know network namespaces: {web}");
    assert_eq!(web["source"], "kube");
    let created = web["created"].as_str().and_then(parse_rfc3339_nanos);
    assert_eq!(created, Some(i128::from(fixture[0].created_unix_s) * 1_000_000_000), "created of {web}");

    let proxy = find(&pods, "kube-system/kube-proxy-x7k2p");
    assert_eq!(proxy["host_network"], true, "host-network flag of {proxy}");
    assert_eq!(proxy["ips"], serde_json::json!(["192.0.2.10"]));
    assert_eq!(proxy["labels"], serde_json::json!({"k8s-app": "kube-proxy"}));
    assert_eq!(proxy["source"], "kube");

    let cart = find(&pods, "shop/cart-0");
    assert_eq!(cart["ips"], serde_json::json!([]), "a pending pod has no IPs yet: {cart}");

    assert_requests_scoped(&api, NODE);
    let list = api.requests().into_iter().find(is_list).expect("a list request");
    assert!(list.param("watch").is_none(), "the first request must be a plain list: {list}");
    let url = api.url();
    assert!(run.stderr.contains(&url) && run.stderr.contains(NODE), "stderr must say the pods came from {url} for node {NODE}:\n{}", run.stderr);

    // The table names the same pods.
    let run = run_env(&["pods", "--pods-from", "kube", "--kubeconfig", kc, "--node-name", NODE], &[]);
    run.assert_code(0);
    let table = run.lines.join("\n");
    for key in ["shop/web-0", "kube-system/kube-proxy-x7k2p", "shop/cart-0", "fd00:10:244:1::7"] {
        assert!(table.contains(key), "table lacks {key}:\n{table}");
    }
    assert!(!table.contains("shop/web-1") && !table.contains("report-28712"), "table shows pods it must not:\n{table}");
}

#[test]
fn node_name_comes_from_node_name_variable_unless_the_flag_is_given() {
    let api = FakeApi::start(&listing_fixture());
    let kc = api.kubeconfig();
    let kc = kc.to_str().expect("utf-8 path");
    let run = run_env(&["pods", "--pods-from", "kube", "--kubeconfig", kc, "-o", "json"], &[("NODE_NAME", OTHER_NODE)]);
    run.assert_code(0);
    let pods = pods_json(&run);
    assert_eq!(names(&pods), ["shop/web-1"], "NODE_NAME={OTHER_NODE} must select that node's pods");
    assert_eq!(find(&pods, "shop/web-1")["ips"], serde_json::json!(["10.244.2.7"]));
    assert_requests_scoped(&api, OTHER_NODE);

    // The flag wins over the variable.
    let api = FakeApi::start(&listing_fixture());
    let kc = api.kubeconfig();
    let kc = kc.to_str().expect("utf-8 path");
    let run = run_env(&["pods", "--pods-from", "kube", "--kubeconfig", kc, "--node-name", NODE, "-o", "json"], &[("NODE_NAME", OTHER_NODE)]);
    run.assert_code(0);
    assert_eq!(names(&pods_json(&run)), ["kube-system/kube-proxy-x7k2p", "shop/cart-0", "shop/web-0"]);
    assert_requests_scoped(&api, NODE);

    // KUBECONFIG is honoured when --kubeconfig is absent.
    let run = run_env(&["pods", "--pods-from", "kube", "--node-name", NODE, "-o", "json"], &[("KUBECONFIG", kc)]);
    run.assert_code(0);
    assert_eq!(names(&pods_json(&run)).len(), 3, "KUBECONFIG={kc} not used:\n{}", run.stderr);
}

/// Exit 2, exactly one stderr line, containing every one of `needles`.
fn assert_one_line_error(run: &TracerRun, needles: &[&str]) {
    run.assert_code(2);
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "want one stderr line, got:\n{}", run.stderr);
    for n in needles {
        assert!(lines[0].contains(n), "the error line must name {n:?}: {}", lines[0]);
    }
    assert!(run.lines.iter().all(|l| l.trim().is_empty()), "nothing on stdout after an error: {:?}", run.lines);
}

#[test]
fn unreachable_api_and_bad_kubeconfig_are_clear_errors() {
    let dir = std::env::temp_dir().join(format!("tracer-kube-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());

    // A port where nothing listens: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let kc = dir.join("refused");
    kube_api::write_kubeconfig(&kc, &format!("http://127.0.0.1:{port}"), Some(kube_api::TOKEN));
    let kc_s = kc.to_str().expect("utf-8 path");
    let started = Instant::now();
    let run = run_env(&["pods", "--pods-from", "kube", "--kubeconfig", kc_s, "--node-name", NODE], &[]);
    assert_one_line_error(&run, &[&format!("127.0.0.1:{port}")]);
    assert!(started.elapsed() < Duration::from_secs(15), "a refused connection must fail fast, took {:?}", started.elapsed());

    // Files that are not kubeconfigs: text, YAML of another shape, a kubeconfig without a context.
    let cases: &[(&str, &str)] = &[
        ("text", "this is not a kubeconfig\n"),
        ("json-array", "[1, 2, 3]\n"),
        ("binary", "\u{7f}ELF\u{2}\u{1}\u{1}\0\0\0"),
        ("no-context", "apiVersion: v1\nkind: Config\nclusters: []\n"),
    ];
    for (name, text) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let p = path.to_str().expect("utf-8 path");
        let run = run_env(&["pods", "--pods-from", "kube", "--kubeconfig", p, "--node-name", NODE], &[]);
        assert_one_line_error(&run, &[p]);
    }

    // A server that refuses the credentials: one line naming the API address.
    let api = FakeApi::start(&listing_fixture());
    let kc = dir.join("wrong-token");
    kube_api::write_kubeconfig(&kc, &api.url(), Some("not-the-token"));
    let run = run_env(&["pods", "--pods-from", "kube", "--kubeconfig", kc.to_str().expect("utf-8"), "--node-name", NODE], &[]);
    assert_one_line_error(&run, &[&api.addr().to_string()]);
    assert!(run.stderr.contains("401") || run.stderr.to_lowercase().contains("unauthorized"), "say why: {}", run.stderr);
}

// ---------------------------------------------------------------------------------------------
// Tracing with the API source: pods added and deleted while tracer runs
// ---------------------------------------------------------------------------------------------

fn kube_args<'a>(kc: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["drops", "-o", "json", "--all-reasons", "--pods-from", "kube", "--kubeconfig", kc, "--node-name", NODE];
    v.extend_from_slice(extra);
    v
}

fn flow_events(t: &Tracer, src: &str, dst: &str, n: usize) -> Vec<Value> {
    t.wait_for(Duration::from_secs(10), |evs| with_flow(evs, src, dst).len() >= n);
    with_flow(&t.events(), src, dst).into_iter().cloned().collect()
}

fn dump(events: &[Value]) -> String {
    events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn watch_added_and_deleted_pods_name_drops_while_tracing() {
    if !require_privileged("watch_added_and_deleted_pods_name_drops_while_tracing") {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5311;
    let lab = PairLab::new();
    let client = PodFixture::new("lab", "client", NODE, &[&lab.a_ip]).label("role", "client");
    // The same address on another node must never name anything here.
    let elsewhere = PodFixture::new("lab", "impostor", OTHER_NODE, &[&lab.b_ip]);
    let api = FakeApi::start(&[client.clone(), elsewhere]);
    let kc = api.kubeconfig();
    let kc = kc.to_str().expect("utf-8 path");
    let ip = format!("{}/32", lab.b_ip);
    let start = now_nanos();
    let t = Tracer::start(&kube_args(kc, &["--ip", &ip]));
    assert!(api.wait_watching(1, Duration::from_secs(10)), "tracer never opened a watch:\n{}", api.request_log());
    api.bookmark();

    let dst = format!("{}:{PORT}", lab.b_ip);
    // Before the server pod exists: the destination is nobody.
    let before = format!("{}:41001", lab.a_ip);
    Udp::new(&lab.a_ip, 41001, &lab.b_ip, PORT).send(&lab.a);
    let got = flow_events(&t, &before, &dst, 3);
    assert_eq!(got.len(), 3, "drops before the ADDED event:\n{}", dump(&t.events()));
    for ev in &got {
        check_drop(ev, (start, now_nanos()));
        assert_eq!(ev["reason"], "NO_SOCKET", "{ev}");
        assert_eq!(ev["src_pod"], "lab/client", "the listed pod names the source: {ev}");
        assert!(ev["dst_pod"].is_null(), "no pod holds {} yet: {ev}", lab.b_ip);
    }

    // The API says a pod took the address.
    let server = PodFixture::new("lab", "server", NODE, &[&lab.b_ip]).label("role", "server").created_now();
    api.add(&server);
    thread::sleep(Duration::from_millis(500));
    let during = format!("{}:41002", lab.a_ip);
    Udp::new(&lab.a_ip, 41002, &lab.b_ip, PORT).send(&lab.a);
    let got = flow_events(&t, &during, &dst, 3);
    assert_eq!(got.len(), 3, "drops after the ADDED event:\n{}", dump(&t.events()));
    for ev in &got {
        assert_eq!(ev["dst_pod"], "lab/server", "the pod added by the watch must name the destination: {ev}");
        assert_eq!(ev["src_pod"], "lab/client", "{ev}");
    }

    // The pod is deleted: first marked (MODIFIED with deletionTimestamp), then DELETED.
    let mut terminating = server;
    terminating.deleting = true;
    api.modify(&terminating);
    let watch_last_rv = api.delete(&terminating);
    thread::sleep(Duration::from_millis(500));
    let after = format!("{}:41003", lab.a_ip);
    Udp::new(&lab.a_ip, 41003, &lab.b_ip, PORT).send(&lab.a);
    let got = flow_events(&t, &after, &dst, 3);
    assert_eq!(got.len(), 3, "drops after the DELETED event:\n{}", dump(&t.events()));
    for ev in &got {
        assert!(ev["dst_pod"].is_null(), "a deleted pod must not name later drops: {ev}");
        assert_eq!(ev["src_pod"], "lab/client", "{ev}");
    }

    // The client pod goes while the watch is down and the history is compacted: the tracer's
    // watch resumes, gets 410 Gone, lists again, and stops naming the client.
    let watches_before = api.requests().iter().filter(|r| r.is_watch()).count();
    api.delete_unseen(&client);
    // Start-up list, the watcher's first list, and its relist after 410.
    let relisted = api.wait_requests(Duration::from_secs(20), |reqs| reqs.iter().filter(|r| is_list(r)).count() >= 3);
    assert!(relisted, "after 410 Gone the watcher must list again:\n{}", api.request_log());
    assert!(api.wait_watching(1, Duration::from_secs(20)), "no watch after the relist:\n{}", api.request_log());
    thread::sleep(Duration::from_millis(500));
    let gone = format!("{}:41004", lab.a_ip);
    Udp::new(&lab.a_ip, 41004, &lab.b_ip, PORT).send(&lab.a);
    let got = flow_events(&t, &gone, &dst, 3);
    assert_eq!(got.len(), 3, "drops after the relist:\n{}", dump(&t.events()));
    for ev in &got {
        assert!(ev["src_pod"].is_null(), "a pod missing from the relist must not name later drops: {ev}");
    }

    let run = t.stop();
    run.assert_code(0);
    assert!(
        !run.stderr.contains("watching pods failed"),
        "the watch must parse every event (ADDED, MODIFIED, DELETED, BOOKMARK) without errors:\n{}",
        run.stderr
    );
    // Earlier drops keep the names they had when they happened.
    let events = run.events();
    assert!(with_flow(&events, &during, &dst).iter().all(|e| e["dst_pod"] == "lab/server"));

    assert_requests_scoped(&api, NODE);
    let reqs = api.requests();
    let first_list = reqs.iter().find(|r| is_list(r)).expect("list");
    assert!(first_list.param("resourceVersion").is_none(), "start-up list must be a consistent read: {first_list}");
    let watch = reqs.iter().find(|r| r.is_watch()).expect("watch");
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"), "{watch}");
    let rv: u64 = watch.param("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(rv > 0, "the watch must resume from the list's resourceVersion, not from 0 or nothing: {watch}");
    // One watch until the test ended it: no error made the watcher start over; then the resumed
    // watch (answered 410) and the one after the relist.
    assert_eq!(watches_before, 1, "the watch was restarted before the test ended it:\n{}", api.request_log());
    let later: Vec<&ApiRequest> = reqs.iter().filter(|r| r.is_watch()).skip(1).collect();
    assert!(later.len() >= 2, "want the resumed watch and the one after the relist:\n{}", api.request_log());
    assert_eq!(later[0].param("resourceVersion"), Some(watch_last_rv.to_string()).as_deref(), "resume from the last event seen: {}", later[0]);
}

#[test]
fn pod_selection_follows_the_api_source() {
    if !require_privileged("pod_selection_follows_the_api_source") {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5312;
    let (one, two, three) = (PairLab::new(), PairLab::new(), PairLab::new());
    let api = FakeApi::start(&[PodFixture::new("lab", "one", NODE, &[&one.b_ip]), PodFixture::new("lab", "two", NODE, &[&two.b_ip])]);
    let kc = api.kubeconfig();
    let kc = kc.to_str().expect("utf-8 path");
    let ips: Vec<String> = [&one, &two, &three].iter().map(|l| format!("{}/32", l.b_ip)).collect();
    let ip_args: Vec<&str> = ips.iter().flat_map(|ip| ["--ip", ip.as_str()]).collect();

    // A pod the API does not know: exit 2 before attaching.
    let mut a = kube_args(kc, &["--pod", "lab/nope"]);
    a.extend_from_slice(&ip_args);
    let run = run_tracer(&a, RUN_TIMEOUT);
    run.assert_code(2);
    assert!(run.stderr.contains("lab/nope"), "name the missing pod: {}", run.stderr);

    // --pod lab/one only; a control run sees everything.
    let mut a = kube_args(kc, &["--pod", "lab/one"]);
    a.extend_from_slice(&ip_args);
    let selected = Tracer::start(&a);
    let mut a = kube_args(kc, &[]);
    a.extend_from_slice(&ip_args);
    let control = Tracer::start(&a);
    // --pod lab/three --wait: the pod appears through the watch, then the tracer attaches.
    let mut a = kube_args(kc, &["--pod", "lab/three", "--wait"]);
    a.extend_from_slice(&ip_args);
    let three_pod = PodFixture::new("lab", "three", NODE, &[&three.b_ip]).created_now();
    let waited = thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_secs(2));
            api.add(&three_pod);
        });
        Tracer::start(&a)
    });
    assert!(waited.stderr().contains("waiting"), "--wait must say it waits:\n{}", waited.stderr());

    let flows: Vec<(String, String)> = [(&one, 41011u16), (&two, 41012), (&three, 41013)]
        .iter()
        .map(|(l, sport)| {
            Udp::new(&l.a_ip, *sport, &l.b_ip, PORT).send(&l.a);
            (format!("{}:{sport}", l.a_ip), format!("{}:{PORT}", l.b_ip))
        })
        .collect();
    let all_seen = control.wait_for(Duration::from_secs(10), |evs| flows.iter().all(|(s, d)| with_flow(evs, s, d).len() >= 3));
    assert!(all_seen, "the control run did not see all three flows:\n{}", dump(&control.events()));
    let control = control.stop();
    for ((s, d), want) in flows.iter().zip(["lab/one", "lab/two", "lab/three"]) {
        for ev in with_flow(&control.events(), s, d) {
            assert_eq!(ev["dst_pod"], want, "{ev}");
        }
    }
    selected.wait_for(Duration::from_secs(5), |evs| with_flow(evs, &flows[0].0, &flows[0].1).len() >= 3);
    waited.wait_for(Duration::from_secs(5), |evs| with_flow(evs, &flows[2].0, &flows[2].1).len() >= 3);
    // Let anything that should not be there arrive before judging.
    thread::sleep(Duration::from_millis(500));
    let selected = selected.stop();
    let waited = waited.stop();
    selected.assert_code(0);
    waited.assert_code(0);
    let events = selected.events();
    assert_eq!(with_flow(&events, &flows[0].0, &flows[0].1).len(), 3, "--pod lab/one must show its drops:\n{}", dump(&events));
    for ev in &events {
        assert_eq!(ev["dst_pod"], "lab/one", "--pod lab/one let through {ev}");
    }
    let events = waited.events();
    assert_eq!(with_flow(&events, &flows[2].0, &flows[2].1).len(), 3, "--pod lab/three --wait must show its drops:\n{}", dump(&events));
    for ev in &events {
        assert_eq!(ev["dst_pod"], "lab/three", "--pod lab/three let through {ev}");
    }
    assert_requests_scoped(&api, NODE);
}
