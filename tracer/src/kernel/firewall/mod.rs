//! The firewall rules of the calling thread's network namespace that drop or reject packets,
//! read from the kernel itself: nftables (rules added with `nft` or `iptables-nft`) through a
//! netlink dump, legacy iptables (`iptables-legacy`, x_tables) through getsockopt. No
//! `iptables-save` or `nft` is run: the image holds only tracer, and a node's tools may be
//! another version than the kernel's ruleset.
//!
//! A source that cannot be read (no permission, a malformed answer) is reported as
//! [`Unreadable`], never skipped in silence: `diagnose` says which rules it could not see.

#[cfg(test)]
pub(crate) mod lab;
pub(crate) mod nftables;
pub(crate) mod xtables;

/// The packets a rule can see, by IP version: its table's family, narrowed by what it matches
/// (`meta nfproto ipv4` in an `inet` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Family {
    Ipv4,
    Ipv6,
    /// IPv4 and IPv6 (`inet`, `bridge`, `netdev` tables).
    Any,
    /// No IP packet (`arp` tables).
    NotIp,
}

impl Family {
    /// Whether packets of this IP version pass through the rule.
    pub(crate) const fn sees(self, ipv6: bool) -> bool {
        match self {
            Self::Ipv4 => !ipv6,
            Self::Ipv6 => ipv6,
            Self::Any => true,
            Self::NotIp => false,
        }
    }
}

/// One rule whose verdict drops or rejects.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Rule {
    /// The IP versions it sees.
    pub family: Family,
    /// Its table's name (`filter`), and its chain's (`INPUT`; a hook's name for legacy tables).
    pub table: String,
    pub chain: String,
    /// The rule as a person reads it, table and chain first: nft's syntax for nftables
    /// (`inet filter/input: ip daddr 10.0.0.2 udp dport 53 counter packets 3 bytes 180 drop`),
    /// iptables-save's for legacy tables (`filter/INPUT: -A INPUT -p udp -m udp --dport 53 -j
    /// DROP (3 packets)`).
    pub text: String,
    /// Packets its counter counted since the rule was added; None when it has no counter (an
    /// nftables rule without `counter`).
    pub packets: Option<u64>,
    /// The IP protocol it is known to match (a positive `-p` / `meta l4proto` / `ip protocol`).
    pub proto: Option<u8>,
    /// The destination ports it is known to match (inclusive), when it matches on them.
    pub dport: Option<(u16, u16)>,
}

impl Rule {
    /// Whether the rule could have dropped packets of this IP version, protocol and destination
    /// port: what it is known to match agrees with them. Other matches are not judged, so a rule
    /// that may match stays. Unknown sides (None) agree with anything.
    pub(crate) fn may_match(&self, ipv6: Option<bool>, proto: Option<u8>, dport: Option<u16>) -> bool {
        if ipv6.is_some_and(|v6| !self.family.sees(v6)) {
            return false;
        }
        if let (Some(want), Some(got)) = (self.proto, proto)
            && want != got
        {
            return false;
        }
        match (self.dport, dport) {
            (Some((lo, hi)), Some(port)) => (lo..=hi).contains(&port),
            _ => true,
        }
    }
}

/// A source of rules that could not be read, and why.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unreadable {
    #[error("nftables")]
    Nftables(#[source] nftables::NftError),
    #[error("{} table {table}", version.tool())]
    Legacy {
        version: xtables::IpVersion,
        table: String,
        #[source]
        source: xtables::XtError,
    },
    #[error("{} (/proc/net/{})", version.tool(), version.names_file())]
    LegacyTables {
        version: xtables::IpVersion,
        #[source]
        source: std::io::Error,
    },
}

/// What [`read_dropping`] found.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    /// Every dropping rule of every source that could be read.
    pub rules: Vec<Rule>,
    /// The sources that could not be, with why.
    pub unreadable: Vec<Unreadable>,
}

/// Every rule that drops or rejects, of every source, in the calling thread's network
/// namespace (call it from a thread moved into the namespace).
pub(crate) fn read_dropping() -> Rules {
    let mut out = Rules::default();
    match nftables::dropping_rules() {
        Ok(rules) => out.rules.extend(rules),
        Err(e) => out.unreadable.push(Unreadable::Nftables(e)),
    }
    for version in [xtables::IpVersion::V4, xtables::IpVersion::V6] {
        let tables = match xtables::table_names(version) {
            Ok(tables) => tables,
            Err(source) => {
                out.unreadable.push(Unreadable::LegacyTables { version, source });
                continue;
            }
        };
        for table in tables {
            match xtables::dropping_rules(version, &table) {
                Ok(rules) => out.rules.extend(rules),
                Err(source) => out.unreadable.push(Unreadable::Legacy { version, table, source }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(family: Family, proto: Option<u8>, dport: Option<(u16, u16)>) -> Rule {
        Rule { family, table: "filter".into(), chain: "INPUT".into(), text: String::new(), packets: Some(1), proto, dport }
    }

    /// Real kernel: the lab's rules of every source, read from inside its namespace.
    #[test]
    fn reads_the_dropping_rules_of_every_source_from_the_kernel() {
        let Some(lab) = lab::Lab::new("reads_the_dropping_rules_of_every_source_from_the_kernel") else { return };
        let read = {
            let _inside = lab.netns().enter().expect("entering the lab");
            read_dropping()
        };
        assert!(read.unreadable.is_empty(), "every source is readable here: {:?}", read.unreadable);
        let find =
            |start: &str| read.rules.iter().find(|r| r.text.starts_with(start)).unwrap_or_else(|| panic!("no rule {start:?} in {:#?}", read.rules));
        // One datagram went into each of these: the counters are read, whatever the source.
        let nft = find("inet trt/in: ip daddr 127.0.0.1 udp dport 53 counter packets 1 bytes ");
        assert_eq!((nft.family, nft.proto, nft.dport, nft.packets), (Family::Ipv4, Some(17), Some((53, 53)), Some(1)));
        let iptables_nft = find("ip filter/INPUT: udp dport 5301 counter packets 1 bytes ");
        assert_eq!((iptables_nft.proto, iptables_nft.dport, iptables_nft.packets), (Some(17), Some((5301, 5301)), Some(1)));
        let legacy = find("filter/INPUT: -A INPUT -p udp -m udp --dport 5302 -j DROP (1 packets)");
        assert_eq!((legacy.family, legacy.packets), (Family::Ipv4, Some(1)));
        find("filter/FORWARD: -P FORWARD DROP (0 packets)");
        find("ip6 filter/INPUT: -A INPUT -d fd00::1/128 -p udp -m udp --dport 53 -j DROP (0 packets)");
        find("ip6 filter/INPUT: ip6 saddr fd00::/64 udp dport 53 counter packets 0 bytes 0 drop");
        assert_eq!(read.rules.len(), 14, "nothing that accepts or jumps: {:#?}", read.rules);
    }

    /// Takes capability `cap` out of the calling thread's effective set (capabilities are per
    /// thread: the test's other threads keep it).
    fn drop_effective_capability(cap: u32) {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Default, Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        // _LINUX_CAPABILITY_VERSION_3: two Data, for capabilities 0-31 and 32-63.
        let mut header = Header { version: 0x2008_0522, pid: 0 };
        let mut data = [Data::default(); 2];
        // SAFETY: capget(2) with a valid header and room for two data structs.
        assert_eq!(unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) }, 0, "capget");
        data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        // SAFETY: capset(2) with the header and data capget filled in.
        assert_eq!(unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) }, 0, "capset");
    }

    /// Real kernel: without CAP_NET_ADMIN, netfilter answers neither the nftables dump nor the
    /// x_tables getsockopt; each source is reported with why, none is skipped.
    #[test]
    fn without_cap_net_admin_every_source_is_unreadable_and_says_why() {
        let Some(lab) = lab::Lab::new("without_cap_net_admin_every_source_is_unreadable_and_says_why") else { return };
        let read = std::thread::scope(|s| {
            s.spawn(|| {
                let _inside = lab.netns().enter().expect("entering the lab");
                drop_effective_capability(crate::kernel::features::Capability::NetAdmin as u32);
                read_dropping()
            })
            .join()
            .expect("the reading thread")
        });
        assert!(read.rules.is_empty(), "{:#?}", read.rules);
        let said: Vec<String> = read.unreadable.into_iter().map(|e| format!("{:#}", anyhow::Error::from(e))).collect();
        assert_eq!(
            said,
            [
                "nftables: the kernel refused the rule dump: Operation not permitted (os error 1)",
                "iptables-legacy table filter: getsockopt SO_GET_INFO: Operation not permitted (os error 1)",
                "ip6tables-legacy table filter: getsockopt SO_GET_INFO: Operation not permitted (os error 1)",
            ]
        );
    }

    #[test]
    fn rules_are_matched_on_ip_version_protocol_and_port() {
        let udp_5000_5400 = rule(Family::Ipv4, Some(17), Some((5000, 5400)));
        assert!(udp_5000_5400.may_match(Some(false), Some(17), Some(5301)));
        assert!(!udp_5000_5400.may_match(Some(false), Some(17), Some(5401)), "port above the range");
        assert!(!udp_5000_5400.may_match(Some(false), Some(6), Some(5301)), "another protocol");
        assert!(!udp_5000_5400.may_match(Some(true), Some(17), Some(5301)), "an IPv4 table sees no IPv6");
        assert!(udp_5000_5400.may_match(None, None, None), "nothing known about the packets: it may");
        let any = rule(Family::Any, None, None);
        assert!(any.may_match(Some(true), Some(58), None) && any.may_match(Some(false), Some(1), None));
        assert!(!rule(Family::NotIp, None, None).may_match(Some(false), Some(1), None), "an arp table drops no IP packet");
        assert!(rule(Family::Ipv6, Some(6), None).may_match(Some(true), Some(6), Some(80)), "no port match: any port");
    }
}
