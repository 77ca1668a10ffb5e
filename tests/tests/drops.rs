//! Privileged integration tests for `tracer drops`: real namespaces, real kernel drops, the real
//! binary. Run as root: `cargo build --release -p tracer && cargo test -p tracer-tests --test drops`.
//!
//! Every test builds its own lab (unique namespaces, links and a private 198.18.0.0/15 block),
//! filters the tracer to its own hosts, and tears everything down on drop, also on panic.
//!
//! Kernel facts these tests rely on (checked on 6.1, 6.12 and 6.18 through private tracefs
//! instances, and re-checked at run time through [`KernelDropLog`] so the tests fail loudly if a
//! kernel differs):
//! - iptables-legacy DROP in INPUT: reason NETFILTER_DROP at `nf_hook_slow+0x..`.
//! - nftables (also iptables-nft) drop: reason NETFILTER_DROP at `nft_do_chain+0x..` (6.12,
//!   6.18) or `nf_hook_slow+0x..` (6.1); the test takes it from the kernel's own report.
//! - UDP or TCP to a closed port: NO_SOCKET (`__udp4_lib_rcv+0x..` / `tcp_v4_rcv+0x..`).
//! - A forwarded packet with no route at all: IP_INNOROUTES at `ip_error+0x..` in the router's
//!   netns (an `unreachable`/`blackhole`/`prohibit` route gives NOT_SPECIFIED at `ip_error`).
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{collections::BTreeSet, time::Duration};

use tracer_tests::{
    traffic::{TcpClient, tcp_connect},
    *,
};

/// Arguments every run here starts with. (No `--pods-from none` yet: `drops` does not take it;
/// the lab namespaces are no pods, so src_pod/dst_pod must be null anyway.)
const BASE: &[&str] = &["drops", "-o", "json"];

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = BASE.to_vec();
    v.extend_from_slice(extra);
    v
}

/// The flow of one expected drop.
struct Expect<'a> {
    proto: &'a str,
    src: String,
    dst: String,
    reason: &'a str,
    /// Functions the location may be in (`function+0x..`); one, except where the kernel could
    /// not say which (see [`nftables_drop_functions`]).
    functions: &'a [&'a str],
    netns: u64,
    ifname: &'a str,
    /// Inclusive bounds on `len` (the tracer may report L3 or L4 length).
    len: (u64, u64),
}

/// Asserts `n` events of exactly this flow, each with every expected field, and returns them.
fn assert_drops<'a>(events: &'a [Value], window: (i128, i128), e: &Expect, n: usize) -> Vec<&'a Value> {
    for ev in events {
        check_drop(ev, window);
    }
    let got = with_flow(events, &e.src, &e.dst);
    assert_eq!(got.len(), n, "expected {n} drop events {} -> {}, got {}; all events:\n{}", e.src, e.dst, got.len(), dump(events));
    for ev in &got {
        assert_eq!(ev["proto"], e.proto, "proto of {ev}");
        assert_eq!(ev["reason"], e.reason, "reason of {ev}");
        let loc = ev["location"].as_str().unwrap_or_default();
        let function = loc.split_once("+0x").map_or("", |(f, _)| f);
        assert!(e.functions.contains(&function), "location of {ev}: want one of {:?} +0x..", e.functions);
        assert_eq!(ev["netns"].as_u64(), Some(e.netns), "netns of {ev} (want the inode of the dropping netns)");
        assert_eq!(ev["ifname"].as_str(), Some(e.ifname), "ifname of {ev}");
        assert!(ev["src_pod"].is_null() && ev["dst_pod"].is_null(), "pods of {ev} must be null: the lab has no pods");
        let len = ev["len"].as_u64().unwrap_or(0);
        assert!((e.len.0..=e.len.1).contains(&len), "len of {ev}: want {:?}", e.len);
    }
    got
}

/// The summary must be present, consistent, lossless and match the number of JSON lines.
fn assert_clean_summary(run: &TracerRun) {
    let s = parse_summary(&run.stderr, "drops")
        .unwrap_or_else(|| panic!("no `tracer: drops: N seen, N delivered, N lost` line on stderr:\n{}", run.stderr));
    assert_eq!(s.lost, 0, "unexpected lost events: {s:?}");
    assert_eq!(s.seen, s.delivered + s.lost + s.unread.unwrap_or(0), "seen != delivered + lost (+ unread): {s:?}");
    assert_eq!(s.delivered as usize, run.events().len(), "delivered != number of JSON lines: {s:?}");
}

/// The tracer's location (without size) must be one the kernel itself reported for `reason`.
/// Where this kernel cannot name its locations the cross-check is skipped with a printed line;
/// that the kernel saw such a drop at all is still required.
fn assert_location_matches_kernel(test: &str, got: &[&Value], klog: &KernelDropLog, reason: &str) {
    assert!(klog.ipv4_count(reason) > 0, "tracefs saw no IPv4 {reason} drop: the lab did not produce the drop");
    let kernel = match klog.ipv4_locations(reason) {
        Ok(kernel) => kernel,
        Err(why) => return skipped(&format!("{test}: {reason} location cross-check against tracefs"), &why),
    };
    assert!(!kernel.is_empty(), "tracefs printed no IPv4 {reason} location: the lab did not produce the drop");
    for ev in got {
        let loc = strip_size(ev["location"].as_str().unwrap_or_default());
        assert!(kernel.contains(loc), "location {loc} of {ev} is not among the kernel's own {reason} locations {kernel:?}");
    }
}

fn wait_flow(t: &Tracer, src: &str, dst: &str, n: usize) -> bool {
    t.wait_for(Duration::from_secs(10), |evs| with_flow(evs, src, dst).len() >= n)
}

/// One netfilter DROP run against `hook_args`, dropped by an iptables-legacy rule in B's INPUT.
fn netfilter_drop_case(test: &str, hook_args: &[&str], bridged: bool) {
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5301;
    const SPORT: u16 = 40001;
    // (sender ns, sender ip, receiver ns, receiver ip, receiver interface); keep labs alive.
    let (pair, bridge);
    let (a, a_ip, b, b_ip, b_if) = if bridged {
        bridge = BridgeLab::new(2);
        let (a, _, a_ip) = &bridge.hosts[0];
        let (b, b_if, b_ip) = &bridge.hosts[1];
        (a, a_ip.clone(), b, b_ip.clone(), b_if.clone())
    } else {
        pair = PairLab::new();
        (&pair.a, pair.a_ip.clone(), &pair.b, pair.b_ip.clone(), pair.b_if.clone())
    };
    b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]);

    let klog = KernelDropLog::new(&["NETFILTER_DROP"]);
    let ip = format!("{b_ip}/32");
    let port = PORT.to_string();
    let mut a_args = args(&["--all-reasons", "--ip", &ip, "--port", &port]);
    a_args.extend_from_slice(hook_args);
    let start = now_nanos();
    let t = Tracer::start(&a_args);
    let attached = t.attached_lines().join("\n");
    if hook_args.contains(&"tracepoint") {
        assert!(!attached.contains("tp_btf"), "--hook tracepoint but attached line says tp_btf: {attached}");
    } else {
        assert!(attached.contains("tp_btf"), "default hook on this kernel should be tp_btf: {attached}");
    }

    let sent = Udp::new(&a_ip, SPORT, &b_ip, PORT).send(a);
    assert_eq!(sent, 3);
    let (src, dst) = (format!("{a_ip}:{SPORT}"), format!("{b_ip}:{PORT}"));
    wait_flow(&t, &src, &dst, 3);
    let run = t.stop();
    let end = now_nanos();
    run.assert_code(0);

    let events = run.events();
    let e =
        Expect { proto: "udp", src, dst, reason: "NETFILTER_DROP", functions: &["nf_hook_slow"], netns: b.inode(), ifname: &b_if, len: (100, 200) };
    let got = assert_drops(&events, (start, end), &e, 3);
    assert_eq!(events.len(), 3, "the --ip/--port filter let other events through:\n{}", dump(&events));
    assert_location_matches_kernel(test, &got, &klog, "NETFILTER_DROP");
    assert_clean_summary(&run);
}

#[test]
fn netfilter_drop_reports_reason_flow_and_netns() {
    netfilter_drop_case("netfilter_drop_reports_reason_flow_and_netns", &[], true);
}

#[test]
fn netfilter_drop_via_classic_tracepoint_hook() {
    netfilter_drop_case("netfilter_drop_via_classic_tracepoint_hook", &["--hook", "tracepoint"], false);
}

/// Where this kernel frees a packet an nftables rule dropped, from its own report during the
/// test: `nft_do_chain` when it freed any NETFILTER_DROP there (nothing but an nftables verdict
/// frees there, so other tests' iptables drops cannot mislead this), else `nf_hook_slow`. Both,
/// with a printed skip, when the kernel cannot name its locations.
fn nftables_drop_functions(test: &str, klog: &KernelDropLog) -> &'static [&'static str] {
    match klog.ipv4_locations("NETFILTER_DROP") {
        Ok(locations) => {
            assert!(!locations.is_empty(), "tracefs printed no IPv4 NETFILTER_DROP: the nftables rule dropped nothing");
            let in_chain = locations.iter().any(|l| l.starts_with(&format!("{NFT_FREES_IN_CHAIN}+0x")));
            let function = if in_chain { NFT_FREES_IN_CHAIN } else { NFT_FREES_AT_HOOK };
            eprintln!("kernel {}: nftables drops are freed in {function} ({locations:?})", kernel_release());
            if in_chain { &[NFT_FREES_IN_CHAIN] } else { &[NFT_FREES_AT_HOOK] }
        }
        Err(why) => {
            skipped(&format!("{test}: which of {NFT_DROP_FUNCTIONS:?} frees nftables drops"), &why);
            NFT_DROP_FUNCTIONS
        }
    }
}

#[test]
fn nftables_drop_reports_the_kernels_own_location() {
    let test = "nftables_drop_reports_the_kernels_own_location";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5302;
    const SPORT: u16 = 40011;
    let lab = PairLab::new();
    lab.b.exec_ok(&["nft", "add", "table", "inet", "trt"]);
    lab.b.exec_ok(&["nft", "add", "chain", "inet", "trt", "in", "{ type filter hook input priority 0; }"]);
    lab.b.exec_ok(&["nft", "add", "rule", "inet", "trt", "in", "udp", "dport", &PORT.to_string(), "drop"]);

    let klog = KernelDropLog::new(&["NETFILTER_DROP"]);
    let ip = format!("{}/32", lab.b_ip);
    let port = PORT.to_string();
    let start = now_nanos();
    let t = Tracer::start(&args(&["--all-reasons", "--ip", &ip, "--port", &port]));
    Udp::new(&lab.a_ip, SPORT, &lab.b_ip, PORT).send(&lab.a);
    let (src, dst) = (format!("{}:{SPORT}", lab.a_ip), format!("{}:{PORT}", lab.b_ip));
    wait_flow(&t, &src, &dst, 3);
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();
    let e = Expect {
        proto: "udp",
        src,
        dst,
        reason: "NETFILTER_DROP",
        functions: nftables_drop_functions(test, &klog),
        netns: lab.b.inode(),
        ifname: &lab.b_if,
        len: (100, 200),
    };
    let got = assert_drops(&events, (start, now_nanos()), &e, 3);
    assert_location_matches_kernel(test, &got, &klog, "NETFILTER_DROP");
    assert_clean_summary(&run);
}

#[test]
fn closed_port_reports_no_socket_for_udp_and_tcp() {
    let test = "closed_port_reports_no_socket_for_udp_and_tcp";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const UDP_PORT: u16 = 5303;
    const TCP_PORT: u16 = 5304;
    const SPORT: u16 = 40021;
    let lab = PairLab::new();
    let klog = KernelDropLog::new(&["NO_SOCKET"]);
    let ip = format!("{}/32", lab.b_ip);
    let start = now_nanos();
    let t = Tracer::start(&args(&["--all-reasons", "--ip", &ip]));

    Udp::new(&lab.a_ip, SPORT, &lab.b_ip, UDP_PORT).send(&lab.a);
    let r = tcp_connect(&lab.a, &lab.a_ip, SPORT, &lab.b_ip, TCP_PORT, 3.0);
    assert_eq!(r, "error 111", "connect to a closed TCP port should be refused");
    let udp = (format!("{}:{SPORT}", lab.a_ip), format!("{}:{UDP_PORT}", lab.b_ip));
    let tcp = (format!("{}:{SPORT}", lab.a_ip), format!("{}:{TCP_PORT}", lab.b_ip));
    wait_flow(&t, &udp.0, &udp.1, 3);
    wait_flow(&t, &tcp.0, &tcp.1, 1);
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();
    let window = (start, now_nanos());

    let e = Expect {
        proto: "udp",
        src: udp.0,
        dst: udp.1,
        reason: "NO_SOCKET",
        functions: &["__udp4_lib_rcv"],
        netns: lab.b.inode(),
        ifname: &lab.b_if,
        len: (100, 200),
    };
    let got = assert_drops(&events, window, &e, 3);
    assert_location_matches_kernel(test, &got, &klog, "NO_SOCKET");

    let e = Expect {
        proto: "tcp",
        src: tcp.0,
        dst: tcp.1,
        reason: "NO_SOCKET",
        functions: &["tcp_v4_rcv"],
        netns: lab.b.inode(),
        ifname: &lab.b_if,
        len: (20, 120),
    };
    // One SYN; a retransmitted SYN would be refused too, so allow exactly one (RST came back).
    let got = assert_drops(&events, window, &e, 1);
    assert_location_matches_kernel(test, &got, &klog, "NO_SOCKET");
    for ev in &events {
        let (s, d) = (ev["src"].as_str().unwrap_or(""), ev["dst"].as_str().unwrap_or(""));
        let host = |a: &str| a.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or_else(|| a.to_string());
        assert!(host(s) == lab.b_ip || host(d) == lab.b_ip, "--ip {ip} let through {ev}");
    }
    assert_clean_summary(&run);
}

/// Without a filter that reads the headers (here only the node scope, `--netns`), the kernel
/// side reserves the ring's record first and parses the packet straight into it (no scratch
/// copy): every field must still be right, also once the ring has wrapped and each record is
/// written over an older one (a 4 KiB ring: about 24 records).
#[test]
fn unfiltered_drops_are_written_into_the_ring_in_place() {
    let test = "unfiltered_drops_are_written_into_the_ring_in_place";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const UDP_PORT: u16 = 5309;
    const TCP_PORT: u16 = 5310;
    const SPORT: u16 = 40031;
    const ROUNDS: u16 = 12;
    let lab = PairLab::new();
    let start = now_nanos();
    let t = Tracer::start(&args(&["--netns", &lab.b.name, "--ring-buffer", "4096", "--max-rate", "off"]));
    // Rounds of three datagrams, each round from its own port and delivered before the next, so
    // the small ring wraps without filling: 36 records over ~24 slots.
    for round in 0..ROUNDS {
        assert_eq!(Udp::new(&lab.a_ip, SPORT + round, &lab.b_ip, UDP_PORT).send(&lab.a), 3);
        let src = format!("{}:{}", lab.a_ip, SPORT + round);
        assert!(wait_flow(&t, &src, &format!("{}:{UDP_PORT}", lab.b_ip), 3), "round {round}'s drops were not delivered:\n{}", dump(&t.events()));
    }
    let r = tcp_connect(&lab.a, &lab.a_ip, SPORT, &lab.b_ip, TCP_PORT, 3.0);
    assert_eq!(r, "error 111", "connect to a closed TCP port should be refused");
    let tcp = (format!("{}:{SPORT}", lab.a_ip), format!("{}:{TCP_PORT}", lab.b_ip));
    assert!(wait_flow(&t, &tcp.0, &tcp.1, 1), "the SYN's drop was not delivered:\n{}", dump(&t.events()));
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();
    let window = (start, now_nanos());
    for round in 0..ROUNDS {
        let e = Expect {
            proto: "udp",
            src: format!("{}:{}", lab.a_ip, SPORT + round),
            dst: format!("{}:{UDP_PORT}", lab.b_ip),
            reason: "NO_SOCKET",
            functions: &["__udp4_lib_rcv"],
            netns: lab.b.inode(),
            ifname: &lab.b_if,
            len: (100, 200),
        };
        for ev in assert_drops(&events, window, &e, 3) {
            assert!(ev["tunnel"].is_null(), "no tunnel: {ev}");
        }
    }
    let e = Expect {
        proto: "tcp",
        src: tcp.0,
        dst: tcp.1,
        reason: "NO_SOCKET",
        functions: &["tcp_v4_rcv"],
        netns: lab.b.inode(),
        ifname: &lab.b_if,
        len: (20, 120),
    };
    assert_drops(&events, window, &e, 1);
    assert!(events.iter().all(|ev| ev["netns"].as_u64() == Some(lab.b.inode())), "--netns: B's drops only:\n{}", dump(&events));
    assert_clean_summary(&run);
}

#[test]
fn forwarded_packet_without_route_reports_ip_innoroutes() {
    let test = "forwarded_packet_without_route_reports_ip_innoroutes";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5305;
    const SPORT: u16 = 40031;
    let lab = RoutedLab::new();
    // Subnet 2 of this lab's block is routed nowhere: the router has no route (no default).
    let nowhere = lab.addrs.host(2, 1);
    let klog = KernelDropLog::new(&["IP_INNOROUTES"]);
    let ip = format!("{nowhere}/32");
    let port = PORT.to_string();
    let start = now_nanos();
    let t = Tracer::start(&args(&["--all-reasons", "--ip", &ip, "--port", &port]));
    Udp::new(&lab.a_ip, SPORT, &nowhere, PORT).send(&lab.a);
    let (src, dst) = (format!("{}:{SPORT}", lab.a_ip), format!("{nowhere}:{PORT}"));
    wait_flow(&t, &src, &dst, 3);
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();
    let e = Expect {
        proto: "udp",
        src,
        dst,
        reason: "IP_INNOROUTES",
        functions: &["ip_error"],
        netns: lab.r.inode(),
        ifname: &lab.ra_if,
        len: (100, 200),
    };
    let got = assert_drops(&events, (start, now_nanos()), &e, 3);
    assert_eq!(events.len(), 3, "the --ip/--port filter let other events through:\n{}", dump(&events));
    assert_location_matches_kernel(test, &got, &klog, "IP_INNOROUTES");
    assert_clean_summary(&run);
}

#[test]
fn ip_and_port_filters_pass_only_the_matching_flow() {
    if !require_privileged("ip_and_port_filters_pass_only_the_matching_flow") {
        return;
    }
    let _lock = shared_lock();
    const P: u16 = 5306;
    const Q: u16 = 5307;
    let lab = BridgeLab::new(3);
    let (a, _, a_ip) = &lab.hosts[0];
    let (b, _, b_ip) = &lab.hosts[1];
    let (c, _, c_ip) = &lab.hosts[2];
    for port in [P, Q] {
        b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]);
    }
    let ip = format!("{a_ip}/32");
    let port = P.to_string();
    let start = now_nanos();
    let t = Tracer::start(&args(&["--all-reasons", "--ip", &ip, "--port", &port]));

    // Four flows at once: both match, ip only, port only, neither.
    let flows = [(a, a_ip, 41001u16, P), (a, a_ip, 41002, Q), (c, c_ip, 41003, P), (c, c_ip, 41004, Q)];
    let children: Vec<_> = flows
        .iter()
        .map(|(ns, src, sport, dport)| {
            let mut u = Udp::new(src, *sport, b_ip, *dport);
            u.count = 5;
            u.spawn(ns)
        })
        .collect();
    for ch in children {
        let out = wait_child(ch, Duration::from_secs(20));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5", "sender failed: {out:?}");
    }
    let (src, dst) = (format!("{a_ip}:41001"), format!("{b_ip}:{P}"));
    wait_flow(&t, &src, &dst, 5);
    std::thread::sleep(Duration::from_millis(500)); // give leaks a chance to show up
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();
    for ev in &events {
        check_drop(ev, (start, now_nanos()));
        assert!(ev["src"] == src.as_str() && ev["dst"] == dst.as_str(), "filter leak: {ev}");
    }
    assert_eq!(events.len(), 5, "want exactly the 5 datagrams of {src} -> {dst}:\n{}", dump(&events));
    assert!(events.iter().all(|e| e["reason"] == "NETFILTER_DROP"));
    assert_clean_summary(&run);
}

#[test]
fn lost_events_are_counted_with_smallest_ring_buffer() {
    if !require_privileged("lost_events_are_counted_with_smallest_ring_buffer") {
        return;
    }
    // Exclusive: the burst must not starve other tests' tracers of CPU.
    let _lock = exclusive_lock();
    const PORT: u16 = 5308;
    const PER_SENDER: u32 = 25_000;
    let lab = PairLab::new();
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]);
    let ip = format!("{}/32", lab.b_ip);
    let port = PORT.to_string();
    let start = now_nanos();
    // A slow consumer: stdout is not read during the burst, so the tracer's stdout pipe fills,
    // it stops draining the 4 KiB ring buffer, and the kernel side must count what it loses.
    // No rate budget: this is the ring-full path (rate_budget_* below test the budget).
    let t = Tracer::start_paused(&args(&["--all-reasons", "--ring-buffer", "4096", "--max-rate", "off", "--ip", &ip, "--port", &port]));
    let (sent, _) = flood(&lab, PORT, PER_SENDER, [41011, 41012]);
    assert!(sent >= u64::from(PER_SENDER), "senders sent only {sent} datagrams");
    std::thread::sleep(Duration::from_millis(300));
    t.resume_stdout();
    // Let the tracer drain what it still has, bounded.
    t.wait_until_quiet();
    let run = t.stop();
    run.assert_code(0);
    let s = parse_summary(&run.stderr, "drops").unwrap_or_else(|| panic!("no drops summary line on stderr:\n{}", run.stderr));
    let events = run.events();
    eprintln!("lost-events: sent {sent}, summary {s:?}, {} JSON lines", events.len());
    assert!(s.lost > 0, "a 4 KiB ring buffer with a stalled consumer must lose events: {s:?}");
    // Storm mode: the switch is said when it happens, and the lost drops are counted exactly
    // in the kernel, by reason and location.
    assert!(run.stderr.contains("tracer: drops: storm: drops come faster than they are printed"), "no storm announcement:\n{}", run.stderr);
    let header = format!("tracer: drops: storm: {0} of the {0} drops not delivered were counted in the kernel", s.lost);
    assert!(run.stderr.contains(&header), "every lost drop counted by place ({header}):\n{}", run.stderr);
    let by_place: u64 = run
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("tracer: drops:   "))
        .filter(|l| l.contains(" at "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(by_place, s.lost, "the rows add up to the lost drops:\n{}", run.stderr);
    assert!(
        run.stderr.lines().any(|l| l.starts_with("tracer: drops:   ") && (l.contains("NETFILTER_DROP at ") || l.contains("CPU_BACKLOG at "))),
        "rows name the reason and a location:\n{}",
        run.stderr
    );
    assert_eq!(s.seen, s.delivered + s.lost + s.unread.unwrap_or(0), "seen != delivered + lost (+ unread): {s:?}");
    assert_eq!(s.delivered as usize, events.len(), "delivered != number of JSON lines: {s:?}");
    assert!(s.seen <= sent, "seen {} > datagrams sent {sent}", s.seen);
    assert!(s.seen * 10 >= sent * 9, "seen {} is far below datagrams sent {sent}", s.seen);
    let window = (start, now_nanos());
    for ev in &events {
        check_drop(ev, window);
        assert_eq!(ev["dst"], format!("{}:{PORT}", lab.b_ip).as_str(), "filter leak: {ev}");
        // The rule drops them; a burst may also overflow the receive backlog first.
        assert!(["NETFILTER_DROP", "CPU_BACKLOG"].contains(&ev["reason"].as_str().unwrap_or("")), "{ev}");
    }
}

/// Programs the tracer names its drop programs with (`drop_tp_btf`, `drop_tp`).
const PROG_PREFIXES: &[&str] = &["drop_tp"];

fn bpffs_entries() -> BTreeSet<String> {
    std::fs::read_dir("/sys/fs/bpf")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Polls (bounded: program freeing is deferred in the kernel) until no program among `ids` or
/// named drop_tp* beyond `before`, and no link to them, remains; panics otherwise.
fn assert_nothing_left(what: &str, before: &BTreeSet<u64>, ids: &BTreeSet<u64>, pins_before: &BTreeSet<String>) {
    let mut last = String::new();
    for _ in 0..50 {
        let progs: Vec<_> = bpf_progs_named(PROG_PREFIXES).into_iter().filter(|p| !before.contains(&p.id)).collect();
        let gone_ids: Vec<_> = bpf_progs().into_iter().filter(|p| ids.contains(&p.id)).collect();
        let links: Vec<_> = bpf_links().into_iter().filter(|l| ids.contains(&l.prog_id)).collect();
        if progs.is_empty() && gone_ids.is_empty() && links.is_empty() {
            let pins: BTreeSet<_> = bpffs_entries().difference(pins_before).cloned().collect();
            assert!(pins.is_empty(), "{what}: tracer left pins in /sys/fs/bpf: {pins:?}");
            return;
        }
        last = format!("programs {progs:?} {gone_ids:?}, links {links:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: left behind after exit: {last}");
}

#[test]
fn no_programs_or_links_left_after_exit() {
    if !require_privileged("no_programs_or_links_left_after_exit") {
        return;
    }
    let _lock = exclusive_lock();
    let lab = PairLab::new();
    let ip = format!("{}/32", lab.b_ip);
    let before: BTreeSet<u64> = bpf_progs_named(PROG_PREFIXES).iter().map(|p| p.id).collect();
    if !before.is_empty() {
        eprintln!("WARNING: drop_tp* programs already loaded before this test (another tracer?): {before:?}");
    }
    let pins_before = bpffs_entries();

    // (hook args, how it ends, expected program name)
    let cases: [(&[&str], &str, &str); 4] = [
        (&[], "SIGINT", "drop_tp_btf"),
        (&["--hook", "tracepoint"], "SIGTERM", "drop_tp"),
        (&[], "--duration", "drop_tp_btf"),
        (&[], "SIGKILL", "drop_tp_btf"),
    ];
    for (hook, end, prog_name) in cases {
        let what = format!("hook {hook:?}, ended by {end}");
        let mut a = args(&["--ip", &ip]);
        a.extend_from_slice(hook);
        if end == "--duration" {
            a.extend_from_slice(&["--duration", "2s"]);
        }
        let t = Tracer::start(&a);
        let during: Vec<_> = bpf_progs_named(PROG_PREFIXES).into_iter().filter(|p| !before.contains(&p.id)).collect();
        assert!(during.iter().any(|p| p.name == prog_name), "{what}: while attached, bpftool shows no program named {prog_name}: {during:?}");
        let ids: BTreeSet<u64> = during.iter().map(|p| p.id).collect();
        let links: Vec<_> = bpf_links().into_iter().filter(|l| ids.contains(&l.prog_id)).collect();
        assert!(!links.is_empty(), "{what}: while attached, bpftool shows no link to {during:?}");
        match end {
            "SIGINT" => t.stop_with(libc::SIGINT).assert_code(0),
            "SIGTERM" => t.stop_with(libc::SIGTERM).assert_code(0),
            "--duration" => t.wait_exit(Duration::from_secs(15)).assert_code(0),
            _ => {
                let run = t.stop_with(libc::SIGKILL);
                assert!(run.status.code().is_none(), "{what}: expected death by SIGKILL");
            }
        }
        assert_nothing_left(&what, &before, &ids, &pins_before);
    }
}

#[test]
fn bad_input_exits_2_with_one_line_and_loads_nothing() {
    if !require_privileged("bad_input_exits_2_with_one_line_and_loads_nothing") {
        return;
    }
    let _lock = exclusive_lock();
    let before: BTreeSet<u64> = bpf_progs_named(PROG_PREFIXES).iter().map(|p| p.id).collect();
    let pins_before = bpffs_entries();
    // (args, a word the one error line must name)
    let cases: [(&[&str], &str); 5] = [
        (&["--reason", "NOT_A_REASON"], "NOT_A_REASON"),
        (&["--ip", "10.0.0.0/33"], "10.0.0.0/33"),
        (&["--port", "70000"], "70000"),
        (&["--bogus-flag"], "--bogus-flag"),
        (&["--btf", "/nonexistent"], "/nonexistent"),
    ];
    for (extra, word) in cases {
        let a = args(&[&["--duration", "3s"], extra].concat());
        let run = run_tracer(&a, Duration::from_secs(20));
        run.assert_code(2);
        let lines = run.stderr_lines();
        assert_eq!(lines.len(), 1, "{extra:?}: want exactly one stderr line, got:\n{}", run.stderr);
        assert!(lines[0].contains(word), "{extra:?}: the error line should name {word:?}: {}", lines[0]);
        assert!(run.lines.iter().all(|l| l.trim().is_empty()), "{extra:?}: stdout not empty: {:?}", run.lines);
        assert_nothing_left(&format!("{extra:?}"), &before, &BTreeSet::new(), &pins_before);
    }
}

#[test]
fn without_privileges_exits_2_with_one_line() {
    if !require_privileged("without_privileges_exits_2_with_one_line") {
        return;
    }
    let _lock = exclusive_lock();
    let before: BTreeSet<u64> = bpf_progs_named(PROG_PREFIXES).iter().map(|p| p.id).collect();
    let pins_before = bpffs_entries();
    let wrappers: [&[&str]; 2] =
        [&["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"], &["setpriv", "--inh-caps=-all", "--bounding-set=-all"]];
    for w in wrappers {
        let run = run_tracer_wrapped(w, &args(&["--duration", "3s", "--ip", "198.18.255.255/32"]), Duration::from_secs(20));
        run.assert_code(2);
        let lines = run.stderr_lines();
        assert_eq!(lines.len(), 1, "under {w:?}: want exactly one stderr line, got:\n{}", run.stderr);
        assert_nothing_left(&format!("{w:?}"), &before, &BTreeSet::new(), &pins_before);
    }
}

// ---------------------------------------------------------------------------------------------
// Conntrack's own drops (issue 6)
// ---------------------------------------------------------------------------------------------

/// Issue 6: when a namespace's conntrack table is full, new connections are dropped by
/// conntrack itself (NETFILTER_DROP in nf_hook_slow, like a rule's DROP); `tracer drops` says
/// it was conntrack, with the table's fill level, and leaves a rule's drop alone.
#[test]
fn conntrack_table_full_drops_show_the_cause_and_fill_level() {
    let test = "conntrack_table_full_drops_show_the_cause_and_fill_level";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5611;
    const UDP_PORT: u16 = 5612;
    const SPORT: u16 = 40611;
    const HELD: u64 = 6;
    let lab = PairLab::new();
    // Conntrack in B only (a rule needs it there); A tracks nothing, so only B's table fills.
    let port = PORT.to_string();
    lab.b.iptables(
        "iptables-legacy",
        &["-A", "INPUT", "-p", "tcp", "--dport", &port, "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED", "-j", "ACCEPT"],
    );
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &UDP_PORT.to_string(), "-j", "DROP"]);
    let _server = Announced::start(|a| lab.b.spawn(a), &["python3", "-c", BACKLOG_SERVER, &lab.b_ip, &port], "listening", "backlog server");

    let ip = format!("{}/32", lab.b_ip);
    let t = Tracer::start(&args(&["--ip", &ip]));
    // A rule's drop first (the table has room): no conntrack cause.
    assert_eq!(Udp::new(&lab.a_ip, SPORT, &lab.b_ip, UDP_PORT).send(&lab.a), 3);
    let (usrc, udst) = (format!("{}:{SPORT}", lab.a_ip), format!("{}:{UDP_PORT}", lab.b_ip));
    assert!(wait_flow(&t, &usrc, &udst, 3), "no drops of the rule's UDP flow {usrc} -> {udst}");

    let _max = ConntrackMax::set(HELD);
    let held = HELD.to_string();
    let _clients =
        Announced::start(|a| lab.a.spawn(a), &["python3", "-c", HOLD_CONNECTIONS, &lab.b_ip, &port, &held], "connected", "held connections");
    // B's table is full now; the kernel's own count says so.
    let stats = String::from_utf8_lossy(&lab.b.exec_ok(&["cat", "/proc/net/stat/nf_conntrack"]).stdout).into_owned();
    let entries = stats.lines().nth(1).and_then(|l| l.split_whitespace().next()).and_then(|h| u64::from_str_radix(h, 16).ok());
    assert_eq!(entries, Some(HELD), "lab: B's conntrack table should hold the {HELD} connections:\n{stats}");

    let r = TcpClient::new(&lab.a_ip, &lab.b_ip, PORT, 3.0).syncnt(1).run(|a, t| lab.a.exec_timeout(a, t), &[SPORT]).remove(0);
    assert!(r.result == "timeout" || r.result == "error 110", "the connect should get no answer: {r:?}");
    let (src, dst) = (format!("{}:{SPORT}", lab.a_ip), format!("{}:{PORT}", lab.b_ip));
    assert!(wait_flow(&t, &src, &dst, 1), "no drop of the refused connect {src} -> {dst}");
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();

    let rule: Vec<&Value> = with_flow(&events, &usrc, &udst);
    assert_eq!(rule.len(), 3, "{}", dump(&events));
    for ev in &rule {
        assert_eq!(ev["reason"], "NETFILTER_DROP", "{ev}");
        assert!(ev.get("conntrack").is_none(), "a rule's drop is not conntrack's: {ev}");
    }
    let full: Vec<&Value> = with_flow(&events, &src, &dst);
    assert!(!full.is_empty(), "{}", dump(&events));
    for ev in &full {
        assert_eq!(ev["reason"], "NETFILTER_DROP", "{ev}");
        assert_eq!(ev["netns"].as_u64(), Some(lab.b.inode()), "dropped in B: {ev}");
        assert_eq!(ev["conntrack"]["cause"], "table_full", "{ev}");
        assert_eq!(ev["conntrack"]["entries"].as_u64(), Some(HELD), "{ev}");
        assert_eq!(ev["conntrack"]["max"].as_u64(), Some(HELD), "{ev}");
    }
}

/// Sends N bare TCP ACKs (no connection behind them) from argv[1]:argv[3] to argv[2]:argv[4]
/// through a raw socket, checksummed; prints N.
const STRAY_ACKS: &str = r#"
import socket, struct, sys
src, dst, sport, dport, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
s.bind((src, 0))
for i in range(n):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, 1000 + i, 2000, 5 << 4, 0x10, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    hdr = hdr[:16] + struct.pack("!H", csum(pseudo + hdr)) + hdr[18:]
    s.sendto(hdr, (dst, 0))
print(n)
"#;

/// Issue 6: a packet conntrack finds invalid (an ACK of no connection, with
/// nf_conntrack_tcp_loose off) dropped by the usual `--ctstate INVALID -j DROP` rule is
/// marked `invalid`; a new connection's packet dropped by a rule (its entry unconfirmed, no
/// insert failure) is not conntrack's.
#[test]
fn invalid_packets_dropped_by_a_ctstate_rule_are_marked_invalid() {
    let test = "invalid_packets_dropped_by_a_ctstate_rule_are_marked_invalid";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5621;
    const UDP_PORT: u16 = 5622;
    const SPORT: u16 = 40621;
    let lab = PairLab::new();
    lab.b.exec_ok(&["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_loose=0"]);
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"]);
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &UDP_PORT.to_string(), "-j", "DROP"]);

    let t = Tracer::start(&args(&["--ip", &format!("{}/32", lab.b_ip)]));
    let acks = lab.a.exec_ok(&["python3", "-c", STRAY_ACKS, &lab.a_ip, &lab.b_ip, &SPORT.to_string(), &PORT.to_string(), "3"]);
    assert_eq!(String::from_utf8_lossy(&acks.stdout).trim(), "3", "lab: stray ACKs not sent: {acks:?}");
    assert_eq!(Udp::new(&lab.a_ip, SPORT, &lab.b_ip, UDP_PORT).send(&lab.a), 3);
    let (src, dst) = (format!("{}:{SPORT}", lab.a_ip), format!("{}:{PORT}", lab.b_ip));
    let (usrc, udst) = (format!("{}:{SPORT}", lab.a_ip), format!("{}:{UDP_PORT}", lab.b_ip));
    assert!(wait_flow(&t, &src, &dst, 3) && wait_flow(&t, &usrc, &udst, 3), "the six drops did not all arrive");
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();
    // The kernel's own count: three invalid packets in B.
    let stats = String::from_utf8_lossy(&lab.b.exec_ok(&["cat", "/proc/net/stat/nf_conntrack"]).stdout).into_owned();
    let invalid_at = stats.lines().next().and_then(|h| h.split_whitespace().position(|c| c == "invalid")).expect("an invalid column");
    let invalid: u64 = stats.lines().skip(1).filter_map(|l| l.split_whitespace().nth(invalid_at).and_then(|h| u64::from_str_radix(h, 16).ok())).sum();
    assert_eq!(invalid, 3, "lab: B's conntrack should have counted three invalid packets:\n{stats}");

    let stray = with_flow(&events, &src, &dst);
    assert_eq!(stray.len(), 3, "{}", dump(&events));
    for ev in &stray {
        assert_eq!(ev["reason"], "NETFILTER_DROP", "{ev}");
        assert_eq!(ev["netns"].as_u64(), Some(lab.b.inode()), "{ev}");
        assert_eq!(ev["conntrack"]["cause"], "invalid", "{ev}");
    }
    let rule = with_flow(&events, &usrc, &udst);
    assert_eq!(rule.len(), 3, "{}", dump(&events));
    for ev in &rule {
        assert!(ev.get("conntrack").is_none(), "a rule's drop of a new connection is not conntrack's: {ev}");
    }
}

/// `N counted` of the summary line (0 when the line has none: nothing was over the budget).
fn summary_counted(stderr: &str) -> u64 {
    let line = stderr.lines().rev().find(|l| l.starts_with("tracer: drops:") && l.contains(" seen, ")).unwrap_or_default();
    line.split(',').filter_map(|part| part.trim().strip_suffix(" counted (over --max-rate)")?.parse::<u64>().ok()).sum()
}

/// Packets the rule of `ns`'s INPUT chain that drops UDP to `port` has matched: the kernel's own
/// count of the drops a storm made.
fn rule_packets(ns: &Netns, port: u16) -> u64 {
    let out = ns.exec_ok(&["iptables-legacy", "-L", "INPUT", "-v", "-x", "-n"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let row = text.lines().find(|l| l.contains(&format!("dpt:{port}"))).unwrap_or_else(|| panic!("no rule for port {port}:\n{text}"));
    row.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("rule counter not a number: {row}"))
}

/// A bounded flood of 1-byte datagrams from `a` to `b_ip:port`, two senders at once; returns
/// how many were sent and how long it took.
fn flood(lab: &PairLab, port: u16, per_sender: u32, sports: [u16; 2]) -> (u64, Duration) {
    let t0 = std::time::Instant::now();
    let senders: Vec<_> = sports
        .iter()
        .map(|sport| {
            let mut u = Udp::new(&lab.a_ip, *sport, &lab.b_ip, port);
            u.count = per_sender;
            u.size = 1;
            u.gap = 0.0;
            u.spawn(&lab.a)
        })
        .collect();
    let mut sent = 0u64;
    for s in senders {
        let out = wait_child(s, Duration::from_secs(60));
        sent += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0);
    }
    (sent, t0.elapsed())
}

/// CPUs that can drop packets (each has its own budget).
fn cpus() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

/// A storm of NETFILTER_DROPs with a small --max-rate: the kernel delivers about the budget per
/// CPU and second, counts the rest by place, and delivered + counted is exactly what the
/// firewall rule dropped (its own counter); stderr says when counting starts and lists the
/// counts at stop.
#[test]
fn rate_budget_counts_a_storm_and_accounts_for_every_drop() {
    let test = "rate_budget_counts_a_storm_and_accounts_for_every_drop";
    if !require_privileged(test) {
        return;
    }
    let _lock = exclusive_lock();
    const PORT: u16 = 5310;
    const RATE: u64 = 200;
    let lab = PairLab::new();
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]);
    let ip = format!("{}/32", lab.b_ip);
    let port = PORT.to_string();
    let rate = RATE.to_string();
    let t = Tracer::start(&args(&["--max-rate", &rate, "--ip", &ip, "--port", &port]));
    let (sent, took) = flood(&lab, PORT, 50_000, [41021, 41022]);
    assert!(sent >= 50_000, "senders sent only {sent} datagrams");
    // The watcher looks every second; the budget's report comes at stop.
    std::thread::sleep(Duration::from_millis(1500));
    let run = t.stop();
    run.assert_code(0);
    let dropped = rule_packets(&lab.b, PORT);
    let s = parse_summary(&run.stderr, "drops").unwrap_or_else(|| panic!("no drops summary:\n{}", run.stderr));
    let counted = summary_counted(&run.stderr);
    let events = run.events();
    eprintln!("{test}: sent {sent} in {took:?}, rule dropped {dropped}, summary {s:?}, counted {counted}, {} JSON lines", events.len());
    assert!(dropped * 10 >= sent * 9, "the rule dropped {dropped} of {sent}: the lab did not make the storm");
    assert_eq!(s.lost, 0, "the budget keeps the default ring from filling: {s:?}");
    assert_eq!(s.unread, None, "{s:?}");
    assert_eq!(s.seen, s.delivered + counted, "seen = delivered + counted: {s:?}, counted {counted}");
    assert_eq!(s.seen, dropped, "every drop the rule made is seen (delivered or counted): {s:?}");
    assert_eq!(s.delivered as usize, events.len(), "delivered = JSON lines: {s:?}");
    assert!(counted > 0, "a storm over the budget is counted: {s:?}\n{}", run.stderr);
    // Each CPU delivers at most RATE per window of one second, and a window starts with the
    // first drop after the last one ended.
    let windows = took.as_secs() + 2;
    assert!(s.delivered <= RATE * cpus() * windows, "delivered {} > {RATE}/s x {} CPUs x {windows} windows", s.delivered, cpus());
    assert!(s.delivered >= RATE, "at least one full window is delivered: {s:?}");
    for ev in &events {
        assert_eq!(ev["reason"], "NETFILTER_DROP", "{ev}");
        assert_eq!(ev["dst"], format!("{}:{PORT}", lab.b_ip), "{ev}");
    }
    assert!(
        run.stderr.contains(&format!("tracer: drops: rate budget: more than {RATE} drops/s of one reason at one place on one CPU")),
        "the switch to counting is said once:\n{}",
        run.stderr
    );
    assert_eq!(run.stderr.matches("drops/s of one reason at one place").count(), 1, "said once:\n{}", run.stderr);
    let header = format!("tracer: drops: rate budget: {counted} drops over --max-rate {RATE} ");
    assert!(run.stderr.contains(&header), "the stop report ({header}):\n{}", run.stderr);
    let rows: Vec<&str> = run.stderr.lines().filter_map(|l| l.strip_prefix("tracer: drops:   ")).collect();
    let by_place: u64 = rows.iter().filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok()).sum();
    assert_eq!(by_place, counted, "the rows add up to the counted drops:\n{}", run.stderr);
    let netns = lab.b.inode().to_string();
    assert!(
        rows.iter().all(|l| l.contains("NETFILTER_DROP at nf_hook_slow+0x") && l.ends_with(&format!("(netns {netns})"))),
        "each row names the reason, the location and the namespace:\n{}",
        run.stderr
    );
}

/// `--max-rate off`: no budget, every drop delivered (or, if the ring fills, lost and counted
/// as before); nothing is counted by the budget.
#[test]
fn rate_budget_off_delivers_every_drop() {
    let test = "rate_budget_off_delivers_every_drop";
    if !require_privileged(test) {
        return;
    }
    let _lock = exclusive_lock();
    const PORT: u16 = 5311;
    let lab = PairLab::new();
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]);
    let ip = format!("{}/32", lab.b_ip);
    let port = PORT.to_string();
    let t = Tracer::start(&args(&["--max-rate", "off", "--ip", &ip, "--port", &port]));
    let (sent, _) = flood(&lab, PORT, 10_000, [41023, 41024]);
    t.wait_until_quiet();
    let run = t.stop();
    run.assert_code(0);
    let dropped = rule_packets(&lab.b, PORT);
    let s = parse_summary(&run.stderr, "drops").unwrap_or_else(|| panic!("no drops summary:\n{}", run.stderr));
    eprintln!("{test}: sent {sent}, rule dropped {dropped}, summary {s:?}");
    assert!(dropped * 10 >= sent * 9, "the rule dropped {dropped} of {sent}");
    assert_eq!(summary_counted(&run.stderr), 0, "no budget, nothing counted by it:\n{}", run.stderr);
    assert!(!run.stderr.contains("tracer: drops: rate budget"), "{}", run.stderr);
    assert_eq!(s.seen, dropped, "{s:?}");
    assert_eq!(s.seen, s.delivered + s.lost + s.unread.unwrap_or(0), "{s:?}");
    assert_eq!(s.delivered as usize, run.events().len(), "{s:?}");
    assert!(s.delivered * 2 >= dropped, "with no budget the drops are delivered (the 4M ring holds ~25,000): {s:?}");
}

/// The budget applies after the filters: a storm of another flow (same reason, same location,
/// same namespace) does not use the budget of the flow the user asked about, whose every drop
/// is delivered while the storm runs.
#[test]
fn rate_budget_of_a_filtered_flow_is_not_used_by_another_flows_storm() {
    let test = "rate_budget_of_a_filtered_flow_is_not_used_by_another_flows_storm";
    if !require_privileged(test) {
        return;
    }
    let _lock = exclusive_lock();
    const STORM: u16 = 5312;
    const ASKED: u16 = 5313;
    const ASKED_COUNT: u32 = 40;
    let lab = PairLab::new();
    for port in [STORM, ASKED] {
        lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]);
    }
    let ip = format!("{}/32", lab.b_ip);
    let port = ASKED.to_string();
    // A budget the asked-for flow (about 40/s) stays within, and the storm is far over.
    let t = Tracer::start(&args(&["--max-rate", "100", "--ip", &ip, "--port", &port]));
    // The asked-for flow: 40 datagrams over about a second, while the storm runs.
    let mut asked = Udp::new(&lab.a_ip, 41026, &lab.b_ip, ASKED);
    asked.count = ASKED_COUNT;
    asked.gap = 0.025;
    let asked = asked.spawn(&lab.a);
    let (sent, _) = flood(&lab, STORM, 50_000, [41027, 41028]);
    let out = wait_child(asked, Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ASKED_COUNT.to_string(), "asked-for sender: {out:?}");
    let (src, dst) = (format!("{}:41026", lab.a_ip), format!("{}:{ASKED}", lab.b_ip));
    t.wait_for(Duration::from_secs(5), |evs| with_flow(evs, &src, &dst).len() >= ASKED_COUNT as usize);
    let run = t.stop();
    run.assert_code(0);
    let storm_dropped = rule_packets(&lab.b, STORM);
    let s = parse_summary(&run.stderr, "drops").unwrap_or_else(|| panic!("no drops summary:\n{}", run.stderr));
    let counted = summary_counted(&run.stderr);
    let events = run.events();
    eprintln!("{test}: storm {sent} sent, {storm_dropped} dropped; asked-for summary {s:?}, counted {counted}");
    assert!(storm_dropped * 10 >= sent * 9, "the storm happened: {storm_dropped} of {sent}");
    assert!(events.iter().all(|e| e["src"] == src.as_str() && e["dst"] == dst.as_str()), "filter leak:\n{}", dump(&events));
    // Had the storm's drops (same reason, location and namespace) reached the budget first,
    // the asked-for flow's would have been counted instead of delivered.
    assert_eq!(counted, 0, "the storm used the asked-for flow's budget: {s:?}\n{}", run.stderr);
    assert_eq!((s.seen, s.delivered, s.lost), (u64::from(ASKED_COUNT), u64::from(ASKED_COUNT), 0), "every asked-for drop delivered: {s:?}");
}

/// `diagnose` counts the drops the budget kept from it: the netfilter-drop finding's `drops` is
/// what the rule dropped, `counted` how many of those came as counts.
#[test]
fn rate_budget_counted_drops_are_in_the_diagnose_finding() {
    let test = "rate_budget_counted_drops_are_in_the_diagnose_finding";
    if !require_privileged(test) {
        return;
    }
    let _lock = exclusive_lock();
    const PORT: u16 = 5314;
    let lab = PairLab::new();
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]);
    let ip = format!("{}/32", lab.b_ip);
    let port = PORT.to_string();
    let t = Tracer::start(&[
        "diagnose",
        "-o",
        "json",
        "--probes",
        "drops",
        "--pods-from",
        "none",
        "--duration",
        "6s",
        "--max-rate",
        "50",
        "--ip",
        &ip,
        "--port",
        &port,
    ]);
    let (sent, _) = flood(&lab, PORT, 30_000, [41029, 41030]);
    let run = t.wait_exit(Duration::from_secs(30));
    run.assert_code(0);
    let dropped = rule_packets(&lab.b, PORT);
    let report: Value = serde_json::from_str(run.lines.iter().find(|l| l.starts_with('{')).map_or("", String::as_str))
        .unwrap_or_else(|e| panic!("no report ({e}):\n{:?}\n{}", run.lines, run.stderr));
    eprintln!("{test}: sent {sent}, rule dropped {dropped}, report {report}");
    let finding = report["findings"].as_array().and_then(|f| f.iter().find(|f| f["code"] == "netfilter-drop")).unwrap_or_else(|| panic!("{report}"));
    let counted = finding["evidence"]["counted"].as_u64().unwrap_or(0);
    assert!(counted > 0, "the finding says how many drops were counted: {finding}");
    assert_eq!(finding["evidence"]["drops"].as_u64(), Some(dropped), "the finding's count is every drop the rule made: {finding}");
    assert_eq!(report["counted"].as_u64(), Some(counted), "{report}");
    assert_eq!(report["lost"].as_u64(), Some(0), "{report}");
}

#[test]
fn rate_budget_bad_values_exit_2_with_one_line() {
    if !require_privileged("rate_budget_bad_values_exit_2_with_one_line") {
        return;
    }
    let _lock = shared_lock();
    for bad in ["--max-rate=-1", "--max-rate=lots", "--max-rate=1e3", "--max-rate=5000000000", "--max-rate="] {
        assert_refused(&["drops", bad, "--duration", "3s"], &["--max-rate"]);
    }
    assert_refused(&["watch", "--max-rate", "fast", "--duration", "3s"], &["--max-rate"]);
    assert_refused(&["diagnose", "--max-rate=-5", "--duration", "3s"], &["--max-rate"]);
    assert_refused(&["serve", "--max-rate", "x", "--duration", "3s"], &["--max-rate"]);
}

/// `serve`: the drops the budget counted still count in `tracer_drops_total` (under their reason
/// and function, with no pod), so the metric's total is every drop the rule made; and
/// `tracer_events_counted_total` is the kernel's own count of them.
#[test]
fn rate_budget_counted_drops_are_in_serve_metrics() {
    let test = "rate_budget_counted_drops_are_in_serve_metrics";
    if !require_privileged(test) {
        return;
    }
    let _lock = exclusive_lock();
    const PORT: u16 = 5315;
    let lab = PairLab::new();
    lab.a.ip(&["link", "set", "lo", "up"]);
    lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &PORT.to_string(), "-j", "DROP"]);
    let ip = format!("{}/32", lab.b_ip);
    let port = PORT.to_string();
    let addr = "127.0.0.1:19481";
    let args = ["serve", "--metrics", addr, "--pods-from", "none", "--quiet", "--probes", "drops", "--max-rate", "50", "--ip", &ip, "--port", &port];
    let t = Tracer::start_in(&lab.a, &args);
    let (sent, _) = flood(&lab, PORT, 30_000, [41031, 41032]);
    let dropped = rule_packets(&lab.b, PORT);
    let total = |text: &str, metric: &str| -> f64 {
        text.lines().filter(|l| l.starts_with(&format!("{metric}{{"))).filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok()).sum()
    };
    // The metrics are copied from the kernel every second: scrape until they have caught up.
    let mut text = String::new();
    for _ in 0..40 {
        let out = lab.a.exec_ok(&[
            "python3",
            "-c",
            "import sys, urllib.request; print(urllib.request.urlopen('http://' + sys.argv[1] + '/metrics', timeout=5).read().decode())",
            addr,
        ]);
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        if total(&text, "tracer_drops_total") >= dropped as f64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let run = t.stop();
    run.assert_code(0);
    let counted = summary_counted(&run.stderr);
    eprintln!("{test}: sent {sent}, rule dropped {dropped}, counted {counted}");
    assert!(counted > 0, "the storm was over the budget:\n{}", run.stderr);
    assert_eq!(total(&text, "tracer_drops_total"), dropped as f64, "tracer_drops_total is every drop the rule made:\n{text}");
    assert_eq!(total(&text, "tracer_events_counted_total"), counted as f64, "tracer_events_counted_total is the kernel's count:\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with("tracer_drops_total{") && l.contains("reason=\"NETFILTER_DROP\"") && l.contains("pod=\"\"")),
        "the counted drops are under their reason with no pod:\n{text}"
    );
}
