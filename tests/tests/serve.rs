//! Privileged integration tests for `tracer serve`: the tracer runs inside a lab namespace (so
//! its metrics listener on 127.0.0.1 is the lab's), real drops are caused in the lab, the
//! metrics are scraped over HTTP from inside the lab and checked with `promtool check metrics`
//! (Debian's prometheus package) and against the JSON events of the same run. Every tracer is
//! given `--node-name` [`NODE`], the `node` label of every series.
//! Run as root: `cargo build --release -p tracer && cargo test --release -p tracer-tests --test serve`.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use tracer_tests::*;

/// The node name every tracer here is given.
const NODE: &str = "lab-node-1";

const SCRAPE: &str = r#"
import sys, urllib.request
print(urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=5).read().decode(), end="")
"#;

/// The samples of `metric` in a Prometheus text exposition: labels (as written) -> value.
fn samples(text: &str, metric: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(metric))
        .filter_map(|rest| {
            let (labels, value) = rest.rsplit_once(' ')?;
            Some((labels.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Two namespaces; in `b`, a rule drops UDP to `port`; `a` has loopback up for the tracer's
/// metrics listener.
fn lab_with_drop_rule(port: u16) -> PairLab {
    let lab = PairLab::new();
    lab.a.ip(&["link", "set", "lo", "up"]);
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]);
    lab
}

/// Scrapes `addr` from inside `ns` until `done(text)` (at most 10 s); the last scrape.
fn scrape_until(ns: &Netns, addr: &str, done: impl Fn(&str) -> bool) -> String {
    let mut text = String::new();
    for _ in 0..40 {
        let out = ns.exec_ok(&["python3", "-c", SCRAPE, addr]);
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        if done(&text) {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    text
}

fn promtool_check(text: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool (Debian prometheus, installed by scripts/setup.sh): {e}"));
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write to promtool");
    child.wait_with_output().expect("promtool")
}

/// Every sample of the exposition (`name{labels} value` lines) carries `node="NODE"`.
fn assert_every_series_has_the_node(text: &str) {
    let node = format!("node=\"{NODE}\"");
    let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
    assert!(!samples.is_empty(), "no samples:\n{text}");
    for line in samples {
        assert!(line.contains(&format!("{{{node}")), "a series without {node} first: {line}\n{text}");
    }
}

/// `serve` in `ns` with the lab's common flags (`--node-name`, no pod source, filtered to
/// `block`) and `extra`.
fn serve_args<'a>(addr: &'a str, block: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["serve", "--metrics", addr, "--node-name", NODE, "--pods-from", "none", "--ip", block];
    args.extend_from_slice(extra);
    args
}

/// Drops by a rule and to a closed port: the scrape passes promtool, and tracer_drops_total by
/// reason and function equals the JSON events the same run printed; every probe reports up and
/// its seen/lost counts; every series has the node; tracer_build_info names version and kernel.
#[test]
fn metrics_pass_promtool_and_match_the_events() {
    let test = "metrics_pass_promtool_and_match_the_events";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let lab = lab_with_drop_rule(6100);
    let addr = "127.0.0.1:19464";
    let block = lab.addrs.net(0);
    let t = Tracer::start_in(&lab.a, &serve_args(addr, &block, &[]));
    // Printed just after `attached`, which is what start_in waited for.
    assert!(t.wait_for_stderr(Duration::from_secs(10), &format!("metrics on http://{addr}/metrics")), "{}", t.stderr());
    Udp { count: 4, ..Udp::new(&lab.a_ip, 41000, &lab.b_ip, 6100) }.send(&lab.a);
    Udp { count: 3, ..Udp::new(&lab.a_ip, 41001, &lab.b_ip, 6101) }.send(&lab.a);
    assert!(t.wait_for(Duration::from_secs(10), |e| e.len() >= 7), "drops not seen: {}", t.stderr());
    // The kernel counts are copied every second: wait for them too (bounded).
    let seen_key = format!("{{node=\"{NODE}\",probe=\"drops\"}}");
    let text = scrape_until(&lab.a, addr, |t| samples(t, "tracer_events_seen_total").get(&seen_key).copied().unwrap_or(0.0) >= 7.0);
    let run = t.stop();
    run.assert_code(0);

    let check = promtool_check(&text);
    assert!(
        check.status.success(),
        "promtool check metrics failed: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // Drops by (reason, function) as the JSON stream saw them, at scrape time all of them.
    let mut from_events: BTreeMap<String, f64> = BTreeMap::new();
    for e in run.events().iter().filter(|e| e["kind"] == "drop") {
        let function = e["location"].as_str().unwrap_or_default().split('+').next().unwrap_or_default().to_string();
        let reason = e["reason"].as_str().unwrap_or_default();
        let key = format!("{{node=\"{NODE}\",reason=\"{reason}\",function=\"{function}\",namespace=\"\",pod=\"\"}}");
        *from_events.entry(key).or_default() += 1.0;
    }
    assert_eq!(samples(&text, "tracer_drops_total"), from_events, "metrics vs events:\n{text}");
    assert_eq!(from_events.values().sum::<f64>(), 7.0, "4 rule drops and 3 closed-port drops: {from_events:?}");
    for probe in ["drops", "tcp", "nat", "mtu"] {
        let up = samples(&text, "tracer_probe_up");
        assert!(up.contains_key(&format!("{{node=\"{NODE}\",probe=\"{probe}\"}}")), "tracer_probe_up for {probe}:\n{text}");
    }
    let seen = samples(&text, "tracer_events_seen_total");
    assert_eq!(seen.get(&seen_key).copied(), Some(7.0), "seen as the kernel counted it:\n{text}");
    assert_eq!(samples(&text, "tracer_events_lost_total").get(&seen_key).copied(), Some(0.0), "{text}");
    assert_every_series_has_the_node(&text);
    // Build info: this tracer's version and the kernel it runs on.
    let info = samples(&text, "tracer_build_info");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease").trim().to_string();
    let (labels, value) = info.iter().next().unwrap_or_else(|| panic!("no tracer_build_info:\n{text}"));
    assert_eq!((info.len(), *value), (1, 1.0), "{text}");
    let version = tracer_cli_version();
    for want in [format!("node=\"{NODE}\""), format!("version=\"{version}\""), format!("kernel=\"{kernel}\""), "git=\"".to_string()] {
        assert!(labels.contains(&want), "tracer_build_info{labels} lacks {want}");
    }
    assert!(text.contains("# TYPE tracer_build_info gauge"), "{text}");
}

/// The version `tracer --version` prints (`tracer 0.1.0`).
fn tracer_cli_version() -> String {
    let run = run_tracer(&["--version"], Duration::from_secs(10));
    run.assert_code(0);
    run.lines.first().and_then(|l| l.split_whitespace().nth(1)).unwrap_or_else(|| panic!("tracer --version: {:?}", run.lines)).to_string()
}

/// Label sets past --max-series are counted with pod "other", their reason and function kept,
/// and the cap is itself counted.
#[test]
fn label_sets_past_the_limit_are_counted_as_other() {
    let test = "label_sets_past_the_limit_are_counted_as_other";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let lab = lab_with_drop_rule(6200);
    let addr = "127.0.0.1:19465";
    let block = lab.addrs.net(0);
    let t = Tracer::start_in(&lab.a, &serve_args(addr, &block, &["--max-series", "1", "--quiet"]));
    // Two label sets: NETFILTER_DROP (first, kept) and NO_SOCKET (past the limit).
    Udp { count: 2, ..Udp::new(&lab.a_ip, 42000, &lab.b_ip, 6200) }.send(&lab.a);
    std::thread::sleep(Duration::from_millis(300));
    Udp { count: 3, ..Udp::new(&lab.a_ip, 42001, &lab.b_ip, 6201) }.send(&lab.a);
    let text = scrape_until(&lab.a, addr, |t| samples(t, "tracer_drops_total").values().sum::<f64>() >= 5.0);
    let run = t.stop();
    run.assert_code(0);
    assert!(run.lines.is_empty(), "--quiet prints no events: {:?}", run.lines);
    let drops = samples(&text, "tracer_drops_total");
    assert_eq!(drops.len(), 2, "one kept label set and one with pod `other`:\n{text}");
    let kept = drops.keys().find(|k| k.contains("NETFILTER_DROP")).unwrap_or_else(|| panic!("NETFILTER_DROP kept:\n{text}"));
    assert!(kept.ends_with(",namespace=\"\",pod=\"\"}") && drops[kept] == 2.0, "{text}");
    let capped = drops.iter().find(|(k, _)| k.contains("NO_SOCKET")).unwrap_or_else(|| panic!("the reason survives the cap:\n{text}"));
    assert!(capped.0.contains("function=\"") && !capped.0.contains("function=\"other\""), "the function survives the cap: {}", capped.0);
    assert!(capped.0.ends_with(",namespace=\"\",pod=\"other\"}") && *capped.1 == 3.0, "only the pod is other: {capped:?}\n{text}");
    let capped_key = format!("{{node=\"{NODE}\",metric=\"tracer_drops_total\"}}");
    assert_eq!(samples(&text, "tracer_metric_series_capped_total").get(&capped_key).copied(), Some(3.0), "{text}");
    assert_eq!(run.stderr.matches("--max-series").count(), 1, "the cap is said once on stderr: {}", run.stderr);
}

/// With --series-idle 2s, a label set no event counted for 2 s leaves the output (the gauges and
/// the kernel counts, refreshed every second, stay), and its room under --max-series 1 goes to
/// the next label set: NO_SOCKET is then counted as it is, not with pod "other".
#[test]
fn idle_series_leave_the_output_and_free_their_room() {
    let test = "idle_series_leave_the_output_and_free_their_room";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let lab = lab_with_drop_rule(6300);
    let addr = "127.0.0.1:19466";
    let block = lab.addrs.net(0);
    let t = Tracer::start_in(&lab.a, &serve_args(addr, &block, &["--max-series", "1", "--series-idle", "2s", "--quiet"]));
    Udp { count: 2, ..Udp::new(&lab.a_ip, 43000, &lab.b_ip, 6300) }.send(&lab.a);
    let first = scrape_until(&lab.a, addr, |t| samples(t, "tracer_drops_total").values().sum::<f64>() >= 2.0);
    assert!(samples(&first, "tracer_drops_total").keys().any(|k| k.contains("NETFILTER_DROP")), "{first}");
    // Idle for 2 s: gone (bounded by scrape_until's 10 s).
    let idle = scrape_until(&lab.a, addr, |t| samples(t, "tracer_drops_total").is_empty());
    assert!(samples(&idle, "tracer_drops_total").is_empty(), "an idle label set stays:\n{idle}");
    assert!(!samples(&idle, "tracer_probe_up").is_empty() && !samples(&idle, "tracer_events_seen_total").is_empty(), "{idle}");
    Udp { count: 3, ..Udp::new(&lab.a_ip, 43001, &lab.b_ip, 6301) }.send(&lab.a);
    let next = scrape_until(&lab.a, addr, |t| samples(t, "tracer_drops_total").values().sum::<f64>() >= 3.0);
    let run = t.stop();
    run.assert_code(0);
    let drops = samples(&next, "tracer_drops_total");
    assert_eq!(drops.len(), 1, "{next}");
    let (labels, count) = drops.iter().next().expect("one series");
    assert!(labels.contains("NO_SOCKET") && labels.ends_with("pod=\"\"}") && *count == 3.0, "the freed room is reused: {labels} {count}\n{next}");
    assert!(samples(&next, "tracer_metric_series_capped_total").is_empty(), "nothing was capped:\n{next}");
}

/// A drop storm (a 4 KiB ring buffer, stdout not read) under `serve --probes drops`: the drops
/// the ring buffer could not take are exported as tracer_drops_undelivered_total by reason and
/// function, adding up to the kernel's lost count; only the chosen family runs.
#[test]
fn storm_counts_are_exported_and_probes_can_be_chosen() {
    let test = "storm_counts_are_exported_and_probes_can_be_chosen";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let lab = PairLab::new();
    lab.a.ip(&["link", "set", "lo", "up"]);
    let addr = "127.0.0.1:19467";
    let block = lab.addrs.net(0);
    let t = Tracer::start_in_paused(&lab.a, &serve_args(addr, &block, &["--probes", "drops", "--ring-buffer", "4096"]));
    let attached = t.attached_lines().join("\n");
    assert!(attached.contains("drops:") && !attached.contains("tcp:") && !attached.contains("mtu:"), "only drops: {attached}");
    // NO_SOCKET drops (nothing listens in b), faster than a stalled reader takes them.
    let sent = Udp { count: 20_000, size: 1, gap: 0.0, ..Udp::new(&lab.a_ip, 44000, &lab.b_ip, 6400) }.send(&lab.a);
    assert!(sent >= 10_000, "sent only {sent}");
    t.resume_stdout();
    let lost_key = format!("{{node=\"{NODE}\",probe=\"drops\"}}");
    let undelivered = |text: &str| samples(text, "tracer_drops_undelivered_total").values().sum::<f64>();
    let text = scrape_until(&lab.a, addr, |text| {
        let lost = samples(text, "tracer_events_lost_total").get(&lost_key).copied().unwrap_or(0.0);
        lost > 0.0 && undelivered(text) == lost
    });
    let run = t.stop();
    run.assert_code(0);
    let lost = samples(&text, "tracer_events_lost_total").get(&lost_key).copied().unwrap_or(0.0);
    assert!(lost > 0.0, "a 4 KiB ring buffer and a stalled reader lose drops:\n{text}\n{}", run.stderr);
    assert_eq!(undelivered(&text), lost, "every lost drop is in tracer_drops_undelivered_total:\n{text}");
    let rows = samples(&text, "tracer_drops_undelivered_total");
    assert!(rows.keys().all(|k| k.starts_with(&format!("{{node=\"{NODE}\",reason=\"")) && k.contains(",function=\"")), "{rows:?}");
    assert!(rows.keys().any(|k| k.contains("reason=\"NO_SOCKET\"")), "{rows:?}");
    let up: Vec<String> = samples(&text, "tracer_probe_up").into_keys().collect();
    assert_eq!(up, [lost_key], "tracer_probe_up of the chosen family only");
    assert!(text.contains("# HELP tracer_drops_undelivered_total"), "{text}");
}

/// How long serve waits for a request (`REQUEST_TIMEOUT` in tracer/src/commands/serve.rs).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A scrape that no idle client delays answers well within this on the loaded 2-CPU machine
/// (a few ms when quiet): less than half the time an idle client can hold a slot.
const PROMPT: Duration = Duration::from_secs(2);

/// The number of scrapes serve answers at once, as its `metrics on` line says ("up to N
/// scrapes at a time").
fn scrape_bound(stderr: &str) -> usize {
    let line = stderr.lines().find(|l| l.contains("metrics on http://")).unwrap_or_else(|| panic!("no `metrics on` line: {stderr}"));
    line.split("up to ").nth(1).and_then(|rest| rest.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no bound in: {line}"))
}

/// `n` connections to `addr` from inside `ns` that never send a byte; open until dropped.
fn idle_connections(ns: &Netns, addr: &str, n: usize) -> Vec<TcpStream> {
    let addr = addr.to_string();
    ns.run_inside(move || (0..n).map(|i| TcpStream::connect(&addr).unwrap_or_else(|e| panic!("idle connection {i} to {addr}: {e}"))).collect())
}

/// One `GET path` to `addr` from inside `ns` (reading at most 30 s): how long the answer took
/// from connecting to the end of the body, and the answer.
fn timed_get(ns: &Netns, addr: &str, path: &str) -> (Duration, String) {
    let (addr, path) = (addr.to_string(), path.to_string());
    ns.run_inside(move || {
        let started = Instant::now();
        let mut stream = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes()).expect("send the request");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap_or_else(|e| panic!("GET {path} from {addr}: no answer within 30 s ({e}): {answer}"));
        (started.elapsed(), answer)
    })
}

/// serve on `addr` in a new lab's namespace `a`, only the drops family (the quickest to attach:
/// these tests are about the listener), and its bound read from stderr.
fn serve_for_scrapes(addr: &str) -> (PairLab, Tracer, usize) {
    let lab = PairLab::new();
    let block = lab.addrs.net(0);
    let t = Tracer::start_in(&lab.a, &serve_args(addr, &block, &["--probes", "drops", "--quiet"]));
    // Printed just after `attached`, which is what start_in waited for.
    assert!(t.wait_for_stderr(Duration::from_secs(10), "metrics on http://"), "{}", t.stderr());
    let bound = scrape_bound(&t.stderr());
    assert!(bound >= 2, "a bound of {bound} leaves no room for an idle client beside a scrape");
    (lab, t, bound)
}

/// Clients that connect and never send their request, as many as leave one slot free, do not
/// delay a scrape (nor /healthz): each answers well within the request timeout an idle client
/// can hold a slot for, while the idle clients are still connected.
#[test]
fn idle_clients_below_the_bound_do_not_delay_a_scrape() {
    let test = "idle_clients_below_the_bound_do_not_delay_a_scrape";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let addr = "127.0.0.1:19468";
    let (lab, t, bound) = serve_for_scrapes(addr);
    let idle = idle_connections(&lab.a, addr, bound - 1);
    // serve accepts them in the order they came: give it a moment to take every one.
    std::thread::sleep(Duration::from_millis(300));
    let since_idle = Instant::now();
    for path in ["/metrics", "/healthz", "/metrics"] {
        let (took, answer) = timed_get(&lab.a, addr, path);
        assert!(took < PROMPT, "GET {path} took {took:?} beside {} idle clients (bound {bound}): {answer}", idle.len());
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "GET {path}: {answer}");
        let want = if path == "/healthz" { "\r\n\r\nok\n" } else { "tracer_build_info{" };
        assert!(answer.contains(want), "GET {path}: {want:?} missing: {answer}");
    }
    assert!(since_idle.elapsed() < REQUEST_TIMEOUT, "the idle clients may have timed out before the scrapes: the check proved nothing");
    drop(idle);
    t.stop().assert_code(0);
}

/// With every slot held by a client that sends nothing, a scrape is not refused: it waits in
/// the listen backlog for the first slot to free, which the request timeout bounds.
#[test]
fn a_scrape_past_the_bound_waits_at_most_one_request_timeout() {
    let test = "a_scrape_past_the_bound_waits_at_most_one_request_timeout";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let addr = "127.0.0.1:19469";
    let (lab, t, bound) = serve_for_scrapes(addr);
    let idle = idle_connections(&lab.a, addr, bound);
    let opened = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let (took, answer) = timed_get(&lab.a, addr, "/metrics");
    let since_opened = opened.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.contains("tracer_build_info{"), "{answer}");
    // Less than the request timeout after the idle clients came would mean there is no bound.
    assert!(since_opened >= REQUEST_TIMEOUT - Duration::from_millis(500), "answered after {since_opened:?} with {bound} idle clients: no bound");
    assert!(took < REQUEST_TIMEOUT + PROMPT, "waited {took:?}: longer than one request timeout ({REQUEST_TIMEOUT:?})");
    drop(idle);
    t.stop().assert_code(0);
}

#[test]
fn bad_serve_input_is_one_line_and_exit_2() {
    let test = "bad_serve_input_is_one_line_and_exit_2";
    if !require_privileged(test) {
        return;
    }
    for (args, want) in [
        (&["serve", "--metrics", "localhost"][..], "--metrics localhost: expected IP:PORT"),
        (&["serve", "--probes", "drops,arp"], "--probes \"arp\": not a probe family; valid: drops, tcp, nat, mtu"),
        (&["watch", "--probes", "dns"], "valid: drops, tcp, nat, mtu"),
        (&["diagnose", "--probes", ""], "valid: drops, tcp, nat, mtu"),
        (&["serve", "--series-idle", "0s"], "--series-idle 0s: expected a duration of at least 1s"),
    ] {
        let run = run_tracer(args, Duration::from_secs(30));
        run.assert_code(2);
        assert_eq!(run.stderr_lines().len(), 1, "{args:?}: one line: {}", run.stderr);
        assert!(run.stderr.contains(want), "{args:?}: want {want:?} in {}", run.stderr);
    }
}
