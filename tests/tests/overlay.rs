//! Overlays: pod traffic carried between two node namespaces by VXLAN (flannel-style), Geneve
//! and IPIP (Calico-style), built for real (tracer_tests::overlay). A drop of the tunnel packets
//! on the receiving node must be told as the pods' flow, with both pods and the `tunnel` object
//! holding the outer headers, and the filters must find it by the inner flow or the outer one.
//! `diagnose` must name why a tunnel dropped pod traffic: seed 004 case 1 (a second uplink
//! address, a learning VXLAN with a static FDB entry: `tunnel-source-mismatch` ahead of the
//! `nat-no-reply` it causes), a VNI mismatch (`tunnel-drop`), a firewall on the tunnel port
//! (`netfilter-drop` naming the tunnel).
//!
//! This kernel (6.18) has VXLAN only; IPIP and Geneve are modules on Debian's 6.1 and 6.12, so
//! those labs run in the VM matrix (`cargo xtask vm-test --with-tests --test overlay`) and skip
//! loudly here.
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::time::Duration;

use tracer_tests::{
    overlay::{OVERLAY_VNI, Overlay, OverlayLab, can_build},
    traffic::tcp_connect,
    *,
};

const SERVER_PORT: u16 = 8080;

/// The lab with node B's firewall dropping every tunnel packet A sends, and a pods file naming
/// the two pods `lab/client` (on A) and `lab/server` (on B).
struct Dropping {
    lab: OverlayLab,
    pods: TempFile,
}

impl Dropping {
    fn new(overlay: Overlay) -> Dropping {
        let lab = OverlayLab::new(overlay);
        // Before the rule: the overlay itself works (nothing listens, so the SYN gets a reset).
        let reached = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 0, &lab.b.pod_ip, SERVER_PORT, 3.0);
        assert!(reached.starts_with("error 111"), "lab: pod A must reach pod B through the {overlay:?} overlay (expected a reset): {reached}");
        lab.drop_tunnel_on_b();
        let pods = lab.pods_file();
        Dropping { lab, pods }
    }

    /// `tracer drops -o json` with the pods file and `extra`, while pod A tries to connect to pod
    /// B twice; the events of that connection (the inner flow) it printed.
    fn run(&self, extra: &[&str]) -> (Vec<Value>, String) {
        let from = format!("file:{}", self.pods.0.display());
        let mut args = vec!["drops", "-o", "json", "--pods-from", &from, "--node-name", "lab-node-b"];
        args.extend_from_slice(extra);
        let t = Tracer::start(&args);
        let lab = &self.lab;
        for sport in [41001u16, 41002] {
            let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, sport, &lab.b.pod_ip, SERVER_PORT, 1.0);
            assert_eq!(got, "timeout", "the dropped tunnel must leave the connect unanswered");
        }
        let dst = format!("{}:{SERVER_PORT}", lab.b.pod_ip);
        t.wait_for(Duration::from_secs(3), |e| e.iter().any(|e| e["dst"] == dst.as_str()));
        let run = t.stop();
        run.assert_code(0);
        let events: Vec<Value> = run.events().into_iter().filter(|e| e["dst"] == dst.as_str()).collect();
        (events, run.stderr)
    }

    /// Every event is the tunnel drop on node B, told as the pods' flow with the outer headers.
    fn assert_tunnel_drops(&self, events: &[Value], stderr: &str) {
        let lab = &self.lab;
        assert!(!events.is_empty(), "no drop of the tunnelled connection; stderr:\n{stderr}");
        for e in events {
            assert_eq!(e["reason"], "NETFILTER_DROP", "{e}");
            assert_eq!(e["proto"], "tcp", "the inner protocol: {e}");
            assert!(e["src"].as_str().is_some_and(|s| s.starts_with(&format!("{}:4100", lab.a.pod_ip))), "the inner source, pod A: {e}");
            assert_eq!((e["src_pod"].as_str(), e["dst_pod"].as_str()), (Some("lab/client"), Some("lab/server")), "both pods: {e}");
            assert_eq!(e["netns"].as_u64(), Some(lab.b.ns.inode()), "dropped in node B: {e}");
            assert_eq!(e["node"], "lab-node-b", "the node, from --node-name: {e}");
            let t = &e["tunnel"];
            assert_eq!(t["type"], lab.kind(), "{e}");
            let (src, dst) = (t["src"].as_str().unwrap_or_default(), t["dst"].as_str().unwrap_or_default());
            match lab.overlay {
                Overlay::Ipip => {
                    assert!(t["vni"].is_null(), "IPIP has no VNI: {e}");
                    assert_eq!((src, dst), (lab.a.underlay_ip.as_str(), lab.b.underlay_ip.as_str()), "the outer addresses: {e}");
                }
                _ => {
                    assert_eq!(t["vni"].as_u64(), Some(u64::from(OVERLAY_VNI)), "{e}");
                    assert!(src.starts_with(&format!("{}:", lab.a.underlay_ip)), "the outer source, node A's underlay: {e}");
                    assert_eq!(dst, format!("{}:{}", lab.b.underlay_ip, lab.port()), "the outer destination: {e}");
                }
            }
        }
    }
}

/// The lab lock when `test` can build a VXLAN lab here and this kernel's vxlan drops carry
/// `reason`: the findings rest on the drop's reason, which vxlan gives only on kernels with its
/// drop reasons (6.18 here; Debian's 6.1 drops the same packets as NOT_SPECIFIED).
fn can_build_with_reason(test: &str, reason: &str) -> Option<LabLock> {
    let lock = can_build(test, "vxlan")?;
    if !kernel_btf_has(&format!("SKB_DROP_REASON_{reason}")) {
        skipped(test, &format!("this kernel's vxlan drops carry no {reason} reason"));
        return None;
    }
    Some(lock)
}

/// Runs `check` on a lab of `overlay`, or skips loudly when this kernel cannot build it.
fn with_overlay(test: &str, overlay: Overlay, kind: &str, check: impl FnOnce(&Dropping)) {
    let Some(_lock) = can_build(test, kind) else { return };
    check(&Dropping::new(overlay));
}

/// flannel's VXLAN (8472): node B's firewall drops A's tunnel packets. The drop is the pods' TCP
/// flow with the tunnel's outer headers, and it is found by the inner address, by the client pod,
/// by node B's underlay address and by the tunnel's port.
#[test]
fn vxlan_drop_on_the_receiving_node_is_the_pods_flow_with_the_tunnel() {
    let test = "vxlan_drop_on_the_receiving_node_is_the_pods_flow_with_the_tunnel";
    with_overlay(test, Overlay::Vxlan { port: 8472 }, "vxlan", |d| {
        let lab = &d.lab;
        let by_inner = format!("{}/32", lab.a.pod_ip);
        let (events, stderr) = d.run(&["--ip", &by_inner]);
        d.assert_tunnel_drops(&events, &stderr);

        let (events, stderr) = d.run(&["--pod", "lab/client"]);
        d.assert_tunnel_drops(&events, &stderr);

        let by_outer = format!("{}/32", lab.b.underlay_ip);
        let (events, stderr) = d.run(&["--ip", &by_outer, "--port", "8472"]);
        d.assert_tunnel_drops(&events, &stderr);
    });
}

/// VXLAN on a port the parser does not know: without `--vxlan-port` the drop is the outer UDP
/// datagram; with it, the pods' flow.
#[test]
fn vxlan_on_another_port_is_taken_apart_with_vxlan_port() {
    let test = "vxlan_on_another_port_is_taken_apart_with_vxlan_port";
    with_overlay(test, Overlay::Vxlan { port: 4790 }, "vxlan", |d| {
        let lab = &d.lab;
        let block = lab.addrs.net(0);
        let from = format!("file:{}", d.pods.0.display());
        let t = Tracer::start(&["drops", "-o", "json", "--pods-from", &from, "--ip", &block]);
        let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 41003, &lab.b.pod_ip, SERVER_PORT, 1.0);
        assert_eq!(got, "timeout");
        let outer_dst = format!("{}:4790", lab.b.underlay_ip);
        t.wait_for(Duration::from_secs(3), |e| e.iter().any(|e| e["dst"] == outer_dst.as_str()));
        let run = t.stop();
        let outer: Vec<Value> = run.events().into_iter().filter(|e| e["dst"] == outer_dst.as_str()).collect();
        assert!(!outer.is_empty(), "the unknown port's datagram, as UDP: {}", dump(&run.events()));
        assert!(outer.iter().all(|e| e["proto"] == "udp" && e["tunnel"].is_null()), "{}", dump(&outer));

        let (events, stderr) = d.run(&["--vxlan-port", "4790", "--ip", &block]);
        d.assert_tunnel_drops(&events, &stderr);
    });
}

/// Geneve (6081), as Cilium, Antrea and OVN use it: found by the server pod, and by node A's
/// underlay address with the tunnel's port.
#[test]
fn geneve_drop_on_the_receiving_node_is_the_pods_flow_with_the_tunnel() {
    let test = "geneve_drop_on_the_receiving_node_is_the_pods_flow_with_the_tunnel";
    with_overlay(test, Overlay::Geneve, "geneve", |d| {
        let (events, stderr) = d.run(&["--pod", "lab/server"]);
        d.assert_tunnel_drops(&events, &stderr);

        let by_outer = format!("{}/32", d.lab.a.underlay_ip);
        let (events, stderr) = d.run(&["--ip", &by_outer, "--port", "6081"]);
        d.assert_tunnel_drops(&events, &stderr);
    });
}

/// IPIP, as Calico's tunl0: the outer header is IP alone (no ports, no VNI). Found by the inner
/// address, and by node B's underlay address.
#[test]
fn ipip_drop_on_the_receiving_node_is_the_pods_flow_with_the_tunnel() {
    let test = "ipip_drop_on_the_receiving_node_is_the_pods_flow_with_the_tunnel";
    with_overlay(test, Overlay::Ipip, "ipip", |d| {
        let by_inner = format!("{}/32", d.lab.b.pod_ip);
        let (events, stderr) = d.run(&["--ip", &by_inner]);
        d.assert_tunnel_drops(&events, &stderr);

        // The outer header has no ports: the node's address alone (the filters match the inner
        // flow or the outer header, each whole: not the outer address with the inner protocol).
        let by_outer = format!("{}/32", d.lab.b.underlay_ip);
        let (events, stderr) = d.run(&["--ip", &by_outer]);
        d.assert_tunnel_drops(&events, &stderr);
    });
}

/// The table shows the tunnel after the flow, compactly.
#[test]
fn the_table_shows_the_tunnel_after_the_flow() {
    let test = "the_table_shows_the_tunnel_after_the_flow";
    with_overlay(test, Overlay::Vxlan { port: 8472 }, "vxlan", |d| {
        let lab = &d.lab;
        let from = format!("file:{}", d.pods.0.display());
        let by_inner = format!("{}/32", lab.a.pod_ip);
        let t = Tracer::start(&["drops", "--pods-from", &from, "--ip", &by_inner]);
        let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 41004, &lab.b.pod_ip, SERVER_PORT, 1.0);
        assert_eq!(got, "timeout");
        let want = format!("[vxlan:{OVERLAY_VNI} {}->{}]", lab.a.underlay_ip, lab.b.underlay_ip);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while std::time::Instant::now() < deadline && !t.stdout_lines().iter().any(|l| l.contains(&want)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let run = t.stop();
        let line = run.lines.iter().find(|l| l.contains(&want));
        assert!(
            line.is_some_and(|l| l.contains("(lab/client)") && l.contains("(lab/server)")),
            "a row with both pods and {want}:\n{}",
            run.lines.join("\n")
        );
    });
}

/// `tracer diagnose -o json` over the lab's block while `traffic` runs; the report.
fn diagnose_run(lab: &OverlayLab, pods: &TempFile, traffic: impl FnOnce()) -> Value {
    diagnose_run_with(lab, pods, &[], traffic)
}

/// [`diagnose_run`] with `extra` arguments.
fn diagnose_run_with(lab: &OverlayLab, pods: &TempFile, extra: &[&str], traffic: impl FnOnce()) -> Value {
    let from = format!("file:{}", pods.0.display());
    let block = lab.addrs.net(0).replace("/24", "/22");
    let mut args = vec!["diagnose", "--duration", "8s", "-o", "json", "--reply-timeout", "1s", "--pods-from", &from, "--ip", &block];
    args.extend_from_slice(extra);
    let t = Tracer::start(&args);
    traffic();
    let run = t.wait_exit(Duration::from_secs(40));
    assert_eq!(run.status.code(), Some(0), "diagnose must exit 0\nstdout:\n{}\nstderr:\n{}", run.lines.join("\n"), run.stderr);
    let text = run.lines.join("\n");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("one JSON object ({e}):\n{text}\nstderr:\n{}", run.stderr))
}

/// The findings of `code` in `report` that name `flow`.
fn findings_for<'a>(report: &'a Value, code: &str, flow: &str) -> Vec<(usize, &'a Value)> {
    let all = report["findings"].as_array().map(Vec::as_slice).unwrap_or_default();
    all.iter().enumerate().filter(|(_, f)| f["code"] == code && f["flows"].as_array().is_some_and(|a| a.iter().any(|x| x == flow))).collect()
}

fn pods_of(f: &Value) -> Vec<&str> {
    f["pods"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// Seed 004 case 1 rebuilt at the kernel level: node A's tunnel packets leave from the second
/// address of its uplink, node B's learning vxlan has a static FDB entry for A's VTEP at A's
/// first address and drops them (VXLAN_ENTRY_EXISTS). A Service address on A is DNATed to pod
/// B, so the symptoms are a NAT connection that never gets a reply and SYN retransmits; the
/// report must lead with `tunnel-source-mismatch`, naming both pods, the source used and the
/// one expected, the device and node B's namespace.
#[test]
fn vxlan_source_mismatch_is_diagnosed_ahead_of_its_symptoms() {
    let test = "vxlan_source_mismatch_is_diagnosed_ahead_of_its_symptoms";
    let Some(_lock) = can_build_with_reason(test, "VXLAN_ENTRY_EXISTS") else { return };
    let lab = OverlayLab::source_mismatch();
    let second = lab.second_source();
    let (service, _) = lab.service_on_a(SERVER_PORT);
    let pods = lab.pods_file();
    let report = diagnose_run(&lab, &pods, || {
        let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 41010, &service, 80, 3.0);
        assert_eq!(got, "timeout", "node B must drop A's tunnel packets (VXLAN_ENTRY_EXISTS)");
    });
    eprintln!("{test}: {report}");
    // The connection as the client opened it: to the Service address (one connection, one name).
    let inner = format!("{}:41010 -> {service}:80", lab.a.pod_ip);
    let found = findings_for(&report, "tunnel-source-mismatch", &inner);
    assert_eq!(found.len(), 1, "one tunnel-source-mismatch for {inner}: {report:#}");
    let (at, f) = found[0];
    assert_eq!(f["severity"], "error", "{f:#}");
    let pods = pods_of(f);
    assert!(pods.contains(&"lab/client") && pods.contains(&"lab/server"), "both pods: {f:#}");
    let ev = &f["evidence"];
    assert_eq!(ev["reason"], "VXLAN_ENTRY_EXISTS", "{f:#}");
    assert_eq!(ev["source_used"], second.as_str(), "the wrong source, A's second address: {f:#}");
    assert_eq!(ev["source_expected"], lab.a.underlay_ip.as_str(), "the expected source, A's first address: {f:#}");
    assert_eq!(ev["device"], lab.b.tunnel_dev.as_str(), "{f:#}");
    assert_eq!(ev["netns"].as_u64(), Some(lab.b.ns.inode()), "dropped in node B: {f:#}");
    assert_eq!(ev["learning"], true, "{f:#}");
    // The run saw the connection's NAT on node A: the sending side is named too.
    let sender = &ev["sender"];
    assert_eq!(sender["netns"].as_u64(), Some(lab.a.ns.inode()), "the sender, node A: {f:#}");
    assert_eq!((sender["route_source"].as_str(), sender["local"].as_str()), (Some(second.as_str()), None), "{f:#}");
    assert_eq!(sender["device"], lab.a.tunnel_dev.as_str(), "{f:#}");
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(summary.contains(&second) && summary.contains(&lab.a.underlay_ip), "{summary}");
    // The symptoms of that connection (by its original flow, to the Service) come after it, if
    // they are told apart at all.
    for code in ["nat-no-reply", "retransmit-storm"] {
        for (i, s) in findings_for(&report, code, &inner) {
            assert!(i > at, "{code} must follow the tunnel finding that explains it: {s:#}\n{report:#}");
        }
    }
    let errors_first = report["findings"].as_array().into_iter().flatten().position(|f| f["severity"] == "error");
    assert_eq!(errors_first, Some(at), "the report leads with the cause: {report:#}");
}

/// Node B's vxlan has another VNI: B drops A's packets with VXLAN_VNI_NOT_FOUND, a
/// `tunnel-drop` error with both pods.
#[test]
fn vxlan_vni_mismatch_is_a_tunnel_drop() {
    let test = "vxlan_vni_mismatch_is_a_tunnel_drop";
    let Some(_lock) = can_build_with_reason(test, "VXLAN_VNI_NOT_FOUND") else { return };
    let lab = OverlayLab::vni_mismatch();
    let pods = lab.pods_file();
    let report = diagnose_run(&lab, &pods, || {
        let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 41011, &lab.b.pod_ip, SERVER_PORT, 2.0);
        assert_eq!(got, "timeout", "node B has no device for A's VNI");
    });
    eprintln!("{test}: {report}");
    let inner = format!("{}:41011 -> {}:{SERVER_PORT}", lab.a.pod_ip, lab.b.pod_ip);
    let found = findings_for(&report, "tunnel-drop", &inner);
    assert_eq!(found.len(), 1, "one tunnel-drop for {inner}: {report:#}");
    let f = found[0].1;
    assert_eq!((f["severity"].as_str(), f["evidence"]["reason"].as_str()), (Some("error"), Some("VXLAN_VNI_NOT_FOUND")), "{f:#}");
    let pods = pods_of(f);
    assert!(pods.contains(&"lab/client") && pods.contains(&"lab/server"), "both pods: {f:#}");
    assert_eq!(f["evidence"]["tunnel"]["vni"].as_u64(), Some(u64::from(OVERLAY_VNI)), "{f:#}");
}

/// A netfilter drop of tunnel packets is told in `diagnose` as the pods' flow inside the named
/// tunnel, with the rule that counted them (matched on the outer header: udp/8472).
#[test]
fn diagnose_names_the_tunnel_of_a_netfilter_drop() {
    let test = "diagnose_names_the_tunnel_of_a_netfilter_drop";
    with_overlay(test, Overlay::Vxlan { port: 8472 }, "vxlan", |d| {
        let lab = &d.lab;
        let report = diagnose_run(lab, &d.pods, || {
            let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 41012, &lab.b.pod_ip, SERVER_PORT, 2.0);
            assert_eq!(got, "timeout");
        });
        eprintln!("{test}: {report}");
        let inner = format!("{}:41012 -> {}:{SERVER_PORT}", lab.a.pod_ip, lab.b.pod_ip);
        let found = findings_for(&report, "netfilter-drop", &inner);
        assert_eq!(found.len(), 1, "one netfilter-drop for {inner}: {report:#}");
        let f = found[0].1;
        let pods = pods_of(f);
        assert!(pods.contains(&"lab/client") && pods.contains(&"lab/server"), "both pods: {f:#}");
        let summary = f["summary"].as_str().unwrap_or_default();
        let tunnel = format!("dropped VXLAN packets (VNI {OVERLAY_VNI}, {} -> {}:8472) carrying", lab.a.underlay_ip, lab.b.underlay_ip);
        assert!(summary.contains(&tunnel), "the tunnel named: {summary}");
        let rules = f["evidence"]["rules"].as_array().cloned().unwrap_or_default();
        assert!(rules.iter().any(|r| r.as_str().is_some_and(|r| r.contains("--dport 8472"))), "the rule, matched on the outer header: {f:#}");
    });
}

/// Seed 004 case 2 on each overlay: the pods' devices have the default MTU (1500), the tunnel
/// less (Calico's `tunl0` 1440; VXLAN and Geneve 1450), and the frag-needed node A sends back to
/// pod A is lost (pod A's firewall drops it, as where ICMP is filtered): a large transfer from
/// pod A to pod B stalls. `diagnose` must say `mtu-blackhole` for that connection, with both
/// pods, the tunnel's MTU, and the overlay named (type, device, its MTU, its underlay) with the
/// MTU the pods need; and, given node A's tunnel to look at, `mtu-mismatch` names the tunnel.
fn mtu_blackhole_names_the_overlay(test: &str, overlay: Overlay, kind: &str, tunnel_mtu: u64) {
    let Some(_lock) = can_build(test, kind) else { return };
    let lab = OverlayLab::new(overlay);
    lab.a.pod.iptables("iptables-legacy", &["-A", "INPUT", "-p", "icmp", "--icmp-type", "fragmentation-needed", "-j", "DROP"]);
    let pods = lab.pods_file();
    let (sport, port) = (41020u16, 5202u16);
    let _sink = TcpSink::start(|x| lab.b.pod.spawn(x), &lab.b.pod_ip, &[port]);
    let iface = format!("{}:{}", lab.a.ns.name, lab.a.tunnel_dev);
    let mut result = String::new();
    let report = diagnose_run_with(&lab, &pods, &["--iface", &iface], || {
        let out =
            lab.a.pod.exec_timeout(&argv_refs(&tcp_send_argv(&lab.a.pod_ip, sport, &lab.b.pod_ip, port, 2_000_000, 3.0)), Duration::from_secs(20));
        result = String::from_utf8_lossy(&out.stdout).trim().to_string();
    });
    eprintln!("{test}: {report}");
    assert!(!result.starts_with("ok"), "lab: the transfer must stall when frag-needed is lost: {result}");
    let inner = format!("{}:{sport} -> {}:{port}", lab.a.pod_ip, lab.b.pod_ip);
    let found = findings_for(&report, "mtu-blackhole", &inner);
    assert_eq!(found.len(), 1, "one mtu-blackhole for {inner}: {report:#}");
    let f = found[0].1;
    assert_eq!(f["severity"], "error", "{f:#}");
    let pods = pods_of(f);
    assert!(pods.contains(&"lab/client") && pods.contains(&"lab/server"), "both pods: {f:#}");
    let ev = &f["evidence"];
    assert_eq!(ev["mtu"].as_u64(), Some(tunnel_mtu), "the MTU node A reported, the tunnel's: {f:#}");
    assert!(ev["frag_needed_dropped"].as_u64() >= Some(1), "pod A's firewall dropped the frag-needed: {f:#}");
    let named = ev["overlay"].as_array().cloned().unwrap_or_default();
    let tunnel = named.iter().find(|o| o["device"] == lab.a.tunnel_dev.as_str());
    let Some(tunnel) = tunnel else { panic!("the overlay names node A's tunnel {}: {f:#}", lab.a.tunnel_dev) };
    assert_eq!(tunnel["type"], kind, "{f:#}");
    assert_eq!(tunnel["mtu"].as_u64(), Some(tunnel_mtu), "{f:#}");
    assert_eq!(tunnel["netns"].as_u64(), Some(lab.a.ns.inode()), "node A's namespace: {f:#}");
    if overlay_has_underlay(overlay) {
        assert_eq!((tunnel["underlay"].as_str(), tunnel["underlay_mtu"].as_u64()), (Some(lab.a.uplink.as_str()), Some(1500)), "its underlay: {f:#}");
    }
    let arrived = &ev["arrived_on"];
    assert_eq!(
        (arrived["netns"].as_u64(), arrived["mtu"].as_u64()),
        (Some(lab.a.ns.inode()), Some(1500)),
        "the pod-side device the packets arrived on, in node A, at the pods' MTU: {f:#}"
    );
    let summary = f["summary"].as_str().unwrap_or_default();
    let advice = format!("give the pods an MTU of at most {tunnel_mtu}");
    assert!(
        summary.contains(&format!("{kind} device {}", lab.a.tunnel_dev)) && summary.contains(&advice),
        "the overlay and the pods' MTU named: {summary}"
    );
    let mismatch = report["findings"].as_array().into_iter().flatten().find(|m| m["code"] == "mtu-mismatch");
    let Some(mismatch) = mismatch else { panic!("an mtu-mismatch for node A's tunnel: {report:#}") };
    let text = mismatch["summary"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("tunnel {} ({kind}, mtu {tunnel_mtu})", lab.a.tunnel_dev)),
        "mtu-mismatch names the overlay's tunnel and its type: {mismatch:#}"
    );
    assert_eq!(mismatch["severity"], "warning", "a configuration fact: {mismatch:#}");
}

/// Whether the lab's tunnel of `o` names its underlay device (`dev` given when it was made:
/// VXLAN and IPIP; the lab's Geneve has only a remote).
fn overlay_has_underlay(o: Overlay) -> bool {
    !matches!(o, Overlay::Geneve)
}

#[test]
fn mtu_blackhole_over_vxlan_names_the_overlay() {
    mtu_blackhole_names_the_overlay("mtu_blackhole_over_vxlan_names_the_overlay", Overlay::Vxlan { port: 8472 }, "vxlan", 1450);
}

#[test]
fn mtu_blackhole_over_geneve_names_the_overlay() {
    mtu_blackhole_names_the_overlay("mtu_blackhole_over_geneve_names_the_overlay", Overlay::Geneve, "geneve", 1450);
}

/// Seed 004 case 2 itself: Calico's IPIP `tunl0` at 1440 under pods at 1500.
#[test]
fn mtu_blackhole_over_ipip_names_the_overlay() {
    mtu_blackhole_names_the_overlay("mtu_blackhole_over_ipip_names_the_overlay", Overlay::Ipip, "ipip", 1440);
}

/// `watch --by-flow` tells a connection through a Service and a tunnel as one story: pod A's
/// connection to a Service address on node A is DNATed to pod B, carried by VXLAN, and dropped
/// by node B's firewall on the tunnel port. The story is named as the client opened it and holds
/// the DNAT on node A, the drops on node B (the pods' flow, with the `tunnel` object) and the
/// client's retransmits.
#[test]
fn watch_by_flow_joins_a_connection_on_both_sides_of_the_tunnel() {
    let test = "watch_by_flow_joins_a_connection_on_both_sides_of_the_tunnel";
    with_overlay(test, Overlay::Vxlan { port: 8472 }, "vxlan", |d| {
        let lab = &d.lab;
        let (service, backend) = lab.service_on_a(SERVER_PORT);
        let from = format!("file:{}", d.pods.0.display());
        let block = lab.addrs.net(0).replace("/24", "/22");
        let t = Tracer::start(
            &[
                &["watch", "--by-flow", "-o", "json", "--duration", "6s", "--reply-timeout", "1s", "--pods-from", &from, "--ip", &block][..],
                &NAT_FROM_OUTSIDE,
            ]
            .concat(),
        );
        let got = tcp_connect(&lab.a.pod, &lab.a.pod_ip, 41030, &service, 80, 3.0);
        assert_eq!(got, "timeout", "node B's firewall drops the tunnel packets");
        let run = t.wait_exit(Duration::from_secs(40));
        assert_eq!(run.status.code(), Some(0), "watch must exit 0: {}", run.stderr);
        let stories = run.events();
        let label = format!("{}:41030 -> {service}:80", lab.a.pod_ip);
        let mine: Vec<&Value> = stories.iter().filter(|s| s["flow"] == label.as_str()).collect();
        assert_eq!(mine.len(), 1, "one story for {label}: {stories:#?}");
        let story = mine[0];
        assert_eq!(story["pods"], serde_json::json!(["lab/client", "lab/server"]), "{story:#}");
        let events = story["events"].as_array().cloned().unwrap_or_default();
        let nat_on_a = events.iter().any(|e| e["kind"] == "nat" && e["netns"].as_u64() == Some(lab.a.ns.inode()));
        assert!(nat_on_a, "the DNAT on node A: {story:#}");
        let drop_on_b = events.iter().find(|e| e["kind"] == "drop" && e["netns"].as_u64() == Some(lab.b.ns.inode()));
        let Some(drop_on_b) = drop_on_b else { panic!("node B's drop of the tunnel packets: {story:#}") };
        assert_eq!(drop_on_b["dst"], backend.as_str(), "the pods' flow after DNAT: {drop_on_b:#}");
        assert_eq!(drop_on_b["tunnel"]["type"], "vxlan", "with the tunnel's outer headers: {drop_on_b:#}");
        assert_eq!(drop_on_b["tunnel"]["dst"], format!("{}:8472", lab.b.underlay_ip).as_str(), "{drop_on_b:#}");
        assert!(events.iter().any(|e| e["kind"] == "retransmit"), "the client's SYN retransmits: {story:#}");
        for s in &stories {
            if s["flow"] != label.as_str() {
                let evs = s["events"].as_array().cloned().unwrap_or_default();
                let src = format!("{}:41030", lab.a.pod_ip);
                assert!(!evs.iter().any(|e| e["src"] == src.as_str()), "the connection split into another story: {s:#}");
            }
        }
    });
}
