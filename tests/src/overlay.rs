//! Two nodes joined by an overlay, built the way the CNIs build theirs: node namespaces on an
//! underlay veth, one pod namespace behind each node, and a tunnel device per node that carries
//! the pods' traffic across.
//!
//! - VXLAN as flannel programs it: device `flannel.1`-like, VNI 1, port 8472, no learning; the
//!   other node's device address (its pod subnet's `.0`) reached by an onlink route, a permanent
//!   neighbour entry (that address -> the other device's MAC) and a forwarding-database entry
//!   (that MAC -> the other node's underlay address).
//! - Geneve (Cilium, Antrea, OVN): the same shape on port 6081, the remote fixed on the device.
//! - IPIP as Calico's `tunl0`: a point-to-point ipip device per node, MTU 1440.
//!
//! Addresses: subnet 0 of the lab's block is the underlay (node A .1, node B .2), subnet 1 node
//! A's pods, subnet 2 node B's pods (the pod at .10, its node's side at .1).

use crate::{AddrBlock, LabLock, Netns, TempFile, pods_file, require_privileged, shared_lock, skipped, unique_name, veth};

/// The overlay a lab is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// VXLAN on this UDP port (flannel: 8472).
    Vxlan {
        port: u16,
    },
    Geneve,
    Ipip,
}

/// How a lab departs from the CNI's setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    SourceMismatch,
    VniMismatch,
}

/// The VNI of VXLAN and Geneve labs.
pub const OVERLAY_VNI: u32 = 1;

/// One node: its namespace, underlay device and address, tunnel device, pod namespace.
pub struct OverlayNode {
    pub ns: Netns,
    pub uplink: String,
    pub underlay_ip: String,
    pub tunnel_dev: String,
    /// The tunnel device's own address (VXLAN/Geneve: the pod subnet's `.0`, as flannel has it).
    pub tunnel_ip: String,
    pub pod: Netns,
    pub pod_if: String,
    pub pod_ip: String,
    pub pod_net: String,
}

/// Nodes A and B with one pod each, joined by `overlay`.
pub struct OverlayLab {
    pub overlay: Overlay,
    pub addrs: AddrBlock,
    pub a: OverlayNode,
    pub b: OverlayNode,
}

impl OverlayLab {
    pub fn new(overlay: Overlay) -> OverlayLab {
        Self::build(overlay, Variant::Plain)
    }

    /// A flannel-style VXLAN (8472) whose node B's device has VNI [`OVERLAY_VNI`] + 1: B's
    /// `vxlan_rcv` finds no device for A's packets and drops them with VXLAN_VNI_NOT_FOUND.
    pub fn vni_mismatch() -> OverlayLab {
        Self::build(Overlay::Vxlan { port: 8472 }, Variant::VniMismatch)
    }

    /// Seed 004 case 1 at the kernel level: a flannel-style VXLAN (8472) where node A's vxlan
    /// has no fixed `local` and its uplink a second address, [`Self::second_source`], that
    /// A's route to B's underlay prefers: A's tunnel packets leave from it. Node B's vxlan
    /// learns (`learning`) and its static FDB entry for A's VTEP MAC has A's first address, so
    /// B's `vxlan_snoop` finds a static entry whose remote differs from the packets' source and
    /// `vxlan_rcv` drops them with VXLAN_ENTRY_EXISTS (checked on 6.18).
    pub fn source_mismatch() -> OverlayLab {
        let lab = Self::build(Overlay::Vxlan { port: 8472 }, Variant::SourceMismatch);
        let second = lab.second_source();
        lab.a.ns.addr(&lab.a.uplink, &format!("{second}/24"));
        lab.a.ns.ip(&["route", "replace", &format!("{}/32", lab.b.underlay_ip), "dev", &lab.a.uplink, "src", &second]);
        lab
    }

    /// The second address of node A's uplink in [`Self::source_mismatch`].
    pub fn second_source(&self) -> String {
        self.addrs.host(0, 11)
    }

    fn build(overlay: Overlay, variant: Variant) -> OverlayLab {
        let addrs = AddrBlock::new();
        let (na, nb) = (Netns::new("na"), Netns::new("nb"));
        let (ua, ub) = (unique_name("ua"), unique_name("ub"));
        veth(&na, &ua, &nb, &ub);
        let (uip_a, uip_b) = (addrs.host(0, 1), addrs.host(0, 2));
        na.addr(&ua, &format!("{uip_a}/24"));
        nb.addr(&ub, &format!("{uip_b}/24"));
        let a = node(na, ua, uip_a, &addrs, 1);
        let b = node(nb, ub, uip_b, &addrs, 2);
        // In the source mismatch lab A's device takes its source from the route, and B's learns.
        let mismatch = variant == Variant::SourceMismatch;
        let vni_b = if variant == Variant::VniMismatch { OVERLAY_VNI + 1 } else { OVERLAY_VNI };
        tunnel(overlay, &a, &b, !mismatch, false, OVERLAY_VNI);
        tunnel(overlay, &b, &a, true, mismatch, vni_b);
        for (from, to) in [(&a, &b), (&b, &a)] {
            route(overlay, from, to);
        }
        OverlayLab { overlay, addrs, a, b }
    }

    /// Node B's firewall (iptables-legacy INPUT) drops every tunnel packet node A sends, matched
    /// on the outer header: IPIP by its protocol, the others by the tunnel's UDP port.
    pub fn drop_tunnel_on_b(&self) {
        let (ua, ub) = (self.a.underlay_ip.as_str(), self.b.underlay_ip.as_str());
        let port = self.port().to_string();
        let rule: Vec<&str> = match self.overlay {
            Overlay::Ipip => vec!["-A", "INPUT", "-s", ua, "-d", ub, "-p", "4", "-j", "DROP"],
            _ => vec!["-A", "INPUT", "-s", ua, "-d", ub, "-p", "udp", "--dport", &port, "-j", "DROP"],
        };
        self.b.ns.iptables("iptables-legacy", &rule);
    }

    /// A Service address on node A whose TCP port 80 node A DNATs (as kube-proxy does) to pod B's
    /// `target` port: (the Service address, the backend `ip:port`).
    pub fn service_on_a(&self, target: u16) -> (String, String) {
        let service = self.addrs.host(3, 10);
        let backend = format!("{}:{target}", self.b.pod_ip);
        let dst = format!("{service}/32");
        self.a.ns.iptables(
            "iptables-legacy",
            &["-t", "nat", "-A", "PREROUTING", "-d", &dst, "-p", "tcp", "--dport", "80", "-j", "DNAT", "--to-destination", &backend],
        );
        (service, backend)
    }

    /// A pods file naming the lab's two pods `lab/client` (on A) and `lab/server` (on B).
    pub fn pods_file(&self) -> TempFile {
        let pods = TempFile(std::env::temp_dir().join(format!("{}-pods.json", unique_name("ov"))));
        std::fs::write(&pods.0, pods_file(&[("client", &self.a.pod_ip), ("server", &self.b.pod_ip)])).expect("write pods file");
        pods
    }

    /// The tunnel's UDP port (0 for IPIP).
    pub fn port(&self) -> u16 {
        match self.overlay {
            Overlay::Vxlan { port } => port,
            Overlay::Geneve => 6081,
            Overlay::Ipip => 0,
        }
    }

    /// The CONTRACT's `tunnel.type` of this overlay.
    pub fn kind(&self) -> &'static str {
        match self.overlay {
            Overlay::Vxlan { .. } => "vxlan",
            Overlay::Geneve => "geneve",
            Overlay::Ipip => "ipip",
        }
    }
}

/// Node `n` (1 or 2) in `ns`: forwarding on, its pod namespace on a veth with subnet `n`.
fn node(ns: Netns, uplink: String, underlay_ip: String, addrs: &AddrBlock, n: u32) -> OverlayNode {
    ns.up("lo");
    ns.sysctl("net.ipv4.ip_forward", "1");
    let pod = Netns::new(&format!("p{n}"));
    let (host_if, pod_if) = (unique_name(&format!("h{n}")), unique_name(&format!("c{n}")));
    veth(&ns, &host_if, &pod, &pod_if);
    let (gw, pod_ip) = (addrs.host(n, 1), addrs.host(n, 10));
    ns.addr(&host_if, &format!("{gw}/32"));
    ns.route(&[&format!("{pod_ip}/32"), "dev", &host_if]);
    pod.addr(&pod_if, &format!("{pod_ip}/24"));
    pod.up("lo");
    pod.route(&[&format!("{gw}/32"), "dev", &pod_if]);
    pod.route(&["default", "via", &gw, "dev", &pod_if]);
    let pod_net = addrs.net(n);
    let tunnel_ip = pod_net.trim_end_matches("/24").to_string();
    OverlayNode { ns, uplink, underlay_ip, tunnel_dev: unique_name(&format!("t{n}")), tunnel_ip, pod, pod_if, pod_ip, pod_net }
}

/// `from`'s tunnel device toward `to`, up, with its address; VXLAN with a fixed `local` when
/// `fixed_local`, and learning when `learning` (flannel: neither learning nor without local).
fn tunnel(overlay: Overlay, from: &OverlayNode, to: &OverlayNode, fixed_local: bool, learning: bool, vni: u32) {
    let dev = from.tunnel_dev.as_str();
    let vni = vni.to_string();
    let (local, remote) = (from.underlay_ip.as_str(), to.underlay_ip.as_str());
    match overlay {
        Overlay::Vxlan { port } => {
            let port = port.to_string();
            let mut args = vec!["link", "add", dev, "type", "vxlan", "id", &vni, "dstport", &port];
            if fixed_local {
                args.extend(["local", local]);
            }
            args.extend(["dev", &from.uplink, if learning { "learning" } else { "nolearning" }]);
            from.ns.ip(&args);
            from.ns.ip(&["link", "set", dev, "mtu", "1450"]);
        }
        Overlay::Geneve => {
            from.ns.ip(&["link", "add", dev, "type", "geneve", "id", &vni, "remote", remote]);
            from.ns.ip(&["link", "set", dev, "mtu", "1450"]);
        }
        Overlay::Ipip => {
            from.ns.ip(&["link", "add", dev, "type", "ipip", "local", local, "remote", remote, "dev", &from.uplink]);
            from.ns.ip(&["link", "set", dev, "mtu", "1440"]);
        }
    }
    from.ns.addr(dev, &format!("{}/32", from.tunnel_ip));
    from.ns.up(dev);
}

/// `from`'s route to `to`'s pods through the tunnel, and for the Ethernet overlays the
/// neighbour (and VXLAN forwarding) entries flannel would write.
fn route(overlay: Overlay, from: &OverlayNode, to: &OverlayNode) {
    let dev = from.tunnel_dev.as_str();
    if overlay == Overlay::Ipip {
        from.ns.route(&[&to.pod_net, "dev", dev]);
        return;
    }
    let their_mac = mac_of(&to.ns, &to.tunnel_dev);
    from.ns.route(&[&to.pod_net, "via", &to.tunnel_ip, "dev", dev, "onlink"]);
    from.ns.ip(&["neigh", "replace", &to.tunnel_ip, "lladdr", &their_mac, "dev", dev, "nud", "permanent"]);
    if let Overlay::Vxlan { .. } = overlay {
        from.ns.exec_ok(&["bridge", "fdb", "append", &their_mac, "dev", dev, "dst", &to.underlay_ip, "self", "permanent"]);
    }
}

/// A device's MAC address, from `ip -j link show`.
pub fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.exec_ok(&["ip", "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link show");
    v[0]["address"].as_str().unwrap_or_else(|| panic!("no address for {dev}: {v}")).to_string()
}

/// Issue 22's cross-node fault: a flannel-style VXLAN lab whose node A DNATs a Service address
/// (port 80) to pod B's port 8080 and whose node B's firewall drops A's tunnel packets.
pub struct CrossNodeFault {
    pub lab: OverlayLab,
    /// The Service address on node A.
    pub service: String,
    /// Pod B's `ip:8080`, the Service's backend.
    pub backend: String,
    /// `file:PATH` of [`Self::pods`].
    pub pods_from: String,
    /// A pods file naming `lab/client` (on A) and `lab/server` (on B); removed on drop, so keep
    /// it bound while tracers read it.
    pub pods: TempFile,
}

impl CrossNodeFault {
    pub fn build() -> CrossNodeFault {
        let lab = OverlayLab::new(Overlay::Vxlan { port: 8472 });
        lab.drop_tunnel_on_b();
        let (service, backend) = lab.service_on_a(8080);
        let pods = lab.pods_file();
        let pods_from = format!("file:{}", pods.0.display());
        CrossNodeFault { lab, service, backend, pods_from, pods }
    }
}

/// The shared lab lock when `test` can run here: privileged, and this kernel makes `kind`
/// devices (else it skips loudly, naming the kernels that can).
pub fn can_build(test: &str, kind: &str) -> Option<LabLock> {
    if !require_privileged(test) {
        return None;
    }
    let lock = shared_lock();
    if !kernel_has_link_kind(kind) {
        skipped(test, &format!("this kernel cannot make {kind} devices (not built); the VM matrix's 6.1 and 6.12 can"));
        return None;
    }
    Some(lock)
}

/// Whether this kernel can make a device of `kind` (ipip and geneve are modules on Debian's
/// kernels and not built on some): made and deleted in a throwaway namespace.
pub fn kernel_has_link_kind(kind: &str) -> bool {
    let ns = Netns::new("k");
    let dev = unique_name("k");
    let args: Vec<&str> = match kind {
        "geneve" => vec!["link", "add", &dev, "type", "geneve", "id", "1", "remote", "198.18.0.1"],
        "ipip" => vec!["link", "add", &dev, "type", "ipip", "remote", "198.18.0.1"],
        "vxlan" => vec!["link", "add", &dev, "type", "vxlan", "id", "1", "dstport", "4789"],
        other => vec!["link", "add", &dev, "type", other],
    };
    let mut argv = vec!["ip"];
    argv.extend(args);
    ns.exec(&argv).status.success()
}
