//! Privileged integration tests of the node scope (`--netns`, `--this-node`): two "nodes" on
//! this one kernel (as kind, k3d and minikube run them), the same fault caused in both, and a
//! tracer scoped to one node must report that node's events only, for drops, TCP, NAT and MTU, alone
//! and combined with the other filters. An unscoped tracer run beside each scoped one proves
//! that the other node's events happened and pass every other filter: only the scope left them
//! out. Run as root: `cargo build --release -p tracer && cargo test -p tracer-tests --test scope`.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{collections::BTreeSet, time::Duration};

use tracer_tests::{
    node::{NodeLab, require_node},
    traffic::tcp_connect,
    *,
};

/// Sends `n` UDP datagrams to 127.0.0.1:`port` inside whatever namespace it runs in.
fn udp_to_loopback(port: u16, n: u32) -> Vec<String> {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range({n}):\n    \
         try: s.sendto(b'scope',('127.0.0.1',{port}))\n    except OSError: pass\n"
    );
    vec!["python3".into(), "-c".into(), script]
}

/// `COMMAND -o json`, an `--ip ADDR/32` for each of `hosts` (the labs' own), then `extra`.
fn json_args(command: &str, hosts: &[&str], extra: &[String]) -> Vec<String> {
    let mut v: Vec<String> = vec![command.into(), "-o".into(), "json".into()];
    for host in hosts {
        v.extend(["--ip".into(), format!("{host}/32")]);
    }
    v.extend_from_slice(extra);
    v
}

/// `&str`s as owned arguments.
fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Stops the scoped and the unscoped tracer once the unscoped one saw both `namespaces` (or
/// after `wait`), checks that both exited 0 and that the unscoped one saw `second` do `what`
/// (`is`: the event it looks for), and returns the scoped run's events, every one of which
/// must have been seen in `first`.
fn stop_both(scoped: Tracer, unscoped: Tracer, (first, second): (u64, u64), wait: Duration, is: impl Fn(&Value) -> bool, what: &str) -> Vec<Value> {
    unscoped.wait_for(wait, |e| namespaces(e).contains(&first) && namespaces(e).contains(&second));
    let (scoped, unscoped) = (scoped.stop(), unscoped.stop());
    scoped.assert_code(0);
    unscoped.assert_code(0);
    let control = unscoped.events();
    assert!(seen_in(&control, second).iter().any(|e| is(e)), "node 2: {what}:\n{}", dump(&control));
    let events = scoped.events();
    assert!(events.iter().all(|e| e["netns"].as_u64() == Some(first)), "--netns: node 1 only ({what}):\n{}", dump(&events));
    events
}

/// The set of `netns` inodes of `events`.
fn namespaces(events: &[Value]) -> BTreeSet<u64> {
    events.iter().filter_map(|e| e["netns"].as_u64()).collect()
}

/// Events of `events` seen in namespace `inode`.
fn seen_in(events: &[Value], inode: u64) -> Vec<&Value> {
    events.iter().filter(|e| e["netns"].as_u64() == Some(inode)).collect()
}

/// The dropping half of a node: `b` drops UDP to `ports` in INPUT (a rule), `a` sends to it.
fn dropping(ports: &[u16]) -> PairLab {
    let lab = PairLab::new();
    for port in ports {
        lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "udp", "--dport", &port.to_string(), "-j", "DROP"]);
    }
    lab
}

#[test]
fn drops_are_reported_only_for_the_namespaces_given() {
    let test = "drops_are_reported_only_for_the_namespaces_given";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const P1: u16 = 5611;
    const P2: u16 = 5612;
    const SPORT: u16 = 40611;
    // Node 1 drops P1 and P2, node 2 drops P1: the same rule on both nodes.
    let (one, two) = (dropping(&[P1, P2]), dropping(&[P1]));
    let ips = |extra: &[&str]| json_args("drops", &[&one.b_ip, &two.b_ip], &owned(extra));
    let (p1, b2_path, b1_inode) = (P1.to_string(), two.b.path().display().to_string(), one.b.inode().to_string());
    // By name, with --port: node 1's P1 drops only. By path and by inode, repeated: both nodes.
    let scoped = Tracer::start(&argv_refs(&ips(&["--netns", &one.b.name, "--port", &p1])));
    let both = Tracer::start(&argv_refs(&ips(&["--netns", &b2_path, "--netns", &b1_inode])));
    let unscoped = Tracer::start(&argv_refs(&ips(&[])));

    for (lab, ports) in [(&one, &[P1, P2][..]), (&two, &[P1][..])] {
        for port in ports {
            assert_eq!(Udp::new(&lab.a_ip, SPORT, &lab.b_ip, *port).send(&lab.a), 3);
        }
    }
    let all = 9;
    assert!(unscoped.wait_for(Duration::from_secs(10), |e| e.len() >= all), "the unscoped tracer missed drops:\n{}", dump(&unscoped.events()));
    both.wait_for(Duration::from_secs(5), |e| e.len() >= all);
    scoped.wait_for(Duration::from_secs(2), |e| e.len() >= 3);
    let (scoped, both, unscoped) = (scoped.stop(), both.stop(), unscoped.stop());
    for run in [&scoped, &both, &unscoped] {
        run.assert_code(0);
    }

    let (b1, b2) = (one.b.inode(), two.b.inode());
    let control = unscoped.events();
    assert_eq!(namespaces(&control), BTreeSet::from([b1, b2]), "the unscoped run sees both nodes:\n{}", dump(&control));
    assert_eq!(seen_in(&control, b2).len(), 3, "node 2 dropped its P1 packets:\n{}", dump(&control));

    let events = scoped.events();
    assert_eq!(events.len(), 3, "--netns {} --port {P1}: node 1's P1 drops only:\n{}", one.b.name, dump(&events));
    for ev in &events {
        assert_eq!((ev["netns"].as_u64(), ev["dst"].as_str()), (Some(b1), Some(format!("{}:{P1}", one.b_ip).as_str())), "{ev}");
        assert_eq!(ev["reason"], "NETFILTER_DROP", "{ev}");
    }
    let summary = parse_summary(&scoped.stderr, "drops").unwrap_or_else(|| panic!("no summary:\n{}", scoped.stderr));
    assert_eq!(summary.seen, 3, "the kernel counted only what passed the scope: {summary:?}");

    let events = both.events();
    assert_eq!(events.len(), all, "--netns PATH --netns INODE: both nodes:\n{}", dump(&events));
    assert_eq!(namespaces(&events), BTreeSet::from([b1, b2]));
}

#[test]
fn tcp_retransmits_are_reported_only_for_the_namespace_given() {
    let test = "tcp_retransmits_are_reported_only_for_the_namespace_given";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5621;
    let (one, two) = (PairLab::new(), PairLab::new());
    for lab in [&one, &two] {
        lab.b.iptables("iptables-legacy", &["-A", "INPUT", "-p", "tcp", "--dport", &PORT.to_string(), "-j", "DROP"]);
    }
    let base = |extra: &[&str]| json_args("retrans", &[&one.b_ip, &two.b_ip], &owned(&[&["--port", &PORT.to_string()], extra].concat()));
    // The sockets live in the clients' namespaces: node 1's client is `one.a`.
    let scoped = Tracer::start(&argv_refs(&base(&["--netns", &one.a.name])));
    let unscoped = Tracer::start(&argv_refs(&base(&[])));
    let (r1, r2) = std::thread::scope(|s| {
        let r1 = s.spawn(|| tcp_connect(&one.a, &one.a_ip, 40621, &one.b_ip, PORT, 2.5));
        let r2 = s.spawn(|| tcp_connect(&two.a, &two.a_ip, 40622, &two.b_ip, PORT, 2.5));
        (r1.join().expect("client 1"), r2.join().expect("client 2"))
    });
    assert_eq!((r1.as_str(), r2.as_str()), ("timeout", "timeout"), "the SYNs are dropped on both nodes");
    let syn = |e: &Value| e["kind"] == "retransmit" && e["state"] == "SYN_SENT";
    let events = stop_both(scoped, unscoped, (one.a.inode(), two.a.inode()), Duration::from_secs(5), syn, "the client retransmitted its SYN");
    assert!(events.iter().any(syn), "node 1's client's SYN retransmits:\n{}", dump(&events));
}

/// The router of a [`RoutedLab`] with a small MTU towards the server: a full-size datagram with
/// DF makes it send frag-needed back and drop the packet.
const SMALL_MTU: u32 = 1400;

/// Sends three 1450-byte UDP datagrams with DF set from `src` to `dst:port`.
fn df_datagrams(src: &str, dst: &str, port: u16) -> Vec<String> {
    let script = format!(
        "import socket, time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IP, 10, 2)\n\
         s.bind(('{src}', 0))\nfor _ in range(3):\n    try: s.sendto(b'x'*1450,('{dst}',{port}))\n    except OSError: pass\n    time.sleep(0.1)\n"
    );
    vec!["python3".into(), "-c".into(), script]
}

#[test]
fn mtu_events_are_reported_only_for_the_namespace_given() {
    let test = "mtu_events_are_reported_only_for_the_namespace_given";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5631;
    let (one, two) = (RoutedLab::new(), RoutedLab::new());
    for lab in [&one, &two] {
        lab.r.ip(&["link", "set", &lab.rb_if, "mtu", &SMALL_MTU.to_string()]);
    }
    // tc on both routers' client-side devices (frag-needed leaving them) and the ICMP tracepoint:
    // programs see both nodes; the scope keeps node 1's router.
    let base = |extra: &[&str]| {
        let mut v = Vec::new();
        for lab in [&one, &two] {
            v.extend(["--iface".to_string(), format!("{}:{}", lab.r.name, lab.ra_if)]);
        }
        v.extend(owned(extra));
        json_args("mtu", &[&one.a_ip, &two.a_ip], &v)
    };
    let scoped = Tracer::start(&argv_refs(&base(&["--netns", &one.r.name])));
    let unscoped = Tracer::start(&argv_refs(&base(&[])));
    for lab in [&one, &two] {
        let out = lab.a.exec_timeout(&argv_refs(&df_datagrams(&lab.a_ip, &lab.b_ip, PORT)), Duration::from_secs(10));
        assert!(out.status.success(), "sender: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sent = |e: &Value| e["event"] == "frag_needed_sent";
    let events = stop_both(scoped, unscoped, (one.r.inode(), two.r.inode()), Duration::from_secs(5), sent, "the router sent frag-needed");
    assert!(events.iter().any(sent), "node 1's router's frag-needed:\n{}", dump(&events));
}

/// Each node's client sends to a virtual address that its own OUTPUT rule DNATs to its server:
/// conntrack's NAT is per namespace, and the scope keeps node 1's.
#[test]
fn nat_rewrites_are_reported_only_for_the_namespace_given() {
    let test = "nat_rewrites_are_reported_only_for_the_namespace_given";
    if !require_privileged(test) {
        return;
    }
    let _lock = shared_lock();
    const VPORT: u16 = 5661;
    const PORT: u16 = 5662;
    let (one, two) = (PairLab::new(), PairLab::new());
    let vip = |lab: &PairLab| lab.addrs.host(2, 1);
    for lab in [&one, &two] {
        lab.a.route(&[&format!("{}/32", vip(lab)), "dev", &lab.a_if]);
        let to = format!("{}:{PORT}", lab.b_ip);
        lab.a.iptables(
            "iptables-legacy",
            &["-t", "nat", "-A", "OUTPUT", "-p", "udp", "-d", &vip(lab), "--dport", &VPORT.to_string(), "-j", "DNAT", "--to-destination", &to],
        );
    }
    let blocks = [one.addrs.net(0), one.addrs.net(2), two.addrs.net(0), two.addrs.net(2)];
    let base = |extra: &[&str]| {
        let mut v = owned(&["--pods-from", "none", "--reply-timeout", "1s"]);
        for block in &blocks {
            v.extend(["--ip".to_string(), block.clone()]);
        }
        v.extend(owned(extra));
        json_args("nat", &[], &v)
    };
    let scoped = Tracer::start(&argv_refs(&base(&["--netns", &one.a.name])));
    let unscoped = Tracer::start(&argv_refs(&base(&[])));
    for lab in [&one, &two] {
        assert_eq!(Udp::new(&lab.a_ip, 40661, &vip(lab), VPORT).send(&lab.a), 3);
    }
    let dnat = |e: &Value| e["nat"] == "dnat";
    let events = stop_both(scoped, unscoped, (one.a.inode(), two.a.inode()), Duration::from_secs(10), dnat, "the client was DNATed");
    assert!(events.iter().any(|e| dnat(e) && e["orig_dst"] == format!("{}:{VPORT}", vip(&one))), "node 1's DNAT:\n{}", dump(&events));
}

#[test]
fn bad_netns_is_refused_before_anything_is_attached() {
    let test = "bad_netns_is_refused_before_anything_is_attached";
    if !require_privileged(test) {
        return;
    }
    assert_refused(&["drops", "--netns", "tracer-no-such-namespace"], &["--netns tracer-no-such-namespace"]);
    assert_refused(&["watch", "--netns", "/proc/version"], &["not a network namespace"]);
    assert_refused(&["retrans", "--netns", "0"], &["--netns 0"]);
    assert_refused(&["diagnose", "--netns", "a/b"], &["--netns"]);
}

/// One node of the lab traced with `--this-node` (tracer in the node's namespace, pods from its
/// containerd): drops in the node's own namespace and in its pods', also a pod created after
/// the start, are reported; the same drops in another node's namespace are not.
#[test]
fn this_node_is_its_own_namespace_and_its_pods_followed() {
    let test = "this_node_is_its_own_namespace_and_its_pods_followed";
    if !require_privileged(test) || !require_node(test) {
        return;
    }
    let _lock = shared_lock();
    const PORT: u16 = 5641;
    let node = NodeLab::new();
    let other = Netns::new("other");
    let before = node.run_pod("shop", "before", &[]);
    let socket = node.socket_path().display().to_string();
    let port = PORT.to_string();
    let args = ["drops", "-o", "json", "--this-node", "--pods-from", "cri", "--cri-socket", &socket, "--proto", "udp", "--port", &port];
    let wrapper = ["ip", "netns", "exec", node.netns.name.as_str()];
    let scoped = Tracer::start_wrapped(&wrapper, &args, &[("RUST_LOG", "warn,tracer::pods::scope=debug")]);
    let unscoped = Tracer::start(&["drops", "-o", "json", "--proto", "udp", "--port", &port, "--pods-from", "none"]);
    let after = node.run_pod("shop", "after", &[]);
    let followed = format!("+netns {}", after.netns_inode);
    assert!(
        scoped.wait_for_stderr(Duration::from_secs(10), &followed),
        "the pod created after the start never joined the scope ({followed}):\n{}",
        scoped.stderr()
    );

    let send = |exec: &dyn Fn(&[&str]) -> std::process::Output| {
        let argv = udp_to_loopback(PORT, 2);
        let out = exec(&argv_refs(&argv));
        assert!(out.status.success(), "sender: {}", String::from_utf8_lossy(&out.stderr));
    };
    send(&|a| node.netns.exec(a));
    send(&|a| before.exec(a));
    send(&|a| after.exec(a));
    send(&|a| other.exec(a));

    let inodes = [node.netns.inode(), before.netns_inode, after.netns_inode];
    let want: BTreeSet<u64> = inodes.into_iter().collect();
    let everything = want.iter().copied().chain([other.inode()]).collect::<BTreeSet<u64>>();
    unscoped.wait_for(Duration::from_secs(10), |e| namespaces(e).is_superset(&everything));
    scoped.wait_for(Duration::from_secs(5), |e| namespaces(e).is_superset(&want));
    let (scoped, unscoped) = (scoped.stop(), unscoped.stop());
    scoped.assert_code(0);
    unscoped.assert_code(0);
    let control = unscoped.events();
    assert!(namespaces(&control).is_superset(&everything), "the unscoped run sees every namespace:\n{}", dump(&control));
    let events = scoped.events();
    assert_eq!(namespaces(&events), want, "--this-node: the node and its pods, not the other node:\n{}", dump(&events));
    for (pod, inode) in [(&before, before.netns_inode), (&after, after.netns_inode)] {
        assert!(seen_in(&events, inode).iter().all(|e| e["netns_pod"] == pod.key()), "{}: named by its namespace:\n{}", pod.key(), dump(&events));
    }
}
