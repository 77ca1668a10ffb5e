//! Device MTU facts: the devices of a network namespace with their driver and MTU, which one is
//! the uplink (the default route's), and the mismatches that make large packets disappear — a
//! pod device larger than the tunnel its packets leave through, or a tunnel whose packets plus
//! encapsulation no longer fit the uplink. [`find_mismatches`] is pure: it only looks at facts.

use std::{ffi::CStr, io, os::fd::AsRawFd};

use crate::kernel::netns::{Netns, NetnsError};

/// One device as seen in its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceFacts {
    pub netns: Netns,
    pub name: String,
    pub ifindex: u32,
    pub mtu: u32,
    /// The ethtool driver name: veth, bridge, vxlan, geneve, ipip, wireguard, virtio_net, ...;
    /// empty when the device does not say.
    pub driver: String,
    /// The device of the IPv4 default route, or the underlay of a tunnel of its namespace.
    pub uplink: bool,
    /// Administratively up (IFF_UP). A device that is down carries nothing: the fallback
    /// `tunl0` that loading ipip puts in every pod's namespace (Calico nodes) is no overlay.
    pub up: bool,
    /// An Ethernet device (ARPHRD_ETHER: veth, vxlan, geneve, bridges, NICs): its packets carry
    /// a 14-byte MAC header in front of the IP header, so the tc programs read the healthy
    /// packet's header straight from the packet.
    pub ethernet: bool,
}

/// What a device is on a node's path, for the mismatch rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A veth: the host end of a pod's interface (or its peer).
    PodDevice,
    Bridge,
    /// An encapsulating device and the bytes its encapsulation adds over an IPv4 underlay.
    Tunnel {
        overhead: u32,
    },
    Uplink,
    Other,
}

/// Encapsulation overhead over an IPv4 underlay, by driver (outer IP + UDP/GRE + tunnel header
/// + the inner Ethernet header where the tunnel carries one).
const TUNNELS: &[(&str, u32)] =
    &[("vxlan", 50), ("geneve", 50), ("ipip", 20), ("sit", 20), ("ip_gre", 24), ("ip6_gre", 48), ("ip6_tunnel", 40), ("wireguard", 60)];

impl DeviceFacts {
    pub(crate) fn role(&self) -> Role {
        if self.uplink {
            return Role::Uplink;
        }
        if let Some((_, overhead)) = TUNNELS.iter().find(|(d, _)| *d == self.driver) {
            return Role::Tunnel { overhead: *overhead };
        }
        match self.driver.as_str() {
            "veth" => Role::PodDevice,
            "bridge" => Role::Bridge,
            _ => Role::Other,
        }
    }

    /// `uplink eth0 (mtu 1500)`, `tunnel tunl0 (ipip, mtu 1440)`: a tunnel with the overlay it is.
    fn described(&self) -> String {
        match self.role() {
            Role::Uplink => format!("uplink {} (mtu {})", self.name, self.mtu),
            Role::Tunnel { .. } => format!("tunnel {} ({}, mtu {})", self.name, self.driver, self.mtu),
            _ => format!("{} (mtu {})", self.name, self.mtu),
        }
    }

    /// Where tc programs go by default: pod veths and tunnels.
    pub(crate) fn traced_by_default(&self) -> bool {
        matches!(self.role(), Role::PodDevice | Role::Tunnel { .. })
    }

    /// The directions the classifiers watch on this device: `chosen` when the user named it
    /// (`--iface`), else it was picked by [`Self::traced_by_default`].
    ///
    /// A pod veth picked by default is the node's end of a pod's interface, and its ingress is
    /// what the pod sends. Nothing there can be an event of ours but an ICMP error the pod
    /// itself originates (a pod that routes): the veth refuses a packet longer than this end's
    /// MTU before this end sees it (`is_skb_forwardable`, counted as a drop by the kernel), and
    /// an error the node forwards on is seen where it arrived (a tunnel's or a named device's
    /// ingress). A classifier there would run for every packet every pod sends, for nothing:
    /// the same-node path's largest cost after the egress one. A device the user named keeps both
    /// directions (a pod's own `eth0` receiving its errors, say).
    pub(crate) fn classified(&self, chosen: bool) -> Directions {
        if !chosen && self.role() == Role::PodDevice { Directions::EgressOnly } else { Directions::Both }
    }
}

/// Which of a device's directions the MTU classifiers watch ([`DeviceFacts::classified`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Directions {
    Both,
    EgressOnly,
}

/// A configuration that loses or fragments large packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// `error` (packets of some sizes cannot pass) or `warning` (they pass only if frag-needed
    /// gets back to the sender: a black hole where ICMP is filtered).
    pub severity: &'static str,
    pub devices: Vec<String>,
    pub summary: String,
}

/// The mismatches among `devices`, namespace by namespace.
pub(crate) fn find_mismatches(devices: &[DeviceFacts]) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut namespaces: Vec<&Netns> = devices.iter().map(|d| &d.netns).collect();
    namespaces.sort();
    namespaces.dedup();
    for netns in namespaces {
        let flagged = out.len();
        let here: Vec<&DeviceFacts> = devices.iter().filter(|d| &d.netns == netns && d.up).collect();
        let uplink = here.iter().filter(|d| d.role() == Role::Uplink).min_by_key(|d| d.mtu);
        let tunnels: Vec<(&DeviceFacts, u32)> = here
            .iter()
            .filter_map(|d| match d.role() {
                Role::Tunnel { overhead } => Some((*d, overhead)),
                _ => None,
            })
            .collect();
        if let Some(up) = uplink {
            for (t, overhead) in &tunnels {
                if t.mtu + overhead > up.mtu {
                    out.push(Mismatch {
                        severity: "error",
                        devices: vec![t.name.clone(), up.name.clone()],
                        summary: format!(
                            "tunnel {} (mtu {}, {} driver) adds {overhead} bytes: its packets above {} bytes do not fit uplink {} (mtu {}); set the tunnel's MTU to at most {}",
                            t.name, t.mtu, t.driver, up.mtu.saturating_sub(*overhead), up.name, up.mtu, up.mtu.saturating_sub(*overhead)
                        ),
                    });
                }
            }
        }
        // What a pod's packet must fit through on its way out: the narrowest tunnel, else the uplink.
        let limit = tunnels.iter().map(|(t, _)| *t).min_by_key(|t| t.mtu).or(uplink.copied());
        let Some(limit) = limit else {
            different_mtus(&here, &mut out, flagged);
            continue;
        };
        let larger: Vec<&&DeviceFacts> = here.iter().filter(|d| matches!(d.role(), Role::PodDevice | Role::Bridge) && d.mtu > limit.mtu).collect();
        if let Some(max) = larger.iter().map(|d| d.mtu).max() {
            let mut names: Vec<String> = larger.iter().map(|d| d.name.clone()).collect();
            let shown = if names.len() > 4 { format!("{} and {} more", names[..4].join(", "), names.len() - 4) } else { names.join(", ") };
            names.push(limit.name.clone());
            out.push(Mismatch {
                severity: "warning",
                devices: names,
                summary: format!(
                    "pod-side devices {shown} (mtu up to {max}) are larger than {}: packets between {} and {max} bytes get through only if frag-needed/packet-too-big reaches their sender (a black hole where ICMP is filtered)",
                    limit.described(),
                    limit.mtu + 1
                ),
            });
        }
    }
    out
}

/// Devices of one namespace at different MTUs that no rule above explained (a router without
/// a default route, say): worth knowing, since forwarding from the larger to the smaller needs
/// frag-needed / packet-too-big to get back.
fn different_mtus(here: &[&DeviceFacts], out: &mut Vec<Mismatch>, flagged: usize) {
    let mut mtus: Vec<u32> = here.iter().map(|d| d.mtu).filter(|m| *m != 0).collect();
    mtus.sort_unstable();
    mtus.dedup();
    if mtus.len() < 2 || out.len() > flagged {
        return;
    }
    let groups: Vec<String> = mtus
        .iter()
        .rev()
        .map(|m| {
            let names: Vec<&str> = here.iter().filter(|d| d.mtu == *m).map(|d| d.name.as_str()).collect();
            format!("{m} ({})", names.join(", "))
        })
        .collect();
    out.push(Mismatch {
        severity: "info",
        devices: here.iter().map(|d| d.name.clone()).collect(),
        summary: format!(
            "devices at different MTUs: {}; packets forwarded from a larger to a smaller one need frag-needed/packet-too-big to reach their sender",
            groups.join(", ")
        ),
    });
}

/// The devices of `netns` (not `lo`) with their MTU, driver and whether they are the uplink.
pub(crate) fn list(netns: &Netns) -> Result<Vec<DeviceFacts>, DeviceError> {
    let _inside = netns.enter()?;
    // Sockets belong to the namespace of the thread that creates them: this one is inside.
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(DeviceError::Io(io::Error::last_os_error()));
    }
    // SAFETY: fd was just created and is owned here.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let uplink = default_route_device();
    let mut out = Vec::new();
    for (ifindex, name) in interfaces()? {
        if name == "lo" {
            continue;
        }
        out.push(DeviceFacts {
            netns: netns.clone(),
            ifindex,
            mtu: mtu_of(sock.as_raw_fd(), &name).unwrap_or(0),
            driver: driver_of(sock.as_raw_fd(), &name).unwrap_or_default(),
            uplink: uplink.as_deref() == Some(name.as_str()),
            up: is_up(sock.as_raw_fd(), &name),
            ethernet: is_ethernet(sock.as_raw_fd(), &name),
            name,
        });
    }
    mark_underlays(&mut out);
    Ok(out)
}

/// A device that carries a tunnel's packets is an uplink for the mismatch rules, default route
/// or not (a node whose underlay is not its default route's, a lab's): the tunnel's `dev`, else
/// the device of the route to its fixed remote. Read only where a tunnel is, in the current
/// thread's namespace; unreadable, the default route's device stays the only uplink.
fn mark_underlays(devices: &mut [DeviceFacts]) {
    if !devices.iter().any(|d| d.up && matches!(d.role(), Role::Tunnel { .. })) {
        return;
    }
    let Ok(facts) = crate::kernel::tunnels::read() else { return };
    let underlays: Vec<u32> =
        facts.devices.iter().filter_map(|t| t.link.or_else(|| t.remote.and_then(|r| crate::kernel::tunnels::route_get(r).ok()?.oif))).collect();
    for d in devices.iter_mut().filter(|d| underlays.contains(&d.ifindex)) {
        d.uplink = true;
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("listing network devices: {0}")]
    Io(#[from] io::Error),
}

/// (ifindex, name) of every device in the current thread's namespace.
fn interfaces() -> Result<Vec<(u32, String)>, DeviceError> {
    // SAFETY: if_nameindex allocates a list we free below; it opens a netlink socket in the
    // calling thread's namespace.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(DeviceError::Io(io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    // Bounded: the list ends with a zero entry; no node has a million devices.
    for i in 0..1_000_000 {
        // SAFETY: entries up to and including the terminating zero entry are valid.
        let entry = unsafe { &*list.add(i) };
        if entry.if_index == 0 || entry.if_name.is_null() {
            break;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        let name = unsafe { CStr::from_ptr(entry.if_name) }.to_string_lossy().into_owned();
        out.push((entry.if_index, name));
    }
    // SAFETY: the list came from if_nameindex.
    unsafe { libc::if_freenameindex(list) };
    Ok(out)
}

fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes().take(libc::IFNAMSIZ - 1)) {
        *dst = src as libc::c_char;
    }
    req
}

fn mtu_of(sock: i32, name: &str) -> Option<u32> {
    let mut req = ifreq_for(name);
    // SAFETY: SIOCGIFMTU fills ifr_mtu of a valid ifreq.
    if unsafe { libc::ioctl(sock, libc::SIOCGIFMTU, &mut req) } != 0 {
        return None;
    }
    // SAFETY: the kernel wrote ifr_mtu.
    u32::try_from(unsafe { req.ifr_ifru.ifru_mtu }).ok()
}

/// Whether the device is administratively up (SIOCGIFFLAGS, IFF_UP); true when the kernel
/// does not say, so that a device is never left out of the rules by an unreadable flag.
fn is_up(sock: i32, name: &str) -> bool {
    let mut req = ifreq_for(name);
    // SAFETY: SIOCGIFFLAGS fills ifr_flags of a valid ifreq.
    if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) } != 0 {
        return true;
    }
    // SAFETY: the kernel wrote ifr_flags.
    (unsafe { req.ifr_ifru.ifru_flags } as libc::c_int) & libc::IFF_UP != 0
}

/// Whether the device's hardware type is Ethernet (SIOCGIFHWADDR's sa_family, ARPHRD_ETHER);
/// false when the kernel does not say, which keeps the tc programs on their helper path.
fn is_ethernet(sock: i32, name: &str) -> bool {
    let mut req = ifreq_for(name);
    // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of a valid ifreq.
    if unsafe { libc::ioctl(sock, libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return false;
    }
    // SAFETY: the kernel wrote ifr_hwaddr.
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    family == libc::ARPHRD_ETHER
}

/// `struct ethtool_drvinfo` (uAPI linux/ethtool.h).
#[repr(C)]
struct DrvInfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

fn driver_of(sock: i32, name: &str) -> Option<String> {
    // SAFETY: plain data; all zero is valid.
    let mut info: DrvInfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    let mut req = ifreq_for(name);
    req.ifr_ifru.ifru_data = (&raw mut info).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO writes into `info`, which outlives the call.
    if unsafe { libc::ioctl(sock, SIOCETHTOOL, &mut req) } != 0 {
        return None;
    }
    let len = info.driver.iter().position(|b| *b == 0).unwrap_or(info.driver.len());
    Some(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}

/// The device of the IPv4 default route in the current thread's namespace.
fn default_route_device() -> Option<String> {
    // /proc/thread-self/net is this thread's namespace (/proc/self/net would be the process's).
    let text = std::fs::read_to_string("/proc/thread-self/net/route").ok()?;
    text.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let (dev, dest) = (fields.next()?, fields.next()?);
        (dest == "00000000").then(|| dev.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(name: &str, driver: &str, mtu: u32, uplink: bool) -> DeviceFacts {
        DeviceFacts { netns: Netns::OWN, name: name.into(), ifindex: 0, mtu, driver: driver.into(), uplink, up: true, ethernet: true }
    }

    #[test]
    fn a_pod_veth_found_by_itself_is_classified_at_egress_only_and_a_named_one_both_ways() {
        let (veth, tunnel) = (dev("veth1", "veth", 1500, false), dev("flannel.1", "vxlan", 1440, false));
        assert_eq!(veth.classified(false), Directions::EgressOnly);
        assert_eq!(veth.classified(true), Directions::Both);
        assert_eq!(tunnel.classified(false), Directions::Both, "a tunnel's ingress receives the errors of the network");
    }

    #[test]
    fn pods_larger_than_the_tunnel_are_flagged() {
        let devs = [
            dev("eth0", "virtio_net", 1500, true),
            dev("flannel.1", "vxlan", 1440, false),
            dev("veth1", "veth", 1500, false),
            dev("veth2", "veth", 1440, false),
        ];
        let m = find_mismatches(&devs);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].severity, "warning");
        assert_eq!(m[0].devices, vec!["veth1".to_string(), "flannel.1".to_string()]);
        assert!(m[0].summary.contains("tunnel flannel.1 (vxlan, mtu 1440)"), "{}", m[0].summary);
    }

    /// Loading ipip puts a `tunl0` (MTU 1480, down) in every new namespace: a Calico node's pods
    /// all have one, and it carries nothing.
    #[test]
    fn a_fallback_tunnel_that_is_down_is_no_mismatch() {
        let tunl0 = DeviceFacts { up: false, ..dev("tunl0", "ipip", 1480, false) };
        assert_eq!(find_mismatches(&[dev("eth0", "veth", 1500, false), tunl0.clone()]), []);
        let up = DeviceFacts { up: true, ..tunl0 };
        assert_eq!(find_mismatches(&[dev("eth0", "veth", 1500, false), up]).len(), 1, "the same tunnel up is one");
    }

    #[test]
    fn tunnel_with_encapsulation_over_the_uplink_is_an_error() {
        let devs = [dev("eth0", "virtio_net", 1500, true), dev("vxlan0", "vxlan", 1500, false), dev("veth1", "veth", 1450, false)];
        let m = find_mismatches(&devs);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!((m[0].severity, m[0].devices.as_slice()), ("error", ["vxlan0".to_string(), "eth0".to_string()].as_slice()));
        assert!(m[0].summary.contains("at most 1450"), "{}", m[0].summary);
    }

    #[test]
    fn consistent_node_has_none() {
        let devs = [dev("eth0", "ena", 9001, true), dev("vxlan0", "vxlan", 8951, false), dev("veth1", "veth", 8951, false)];
        assert!(find_mismatches(&devs).is_empty());
        // No tunnel: pods must fit the uplink.
        let devs = [dev("eth0", "ena", 1500, true), dev("veth1", "veth", 9000, false), dev("cni0", "bridge", 1500, false)];
        let m = find_mismatches(&devs);
        assert_eq!(m.len(), 1);
        assert!(m[0].summary.contains("uplink eth0"), "{}", m[0].summary);
    }

    #[test]
    fn namespaces_are_separate_nodes() {
        let mut other = dev("veth9", "veth", 9000, false);
        other.netns = Netns::parse("lab");
        let devs = [dev("eth0", "virtio_net", 1500, true), other];
        assert!(find_mismatches(&devs).is_empty(), "a device without an uplink in its namespace has nothing to mismatch");
    }

    #[test]
    fn router_without_uplink_reports_different_mtus() {
        let devs = [dev("r0", "veth", 1500, false), dev("r1", "veth", 1400, false)];
        let m = find_mismatches(&devs);
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].severity, "info");
        assert!(m[0].summary.contains("1500 (r0), 1400 (r1)"), "{}", m[0].summary);
    }
}
