//! kube-proxy-like Services for the privileged tests: the chains kube-proxy (iptables mode)
//! writes into the iptables-legacy `nat` table of a node namespace, and [`NatLab`], a node
//! with a pod bridge, backends and clients to write them into.
//!
//! The lab is a "node" namespace with IP forwarding on and a bridge (like a CNI's `cni0`) to
//! backend "pods" (subnet 0 of the lab's block, the node at `.254`), and one or two "client"
//! namespaces on their own veths (subnets 1 and 2, the node at `.254`). Subnet 3 is the Service
//! range: ClusterIPs that no host has and the node has no route for.

use crate::{AddrBlock, BridgeLab, Netns, unique_name, veth};

/// Runs `iptables-legacy -t nat RULE...` in `ns`.
pub fn nat(ns: &Netns, rule: &[&str]) {
    let mut v = vec!["-t", "nat"];
    v.extend_from_slice(rule);
    ns.iptables("iptables-legacy", &v);
}

/// The chains kube-proxy (iptables mode) creates once per node, in `ns`: KUBE-SERVICES from
/// PREROUTING and OUTPUT, KUBE-MARK-MASQ, and KUBE-POSTROUTING that masquerades marked
/// connections.
pub fn kube_proxy_base(ns: &Netns) {
    for chain in ["KUBE-SERVICES", "KUBE-MARK-MASQ", "KUBE-POSTROUTING"] {
        nat(ns, &["-N", chain]);
    }
    nat(ns, &["-A", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]);
    nat(ns, &["-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]);
    nat(ns, &["-A", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"]);
    nat(ns, &["-A", "KUBE-MARK-MASQ", "-j", "MARK", "--or-mark", "0x4000"]);
    nat(ns, &["-A", "KUBE-POSTROUTING", "-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"]);
    nat(ns, &["-A", "KUBE-POSTROUTING", "-j", "MARK", "--xor-mark", "0x4000"]);
    nat(
        ns,
        &["-A", "KUBE-POSTROUTING", "-m", "comment", "--comment", "kubernetes service traffic requiring SNAT", "-j", "MASQUERADE", "--random-fully"],
    );
}

/// A Service `cip:port/proto` -> `backends` (IPs) `:targetPort` (`ports` = (port, targetPort))
/// in `ns`, as kube-proxy writes it, with `statistic --mode nth` (round robin in connection
/// order, the first connection to the first backend) where kube-proxy writes `--mode random
/// --probability 1/n`. `masquerade_all` adds the KUBE-MARK-MASQ jump kube-proxy writes with
/// `masqueradeAll` (or for sources outside the cluster CIDR). `name` must be unique per node,
/// upper case, at most 8 bytes. Needs [`kube_proxy_base`].
pub fn service(ns: &Netns, name: &str, proto: &str, cip: &str, ports: (u16, u16), backends: &[&str], masquerade_all: bool) {
    let svc = format!("KUBE-SVC-{name}");
    let port = ports.0.to_string();
    let dst = format!("{cip}/32");
    let comment = format!("lab/{} cluster IP", name.to_lowercase());
    nat(ns, &["-N", &svc]);
    nat(ns, &["-A", "KUBE-SERVICES", "-d", &dst, "-p", proto, "-m", "comment", "--comment", &comment, "-m", proto, "--dport", &port, "-j", &svc]);
    if masquerade_all {
        nat(ns, &["-A", &svc, "-d", &dst, "-p", proto, "-m", proto, "--dport", &port, "-j", "KUBE-MARK-MASQ"]);
    }
    let n = backends.len();
    for (k, b) in backends.iter().enumerate() {
        let sep = format!("KUBE-SEP-{name}-{k}");
        let target = format!("{b}:{}", ports.1);
        nat(ns, &["-N", &sep]);
        nat(ns, &["-A", &sep, "-s", &format!("{b}/32"), "-j", "KUBE-MARK-MASQ"]);
        nat(ns, &["-A", &sep, "-p", proto, "-m", proto, "-j", "DNAT", "--to-destination", &target]);
        let comment = format!("lab/{} -> {target}", name.to_lowercase());
        if k + 1 < n {
            // Rule k sees only what rules 0..k let through: every (n - k)th of those.
            let every = (n - k).to_string();
            nat(
                ns,
                &[
                    "-A",
                    &svc,
                    "-m",
                    "comment",
                    "--comment",
                    &comment,
                    "-m",
                    "statistic",
                    "--mode",
                    "nth",
                    "--every",
                    &every,
                    "--packet",
                    "0",
                    "-j",
                    &sep,
                ],
            );
        } else {
            nat(ns, &["-A", &svc, "-m", "comment", "--comment", &comment, "-j", &sep]);
        }
    }
}

/// A namespace with one address.
pub struct Host {
    pub ns: Netns,
    pub ip: String,
}

/// The node with its pod bridge, backends on the bridge and clients on their own veths (see the
/// module comment). Without rules: add [`NatLab::kube_proxy_base`] and [`service`]s.
pub struct NatLab {
    pub addrs: AddrBlock,
    pub node: Netns,
    /// The node's bridge to the backend pods.
    pub bridge: String,
    /// The node's address on the bridge (subnet 0, `.254`).
    pub node_pod_ip: String,
    /// Backends: subnet 0, `.1`, `.2`, ...
    pub backends: Vec<Host>,
    /// The node's end of backend `i`'s veth: the bridge port its packets leave the node by.
    pub backend_ifs: Vec<String>,
    /// Clients: client `i` is `.1` of subnet `1 + i`.
    pub clients: Vec<Host>,
    /// The node's veth towards client `i`.
    pub client_ifs: Vec<String>,
}

impl NatLab {
    pub fn new(backends: u32, clients: u32) -> NatLab {
        assert!((1..=2).contains(&clients) && (1..=20).contains(&backends));
        // The node, its bridge (`.254` of subnet 0) and the backends on it, as BridgeLab builds them.
        let BridgeLab { node, bridge, node_ip: node_pod_ip, hosts, ports: backend_ifs, addrs } = BridgeLab::new(backends);
        let backends = hosts.into_iter().map(|(ns, _, ip)| Host { ns, ip }).collect();
        let mut lab = NatLab { addrs, node, bridge, node_pod_ip, backends, backend_ifs, clients: Vec::new(), client_ifs: Vec::new() };
        for b in &lab.backends {
            b.ns.route(&["default", "via", &lab.node_pod_ip]);
        }
        for i in 0..clients {
            let ns = Netns::new("c");
            let (inner, outer) = (unique_name("e"), unique_name("c"));
            veth(&ns, &inner, &lab.node, &outer);
            let (ip, gw) = (lab.addrs.host(1 + i, 1), lab.addrs.host(1 + i, 254));
            ns.addr(&inner, &format!("{ip}/24"));
            lab.node.addr(&outer, &format!("{gw}/24"));
            ns.route(&["default", "via", &gw]);
            lab.clients.push(Host { ns, ip });
            lab.client_ifs.push(outer);
        }
        lab.node.sysctl("net.ipv4.ip_forward", "1");
        lab
    }

    /// The whole block (four /24s, aligned) as one CIDR, for `--ip`.
    pub fn block(&self) -> String {
        self.addrs.net(0).replace("/24", "/22")
    }

    /// The node's end of the veth of the backend with address `ip` (`IP` or `IP:PORT`).
    pub fn backend_if(&self, ip: &str) -> &str {
        let ip = ip.rsplit_once(':').map_or(ip, |(ip, _)| ip);
        let i = self.backends.iter().position(|b| b.ip == ip).unwrap_or_else(|| panic!("{ip} is no backend of the lab"));
        &self.backend_ifs[i]
    }

    /// A Service address: host `n` of subnet 3, which no namespace has.
    pub fn cluster_ip(&self, n: u32) -> String {
        self.addrs.host(3, n)
    }

    /// `iptables-legacy -t nat RULE...` in the node.
    pub fn nat(&self, rule: &[&str]) {
        nat(&self.node, rule);
    }

    /// [`kube_proxy_base`] in the node.
    pub fn kube_proxy_base(&self) {
        kube_proxy_base(&self.node);
    }
}
