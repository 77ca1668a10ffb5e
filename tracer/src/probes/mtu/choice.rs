//! Which devices the MTU family attaches tc to (`--iface`, else every veth and tunnel of tracer's
//! namespace), and the device MTU facts it prints before tracing.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::{
    IfaceChoice,
    devices::{self, DeviceFacts, Role},
};
use crate::{kernel::netns::Netns, usage::UsageError};

/// Devices listed per namespace on stderr before the rest are summed up.
const MAX_LISTED: usize = 16;

/// The devices to attach to, and every device of their namespaces (for the MTU facts).
pub(crate) fn choose_devices(ifaces: &[IfaceChoice]) -> anyhow::Result<(Vec<DeviceFacts>, Vec<DeviceFacts>)> {
    if ifaces.is_empty() {
        let all = devices::list(&Netns::OWN).context("listing this namespace's devices")?;
        let traced = all.iter().filter(|d| d.traced_by_default()).cloned().collect();
        return Ok((traced, all));
    }
    let mut by_netns: BTreeMap<Netns, Vec<DeviceFacts>> = BTreeMap::new();
    let mut traced: Vec<DeviceFacts> = Vec::new();
    for choice in ifaces {
        if !by_netns.contains_key(&choice.netns) {
            let listed = devices::list(&choice.netns).map_err(|e| UsageError(format!("--iface {}: {e}", choice.text)))?;
            by_netns.insert(choice.netns.clone(), listed);
        }
        let here = by_netns.get(&choice.netns).map(Vec::as_slice).unwrap_or_default();
        let device = here.iter().find(|d| d.name == choice.name).ok_or_else(|| {
            UsageError(format!(
                "--iface {}: no device {} in network namespace {} (it has: {})",
                choice.text,
                choice.name,
                choice.netns.label(),
                shorten(&here.iter().map(|d| d.name.clone()).collect::<Vec<_>>())
            ))
        })?;
        if !traced.contains(device) {
            traced.push(device.clone());
        }
    }
    Ok((traced, by_netns.into_values().flatten().collect()))
}

pub(crate) fn label(d: &DeviceFacts) -> String {
    match d.netns.path {
        None => d.name.clone(),
        Some(_) => format!("{}:{}", d.netns.label(), d.name),
    }
}

pub(crate) fn shorten(names: &[String]) -> String {
    if names.len() <= MAX_LISTED {
        return names.join(", ");
    }
    format!("{} and {} more", names[..MAX_LISTED].join(", "), names.len() - MAX_LISTED)
}

/// `tracer: mtu: devices in NETNS: NAME MTU (role, driver[, traced]), ...` per namespace, then
/// one line per mismatch.
pub(crate) fn print_facts(facts: &[DeviceFacts], traced: &[DeviceFacts]) {
    let mut namespaces: Vec<&Netns> = facts.iter().map(|d| &d.netns).collect();
    namespaces.dedup();
    for netns in namespaces {
        let mut here: Vec<&DeviceFacts> = facts.iter().filter(|d| &d.netns == netns).collect();
        // The uplink and tunnels first: they set the limits the rest are measured against.
        here.sort_by_key(|d| match d.role() {
            Role::Uplink => 0,
            Role::Tunnel { .. } => 1,
            Role::Bridge => 2,
            Role::PodDevice => 3,
            Role::Other => 4,
        });
        let described: Vec<String> = here
            .iter()
            .map(|d| {
                let role = match d.role() {
                    Role::Uplink => "uplink",
                    Role::Tunnel { .. } => "tunnel",
                    Role::Bridge => "bridge",
                    Role::PodDevice => "veth",
                    Role::Other => "other",
                };
                let driver = if d.driver.is_empty() || d.driver == role { String::new() } else { format!(" {}", d.driver) };
                let mark = if traced.contains(d) { ", traced" } else { "" };
                format!("{} {} ({role}{driver}{mark})", d.name, d.mtu)
            })
            .collect();
        eprintln!("tracer: mtu: devices in network namespace {}: {}", netns.label(), shorten(&described));
    }
    for m in devices::find_mismatches(facts) {
        eprintln!("tracer: mtu: mismatch ({}): {}", m.severity, m.summary);
    }
}

/// `DEV` or `NETNS:DEV`. Device names cannot contain `:` or `/` (the kernel's dev_valid_name),
/// so the first `:` separates the namespace.
pub(crate) fn parse_iface(text: &str) -> Result<super::IfaceChoice, crate::usage::UsageError> {
    let bad = |why: &str| crate::usage::UsageError(format!("--iface {text}: {why} (expected DEV or NETNS:DEV, e.g. eth0 or node1:veth1)"));
    let (netns, name) = match text.split_once(':') {
        Some((ns, dev)) if ns.trim().is_empty() => return Err(bad(&format!("empty network namespace before `:{dev}`"))),
        Some((ns, dev)) => (crate::kernel::netns::Netns::parse(ns.trim()), dev.trim()),
        None => (crate::kernel::netns::Netns::OWN, text.trim()),
    };
    if name.is_empty() || name.len() > 15 || name.contains(['/', ':']) || name.contains(char::is_whitespace) {
        return Err(bad("not a device name (1 to 15 characters, no `/`, `:` or spaces)"));
    }
    Ok(super::IfaceChoice { netns, name: name.to_string(), text: text.to_string() })
}
