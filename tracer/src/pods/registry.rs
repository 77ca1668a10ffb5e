//! Every pod seen, with the span of time it existed, indexed by address and network namespace.
//!
//! Attribution is time-aware: addresses and namespace inodes are reused, so a lookup names the
//! pod that held the address *when the event happened*. A pod's span starts at its creation time
//! (as its source reports it, else when it was first seen) and ends when its source stops
//! reporting it. When spans overlap — a new pod took the address before the old one's deletion
//! was observed — the newer pod wins, because an address is only handed out again once free.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use super::{Pod, PodUpdate, SourceMsg};

/// How long a deleted pod is remembered, for events that arrive late or are held back.
const RETENTION_NS: i128 = 5 * 60 * 1_000_000_000;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub pod: Pod,
    /// Unix ns from which the pod holds its addresses.
    pub since: i128,
    /// Unix ns at which the pod was seen gone; None while it exists.
    pub until: Option<i128>,
}

impl Entry {
    fn covers(&self, ts: i128) -> bool {
        self.since <= ts && self.until.is_none_or(|u| ts < u)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// By UID; a UID seen again after deletion starts a new entry (kept in `gone`).
    live: BTreeMap<String, Entry>,
    gone: Vec<Entry>,
    /// Bumped on every change, so dependants (the kernel filter) know when to recompute.
    generation: u64,
    /// Entries by address and by netns inode. Every event looks up three keys; scanning every
    /// entry instead made naming cost ~30 µs per event with 1,000 pods (`cargo xtask bench`).
    /// Rebuilt whenever `live` or `gone` change, which is rare next to lookups.
    index: Index,
}

#[derive(Debug, Default)]
struct Index {
    by_ip: HashMap<IpAddr, Vec<Slot>>,
    by_netns: HashMap<u32, Vec<Slot>>,
}

/// Where an indexed entry is: in `live` by UID, or in `gone` by position.
#[derive(Debug, Clone)]
enum Slot {
    Live(String),
    Gone(usize),
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Applies one source message observed at `msg.at`. Returns whether anything changed.
    pub(crate) fn apply(&mut self, msg: SourceMsg) -> bool {
        let (before, gone_before) = (self.generation, self.gone.len());
        match msg.update {
            PodUpdate::Snapshot(pods) => {
                let present: std::collections::HashSet<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
                let vanished: Vec<String> = self
                    .live
                    .iter()
                    .filter(|(uid, e)| e.pod.source == msg.source && !present.contains(uid.as_str()))
                    .map(|(uid, _)| uid.clone())
                    .collect();
                for uid in vanished {
                    self.remove(&uid, msg.at);
                }
                for pod in pods {
                    self.upsert(pod, msg.at);
                }
            }
            PodUpdate::Upsert(pod) => self.upsert(pod, msg.at),
            PodUpdate::Delete { uid } => self.remove(&uid, msg.at),
            PodUpdate::Tick => {}
        }
        self.gone.retain(|e| e.until.is_some_and(|u| msg.at - u < RETENTION_NS));
        // Expiry moves `gone` positions without a new generation: rebuild for it too.
        if self.generation != before || self.gone.len() != gone_before {
            self.rebuild_index();
        }
        self.generation != before
    }

    fn rebuild_index(&mut self) {
        let mut index = Index::default();
        let slots =
            self.live.iter().map(|(uid, e)| (Slot::Live(uid.clone()), e)).chain(self.gone.iter().enumerate().map(|(i, e)| (Slot::Gone(i), e)));
        for (slot, entry) in slots {
            for ip in &entry.pod.ips {
                index.by_ip.entry(*ip).or_default().push(slot.clone());
            }
            if let Some(netns) = entry.pod.netns {
                index.by_netns.entry(netns).or_default().push(slot);
            }
        }
        self.index = index;
    }

    fn entry(&self, slot: &Slot) -> Option<&Entry> {
        match slot {
            Slot::Live(uid) => self.live.get(uid),
            Slot::Gone(i) => self.gone.get(*i),
        }
    }

    fn upsert(&mut self, pod: Pod, at: i128) {
        match self.live.get_mut(&pod.uid) {
            Some(entry) if entry.pod == pod => {}
            Some(entry) => {
                entry.pod = pod;
                self.generation += 1;
            }
            None => {
                // Creation time bounds the span from below; a clock-skewed or missing one falls
                // back to when the pod was first seen.
                let since = pod.created_unix_ns.filter(|c| *c <= at).unwrap_or(at);
                self.live.insert(pod.uid.clone(), Entry { pod, since, until: None });
                self.generation += 1;
            }
        }
    }

    fn remove(&mut self, uid: &str, at: i128) {
        if let Some(mut entry) = self.live.remove(uid) {
            entry.until = Some(at.max(entry.since));
            self.gone.push(entry);
            self.generation += 1;
        }
    }

    pub(crate) const fn generation(&self) -> u64 {
        self.generation
    }

    /// Pods that exist now, in namespace/name order.
    pub(crate) fn live(&self) -> Vec<&Pod> {
        let mut pods: Vec<&Pod> = self.live.values().map(|e| &e.pod).collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }

    /// The pod that held `ip` at `ts`. Host-network pods are skipped: their addresses are the
    /// node's, so naming one of them for the node's traffic would be wrong.
    pub(crate) fn by_ip(&self, ip: IpAddr, ts: i128) -> Option<&Pod> {
        self.newest_covering(self.index.by_ip.get(&ip), ts)
    }

    /// The pod whose network namespace was `netns` at `ts` (not host-network pods).
    pub(crate) fn by_netns(&self, netns: u32, ts: i128) -> Option<&Pod> {
        self.newest_covering(self.index.by_netns.get(&netns), ts)
    }

    /// Of the entries indexed under one key (in `live`-then-`gone` order, so ties resolve as
    /// before), the newest that covers `ts`.
    fn newest_covering(&self, slots: Option<&Vec<Slot>>, ts: i128) -> Option<&Pod> {
        slots?.iter().filter_map(|slot| self.entry(slot)).filter(|e| e.covers(ts) && !e.pod.host_network).max_by_key(|e| e.since).map(|e| &e.pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::SourceKind;

    pub(crate) fn pod(ns: &str, name: &str, uid: &str, ip: &str, created: i128) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
            labels: BTreeMap::new(),
            ips: vec![ip.parse().unwrap()],
            netns: None,
            host_network: false,
            created_unix_ns: Some(created),
            source: SourceKind::Cri,
        }
    }

    fn msg(at: i128, update: PodUpdate) -> SourceMsg {
        SourceMsg { at, source: SourceKind::Cri, update }
    }

    fn name(p: Option<&Pod>) -> Option<String> {
        p.map(Pod::full_name)
    }

    #[test]
    fn reused_address_names_the_pod_that_held_it_at_the_time() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut r = Registry::new();
        r.apply(msg(100, PodUpdate::Snapshot(vec![pod("a", "old", "u1", "10.0.0.5", 50)])));
        // The old pod is deleted and a new one created with the same address at 300, but the
        // source only notices both at 400.
        r.apply(msg(400, PodUpdate::Snapshot(vec![pod("a", "new", "u2", "10.0.0.5", 300)])));
        assert_eq!(name(r.by_ip(ip, 60)).as_deref(), Some("a/old"));
        assert_eq!(name(r.by_ip(ip, 299)).as_deref(), Some("a/old"));
        assert_eq!(name(r.by_ip(ip, 300)).as_deref(), Some("a/new"));
        assert_eq!(name(r.by_ip(ip, 500)).as_deref(), Some("a/new"));
        // Before anyone held it: nobody.
        assert_eq!(r.by_ip(ip, 10), None);
    }

    #[test]
    fn deleted_pod_is_not_named_after_it_is_gone() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut r = Registry::new();
        r.apply(msg(100, PodUpdate::Upsert(pod("a", "p", "u1", "10.0.0.5", 50))));
        r.apply(msg(200, PodUpdate::Delete { uid: "u1".into() }));
        assert_eq!(name(r.by_ip(ip, 150)).as_deref(), Some("a/p"));
        assert_eq!(r.by_ip(ip, 250), None);
        assert!(r.live().is_empty());
    }

    #[test]
    fn snapshot_only_removes_pods_of_its_own_source() {
        let mut r = Registry::new();
        let mut from_file = pod("a", "f", "uf", "10.0.0.9", 0);
        from_file.source = SourceKind::File;
        r.apply(SourceMsg { at: 10, source: SourceKind::File, update: PodUpdate::Snapshot(vec![from_file]) });
        r.apply(msg(20, PodUpdate::Snapshot(vec![])));
        assert_eq!(r.live().len(), 1);
    }

    #[test]
    fn changes_bump_the_generation_and_ticks_do_not() {
        let mut r = Registry::new();
        assert!(r.apply(msg(1, PodUpdate::Upsert(pod("a", "p", "u1", "10.0.0.5", 0)))));
        assert!(!r.apply(msg(2, PodUpdate::Upsert(pod("a", "p", "u1", "10.0.0.5", 0)))));
        assert!(!r.apply(msg(3, PodUpdate::Tick)));
        let mut moved = pod("a", "p", "u1", "10.0.0.6", 0);
        moved.netns = Some(7);
        assert!(r.apply(msg(4, PodUpdate::Upsert(moved))));
        assert_eq!(name(r.by_netns(7, 5)).as_deref(), Some("a/p"));
    }

    #[test]
    fn host_network_pods_are_not_named_for_node_addresses() {
        let mut r = Registry::new();
        let mut hn = pod("kube-system", "proxy", "u1", "192.168.1.10", 0);
        hn.host_network = true;
        hn.netns = Some(1);
        r.apply(msg(1, PodUpdate::Upsert(hn)));
        assert_eq!(r.by_ip("192.168.1.10".parse().unwrap(), 2), None);
        assert_eq!(r.by_netns(1, 2), None);
        assert_eq!(r.live().len(), 1);
    }

    #[test]
    fn forgotten_after_retention() {
        let mut r = Registry::new();
        r.apply(msg(1, PodUpdate::Upsert(pod("a", "p", "u1", "10.0.0.5", 0))));
        r.apply(msg(2, PodUpdate::Delete { uid: "u1".into() }));
        r.apply(msg(2 + RETENTION_NS + 1, PodUpdate::Tick));
        assert_eq!(r.by_ip("10.0.0.5".parse().unwrap(), 1), None);
    }
}
