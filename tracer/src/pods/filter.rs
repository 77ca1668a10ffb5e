//! Mirrors the selected pods into the kernel's POD_ADDRS and POD_NETNS maps, so that with
//! `--pod/--namespace/--selector` only events touching those pods are copied to userspace.
//! The maps are a pre-filter: userspace still checks each event against the registry at the
//! event's time, which catches the moments between a pod change and the maps' update.

use std::{collections::HashSet, net::IpAddr};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use tracer_common::{
    filter::{MAX_POD_ADDRS, MAX_POD_NETNS, PodAddrKey},
    flow::{FAMILY_IPV4, FAMILY_IPV6},
};

use super::{Pod, registry::Registry, selection::Selection};

pub(crate) struct KernelPodFilter {
    addrs: HashMap<MapData, PodAddrKey, u8>,
    netns: HashMap<MapData, u32, u8>,
    current_addrs: HashSet<PodAddrKey>,
    current_netns: HashSet<u32>,
    /// UIDs of the pods the maps were last brought to.
    current_pods: HashSet<String>,
    warned_full: bool,
}

pub(crate) fn addr_key(ip: IpAddr) -> PodAddrKey {
    let mut key = PodAddrKey::default();
    match ip {
        IpAddr::V4(v4) => {
            key.addr[..4].copy_from_slice(&v4.octets());
            key.family = FAMILY_IPV4;
        }
        IpAddr::V6(v6) => {
            key.addr = v6.octets();
            key.family = FAMILY_IPV6;
        }
    }
    key
}

/// The maps' keys for `pods` (selected already): their addresses and (for pods with their own
/// network namespace) namespace inodes.
fn keys<'a>(pods: impl Iterator<Item = &'a Pod>) -> (HashSet<PodAddrKey>, HashSet<u32>) {
    let mut addrs = HashSet::new();
    let mut netns = HashSet::new();
    for pod in pods {
        addrs.extend(pod.ips.iter().copied().map(addr_key));
        if let (Some(inode), false) = (pod.netns, pod.host_network) {
            netns.insert(inode);
        }
    }
    (addrs, netns)
}

fn selected<'a>(pods: impl Iterator<Item = &'a Pod>, selection: &Selection) -> impl Iterator<Item = &'a Pod> {
    pods.filter(|p| selection.matches(p))
}

impl KernelPodFilter {
    pub(crate) fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let addrs = ebpf.take_map("POD_ADDRS").context("POD_ADDRS map missing")?;
        let netns = ebpf.take_map("POD_NETNS").context("POD_NETNS map missing")?;
        Ok(Self {
            addrs: HashMap::try_from(addrs)?,
            netns: HashMap::try_from(netns)?,
            current_addrs: HashSet::new(),
            current_netns: HashSet::new(),
            current_pods: HashSet::new(),
            warned_full: false,
        })
    }

    /// Brings the maps to what `selection` wants of `registry`'s live pods: removals first, so a
    /// full map makes room.
    pub(crate) fn sync(&mut self, registry: &Registry, selection: &Selection) -> anyhow::Result<()> {
        // Selected once: the maps' keys and the `+pod` lines below come from the same pods.
        let pods: Vec<&Pod> = selected(registry.live().into_iter(), selection).collect();
        let (addrs, netns) = keys(pods.iter().copied());
        for key in self.current_addrs.difference(&addrs) {
            // Already absent is fine: the goal is absence.
            let _ = self.addrs.remove(key);
        }
        for inode in self.current_netns.difference(&netns) {
            let _ = self.netns.remove(inode);
        }
        let mut full = false;
        for key in addrs.difference(&self.current_addrs) {
            if let Err(err) = self.addrs.insert(key, 1, 0) {
                full |= is_full(&err);
                if !is_full(&err) {
                    return Err(err).context("adding a pod address to the kernel filter");
                }
            }
        }
        for inode in netns.difference(&self.current_netns) {
            if let Err(err) = self.netns.insert(inode, 1, 0) {
                full |= is_full(&err);
                if !is_full(&err) {
                    return Err(err).context("adding a pod network namespace to the kernel filter");
                }
            }
        }
        if full && !self.warned_full {
            log::warn!(
                "more than {MAX_POD_ADDRS} addresses or {MAX_POD_NETNS} namespaces selected: some pods' events are not traced; narrow --namespace/--selector"
            );
            self.warned_full = true;
        }
        // Pods selected after start are traced from this sync on (one CRI poll after they
        // appear); the debug lines let a user (and the tests) see when that happened. A pod is
        // named as well as its namespace's inode: the kernel reuses a freed inode, so a new pod
        // can get the inode its predecessor had, and "+netns" alone cannot tell the two apart.
        for inode in netns.difference(&self.current_netns) {
            log::debug!("kernel pod filter: +netns {inode}");
        }
        for pod in pods.iter().filter(|p| !self.current_pods.contains(&p.uid)) {
            log::debug!("kernel pod filter: +pod {}", pod.full_name());
        }
        self.current_addrs = addrs;
        self.current_netns = netns;
        self.current_pods = pods.into_iter().map(|p| p.uid.clone()).collect();
        Ok(())
    }
}

fn is_full(err: &aya::maps::MapError) -> bool {
    matches!(err, aya::maps::MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pods::SourceKind;

    #[test]
    fn selected_pods_addresses_and_own_namespaces() {
        let pod = |name: &str, ip: &str, netns: u32, host: bool| Pod {
            namespace: "shop".into(),
            name: name.into(),
            uid: name.into(),
            labels: BTreeMap::new(),
            ips: vec![ip.parse().unwrap()],
            netns: Some(netns),
            host_network: host,
            created_unix_ns: None,
            source: SourceKind::Cri,
        };
        let pods = [pod("web", "10.0.0.1", 11, false), pod("db", "fd00::2", 12, false), pod("hn", "192.168.0.1", 1, true)];
        let all = Selection::parse(&[], Some("shop"), None).unwrap();
        let (addrs, netns) = keys(selected(pods.iter(), &all));
        assert_eq!(addrs.len(), 3);
        assert_eq!(netns, HashSet::from([11, 12]));
        let v4 = addr_key("10.0.0.1".parse().unwrap());
        assert_eq!(&v4.addr[..4], &[10, 0, 0, 1]);
        assert!(v4.addr[4..].iter().all(|b| *b == 0));
        let web = Selection::parse(&["shop/web".into()], None, None).unwrap();
        let (addrs, netns) = keys(selected(pods.iter(), &web));
        assert_eq!(addrs, HashSet::from([v4]));
        assert_eq!(netns, HashSet::from([11]));
    }
}
