//! The machine facts the rules read at the end of a run: sysctls as a network namespace sees
//! them (read from a thread moved into it: /proc/sys/net follows the reader's namespace),
//! namespace names, Services, and the firewall rules of a namespace (read by the kernel layer
//! from the same kind of thread: netlink and x_tables answer for the caller's namespace).

use std::{collections::HashMap, fs, net::IpAddr, path::Path, rc::Rc};

use super::findings::{Facts, NamespaceRules};
use crate::{
    kernel::{
        firewall,
        netns::Namespaces,
        tunnels::{RouteTo, TunnelFacts},
    },
    pods::services::ServiceNames,
};

/// [`Facts`] read from this machine, at the end of a run.
pub(crate) struct MachineFacts<'a> {
    pub(super) namespaces: Namespaces,
    services: &'a ServiceNames,
    /// Each namespace's rules, read once (a node's ruleset can be large) for all its findings.
    rules: HashMap<u32, Rc<NamespaceRules>>,
}

impl<'a> MachineFacts<'a> {
    /// Facts of the namespaces found now, with the Services `services` names.
    pub(crate) fn new(services: &'a ServiceNames) -> Self {
        Self { namespaces: Namespaces::scan(), services, rules: HashMap::new() }
    }
}

impl Facts for MachineFacts<'_> {
    fn tunnels(&mut self, netns: u32) -> Option<TunnelFacts> {
        self.read_tunnels(netns)
    }

    fn route_to(&mut self, netns: u32, dst: IpAddr) -> Option<RouteTo> {
        self.read_route(netns, dst)
    }

    fn sysctl(&mut self, netns: u32, key: &str) -> Option<String> {
        // `net.ipv4.conf.eth0.rp_filter` -> /proc/sys/net/ipv4/conf/eth0/rp_filter. Device names
        // cannot hold `/`; one with `.` (eth0.100) is spelled with `/` in sysctl(8) for that
        // reason, so split only the fixed prefix.
        let path = sysctl_path(key)?;
        self.namespaces.run_in(netns, move || fs::read_to_string(&path)).ok().map(|v| v.trim().to_string())
    }

    fn netns_name(&mut self, netns: u32) -> Option<String> {
        for dir in ["/run/netns", "/var/run/netns"] {
            let Ok(list) = fs::read_dir(dir) else { continue };
            for entry in list.flatten() {
                if inode_of(&entry.path()) == Some(netns) {
                    return Some(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        None
    }

    fn service(&self, ip: IpAddr, port: u16, proto: u8) -> Option<String> {
        self.services.lookup(ip, port, proto)
    }

    fn knows_services(&self) -> bool {
        !self.services.is_empty()
    }

    fn dropping_rules(&mut self, netns: u32) -> Rc<NamespaceRules> {
        if let Some(known) = self.rules.get(&netns) {
            return known.clone();
        }
        let read = match self.namespaces.run_in(netns, || Ok(firewall::read_dropping())) {
            Ok(read) => NamespaceRules { rules: read.rules, unreadable: read.unreadable.into_iter().map(anyhow::Error::new).collect() },
            Err(e) => NamespaceRules { rules: Vec::new(), unreadable: vec![anyhow::Error::new(e).context("every source")] },
        };
        self.rules.entry(netns).or_insert(Rc::new(read)).clone()
    }
}

fn inode_of(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// `/proc/sys/...` of a dotted key; the device part of `net.ipv4.conf.DEV.x` may contain dots.
fn sysctl_path(key: &str) -> Option<String> {
    for prefix in ["net.ipv4.conf.", "net.ipv6.conf."] {
        if let Some(rest) = key.strip_prefix(prefix) {
            let (dev, leaf) = rest.rsplit_once('.')?;
            return Some(format!("/proc/sys/{}{dev}/{leaf}", prefix.replace('.', "/")));
        }
    }
    Some(format!("/proc/sys/{}", key.replace('.', "/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths_keep_dots_in_device_names() {
        assert_eq!(sysctl_path("net.ipv4.ip_forward").as_deref(), Some("/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(sysctl_path("net.ipv4.conf.eth0.100.rp_filter").as_deref(), Some("/proc/sys/net/ipv4/conf/eth0.100/rp_filter"));
        assert_eq!(sysctl_path("net.ipv6.conf.all.forwarding").as_deref(), Some("/proc/sys/net/ipv6/conf/all/forwarding"));
    }
}
