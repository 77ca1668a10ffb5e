//! What a network namespace's tunnels are, read through rtnetlink (as `ip -d link`, `bridge fdb`,
//! `ip neigh`, `ip addr` and `ip route get` would show them, without those tools): each tunnel
//! device's kind, VNI/key, local and remote addresses, port, underlay device, learning flag and
//! MTU; the VXLAN forwarding database; the neighbour entries of tunnel devices; every address.
//! Parsing is pure (unit-tested on message bytes); only [`read`] and [`route_get`] talk to the
//! kernel, in the calling thread's namespace (`Namespaces::run_in` moves a thread there).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::rtnetlink::{ask, attributes, message};

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;

const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_GROUP: u16 = 2;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_GROUP6: u16 = 16;
const IFLA_VXLAN_LOCAL6: u16 = 17;
const IFLA_VXLAN_COLLECT_METADATA: u16 = 25;

const IFLA_GENEVE_ID: u16 = 1;
const IFLA_GENEVE_REMOTE: u16 = 2;
const IFLA_GENEVE_PORT: u16 = 5;
const IFLA_GENEVE_COLLECT_METADATA: u16 = 6;
const IFLA_GENEVE_REMOTE6: u16 = 7;

const IFLA_IPTUN_LINK: u16 = 1;
const IFLA_IPTUN_LOCAL: u16 = 2;
const IFLA_IPTUN_REMOTE: u16 = 3;

const IFLA_GRE_LINK: u16 = 1;
const IFLA_GRE_IKEY: u16 = 4;
const IFLA_GRE_LOCAL: u16 = 6;
const IFLA_GRE_REMOTE: u16 = 7;

const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;

const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDA_VNI: u16 = 7;
const NDA_IFINDEX: u16 = 8;
/// `NUD_PERMANENT`: a static entry (`bridge fdb ... permanent`, `ip neigh ... nud permanent`).
const NUD_PERMANENT: u16 = 0x80;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PREFSRC: u16 = 7;

/// A tunnel device of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TunnelDevice {
    pub name: String,
    pub ifindex: u32,
    /// `vxlan`, `geneve`, `ipip`, `gre`, `gretap`, `sit`, `ip6tnl`, ... (IFLA_INFO_KIND).
    pub kind: String,
    /// VXLAN/Geneve VNI, GRE input key.
    pub vni: Option<u32>,
    /// The fixed outer source, when the device has one (none: the route's source is used).
    pub local: Option<IpAddr>,
    /// The fixed remote (or VXLAN multicast group).
    pub remote: Option<IpAddr>,
    /// The UDP destination port (VXLAN, Geneve).
    pub dstport: Option<u16>,
    /// The underlay device's index (IFLA_VXLAN_LINK, IFLA_IPTUN_LINK, IFLA_GRE_LINK), and name.
    pub link: Option<u32>,
    pub link_name: Option<String>,
    /// VXLAN: whether the device learns remote addresses from the packets it receives.
    pub learning: Option<bool>,
    /// Metadata mode (`external`): the remote comes from a route or program per packet.
    pub external: bool,
    pub mtu: Option<u32>,
}

/// One entry of a VXLAN device's forwarding database: inner MAC -> remote VTEP address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct FdbEntry {
    pub ifindex: u32,
    pub mac: String,
    /// The remote VTEP (NDA_DST); none for a local (bridge) entry.
    pub dst: Option<IpAddr>,
    pub vni: Option<u32>,
    /// Static (NUD_PERMANENT): the kernel's learning never changes it; a packet from its MAC
    /// arriving from another address is dropped (VXLAN_ENTRY_EXISTS).
    pub permanent: bool,
}

/// A neighbour entry (IP -> MAC on a device): flannel's route to the next node's VTEP address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Neighbour {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: String,
}

/// An address of the namespace, on device `ifindex`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Address {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub prefix: u8,
}

/// What `ip route get DST` answers: the device, gateway and preferred source (RTA_PREFSRC).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RouteTo {
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    pub prefsrc: Option<IpAddr>,
}

/// A namespace's tunnels and what they rest on.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TunnelFacts {
    pub devices: Vec<TunnelDevice>,
    /// Entries of VXLAN devices only.
    pub fdb: Vec<FdbEntry>,
    /// IPv4/IPv6 neighbour entries of tunnel devices only.
    pub neighbours: Vec<Neighbour>,
    /// Every address of the namespace (the underlay's among them).
    pub addresses: Vec<Address>,
    /// Every device: (ifindex, name).
    pub names: Vec<(u32, String)>,
    /// Every device's MTU: (ifindex, MTU), for the underlay's.
    pub mtus: Vec<(u32, u32)>,
}

impl TunnelFacts {
    /// The MTU of device `ifindex`.
    pub(crate) fn mtu_of(&self, ifindex: u32) -> Option<u32> {
        self.mtus.iter().find(|(i, _)| *i == ifindex).map(|&(_, m)| m)
    }

    /// The addresses of device `ifindex`.
    pub(crate) fn addresses_of(&self, ifindex: u32) -> Vec<IpAddr> {
        self.addresses.iter().filter(|a| a.ifindex == ifindex).map(|a| a.ip).collect()
    }
}

/// Reads the calling thread's namespace: links, addresses, the bridge-family neighbour dump
/// (the VXLAN FDB) and the IP neighbours.
pub(crate) fn read() -> io::Result<TunnelFacts> {
    let links = ask(&message(RTM_GETLINK, dump_flags(), &ifinfomsg(libc::AF_UNSPEC as u8), &[]))?;
    let addrs = ask(&message(RTM_GETADDR, dump_flags(), &[libc::AF_UNSPEC as u8, 0, 0, 0, 0, 0, 0, 0], &[]))?;
    let fdb = ask(&message(RTM_GETNEIGH, dump_flags(), &ndmsg(libc::AF_BRIDGE as u8), &[]))?;
    let neigh = ask(&message(RTM_GETNEIGH, dump_flags(), &ndmsg(libc::AF_UNSPEC as u8), &[]))?;
    Ok(facts_of(&links, &addrs, &fdb, &neigh))
}

/// `ip route get DST` in the calling thread's namespace.
pub(crate) fn route_get(dst: IpAddr) -> io::Result<RouteTo> {
    let (family, bytes, len) = match dst {
        IpAddr::V4(v) => (libc::AF_INET as u8, v.octets().to_vec(), 32),
        IpAddr::V6(v) => (libc::AF_INET6 as u8, v.octets().to_vec(), 128),
    };
    let rtmsg = [family, len, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let answers = ask(&message(RTM_GETROUTE, libc::NLM_F_REQUEST as u16, &rtmsg, &[(RTA_DST, &bytes)]))?;
    answers
        .iter()
        .find(|(kind, _)| *kind == RTM_NEWROUTE)
        .map(|(_, payload)| parse_route(payload))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no route answer for {dst}")))
}

fn dump_flags() -> u16 {
    (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16
}

/// `struct ifinfomsg` of `family`, all else zero.
fn ifinfomsg(family: u8) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = family;
    m
}

/// `struct ndmsg` of `family`, all else zero.
fn ndmsg(family: u8) -> [u8; 12] {
    let mut m = [0u8; 12];
    m[0] = family;
    m
}

/// The facts from the four dumps' answers (type, payload).
pub(crate) fn facts_of(links: &[(u16, Vec<u8>)], addrs: &[(u16, Vec<u8>)], fdb: &[(u16, Vec<u8>)], neigh: &[(u16, Vec<u8>)]) -> TunnelFacts {
    let mut facts = TunnelFacts::default();
    for (kind, payload) in links {
        if *kind != RTM_NEWLINK {
            continue;
        }
        let Some((ifindex, name, device)) = parse_link(payload) else { continue };
        if let Some(mtu) = link_mtu(payload) {
            facts.mtus.push((ifindex, mtu));
        }
        facts.names.push((ifindex, name));
        facts.devices.extend(device);
    }
    for device in &mut facts.devices {
        device.link_name = device.link.and_then(|l| facts.names.iter().find(|(i, _)| *i == l).map(|(_, n)| n.clone()));
    }
    facts.addresses = addrs.iter().filter(|(k, _)| *k == RTM_NEWADDR).filter_map(|(_, p)| parse_address(p)).collect();
    let vxlan: Vec<u32> = facts.devices.iter().filter(|d| d.kind == "vxlan").map(|d| d.ifindex).collect();
    facts.fdb = fdb.iter().filter(|(k, _)| *k == RTM_NEWNEIGH).filter_map(|(_, p)| parse_fdb(p)).filter(|e| vxlan.contains(&e.ifindex)).collect();
    let tunnels: Vec<u32> = facts.devices.iter().map(|d| d.ifindex).collect();
    facts.neighbours =
        neigh.iter().filter(|(k, _)| *k == RTM_NEWNEIGH).filter_map(|(_, p)| parse_neighbour(p)).filter(|n| tunnels.contains(&n.ifindex)).collect();
    facts
}

fn u32_of(b: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

fn ip_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

/// A set address: 0.0.0.0 and :: mean "none" in the link attributes.
fn set_ip(b: &[u8]) -> Option<IpAddr> {
    ip_of(b).filter(|ip| !ip.is_unspecified())
}

fn mac_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

fn string_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or_default()).into_owned()
}

/// One RTM_NEWLINK: its index, name and, for a tunnel device, what it is.
fn parse_link(payload: &[u8]) -> Option<(u32, String, Option<TunnelDevice>)> {
    let ifindex = u32_of(payload.get(4..8)?)?;
    let attrs = attributes(payload.get(16..)?);
    let get = |k: u16| attrs.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
    let name = string_of(get(IFLA_IFNAME)?);
    let mtu = get(IFLA_MTU).and_then(u32_of);
    let Some(info) = get(IFLA_LINKINFO).map(attributes) else { return Some((ifindex, name, None)) };
    let info_get = |k: u16| info.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
    let Some(kind) = info_get(IFLA_INFO_KIND).map(string_of) else { return Some((ifindex, name, None)) };
    let data = info_get(IFLA_INFO_DATA).map(attributes).unwrap_or_default();
    let d = |k: u16| data.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
    let mut dev = TunnelDevice {
        name: name.clone(),
        ifindex,
        kind: kind.clone(),
        vni: None,
        local: None,
        remote: None,
        dstport: None,
        link: None,
        link_name: None,
        learning: None,
        external: false,
        mtu,
    };
    let be16 = |b: &[u8]| b.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match kind.as_str() {
        "vxlan" => {
            dev.vni = d(IFLA_VXLAN_ID).and_then(u32_of);
            dev.local = d(IFLA_VXLAN_LOCAL).and_then(set_ip).or_else(|| d(IFLA_VXLAN_LOCAL6).and_then(set_ip));
            dev.remote = d(IFLA_VXLAN_GROUP).and_then(set_ip).or_else(|| d(IFLA_VXLAN_GROUP6).and_then(set_ip));
            dev.dstport = d(IFLA_VXLAN_PORT).and_then(be16);
            dev.link = d(IFLA_VXLAN_LINK).and_then(u32_of).filter(|&l| l != 0);
            dev.learning = d(IFLA_VXLAN_LEARNING).and_then(|b| b.first()).map(|&b| b != 0);
            dev.external = d(IFLA_VXLAN_COLLECT_METADATA).and_then(|b| b.first()).is_some_and(|&b| b != 0);
        }
        "geneve" => {
            // The VNI is 24 bits in a u32.
            dev.vni = d(IFLA_GENEVE_ID).and_then(u32_of);
            dev.remote = d(IFLA_GENEVE_REMOTE).and_then(set_ip).or_else(|| d(IFLA_GENEVE_REMOTE6).and_then(set_ip));
            dev.dstport = d(IFLA_GENEVE_PORT).and_then(be16);
            dev.external = d(IFLA_GENEVE_COLLECT_METADATA).is_some();
        }
        "ipip" | "sit" | "ip6tnl" => {
            dev.local = d(IFLA_IPTUN_LOCAL).and_then(set_ip);
            dev.remote = d(IFLA_IPTUN_REMOTE).and_then(set_ip);
            dev.link = d(IFLA_IPTUN_LINK).and_then(u32_of).filter(|&l| l != 0);
        }
        "gre" | "gretap" | "ip6gre" | "ip6gretap" | "erspan" => {
            // GRE keys are sent in network order.
            dev.vni = d(IFLA_GRE_IKEY).and_then(|b| b.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))).filter(|&k| k != 0);
            dev.local = d(IFLA_GRE_LOCAL).and_then(set_ip);
            dev.remote = d(IFLA_GRE_REMOTE).and_then(set_ip);
            dev.link = d(IFLA_GRE_LINK).and_then(u32_of).filter(|&l| l != 0);
        }
        _ => return Some((ifindex, name, None)),
    }
    Some((ifindex, name, Some(dev)))
}

/// IFLA_MTU of one RTM_NEWLINK.
fn link_mtu(payload: &[u8]) -> Option<u32> {
    attributes(payload.get(16..)?).iter().find(|(t, _)| *t == IFLA_MTU).and_then(|(_, v)| u32_of(v))
}

/// One RTM_NEWADDR: IFA_LOCAL (the address itself on point-to-point links) else IFA_ADDRESS.
fn parse_address(payload: &[u8]) -> Option<Address> {
    let prefix = *payload.get(1)?;
    let ifindex = u32_of(payload.get(4..8)?)?;
    let attrs = attributes(payload.get(8..)?);
    let get = |k: u16| attrs.iter().find(|(t, _)| *t == k).and_then(|(_, v)| ip_of(v));
    Some(Address { ifindex, ip: get(IFA_LOCAL).or_else(|| get(IFA_ADDRESS))?, prefix })
}

/// Attributes as (type, value).
type Attrs<'a> = Vec<(u16, &'a [u8])>;

/// `struct ndmsg` fields: (ifindex, state) and the attributes after it.
fn parse_ndmsg(payload: &[u8]) -> Option<(u32, u16, Attrs<'_>)> {
    let ifindex = u32_of(payload.get(4..8)?)?;
    let state = u16::from_ne_bytes(payload.get(8..10)?.try_into().ok()?);
    Some((ifindex, state, attributes(payload.get(12..)?)))
}

/// One AF_BRIDGE RTM_NEWNEIGH: a forwarding-database entry.
fn parse_fdb(payload: &[u8]) -> Option<FdbEntry> {
    let (ifindex, state, attrs) = parse_ndmsg(payload)?;
    let get = |k: u16| attrs.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
    // NDA_IFINDEX is the device the remote is reached by (a per-entry underlay): not the owner.
    let _ = get(NDA_IFINDEX);
    Some(FdbEntry {
        ifindex,
        mac: mac_of(get(NDA_LLADDR)?),
        dst: get(NDA_DST).and_then(ip_of),
        vni: get(NDA_VNI).and_then(u32_of),
        permanent: state & NUD_PERMANENT != 0,
    })
}

/// One AF_INET/AF_INET6 RTM_NEWNEIGH with a link-layer address.
fn parse_neighbour(payload: &[u8]) -> Option<Neighbour> {
    let family = *payload.first()?;
    if family != libc::AF_INET as u8 && family != libc::AF_INET6 as u8 {
        return None;
    }
    let (ifindex, _, attrs) = parse_ndmsg(payload)?;
    let get = |k: u16| attrs.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
    Some(Neighbour { ifindex, ip: ip_of(get(NDA_DST)?)?, mac: mac_of(get(NDA_LLADDR)?) })
}

/// One RTM_NEWROUTE (after `struct rtmsg`, 12 bytes).
fn parse_route(payload: &[u8]) -> RouteTo {
    let attrs = attributes(payload.get(12..).unwrap_or_default());
    let get = |k: u16| attrs.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
    RouteTo { oif: get(RTA_OIF).and_then(u32_of), gateway: get(RTA_GATEWAY).and_then(ip_of), prefsrc: get(RTA_PREFSRC).and_then(ip_of) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An attribute as the kernel packs it.
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    fn link(ifindex: u32, name: &str, mtu: u32, info: Option<Vec<u8>>) -> (u16, Vec<u8>) {
        let mut p = vec![0u8; 16];
        p[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        p.extend(attr(IFLA_IFNAME, format!("{name}\0").as_bytes()));
        p.extend(attr(IFLA_MTU, &mtu.to_ne_bytes()));
        if let Some(info) = info {
            p.extend(attr(IFLA_LINKINFO, &info));
        }
        (RTM_NEWLINK, p)
    }

    fn neigh(family: u8, ifindex: u32, state: u16, attrs: &[Vec<u8>]) -> (u16, Vec<u8>) {
        let mut p = vec![0u8; 12];
        p[0] = family;
        p[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        p[8..10].copy_from_slice(&state.to_ne_bytes());
        for a in attrs {
            p.extend_from_slice(a);
        }
        (RTM_NEWNEIGH, p)
    }

    /// The answers of a flannel-style node: uplink `ua` (2) with two addresses, `vx` (5) a
    /// learning VXLAN on VNI 1, port 8472, no local, over `ua`, with a static FDB entry and a
    /// neighbour for the peer VTEP.
    fn node() -> TunnelFacts {
        let mut data = attr(IFLA_VXLAN_ID, &1u32.to_ne_bytes());
        data.extend(attr(IFLA_VXLAN_LOCAL, &[0, 0, 0, 0]));
        data.extend(attr(IFLA_VXLAN_LINK, &2u32.to_ne_bytes()));
        data.extend(attr(IFLA_VXLAN_LEARNING, &[1]));
        data.extend(attr(IFLA_VXLAN_PORT, &8472u16.to_be_bytes()));
        let mut info = attr(IFLA_INFO_KIND, b"vxlan\0");
        info.extend(attr(IFLA_INFO_DATA | 0x8000, &data));
        let links = vec![link(1, "lo", 65536, None), link(2, "ua", 1500, Some(attr(IFLA_INFO_KIND, b"veth\0"))), link(5, "vx", 1450, Some(info))];
        let addr = |ifindex: u32, ip: [u8; 4]| {
            let mut p = vec![libc::AF_INET as u8, 24, 0, 0];
            p.extend_from_slice(&ifindex.to_ne_bytes());
            p.extend(attr(IFA_ADDRESS, &ip));
            p.extend(attr(IFA_LOCAL, &ip));
            (RTM_NEWADDR, p)
        };
        let addrs = vec![addr(2, [198, 18, 0, 1]), addr(2, [198, 18, 0, 11])];
        let mac = [0x4e, 0xb1, 0xc3, 0x51, 0xd4, 0xeb];
        let fdb = vec![
            neigh(libc::AF_BRIDGE as u8, 5, NUD_PERMANENT, &[attr(NDA_LLADDR, &mac), attr(NDA_DST, &[198, 18, 0, 2])]),
            // A bridge port's entry, not a VXLAN device's: left out.
            neigh(libc::AF_BRIDGE as u8, 2, NUD_PERMANENT, &[attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 1])]),
        ];
        let neighbours = vec![
            neigh(libc::AF_INET as u8, 5, NUD_PERMANENT, &[attr(NDA_DST, &[198, 18, 2, 0]), attr(NDA_LLADDR, &mac)]),
            neigh(libc::AF_INET as u8, 2, 2, &[attr(NDA_DST, &[198, 18, 0, 2]), attr(NDA_LLADDR, &[2, 0, 0, 0, 0, 2])]),
        ];
        facts_of(&links, &addrs, &fdb, &neighbours)
    }

    #[test]
    fn a_vxlan_device_its_fdb_neighbours_and_underlay_addresses() {
        let facts = node();
        assert_eq!(facts.devices.len(), 1, "veth and lo are no tunnels: {facts:?}");
        let vx = &facts.devices[0];
        assert_eq!((vx.name.as_str(), vx.ifindex, vx.kind.as_str()), ("vx", 5, "vxlan"));
        assert_eq!((vx.vni, vx.local, vx.dstport, vx.link, vx.learning, vx.mtu), (Some(1), None, Some(8472), Some(2), Some(true), Some(1450)));
        assert_eq!(vx.link_name.as_deref(), Some("ua"));
        assert_eq!(facts.fdb, [FdbEntry { ifindex: 5, mac: "4e:b1:c3:51:d4:eb".into(), dst: "198.18.0.2".parse().ok(), vni: None, permanent: true }]);
        assert_eq!(facts.neighbours, [Neighbour { ifindex: 5, ip: "198.18.2.0".parse().unwrap(), mac: "4e:b1:c3:51:d4:eb".into() }]);
        assert_eq!(facts.addresses_of(2), ["198.18.0.1".parse::<IpAddr>().unwrap(), "198.18.0.11".parse().unwrap()]);
        assert!(facts.names.contains(&(2, "ua".to_string())));
        assert_eq!((facts.mtu_of(2), facts.mtu_of(5)), (Some(1500), Some(1450)));
    }

    #[test]
    fn ipip_gre_and_geneve_devices() {
        let dev = |kind: &str, data: Vec<u8>| {
            let mut info = attr(IFLA_INFO_KIND, format!("{kind}\0").as_bytes());
            info.extend(attr(IFLA_INFO_DATA, &data));
            parse_link(&link(9, "t", 1440, Some(info)).1).and_then(|(.., d)| d).expect("a tunnel")
        };
        let mut ipip = attr(IFLA_IPTUN_LINK, &2u32.to_ne_bytes());
        ipip.extend(attr(IFLA_IPTUN_LOCAL, &[10, 0, 0, 1]));
        ipip.extend(attr(IFLA_IPTUN_REMOTE, &[10, 0, 0, 2]));
        let t = dev("ipip", ipip);
        assert_eq!((t.local, t.remote, t.link, t.vni, t.mtu), ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok(), Some(2), None, Some(1440)));
        let mut gre = attr(IFLA_GRE_IKEY, &42u32.to_be_bytes());
        gre.extend(attr(IFLA_GRE_REMOTE, &[10, 0, 0, 3]));
        let t = dev("gre", gre);
        assert_eq!((t.vni, t.remote), (Some(42), "10.0.0.3".parse().ok()));
        let mut geneve = attr(IFLA_GENEVE_ID, &7u32.to_ne_bytes());
        geneve.extend(attr(IFLA_GENEVE_PORT, &6081u16.to_be_bytes()));
        let t = dev("geneve", geneve);
        assert_eq!((t.kind.as_str(), t.vni, t.dstport), ("geneve", Some(7), Some(6081)));
    }

    #[test]
    fn a_route_answer_gives_device_gateway_and_preferred_source() {
        let mut p = vec![libc::AF_INET as u8, 32, 0, 0, 254, 0, 0, 1, 0, 0, 0, 0];
        p.extend(attr(RTA_DST, &[198, 18, 0, 2]));
        p.extend(attr(RTA_OIF, &2u32.to_ne_bytes()));
        p.extend(attr(RTA_PREFSRC, &[198, 18, 0, 11]));
        assert_eq!(parse_route(&p), RouteTo { oif: Some(2), gateway: None, prefsrc: "198.18.0.11".parse().ok() });
    }

    #[test]
    fn truncated_messages_are_skipped_not_misread() {
        assert!(parse_link(&[0u8; 10]).is_none());
        assert!(parse_fdb(&[0u8; 6]).is_none());
        let mut bad = link(3, "x", 1500, None).1;
        bad.truncate(18);
        assert!(parse_link(&bad).is_none(), "a name cut short is no device");
    }

    /// Real kernel: a namespace with a learning VXLAN device and a static FDB entry, read back.
    #[test]
    fn reads_a_real_vxlan_device_and_its_fdb() {
        use std::process::Command;
        let Some(scratch) = crate::kernel::netns::ScratchNetns::create("tun", "reads_a_real_vxlan_device_and_its_fdb") else { return };
        let ns = scratch.0.clone();
        let ip = crate::kernel::netns::ScratchNetns::ip;
        assert!(ip(&["-n", &ns, "link", "add", "trt0", "type", "veth", "peer", "name", "trt1"]));
        assert!(ip(&["-n", &ns, "addr", "add", "198.18.250.1/24", "dev", "trt0"]));
        assert!(ip(&["-n", &ns, "link", "set", "trt0", "up"]));
        if !ip(&["-n", &ns, "link", "add", "trtvx", "type", "vxlan", "id", "7", "dstport", "8472", "dev", "trt0", "learning"]) {
            eprintln!("SKIPPED reads_a_real_vxlan_device_and_its_fdb: no vxlan in this kernel");
            return;
        }
        assert!(
            Command::new("bridge")
                .args(["-n", &ns, "fdb", "append", "02:00:00:00:00:07", "dev", "trtvx", "dst", "198.18.250.2", "self", "permanent"])
                .status()
                .is_ok_and(|s| s.success())
        );
        let netns = crate::kernel::netns::Netns::parse(&ns);
        let guard = netns.enter().expect("entering the test namespace");
        let t0 = std::time::Instant::now();
        let facts = read().expect("reading tunnel facts");
        let route = route_get("198.18.250.2".parse().unwrap()).expect("route get");
        // What the end of a diagnose run pays per namespace with tunnel drops.
        eprintln!("tunnel facts and one route read in {:?}", t0.elapsed());
        drop(guard);
        let vx = facts.devices.iter().find(|d| d.name == "trtvx").expect("the vxlan device");
        assert_eq!((vx.vni, vx.dstport, vx.learning, vx.link_name.as_deref()), (Some(7), Some(8472), Some(true), Some("trt0")), "{vx:?}");
        let entry = facts.fdb.iter().find(|e| e.mac == "02:00:00:00:00:07").expect("the static entry");
        assert_eq!((entry.dst, entry.permanent), ("198.18.250.2".parse().ok(), true));
        assert_eq!(route.prefsrc, "198.18.250.1".parse().ok());
        let uplink = facts.names.iter().find(|(_, n)| n == "trt0").map(|(i, _)| *i);
        assert_eq!(route.oif, uplink);
    }
}
