//! A network namespace with rules of every source, for the tests that read the real kernel and
//! for capturing the byte fixtures the parsers' unit tests read (`capture_fixtures`, by hand:
//! `cargo test --release -p tracer --lib kernel::firewall::lab::capture_fixtures -- --ignored`).

use std::{
    net::UdpSocket,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use super::{nftables, xtables};
use crate::kernel::netns::Netns;

/// The lab's rules, tool and arguments, in order. Every kind of match the readers spell out,
/// rules that do not drop (left out), a policy, a user chain.
const RULES: &[(&str, &[&str])] = &[
    ("nft", &["add", "table", "inet", "trt"]),
    ("nft", &["add", "chain", "inet", "trt", "in", "{ type filter hook input priority 0; }"]),
    ("nft", &["add", "rule", "inet", "trt", "in", "ip", "daddr", "127.0.0.1", "udp", "dport", "53", "counter", "drop"]),
    ("nft", &["add", "rule", "inet", "trt", "in", "tcp", "dport", "5000-5400", "reject"]),
    ("nft", &["add", "rule", "inet", "trt", "in", "ip", "saddr", "10.1.0.0/16", "meta", "l4proto", "tcp", "drop"]),
    ("nft", &["add", "rule", "inet", "trt", "in", "ip6", "saddr", "fd00::/62", "udp", "dport", "!=", "53", "counter", "drop"]),
    ("nft", &["add", "rule", "inet", "trt", "in", "ct", "state", "invalid", "counter", "drop"]),
    ("nft", &["add", "rule", "inet", "trt", "in", "udp", "dport", "{ 54, 55 }", "drop"]),
    ("nft", &["add", "rule", "inet", "trt", "in", "iifname", "\"lo\"", "udp", "dport", "7", "accept"]),
    ("iptables-nft", &["-A", "INPUT", "-p", "udp", "--dport", "5301", "-j", "DROP"]),
    ("iptables-nft", &["-A", "INPUT", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "REJECT"]),
    ("ip6tables-nft", &["-A", "INPUT", "-s", "fd00::/64", "-p", "udp", "--dport", "53", "-j", "DROP"]),
    ("iptables-legacy", &["-N", "TRT"]),
    ("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", "5302", "-j", "DROP"]),
    ("iptables-legacy", &["-A", "INPUT", "-i", "eth+", "-s", "10.0.0.0/8", "-p", "tcp", "-m", "tcp", "--dport", "5000:5400", "-j", "REJECT"]),
    ("iptables-legacy", &["-A", "INPUT", "-j", "TRT"]),
    ("iptables-legacy", &["-A", "TRT", "!", "-p", "udp", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]),
    ("iptables-legacy", &["-A", "INPUT", "-p", "udp", "!", "--dport", "9", "-j", "ACCEPT"]),
    ("iptables-legacy", &["-P", "FORWARD", "DROP"]),
    ("ip6tables-legacy", &["-A", "INPUT", "-d", "fd00::1/128", "-p", "udp", "--dport", "53", "-j", "DROP"]),
];

/// Datagrams sent to 127.0.0.1 once the rules are in: one to each dropping UDP port (53: the
/// nft rule, 5301: iptables-nft, 5302: iptables-legacy), so their counters are 1.
const DATAGRAMS_TO: &[u16] = &[53, 5301, 5302];

/// The namespace, deleted on drop.
pub(crate) struct Lab {
    name: String,
}

impl Lab {
    /// The namespace with [`RULES`] and [`DATAGRAMS_TO`] sent; None (after saying why) when
    /// this machine cannot make it (not root, a tool missing).
    pub(crate) fn new(test: &str) -> Option<Lab> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("trt-fw-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let ok = |cmd: &mut Command| cmd.output().is_ok_and(|o| o.status.success());
        if !ok(Command::new("ip").args(["netns", "add", &name])) {
            skipped(test, "cannot create a network namespace (not root?)");
            return None;
        }
        let lab = Lab { name };
        assert!(ok(Command::new("ip").args(["-n", &lab.name, "link", "set", "lo", "up"])));
        for (tool, args) in RULES {
            let out = Command::new("ip").args(["netns", "exec", &lab.name, tool]).args(*args).output();
            match out {
                Ok(o) if o.status.success() => {}
                other => {
                    skipped(test, &format!("`{tool} {}` failed in the lab: {other:?}", args.join(" ")));
                    return None;
                }
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let _inside = lab.netns().enter().expect("entering the lab");
                let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
                for port in DATAGRAMS_TO {
                    socket.send_to(b"tracer", ("127.0.0.1", *port)).expect("a datagram");
                }
            });
        });
        Some(lab)
    }

    /// The lab's namespace, to enter.
    pub(crate) fn netns(&self) -> Netns {
        Netns::parse(&self.name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn skipped(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
    assert!(std::env::var_os("TRACER_REQUIRE_PRIVILEGED").is_none(), "privileged test could not run: {why}");
}

/// Where the captured fixtures live.
pub(crate) fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/kernel/firewall/testdata")
}

#[test]
#[ignore = "rewrites src/kernel/firewall/testdata/: run by hand when the lab's rules change"]
fn capture_fixtures() {
    let Some(lab) = Lab::new("capture_fixtures") else { panic!("the lab is needed to capture") };
    let _inside = lab.netns().enter().expect("entering the lab");
    std::fs::create_dir_all(fixture_dir()).expect("testdata");
    std::fs::write(fixture_dir().join("nft-dump.bin"), nftables::capture().expect("the nft dump")).expect("write");
    std::fs::write(fixture_dir().join("ipt-filter.bin"), xtables::capture(xtables::IpVersion::V4, "filter").expect("filter")).expect("write");
    std::fs::write(fixture_dir().join("ip6t-filter.bin"), xtables::capture(xtables::IpVersion::V6, "filter").expect("filter")).expect("write");
}

/// How long reading a node-sized ruleset takes: 10,000 dropping rules in legacy iptables and
/// 10,000 in nftables, read from inside their namespace. By hand: `cargo test --release -p
/// tracer --lib kernel::firewall::lab::measure_reading_a_large_ruleset -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (about 10 s to load the rules), run by hand"]
fn measure_reading_a_large_ruleset() {
    use std::{io::Write as _, process::Stdio, time::Instant};
    const RULES_PER_SOURCE: u16 = 10_000;
    let test = "measure_reading_a_large_ruleset";
    let name = format!("trt-fw-big-{}", std::process::id());
    assert!(Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success()), "{test}: needs root");
    let lab = Lab { name };
    let load = |tool: &[&str], input: String| {
        let mut child = Command::new("ip").args(["netns", "exec", &lab.name]).args(tool).stdin(Stdio::piped()).spawn().expect("spawn");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
        assert!(child.wait().expect("wait").success(), "{tool:?}");
    };
    let mut legacy = String::from("*filter\n");
    let mut nft = String::from("table inet big {\n chain in {\n  type filter hook input priority 0;\n");
    for i in 0..RULES_PER_SOURCE {
        legacy.push_str(&format!("-A INPUT -s 10.{}.{}.0/24 -p udp -m udp --dport {} -j DROP\n", i / 256, i % 256, 1024 + i));
        nft.push_str(&format!("  ip saddr 10.{}.{}.0/24 udp dport {} counter drop\n", i / 256, i % 256, 1024 + i));
    }
    legacy.push_str("COMMIT\n");
    nft.push_str(" }\n}\n");
    load(&["iptables-legacy-restore"], legacy);
    load(&["nft", "-f", "-"], nft);
    let _inside = lab.netns().enter().expect("entering the lab");
    for _ in 0..3 {
        let started = Instant::now();
        let read = super::read_dropping();
        let took = started.elapsed();
        assert!(read.unreadable.is_empty(), "{:?}", read.unreadable);
        assert_eq!(read.rules.len(), 2 * usize::from(RULES_PER_SOURCE));
        eprintln!("{test}: {} rules read in {took:?}", read.rules.len());
    }
    let started = Instant::now();
    let nft = nftables::dropping_rules().expect("nftables");
    eprintln!("{test}: nftables alone: {} rules in {:?}", nft.len(), started.elapsed());
    let started = Instant::now();
    let legacy = xtables::dropping_rules(xtables::IpVersion::V4, "filter").expect("legacy");
    eprintln!("{test}: iptables-legacy alone: {} rules in {:?}", legacy.len(), started.elapsed());
}
