//! The overlay rules: why a tunnel dropped pod traffic (`tunnel-source-mismatch`, `tunnel-drop`),
//! read from the drop's reason, its inner and outer headers, and the receiving namespace's tunnel
//! facts (kernel::tunnels, through [`Facts::tunnels`] and [`Facts::route_to`]). A submodule of
//! the rules so it shares their helpers without widening them.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::IpAddr,
};

use serde_json::{Value, json};

use super::{Facts, Finding, Severity, drop_of, netns_words, obj, pods_and_flows, traffic_words};
use crate::{
    diagnose::flows::Connections,
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
pub(super) fn tunnel_findings(events: &[Event], conns: &Connections, facts: &mut dyn Facts, out: &mut Vec<Finding>) {
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
        let (pods, flows, seen) = pods_and_flows(group.iter().copied(), &mut evidence);
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
            let summary = format!("{where_} drops {carrying}{dev_words} ({ENTRY_EXISTS}): their outer source {used} is not {expect_words}; {fix}",);
            out.push(Finding { code: "tunnel-source-mismatch", severity: Severity::Error, summary, pods, flows, evidence, seen });
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
        let summary = format!("{where_} dropped {carrying}{dev_words} ({reason}): {why}");
        out.push(Finding { code: "tunnel-drop", severity: Severity::Error, summary, pods, flows, evidence, seen });
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
            if !cause.summary.contains("this also explains") {
                cause.summary.push_str(&format!("; this also explains the {} of these connections (see evidence)", symptom.code));
            }
        }
    }
    *out = keep.into_iter().map(|(_, f)| f).collect();
}
