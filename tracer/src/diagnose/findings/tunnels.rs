//! The overlay rules: why a tunnel dropped pod traffic (`tunnel-source-mismatch`, `tunnel-drop`),
//! read from the drop's reason, its inner and outer headers, and the receiving namespace's tunnel
//! facts (kernel::tunnels, through [`Facts::tunnels`] and [`Facts::route_to`]). A submodule of
//! the rules so it shares their helpers without widening them.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
};

use serde_json::{Value, json};

use super::{Facts, Finding, Run, Severity, drop_of, netns_words, obj, told, traffic_words};
use crate::{
    events::{Event, Tunnel},
    kernel::tunnels::{TunnelDevice, TunnelFacts},
};

/// A static forwarding entry disagrees with the packet's outer source (vxlan_snoop).
pub(super) const ENTRY_EXISTS: &str = "VXLAN_ENTRY_EXISTS";

/// Drop reasons of tunnel devices (kernel names, without the prefix). NO_TX_TARGET and
/// TUNNEL_TXINFO are sending-side: the packet is still the inner frame there, on the tunnel
/// device, so it has no `tunnel` object; the device tells it.
pub(super) const TUNNEL_REASONS: &[&str] = &[
    ENTRY_EXISTS,
    "VXLAN_INVALID_HDR",
    "VXLAN_VNI_NOT_FOUND",
    "VXLAN_NO_REMOTE",
    "IP_TUNNEL_ECN",
    "TUNNEL_TXINFO",
    "NO_TX_TARGET",
    "MAC_INVALID_SOURCE",
];

/// Symptom findings a tunnel finding explains when all their connections are its own.
const SYMPTOMS: &[&str] = &["nat-no-reply", "retransmit-storm"];

/// A drop of a pod flow by a tunnel: a tunnel reason on a packet that was encapsulated, or on a
/// tunnel device (sending side), to a unicast inner destination (flannel.1 frees the ND and MLD
/// multicast it has no entry for: routine).
fn tunnel_drop<'a>(e: &'a Event, devices: &dyn Fn(Option<u32>, &str) -> bool) -> Option<&'a str> {
    let d = drop_of(e)?;
    if !TUNNEL_REASONS.contains(&d.reason.as_str()) {
        return None;
    }
    let unicast = match e.flow.dst? {
        IpAddr::V4(v) => !v.is_multicast() && !v.is_broadcast(),
        IpAddr::V6(v) => !v.is_multicast(),
    };
    let on_tunnel = e.flow.tunnel.is_some() || e.ifname.as_deref().is_some_and(|dev| devices(e.netns, dev));
    (unicast && on_tunnel).then_some(d.reason.as_str())
}

/// How a tunnel is called: `VXLAN (VNI 1, 198.18.0.11 -> 198.18.0.2:8472)`; the outer source
/// port is left out (it differs per inner flow hash, so per packet group).
pub(super) fn tunnel_words(t: &Tunnel) -> String {
    let vni = t.vni.map(|v| format!("VNI {v}, ")).unwrap_or_default();
    let dst = crate::events::Flow { src: Some(t.dst), sport: t.dport, ..Default::default() }.src_endpoint().unwrap_or_default();
    format!("{} packets ({vni}{} -> {dst})", t.kind.name().to_uppercase(), t.src)
}

/// The tunnel device of `facts` that received `t`: the VXLAN/Geneve device of its VNI and port,
/// else the device the event names.
fn receiving_device<'a>(facts: &'a TunnelFacts, t: Option<&Tunnel>, ifname: Option<&str>) -> Option<&'a TunnelDevice> {
    t.and_then(|t| facts.devices.iter().find(|d| d.kind == t.kind.name() && d.vni == t.vni && (d.dstport.is_none() || d.dstport == t.dport)))
        .or_else(|| facts.devices.iter().find(|d| Some(d.name.as_str()) == ifname))
}

/// What the receiving node's forwarding database expects for the VTEP that sent to `inner_src`:
/// the route to the pod's address gives the peer's tunnel address, its neighbour entry the
/// VTEP's MAC, the FDB entry of that MAC the address (flannel's chain). When the chain breaks,
/// the one static entry with another address is it: VXLAN_ENTRY_EXISTS says a static entry
/// for the sender's MAC names another address, so with one such entry there is no choice.
fn expected_vtep(facts: &TunnelFacts, device: &TunnelDevice, gateway: Option<IpAddr>, used: IpAddr) -> Option<(String, IpAddr, &'static str)> {
    let entries = facts.fdb.iter().filter(|e| e.ifindex == device.ifindex);
    if let Some(gw) = gateway
        && let Some(n) = facts.neighbours.iter().find(|n| n.ifindex == device.ifindex && n.ip == gw)
        && let Some(e) = entries.clone().find(|e| e.mac == n.mac && e.permanent)
        && let Some(dst) = e.dst.filter(|&d| d != used)
    {
        return Some((e.mac.clone(), dst, "route"));
    }
    let others: Vec<_> = entries.filter(|e| e.permanent && e.dst.is_some_and(|d| d != used)).collect();
    match others.as_slice() {
        [one] => Some((one.mac.clone(), one.dst?, "only_static_entry")),
        _ => None,
    }
}

/// Both rules, and then the symptoms they explain.
pub(super) fn tunnel_findings(run: &Run<'_>, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
    let (events, conns) = (run.events, &run.conns);
    let mut known: BTreeMap<u32, Option<TunnelFacts>> = BTreeMap::new();
    let mut tunnels_of = |netns: u32, facts: &mut dyn Facts| known.entry(netns).or_insert_with(|| facts.tunnels(netns)).clone();
    // Sending-side drops name only the device: is it a tunnel device of its namespace?
    let mut device_is_tunnel: BTreeMap<(u32, String), bool> = BTreeMap::new();
    for e in events {
        if let (Some(netns), Some(dev), Some(d)) = (e.netns, e.ifname.as_deref(), drop_of(e))
            && TUNNEL_REASONS.contains(&d.reason.as_str())
            && e.flow.tunnel.is_none()
        {
            let is = tunnels_of(netns, facts).is_some_and(|t| t.devices.iter().any(|d| d.name == dev));
            device_is_tunnel.insert((netns, dev.to_string()), is);
        }
    }
    let is_tunnel = |netns: Option<u32>, dev: &str| netns.is_some_and(|n| device_is_tunnel.get(&(n, dev.to_string())).copied().unwrap_or(false));
    // (namespace, reason, outer source, VNI) -> drops.
    type Key = (Option<u32>, String, Option<IpAddr>, Option<u32>);
    let mut groups: BTreeMap<Key, Vec<&Event>> = BTreeMap::new();
    for e in events {
        if let Some(reason) = tunnel_drop(e, &is_tunnel) {
            let t = e.flow.tunnel.as_ref();
            groups.entry((e.netns, reason.to_string(), t.map(|t| t.src), t.and_then(|t| t.vni))).or_default().push(e);
        }
    }
    for ((netns, reason, used, _), group) in groups {
        let tf = netns.and_then(|n| tunnels_of(n, facts));
        let first = group[0];
        let tunnel = first.flow.tunnel;
        let device = tf.as_ref().and_then(|tf| receiving_device(tf, tunnel.as_ref(), first.ifname.as_deref()));
        let connections: BTreeSet<String> = group.iter().filter_map(|e| conns.of(e).map(|(_, label)| label)).collect();
        let mut evidence = obj(json!({
            "events": group.len(), "drops": group.len(), "reason": reason, "netns": netns,
            "netns_pod": group.iter().find_map(|e| e.netns_pod.clone()),
            "tunnel": tunnel.map(|t| json!({"type": t.kind.name(), "vni": t.vni, "src": t.src.to_string(), "dst": t.dst.to_string()})),
            "device": device.map(|d| d.name.clone()),
            "tunnel_device": device,
            "connections": connections,
        }));
        let told = told(run, &group, &mut evidence);
        let where_ = netns_words(netns, &group, facts);
        let carrying = match &tunnel {
            Some(t) => format!("{} carrying {}", tunnel_words(t), traffic_words(&group)),
            None => traffic_words(&group),
        };
        let dev_words = device.map(|d| format!(" on {}", d.name)).unwrap_or_default();
        if reason == ENTRY_EXISTS
            && let (Some(used), Some(tf), Some(device)) = (used, tf.as_ref(), device)
        {
            let gateway = match (netns, first.flow.src) {
                (Some(n), Some(src)) => facts.route_to(n, src).and_then(|r| r.gateway),
                _ => None,
            };
            let expected = expected_vtep(tf, device, gateway, used);
            let underlay: Vec<String> = device.link.map(|l| tf.addresses_of(l).iter().map(IpAddr::to_string).collect()).unwrap_or_default();
            evidence.insert("source_used".into(), json!(used.to_string()));
            evidence.insert("source_expected".into(), json!(expected.as_ref().map(|(_, ip, _)| ip.to_string())));
            evidence.insert("vtep_mac".into(), json!(expected.as_ref().map(|(mac, ..)| mac.clone())));
            evidence.insert("expected_from".into(), json!(expected.as_ref().map(|(.., how)| *how)));
            evidence.insert("learning".into(), json!(device.learning));
            evidence.insert("underlay".into(), json!(device.link_name));
            evidence.insert("underlay_addresses".into(), json!(underlay));
            // The sending side, when the run saw the connection in the namespace that owns the
            // source used (a node traced from the same host, or the NAT of the connection there).
            let keys: HashSet<_> = group.iter().filter_map(|e| conns.key_of(e)).collect();
            let elsewhere: BTreeSet<u32> =
                events.iter().filter(|e| e.netns != netns && conns.key_of(e).is_some_and(|k| keys.contains(&k))).filter_map(|e| e.netns).collect();
            let sender = elsewhere.into_iter().find_map(|n| {
                let tf = tunnels_of(n, facts)?;
                let owner = tf.addresses.iter().find(|a| a.ip == used)?;
                let dev = tf.devices.iter().find(|d| tunnel.is_some_and(|t| d.kind == t.kind.name() && d.vni == t.vni));
                let route = tunnel.and_then(|t| facts.route_to(n, t.dst));
                Some((n, tf.clone(), owner.ifindex, dev.cloned(), route))
            });
            if let Some((n, stf, uplink, dev, route)) = &sender {
                let uplink_name = stf.names.iter().find(|(i, _)| i == uplink).map(|(_, name)| name.clone());
                let addresses: Vec<String> = stf.addresses_of(*uplink).iter().map(IpAddr::to_string).collect();
                evidence.insert(
                    "sender".into(),
                    json!({
                        "netns": n, "device": dev.as_ref().map(|d| d.name.clone()), "local": dev.as_ref().and_then(|d| d.local.map(|l| l.to_string())),
                        "route_source": route.as_ref().and_then(|r| r.prefsrc.map(|p| p.to_string())),
                        "uplink": uplink_name, "uplink_addresses": addresses,
                    }),
                );
            }
            let expect_words = match &expected {
                Some((mac, ip, _)) => format!("{ip}, the address its forwarding database has for the sending VTEP (static entry {mac} dst {ip})"),
                None => "the address of the static forwarding-database entry for the sending VTEP's MAC".into(),
            };
            let fix = match &expected {
                Some((_, ip, _)) => format!(
                    "make the sending node's tunnel leave from {ip} (the vxlan device's `local`, or the source of its route to {}), or correct the static entry",
                    tunnel.map(|t| t.dst.to_string()).unwrap_or_default()
                ),
                None => "make the sending node's tunnel leave from the address its peers have, or correct the static entry".into(),
            };
            let mut summary = format!("{where_} drops {carrying}{dev_words} ({ENTRY_EXISTS}): their outer source {used} is not {expect_words}");
            if let Some((n, stf, uplink, dev, route)) = &sender {
                let name = facts.netns_name(*n).map_or_else(|| format!("network namespace {n}"), |name| format!("network namespace {name} ({n})"));
                let uplink_name = stf.names.iter().find(|(i, _)| i == uplink).map_or("its uplink", |(_, name)| name.as_str());
                let why = match (dev.as_ref(), route.as_ref().and_then(|r| r.prefsrc)) {
                    (Some(d), Some(src)) if d.local.is_none() && src == used => {
                        format!(": its {} device {} has no fixed local address and its route to the peer prefers {used}", d.kind, d.name)
                    }
                    _ => String::new(),
                };
                summary.push_str(&format!("; the sender is {name}, whose {uplink_name} has {used}{why}"));
            }
            summary.push_str(&format!("; {fix}"));
            out.push(told.finding("tunnel-source-mismatch", Severity::Error, summary, evidence));
            continue;
        }
        let why = match reason.as_str() {
            ENTRY_EXISTS => "a static forwarding-database entry for the sending VTEP's MAC names another address than the packets' outer source",
            "VXLAN_VNI_NOT_FOUND" => {
                "no VXLAN device there has the packets' VNI on their port: the nodes disagree on the VNI (or the device is missing)"
            }
            "VXLAN_INVALID_HDR" => "the VXLAN header is not one the device accepts (flags or options such as GBP/GPE differ between the nodes)",
            "VXLAN_NO_REMOTE" | "NO_TX_TARGET" => {
                "the tunnel device has no remote for the destination (no forwarding-database entry or neighbour for the peer VTEP)"
            }
            "TUNNEL_TXINFO" => "the tunnel device in metadata mode got no tunnel information with the packet (no route or program set the remote)",
            "IP_TUNNEL_ECN" => "the outer header's ECN bits conflict with the inner packet's",
            "MAC_INVALID_SOURCE" => "the inner frame's source MAC is invalid (or the receiving device's own)",
            _ => "the tunnel refused them",
        };
        evidence.insert("source_used".into(), json!(used.map(|u| u.to_string())));
        let mut summary = format!("{where_} dropped {carrying}{dev_words} ({reason}): {why}");
        // The devices that were there instead: the VNIs the receiving node has on that port.
        if let (Some(tf), Some(t)) = (tf.as_ref(), tunnel)
            && reason == "VXLAN_VNI_NOT_FOUND"
        {
            let there: Vec<String> = tf
                .devices
                .iter()
                .filter(|d| d.kind == t.kind.name() && (d.dstport.is_none() || d.dstport == t.dport))
                .map(|d| format!("{} (VNI {})", d.name, d.vni.map_or_else(|| "external".into(), |v| v.to_string())))
                .collect();
            if !there.is_empty() {
                summary.push_str(&format!(
                    "; the packets carry VNI {}, the node has {}",
                    t.vni.map_or_else(|| "-".into(), |v| v.to_string()),
                    there.join(", ")
                ));
            }
            evidence.insert("devices_on_port".into(), json!(there));
        }
        out.push(told.finding("tunnel-drop", Severity::Error, summary, evidence));
    }
}

/// The MTU family's findings name the overlay where the facts show one: for `mtu-blackhole`,
/// the tunnel devices of the namespaces its events happened in (kind, MTU, underlay and its
/// MTU), so "tunnel MTU vs pod MTU vs underlay" is in the report, not left to the reader.
pub(super) fn name_overlays(facts: &mut dyn Facts, out: &mut [Finding]) {
    for f in out.iter_mut().filter(|f| f.code == "mtu-blackhole") {
        let namespaces: BTreeSet<u32> = f.seen.examples.iter().filter_map(|e| e["netns"].as_u64()).filter_map(|n| u32::try_from(n).ok()).collect();
        let mut overlay = Vec::new();
        let mut words = Vec::new();
        for netns in namespaces {
            let Some(tf) = facts.tunnels(netns) else { continue };
            for d in &tf.devices {
                let underlay_mtu = d.link.and_then(|l| tf.mtu_of(l));
                overlay.push(json!({
                    "netns": netns, "device": d.name, "type": d.kind, "vni": d.vni, "mtu": d.mtu,
                    "underlay": d.link_name, "underlay_mtu": underlay_mtu,
                }));
                let over = match (&d.link_name, underlay_mtu) {
                    (Some(u), Some(m)) => format!(" over {u} (MTU {m})"),
                    _ => String::new(),
                };
                words.push(format!("{} device {} (MTU {}){over}", d.kind, d.name, d.mtu.map_or_else(|| "-".into(), |m| m.to_string())));
            }
        }
        if overlay.is_empty() {
            continue;
        }
        // The pod side's MTU: the device the too-big packets arrived on (the narrow hop,
        // `device`, is the tunnel itself).
        let arrived = f.evidence.get("arrived_on").cloned().unwrap_or(Value::Null);
        let arrived_netns = arrived["netns"].as_u64().and_then(|n| u32::try_from(n).ok());
        let arrived_ifindex = arrived["ifindex"].as_u64().and_then(|n| u32::try_from(n).ok());
        let pod_mtu = arrived_netns.zip(arrived_ifindex).and_then(|(netns, ifindex)| facts.tunnels(netns)?.mtu_of(ifindex)).map(u64::from);
        let narrowest = overlay.iter().filter_map(|o| o["mtu"].as_u64()).min();
        f.summary.push_str(&format!("; the overlay here: {}", words.join(", ")));
        if let (Some(pod), Some(tunnel)) = (pod_mtu, narrowest)
            && pod > tunnel
        {
            f.summary.push_str(&format!(
                ", narrower than the {pod} of device {} the packets arrive on: give the pods an MTU of at most {tunnel}",
                arrived["device"].as_str().unwrap_or("-")
            ));
        }
        if let (Some(mtu), Some(Value::Object(on))) = (pod_mtu, f.evidence.get_mut("arrived_on")) {
            on.insert("mtu".into(), json!(mtu));
        }
        f.evidence.insert("overlay".into(), json!(overlay));
    }
}

/// A symptom whose connections are all explained by a tunnel finding is folded into it: the
/// report leads with the cause, and what the symptom said (the Service, the backend, the
/// retransmits) stays in the cause's `explains` evidence.
pub(super) fn fold_symptoms(out: &mut Vec<Finding>) {
    let mut causes: Vec<(usize, HashSet<String>)> = Vec::new();
    for (i, f) in out.iter().enumerate() {
        if matches!(f.code, "tunnel-source-mismatch" | "tunnel-drop") {
            let conns = f.evidence.get("connections").and_then(Value::as_array).into_iter().flatten().filter_map(|c| c.as_str().map(String::from));
            causes.push((i, conns.chain(f.flows.iter().cloned()).collect()));
        }
    }
    if causes.is_empty() {
        return;
    }
    let mut folded: Vec<(usize, Finding)> = Vec::new();
    let mut keep = Vec::new();
    for (i, f) in std::mem::take(out).into_iter().enumerate() {
        let cause = SYMPTOMS
            .contains(&f.code)
            .then(|| causes.iter().find(|(_, conns)| !f.flows.is_empty() && f.flows.iter().all(|flow| conns.contains(flow))))
            .flatten();
        match cause {
            Some((at, _)) => folded.push((*at, f)),
            None => keep.push((i, f)),
        }
    }
    // Indices of `keep` are the original ones: map causes to their new places.
    for (at, symptom) in folded {
        if let Some((_, cause)) = keep.iter_mut().find(|(i, _)| *i == at) {
            let extra = symptom.evidence.get("events").and_then(Value::as_u64).unwrap_or(0);
            let events = cause.evidence.get("events").and_then(Value::as_u64).unwrap_or(0);
            cause.evidence.insert("events".into(), json!(events + extra));
            cause.pods.extend(symptom.pods.iter().cloned());
            let list = cause.evidence.entry("explains").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut() {
                list.push(json!({"code": symptom.code, "summary": symptom.summary, "flows": symptom.flows}));
            }
            if !cause.summary.contains(&format!("the {} of", symptom.code)) {
                cause.summary.push_str(&format!("; this also explains the {} of these connections (see evidence)", symptom.code));
            }
        }
    }
    *out = keep.into_iter().map(|(_, f)| f).collect();
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::{super::diagnose, *};
    use crate::{
        diagnose::findings::RunInfo,
        events::{Detail, Flow, TunnelKind},
        kernel::tunnels::{Address, FdbEntry, Neighbour, RouteTo},
        probes::{
            drops::detail::{DropDetail, PacketCt},
            nat::detail::{NatState, test_dnat_event},
            tcp::detail::TcpDetail,
        },
    };

    const MAC_A: &str = "4e:b1:c3:51:d4:eb";

    /// Node B (namespace 9): vxlan `vx` (5) VNI 1 on 8472 over `ub` (2), learning, a static
    /// FDB entry for A's VTEP MAC at 10.0.0.1 and the neighbour flannel writes for A's
    /// device address 10.244.1.0; the route to A's pods goes through it.
    struct NodeB {
        tunnels: HashMap<u32, TunnelFacts>,
        routes: bool,
    }

    impl NodeB {
        fn new(routes: bool) -> Self {
            let vx = TunnelDevice {
                name: "vx".into(),
                ifindex: 5,
                kind: "vxlan".into(),
                vni: Some(1),
                local: "10.0.0.2".parse().ok(),
                remote: None,
                dstport: Some(8472),
                link: Some(2),
                link_name: Some("ub".into()),
                learning: Some(true),
                external: false,
                mtu: Some(1450),
            };
            let tf = TunnelFacts {
                devices: vec![vx],
                fdb: vec![
                    FdbEntry { ifindex: 5, mac: MAC_A.into(), dst: "10.0.0.1".parse().ok(), vni: None, permanent: true },
                    FdbEntry { ifindex: 5, mac: "02:00:00:00:00:03".into(), dst: "10.0.0.3".parse().ok(), vni: None, permanent: true },
                ],
                neighbours: vec![Neighbour { ifindex: 5, ip: "10.244.1.0".parse().unwrap(), mac: MAC_A.into() }],
                addresses: vec![Address { ifindex: 2, ip: "10.0.0.2".parse().unwrap(), prefix: 24 }],
                names: vec![(2, "ub".into()), (5, "vx".into()), (6, "veth1".into())],
                mtus: vec![(2, 1500), (5, 1450), (6, 1500)],
            };
            // Node A (namespace 8): its vxlan `va` without a fixed local, its uplink `ua` with
            // 10.0.0.1 and 10.0.0.11.
            let va = TunnelDevice { name: "va".into(), ifindex: 4, local: None, link_name: Some("ua".into()), ..tf.devices[0].clone() };
            let node_a = TunnelFacts {
                devices: vec![va],
                addresses: vec![
                    Address { ifindex: 2, ip: "10.0.0.1".parse().unwrap(), prefix: 24 },
                    Address { ifindex: 2, ip: "10.0.0.11".parse().unwrap(), prefix: 24 },
                ],
                names: vec![(2, "ua".into()), (4, "va".into())],
                ..TunnelFacts::default()
            };
            Self { tunnels: HashMap::from([(9, tf), (8, node_a)]), routes }
        }
    }

    impl Facts for NodeB {
        fn sysctl(&mut self, _: u32, _: &str) -> Option<String> {
            None
        }
        fn netns_name(&mut self, netns: u32) -> Option<String> {
            (netns == 9).then(|| "node-b".into())
        }
        fn service(&self, _: IpAddr, _: u16, _: u8) -> Option<String> {
            None
        }
        fn knows_services(&self) -> bool {
            false
        }
        fn dropping_rules(&mut self, _: u32) -> std::rc::Rc<super::super::NamespaceRules> {
            std::rc::Rc::default()
        }
        fn tunnels(&mut self, netns: u32) -> Option<TunnelFacts> {
            self.tunnels.get(&netns).cloned()
        }
        fn route_to(&mut self, netns: u32, dst: IpAddr) -> Option<RouteTo> {
            if netns == 8 && dst.to_string() == "10.0.0.2" {
                return Some(RouteTo { oif: Some(2), gateway: None, prefsrc: "10.0.0.11".parse().ok() });
            }
            (self.routes && netns == 9 && dst.to_string().starts_with("10.244.1.")).then(|| RouteTo {
                oif: Some(5),
                gateway: "10.244.1.0".parse().ok(),
                prefsrc: None,
            })
        }
    }

    /// A drop on node B of pod A's SYN to pod B (DNATed from 10.96.0.20:80), in VXLAN from `src`.
    fn tunnel_drop_event(reason: &str, src: &str, vni: u32, ts: i128) -> Event {
        let mut e = test_dnat_event();
        e.ts_unix_ns = ts;
        e.flow = Flow {
            src: "10.244.1.7".parse().ok(),
            dst: "10.244.2.9".parse().ok(),
            sport: Some(40000),
            dport: Some(8080),
            l4_proto: Some(6),
            tunnel: Some(Tunnel {
                kind: TunnelKind::Vxlan,
                vni: Some(vni),
                src: src.parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                sport: Some(50000 + ts as u16),
                dport: Some(8472),
            }),
            ..Flow::default()
        };
        e.netns = Some(9);
        e.ifname = Some("vx".into());
        e.src_pod = Some("lab/client".into());
        e.dst_pod = Some("lab/server".into());
        e.detail = Detail::Drop(DropDetail {
            reason: reason.into(),
            reason_code: 0,
            location: "vxlan_rcv+0x8c".into(),
            len: 60,
            packet_ct: PacketCt::Unread,
            conntrack: None,
        });
        e
    }

    /// Node A's NAT of the connection (10.96.0.20:80 -> 10.244.2.9:8080), `state`.
    fn nat(state: NatState, ts: i128) -> Event {
        let mut e = test_dnat_event();
        e.ts_unix_ns = ts;
        e.netns = Some(8);
        e.flow.dport = Some(8080);
        e.flow.l4_proto = Some(6);
        if let Detail::Nat(n) = &mut e.detail {
            n.state = state;
            n.orig_dst = Some("10.96.0.20:80".into());
            n.reply_src = Some("10.244.2.9:8080".into());
            n.backend = Some("10.244.2.9:8080".into());
            n.backend_pod = Some("lab/server".into());
        }
        e
    }

    fn syn_retransmit(ts: i128, fail: bool) -> Event {
        let mut e = test_dnat_event();
        e.ts_unix_ns = ts;
        e.flow = Flow {
            src: "10.244.1.7".parse().ok(),
            dst: "10.96.0.20".parse().ok(),
            sport: Some(40000),
            dport: Some(80),
            l4_proto: Some(6),
            ..Flow::default()
        };
        let d = TcpDetail { state: Some("SYN_SENT"), count: 1, direction: None, duration_ms: None, syns_sent: None };
        e.detail = if fail { Detail::ConnectFail(d) } else { Detail::Retransmit(d) };
        e
    }

    fn run(events: &[Event], facts: &mut NodeB) -> Vec<Finding> {
        diagnose(events, &RunInfo { reply_timeout: Duration::from_secs(1), ..RunInfo::default() }, facts)
    }

    #[test]
    fn a_static_entry_for_another_source_is_a_tunnel_source_mismatch_that_leads() {
        let mut events = vec![nat(NatState::New, 1)];
        events.extend((0..3).map(|i| tunnel_drop_event(ENTRY_EXISTS, "10.0.0.11", 1, 2 + i)));
        events.extend((0..5).map(|i| syn_retransmit(10 + i, false)));
        events.push(syn_retransmit(20, true));
        events.push(nat(NatState::NoReply, 30));
        let f = run(&events, &mut NodeB::new(true));
        assert_eq!(f.iter().map(|f| f.code).collect::<Vec<_>>(), ["tunnel-source-mismatch"], "the symptoms fold into the cause: {f:#?}");
        let m = &f[0];
        assert_eq!(m.severity, Severity::Error);
        assert_eq!(m.pods, BTreeSet::from(["lab/client".to_string(), "lab/server".to_string()]));
        assert_eq!(m.flows, BTreeSet::from(["10.244.1.7:40000 -> 10.96.0.20:80".to_string()]));
        assert_eq!((m.evidence["source_used"].as_str(), m.evidence["source_expected"].as_str()), (Some("10.0.0.11"), Some("10.0.0.1")));
        assert_eq!((m.evidence["vtep_mac"].as_str(), m.evidence["expected_from"].as_str()), (Some(MAC_A), Some("route")));
        assert_eq!((m.evidence["device"].as_str(), m.evidence["underlay"].as_str()), (Some("vx"), Some("ub")));
        // The connection this finding told is not told again by nat-no-reply or a retransmit
        // storm (the rules after it leave told connections out): nothing was left to fold.
        assert!(m.evidence.get("explains").is_none(), "{m:#?}");
        assert!(m.summary.contains("network namespace node-b (9) drops VXLAN packets (VNI 1, 10.0.0.11 -> 10.0.0.2:8472)"), "{}", m.summary);
        assert!(m.summary.contains("outer source 10.0.0.11 is not 10.0.0.1"), "{}", m.summary);
        // Node A's NAT of the connection is in the run: the sender is named, and why it sends so.
        assert_eq!(m.evidence["sender"]["netns"], 8);
        assert_eq!(m.evidence["sender"]["uplink_addresses"], json!(["10.0.0.1", "10.0.0.11"]));
        assert!(
            m.summary.contains("whose ua has 10.0.0.11: its vxlan device va has no fixed local address and its route to the peer prefers 10.0.0.11"),
            "{}",
            m.summary
        );
    }

    #[test]
    fn without_the_route_the_expected_source_needs_a_single_other_static_entry() {
        // Two static entries with other addresses (10.0.0.1, 10.0.0.3): no choice without the
        // route; the finding says what the kernel says and no address.
        let events = [tunnel_drop_event(ENTRY_EXISTS, "10.0.0.11", 1, 1)];
        let f = run(&events, &mut NodeB::new(false));
        assert_eq!(f[0].code, "tunnel-source-mismatch");
        assert!(f[0].evidence["source_expected"].is_null(), "{f:#?}");
        // With one other entry only, it is that one.
        let mut facts = NodeB::new(false);
        facts.tunnels.get_mut(&9).unwrap().fdb.pop();
        let f = run(&events, &mut facts);
        assert_eq!(
            (f[0].evidence["source_expected"].as_str(), f[0].evidence["expected_from"].as_str()),
            (Some("10.0.0.1"), Some("only_static_entry"))
        );
    }

    #[test]
    fn an_unknown_vni_is_a_tunnel_drop_naming_the_vnis_there() {
        let f = run(&[tunnel_drop_event("VXLAN_VNI_NOT_FOUND", "10.0.0.1", 7, 1)], &mut NodeB::new(true));
        assert_eq!(f.iter().map(|f| f.code).collect::<Vec<_>>(), ["tunnel-drop"]);
        assert!(f[0].summary.contains("the packets carry VNI 7, the node has vx (VNI 1)"), "{}", f[0].summary);
        assert_eq!(f[0].pods.len(), 2);
    }

    #[test]
    fn no_tx_target_counts_on_tunnel_devices_for_unicast_only() {
        // vxlan_xmit frees the inner frame: no outer header yet; the device is the tunnel.
        let mut unicast = tunnel_drop_event("NO_TX_TARGET", "10.0.0.1", 1, 1);
        unicast.flow.tunnel = None;
        let f = run(std::slice::from_ref(&unicast), &mut NodeB::new(true));
        assert_eq!(f.iter().map(|f| f.code).collect::<Vec<_>>(), ["tunnel-drop"], "{f:#?}");
        assert!(f[0].summary.contains("no remote for the destination"), "{}", f[0].summary);
        let mut multicast = unicast.clone();
        multicast.flow.dst = "ff02::16".parse().ok();
        let mut elsewhere = unicast;
        elsewhere.ifname = Some("eth0".into());
        assert!(run(&[multicast, elsewhere], &mut NodeB::new(true)).is_empty());
    }

    #[test]
    fn an_mtu_blackhole_names_the_overlay_of_its_namespace() {
        let blackhole = |netns: u32| Finding {
            code: "mtu-blackhole",
            severity: Severity::Error,
            summary: "large packets do not fit".into(),
            pods: BTreeSet::new(),
            flows: BTreeSet::new(),
            evidence: obj(json!({"events": 4, "device": "vx", "dev_mtu": 1450, "arrived_on": {"netns": netns, "ifindex": 6, "device": "veth1"}})),
            seen: super::super::Seen { first: Some(1), last: Some(2), examples: vec![json!({"netns": netns})], ..Default::default() },
            conns: BTreeSet::new(),
        };
        let mut out = vec![blackhole(9), blackhole(7)];
        name_overlays(&mut NodeB::new(true), &mut out);
        assert!(
            out[0].summary.ends_with("; the overlay here: vxlan device vx (MTU 1450) over ub (MTU 1500), narrower than the 1500 of device veth1 the packets arrive on: give the pods an MTU of at most 1450"),
            "{}",
            out[0].summary
        );
        assert_eq!(out[0].evidence["overlay"][0]["underlay_mtu"], 1500);
        assert_eq!(out[0].evidence["arrived_on"]["mtu"], 1500, "the pod side's MTU, read from its namespace");
        assert_eq!(out[1].summary, "large packets do not fit", "no tunnel facts there, nothing named");
    }

    #[test]
    fn a_netfilter_drop_of_tunnel_packets_names_the_tunnel() {
        let e = tunnel_drop_event("NETFILTER_DROP", "10.0.0.1", 1, 1);
        let f = run(&[e], &mut NodeB::new(true));
        assert_eq!(f[0].code, "netfilter-drop");
        assert!(
            f[0].summary.contains("dropped VXLAN packets (VNI 1, 10.0.0.1 -> 10.0.0.2:8472) carrying 1 packet from 10.244.1.7:40000 (lab/client) to 10.244.2.9:8080 (lab/server)"),
            "{}",
            f[0].summary
        );
    }
}
