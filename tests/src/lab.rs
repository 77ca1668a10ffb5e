//! Ready-made topologies of namespaces: two hosts on one veth ([`PairLab`]), hosts on a
//! node's bridge ([`BridgeLab`]), and two subnets joined by a router ([`RoutedLab`]).

use crate::{AddrBlock, Netns, unique_name, veth};

/// Two hosts joined by one veth: `a` (`a_ip` on `a_if`) <-> `b` (`b_ip` on `b_if`), one /24.
pub struct PairLab {
    pub a: Netns,
    pub b: Netns,
    pub a_if: String,
    pub b_if: String,
    pub a_ip: String,
    pub b_ip: String,
    pub addrs: AddrBlock,
}

impl PairLab {
    pub fn new() -> PairLab {
        let addrs = AddrBlock::new();
        let a = Netns::new("a");
        let b = Netns::new("b");
        let a_if = unique_name("va");
        let b_if = unique_name("vb");
        veth(&a, &a_if, &b, &b_if);
        let a_ip = addrs.host(0, 1);
        let b_ip = addrs.host(0, 2);
        a.addr(&a_if, &format!("{a_ip}/24"));
        b.addr(&b_if, &format!("{b_ip}/24"));
        PairLab { a, b, a_if, b_if, a_ip, b_ip, addrs }
    }
}

impl Default for PairLab {
    fn default() -> Self {
        Self::new()
    }
}

/// A "node" namespace with a bridge and `n` host namespaces attached to it, all in one /24.
/// The node itself has address `.254` on the bridge.
pub struct BridgeLab {
    pub node: Netns,
    pub bridge: String,
    pub node_ip: String,
    /// (namespace, its interface, its address)
    pub hosts: Vec<(Netns, String, String)>,
    /// The node's end of host `i`'s veth (a port of the bridge).
    pub ports: Vec<String>,
    pub addrs: AddrBlock,
}

impl BridgeLab {
    pub fn new(n: u32) -> BridgeLab {
        let addrs = AddrBlock::new();
        let node = Netns::new("n");
        let bridge = unique_name("br");
        node.bridge(&bridge);
        let node_ip = addrs.host(0, 254);
        node.addr(&bridge, &format!("{node_ip}/24"));
        let (mut hosts, mut ports) = (Vec::new(), Vec::new());
        for i in 0..n {
            let ns = Netns::new("h");
            let inner = unique_name("e");
            let outer = unique_name("p");
            veth(&ns, &inner, &node, &outer);
            node.enslave(&outer, &bridge);
            let ip = addrs.host(0, i + 1);
            ns.addr(&inner, &format!("{ip}/24"));
            hosts.push((ns, inner, ip));
            ports.push(outer);
        }
        BridgeLab { node, bridge, node_ip, hosts, ports, addrs }
    }
}

/// `a` (subnet 0) <-> `r` (router, forwarding on) <-> `b` (subnet 1). Subnets 2 and 3 of the
/// block are routed nowhere.
pub struct RoutedLab {
    pub a: Netns,
    pub r: Netns,
    pub b: Netns,
    pub a_if: String,
    pub ra_if: String,
    pub rb_if: String,
    pub b_if: String,
    pub a_ip: String,
    pub ra_ip: String,
    pub rb_ip: String,
    pub b_ip: String,
    pub addrs: AddrBlock,
}

impl RoutedLab {
    pub fn new() -> RoutedLab {
        let addrs = AddrBlock::new();
        let a = Netns::new("a");
        let r = Netns::new("r");
        let b = Netns::new("b");
        let (a_if, ra_if, rb_if, b_if) = (unique_name("va"), unique_name("ra"), unique_name("rb"), unique_name("vb"));
        veth(&a, &a_if, &r, &ra_if);
        veth(&b, &b_if, &r, &rb_if);
        let (a_ip, ra_ip) = (addrs.host(0, 1), addrs.host(0, 254));
        let (b_ip, rb_ip) = (addrs.host(1, 1), addrs.host(1, 254));
        a.addr(&a_if, &format!("{a_ip}/24"));
        r.addr(&ra_if, &format!("{ra_ip}/24"));
        r.addr(&rb_if, &format!("{rb_ip}/24"));
        b.addr(&b_if, &format!("{b_ip}/24"));
        a.route(&["default", "via", &ra_ip]);
        b.route(&["default", "via", &rb_ip]);
        r.sysctl("net.ipv4.ip_forward", "1");
        RoutedLab { a, r, b, a_if, ra_if, rb_if, b_if, a_ip, ra_ip, rb_ip, b_ip, addrs }
    }
}

impl Default for RoutedLab {
    fn default() -> Self {
        Self::new()
    }
}
