//! The kernel portability layer: everything tracer learns about the running kernel at start-up
//! (BTF offsets, drop reasons, tracepoint layouts, symbols, capabilities). Probes ask this layer;
//! they never assume.

pub(crate) mod btf;
pub(crate) mod btf_format;
pub(crate) mod drop_reasons;
pub(crate) mod features;
pub(crate) mod firewall;
pub(crate) mod hooks;
pub(crate) mod kallsyms;
pub(crate) mod kfunc;
pub(crate) mod netlink;
pub(crate) mod netns;
pub(crate) mod rtnetlink;
pub(crate) mod tracefs;
pub(crate) mod tunnels;

/// `uname -r` of the running kernel, for messages and skips.
pub(crate) fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

/// An IP protocol number (`IPPROTO_*`) as tools print it: tcp, udp, icmp, icmpv6, another
/// lower-case name, or the number.
pub(crate) fn ip_proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        2 => "igmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string(),
    }
}

/// (major, minor) of the running kernel, if it parses.
pub(crate) fn version() -> Option<(u32, u32)> {
    parse_version(&release())
}

fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_kernel_releases() {
        assert_eq!(super::parse_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(super::parse_version("5.10.0-28-cloud-amd64"), Some((5, 10)));
        assert_eq!(super::parse_version("garbage"), None);
    }
}
