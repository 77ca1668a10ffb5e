//! Privileged integration tests for `tracer mtu`: the path-MTU black hole reproduced between
//! namespaces, the real binary. Run as root:
//! `cargo build --release -p tracer && cargo test --release -p tracer-tests --test mtu`.
//!
//! The lab: client `a` (MTU 1500) -> router `r` (forwarding; its link towards the server at MTU
//! 1400 on the router's side) -> server `b` (MTU 1500, so it advertises a 1460-byte MSS and the
//! client's full-size segments meet the 1400 hop). TCP sets DF (IPv6 never fragments on the
//! way). Kernel behaviour these tests rely on (measured on 6.18):
//! - ip_forward / ip6_forward meet a packet larger than the next hop's MTU: they send ICMP 3/4
//!   (icmp:icmp_send, kernel >= 6.10) or ICMPv6 2 (no tracepoint) with MTU 1400 and free the
//!   packet with reason PKT_TOO_BIG (where the kernel has that reason; checked through a private
//!   tracefs instance, [`KernelDropLog`]). Without icmp_send, the error is seen leaving the
//!   router's traced device (whether the kernel has it is read from its BTF).
//! - With the error reaching the client, its TCP lowers the path MTU and the transfer completes.
//! - With the error dropped by iptables in the client's INPUT (reason NETFILTER_DROP), the
//!   client retransmits full-size segments and the transfer stalls (tcp_mtu_probing is off by
//!   default): the send times out.
//!
//! Every lab is private (namespaces, 198.18.0.0/15 block and an fd54:7200::/32 prefix derived
//! from it), every tracer is filtered to the lab's addresses, every wait is bounded, and
//! everything is removed on drop, also on panic.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::time::Duration;

use tracer_tests::*;

const BYTES: u64 = 2_000_000;
const SMALL_MTU: u32 = 1400;
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The IPv6 address of the lab host whose IPv4 address is `v4` (198.X.Y.H -> fd54:7200:X:Y::H):
/// as private to the lab as its IPv4 block. Written the way tracer prints addresses (RFC 5952): a lab in 198.18.0.x gives
/// `fd54:7200:18::1`, not `fd54:7200:18:0::1`, which no event would ever match.
fn v6(v4: &str) -> String {
    let o: Vec<&str> = v4.split('.').collect();
    let text = format!("fd54:7200:{}:{}::{}", o[1], o[2], o[3]);
    text.parse::<std::net::Ipv6Addr>().map_or(text, |a| a.to_string())
}

fn ep(ip: &str, port: u16) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

/// The ifindex of `dev` in `ns`.
fn ifindex(ns: &Netns, dev: &str) -> u64 {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':').next().and_then(|n| n.trim().parse().ok()).unwrap_or_else(|| panic!("ifindex of {dev}: {text}"))
}

/// [`RoutedLab`] with the router's side of the server link at [`SMALL_MTU`] and IPv6 too.
struct MtuLab {
    lab: RoutedLab,
    a6: String,
    ra6: String,
    b6: String,
}

impl MtuLab {
    fn new() -> MtuLab {
        let lab = RoutedLab::new();
        lab.r.ip(&["link", "set", &lab.rb_if, "mtu", &SMALL_MTU.to_string()]);
        let (a6, ra6, rb6, b6) = (v6(&lab.a_ip), v6(&lab.ra_ip), v6(&lab.rb_ip), v6(&lab.b_ip));
        for (ns, dev, addr) in [(&lab.a, &lab.a_if, &a6), (&lab.r, &lab.ra_if, &ra6), (&lab.r, &lab.rb_if, &rb6), (&lab.b, &lab.b_if, &b6)] {
            ns.ip(&["addr", "add", &format!("{addr}/64"), "dev", dev, "nodad"]);
        }
        lab.a.ip(&["-6", "route", "add", "default", "via", &ra6]);
        lab.b.ip(&["-6", "route", "add", "default", "via", &rb6]);
        lab.r.sysctl("net.ipv6.conf.all.forwarding", "1");
        MtuLab { lab, a6, ra6, b6 }
    }

    /// (client, router's client-side, server) addresses of `family` (4 or 6).
    fn addrs(&self, family: u8) -> (String, String, String) {
        let l = &self.lab;
        if family == 6 { (self.a6.clone(), self.ra6.clone(), self.b6.clone()) } else { (l.a_ip.clone(), l.ra_ip.clone(), l.b_ip.clone()) }
    }

    /// `NETNS:DEV` for --iface.
    fn iface(ns: &Netns, dev: &str) -> String {
        format!("{}:{dev}", ns.name)
    }

    /// Filters every run to this lab: the client's addresses (the flows it sends, and the ICMP
    /// errors addressed to it).
    fn ip_filters(&self) -> Vec<String> {
        vec!["--ip".into(), format!("{}/32", self.lab.a_ip), "--ip".into(), format!("{}/128", self.a6)]
    }

    /// Drops frag-needed (or packet-too-big) on its way into the client.
    fn filter_icmp(&self, family: u8) {
        if family == 6 {
            self.lab.a.iptables("ip6tables-legacy", &["-A", "INPUT", "-p", "icmpv6", "--icmpv6-type", "packet-too-big", "-j", "DROP"]);
        } else {
            self.lab.a.iptables("iptables-legacy", &["-A", "INPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]);
        }
    }
}

fn json_args(extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["mtu", "-o", "json"].iter().map(|s| s.to_string()).collect();
    v.extend_from_slice(extra);
    v
}

/// One bulk TCP transfer of [`BYTES`] from the client to the server on `port`, with a per-
/// operation timeout of `timeout` seconds; returns the sender's line (`ok N SECONDS` or
/// `error ...`).
fn transfer(lab: &MtuLab, family: u8, sport: u16, port: u16, timeout: f64) -> String {
    let (client, _, server) = lab.addrs(family);
    let _sink = TcpSink::start(|x| lab.lab.b.spawn(x), &server, &[port]);
    let child = lab.lab.a.spawn(&argv_refs(&tcp_send_argv(&client, sport, &server, port, BYTES, timeout)));
    let out = wait_child(child, Duration::from_secs_f64(timeout * 3.0 + 20.0));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The tracer's mtu events of `event` for the flow client:sport -> server:port.
fn of<'a>(events: &'a [Value], event: &str, src: &str, dst: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == event && e["src"] == src && e["dst"] == dst).collect()
}

/// Common checks of a `kind: mtu` event, and the flow's protocol.
fn check_mtu(ev: &Value, window: (i128, i128)) {
    check_common(ev, window);
    assert_eq!(ev["kind"], "mtu", "{ev}");
    assert_eq!(ev["proto"], "tcp", "{ev}: the flow is the TCP connection, not the ICMP error");
    assert!(ev["len"].is_u64() && (ev["mtu"].is_u64() || ev["mtu"].is_null()), "{ev}: len/mtu types");
}

/// Starts `tracer mtu` on the lab: tc on the client's device (errors arriving) and on the
/// router's client-side device (errors it sends back, for ICMPv6), filtered to the client.
fn start(lab: &MtuLab, extra: &[String]) -> Tracer {
    let mut args = lab.ip_filters();
    args.extend(["--iface".into(), MtuLab::iface(&lab.lab.a, &lab.lab.a_if)]);
    args.extend(["--iface".into(), MtuLab::iface(&lab.lab.r, &lab.lab.ra_if)]);
    args.extend_from_slice(extra);
    let args = json_args(&args);
    Tracer::start(&argv_refs(&args))
}

/// The frag-needed / packet-too-big the router sent for the flow: MTU 1400, the full-size
/// segment's length, the small device; and the PKT_TOO_BIG drop of the segment where the
/// kernel reports one (`kernel` was started before the traffic).
fn assert_sent(lab: &MtuLab, events: &[Value], family: u8, flow: (&str, &str), window: (i128, i128), kernel: &KernelDropLog, tc_only: bool) {
    let (src, dst) = flow;
    let sent = of(events, "frag_needed_sent", src, dst);
    assert!(!sent.is_empty(), "no frag_needed_sent for {src} -> {dst}:\n{}", dump(events));
    for ev in &sent {
        check_mtu(ev, window);
        assert_eq!(ev["mtu"], SMALL_MTU, "{ev}");
        assert!(ev["len"].as_u64().is_some_and(|l| l > u64::from(SMALL_MTU)), "{ev}: the packet that did not fit");
        if family == 4 && !tc_only && kernel_btf_has("btf_trace_icmp_send") {
            // icmp:icmp_send: the device is the route's, the one with the small MTU.
            assert_eq!((ev["hook"].as_str(), ev["ifname"].as_str()), (Some("icmp_send"), Some(lab.lab.rb_if.as_str())), "{ev}");
            assert_eq!(ev["netns"], lab.lab.r.inode(), "{ev}");
        } else {
            // No ICMPv6 tracepoint (nor an ICMP one before 6.10): seen leaving the router's
            // traced device towards the client.
            assert_eq!(ev["hook"], "tc_egress", "{ev}");
            assert_eq!(ev["ifindex"], ifindex(&lab.lab.r, &lab.lab.ra_if), "{ev}");
            assert_eq!(ev["icmp_src"], lab.addrs(family).1, "{ev}");
        }
    }
    // The forwarded packet itself was dropped with PKT_TOO_BIG at the router, on kernels that
    // give that reason there.
    if !kernel.drops().iter().any(|d| d.reason == "PKT_TOO_BIG") {
        skipped(&format!("too_big_drop for {src} -> {dst}"), "the kernel reported no PKT_TOO_BIG drop (no such reason at ip_forward here)");
        return;
    }
    let drops = of(events, "too_big_drop", src, dst);
    assert!(!drops.is_empty(), "no too_big_drop for {src} -> {dst}:\n{}", dump(events));
    for ev in drops {
        check_mtu(ev, window);
        assert_eq!((ev["reason"].as_str(), ev["mtu"].as_u64()), (Some("PKT_TOO_BIG"), Some(u64::from(SMALL_MTU))), "{ev}");
        assert_eq!(ev["netns"], lab.lab.r.inode(), "{ev}");
    }
}

/// `sent_hook`: the `--sent-hook` to run with (None: the default, auto).
fn frag_needed_reaches_the_client(family: u8, sent_hook: Option<&str>, test: &str) {
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let lab = MtuLab::new();
    let (client, router, server) = lab.addrs(family);
    let (sport, port) = (41000 + u16::from(family), 5201);
    let t0 = now_nanos();
    let kernel = KernelDropLog::new(&[]);
    let extra: Vec<String> = sent_hook.map(|h| vec!["--sent-hook".to_string(), h.to_string()]).unwrap_or_default();
    let t = start(&lab, &extra);
    let result = transfer(&lab, family, sport, port, 10.0);
    assert!(result.starts_with(&format!("ok {BYTES} ")), "{test}: the transfer must complete once the path MTU shrank: {result}");
    let (src, dst) = (ep(&client, sport), ep(&server, port));
    assert!(
        t.wait_for(Duration::from_secs(5), |e| !of(e, "frag_needed_received", &src, &dst).is_empty()),
        "{test}: no frag_needed_received:\n{}",
        dump(&t.events())
    );
    let run = t.stop();
    run.assert_code(0);
    let window = (t0, now_nanos());
    let events = run.events();
    assert_sent(&lab, &events, family, (&src, &dst), window, &kernel, sent_hook == Some("tc"));
    let received = of(&events, "frag_needed_received", &src, &dst);
    for ev in &received {
        check_mtu(ev, window);
        assert_eq!((ev["hook"].as_str(), ev["mtu"].as_u64()), (Some("tc_ingress"), Some(u64::from(SMALL_MTU))), "{ev}");
        assert_eq!(
            (ev["icmp_src"].as_str(), ev["icmp_dst"].as_str()),
            (Some(router.as_str()), Some(client.as_str())),
            "{ev}: who reported the MTU to whom"
        );
        assert_eq!(ev["ifindex"], ifindex(&lab.lab.a, &lab.lab.a_if), "{ev}");
    }
    assert!(of(&events, "frag_needed_dropped", &src, &dst).is_empty(), "nothing filters ICMP here:\n{}", dump(&events));
    let summary = parse_summary(&run.stderr, "mtu").unwrap_or_else(|| panic!("no summary:\n{}", run.stderr));
    assert_eq!((summary.delivered, summary.lost), (summary.seen, 0), "{}", run.stderr);
}

#[test]
fn ipv4_frag_needed_reaches_the_client_and_the_transfer_completes() {
    frag_needed_reaches_the_client(4, None, "ipv4_frag_needed_reaches_the_client_and_the_transfer_completes");
}

/// What kernels without icmp:icmp_send get: the router's frag-needed seen leaving its traced
/// device (forced here with --sent-hook tc, so every kernel runs the fallback).
#[test]
fn ipv4_frag_needed_sent_is_seen_at_tc_egress_without_icmp_send() {
    frag_needed_reaches_the_client(4, Some("tc"), "ipv4_frag_needed_sent_is_seen_at_tc_egress_without_icmp_send");
}

#[test]
fn ipv6_packet_too_big_reaches_the_client_and_the_transfer_completes() {
    frag_needed_reaches_the_client(6, None, "ipv6_packet_too_big_reaches_the_client_and_the_transfer_completes");
}

fn filtered_error_is_a_black_hole(family: u8, test: &str) {
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let lab = MtuLab::new();
    lab.filter_icmp(family);
    let (client, router, server) = lab.addrs(family);
    // The client and server as pods (file source): the events name them, and --pod selects.
    let file = TempFile(std::env::temp_dir().join(format!("{}-pods.json", unique_name("mtu"))));
    std::fs::write(&file.0, pods_file(&[("client", &client), ("server", &server)])).expect("write pods file");
    let (sport, port) = (42000 + u16::from(family), 5202);
    let t0 = now_nanos();
    let pods_from = format!("file:{}", file.0.display());
    let kernel = KernelDropLog::new(&[]);
    let t = start(&lab, &["--pods-from".into(), pods_from, "--pod".into(), "lab/client".into()]);
    let result = transfer(&lab, family, sport, port, 4.0);
    assert!(!result.starts_with("ok"), "{test}: the transfer must stall when frag-needed is filtered: {result}");
    let (src, dst) = (ep(&client, sport), ep(&server, port));
    let run = t.stop();
    run.assert_code(0);
    let window = (t0, now_nanos());
    let events = run.events();
    assert_sent(&lab, &events, family, (&src, &dst), window, &kernel, false);
    let dropped = of(&events, "frag_needed_dropped", &src, &dst);
    assert!(!dropped.is_empty(), "{test}: no frag_needed_dropped:\n{}", dump(&events));
    for ev in &dropped {
        check_mtu(ev, window);
        assert_eq!((ev["reason"].as_str(), ev["hook"].as_str()), (Some("NETFILTER_DROP"), Some("kfree_skb")), "{ev}");
        assert_eq!(ev["mtu"], SMALL_MTU, "{ev}");
        assert_eq!(ev["netns"], lab.lab.a.inode(), "{ev}: dropped in the client's namespace");
        assert_eq!((ev["icmp_src"].as_str(), ev["icmp_dst"].as_str()), (Some(router.as_str()), Some(client.as_str())), "{ev}");
        assert_eq!((ev["src_pod"].as_str(), ev["dst_pod"].as_str()), (Some("lab/client"), Some("lab/server")), "{ev}");
    }
    // The client kept sending full-size segments: the router kept answering.
    assert!(of(&events, "frag_needed_sent", &src, &dst).len() >= 2, "{test}: one error per retransmit:\n{}", dump(&events));
}

#[test]
fn ipv4_filtered_frag_needed_is_a_black_hole_tied_to_the_client() {
    filtered_error_is_a_black_hole(4, "ipv4_filtered_frag_needed_is_a_black_hole_tied_to_the_client");
}

#[test]
fn ipv6_filtered_packet_too_big_is_a_black_hole_tied_to_the_client() {
    filtered_error_is_a_black_hole(6, "ipv6_filtered_packet_too_big_is_a_black_hole_tied_to_the_client");
}

/// A UDP datagram of `size` payload bytes with DF from `src` to `dst:port` inside `ns`.
const DF_SEND: &str = r#"
import socket, sys
src, dst, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO
s.bind((src, 0))
try:
    s.sendto(b"x" * size, (dst, port))
    print("sent")
except OSError as e:
    print("error %d" % e.errno)
"#;

#[test]
fn oversize_packet_on_a_traced_device_has_its_length_and_the_device_mtu() {
    if !require_privileged("oversize_packet_on_a_traced_device_has_its_length_and_the_device_mtu") {
        return;
    }
    let _lock = shared_lock();
    // A route MTU larger than its device's (a classic misconfiguration): the stack builds
    // 1500-byte packets and hands them to a device at 1400.
    let lab = PairLab::new();
    lab.a.ip(&["link", "set", &lab.a_if, "mtu", &SMALL_MTU.to_string()]);
    lab.a.ip(&["route", "replace", &lab.addrs.net(0), "dev", &lab.a_if, "mtu", "1500"]);
    let t0 = now_nanos();
    let args = json_args(&[
        "--pods-from".into(),
        "none".into(),
        "--ip".into(),
        format!("{}/32", lab.b_ip),
        "--iface".into(),
        format!("{}:{}", lab.a.name, lab.a_if),
    ]);
    let t = Tracer::start(&argv_refs(&args));
    let out = lab.a.exec_ok(&["python3", "-c", DF_SEND, &lab.a_ip, &lab.b_ip, "9", "1472"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sent");
    let found = t.wait_for(Duration::from_secs(5), |e| e.iter().any(|e| e["event"] == "oversize"));
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();
    assert!(found, "no oversize event:\n{}", dump(&events));
    let ev = events.iter().find(|e| e["event"] == "oversize").expect("oversize");
    check_common(ev, (t0, now_nanos()));
    assert_eq!((ev["len"].as_u64(), ev["mtu"].as_u64(), ev["dev_mtu"].as_u64()), (Some(1500), Some(1400), Some(1400)), "{ev}");
    assert_eq!((ev["proto"].as_str(), ev["hook"].as_str()), (Some("udp"), Some("tc_egress")), "{ev}");
    assert_eq!((ev["ifname"].as_str(), ev["netns"].as_u64()), (Some(lab.a_if.as_str()), Some(lab.a.inode())), "{ev}");
    assert!(ev["src"].as_str().is_some_and(|s| s.starts_with(&format!("{}:", lab.a_ip))), "{ev}");
}

#[test]
fn device_mtus_and_their_mismatch_are_listed_at_start() {
    if !require_privileged("device_mtus_and_their_mismatch_are_listed_at_start") {
        return;
    }
    let _lock = shared_lock();
    let lab = MtuLab::new();
    // Filtered to this lab (which sends nothing): other tests' events stay out of stdout.
    let mut extra = lab.ip_filters();
    extra.extend(["--pods-from", "none", "--duration", "1s", "--iface"].map(String::from));
    extra.push(MtuLab::iface(&lab.lab.r, &lab.lab.rb_if));
    let args = json_args(&extra);
    let run = run_tracer(&argv_refs(&args), RUN_TIMEOUT);
    run.assert_code(0);
    let r = &lab.lab;
    let devices = format!("tracer: mtu: devices in network namespace {}: ", r.r.name);
    let line = run.stderr.lines().find(|l| l.starts_with(&devices)).unwrap_or_else(|| panic!("no device line:\n{}", run.stderr));
    assert!(line.contains(&format!("{} 1400 (veth, traced)", r.rb_if)), "{line}");
    assert!(line.contains(&format!("{} 1500 (veth)", r.ra_if)), "{line}");
    let mismatch = format!("tracer: mtu: mismatch (info): devices at different MTUs: 1500 ({}), 1400 ({})", r.ra_if, r.rb_if);
    assert!(run.stderr.contains(&mismatch), "want {mismatch:?} in:\n{}", run.stderr);
    assert!(run.lines.iter().all(|l| l.trim().is_empty()), "facts go to stderr, stdout stays events: {:?}", run.lines);
}

#[test]
fn bad_input_exits_2_with_one_line() {
    if !require_privileged("bad_input_exits_2_with_one_line") {
        return;
    }
    let _lock = shared_lock();
    let lab = PairLab::new();
    let no_dev = format!("{}:nosuchdev0", lab.a.name);
    let no_ns = format!("{}x:eth0", lab.a.name);
    let cases: Vec<(Vec<&str>, &[&str])> = vec![
        (vec!["mtu", "--iface", &no_dev], &["nosuchdev0", "no device"]),
        (vec!["mtu", "--iface", &no_ns], &["network namespace", "No such file"]),
        (vec!["mtu", "--iface", ":eth0"], &["--iface"]),
        (vec!["mtu", "--iface", "a/b"], &["--iface"]),
        (vec!["mtu", "--port", "0"], &["--port"]),
        (vec!["mtu", "--duration", "soon"], &["--duration"]),
        (vec!["mtu", "--sent-hook", "kprobe"], &["--sent-hook", "kprobe"]),
    ];
    for (args, words) in &cases {
        let mut args = args.clone();
        args.extend(["--pods-from", "none"]);
        assert_refused(&args, words);
    }
}

/// tc state of `dev` in `ns`: its filters and any clsact qdisc (empty when nothing is attached
/// the old way; TCX links are checked through bpftool by [`assert_nothing_left_after`]).
fn tc_state(ns: &Netns, dev: &str) -> String {
    let mut state = String::new();
    for args in [
        vec!["tc", "filter", "show", "dev", dev, "ingress"],
        vec!["tc", "filter", "show", "dev", dev, "egress"],
        vec!["tc", "qdisc", "show", "dev", dev, "clsact"],
    ] {
        state.push_str(&String::from_utf8_lossy(&ns.exec_ok(&args).stdout));
    }
    state
}

#[test]
fn nothing_left_attached_after_exit() {
    if !require_privileged("nothing_left_attached_after_exit") {
        return;
    }
    let _lock = shared_lock();
    let lab = PairLab::new();
    let before = (tc_state(&lab.a, &lab.a_if), tc_state(&lab.b, &lab.b_if));
    let ip = format!("{}/32", lab.a_ip);
    let (ia, ib) = (format!("{}:{}", lab.a.name, lab.a_if), format!("{}:{}", lab.b.name, lab.b_if));
    let base = ["--pods-from", "none", "--ip", &ip, "--iface", &ia, "--iface", &ib];
    let mut cases: Vec<(&[&str], &str)> = vec![(&[], "SIGINT"), (&[], "SIGTERM"), (&["--duration", "1s"], "--duration")];
    // A TCX link dies with its process; a clsact filter (kernels without TCX) outlives a
    // SIGKILL, which leaves no chance to remove it.
    if kernel_btf_has("tcx_link") {
        cases.push((&[], "SIGKILL"));
    } else {
        skipped("mtu: nothing left after SIGKILL", "no TCX on this kernel: tc filters of a killed tracer stay until their qdisc or namespace goes");
    }
    // Each run has an empty PATH (as in the image): on kernels without TCX this is the proof that
    // the clsact qdisc goes without `tc`.
    assert_nothing_left_after("mtu", &base, &cases);
    let after = (tc_state(&lab.a, &lab.a_if), tc_state(&lab.b, &lab.b_if));
    assert_eq!(after, before, "tc filters or qdiscs left on the lab's devices");
}

/// `serve --probes mtu` in a lab namespace without --iface follows its devices: a veth created
/// after start gets the tc programs (an oversize packet on it is an event naming it), and when
/// it is deleted its links go at once; the run ends cleanly with nothing left attached.
#[test]
fn devices_created_after_start_are_traced_and_removed_ones_forgotten() {
    let test = "devices_created_after_start_are_traced_and_removed_ones_forgotten";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let lab = PairLab::new();
    lab.a.ip(&["link", "set", "lo", "up"]);
    let (new_net, new_a, new_b) = (lab.addrs.net(1), lab.addrs.host(1, 1), lab.addrs.host(1, 2));
    let args = ["serve", "--probes", "mtu", "--metrics", "127.0.0.1:19468", "--node-name", "lab-node-1", "--pods-from", "none", "--ip", &new_net];
    let t = Tracer::start_in(&lab.a, &args);
    let attached = t.attached_lines().join("\n");
    assert!(attached.contains(&format!("tc on 1 devices: {}", lab.a_if)), "the lab's one veth at start: {attached}");
    let ids = bpf_prog_ids_of_pid(t.pid());
    let tcx = kernel_btf_has("tcx_link");
    // The classifiers' links (Debian's bpftool names the TCX link type only by its number).
    // Per direction: a veth picked by default (the node's end of a pod's interface) is watched
    // at egress only, since nothing but the pod's own ICMP errors could be an event at its ingress.
    let classifiers = |direction: &str| -> Vec<u64> {
        bpf_progs_named(&["mtu_tc_", "mtu_eth_"]).into_iter().filter(|p| p.name.ends_with(direction) && ids.contains(&p.id)).map(|p| p.id).collect()
    };
    let (egress, ingress) = (classifiers("egress"), classifiers("ingress"));
    let tcx_links = |progs: &[u64]| bpf_links().into_iter().filter(|l| progs.contains(&l.prog_id)).count();
    if tcx {
        assert_eq!((tcx_links(&egress), tcx_links(&ingress)), (1, 0), "egress only, of {}", lab.a_if);
    } else {
        skipped("mtu: TCX links counted", "no TCX on this kernel: clsact filters are not bpftool links");
    }

    // A new pod veth, at MTU 1400 behind a route at 1500: the stack hands it 1500-byte packets.
    // Made at its MTU: tracer may see the device the moment it exists (a later `mtu` change
    // raced its announcement on 6.12).
    let (va, vb) = (unique_name("vfa"), unique_name("vfb"));
    let small = SMALL_MTU.to_string();
    cmd_ok(&["ip", "link", "add", &va, "mtu", &small, "netns", &lab.a.name, "type", "veth", "peer", "name", &vb, "netns", &lab.b.name]);
    lab.a.up(&va);
    lab.b.up(&vb);
    lab.a.addr(&va, &format!("{new_a}/24"));
    lab.b.addr(&vb, &format!("{new_b}/24"));
    lab.a.ip(&["route", "replace", &new_net, "dev", &va, "mtu", "1500"]);
    assert!(t.wait_for_stderr(Duration::from_secs(10), &format!("tracer: mtu: tc on new device {va} {SMALL_MTU} (veth)")), "{}", t.stderr());
    if tcx {
        assert_eq!((tcx_links(&egress), tcx_links(&ingress)), (2, 0), "the new veth's egress link too");
    }
    let out = lab.a.exec_ok(&["python3", "-c", DF_SEND, &new_a, &new_b, "9", "1472"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sent");
    let found = t.wait_for(Duration::from_secs(5), |e| e.iter().any(|e| e["event"] == "oversize" && e["ifname"] == va.as_str()));
    assert!(found, "no oversize event on the new device:\n{}\n{}", dump(&t.events()), t.stderr());
    let ev = t.events().into_iter().find(|e| e["event"] == "oversize").expect("oversize");
    assert_eq!((ev["len"].as_u64(), ev["dev_mtu"].as_u64(), ev["netns"].as_u64()), (Some(1500), Some(1400), Some(lab.a.inode())), "{ev}");

    lab.a.ip(&["link", "del", &va]);
    assert!(t.wait_for_stderr(Duration::from_secs(10), &format!("tracer: mtu: device {va} is gone")), "{}", t.stderr());
    if tcx {
        assert_eq!((tcx_links(&egress), tcx_links(&ingress)), (1, 0), "the removed veth's link is closed at once");
    }
    let run = t.stop();
    run.assert_code(0);
    let complaints: Vec<&str> = run.stderr.lines().filter(|l| l.contains("warning") || l.contains("error")).collect();
    assert!(complaints.is_empty(), "{complaints:?}\n{}", run.stderr);
    if let Err(left) = wait_bpf_released(&ids) {
        panic!("left behind after exit: {left}");
    }
    assert_eq!(tc_state(&lab.a, &lab.a_if), "", "no tc filter or qdisc left on {}", lab.a_if);
}

/// The classifiers let an IP packet no longer than the narrowest traced MTU (at most 1280) pass
/// without asking for the device's MTU. That floor follows the devices: after a traced veth's
/// MTU is lowered to 1000 while tracing, a 1228-byte packet (below the 1280 the floor started
/// at) is still an oversize event. With a stale floor it would never be one.
#[test]
fn oversize_below_the_old_floor_is_seen_after_a_device_mtu_is_lowered_while_tracing() {
    let test = "oversize_below_the_old_floor_is_seen_after_a_device_mtu_is_lowered_while_tracing";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    let lab = PairLab::new();
    lab.a.ip(&["link", "set", "lo", "up"]);
    let args = [
        "serve",
        "--probes",
        "mtu",
        "--metrics",
        "127.0.0.1:19469",
        "--node-name",
        "lab-node-1",
        "--pods-from",
        "none",
        "--ip",
        &format!("{}/32", lab.b_ip),
    ];
    let t = Tracer::start_in(&lab.a, &args);
    let attached = t.attached_lines().join("\n");
    assert!(attached.contains(&format!("tc on 1 devices: {}", lab.a_if)), "the lab's one veth: {attached}");
    lab.a.ip(&["link", "set", &lab.a_if, "mtu", "1000"]);
    lab.a.ip(&["route", "replace", &lab.addrs.net(0), "dev", &lab.a_if, "mtu", "1500"]);
    // The floor follows link events once they settle (follow::SETTLE, 200 ms): send again until
    // the packet is seen, for at most 5 s.
    let mut found = false;
    for _ in 0..25 {
        let out = lab.a.exec_ok(&["python3", "-c", DF_SEND, &lab.a_ip, &lab.b_ip, "9", "1200"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sent");
        if t.wait_for(Duration::from_millis(200), |e| e.iter().any(|e| e["event"] == "oversize")) {
            found = true;
            break;
        }
    }
    let run = t.stop();
    run.assert_code(0);
    let events = run.events();
    assert!(found, "no oversize event after the MTU went down to 1000:\n{}\n{}", dump(&events), run.stderr);
    let ev = events.iter().find(|e| e["event"] == "oversize").expect("oversize");
    assert_eq!((ev["len"].as_u64(), ev["dev_mtu"].as_u64(), ev["ifname"].as_str()), (Some(1228), Some(1000), Some(lab.a_if.as_str())), "{ev}");
}
