//! Fuzz targets: one entry point per parser of bytes that come from outside tracer, each taking
//! the bytes as the parser gets them and going as far as tracer goes with them (a record is
//! decoded, then written as JSON, a table row and a timeline line; a BTF file is parsed, then
//! every lookup the plans make is made in it).
//!
//! Two drivers call them: the cargo-fuzz crate in `fuzz/` (`cargo xtask fuzz`: libFuzzer,
//! coverage-guided, one target at a time for a bounded time) and the unit tests of
//! `short_pass.rs` (`cargo xtask test`: each target's committed seeds in `fuzz/corpus/<target>/`
//! plus a few seconds of simple mutations, in the ordinary test binary). A target never panics,
//! hangs or allocates without bound, whatever the bytes: a crash is a bug in tracer.
//!
//! Everything here is compiled for tests and with the `fuzzing` feature only.

use std::{
    net::IpAddr,
    sync::LazyLock,
    time::{SystemTime, UNIX_EPOCH},
};

use k8s_cri::v1::{ListPodSandboxResponse, PodSandboxStatusResponse};
use prost::Message as _;

use crate::{
    events::{Clock, Event},
    kernel::{
        btf::KernelBtf,
        drop_reasons::DropReasons,
        firewall::{Rule, nftables as nft, xtables as xt},
        hooks,
        kallsyms::Kallsyms,
        tracefs::Format,
    },
    output::{json, table},
    pods::{
        PodUpdate, SourceKind, SourceMsg, cri, file,
        registry::Registry,
        services::{Service, ServiceAddr, ServiceIndex, ServiceNames, ServiceUpdate},
    },
    probes::{drops, mtu, nat, tcp},
    runner,
};

pub(crate) mod btf_writer;
#[cfg(test)]
mod short_pass;

/// One fuzz target: its name (the cargo-fuzz target and the `fuzz/corpus/` folder) and entry.
#[derive(Clone, Copy)]
pub struct Target {
    /// As `cargo fuzz run` and `cargo xtask fuzz --target` name it.
    pub name: &'static str,
    /// Runs the parser, and what tracer does next, over one input.
    pub run: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target { name: "drop_record", run: drop_record },
    Target { name: "tcp_record", run: tcp_record },
    Target { name: "nat_record", run: nat_record },
    Target { name: "mtu_record", run: mtu_record },
    Target { name: "tracefs_format", run: tracefs_format },
    Target { name: "btf", run: btf },
    Target { name: "pods_file", run: pods_file },
    Target { name: "ctnetlink", run: ctnetlink },
    Target { name: "nftables", run: nftables },
    Target { name: "xtables", run: xtables },
    Target { name: "cri", run: cri },
    Target { name: "job_log", run: job_log },
    Target { name: "recording", run: recording },
];

/// Drop reasons as a kernel names them, with the values [`btf_writer::vmlinux`] gives them.
fn reasons() -> DropReasons {
    DropReasons::from_pairs(
        [("SKB_NOT_DROPPED_YET", 0), ("SKB_DROP_REASON_NO_SOCKET", 3), ("SKB_DROP_REASON_NETFILTER_DROP", 8), ("SKB_DROP_REASON_PKT_TOO_BIG", 60)]
            .map(|(name, value)| (name.to_string(), value)),
    )
}

/// What tracer does with every decoded event: its JSON line, table row and timeline line.
fn render(event: &Event) {
    let _ = json::to_json(event);
    let _ = table::row(event);
    let _ = table::timeline_row(event);
}

static DROP: LazyLock<drops::decode::Decoder> = LazyLock::new(|| drops::decode::Decoder {
    reasons: Some(reasons()),
    kallsyms: Kallsyms::parse("ffffffff81a00000 T nf_hook_slow\nffffffff81b00000 t __udp4_lib_rcv\n").into(),
    clock: Clock::new(),
    ct: Some(drops::CtLayout { confirmed: 8 }),
});

/// A `drops` ring-buffer record (`DropEvent`), decoded as `tracer drops` decodes it.
pub fn drop_record(data: &[u8]) {
    if let Some(event) = DROP.decode(data) {
        render(&event);
    }
}

static TCP: LazyLock<tcp::decode::Decoder> = LazyLock::new(|| tcp::decode::Decoder { clock: Clock::new() });

/// A TCP family record (`TcpEvent`): the kind from its header, as the runner dispatches it.
pub fn tcp_record(data: &[u8]) {
    let Some(header) = runner::header(data) else { return };
    if let Some(event) = TCP.decode(header.kind, data) {
        render(&event);
    }
}

/// The status bits of [`btf_writer::vmlinux`]'s `enum ip_conntrack_status` (the kernel's).
static NAT: LazyLock<nat::decode::Decoder> =
    LazyLock::new(|| nat::decode::Decoder { clock: Clock::new(), bits: nat::StatusBits { src_nat: 16, dst_nat: 32, seen_reply: 2, assured: 4 } });

/// A NAT record (`NatEvent`), named by a Service, then followed as `tracer nat` follows a
/// connection waiting for its reply.
pub fn nat_record(data: &[u8]) {
    let Some(mut event) = NAT.decode(data) else { return };
    let (tx, services) = ServiceNames::channel();
    let mut index = ServiceIndex::default();
    let addr = ServiceAddr { ip: IpAddr::from([10, 96, 0, 10]), port: 80, proto: 6 };
    index.apply(ServiceUpdate::Snapshot(vec![Service { name: "default/web".into(), addrs: vec![addr] }]));
    let _ = tx.send(index);
    services.annotate(&mut event);
    render(&event);
    let mut waiting = nat::tracking::NoReply::new(3_000_000_000);
    waiting.saw(&event);
    for expired in waiting.expired(event.ts_unix_ns.saturating_add(3_000_000_000)) {
        render(&expired);
    }
}

static MTU: LazyLock<mtu::decode::Decoder> = LazyLock::new(|| {
    let dev = |ifindex, name: &str, netns, mtu| mtu::decode::TcDevice { ifindex, name: name.into(), netns, mtu };
    mtu::decode::Decoder {
        clock: Clock::new(),
        reasons: Some(reasons()),
        // Ifindex 2 in two namespaces (told apart by MTU), 7 in one.
        tc_devices: vec![dev(2, "eth0", 4026531840, 1500), dev(2, "eth0", 4026532001, 1450), dev(7, "vxlan0", 4026531840, 1450)],
    }
});

/// An MTU record (`MtuEvent`), its device named from the tc attachments as `tracer mtu` does.
pub fn mtu_record(data: &[u8]) {
    if let Some(event) = MTU.decode(data) {
        render(&event);
    }
}

/// A tracefs `events/CATEGORY/NAME/format` file, and the fields the plans read from it.
pub fn tracefs_format(data: &[u8]) {
    let format = Format::parse(&String::from_utf8_lossy(data));
    for field in ["skbaddr", "location", "protocol", "reason", "rx_sk"] {
        let _ = format.field(field);
    }
}

/// A `--btf` file: parsed as tracer parses it, then every lookup of every family's plan made
/// in it; and the same bytes as a module's split BTF over a small vmlinux (`nf_conntrack`, which
/// the drops and NAT plans add).
pub fn btf(data: &[u8]) {
    static BASE: LazyLock<Vec<u8>> = LazyLock::new(|| btf_writer::vmlinux(false).finish());
    if let Ok(btf) = KernelBtf::from_bytes(data) {
        plan_all(&btf);
    }
    if let Ok(mut btf) = KernelBtf::from_bytes(&BASE)
        && btf.add_module("nf_conntrack", data).is_ok()
    {
        plan_all(&btf);
    }
}

/// What start-up and `tracer check` look up in BTF.
fn plan_all(btf: &KernelBtf) {
    let _ = btf.kernel_offsets();
    let _ = drops::plan(btf, drops::HookChoice::TpBtf);
    let _ = drops::conntrack_layout(btf);
    let _ = tcp::plan(btf);
    let _ = nat::layout(btf);
    // The MTU family's icmp_send layout.
    let _ = btf.tracepoint_params("icmp_send");
    // The hook probes' attach targets.
    let _ = btf.vmlinux_id(hooks::PROBE_TARGET, true);
    let _ = btf.vmlinux_id("btf_trace_kfree_skb", false);
}

/// Now, for the pod registry (its spans are wall-clock).
fn now_unix_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128)
}

/// A `--pods-from file:` file (`kubectl get pods,services -A -o json`): its pods into the
/// registry and looked up by address, its Services into the index and looked up, then gone.
pub fn pods_file(data: &[u8]) {
    let Ok(objects) = file::parse(data) else { return };
    let now = now_unix_ns();
    let mut registry = Registry::new();
    registry.apply(SourceMsg { at: now, source: SourceKind::File, update: PodUpdate::Snapshot(objects.pods.clone()) });
    for pod in &objects.pods {
        for ip in &pod.ips {
            let _ = registry.by_ip(*ip, now);
        }
    }
    registry.apply(SourceMsg { at: now + 1, source: SourceKind::File, update: PodUpdate::Snapshot(Vec::new()) });
    let mut index = ServiceIndex::default();
    index.apply(ServiceUpdate::Snapshot(objects.services.clone()));
    for svc in &objects.services {
        for addr in &svc.addrs {
            let _ = index.lookup(addr.ip, addr.port, addr.proto);
        }
        index.apply(ServiceUpdate::Delete { name: svc.name.clone() });
    }
}

/// A datagram of conntrack netlink messages (destroy events), and how each connection ended.
pub fn ctnetlink(data: &[u8]) {
    for ended in nat::ctnetlink::parse(data) {
        let _ = (ended.ending(true), ended.ending(false));
        let _ = (ended.orig.src_endpoint(), ended.orig.dst_endpoint(), ended.reply.src_endpoint(), ended.reply.dst_endpoint());
    }
}

/// What `diagnose` does with a namespace's dropping rules: judges each against packets.
fn judge(rules: &[Rule]) {
    for rule in rules {
        let _ = (rule.may_match(Some(false), Some(17), Some(53)), rule.may_match(Some(true), Some(6), None), rule.text.len());
    }
}

/// An nftables rule dump as the kernel sends it (datagrams of `NFT_MSG_NEWRULE` messages, then
/// `NLMSG_DONE`), and its dropping rules judged.
pub fn nftables(data: &[u8]) {
    if let Ok(rules) = nft::parse_dump(data) {
        judge(&rules);
    }
}

/// A legacy iptables table as getsockopt gives it (`ipt_getinfo`, then the entries), read as
/// an IPv4 and as an IPv6 table, and its dropping rules judged.
pub fn xtables(data: &[u8]) {
    for version in [xt::IpVersion::V4, xt::IpVersion::V6] {
        if let Ok(rules) = xt::parse_capture(version, data) {
            judge(&rules);
        }
    }
}

/// A CRI answer's protobuf: as `ListPodSandbox`'s (the sandbox ids), and as a verbose
/// `PodSandboxStatus`'s turned into a pod and put into the registry.
pub fn cri(data: &[u8]) {
    if let Ok(list) = ListPodSandboxResponse::decode(data) {
        let _ = list.items.iter().map(|s| s.id.len()).sum::<usize>();
    }
    let Ok(status) = PodSandboxStatusResponse::decode(data) else { return };
    let Some(pod) = cri::pod_from_status("sandbox-id", status) else { return };
    let now = now_unix_ns();
    let mut registry = Registry::new();
    registry.apply(SourceMsg { at: now, source: SourceKind::Cri, update: PodUpdate::Upsert(pod.clone()) });
    for ip in &pod.ips {
        let _ = registry.by_ip(*ip, now);
    }
    if let Some(netns) = pod.netns {
        let _ = registry.by_netns(netns, now);
    }
}

/// A recording (`watch -o json` output) as `diagnose --from` and `watch --from` read it: every
/// node's events and facts, the findings (report JSON and text) and the merged timeline.
pub fn recording(data: &[u8]) {
    let mut recordings = crate::diagnose::recordings::Recordings::default();
    if recordings.read("fuzz", data).is_err() {
        return;
    }
    let _ = recordings.warnings();
    for event in crate::diagnose::recordings::timeline(&recordings) {
        render(event);
    }
    let report = crate::diagnose::recordings::diagnose(&mut recordings);
    let _ = report.to_text();
}

/// A Job's log as `tracer job run/logs` reads it back: JSON lines made into a diagnose report or
/// a timeline line, anything else passed through.
pub fn job_log(data: &[u8]) {
    for line in String::from_utf8_lossy(data).lines() {
        let Some(value) = serde_json::from_str::<serde_json::Value>(line).ok().filter(serde_json::Value::is_object) else { continue };
        let _ = crate::diagnose::report_text(&value);
        let _ = json::event_text(&value);
    }
}
