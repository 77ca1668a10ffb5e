//! Self-tests of the lab itself, without the tracer: the helpers parse what they should, the
//! namespaces clean up, and the kernel produces exactly the drops the drops tests expect (seen
//! through a private tracefs instance). When one of the drops tests fails, run these first: if
//! they fail too, the kernel or the machine differs, not the tracer.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::time::Duration;

use tracer_tests::{traffic::tcp_connect, *};

#[test]
fn summary_line_parses() {
    let s = parse_summary("x\ntracer: drops: 10 seen, 7 delivered, 3 lost\n", "drops");
    assert_eq!(s, Some(Summary { seen: 10, delivered: 7, lost: 3, unread: None }));
    let s = parse_summary("tracer: drops: 10 seen, 5 delivered, 3 lost, 2 unread", "drops");
    assert_eq!(s, Some(Summary { seen: 10, delivered: 5, lost: 3, unread: Some(2) }));
    assert_eq!(parse_summary("tracer: drops: 10 seen", "drops"), None);
    assert_eq!(parse_summary("tracer: retrans: 1 seen, 1 delivered, 0 lost", "drops"), None);
}

#[test]
fn rfc3339_nanos_parses() {
    assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00.000000000Z"), Some(0));
    assert_eq!(parse_rfc3339_nanos("2000-03-01T00:00:01.000000005Z"), Some(951_868_801_000_000_005));
    assert_eq!(parse_rfc3339_nanos("2026-11-22T02:30:01.123456789Z").map(|n| n % 1_000_000_000), Some(123_456_789));
    assert_eq!(parse_rfc3339_nanos("2026-11-22T02:30:01.123456Z"), None);
    assert_eq!(parse_rfc3339_nanos("2026-11-22T02:30:01.123456789+00:00"), None);
    assert_eq!(parse_rfc3339_nanos("2026-11-22 02:30:01.123456789Z"), None);
}

#[test]
fn symbol_offsets() {
    assert!(is_symbol_offset("nf_hook_slow+0x9c"));
    assert!(is_symbol_offset("nf_hook_slow+0x7d/0x110"));
    assert!(!is_symbol_offset("0xffffffff81234567"));
    assert!(!is_symbol_offset("nf_hook_slow"));
    assert!(!is_symbol_offset("nf_hook_slow+156"));
    assert_eq!(strip_size("ip_error+0x94/0x210"), "ip_error+0x94");
}

#[test]
fn reason_numbers_parse_from_print_fmt() {
    // The shape of 6.1's skb:kfree_skb print fmt (6.18's is the same with other numbers).
    let fmt = r#""skbaddr=%p protocol=%u location=%p reason: %s", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { 1, "NOT_SPECIFIED" }, { 2, "NO_SOCKET" }, { 0x10000, "SUBSYS" }, { 65, "MAX" })"#;
    let v = print_symbolic_values(fmt, "reason");
    assert_eq!(v.get("NO_SOCKET"), Some(&2));
    assert_eq!(v.get("SUBSYS"), Some(&0x10000));
    assert_eq!(v.len(), 4);
    assert!(print_symbolic_values(fmt, "protocol").is_empty());
}

#[test]
fn names_fit_ifnamsiz_and_blocks_differ() {
    for role in ["a", "va", "br", "kl", "abc"] {
        assert!(unique_name(role).len() <= 15);
    }
    let (x, y) = (AddrBlock::new(), AddrBlock::new());
    assert_ne!(x.net(0), y.net(0));
    assert!(x.host(3, 254).starts_with("198.1"));
}

#[test]
fn netns_inode_and_cleanup() {
    if !require_privileged("netns_inode_and_cleanup") {
        return;
    }
    let name;
    {
        let ns = Netns::new("t");
        name = ns.name.clone();
        let out = ns.exec_ok(&["readlink", "/proc/self/ns/net"]);
        let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(link, format!("net:[{}]", ns.inode()));
        // A background process is killed when the namespace goes.
        let sleeper = ns.spawn(&["sleep", "30"]);
        std::thread::sleep(Duration::from_millis(100));
        assert!(!ns.pids().is_empty());
        drop(ns);
        let out = wait_child(sleeper, Duration::from_secs(5));
        assert!(!out.status.success(), "the sleeper should have been killed with the namespace");
    }
    assert!(!std::path::Path::new("/var/run/netns").join(&name).exists(), "netns {name} left behind");
}

/// Which (reason, location prefix) the kernel reports for each scenario the drops tests use.
#[test]
fn kernel_reports_the_drop_reasons_the_drops_tests_expect() {
    if !require_privileged("kernel_reports_the_drop_reasons_the_drops_tests_expect") {
        return;
    }
    let pair = PairLab::new();
    pair.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", "6001", "-j", "DROP"]);
    let routed = RoutedLab::new();
    routed.b.exec_ok(&["nft", "add", "table", "inet", "trt"]);
    routed.b.exec_ok(&["nft", "add", "chain", "inet", "trt", "in", "{ type filter hook input priority 0; }"]);
    routed.b.exec_ok(&["nft", "add", "rule", "inet", "trt", "in", "udp", "dport", "6002", "drop"]);
    routed.r.route(&["unreachable", &routed.addrs.net(3)]);

    // (reason, traffic, functions the kernel may free it in)
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (
            "NETFILTER_DROP",
            Box::new(|| {
                Udp::new(&pair.a_ip, 42001, &pair.b_ip, 6001).send(&pair.a);
            }),
            &["nf_hook_slow"],
        ),
        // Which of the two depends on the kernel; drops.rs takes it from the kernel's report.
        (
            "NETFILTER_DROP",
            Box::new(|| {
                Udp::new(&routed.a_ip, 42002, &routed.b_ip, 6002).send(&routed.a);
            }),
            NFT_DROP_FUNCTIONS,
        ),
        (
            "NO_SOCKET",
            Box::new(|| {
                Udp::new(&pair.a_ip, 42003, &pair.b_ip, 6003).send(&pair.a);
            }),
            &["__udp4_lib_rcv"],
        ),
        (
            "NO_SOCKET",
            Box::new(|| {
                tcp_connect(&pair.a, &pair.a_ip, 42004, &pair.b_ip, 6004, 3.0);
            }),
            &["tcp_v4_rcv"],
        ),
        (
            "IP_INNOROUTES",
            Box::new(|| {
                Udp::new(&routed.a_ip, 42005, &routed.addrs.host(2, 1), 6005).send(&routed.a);
            }),
            &["ip_error"],
        ),
        // An explicit `unreachable` route is NOT reported as a no-route reason by this kernel.
        (
            "NOT_SPECIFIED",
            Box::new(|| {
                Udp::new(&routed.a_ip, 42006, &routed.addrs.host(3, 1), 6006).send(&routed.a);
            }),
            &["ip_error"],
        ),
    ];
    for (reason, send, functions) in cases {
        let klog = KernelDropLog::new(&[reason]);
        send();
        std::thread::sleep(Duration::from_millis(200));
        assert!(klog.ipv4_count(reason) > 0, "{reason}: the kernel reported no such IPv4 drop");
        match klog.ipv4_locations(reason) {
            Ok(locs) => {
                eprintln!("kernel {}: {reason} at {locs:?}", kernel_release());
                let in_function = |l: &String| functions.iter().any(|f| l.starts_with(&format!("{f}+0x")));
                assert!(locs.iter().any(in_function), "{reason}: want a location in one of {functions:?}, got {locs:?}");
            }
            Err(why) => skipped(&format!("kernel_reports_the_drop_reasons_the_drops_tests_expect: {reason} location"), &why),
        }
    }
}
