//! The node scope (`--netns`, `--this-node`): only events seen in these network namespaces.
//!
//! On clusters whose nodes share one kernel (kind, k3d, minikube with several nodes), every
//! node's tracer sees every node's packets; a node is its network namespace and its pods'.
//! The scope is filtered in the kernel (the `NETNS_SCOPE` map, combined with the flow and pod
//! filters as an AND) and checked again here at the event's time, as the pod filter is: with
//! `--this-node` the set follows the pods of the source (CRI), so it changes while tracing.

use std::collections::{BTreeSet, HashSet};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use tracer_common::filter::MAX_SCOPE_NETNS;

use super::registry::Registry;
use crate::kernel::netns::Netns;

/// The checked node scope of a tracing command. Empty: no scope, every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeScope {
    /// The inodes of `--netns`, resolved before anything is attached.
    pub inodes: BTreeSet<u32>,
    /// `--this-node`: tracer's own namespace and those of the pods its source reports.
    pub this_node: bool,
}

impl NodeScope {
    /// Whether a scope is active (the kernel filter's `netns` flag).
    pub(crate) fn is_active(&self) -> bool {
        self.this_node || !self.inodes.is_empty()
    }
}

/// A scope as it runs: the fixed inodes (`--netns`, tracer's own with `--this-node`), and
/// whether the pods' namespaces join them.
#[derive(Debug, Clone)]
pub(crate) struct ActiveScope {
    fixed: HashSet<u32>,
    pods: bool,
}

impl ActiveScope {
    /// The scope of `scope`, with tracer's own namespace read now (`--this-node`).
    pub(crate) fn new(scope: &NodeScope) -> anyhow::Result<Option<Self>> {
        if !scope.is_active() {
            return Ok(None);
        }
        let mut fixed: HashSet<u32> = scope.inodes.iter().copied().collect();
        if scope.this_node {
            fixed.insert(Netns::OWN.inode().context("--this-node: reading tracer's own network namespace")?);
        }
        Ok(Some(Self { fixed, pods: scope.this_node }))
    }

    /// What the kernel map should hold now: the fixed inodes and the live pods' namespaces.
    pub(crate) fn wanted(&self, registry: &Registry) -> HashSet<u32> {
        let mut set = self.fixed.clone();
        if self.pods {
            // A host-network pod's namespace is the node's: tracer's own, when it runs there.
            set.extend(registry.live().into_iter().filter(|p| !p.host_network).filter_map(|p| p.netns));
        }
        set
    }

    /// Whether an event seen in `netns` at `ts` is in the scope: a fixed namespace, or (with
    /// `--this-node`) that of a pod of this node at that time. No namespace: outside.
    pub(crate) fn admits(&self, registry: &Registry, netns: Option<u32>, ts: i128) -> bool {
        let Some(inode) = netns else { return false };
        self.fixed.contains(&inode) || (self.pods && registry.by_netns(inode, ts).is_some())
    }

    /// With `--this-node`, the pods' namespaces join the scope.
    pub(crate) fn follows_pods(&self) -> bool {
        self.pods
    }
}

/// The kernel's `NETNS_SCOPE` map and what it holds.
pub(crate) struct KernelScope {
    map: HashMap<MapData, u32, u8>,
    current: HashSet<u32>,
    warned_full: bool,
}

impl KernelScope {
    /// Takes the map out of the loaded object.
    pub(crate) fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf.take_map("NETNS_SCOPE").context("NETNS_SCOPE map missing")?;
        Ok(Self { map: HashMap::try_from(map)?, current: HashSet::new(), warned_full: false })
    }

    /// Brings the map to `wanted`: removals first, so a full map makes room.
    pub(crate) fn sync(&mut self, wanted: HashSet<u32>) -> anyhow::Result<()> {
        for inode in self.current.difference(&wanted) {
            // Already absent is fine: the goal is absence.
            let _ = self.map.remove(inode);
        }
        let mut added = HashSet::new();
        for inode in wanted.difference(&self.current) {
            match self.map.insert(inode, 1, 0) {
                Ok(()) => {
                    log::debug!("node scope: +netns {inode}");
                    added.insert(*inode);
                }
                Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                    if !self.warned_full {
                        log::warn!("more than {MAX_SCOPE_NETNS} network namespaces in the node scope: the events of the others are not traced");
                        self.warned_full = true;
                    }
                }
                Err(err) => return Err(err).context("adding a network namespace to the node scope"),
            }
        }
        self.current.retain(|i| wanted.contains(i));
        self.current.extend(added);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pods::{Pod, PodUpdate, SourceKind, SourceMsg};

    fn pod(name: &str, netns: u32, created: i128) -> Pod {
        Pod {
            namespace: "shop".into(),
            name: name.into(),
            uid: name.into(),
            labels: BTreeMap::new(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            netns: Some(netns),
            host_network: false,
            created_unix_ns: Some(created),
            source: SourceKind::Cri,
        }
    }

    #[test]
    fn this_node_is_own_namespace_and_the_pods_at_the_events_time() {
        let own = Netns::OWN.inode().unwrap();
        let scope = ActiveScope::new(&NodeScope { inodes: BTreeSet::from([7]), this_node: true }).unwrap().unwrap();
        let mut registry = Registry::new();
        registry.apply(SourceMsg { at: 100, source: SourceKind::Cri, update: PodUpdate::Snapshot(vec![pod("web", 4242, 100)]) });
        assert_eq!(scope.wanted(&registry), HashSet::from([7, own, 4242]));
        assert!(scope.admits(&registry, Some(own), 50));
        assert!(scope.admits(&registry, Some(7), 50));
        assert!(scope.admits(&registry, Some(4242), 150), "the pod's namespace while it lives");
        assert!(!scope.admits(&registry, Some(4242), 50), "before the pod existed");
        assert!(!scope.admits(&registry, Some(9), 150));
        assert!(!scope.admits(&registry, None, 150), "no namespace: outside any scope");
    }

    #[test]
    fn netns_alone_is_exactly_its_inodes() {
        assert!(ActiveScope::new(&NodeScope::default()).unwrap().is_none());
        let scope = ActiveScope::new(&NodeScope { inodes: BTreeSet::from([7, 8]), this_node: false }).unwrap().unwrap();
        let mut registry = Registry::new();
        registry.apply(SourceMsg { at: 0, source: SourceKind::Cri, update: PodUpdate::Snapshot(vec![pod("web", 4242, 0)]) });
        assert_eq!(scope.wanted(&registry), HashSet::from([7, 8]));
        assert!(!scope.admits(&registry, Some(4242), 10));
        assert!(scope.admits(&registry, Some(8), 10));
    }
}
