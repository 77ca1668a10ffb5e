//! Privileged integration tests for `tracer serve`: the tracer runs inside a lab namespace (so
//! its metrics listener on 127.0.0.1 is the lab's), real drops are caused in the lab, the
//! metrics are scraped over HTTP from inside the lab and checked with `promtool check metrics`
//! (Debian's prometheus package) and against the JSON events of the same run.
//! Run as root: `cargo build --release -p tracer && cargo test --release -p tracer-tests --test serve`.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{collections::BTreeMap, time::Duration};

use tracer_tests::*;

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

/// Drops by a rule and to a closed port: the scrape passes promtool, and tracer_drops_total by
/// reason and function equals the JSON events the same run printed; every probe reports up and
/// its seen/lost counts.
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
    let t = Tracer::start_in(&lab.a, &["serve", "--metrics", addr, "--pods-from", "none", "--ip", &block]);
    assert!(t.stderr().contains(&format!("metrics on http://{addr}/metrics")), "{}", t.stderr());
    Udp { count: 4, ..Udp::new(&lab.a_ip, 41000, &lab.b_ip, 6100) }.send(&lab.a);
    Udp { count: 3, ..Udp::new(&lab.a_ip, 41001, &lab.b_ip, 6101) }.send(&lab.a);
    assert!(t.wait_for(Duration::from_secs(10), |e| e.len() >= 7), "drops not seen: {}", t.stderr());
    // The kernel counts are copied every second: wait for them too (bounded).
    let text = scrape_until(&lab.a, addr, |t| samples(t, "tracer_events_seen_total").get("{probe=\"drops\"}").copied().unwrap_or(0.0) >= 7.0);
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
        let key = format!("{{reason=\"{}\",function=\"{function}\",namespace=\"\",pod=\"\"}}", e["reason"].as_str().unwrap_or_default());
        *from_events.entry(key).or_default() += 1.0;
    }
    assert_eq!(samples(&text, "tracer_drops_total"), from_events, "metrics vs events:\n{text}");
    assert_eq!(from_events.values().sum::<f64>(), 7.0, "4 rule drops and 3 closed-port drops: {from_events:?}");
    for probe in ["drops", "tcp", "nat", "mtu"] {
        let up = samples(&text, "tracer_probe_up");
        assert!(up.contains_key(&format!("{{probe=\"{probe}\"}}")), "tracer_probe_up for {probe}:\n{text}");
    }
    let seen = samples(&text, "tracer_events_seen_total");
    assert_eq!(seen.get("{probe=\"drops\"}").copied(), Some(7.0), "seen as the kernel counted it:\n{text}");
    assert_eq!(samples(&text, "tracer_events_lost_total").get("{probe=\"drops\"}").copied(), Some(0.0), "{text}");
}

/// Label sets past --max-series are counted under "other", and the cap is itself counted.
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
    let t = Tracer::start_in(&lab.a, &["serve", "--metrics", addr, "--max-series", "1", "--quiet", "--pods-from", "none", "--ip", &block]);
    // Two label sets: NETFILTER_DROP (first, kept) and NO_SOCKET (past the limit).
    Udp { count: 2, ..Udp::new(&lab.a_ip, 42000, &lab.b_ip, 6200) }.send(&lab.a);
    std::thread::sleep(Duration::from_millis(300));
    Udp { count: 3, ..Udp::new(&lab.a_ip, 42001, &lab.b_ip, 6201) }.send(&lab.a);
    let text = scrape_until(&lab.a, addr, |t| samples(t, "tracer_drops_total").values().sum::<f64>() >= 5.0);
    let run = t.stop();
    run.assert_code(0);
    assert!(run.lines.is_empty(), "--quiet prints no events: {:?}", run.lines);
    let drops = samples(&text, "tracer_drops_total");
    assert_eq!(drops.len(), 2, "one kept label set and `other`:\n{text}");
    assert_eq!(drops.get("{reason=\"other\",function=\"other\",namespace=\"other\",pod=\"other\"}").copied(), Some(3.0), "{text}");
    assert_eq!(samples(&text, "tracer_metric_series_capped_total").get("{metric=\"tracer_drops_total\"}").copied(), Some(3.0), "{text}");
    assert!(run.stderr.contains("--max-series"), "the cap is said once on stderr: {}", run.stderr);
}

#[test]
fn a_bad_metrics_address_is_bad_input() {
    let test = "a_bad_metrics_address_is_bad_input";
    if !require_privileged(test) {
        return;
    }
    let run = run_tracer(&["serve", "--metrics", "localhost"], Duration::from_secs(30));
    run.assert_code(2);
    assert_eq!(run.stderr_lines().len(), 1, "one line: {}", run.stderr);
    assert!(run.stderr.contains("--metrics localhost: expected IP:PORT"), "{}", run.stderr);
}
