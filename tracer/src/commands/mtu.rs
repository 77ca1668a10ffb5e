//! `tracer mtu`: frag-needed / packet-too-big sent, received and dropped, PKT_TOO_BIG drops and
//! oversize packets, each tied to the flow whose packets are too big; the device MTU facts and
//! their mismatches first, on stderr.

use std::collections::BTreeMap;

use anyhow::Context as _;
use tracer_common::{event::kind, nat::NatConfig, tcp::TcpConfig};

use crate::{
    cli::{
        UsageError,
        config::{IfaceChoice, MtuConfig},
    },
    events::Clock,
    kernel::netns::Netns,
    loader::{self, Globals},
    output,
    probes::mtu::{
        self,
        decode::{Decoder, TcDevice},
        devices::{self, DeviceFacts, Role},
    },
    runner::{self, Stop},
};

/// Devices listed per namespace on stderr before the rest are summed up.
const MAX_LISTED: usize = 16;

pub async fn run(config: MtuConfig) -> anyhow::Result<()> {
    super::require_privileges("mtu", config.ifaces.iter().any(|i| i.netns.path.is_some()))?;
    // Devices first (a few syscalls; entering another namespace needs the privileges checked
    // above): a wrong --iface is bad input, refused before BTF is even read.
    let (traced, facts) = choose_devices(&config.ifaces)?;
    let btf = super::load_btf(config.trace.btf.as_deref())?;
    let plan = mtu::plan(&btf, config.sent_hook)?;
    let offsets = btf.kernel_offsets().context("resolving kernel struct offsets from BTF")?;
    drop(btf);
    let mut pods = super::start_pods(&config.trace.pods).await?;

    print_facts(&facts, &traced);
    for why in &plan.missing {
        log::warn!("{why}");
    }
    if traced.is_empty() {
        log::warn!("no veth or tunnel devices in tracer's network namespace: oversize and received errors are not seen (choose devices with --iface)");
    }

    let globals = Globals {
        offsets,
        filter: config.trace.filter,
        drop: plan.drop,
        tcp: TcpConfig::empty(),
        nat: NatConfig::default(),
        mtu: plan.config,
    };
    let mut ebpf = loader::load(&globals, config.trace.ring_buffer_bytes)?;
    pods.attach_kernel_filter(&mut ebpf)?;
    mtu::attach_tracing(&mut ebpf, &plan)?;
    let tc = mtu::tc::attach(&mut ebpf, &traced)?;
    let names: Vec<String> = tc.devices.iter().map(|a| label(&a.device)).collect();
    super::release_startup_memory();
    eprintln!(
        "tracer: attached mtu ({}; tc on {} devices{}){}",
        mtu::describe(&plan),
        names.len(),
        if names.is_empty() { String::new() } else { format!(": {}", shorten(&names)) },
        if config.trace.duration.is_some() { "" } else { "; stop with Ctrl-C" }
    );

    let tc_devices = tc
        .devices
        .iter()
        .map(|a| TcDevice { ifindex: a.device.ifindex, name: a.device.name.clone(), netns: a.netns_inode, mtu: a.device.mtu })
        .collect();
    let decoder = Decoder { clock: Clock::new(), reasons: plan.reasons.clone(), tc_devices };
    let mut sink = output::stdout_sink(config.trace.output);
    let stop = Stop { duration: config.trace.duration, count: config.trace.count };
    let delivered = runner::run(&mut ebpf, stop, sink.as_mut(), &mut pods, |header, bytes| {
        (header.kind == kind::MTU).then(|| decoder.decode(bytes)).flatten()
    })
    .await?;
    let counts = loader::read_counts(&ebpf, kind::MTU)?;
    // tc first (in each device's namespace), then the tracepoints with the object.
    drop(tc);
    drop(ebpf);
    super::print_summary("mtu", counts, delivered.read);
    Ok(())
}

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
            let listed = devices::list(&choice.netns)
                .map_err(|e| UsageError(format!("--iface {}: {e}", choice.text)))?;
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
