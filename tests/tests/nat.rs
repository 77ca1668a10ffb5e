//! Privileged integration tests for `tracer nat`: a kube-proxy-like node in a namespace, real
//! iptables NAT rules, real TCP connections through them, the real binary.
//! Run as root: `cargo build --release -p tracer && cargo test --release -p tracer-tests --test nat`.
//!
//! The lab ([`NatLab`]) is a "node" namespace with IP forwarding on and a bridge (like a CNI's
//! `cni0`) to backend "pods" (subnet 0 of the lab's block, the node at `.254`), and one or two
//! "client" namespaces on their own veths (subnets 1 and 2). Subnet 3 is the Service range:
//! ClusterIPs that no host has. In the node, the iptables-legacy `nat` table holds chains the way
//! kube-proxy writes them (KUBE-SERVICES -> KUBE-SVC-* -> KUBE-SEP-* DNAT, KUBE-MARK-MASQ,
//! KUBE-POSTROUTING MASQUERADE), with `statistic --mode nth` instead of `--mode random` so which
//! connection goes to which backend is deterministic (round robin). Backends run a bounded TCP
//! echo server; clients open connections from fixed source ports and exchange several messages
//! on each, so every connection carries many packets through the node.
//!
//! Every expectation is checked against the kernel's own conntrack table in the node namespace
//! (`conntrack -L`), so a failure says whether the kernel or the tracer differs. Kernel behaviour
//! these tests rely on (6.18):
//! - The nat table sees only a connection's first packet, so nth counts connections, not packets;
//!   a retransmitted SYN belongs to the same conntrack entry and is not translated anew.
//! - In the node, a DNATed connection's SYN leaves on the bridge already translated
//!   (CLIENT:SPORT -> BACKEND:8080, status CONFIRMED|DST_NAT); the backend's SYN-ACK sets
//!   SEEN_REPLY and leaves towards the client un-translated (CLUSTERIP:80 -> CLIENT:SPORT); the
//!   client's handshake ACK sets ASSURED and leaves on the bridge. Later packets change no status
//!   bit, so a connection gives exactly the states new, reply, assured.
//! - A connection whose backend drops everything stays UNREPLIED (SYN_SENT); the client's SYN
//!   retransmit changes nothing in the entry.
//! - Crossing a veth into another namespace scrubs the packet's conntrack reference, and the
//!   client and backend namespaces have no conntrack of their own, so only the node reports.
//!
//! Most tests run `tracer nat` (the transmit tracepoint, every namespace). The `watch` tests run
//! tracer inside the node's namespace with the NAT check in the egress classifiers of the
//! node's veths (`--nat-hook tc`, or auto): a packet the node sends to a backend is seen leaving
//! by the backend's bridge port there, not by the bridge (its first transmit).
//!
//! Every lab is private (namespaces, 198.18.0.0/15 block), every tracer is filtered to the lab's
//! block, every wait is bounded, and everything is removed on drop, also on panic.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Output,
    time::Duration,
};

use tracer_tests::{
    kube_api::{ApiRequest, FakeApi, PodFixture, Resource, ServiceFixture},
    kube_proxy::{Host, NatLab, service},
    traffic::{TcpClient, udp_queries, udp_server, udp_stream_argv},
    *,
};

/// The Service port the clients connect to, and the port the backends listen on (kube-proxy's
/// port -> targetPort).
const SVC_PORT: u16 = 80;
const BACKEND_PORT: u16 = 8080;
/// How long to wait for events that should come.
const EVENT_WAIT: Duration = Duration::from_secs(10);

fn ep(ip: &str, port: u16) -> String {
    format!("{ip}:{port}")
}

// ---------------------------------------------------------------------------------------------
// The lab
// ---------------------------------------------------------------------------------------------

/// A TCP Service `cip:SVC_PORT` -> `backends` (indices) `:BACKEND_PORT` in the lab's node (see
/// [`service`]).
fn tcp_service(lab: &NatLab, name: &str, cip: &str, backends: &[usize], masquerade_all: bool) {
    let ips: Vec<&str> = backends.iter().map(|&b| lab.backends[b].ip.as_str()).collect();
    service(&lab.node, name, "tcp", cip, (SVC_PORT, BACKEND_PORT), &ips, masquerade_all);
}

/// A running [`TCP_ECHO_SERVER`] on `host`'s address and [`BACKEND_PORT`]; killed on drop.
fn tcp_echo(host: &Host) -> Announced {
    tcp_echo_server(|a| host.ns.spawn(a), &host.ip, BACKEND_PORT, 120)
}

/// A running `traffic::UDP_SERVER` answering on `host`'s address and `port`; killed on drop.
fn udp_echo(host: &Host, port: u16) -> Announced {
    udp_server(|a| host.ns.spawn(a), &host.ip, port, 120, true)
}

/// Runs `traffic::UDP_CLIENT` in `client` (bounded) and returns each source port's result.
fn query_each(client: &Host, dst: &str, dport: u16, sports: &[u16], timeout: f64) -> BTreeMap<u16, String> {
    udp_queries(|a, t| client.ns.exec_timeout(a, t), &client.ip, dst, dport, timeout, sports).into_iter().collect()
}

/// Runs `traffic::TCP_CLIENT` in `client` (bounded), `msgs` echoed messages per connection, and
/// returns each source port's result (`ok N`, `timeout` or `error ERRNO`).
fn connect_each(client: &Host, dst: &str, dport: u16, sports: &[u16], timeout: f64, msgs: u32) -> BTreeMap<u16, String> {
    assert!(timeout <= 5.0, "bounded traffic only");
    let c = TcpClient::new(&client.ip, dst, dport, timeout).msgs(msgs);
    c.run_each(|a, t| client.ns.exec_timeout(a, t), sports).into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// The kernel's conntrack table
// ---------------------------------------------------------------------------------------------

/// One entry of `conntrack -L` in the node: the original and reply tuples as `IP:PORT`.
#[derive(Clone, Debug)]
struct CtEntry {
    proto: String,
    orig_src: String,
    orig_dst: String,
    reply_src: String,
    reply_dst: String,
    unreplied: bool,
    assured: bool,
}

/// The node's conntrack table (TCP and UDP entries).
fn conntrack(ns: &Netns) -> Vec<CtEntry> {
    let out = ns.exec_ok(&["conntrack", "-L"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let proto = words.first()?.to_string();
            let kv: Vec<(&str, &str)> = words.iter().filter_map(|w| w.split_once('=')).collect();
            let nth = |key: &str, n: usize| kv.iter().filter(|(k, _)| *k == key).nth(n).map(|(_, v)| *v);
            let tuple = |n: usize| -> Option<(String, String)> {
                Some((ep(nth("src", n)?, nth("sport", n)?.parse().ok()?), ep(nth("dst", n)?, nth("dport", n)?.parse().ok()?)))
            };
            let (orig_src, orig_dst) = tuple(0)?;
            let (reply_src, reply_dst) = tuple(1)?;
            Some(CtEntry {
                proto,
                orig_src,
                orig_dst,
                reply_src,
                reply_dst,
                unreplied: words.contains(&"[UNREPLIED]"),
                assured: words.contains(&"[ASSURED]"),
            })
        })
        .collect()
}

/// The node's conntrack entry of the TCP connection from `orig_src` to `orig_dst` (exactly one).
fn ct_entry(table: &[CtEntry], orig_src: &str, orig_dst: &str) -> CtEntry {
    ct_entry_of(table, "tcp", orig_src, orig_dst)
}

fn ct_entry_of(table: &[CtEntry], proto: &str, orig_src: &str, orig_dst: &str) -> CtEntry {
    let found: Vec<&CtEntry> = table.iter().filter(|e| e.proto == proto && e.orig_src == orig_src && e.orig_dst == orig_dst).collect();
    assert_eq!(found.len(), 1, "conntrack in the node: want one entry {orig_src} -> {orig_dst}, got {found:?}; table:\n{table:#?}");
    found[0].clone()
}

// ---------------------------------------------------------------------------------------------
// Event checks
// ---------------------------------------------------------------------------------------------

const NAT_STATES: &[&str] = &["new", "reply", "assured", "no_reply", "closed", "timed_out", "destroyed"];

fn is_nullable_pod(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(|p| p.split('/').count() == 2 && !p.starts_with('/') && !p.ends_with('/'))
}

/// Checks a `kind: nat` event on its own: the common fields, the tuples, the flags and that
/// they agree with each other. `nat` must follow from the tuples (dnat: the reply comes from
/// somewhere else than the original destination; snat: it goes to somewhere else than the
/// original source), `backend` is the reply source for DNAT and null without, `state` agrees
/// with `reply_seen`/`assured`.
fn check_nat(ev: &Value, window: (i128, i128)) {
    check_common(ev, window);
    assert_eq!(ev["kind"], "nat", "event {ev}: kind");
    let obj = ev.as_object().expect("object");
    for k in
        ["nat", "orig_src", "orig_dst", "reply_src", "reply_dst", "reply_seen", "assured", "state", "backend", "backend_pod", "service", "netns_pod"]
    {
        assert!(obj.contains_key(k), "event {ev}: missing field {k:?}");
    }
    assert!(["tcp", "udp"].contains(&ev["proto"].as_str().unwrap_or("")), "event {ev}: proto must be tcp or udp here");
    for k in ["src", "dst", "orig_src", "orig_dst", "reply_src", "reply_dst"] {
        let v = ev[k].as_str().unwrap_or_default();
        assert!(is_ip_port(v), "event {ev}: {k} {v:?} is not IP:PORT");
    }
    let reply_seen = ev["reply_seen"].as_bool().unwrap_or_else(|| panic!("event {ev}: reply_seen must be a bool"));
    let assured = ev["assured"].as_bool().unwrap_or_else(|| panic!("event {ev}: assured must be a bool"));
    let state = ev["state"].as_str().unwrap_or_default();
    assert!(NAT_STATES.contains(&state), "event {ev}: state must be one of {NAT_STATES:?}");
    let consistent = match state {
        "new" => !reply_seen && !assured,
        "reply" => reply_seen && !assured,
        "assured" => reply_seen && assured,
        "no_reply" => !reply_seen && !assured,
        // An end carries what was known of the connection when it was last reported.
        _ => true,
    };
    assert!(consistent, "event {ev}: state {state:?} disagrees with reply_seen {reply_seen} / assured {assured}");
    let dnat = ev["reply_src"] != ev["orig_dst"];
    let snat = ev["reply_dst"] != ev["orig_src"];
    let want = match (dnat, snat) {
        (true, false) => "dnat",
        (false, true) => "snat",
        (true, true) => "both",
        (false, false) => panic!("event {ev}: the tuples show no rewrite at all"),
    };
    assert_eq!(ev["nat"], want, "event {ev}: nat must follow from the tuples");
    if dnat {
        assert_eq!(ev["backend"], ev["reply_src"], "event {ev}: backend must be the DNAT target (the reply source)");
    } else {
        assert!(ev["backend"].is_null(), "event {ev}: backend must be null without DNAT");
        assert!(ev["backend_pod"].is_null(), "event {ev}: backend_pod must be null without DNAT");
    }
    for k in ["backend_pod", "service", "netns_pod"] {
        assert!(is_nullable_pod(&ev[k]), "event {ev}: {k} must be namespace/name or null");
    }
    if !dnat {
        assert!(ev["service"].is_null(), "event {ev}: service must be null without DNAT");
    }
    assert!(ev["netns"].is_u64(), "event {ev}: netns must be the inode of the namespace that transmitted the packet");
    assert!(ev["ifname"].as_str().is_some_and(|s| !s.is_empty()), "event {ev}: ifname must be the transmitting device");
}

/// The nat events of the connection whose original source is `orig_src`, in stream order.
fn conn_events<'a>(events: &'a [Value], orig_src: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == "nat" && e["orig_src"] == orig_src).collect()
}

/// Whether every connection (by original source) has reached `assured`.
fn all_assured(evs: &[Value], origs: &[String]) -> bool {
    origs.iter().all(|o| conn_events(evs, o).iter().any(|e| e["state"] == "assured"))
}

fn states(evs: &[&Value]) -> Vec<String> {
    evs.iter().map(|e| e["state"].as_str().unwrap_or("?").to_string()).collect()
}

fn ts(ev: &Value) -> i128 {
    parse_rfc3339_nanos(ev["ts"].as_str().unwrap_or_default()).unwrap_or_else(|| panic!("event {ev}: bad ts"))
}

/// Where the packets of one connection leave the node: towards the server (after NAT: the
/// inverse of the reply tuple) and towards the client (the inverse of the original tuple).
struct Legs<'a> {
    netns: u64,
    to_server_if: &'a str,
    to_client_if: &'a str,
}

/// The tuple fields of every event of a connection must be the kernel's (`ct`), and `nat` what
/// the test set up.
fn assert_tuples(evs: &[&Value], ct: &CtEntry, nat: &str) {
    for ev in evs {
        assert_eq!(ev["proto"], ct.proto.as_str(), "event {ev}: proto (kernel: {ct:?})");
        assert_eq!(ev["nat"], nat, "event {ev}: nat (kernel: {ct:?})");
        for (k, v) in [("orig_src", &ct.orig_src), ("orig_dst", &ct.orig_dst), ("reply_src", &ct.reply_src), ("reply_dst", &ct.reply_dst)] {
            assert_eq!(ev[k], v.as_str(), "event {ev}: {k} differs from the kernel's conntrack entry {ct:?}");
        }
    }
}

/// A connection that was answered: exactly one event per state new, reply, assured, in that
/// order (not one per packet), none `no_reply`; each names the packet that showed the state:
/// new and assured the client's packets leaving towards the server, reply the server's answer
/// leaving towards the client.
fn assert_answered(what: &str, evs: &[&Value], ct: &CtEntry, nat: &str, legs: &Legs) {
    assert!(!ct.unreplied && ct.assured, "{what}: the kernel's entry must be replied and assured: {ct:?}");
    assert_eq!(
        states(evs),
        ["new", "reply", "assured"],
        "{what}: want exactly one event per state, in order (not one per packet):\n{}",
        evs.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
    );
    assert_tuples(evs, ct, nat);
    for ev in evs {
        assert_eq!(ev["netns"].as_u64(), Some(legs.netns), "{what}: event {ev}: netns must be the node's");
        let (src, dst, ifname) =
            if ev["state"] == "reply" { (&ct.orig_dst, &ct.orig_src, legs.to_client_if) } else { (&ct.reply_dst, &ct.reply_src, legs.to_server_if) };
        assert_eq!(
            (ev["src"].as_str(), ev["dst"].as_str()),
            (Some(src.as_str()), Some(dst.as_str())),
            "{what}: event {ev}: src/dst must be the transmitted packet's, after NAT"
        );
        assert_eq!(ev["ifname"].as_str(), Some(ifname), "{what}: event {ev}: ifname must be the device the packet left on");
    }
    let t: Vec<i128> = evs.iter().map(|e| ts(e)).collect();
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "{what}: timestamps go backwards: {t:?}");
}

/// The stop summary must be present and lossless; `delivered` counts the JSON lines, with or
/// without the `no_reply` events userspace adds (`synthesized` of them).
fn assert_clean_summary(run: &TracerRun, synthesized: usize) {
    let s = parse_summary(&run.stderr, "nat")
        .unwrap_or_else(|| panic!("{:?}: no `tracer: nat: N seen, N delivered, N lost` line on stderr:\n{}", run.args, run.stderr));
    assert_eq!(s.lost, 0, "{:?}: unexpected lost events: {s:?}", run.args);
    assert_eq!(s.seen, s.delivered + s.lost + s.unread.unwrap_or(0), "{:?}: seen != delivered + lost: {s:?}", run.args);
    let lines = traced_events(run).len() as u64;
    assert!(
        s.delivered <= lines && s.delivered + synthesized as u64 >= lines,
        "{:?}: delivered {} vs {lines} JSON lines ({synthesized} no_reply): {s:?}",
        run.args,
        s.delivered
    );
}

/// A run's events: its JSON lines without the records `watch` adds (its facts, and the
/// `recording` record at the end).
fn traced_events(run: &TracerRun) -> Vec<Value> {
    run.events().into_iter().filter(|e| !matches!(e["kind"].as_str(), Some("recording" | "fact"))).collect()
}

/// Starts `tracer nat -o json ARGS` and checks its `attached` line.
fn start_nat(args: &[&str]) -> Tracer {
    let mut v = vec!["nat", "-o", "json"];
    v.extend_from_slice(args);
    let t = Tracer::start(&v);
    let attached = t.attached_lines().join("\n");
    assert!(attached.contains("attached nat"), "want `tracer: attached nat (...)` on stderr, got: {attached}");
    t
}

/// How long a run goes on once every expected event is there: longer than the 1 s
/// `--reply-timeout` the runs use, so a `no_reply` that must not come has had its chance.
const LINGER: Duration = Duration::from_millis(2500);

/// Stops a tracer [`LINGER`] after its events were `complete` (or not); checks that it exits 0,
/// that the events were complete, and every event on its own ([`check_nat`], `ts` since
/// `start`). Returns the run and its events.
fn finish(t: Tracer, complete: bool, start: i128) -> (TracerRun, Vec<Value>) {
    std::thread::sleep(LINGER);
    let run = t.stop();
    let end = now_nanos();
    run.assert_code(0);
    let events = traced_events(&run);
    assert!(complete, "{:?}: events incomplete within {EVENT_WAIT:?}:\n{}\nstderr:\n{}", run.args, dump(&events), run.stderr);
    for ev in &events {
        check_nat(ev, (start, end));
    }
    (run, events)
}

/// Which tracer traces a scenario, and so by which device it sees a packet leave the node.
#[derive(Clone, Copy, Debug)]
enum Tracing<'a> {
    /// `tracer nat` in the test's own namespace: the transmit tracepoint, in every namespace. A
    /// packet the node sends to a backend is seen on its first transmit, by the node's bridge.
    Nat,
    /// `tracer watch --probes nat,mtu` inside the node's namespace, with `--nat-hook HOOK` (None:
    /// without the flag, auto), which must put the NAT check into the egress classifiers of the
    /// node's veths ([`start_watch_in_node`]). A packet to a backend is seen leaving by the
    /// backend's bridge port (the bridge itself is no classified device).
    Watch(Option<&'a str>),
}

impl Tracing<'_> {
    /// The device the node's packets towards `backend` (IP:PORT) are reported leaving by.
    fn to_server_if<'l>(self, lab: &'l NatLab, backend: &str) -> &'l str {
        match self {
            Tracing::Nat => &lab.bridge,
            Tracing::Watch(_) => lab.backend_if(backend),
        }
    }

    /// Starts this tracer with `args` and checks its `attached` line.
    fn start(self, lab: &NatLab, args: &[&str]) -> Tracer {
        match self {
            Tracing::Nat => start_nat(args),
            Tracing::Watch(hook) => start_watch_in_node(lab, hook, args),
        }
    }
}

/// The NAT family's part of a `tracer: attached watch (drops: ...; nat: ...; mtu: ...; tc on N
/// devices: ...)` line: from `nat: ` to the next family's part, or the end of the list.
fn nat_part(attached: &str) -> Option<&str> {
    let (_, rest) = attached.split_once("nat: ")?;
    let end = ["; drops: ", "; tcp: ", "; mtu: ", "; tc on "].iter().filter_map(|sep| rest.find(sep)).min();
    Some(end.map_or(rest.trim_end_matches(')'), |e| &rest[..e]))
}

/// The names of the BPF programs process `pid` holds (its program and link descriptors).
fn prog_names_of(pid: i32) -> BTreeSet<String> {
    let ids = bpf_prog_ids_of_pid(pid);
    bpf_progs().into_iter().filter(|p| ids.contains(&p.id)).map(|p| p.name).collect()
}

/// Where `t` (a `watch` with the NAT family) runs the NAT check, from its `attached` line and
/// the programs it holds: "tc" (the egress classifiers, no `nat_xmit` program loaded) or
/// "xmit" (`tp_btf/net_dev_start_xmit`, `nat_xmit` loaded); panics if they disagree.
fn nat_hook_of(t: &Tracer) -> &'static str {
    let attached = t.attached_lines().join("\n");
    let progs = prog_names_of(t.pid());
    let what = format!("attached line: {attached}\nprograms held: {progs:?}");
    let part = nat_part(&attached).unwrap_or_else(|| panic!("no `nat: ...` part in the attached line\n{what}"));
    let (tc, xmit) = (part.contains("tc egress"), part.contains("tp_btf/net_dev_start_xmit"));
    assert!(tc != xmit, "the NAT part `{part}` must name exactly one hook, `tc egress` or `tp_btf/net_dev_start_xmit`\n{what}");
    assert_eq!(progs.contains("nat_xmit"), xmit, "`nat_xmit` must be loaded exactly when the NAT part names the tracepoint\n{what}");
    if tc {
        assert!(
            progs.iter().any(|p| p.starts_with("mtu_") && p.ends_with("_egress")),
            "the NAT check runs in the egress classifiers, yet none is held\n{what}"
        );
        "tc"
    } else {
        "xmit"
    }
}

/// Starts `tracer watch --probes nat,mtu -o json [--nat-hook HOOK] ARGS` inside the lab's node
/// namespace and checks that it attached, with the NAT check in the egress classifiers (auto
/// must choose them there: the mtu family runs, no `--iface`, the node has veths).
fn start_watch_in_node(lab: &NatLab, hook: Option<&str>, args: &[&str]) -> Tracer {
    let mut v = vec!["watch", "--probes", "nat,mtu", "-o", "json"];
    if let Some(hook) = hook {
        v.extend(["--nat-hook", hook]);
    }
    v.extend_from_slice(args);
    let t = Tracer::start_in(&lab.node, &v);
    let attached = t.attached_lines().join("\n");
    assert!(attached.contains("attached watch"), "want `tracer: attached watch (...)` on stderr, got: {attached}");
    assert_eq!(nat_hook_of(&t), "tc", "{v:?} in the node's namespace");
    t
}

/// One traced scenario: `tracer nat -o json --pods-from none --ip BLOCK --reply-timeout 1s`
/// (plus `extra`) runs while `traffic` does, until `done(traffic's result, events)` holds
/// (bounded by [`EVENT_WAIT`]), then as [`finish`].
fn traced<R>(lab: &NatLab, extra: &[&str], traffic: impl FnOnce() -> R, done: impl Fn(&R, &[Value]) -> bool) -> (R, TracerRun, Vec<Value>) {
    traced_by(lab, Tracing::Nat, extra, traffic, done)
}

/// [`traced`] by `tracing`'s tracer (the same arguments after its own).
fn traced_by<R>(
    lab: &NatLab,
    tracing: Tracing,
    extra: &[&str],
    traffic: impl FnOnce() -> R,
    done: impl Fn(&R, &[Value]) -> bool,
) -> (R, TracerRun, Vec<Value>) {
    let block = lab.block();
    let mut args = vec!["--pods-from", "none", "--ip", &block, "--reply-timeout", "1s"];
    args.extend_from_slice(extra);
    let start = now_nanos();
    let t = tracing.start(lab, &args);
    let result = traffic();
    let complete = t.wait_for(EVENT_WAIT, |evs| done(&result, evs));
    let (run, events) = finish(t, complete, start);
    (result, run, events)
}

/// `IP:PORT` of each source port from `host`.
fn origs_of(host: &Host, sports: &[u16]) -> Vec<String> {
    sports.iter().map(|p| ep(&host.ip, *p)).collect()
}

/// The source ports whose result is `want`, as `IP:PORT` from `host`.
fn with_result(host: &Host, results: &BTreeMap<u16, String>, want: &str) -> BTreeSet<String> {
    results.iter().filter(|(_, r)| *r == want).map(|(p, _)| ep(&host.ip, *p)).collect()
}

/// A lab with `backends` TCP echo backends, `clients` clients and kube-proxy's base chains.
fn tcp_lab(backends: u32, clients: u32) -> (NatLab, Vec<Announced>) {
    let lab = NatLab::new(backends, clients);
    let echo = lab.backends.iter().map(tcp_echo).collect();
    lab.kube_proxy_base();
    (lab, echo)
}

/// The events `evs` of a connection from `orig` (`what`) that was never answered: each names
/// `backend` and the only packets the node sent for it, `orig`'s translated towards `backend`,
/// leaving the node's namespace by `ifname` (a `no_reply` or an end repeats the first event's).
fn assert_unanswered_towards(what: &str, evs: &[&Value], orig: &str, backend: &str, lab: &NatLab, ifname: &str) {
    for ev in evs {
        assert_eq!(ev["backend"], backend, "{what}: event {ev}: backend");
        assert_eq!(ev["netns"].as_u64(), Some(lab.node.inode()), "{what}: event {ev}: netns must be the node's");
        assert_eq!(
            (ev["src"].as_str(), ev["dst"].as_str()),
            (Some(orig), Some(backend)),
            "{what}: event {ev}: src/dst must be the translated packet's"
        );
        assert_eq!(ev["ifname"].as_str(), Some(ifname), "{what}: event {ev}: ifname must be the device towards the backend");
    }
}

/// Makes `host` a backend that never answers: its namespace drops `proto` to `port`.
fn silence(host: &Host, proto: &str, port: u16) {
    host.ns.iptables("iptables-legacy", &["-A", "INPUT", "-p", proto, "--dport", &port.to_string(), "-j", "DROP"]);
}

/// Each connection from `origs` to `orig_dst` was answered: per [`assert_answered`], against
/// the kernel's entry; returns each connection's backend (the kernel's reply source).
fn assert_all_answered(lab: &NatLab, events: &[Value], origs: &[String], orig_dst: &str, nat: &str) -> Vec<String> {
    assert_all_answered_by(lab, Tracing::Nat, events, origs, orig_dst, nat)
}

/// [`assert_all_answered`] for events of `tracing`'s tracer (the devices it sees).
fn assert_all_answered_by(lab: &NatLab, tracing: Tracing, events: &[Value], origs: &[String], orig_dst: &str, nat: &str) -> Vec<String> {
    let table = conntrack(&lab.node);
    origs
        .iter()
        .map(|orig| {
            let ct = ct_entry(&table, orig, orig_dst);
            let legs = Legs { netns: lab.node.inode(), to_server_if: tracing.to_server_if(lab, &ct.reply_src), to_client_if: &lab.client_ifs[0] };
            assert_answered(&format!("connection {orig} -> {orig_dst}"), &conn_events(events, orig), &ct, nat, &legs);
            ct.reply_src
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The lab without the tracer: kube-proxy-like rules translate as these tests expect, and the
/// kernel's conntrack table says so (round robin in connection order, the silent backend's
/// connection UNREPLIED, answered ones ASSURED, masquerade to the node's bridge address).
#[test]
fn kernel_conntrack_translates_the_lab_as_these_tests_expect() {
    if !require_privileged("kernel_conntrack_translates_the_lab_as_these_tests_expect") {
        return;
    }
    let _lock = shared_lock();
    let (lab, _echo) = tcp_lab(3, 1);
    silence(&lab.backends[2], "tcp", BACKEND_PORT);
    let (rr, half, both) = (lab.cluster_ip(10), lab.cluster_ip(20), lab.cluster_ip(30));
    tcp_service(&lab, "RR", &rr, &[0, 1], false);
    tcp_service(&lab, "HALF", &half, &[0, 2], false);
    tcp_service(&lab, "BOTH", &both, &[1], true);
    let client = &lab.clients[0];
    let be = |i: usize| ep(&lab.backends[i].ip, BACKEND_PORT);

    let rr_ports = [42501u16, 42502, 42503, 42504];
    let half_ports = [42511u16, 42512];
    let both_ports = [42521u16];
    let r1 = connect_each(client, &rr, SVC_PORT, &rr_ports, 3.0, 2);
    let r2 = connect_each(client, &half, SVC_PORT, &half_ports, 2.0, 2);
    let r3 = connect_each(client, &both, SVC_PORT, &both_ports, 3.0, 2);
    assert!(r1.values().chain(r3.values()).all(|r| r == "ok 2"), "{r1:?} {r3:?}");
    assert_eq!(r2.values().cloned().collect::<Vec<_>>(), ["ok 2", "timeout"], "first to the answering backend, then the silent one");

    let table = conntrack(&lab.node);
    let got: Vec<String> = rr_ports.iter().map(|p| ct_entry(&table, &ep(&client.ip, *p), &ep(&rr, SVC_PORT)).reply_src).collect();
    assert_eq!(got, [be(0), be(1), be(0), be(1)], "nth round robin in connection order");
    for p in rr_ports {
        let ct = ct_entry(&table, &ep(&client.ip, p), &ep(&rr, SVC_PORT));
        assert!(ct.assured && !ct.unreplied && ct.reply_dst == ep(&client.ip, p), "{ct:?}");
    }
    let ok = ct_entry(&table, &ep(&client.ip, half_ports[0]), &ep(&half, SVC_PORT));
    assert!(ok.reply_src == be(0) && ok.assured, "{ok:?}");
    let silent = ct_entry(&table, &ep(&client.ip, half_ports[1]), &ep(&half, SVC_PORT));
    assert!(silent.reply_src == be(2) && silent.unreplied && !silent.assured, "{silent:?}");
    let m = ct_entry(&table, &ep(&client.ip, both_ports[0]), &ep(&both, SVC_PORT));
    assert!(m.reply_src == be(1) && m.reply_dst.starts_with(&format!("{}:", lab.node_pod_ip)) && m.assured, "{m:?}");
}

#[test]
fn service_connections_name_their_backend_once_per_state() {
    if !require_privileged("service_connections_name_their_backend_once_per_state") {
        return;
    }
    let _lock = shared_lock();
    service_connections_once_per_state(Tracing::Nat);
}

/// `watch` inside the node's namespace with the NAT check in the egress classifiers of the
/// node's veths, by `--nat-hook tc` and by auto (which must choose them there, as the attached
/// line and the programs held say: no `nat_xmit`): the same events as the transmit tracepoint
/// gives ([`service_connections_name_their_backend_once_per_state`]: one per state, the
/// kernel's tuples, round robin, nothing for connections not rewritten), except the device: a
/// packet to a backend is reported leaving by the backend's bridge port, not the bridge.
#[test]
fn service_connections_are_seen_by_the_egress_classifiers() {
    if !require_privileged("service_connections_are_seen_by_the_egress_classifiers") {
        return;
    }
    let _lock = shared_lock();
    for hook in [Some("tc"), None] {
        service_connections_once_per_state(Tracing::Watch(hook));
    }
}

/// Ten connections through a two-backend Service (and two straight to a backend) traced by
/// `tracing`: each Service connection is reported new, reply, assured with the kernel's tuples
/// and backend (per [`assert_all_answered_by`]), split 5/5; the others not at all.
fn service_connections_once_per_state(tracing: Tracing) {
    let (lab, _echo) = tcp_lab(2, 1);
    let cip = lab.cluster_ip(10);
    tcp_service(&lab, "TEST", &cip, &[0, 1], false);
    let client = &lab.clients[0];
    let sports: Vec<u16> = (42001..=42010).collect();
    // Not rewritten: straight to a backend, no masquerade. Must give no nat event.
    let direct = [42021u16, 42022];
    let origs = origs_of(client, &sports);

    let traffic = || {
        for (p, r) in connect_each(client, &cip, SVC_PORT, &sports, 3.0, 5) {
            assert_eq!(r, "ok 5", "connection from port {p} through the Service failed");
        }
        for (p, r) in connect_each(client, &lab.backends[0].ip, BACKEND_PORT, &direct, 3.0, 3) {
            assert_eq!(r, "ok 3", "direct connection from port {p} failed");
        }
    };
    let ((), run, events) = traced_by(&lab, tracing, &[], traffic, |_, evs| all_assured(evs, &origs));

    let chosen = assert_all_answered_by(&lab, tracing, &events, &origs, &ep(&cip, SVC_PORT), "dnat");
    let backends: Vec<String> = lab.backends.iter().map(|b| ep(&b.ip, BACKEND_PORT)).collect();
    for (orig, backend) in origs.iter().zip(&chosen) {
        assert!(backends.contains(backend), "{orig}: the kernel sent it to {backend} (not a backend?)");
        for ev in conn_events(&events, orig) {
            assert_eq!(ev["reply_dst"], orig.as_str(), "{orig}: {ev}: pure DNAT, the reply goes to the client itself");
            assert_eq!(ev["backend"], backend.as_str(), "{orig}: {ev}: backend");
            assert!(ev["backend_pod"].is_null() && ev["src_pod"].is_null() && ev["dst_pod"].is_null(), "{orig}: {ev}: --pods-from none names no pod");
        }
    }
    // Round robin: five connections each.
    for b in &backends {
        assert_eq!(chosen.iter().filter(|c| *c == b).count(), 5, "nth every 2 must split 10 connections 5/5: {chosen:?}");
    }
    for orig in origs_of(client, &direct) {
        assert!(conn_events(&events, &orig).is_empty(), "connection {orig} was not rewritten, yet:\n{}", dump(&events));
    }
    assert_eq!(events.len(), 3 * sports.len(), "only the Service connections' state changes may be reported:\n{}", dump(&events));
    assert_clean_summary(&run, 0);
}

/// A freed conntrack entry's memory soon holds another connection (the slab hands it out
/// again), and tracer's per-packet exit trusts what it remembers of an entry's address for a
/// connection it found settled (tracer-ebpf's `NAT_SETTLED`). Connections one after another
/// from a client pod, forwarded by the node, each entry deleted once the connection closed
/// (instead of after TIME_WAIT's two minutes): each one is still reported new, reply, assured,
/// with the entries' addresses (`conn`) shared between connections, which is what this test is
/// for.
#[test]
fn a_connection_in_a_reused_conntrack_entry_is_reported_like_a_new_one() {
    if !require_privileged("a_connection_in_a_reused_conntrack_entry_is_reported_like_a_new_one") {
        return;
    }
    let _lock = shared_lock();
    let (lab, _echo) = tcp_lab(1, 1);
    let client = &lab.clients[0];
    connections_in_reused_entries(&lab, Tracing::Nat, &client.ns, &client.ip, 42601, &["new", "reply", "assured"]);
}

/// [`a_connection_in_a_reused_conntrack_entry_is_reported_like_a_new_one`] with the NAT check in
/// the node's egress classifiers (`watch --nat-hook tc` in the node's namespace), which check
/// every reply-direction packet and let an original-direction packet of a settled connection
/// exit early: a connection in an entry an earlier, finished connection had is not taken for
/// that one, and is reported new, reply, assured.
#[test]
fn a_reused_conntrack_entry_is_reported_like_a_new_one_by_the_egress_classifiers() {
    if !require_privileged("a_reused_conntrack_entry_is_reported_like_a_new_one_by_the_egress_classifiers") {
        return;
    }
    let _lock = shared_lock();
    let (lab, _echo) = tcp_lab(1, 1);
    let client = &lab.clients[0];
    connections_in_reused_entries(&lab, Tracing::Watch(Some("tc")), &client.ns, &client.ip, 42601, &["new", "reply", "assured"]);
}

/// The same from a socket of the node itself (kubelet's, a hostNetwork pod's): its packets
/// leave with the socket attached, and the settled exit trusts those of the original direction
/// too. Each connection is reported new, then assured with its reply seen.
#[test]
fn a_node_local_connection_in_a_reused_conntrack_entry_is_reported_like_a_new_one() {
    if !require_privileged("a_node_local_connection_in_a_reused_conntrack_entry_is_reported_like_a_new_one") {
        return;
    }
    let _lock = shared_lock();
    let (lab, _echo) = tcp_lab(1, 1);
    // A node routes the Service range somewhere (its default route); the lab's node has no
    // default route, so the Service address goes to the bridge, where DNAT sends it anyway.
    lab.node.exec_ok(&["ip", "route", "add", &lab.cluster_ip(10), "dev", &lab.bridge]);
    // The reply is delivered here, not sent: the client's ACK is the first packet to show it,
    // with the assured state it sets, so "reply" comes within "assured".
    connections_in_reused_entries(&lab, Tracing::Nat, &lab.node, &lab.node_pod_ip, 42701, &["new", "assured"]);
}

/// [`a_connection_in_a_reused_conntrack_entry_is_reported_like_a_new_one`] from `ip` in `ns`,
/// source ports from `first_port` on, traced by `tracing`; `want`: the states each connection is
/// reported in.
fn connections_in_reused_entries(lab: &NatLab, tracing: Tracing, ns: &Netns, ip: &str, first_port: u16, want: &[&str]) {
    let cip = lab.cluster_ip(10);
    tcp_service(lab, "REUSE", &cip, &[0], false);
    let sports: Vec<u16> = (first_port..first_port + 16).collect();
    let origs: Vec<String> = sports.iter().map(|p| ep(ip, *p)).collect();
    let traffic = || {
        flows_in_turn_each_entry_deleted(lab, "tcp", ip, &sports, |p| {
            let run = TcpClient::new(ip, &cip, SVC_PORT, 3.0).msgs(5).run_each(|a, t| on_cpu0(ns, a, t), &[p]);
            assert_eq!(run, [(p, "ok 5".to_string())], "connection from {ip} port {p} through the Service");
        });
    };
    let ((), _run, events) = traced_by(lab, tracing, &[], traffic, |_, evs| all_assured(evs, &origs));
    let mut entries = Vec::new();
    for orig in &origs {
        let evs = conn_events(&events, orig);
        let live: Vec<&Value> = evs.iter().copied().filter(|e| ["new", "reply", "assured"].contains(&e["state"].as_str().unwrap_or(""))).collect();
        assert_eq!(states(&live), want, "{orig}: want each state once, in order:\n{}", dump(&events));
        assert!(live.last().is_some_and(|e| e["reply_seen"] == true), "{orig}: the last state has the reply:\n{}", dump(&events));
        // Towards the backend (new, assured) by the device `tracing` sees; the reply by the client's veth.
        for ev in &live {
            let backend = ev["backend"].as_str().unwrap_or_default();
            let want_if = if ev["state"] == "reply" { lab.client_ifs[0].as_str() } else { tracing.to_server_if(lab, backend) };
            assert_eq!(ev["ifname"].as_str(), Some(want_if), "{orig}: {ev}: ifname");
        }
        entries.push(the_entry_of(orig, &live));
    }
    assert_some_entry_reused(&format!("connections from {ip}"), &entries);
}

/// Runs `argv` in `ns` on CPU 0 only, bounded by `timeout`. The slab hands a freed conntrack
/// entry's memory out again first on the CPU that freed it, so flows made and deleted on one
/// CPU, one after another, get each other's entries.
fn on_cpu0(ns: &Netns, argv: &[&str], timeout: Duration) -> Output {
    let pinned: Vec<&str> = ["taskset", "-c", "0"].iter().chain(argv).copied().collect();
    ns.exec_timeout(&pinned, timeout)
}

/// Flows from `ip` of protocol `proto`, one per source port of `sports`, in turn: each made by
/// `flow(port)` (its packets sent on CPU 0, see [`on_cpu0`]), then its conntrack entry deleted
/// in the node, on CPU 0 too, instead of waiting out its timeout, so that the next flow's entry
/// can take the freed memory. Returns what each `flow` returned, in order.
fn flows_in_turn_each_entry_deleted<R>(lab: &NatLab, proto: &str, ip: &str, sports: &[u16], mut flow: impl FnMut(u16) -> R) -> Vec<R> {
    sports
        .iter()
        .map(|&p| {
            let made = flow(p);
            let delete = ["conntrack", "-D", "-p", proto, "--orig-src", ip, "--sport", &p.to_string()];
            let out = on_cpu0(&lab.node, &delete, CMD_TIMEOUT);
            assert!(out.status.success(), "{delete:?} in the node: {}", String::from_utf8_lossy(&out.stderr));
            made
        })
        .collect()
}

/// The one conntrack entry (`conn`) the events `evs` of the flow from `orig` name.
fn the_entry_of(orig: &str, evs: &[&Value]) -> u64 {
    let conns: Vec<u64> = evs.iter().filter_map(|e| e["conn"].as_u64()).collect::<BTreeSet<u64>>().into_iter().collect();
    let [conn] = conns[..] else { panic!("{orig}: want one entry per flow, got {conns:?}") };
    conn
}

/// `entries` (one per flow, the flows `what` says) must have some entry more than once: else no
/// flow took a freed entry's memory, and the run did not test what it is for.
fn assert_some_entry_reused(what: &str, entries: &[u64]) {
    let distinct: BTreeSet<u64> = entries.iter().copied().collect();
    eprintln!("{} {what} in {} distinct conntrack entries", entries.len(), distinct.len());
    assert!(
        distinct.len() < entries.len(),
        "{} {what} had {} distinct conntrack entries: no entry was reused, so this run did not test what it is for",
        entries.len(),
        distinct.len()
    );
}

/// A one-way UDP flow (datagrams to a Service whose backend never answers, so conntrack's
/// ctinfo is NEW on every packet) from an unconnected socket, whose packets carry no flow hash,
/// with the NAT check in the node's egress classifiers (`watch --nat-hook tc`). For such a
/// packet they skip reading the conntrack entry when they already know the flow in that entry
/// (tracer-ebpf's `NAT_KNOWN`, keyed by the entry's address and the flow's identity: its hash,
/// or without one its addresses, ports and ingress device). Flows one after another, each
/// entry deleted once its flow is done ([`flows_in_turn_each_entry_deleted`]), so that flows
/// take the entries of flows before them. Pins: each flow is reported `new` exactly once, not
/// once per datagram, and one in an entry an earlier flow had is not taken for that one (it
/// is reported `new` too); then `no_reply` after `--reply-timeout` and `timed_out` when its
/// entry is deleted; all by the backend's bridge port, in one entry per flow, some entry
/// holding several flows (else the run fails: it would not have tested the reuse).
#[test]
fn a_one_way_udp_flow_in_a_reused_conntrack_entry_is_reported_like_a_new_one_by_the_egress_classifiers() {
    if !require_privileged("a_one_way_udp_flow_in_a_reused_conntrack_entry_is_reported_like_a_new_one_by_the_egress_classifiers") {
        return;
    }
    let _lock = shared_lock();
    const DNS: u16 = 53;
    const TARGET: u16 = 5353;
    const DATAGRAMS: u32 = 5;
    let tracing = Tracing::Watch(Some("tc"));
    let lab = NatLab::new(1, 1);
    let backend = &lab.backends[0];
    silence(backend, "udp", TARGET);
    lab.kube_proxy_base();
    let cip = lab.cluster_ip(54);
    service(&lab.node, "ONEWAY", "udp", &cip, (DNS, TARGET), &[&backend.ip], false);
    let client = &lab.clients[0];
    let sports: Vec<u16> = (42801..42817).collect();
    let origs = origs_of(client, &sports);
    let (orig_dst, backend_ep) = (ep(&cip, DNS), ep(&backend.ip, TARGET));

    let traffic = || {
        flows_in_turn_each_entry_deleted(&lab, "udp", &client.ip, &sports, |p| {
            let udp = Udp { count: DATAGRAMS, size: 32, gap: 0.1, ..Udp::new(&client.ip, p, &cip, DNS) };
            let out = on_cpu0(&client.ns, &argv_refs(&udp.argv()), CMD_TIMEOUT);
            let sent = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert_eq!(sent, DATAGRAMS.to_string(), "datagrams sent from port {p}; stderr: {}", String::from_utf8_lossy(&out.stderr));
            // The entry lives on until the flow's no_reply was marked (due 1 s after its first
            // datagram, noticed at tracer's next 250 ms tick): tracer waits for a reply per entry
            // address, so a flow in an entry whose earlier flow is still waiting gets no no_reply
            // of its own. Its new event, what this test is about, does not depend on it.
            std::thread::sleep(Duration::from_millis(1250));
            ct_entry_of(&conntrack(&lab.node), "udp", &ep(&client.ip, p), &orig_dst)
        })
    };
    let ended = |evs: &[Value]| origs.iter().all(|o| conn_events(evs, o).iter().any(|e| e["state"] == "timed_out"));
    let (kernel, run, events) = traced_by(&lab, tracing, &["--proto", "udp"], traffic, |_, evs| ended(evs));

    let to_server_if = tracing.to_server_if(&lab, &backend_ep);
    let mut entries = Vec::new();
    for (orig, ct) in origs.iter().zip(&kernel) {
        let what = format!("one-way flow {orig} -> {orig_dst}");
        assert!(ct.reply_src == backend_ep && ct.unreplied && !ct.assured, "{what}: the kernel's entry before its deletion: {ct:?}");
        let evs = conn_events(&events, orig);
        assert_eq!(
            states(&evs),
            ["new", "no_reply", "timed_out"],
            "{what}: want new once ({DATAGRAMS} datagrams, none changes the entry's state), no_reply, then timed_out at its deletion:\n{}",
            dump(&events)
        );
        assert_tuples(&evs, ct, "dnat");
        assert_unanswered_towards(&what, &evs, orig, &backend_ep, &lab, to_server_if);
        entries.push(the_entry_of(orig, &evs));
    }
    assert_some_entry_reused(&format!("one-way UDP flows from {}", client.ip), &entries);
    assert_eq!(events.len(), 3 * origs.len(), "unexpected events:\n{}", dump(&events));
    assert_clean_summary(&run, 2 * origs.len());
    assert!(run.stderr.contains(&format!("{} connections ended", origs.len())), "the stop summary counts the ends:\n{}", run.stderr);
}

#[test]
fn connections_to_a_silent_backend_are_marked_no_reply() {
    if !require_privileged("connections_to_a_silent_backend_are_marked_no_reply") {
        return;
    }
    let _lock = shared_lock();
    silent_backend_marked_no_reply(Tracing::Nat);
}

/// [`connections_to_a_silent_backend_are_marked_no_reply`] with the NAT check in the node's
/// egress classifiers (`watch --nat-hook tc` in the node's namespace): the same events, the
/// silent backend's connections seen leaving by its bridge port, then marked `no_reply` after
/// `--reply-timeout`.
#[test]
fn connections_to_a_silent_backend_are_marked_no_reply_by_the_egress_classifiers() {
    if !require_privileged("connections_to_a_silent_backend_are_marked_no_reply_by_the_egress_classifiers") {
        return;
    }
    let _lock = shared_lock();
    silent_backend_marked_no_reply(Tracing::Watch(Some("tc")));
}

/// Four connections through a Service whose second backend never answers, traced by `tracing`:
/// two answered (new, reply, assured), two `new` then `no_reply` about `--reply-timeout` later,
/// each against the kernel's entry.
fn silent_backend_marked_no_reply(tracing: Tracing) {
    // Backend 0 answers; backend 1 is a pod whose namespace drops everything to the port.
    let (lab, _echo) = tcp_lab(2, 1);
    let silent = &lab.backends[1];
    silence(silent, "tcp", BACKEND_PORT);
    let cip = lab.cluster_ip(20);
    tcp_service(&lab, "HALF", &cip, &[0, 1], false);
    let client = &lab.clients[0];
    const REPLY_TIMEOUT_S: f64 = 1.0;
    let sports: Vec<u16> = (42101..=42104).collect();

    // 2 s connect timeout: the SYN is retransmitted once (at 1 s) before the client gives up.
    let traffic = || connect_each(client, &cip, SVC_PORT, &sports, 2.0, 3);
    let done = |results: &BTreeMap<u16, String>, evs: &[Value]| {
        let timed_out = with_result(client, results, "timeout");
        timed_out.iter().all(|o| conn_events(evs, o).iter().any(|e| e["state"] == "no_reply"))
            && all_assured(evs, &with_result(client, results, "ok 3").into_iter().collect::<Vec<_>>())
    };
    let (results, run, events) = traced_by(&lab, tracing, &[], traffic, done);
    let timed_out = with_result(client, &results, "timeout");
    let answered: Vec<String> = with_result(client, &results, "ok 3").into_iter().collect();
    assert_eq!((timed_out.len(), answered.len()), (2, 2), "nth every 2: two connections must time out, two be answered: {results:?}");

    let orig_dst = ep(&cip, SVC_PORT);
    let chosen = assert_all_answered_by(&lab, tracing, &events, &answered, &orig_dst, "dnat");
    let answering = ep(&lab.backends[0].ip, BACKEND_PORT);
    assert!(chosen.iter().all(|b| *b == answering), "the kernel sent answered connections elsewhere: {chosen:?}");
    let table = conntrack(&lab.node);
    let silent_ep = ep(&silent.ip, BACKEND_PORT);
    for orig in &timed_out {
        let what = format!("connection {orig} -> {orig_dst}");
        // The kernel's view: sent to the silent backend, never answered.
        let ct = ct_entry(&table, orig, &orig_dst);
        assert_eq!(ct.reply_src, silent_ep, "{what}: timed out, but the kernel sent it to {}: {ct:?}", ct.reply_src);
        assert!(ct.unreplied && !ct.assured, "{what}: the kernel's entry must be UNREPLIED: {ct:?}");
        let evs = conn_events(&events, orig);
        assert_eq!(
            states(&evs),
            ["new", "no_reply"],
            "{what}: want `new` once (the SYN retransmit changes no state) then one `no_reply`:\n{}",
            dump(&events)
        );
        assert_tuples(&evs, &ct, "dnat");
        // Every packet of this connection that left the node was the SYN to the backend.
        assert_unanswered_towards(&what, &evs, orig, &silent_ep, &lab, tracing.to_server_if(&lab, &silent_ep));
        let waited = (ts(evs[1]) - ts(evs[0])) as f64 / 1e9;
        assert!(
            (REPLY_TIMEOUT_S - 0.1..=REPLY_TIMEOUT_S + 3.0).contains(&waited),
            "{what}: no_reply came {waited:.3} s after the connection was first seen; --reply-timeout is {REPLY_TIMEOUT_S} s"
        );
    }
    assert_eq!(events.len(), 3 * answered.len() + 2 * timed_out.len(), "unexpected events:\n{}", dump(&events));
    assert_clean_summary(&run, timed_out.len());
}

#[test]
fn masquerade_out_of_the_node_gives_snat_with_the_translated_source() {
    if !require_privileged("masquerade_out_of_the_node_gives_snat_with_the_translated_source") {
        return;
    }
    let _lock = shared_lock();
    let lab = NatLab::new(1, 1);
    let _echo = tcp_echo(&lab.backends[0]);
    let client = &lab.clients[0];
    // What a CNI's ipMasq (or ip-masq-agent) writes: traffic from the client subnet leaving
    // towards the pods is masqueraded to the node's address there.
    lab.nat(&["-A", "POSTROUTING", "-s", &lab.addrs.net(1), "-o", &lab.bridge, "-j", "MASQUERADE"]);
    let backend = ep(&lab.backends[0].ip, BACKEND_PORT);
    let sports = [42201u16, 42202];
    let origs = origs_of(client, &sports);

    let traffic = || {
        for (p, r) in connect_each(client, &lab.backends[0].ip, BACKEND_PORT, &sports, 3.0, 4) {
            assert_eq!(r, "ok 4", "masqueraded connection from port {p} failed");
        }
    };
    let ((), run, events) = traced(&lab, &[], traffic, |_, evs| all_assured(evs, &origs));

    assert_all_answered(&lab, &events, &origs, &backend, "snat");
    let table = conntrack(&lab.node);
    for orig in &origs {
        let ct = ct_entry(&table, orig, &backend);
        let translated_ip = ct.reply_dst.rsplit_once(':').map(|(ip, _)| ip).unwrap_or_default();
        assert_eq!(translated_ip, lab.node_pod_ip, "{orig}: the kernel masqueraded to {} (want the node's bridge address)", ct.reply_dst);
        let evs = conn_events(&events, orig);
        // The translated source is what the backend sees.
        assert_eq!(evs[0]["src"], ct.reply_dst.as_str(), "{orig}: {}: src must be the translated source", evs[0]);
    }
    assert_eq!(events.len(), 3 * origs.len(), "unexpected events:\n{}", dump(&events));
    assert_clean_summary(&run, 0);
}

#[test]
fn masqueraded_service_traffic_gives_both() {
    if !require_privileged("masqueraded_service_traffic_gives_both") {
        return;
    }
    let _lock = shared_lock();
    let (lab, _echo) = tcp_lab(2, 1);
    let cip = lab.cluster_ip(30);
    // kube-proxy's masqueradeAll: KUBE-MARK-MASQ, then KUBE-POSTROUTING MASQUERADE --random-fully.
    tcp_service(&lab, "BOTH", &cip, &[0, 1], true);
    let client = &lab.clients[0];
    let sports = [42301u16, 42302, 42303, 42304];
    let origs = origs_of(client, &sports);

    let traffic = || {
        for (p, r) in connect_each(client, &cip, SVC_PORT, &sports, 3.0, 3) {
            assert_eq!(r, "ok 3", "connection from port {p} failed");
        }
    };
    let ((), run, events) = traced(&lab, &[], traffic, |_, evs| all_assured(evs, &origs));

    let chosen: BTreeSet<String> = assert_all_answered(&lab, &events, &origs, &ep(&cip, SVC_PORT), "both").into_iter().collect();
    assert_eq!(chosen.len(), 2, "round robin must have used both backends: {chosen:?}");
    for ev in &events {
        let translated = ev["reply_dst"].as_str().unwrap_or_default();
        assert!(translated.starts_with(&format!("{}:", lab.node_pod_ip)), "{ev}: reply_dst must be the node's bridge address");
    }
    assert_eq!(events.len(), 3 * origs.len(), "unexpected events:\n{}", dump(&events));
    assert_clean_summary(&run, 0);
}

/// A DNS-like UDP Service: one query per source port, round robin over a backend that answers
/// and one whose namespace drops the queries. UDP conntrack sets ASSURED only once a flow has
/// lasted about 2 s, so an answered query shows new then reply; an unanswered one new then
/// no_reply.
#[test]
fn udp_service_queries_are_answered_or_marked_no_reply() {
    if !require_privileged("udp_service_queries_are_answered_or_marked_no_reply") {
        return;
    }
    let _lock = shared_lock();
    const DNS: u16 = 53;
    const TARGET: u16 = 5353;
    let lab = NatLab::new(2, 1);
    let _echo: Vec<Announced> = lab.backends.iter().map(|b| udp_echo(b, TARGET)).collect();
    let silent = &lab.backends[1];
    silence(silent, "udp", TARGET);
    lab.kube_proxy_base();
    let cip = lab.cluster_ip(53);
    service(&lab.node, "DNS", "udp", &cip, (DNS, TARGET), &[&lab.backends[0].ip, &lab.backends[1].ip], false);
    let client = &lab.clients[0];
    let sports: Vec<u16> = (42601..=42604).collect();

    let traffic = || query_each(client, &cip, DNS, &sports, 1.0);
    let done = |results: &BTreeMap<u16, String>, evs: &[Value]| {
        with_result(client, results, "timeout").iter().all(|o| conn_events(evs, o).iter().any(|e| e["state"] == "no_reply"))
            && with_result(client, results, "ok").iter().all(|o| conn_events(evs, o).iter().any(|e| e["state"] == "reply"))
    };
    let (results, run, events) = traced(&lab, &["--proto", "udp"], traffic, done);
    let answered = with_result(client, &results, "ok");
    let lost = with_result(client, &results, "timeout");
    assert_eq!((answered.len(), lost.len()), (2, 2), "round robin: two answered, two lost: {results:?}");

    let table = conntrack(&lab.node);
    let netns = lab.node.inode();
    for orig in origs_of(client, &sports) {
        let what = format!("query {orig} -> {cip}:{DNS}");
        let ct = ct_entry_of(&table, "udp", &orig, &ep(&cip, DNS));
        let evs = conn_events(&events, &orig);
        assert_tuples(&evs, &ct, "dnat");
        let want_backend = if answered.contains(&orig) { &lab.backends[0] } else { silent };
        assert_eq!(ct.reply_src, ep(&want_backend.ip, TARGET), "{what}: the kernel's entry {ct:?}");
        let want_states: &[&str] = if answered.contains(&orig) { &["new", "reply"] } else { &["new", "no_reply"] };
        assert_eq!(states(&evs), want_states, "{what}:\n{}", dump(&events));
        assert_eq!(ct.unreplied, lost.contains(&orig), "{what}: the kernel's entry {ct:?}");
        for ev in &evs {
            assert_eq!(ev["backend"], ct.reply_src.as_str(), "{what}: {ev}: backend");
            assert_eq!(ev["netns"].as_u64(), Some(netns), "{what}: {ev}: netns must be the node's");
            let (src, dst, ifname) = if ev["state"] == "reply" {
                (&ct.orig_dst, &ct.orig_src, lab.client_ifs[0].as_str())
            } else {
                (&ct.reply_dst, &ct.reply_src, lab.bridge.as_str())
            };
            assert_eq!((ev["src"].as_str(), ev["dst"].as_str()), (Some(src.as_str()), Some(dst.as_str())), "{what}: {ev}: src/dst after NAT");
            if ev["state"] != "no_reply" {
                assert_eq!(ev["ifname"].as_str(), Some(ifname), "{what}: {ev}: ifname");
            }
        }
    }
    assert_eq!(events.len(), 2 * sports.len(), "unexpected events:\n{}", dump(&events));
    assert_clean_summary(&run, lost.len());
}

/// UDP streams through a Service, longer than conntrack's 2 s: UDP conntrack sets ASSURED on a
/// replied flow only once it is about 2 s old, by whichever packet of it comes then. The NAT
/// check reads the status word of a connection awaiting assured at most once a jiffy per entry
/// (tracer-ebpf's `still_awaiting_assured`, `AWAITING_CHECKED`), not on every packet, so the
/// packet that set ASSURED may not be the one that reports it. Two streams from one source port
/// each, a datagram every 20 ms: one answered throughout, one whose answers stop after its first
/// second, so that only the client's datagrams are there to show ASSURED (the egress
/// classifiers read the entry for every reply-direction packet; only the original direction
/// takes the once-a-jiffy answer). Pins: each stream is still reported new, reply, then
/// assured, exactly once each (the last with its reply seen, at least 2 s after new), with the
/// kernel's tuples and backend, and nothing else; by the transmit tracepoint (`tracer nat`) and
/// by the egress classifiers (`watch --nat-hook tc`), which share the check.
#[test]
fn a_udp_stream_through_a_service_is_reported_assured_once_conntrack_assures_it() {
    if !require_privileged("a_udp_stream_through_a_service_is_reported_assured_once_conntrack_assures_it") {
        return;
    }
    let _lock = shared_lock();
    for tracing in [Tracing::Nat, Tracing::Watch(Some("tc"))] {
        udp_streams_reported_assured(tracing);
    }
}

/// [`a_udp_stream_through_a_service_is_reported_assured_once_conntrack_assures_it`] traced by
/// `tracing`: the two streams one after the other, 3.5 s each, to the Service's one echoing
/// backend.
fn udp_streams_reported_assured(tracing: Tracing) {
    const PORT: u16 = 7000;
    const TARGET: u16 = 7007;
    // Answered throughout; answered for its first second only.
    const TWO_WAY: u16 = 42901;
    const REPLIES_STOP: u16 = 42902;
    const SECONDS: f64 = 3.5;
    let lab = NatLab::new(1, 1);
    let backend = &lab.backends[0];
    let _echo = udp_echo(backend, TARGET);
    lab.kube_proxy_base();
    let cip = lab.cluster_ip(55);
    service(&lab.node, "STREAM", "udp", &cip, (PORT, TARGET), &[&backend.ip], false);
    let client = &lab.clients[0];
    let (orig_dst, backend_ep) = (ep(&cip, PORT), ep(&backend.ip, TARGET));
    let origs = origs_of(client, &[TWO_WAY, REPLIES_STOP]);
    let what = |orig: &str| format!("{tracing:?}: UDP stream {orig} -> {orig_dst}");

    // Returns (datagrams sent, answered) of a stream from `sport`.
    let stream = |sport: u16| -> (u32, u32) {
        let argv = udp_stream_argv(&client.ip, sport, &cip, PORT, SECONDS, 0.02, 0.1);
        let out = client.ns.exec_timeout(&argv_refs(&argv), Duration::from_secs_f64(SECONDS + 20.0));
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let counts: Vec<u32> = text.split(' ').filter_map(|n| n.parse().ok()).collect();
        let [sent, answered] = counts[..] else {
            panic!("{}: the stream printed {text:?}; stderr: {}", what(&ep(&client.ip, sport)), String::from_utf8_lossy(&out.stderr))
        };
        (sent, answered)
    };
    // The streams, then the kernel's entries for them (read before the run's linger, well
    // within the entries' timeout).
    let traffic = || {
        let (sent, answered) = stream(TWO_WAY);
        assert!(sent >= 50 && answered == sent, "{}: {sent} datagrams sent, {answered} answered: want each answered", what(&origs[0]));
        let (sent, answered) = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_secs(1));
                let sport = REPLIES_STOP.to_string();
                backend
                    .ns
                    .iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--sport", &sport, "--dport", &TARGET.to_string(), "-j", "DROP"]);
            });
            stream(REPLIES_STOP)
        });
        assert!(
            answered >= 10 && sent >= answered + 10,
            "{}: {sent} datagrams sent, {answered} answered: want the first second's answered, and 10 or more after it not",
            what(&origs[1])
        );
        let table = conntrack(&lab.node);
        origs.iter().map(|o| ct_entry_of(&table, "udp", o, &orig_dst)).collect::<Vec<CtEntry>>()
    };
    let all_assured_ = |evs: &[Value]| all_assured(evs, &origs);
    let (kernel, run, events) = traced_by(&lab, tracing, &["--proto", "udp"], traffic, |_, evs| all_assured_(evs));

    // Towards the backend: new (and assured, if a client's datagram showed it); towards the
    // client: reply (and assured, if an answer showed it).
    for (orig, ct) in origs.iter().zip(&kernel) {
        let what = what(orig);
        assert!(
            !ct.unreplied && ct.assured && ct.reply_src == backend_ep,
            "{what}: the kernel's entry must be replied and assured, from the backend: {ct:?}"
        );
        let evs = conn_events(&events, orig);
        assert_eq!(states(&evs), ["new", "reply", "assured"], "{what}: want each state exactly once, in order:\n{}", dump(&events));
        assert_tuples(&evs, ct, "dnat");
        let last = evs[2];
        assert!(last["assured"] == true && last["reply_seen"] == true, "{what}: the assured event: {last}");
        let to_server = (&ct.reply_dst, &ct.reply_src, tracing.to_server_if(&lab, &backend_ep));
        let to_client = (&ct.orig_dst, &ct.orig_src, lab.client_ifs[0].as_str());
        for ev in &evs {
            assert_eq!(ev["backend"], backend_ep.as_str(), "{what}: {ev}: backend");
            assert_eq!(ev["netns"].as_u64(), Some(lab.node.inode()), "{what}: {ev}: netns must be the node's");
            let legs: &[_] = match ev["state"].as_str() {
                Some("new") => &[to_server],
                Some("reply") => &[to_client],
                // Once the answers stopped, only the client's datagrams can show it.
                _ if *orig == origs[1] => &[to_server],
                _ => &[to_server, to_client],
            };
            let seen = (ev["src"].as_str(), ev["dst"].as_str(), ev["ifname"].as_str());
            assert!(
                legs.iter().any(|(src, dst, ifname)| seen == (Some(src.as_str()), Some(dst.as_str()), Some(*ifname))),
                "{what}: {ev}: src/dst/ifname must be a packet of the stream leaving the node, after NAT ({legs:?})"
            );
        }
        // Conntrack assures the flow 2 s after its first packet: never reported before it did.
        let (t_new, t_assured) = (ts(evs[0]), ts(last));
        assert!(
            t_assured - t_new >= 1_900_000_000,
            "{what}: assured {} ms after new, before conntrack could set it",
            (t_assured - t_new) / 1_000_000
        );
    }
    assert_eq!(events.len(), 3 * origs.len(), "{tracing:?}: unexpected events:\n{}", dump(&events));
    assert_clean_summary(&run, 0);
}

#[test]
fn backend_pods_are_named_and_pod_filter_keeps_the_clients_connections() {
    if !require_privileged("backend_pods_are_named_and_pod_filter_keeps_the_clients_connections") {
        return;
    }
    let _lock = shared_lock();
    let (lab, _echo) = tcp_lab(2, 2);
    let cip = lab.cluster_ip(40);
    tcp_service(&lab, "PODS", &cip, &[0, 1], false);
    let (client, other) = (&lab.clients[0], &lab.clients[1]);
    let file = TempFile(std::env::temp_dir().join(format!("{}-pods.json", unique_name("nat"))));
    let pods = [
        ("client", client.ip.as_str()),
        ("other", other.ip.as_str()),
        ("web-0", lab.backends[0].ip.as_str()),
        ("web-1", lab.backends[1].ip.as_str()),
    ];
    std::fs::write(&file.0, pods_file(&pods)).expect("write pods file");
    let from_file = format!("file:{}", file.0.display());
    let pod_of = |ip_port: &str| -> Value {
        let ip = ip_port.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(ip_port);
        pods.iter().find(|(_, p)| *p == ip).map_or(Value::Null, |(n, _)| Value::from(format!("lab/{n}")))
    };
    let block = lab.block();

    let start = now_nanos();
    let all = start_nat(&["--pods-from", &from_file, "--ip", &block, "--reply-timeout", "1s"]);
    let only = start_nat(&["--pods-from", &from_file, "--pod", "lab/client", "--reply-timeout", "1s"]);
    let (mine, theirs) = ([42401u16, 42402], [42411u16, 42412]);
    for (host, sports) in [(client, &mine), (other, &theirs)] {
        for (p, r) in connect_each(host, &cip, SVC_PORT, sports, 3.0, 3) {
            assert_eq!(r, "ok 3", "connection from {}:{p} failed", host.ip);
        }
    }
    let mine_o = origs_of(client, &mine);
    let every: Vec<String> = mine_o.iter().cloned().chain(origs_of(other, &theirs)).collect();
    let all_complete = all.wait_for(EVENT_WAIT, |evs| all_assured(evs, &every));
    let only_complete = only.wait_for(EVENT_WAIT, |evs| all_assured(evs, &mine_o));
    let (_, all_evs) = finish(all, all_complete, start);
    let (_, only_evs) = finish(only, only_complete, start);

    let table = conntrack(&lab.node);
    for orig in &every {
        let ct = ct_entry(&table, orig, &ep(&cip, SVC_PORT));
        let evs = conn_events(&all_evs, orig);
        assert_eq!(states(&evs), ["new", "reply", "assured"], "connection {orig}:\n{}", dump(&all_evs));
        for ev in &evs {
            assert_eq!(
                ev["backend_pod"],
                pod_of(&ct.reply_src),
                "event {ev}: backend_pod must name the pod the kernel sent it to ({})",
                ct.reply_src
            );
            let (src, dst) = (ev["src"].as_str().unwrap_or(""), ev["dst"].as_str().unwrap_or(""));
            assert_eq!(ev["src_pod"], pod_of(src), "event {ev}: src_pod");
            assert_eq!(ev["dst_pod"], pod_of(dst), "event {ev}: dst_pod (a ClusterIP is no pod)");
            assert!(ev["netns_pod"].is_null(), "event {ev}: the node's namespace is no pod");
        }
    }
    // --pod lab/client: exactly the client's connections, with the same states.
    for orig in &mine_o {
        assert_eq!(states(&conn_events(&only_evs, orig)), ["new", "reply", "assured"], "--pod lab/client, connection {orig}:\n{}", dump(&only_evs));
    }
    for ev in &only_evs {
        assert!(mine_o.iter().any(|o| ev["orig_src"] == o.as_str()), "--pod lab/client let another pod's connection through: {ev}");
    }
    assert_eq!(only_evs.len(), 3 * mine_o.len(), "--pod lab/client:\n{}", dump(&only_evs));
}

/// The node name the Service tests' pods run on (in the fake API and the file).
const NODE: &str = "node-lab";

/// Service names (the `service` field): from the fake Kubernetes API (list, then watch: a
/// deleted Service stops naming connections), from a `kubectl get pods,services` file (read
/// once), and not at all, with one warning, when the API refuses Services (RBAC 403). A DNAT to
/// an address the API knows only for another port is no Service's.
#[test]
fn services_are_named_from_the_api_and_the_file() {
    if !require_privileged("services_are_named_from_the_api_and_the_file") {
        return;
    }
    let _lock = shared_lock();
    let (lab, _echo) = tcp_lab(2, 1);
    let (web_ip, other_ip) = (lab.cluster_ip(50), lab.cluster_ip(51));
    tcp_service(&lab, "WEB", &web_ip, &[0, 1], false);
    tcp_service(&lab, "OTHER", &other_ip, &[0], false);
    // Dual-stack with a second (UDP) port; `other` has the address of the second rule, but for
    // port 443 only; a headless Service has no address at all.
    let web = ServiceFixture::new("lab", "web", &[&web_ip, "fd00:10:96::50"], SVC_PORT, BACKEND_PORT).port("UDP", 53, 5353);
    let other = ServiceFixture::new("lab", "other", &[&other_ip], 443, BACKEND_PORT);
    let headless = ServiceFixture::new("lab", "db", &["None"], 5432, 5432);
    let services = [web.clone(), other, headless];
    let names: Vec<String> = (0..lab.backends.len()).map(|i| format!("web-{i}")).collect();
    let pods: Vec<PodFixture> = lab.backends.iter().zip(&names).map(|(b, n)| PodFixture::new("lab", n, NODE, &[&b.ip])).collect();
    let api = FakeApi::start_with(&pods, &services);
    let refusing = FakeApi::start_with(&pods, &services);
    refusing.forbid(Resource::Services);
    let file = TempFile(std::env::temp_dir().join(format!("{}-pods-services.json", unique_name("nat"))));
    let file_pods: Vec<(&str, &str)> = names.iter().zip(&lab.backends).map(|(n, b)| (n.as_str(), b.ip.as_str())).collect();
    let objects: Vec<Value> = services.iter().map(ServiceFixture::object).collect();
    std::fs::write(&file.0, pods_and_services_file(&file_pods, &objects)).expect("write pods,services file");

    let (block, kc, kc_refusing) = (lab.block(), api.kubeconfig(), refusing.kubeconfig());
    let (kc, kc_refusing) = (kc.to_str().expect("utf-8"), kc_refusing.to_str().expect("utf-8"));
    let from_file = format!("file:{}", file.0.display());
    let common = ["--ip", block.as_str(), "--reply-timeout", "1s"];
    let start = now_nanos();
    let kube = |kc: &str| start_nat(&[&["--pods-from", "kube", "--kubeconfig", kc, "--node-name", NODE][..], &common].concat());
    let (t_api, t_refused) = (kube(kc), kube(kc_refusing));
    let t_file = start_nat(&[&["--pods-from", from_file.as_str()][..], &common].concat());
    // The pods' and the Services' watches are open before anything changes.
    assert!(api.wait_watching(2, Duration::from_secs(10)), "tracer never watched pods and Services:\n{}", api.request_log());

    let client = &lab.clients[0];
    let (to_web, to_other, after_delete) = ([42701u16, 42702], [42703u16], [42704u16]);
    for (dst, sports) in [(&web_ip, &to_web[..]), (&other_ip, &to_other)] {
        for (p, r) in connect_each(client, dst, SVC_PORT, sports, 3.0, 3) {
            assert_eq!(r, "ok 3", "connection from port {p} to {dst} failed");
        }
    }
    let before: Vec<String> = origs_of(client, &[&to_web[..], &to_other].concat());
    for t in [&t_api, &t_file, &t_refused] {
        t.wait_for(EVENT_WAIT, |evs| all_assured(evs, &before));
    }
    // The Service is deleted: the API's watch tells the first tracer; the file does not change.
    api.delete_service(&web);
    std::thread::sleep(Duration::from_secs(1));
    for (p, r) in connect_each(client, &web_ip, SVC_PORT, &after_delete, 3.0, 3) {
        assert_eq!(r, "ok 3", "connection from port {p} after the deletion failed");
    }
    let every: Vec<String> = before.iter().cloned().chain(origs_of(client, &after_delete)).collect();
    let done: Vec<bool> = [&t_api, &t_file, &t_refused].iter().map(|t| t.wait_for(EVENT_WAIT, |evs| all_assured(evs, &every))).collect();
    let [(run_api, ev_api), (run_file, ev_file), (run_refused, ev_refused)] =
        [(t_api, done[0]), (t_file, done[1]), (t_refused, done[2])].map(|(t, complete)| finish(t, complete, start));

    let web_name = Value::from(web.key());
    let (o_web, o_other, o_after) = (origs_of(client, &to_web), origs_of(client, &to_other), origs_of(client, &after_delete));
    let table = conntrack(&lab.node);
    // (run, events, `service` of the connections to web before the deletion, and after it);
    // the connection to other's address is no Service's in every run.
    let cases = [
        ("--pods-from kube", &ev_api, &web_name, &Value::Null),
        ("--pods-from file", &ev_file, &web_name, &web_name),
        ("--pods-from kube, Services refused", &ev_refused, &Value::Null, &Value::Null),
    ];
    for (what, events, want_web, want_after) in cases {
        for (origs, dst, want) in [(&o_web, &web_ip, want_web), (&o_other, &other_ip, &Value::Null), (&o_after, &web_ip, want_after)] {
            for orig in origs {
                let ct = ct_entry(&table, orig, &ep(dst, SVC_PORT));
                let evs = conn_events(events, orig);
                assert_eq!(states(&evs), ["new", "reply", "assured"], "{what}: connection {orig}:\n{}", dump(events));
                for ev in &evs {
                    assert_eq!(&ev["service"], want, "{what}: event {ev}: service of a connection to {dst}:{SVC_PORT}");
                    let backend =
                        names.iter().zip(&lab.backends).find(|(_, b)| ct.reply_src == ep(&b.ip, BACKEND_PORT)).map(|(n, _)| format!("lab/{n}"));
                    assert_eq!(ev["backend_pod"].as_str(), backend.as_deref(), "{what}: event {ev}: backend_pod (kernel: {ct:?})");
                }
            }
        }
    }

    let said = |run: &TracerRun, needle: &str| run.stderr.lines().filter(|l| l.contains(needle)).count();
    let from = |run: &TracerRun, source: &str| {
        run.stderr.lines().any(|l| l.starts_with(&format!("tracer: services from {source}")) && l.ends_with(": 3 services"))
    };
    assert!(from(&run_api, &format!("kube ({}", api.url())), "say where the 3 Services came from:\n{}", run_api.stderr);
    assert!(from(&run_file, &format!("file {}", file.0.display())), "say where the 3 Services came from:\n{}", run_file.stderr);
    assert_eq!(said(&run_api, "tracer: services from"), 1, "{}", run_api.stderr);
    let warned: Vec<&str> = run_refused.stderr.lines().filter(|l| l.contains("Services") || l.contains("services")).collect();
    assert_eq!(warned.len(), 1, "one warning when Services are refused:\n{}", run_refused.stderr);
    assert!(warned[0].contains("403") && warned[0].contains(&refusing.url()), "the warning names the API and why: {}", warned[0]);
    for run in [&run_api, &run_refused] {
        assert!(!run.stderr.contains("watching"), "no watch failed:\n{}", run.stderr);
    }

    // What went over the wire: the Services of all namespaces (no selector), listed, then
    // watched from the list's version; nothing more asked of a server that refused them.
    let svc_reqs = |a: &FakeApi| -> Vec<ApiRequest> { a.requests().into_iter().filter(|r| r.path == "/api/v1/services").collect() };
    let reqs = svc_reqs(&api);
    assert!(reqs.iter().all(|r| r.status == 200 && r.param("fieldSelector").is_none()), "{}", api.request_log());
    assert!(reqs.first().is_some_and(|r| !r.is_watch()), "a list first:\n{}", api.request_log());
    let watch = reqs.iter().find(|r| r.is_watch()).unwrap_or_else(|| panic!("no watch of Services:\n{}", api.request_log()));
    assert!(watch.param("resourceVersion").and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v > 0), "watch from the list's version: {watch}");
    let refused_reqs = svc_reqs(&refusing);
    assert_eq!(refused_reqs.len(), 1, "one refused list, no watch retrying it:\n{}", refusing.request_log());
    assert_eq!(refused_reqs[0].status, 403);
}

#[test]
fn bad_reply_timeout_exits_2_with_one_line() {
    if !require_privileged("bad_reply_timeout_exits_2_with_one_line") {
        return;
    }
    // (args, words of which the one error line must name at least one)
    let cases: [(&[&str], &[&str]); 5] = [
        (&["--reply-timeout", "0"], &["reply-timeout"]),
        (&["--reply-timeout", "0s"], &["reply-timeout"]),
        (&["--reply-timeout", "x"], &["reply-timeout"]),
        // clap reads `-1s` as a flag of its own: the line names that (`-1`) instead.
        (&["--reply-timeout", "-1s"], &["reply-timeout", "-1"]),
        (&["--reply-timeout"], &["--reply-timeout"]),
    ];
    for (extra, words) in cases {
        // Were the input accepted, the run would end by itself.
        let mut args = vec!["nat", "--pods-from", "none", "--duration", "3s"];
        args.extend_from_slice(extra);
        assert_refused(&args, words);
    }
}

#[test]
fn no_programs_or_links_left_after_exit() {
    if !require_privileged("no_programs_or_links_left_after_exit") {
        return;
    }
    let _lock = shared_lock();
    let ip = format!("{}/32", AddrBlock::new().host(3, 1));
    let cases: [(&[&str], &str); 4] =
        [(&[], "SIGINT"), (&["--reply-timeout", "1s"], "SIGTERM"), (&["-o", "json", "--duration", "2s"], "--duration"), (&[], "SIGKILL")];
    assert_nothing_left_after("nat", &["--pods-from", "none", "--ip", &ip], &cases);
}

/// Issue 6: how each connection ended, from conntrack's destroy events: answered connections
/// that closed are `closed`, the silent backend's are `timed_out` (after their `no_reply`).
/// Short conntrack timeouts in the node; `conntrack -L` reaps expired entries (a dump evicts
/// them) so that their ends do not wait for the garbage collector's next pass.
#[test]
fn connection_ends_are_reported_closed_or_timed_out() {
    if !require_privileged("connection_ends_are_reported_closed_or_timed_out") {
        return;
    }
    let _lock = shared_lock();
    let (lab, _echo) = tcp_lab(2, 1);
    let silent = &lab.backends[1];
    silence(silent, "tcp", BACKEND_PORT);
    // Not loose: a late segment of a connection whose entry already went must not make a new
    // entry (it would be NATed again, and count in the Service's round robin).
    for (key, value) in [("tcp_timeout_time_wait", 1), ("tcp_timeout_syn_sent", 2), ("tcp_timeout_close", 1), ("tcp_loose", 0)] {
        lab.node.exec_ok(&["sysctl", "-q", "-w", &format!("net.netfilter.nf_conntrack_{key}={value}")]);
    }
    // One Service per backend: which connection goes where does not hang on a round robin.
    let (cip_ok, cip_silent) = (lab.cluster_ip(30), lab.cluster_ip(31));
    tcp_service(&lab, "ENDSOK", &cip_ok, &[0], false);
    tcp_service(&lab, "ENDSSILENT", &cip_silent, &[1], false);
    let client = &lab.clients[0];
    let (ok_ports, silent_ports) = ([42301u16, 42302], [42303u16, 42304]);

    let traffic = || {
        let mut results = connect_each(client, &cip_ok, SVC_PORT, &ok_ports, 2.0, 3);
        results.extend(connect_each(client, &cip_silent, SVC_PORT, &silent_ports, 2.0, 3));
        // Bounded: reap expired entries until every connection ended (checked by `done`).
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(500));
            lab.node.exec_ok(&["conntrack", "-L"]);
        }
        results
    };
    let ended =
        |evs: &[Value], o: &String| conn_events(evs, o).last().is_some_and(|e| ["closed", "timed_out"].contains(&e["state"].as_str().unwrap_or("")));
    let done = |results: &BTreeMap<u16, String>, evs: &[Value]| {
        let origs: Vec<String> = results.keys().map(|p| ep(&client.ip, *p)).collect();
        origs.iter().all(|o| ended(evs, o))
    };
    let (results, run, events) = traced(&lab, &[], traffic, done);
    let timed_out = with_result(client, &results, "timeout");
    let answered = with_result(client, &results, "ok 3");
    assert_eq!(answered, origs_of(client, &ok_ports).into_iter().collect(), "the answering backend's Service: {results:?}");
    assert_eq!(timed_out, origs_of(client, &silent_ports).into_iter().collect(), "the silent backend's Service: {results:?}");
    for orig in &answered {
        let evs = conn_events(&events, orig);
        assert_eq!(states(&evs), ["new", "reply", "assured", "closed"], "{orig}: answered and closed:\n{}", dump(&events));
    }
    for orig in &timed_out {
        let evs = conn_events(&events, orig);
        assert_eq!(states(&evs), ["new", "no_reply", "timed_out"], "{orig}: never answered:\n{}", dump(&events));
        let end = evs[2];
        assert_eq!(end["backend"], ep(&silent.ip, BACKEND_PORT).as_str(), "{orig}: {end}");
        assert_eq!(end["netns"].as_u64(), Some(lab.node.inode()), "{orig}: {end}");
        assert!(ts(end) > ts(evs[1]), "{orig}: the end comes after no_reply:\n{}", dump(&events));
    }
    assert_eq!(events.len(), 4 * answered.len() + 3 * timed_out.len(), "unexpected events:\n{}", dump(&events));
    assert_clean_summary(&run, 2 * timed_out.len() + answered.len());
    assert!(run.stderr.contains("4 connections ended"), "the stop summary counts the ends:\n{}", run.stderr);
}

/// `--nat-hook tc` where the egress classifiers cannot see the node's NAT is refused before
/// anything is attached (exit 2, one line starting `tracer: error: --nat-hook tc`, the way every
/// bad input line names its flag and value): in a namespace with no veth or tunnel device
/// (watch, diagnose, serve), without the mtu family, with `--iface`. An unknown hook is exit 2
/// naming it; `tracer nat` has no `--nat-hook`.
#[test]
fn nat_hook_tc_is_refused_where_the_classifiers_cannot_see_nat() {
    if !require_privileged("nat_hook_tc_is_refused_where_the_classifiers_cannot_see_nat") {
        return;
    }
    let _lock = shared_lock();
    // Only `lo`.
    let empty = Netns::new("e");
    let lab = NatLab::new(1, 1);
    let block = lab.block();
    // Were the input accepted, the run would end by itself.
    let common = ["--nat-hook", "tc", "--pods-from", "none", "--ip", block.as_str(), "--duration", "3s"];
    let iface = lab.client_ifs[0].as_str();
    let cases: [(&Netns, &[&str]); 6] = [
        (&empty, &["watch", "--probes", "nat,mtu"]),
        (&empty, &["diagnose"]),
        (&empty, &["serve", "--quiet"]),
        (&lab.node, &["watch", "--probes", "nat"]),
        (&lab.node, &["watch", "--probes", "nat,mtu", "--iface", iface]),
        (&lab.node, &["diagnose", "--iface", iface]),
    ];
    for (ns, args) in cases {
        let args = [args, &common[..]].concat();
        let line = assert_refused_in(ns, &args, &["--nat-hook tc"]);
        assert!(
            line.starts_with("tracer: error: --nat-hook tc"),
            "{args:?} in {}: the line must start `tracer: error: --nat-hook tc`: {line}",
            ns.name
        );
    }
    for command in ["watch", "diagnose", "serve"] {
        assert_refused(&[command, "--nat-hook", "bogus", "--pods-from", "none", "--duration", "3s"], &["bogus"]);
    }
    assert_refused(&["nat", "--nat-hook", "tc", "--pods-from", "none", "--duration", "3s"], &["--nat-hook"]);
}

/// Auto puts the NAT check on the transmit tracepoint (`nat_xmit`, every namespace) where the
/// egress classifiers cannot see the node's NAT: in a namespace with no veth or tunnel device,
/// without the mtu family, with `--iface`; `--nat-hook xmit` chooses it where auto would choose
/// the classifiers. Told by the attached line and the programs the tracer holds.
#[test]
fn nat_hook_auto_falls_back_to_the_transmit_tracepoint() {
    if !require_privileged("nat_hook_auto_falls_back_to_the_transmit_tracepoint") {
        return;
    }
    let _lock = shared_lock();
    let empty = Netns::new("e");
    let lab = NatLab::new(1, 1);
    let block = lab.block();
    let iface = lab.client_ifs[0].as_str();
    let cases: [(&Netns, &[&str]); 4] = [
        (&empty, &["--probes", "nat,mtu"]),
        (&lab.node, &["--probes", "nat"]),
        (&lab.node, &["--probes", "nat,mtu", "--iface", iface]),
        (&lab.node, &["--probes", "nat,mtu", "--nat-hook", "xmit"]),
    ];
    for (ns, extra) in cases {
        let args = [&["watch", "-o", "json", "--pods-from", "none", "--ip", block.as_str()][..], extra].concat();
        let t = Tracer::start_in(ns, &args);
        assert_eq!(nat_hook_of(&t), "xmit", "{args:?} in {}", ns.name);
        t.stop().assert_code(0);
    }
}
