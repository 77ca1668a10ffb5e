//! Kubernetes Services by the addresses kube-proxy translates: ClusterIP (each of a dual-stack
//! Service's `clusterIPs`, and external or load-balancer IPs) + port + protocol -> `namespace/name`,
//! so `tracer nat` can say which Service a DNATed connection was addressed to.
//!
//! The index is fed by the Kubernetes API (list + watch, [`super::kube::ServiceSource`]) or by a
//! `--pods-from file:` List that also holds Services (`kubectl get pods,services -A -o json`). It
//! is not time-aware, unlike the pod registry: Services change rarely and their addresses are not
//! handed out again within seconds; a deleted Service stops matching once the deletion is seen.

use std::{collections::HashMap, net::IpAddr};

use k8s_openapi::api::core::v1::Service as ApiService;
use tokio::sync::watch;

use crate::{
    events::{Detail, Event},
    probes::nat::detail::NatKind,
};

/// IP protocol numbers of the protocols a Service port can have.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;

/// One address a Service answers on, as conntrack's original destination shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ServiceAddr {
    pub ip: IpAddr,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP).
    pub proto: u8,
}

/// A Service and every address it answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Service {
    /// `namespace/name`.
    pub name: String,
    pub addrs: Vec<ServiceAddr>,
}

/// What a Service source observed.
#[derive(Debug, Clone)]
pub(crate) enum ServiceUpdate {
    /// Every Service there is now: the others are gone.
    Snapshot(Vec<Service>),
    /// One Service added or changed (its addresses replace the ones it had).
    Upsert(Service),
    /// The Service `namespace/name` is gone.
    Delete { name: String },
}

/// Service addresses -> names.
#[derive(Debug, Default)]
pub(crate) struct ServiceIndex {
    /// The Services claiming each address, the latest claim last. Two Services never share a
    /// ClusterIP, but a Service re-created under another name may be seen before the old one's
    /// deletion: the address then names the newer until the older is deleted, then still the newer.
    by_addr: HashMap<ServiceAddr, Vec<String>>,
    by_name: HashMap<String, Vec<ServiceAddr>>,
}

impl ServiceIndex {
    pub(crate) fn apply(&mut self, update: ServiceUpdate) {
        match update {
            ServiceUpdate::Snapshot(services) => {
                self.by_addr.clear();
                self.by_name.clear();
                for svc in services {
                    self.insert(svc);
                }
            }
            ServiceUpdate::Upsert(svc) => {
                self.remove(&svc.name);
                self.insert(svc);
            }
            ServiceUpdate::Delete { name } => self.remove(&name),
        }
    }

    /// The Service answering on `ip:port` for protocol `proto`, as `namespace/name`.
    pub(crate) fn lookup(&self, ip: IpAddr, port: u16, proto: u8) -> Option<&str> {
        self.by_addr.get(&ServiceAddr { ip, port, proto }).and_then(|names| names.last()).map(String::as_str)
    }

    fn insert(&mut self, svc: Service) {
        for addr in &svc.addrs {
            let names = self.by_addr.entry(*addr).or_default();
            if !names.contains(&svc.name) {
                names.push(svc.name.clone());
            }
        }
        self.by_name.insert(svc.name, svc.addrs);
    }

    fn remove(&mut self, name: &str) {
        for addr in self.by_name.remove(name).unwrap_or_default() {
            if let Some(names) = self.by_addr.get_mut(&addr) {
                names.retain(|n| n != name);
                if names.is_empty() {
                    self.by_addr.remove(&addr);
                }
            }
        }
    }
}

/// `namespace/name` of an API Service; None without either.
pub(crate) fn api_name(svc: &ApiService) -> Option<String> {
    Some(format!("{}/{}", svc.metadata.namespace.as_deref()?, svc.metadata.name.as_deref()?))
}

/// Converts one API Service: every ClusterIP (`clusterIPs`, else `clusterIP`; headless `None`
/// left out), external IP and load-balancer ingress IP, times every port with its protocol.
/// A Service without addresses (headless, ExternalName) is still a Service: as an upsert it
/// removes the addresses it had. None without a namespace or name.
pub(crate) fn from_api(svc: &ApiService) -> Option<Service> {
    let name = api_name(svc)?;
    let Some(spec) = svc.spec.as_ref() else { return Some(Service { name, addrs: Vec::new() }) };
    let cluster = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect::<Vec<_>>(),
    };
    let external = spec.external_ips.iter().flatten().map(String::as_str);
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref());
    // "None" (headless) and "" (not allocated) do not parse and are left out.
    let mut ips: Vec<IpAddr> = Vec::new();
    for ip in cluster.into_iter().chain(external).chain(ingress).filter_map(|t| t.parse::<IpAddr>().ok()) {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let ports: Vec<(u16, u8)> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => IPPROTO_TCP,
                "UDP" => IPPROTO_UDP,
                "SCTP" => IPPROTO_SCTP,
                _ => return None,
            };
            Some((u16::try_from(p.port).ok()?, proto))
        })
        .collect();
    let addrs = ips.iter().flat_map(|&ip| ports.iter().map(move |&(port, proto)| ServiceAddr { ip, port, proto })).collect();
    Some(Service { name, addrs })
}

/// The Service names a nat command reads, kept current by whatever source feeds the sender.
#[derive(Debug, Clone)]
pub(crate) struct ServiceNames {
    rx: watch::Receiver<ServiceIndex>,
}

impl ServiceNames {
    /// A fresh index and the sender a source keeps it current with.
    pub(crate) fn channel() -> (watch::Sender<ServiceIndex>, Self) {
        let (tx, rx) = watch::channel(ServiceIndex::default());
        (tx, Self { rx })
    }

    /// No Service is known (no source, or none listed yet).
    pub(crate) fn is_empty(&self) -> bool {
        self.rx.borrow().by_name.is_empty()
    }

    /// The Service answering on `ip:port` for `proto` now (`namespace/name`).
    pub(crate) fn lookup(&self, ip: IpAddr, port: u16, proto: u8) -> Option<String> {
        self.rx.borrow().lookup(ip, port, proto).map(str::to_string)
    }

    /// Sets `service` on a DNAT event whose original destination is a Service's address.
    pub(crate) fn annotate(&self, event: &mut Event) {
        let Detail::Nat(nat) = &mut event.detail else { return };
        if nat.nat == NatKind::Snat {
            return;
        }
        let (Some(dst), Some(proto)) = (nat.orig_dst_addr, event.flow.l4_proto) else { return };
        nat.service = self.rx.borrow().lookup(dst.ip(), dst.port(), proto).map(str::to_string);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: &str, port: u16, proto: u8) -> ServiceAddr {
        ServiceAddr { ip: ip.parse().unwrap(), port, proto }
    }

    fn svc(name: &str, addrs: &[ServiceAddr]) -> Service {
        Service { name: name.into(), addrs: addrs.to_vec() }
    }

    fn api(json: &str) -> ApiService {
        serde_json::from_str(json).expect("valid Service JSON")
    }

    fn look(idx: &ServiceIndex, ip: &str, port: u16, proto: u8) -> Option<String> {
        idx.lookup(ip.parse().unwrap(), port, proto).map(str::to_string)
    }

    #[test]
    fn index_matches_address_port_and_protocol() {
        let mut idx = ServiceIndex::default();
        idx.apply(ServiceUpdate::Snapshot(vec![
            svc("kube-system/kube-dns", &[addr("10.96.0.10", 53, 17), addr("10.96.0.10", 53, 6), addr("10.96.0.10", 9153, 6)]),
            svc("shop/web", &[addr("10.96.3.4", 80, 6), addr("fd00:96::34", 80, 6)]),
        ]));
        assert_eq!(look(&idx, "10.96.0.10", 53, 17).as_deref(), Some("kube-system/kube-dns"));
        assert_eq!(look(&idx, "10.96.0.10", 9153, 6).as_deref(), Some("kube-system/kube-dns"));
        assert_eq!(look(&idx, "fd00:96::34", 80, 6).as_deref(), Some("shop/web"));
        assert_eq!(look(&idx, "10.96.3.4", 80, 17), None, "UDP is another port than TCP");
        assert_eq!(look(&idx, "10.96.3.4", 443, 6), None);
        assert_eq!(look(&idx, "10.96.3.5", 80, 6), None);
    }

    #[test]
    fn upsert_replaces_delete_removes_snapshot_resets() {
        let mut idx = ServiceIndex::default();
        idx.apply(ServiceUpdate::Upsert(svc("shop/web", &[addr("10.96.3.4", 80, 6)])));
        idx.apply(ServiceUpdate::Upsert(svc("shop/web", &[addr("10.96.3.4", 8080, 6)])));
        assert_eq!(look(&idx, "10.96.3.4", 80, 6), None, "the old port is gone");
        assert_eq!(look(&idx, "10.96.3.4", 8080, 6).as_deref(), Some("shop/web"));
        idx.apply(ServiceUpdate::Delete { name: "shop/web".into() });
        assert_eq!(look(&idx, "10.96.3.4", 8080, 6), None, "a deleted Service stops matching");
        assert!(idx.by_addr.is_empty() && idx.by_name.is_empty());
        idx.apply(ServiceUpdate::Upsert(svc("a/one", &[addr("10.96.0.1", 1, 6)])));
        idx.apply(ServiceUpdate::Snapshot(vec![svc("a/two", &[addr("10.96.0.2", 2, 6)])]));
        assert_eq!(look(&idx, "10.96.0.1", 1, 6), None, "a snapshot forgets what it does not list");
        assert_eq!(look(&idx, "10.96.0.2", 2, 6).as_deref(), Some("a/two"));
    }

    #[test]
    fn an_address_claimed_twice_names_the_latest_until_it_goes() {
        let mut idx = ServiceIndex::default();
        let a = addr("10.96.0.7", 80, 6);
        idx.apply(ServiceUpdate::Upsert(svc("x/old", &[a])));
        idx.apply(ServiceUpdate::Upsert(svc("x/new", &[a])));
        assert_eq!(look(&idx, "10.96.0.7", 80, 6).as_deref(), Some("x/new"));
        idx.apply(ServiceUpdate::Delete { name: "x/old".into() });
        assert_eq!(look(&idx, "10.96.0.7", 80, 6).as_deref(), Some("x/new"), "deleting the older keeps the newer");
        idx.apply(ServiceUpdate::Delete { name: "x/new".into() });
        assert_eq!(look(&idx, "10.96.0.7", 80, 6), None);
    }

    #[test]
    fn dual_stack_service_with_several_ports() {
        let s = api(r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"kube-dns","namespace":"kube-system"},
                "spec":{"type":"ClusterIP","clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10","fd00:96::a"],
                        "ipFamilies":["IPv4","IPv6"],
                        "ports":[{"name":"dns","port":53,"protocol":"UDP","targetPort":53},
                                 {"name":"dns-tcp","port":53,"protocol":"TCP","targetPort":53},
                                 {"name":"metrics","port":9153,"targetPort":9153}]}}"#);
        let s = from_api(&s).unwrap();
        assert_eq!(s.name, "kube-system/kube-dns");
        let want: Vec<ServiceAddr> =
            ["10.96.0.10", "fd00:96::a"].iter().flat_map(|ip| [addr(ip, 53, 17), addr(ip, 53, 6), addr(ip, 9153, 6)]).collect();
        assert_eq!(s.addrs, want, "every ClusterIP times every port; protocol defaults to TCP");
    }

    #[test]
    fn headless_external_name_and_load_balancer_services() {
        let headless =
            api(r#"{"metadata":{"name":"db","namespace":"shop"},"spec":{"clusterIP":"None","clusterIPs":["None"],"ports":[{"port":5432}]}}"#);
        assert_eq!(from_api(&headless).unwrap().addrs, [], "headless Services have no address to translate");
        let external = api(r#"{"metadata":{"name":"ext","namespace":"shop"},"spec":{"type":"ExternalName","externalName":"example.org"}}"#);
        assert_eq!(from_api(&external).unwrap(), svc("shop/ext", &[]));
        let lb = api(r#"{"metadata":{"name":"front","namespace":"shop"},
                "spec":{"type":"LoadBalancer","clusterIP":"10.96.5.5","externalIPs":["192.0.2.50"],
                        "ports":[{"port":443,"protocol":"TCP","nodePort":30443},{"port":7,"protocol":"ICMP"}]},
                "status":{"loadBalancer":{"ingress":[{"ip":"203.0.113.9"},{"hostname":"lb.example.org"}]}}}"#);
        let want: Vec<ServiceAddr> = ["10.96.5.5", "192.0.2.50", "203.0.113.9"].iter().map(|ip| addr(ip, 443, 6)).collect();
        assert_eq!(from_api(&lb).unwrap().addrs, want, "an unknown protocol's port is left out");
        let nameless = api(r#"{"metadata":{"namespace":"shop"},"spec":{"clusterIP":"10.96.5.6"}}"#);
        assert_eq!(from_api(&nameless), None);
    }

    #[test]
    fn only_dnat_to_a_service_address_is_named() {
        let (tx, names) = ServiceNames::channel();
        tx.send_modify(|idx| idx.apply(ServiceUpdate::Snapshot(vec![svc("kube-system/kube-dns", &[addr("10.96.0.10", 53, 17)])])));
        let service = |e: &Event| match &e.detail {
            Detail::Nat(n) => n.service.clone(),
            _ => None,
        };
        let mut e = crate::probes::nat::detail::test_dnat_event();
        names.annotate(&mut e);
        assert_eq!(service(&e).as_deref(), Some("kube-system/kube-dns"));

        let mut tcp = crate::probes::nat::detail::test_dnat_event();
        tcp.flow.l4_proto = Some(6);
        names.annotate(&mut tcp);
        assert_eq!(service(&tcp), None, "the Service has no TCP port 53");

        let mut snat = crate::probes::nat::detail::test_dnat_event();
        if let Detail::Nat(n) = &mut snat.detail {
            n.nat = NatKind::Snat;
        }
        names.annotate(&mut snat);
        assert_eq!(service(&snat), None, "without DNAT the original destination is where it went");

        tx.send_modify(|idx| idx.apply(ServiceUpdate::Delete { name: "kube-system/kube-dns".into() }));
        let mut later = crate::probes::nat::detail::test_dnat_event();
        names.annotate(&mut later);
        assert_eq!(service(&later), None, "a deleted Service stops matching");
    }
}
