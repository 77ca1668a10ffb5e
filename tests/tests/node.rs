//! Self-tests of the node lab (`tracer_tests::node`): a real containerd in a test namespace
//! creates real pod sandboxes through the CRI, the pods talk through the node's CNI bridge, IP
//! reuse can be forced, and dropping the lab leaves nothing behind, also after a panic.
//! No tracer runs here; the pod tests of the tracer build on this.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{
    net::Ipv4Addr,
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant},
};

use tracer_tests::{
    node::{NodeLab, NodeLabOptions, Pod},
    *,
};

/// Binds `ip:port`, answers one datagram with `pong:<data>` and prints the sender's address.
const UDP_ECHO_ONCE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(10)
data, peer = s.recvfrom(100)
s.sendto(b"pong:" + data, peer)
print(peer[0])
"#;

/// Sends `ping` to `ip:port` until a reply comes (the server may not be bound yet), at most 40
/// tries 0.25 s apart, and prints the reply.
const UDP_PING: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.25)
for _ in range(40):
    s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
    try:
        print(s.recvfrom(100)[0].decode())
        break
    except socket.timeout:
        pass
"#;

fn in_subnet(ip: &str, node: &NodeLab) -> bool {
    let prefix = node.subnet.trim_end_matches("0/24");
    ip.starts_with(prefix)
}

fn next_ip(ip: &str) -> String {
    let a: Ipv4Addr = ip.parse().expect("pod IP");
    Ipv4Addr::from(u32::from(a) + 1).to_string()
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc/PID but no longer runs; count only running processes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

/// One datagram from `from` to `to`'s IP and the reply back, through the node's bridge.
fn udp_exchange(from: &Pod, to: &Pod, port: u16) {
    let port_s = port.to_string();
    let server = to.spawn(&["python3", "-c", UDP_ECHO_ONCE, &to.ip, &port_s]);
    let reply = from.exec_ok(&["python3", "-c", UDP_PING, &to.ip, &port_s]);
    let server = wait_child(server, Duration::from_secs(15));
    assert_eq!(
        String::from_utf8_lossy(&reply.stdout).trim(),
        "pong:ping",
        "{} got no reply from {} ({}); server stderr: {}",
        from.key(),
        to.key(),
        to.ip,
        String::from_utf8_lossy(&server.stderr)
    );
    // No NAT on the way: the server saw the client's own pod IP.
    assert_eq!(String::from_utf8_lossy(&server.stdout).trim(), from.ip, "source address seen by {}", to.key());
}

#[test]
fn two_pods_get_distinct_ips_and_netns_and_talk() {
    if !node::require_node("two_pods_get_distinct_ips_and_netns_and_talk") {
        return;
    }
    let _lock = shared_lock();
    let t0 = Instant::now();
    let node = NodeLab::new();
    let started = t0.elapsed();
    let t1 = Instant::now();
    let web = node.run_pod("shop", "web-0", &[("app", "web"), ("tier", "front")]);
    let first_pod = t1.elapsed();
    let db = node.run_pod("shop", "db-0", &[("app", "db")]);
    eprintln!(
        "node lab: ready in {started:?} (CRI answering after {:?}); first pod in {first_pod:?}; \
         pods {} = {} (netns {}), {} = {} (netns {})",
        node.cri_ready_after,
        web.key(),
        web.ip,
        web.netns_inode,
        db.key(),
        db.ip,
        db.netns_inode
    );

    assert_ne!(web.ip, db.ip);
    for p in [&web, &db] {
        assert!(in_subnet(&p.ip, &node), "{} has {} outside {}", p.key(), p.ip, node.subnet);
        assert!(p.netns_path.starts_with("/var/run/netns") && p.netns_path.exists(), "{p:?}");
        assert!(alive(p.pid), "sandbox process {} of {} not running", p.pid, p.key());
        assert_ne!(p.netns_inode, node.netns.inode(), "{} shares the node's netns", p.key());
        // The CNI bridge gave eth0 the IP, and containerd's own loopback network set lo up.
        let addr = p.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(String::from_utf8_lossy(&addr.stdout).contains(&format!(" {}/24 ", p.ip)), "{addr:?}");
        let lo = p.exec_ok(&["ip", "-o", "link", "show", "lo"]);
        assert!(String::from_utf8_lossy(&lo.stdout).contains(",UP"), "lo not up in {}: {lo:?}", p.key());
    }
    assert_ne!(web.netns_inode, db.netns_inode);
    assert_ne!(web.uid, db.uid);
    let ids = node.sandbox_ids();
    assert!(ids.contains(&web.id) && ids.contains(&db.id), "{ids:?}");

    // The bridge lives in the node namespace with the pods' gateway address.
    let br = node.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", &node.bridge]);
    assert!(String::from_utf8_lossy(&br.stdout).contains(&format!(" {}/24 ", node.gateway)), "{br:?}");

    udp_exchange(&web, &db, 7001);
    udp_exchange(&db, &web, 7002);
}

#[test]
fn ip_reuse_is_round_robin_unless_forced() {
    if !node::require_node("ip_reuse_is_round_robin_unless_forced") {
        return;
    }
    let _lock = shared_lock();
    let node = NodeLab::new();
    let old = node.run_pod("shop", "web-0", &[("app", "web")]);
    node.remove_pod(&old);
    assert!(!node.sandbox_ids().contains(&old.id));
    assert!(!old.netns_path.exists(), "CNI netns {} survived RemovePodSandbox", old.netns_path.display());

    // What host-local does by itself: it remembers the last address it handed out and goes on
    // with the next one, so a freed IP comes back only after the whole pool was used.
    let next = node.run_pod("shop", "web-1", &[("app", "web")]);
    assert_eq!(next.ip, next_ip(&old.ip), "host-local did not go round robin");

    // Forced reuse: the new pod gets exactly the old pod's IP.
    let t = Instant::now();
    let new = node.run_pod_with_ip("shop", "web-2", &[("app", "web")], &old.ip);
    assert_eq!(new.ip, old.ip);
    assert_ne!(new.id, old.id);
    eprintln!(
        "node lab: {} reused {} in {:?}; netns inode old {} new {} ({})",
        new.key(),
        new.ip,
        t.elapsed(),
        old.netns_inode,
        new.netns_inode,
        if old.netns_inode == new.netns_inode { "the kernel reused the inode too" } else { "different inodes" }
    );

    // Asking for an address in use fails before any sandbox is made.
    let before = node.sandbox_ids().len();
    let err = node.try_run_pod("shop", "web-3", &[], false, Some(&next.ip)).expect_err("IP in use must fail");
    assert!(format!("{err:#}").contains("still allocated"), "{err:#}");
    assert_eq!(node.sandbox_ids().len(), before);
}

#[test]
fn a_pool_of_one_address_reuses_it() {
    if !node::require_node("a_pool_of_one_address_reuses_it") {
        return;
    }
    let _lock = shared_lock();
    let node = NodeLab::with_options(NodeLabOptions { pool: Some((10, 10)) });
    let a = node.run_pod("shop", "a", &[]);
    assert_eq!(a.ip, node.pool.0.to_string());
    // The pool is exhausted while `a` lives.
    assert!(node.try_run_pod("shop", "b", &[], false, None).is_err(), "a second pod got an IP from a pool of one");
    node.remove_pod(&a);
    // The failed attempt above must not have left a half-made sandbox behind.
    assert_eq!(node.sandbox_ids(), Vec::<String>::new());
    let b = node.run_pod("shop", "b", &[]);
    assert_eq!(b.ip, a.ip);
}

#[test]
fn drop_leaves_nothing_after_normal_use_crash_or_panic() {
    if !node::require_node("drop_leaves_nothing_after_normal_use_crash_or_panic") {
        return;
    }
    let _lock = shared_lock();
    // A normal drop, with pods still running (the lab must remove them itself) and a
    // host-network pod.
    let (probe, pids) = {
        let node = NodeLab::new();
        let a = node.run_pod("shop", "web-0", &[]);
        let b = node.run_pod("other", "web-0", &[]);
        let h = node.run_pod_host_network("kube-system", "proxy", &[("k8s-app", "proxy")]);
        assert!(h.host_network && h.ip.is_empty(), "{h:?}");
        assert_eq!(h.netns_inode, node.netns.inode(), "host-network pod not in the node netns");
        assert_eq!(node.sandbox_ids().len(), 3);
        let mut pids = vec![a.pid, b.pid, h.pid];
        pids.extend(node.containerd_pid());
        (node.leftovers(), pids)
    };
    assert_eq!(probe.pod_netns.len(), 2, "{probe:?}");
    assert_eq!(probe.find(), Vec::<String>::new(), "left behind by a dropped node lab");
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the node lab");
    }

    // containerd crashed: no CRI to remove the pods, so the lab must kill the shims and the
    // sandbox processes, unmount what they left and delete the pods' netns files itself.
    let (probe, pids) = {
        let mut node = NodeLab::new();
        let a = node.run_pod("shop", "web-0", &[]);
        let b = node.run_pod("shop", "web-1", &[]);
        node.kill_containerd();
        assert!(alive(a.pid) && alive(b.pid), "sandboxes must outlive containerd, as on a real node");
        // The checker itself sees what a crashed runtime leaves (so its empty answers below
        // mean something): shims and sandboxes, their shm and rootfs mounts, the CNI netns files.
        let before = node.leftovers().find();
        for what in ["process ", "mount ", "netns file /var/run/netns/cni-", "directory ", "CNI cache "] {
            assert!(before.iter().any(|l| l.starts_with(what)), "no {what:?} among {before:#?}");
        }
        (node.leftovers(), vec![a.pid, b.pid])
    };
    assert_eq!(probe.find(), Vec::<String>::new(), "left behind after containerd crashed");
    for pid in pids {
        assert!(!alive(pid), "sandbox process {pid} survived the node lab");
    }

    // A panic in the middle of a test, with a pod running.
    eprintln!("(the next panic, \"test failure inside a node lab\", is part of the test)");
    let mut probe = None;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let node = NodeLab::new();
        node.run_pod("shop", "doomed", &[]);
        probe = Some(node.leftovers());
        panic!("test failure inside a node lab");
    }));
    assert!(r.is_err());
    let probe = probe.expect("probe taken before the panic");
    assert_eq!(probe.pod_netns.len(), 1);
    assert_eq!(probe.find(), Vec::<String>::new(), "left behind after a panic");
}
