//! The healthy packet's cost where tracer is deployed: on a node. The main lab (bench.rs) is two
//! namespaces joined by one veth pair and traced with `--iface` on both ends, which puts the MTU
//! classifiers on both directions of both devices and has no conntrack. A node is different:
//! its pods' packets are forwarded by the node's namespace, kube-proxy's rules put every packet
//! through conntrack and a Service's through NAT, and `serve` (the DaemonSet) runs in the node's
//! namespace with the devices it finds itself. This lab is that: pod A and pod B, each behind a
//! veth into the node, a Service address DNATed to pod B in the node (as kube-proxy's iptables
//! mode does), `tracer serve` and then `tracer watch` in the node. iperf3 from pod A to the
//! Service, TCP and 64-byte UDP; tracer's programs measured with kernel.bpf_stats_enabled, per
//! packet that crossed the node.
//! Before that, with the statistics off, throughput through the node with `tracer watch` in it
//! (the devices it finds) against none, alternating: what a node pays, beside the main lab's
//! worst case (`--iface` on both ends of one veth pair).

use std::{fmt::Write as _, process::Command, time::Duration};

use anyhow::Context as _;

use crate::{
    bench::{IPERF_PORT, Proc, Samples, iperf_between, sh},
    progstats,
};

const POD_A_IP: &str = "10.214.1.2";
const NODE_A_IP: &str = "10.214.1.1";
const POD_B_IP: &str = "10.214.2.2";
const NODE_B_IP: &str = "10.214.2.1";
/// The Service's cluster IP, DNATed to pod B in the node.
const SERVICE_IP: &str = "10.215.0.10";
/// serve's metrics, on the node namespace's loopback.
const METRICS: &str = "127.0.0.1:9466";

/// Three namespaces: pod A, the node, pod B; deleted on drop.
struct NodeLab {
    pod_a: String,
    node: String,
    pod_b: String,
}

/// The node's ends of the pods' veths.
const NODE_DEVS: [&str; 2] = ["trbna", "trbnb"];

impl NodeLab {
    fn create() -> anyhow::Result<Self> {
        let pid = std::process::id();
        let p = crate::bench::PREFIX;
        let lab = NodeLab { pod_a: format!("{p}{pid}-pa"), node: format!("{p}{pid}-n"), pod_b: format!("{p}{pid}-pb") };
        // From here on Drop deletes whatever exists of the lab.
        for ns in [&lab.pod_a, &lab.node, &lab.pod_b] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        for ((pod, pod_ip), (dev, node_ip)) in
            [(&lab.pod_a, POD_A_IP), (&lab.pod_b, POD_B_IP)].into_iter().zip(NODE_DEVS.into_iter().zip([NODE_A_IP, NODE_B_IP]))
        {
            // Created directly inside the namespaces: nothing exists in the machine's own.
            sh(&["ip", "link", "add", "eth0", "netns", pod, "type", "veth", "peer", "name", dev, "netns", &lab.node])?;
            sh(&["ip", "-n", pod, "addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"])?;
            sh(&["ip", "-n", pod, "link", "set", "eth0", "up"])?;
            sh(&["ip", "-n", pod, "route", "add", "default", "via", node_ip])?;
            sh(&["ip", "-n", &lab.node, "addr", "add", &format!("{node_ip}/24"), "dev", dev])?;
            sh(&["ip", "-n", &lab.node, "link", "set", dev, "up"])?;
        }
        sh(&["ip", "netns", "exec", &lab.node, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let to = format!("{POD_B_IP}:{IPERF_PORT}");
        let port = IPERF_PORT.to_string();
        for proto in ["tcp", "udp"] {
            sh(&[
                "ip",
                "netns",
                "exec",
                &lab.node,
                "iptables",
                "-t",
                "nat",
                "-A",
                "PREROUTING",
                "-d",
                SERVICE_IP,
                "-p",
                proto,
                "--dport",
                &port,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
            ])
            .context("the Service's DNAT rule (iptables)")?;
        }
        Ok(lab)
    }

    /// Both pods' eth0: what they transmitted is every packet that crossed the node.
    fn pod_ends(&self) -> [(&str, &str); 2] {
        [(self.pod_a.as_str(), "eth0"), (self.pod_b.as_str(), "eth0")]
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        for ns in [&self.pod_a, &self.node, &self.pod_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(std::process::Stdio::null()).status();
        }
    }
}

/// One load's figures under one command.
pub(crate) struct NodeLoad {
    /// `serve` or `watch`.
    command: &'static str,
    load: &'static str,
    packets: u64,
    progs: progstats::Snapshot,
    floor: progstats::Counters,
}

/// One load's throughput through the node, without tracer and with `watch` in the node.
pub(crate) struct NodeThroughput {
    load: &'static str,
    /// TCP bits/s or UDP packets/s received, per repetition.
    base: Samples,
    traced: Samples,
}

/// The node section's result.
#[derive(Default)]
pub(crate) struct NodeCost {
    throughput: Vec<NodeThroughput>,
    loads: Vec<NodeLoad>,
    /// Each command's attached line (which hook each family took).
    attached: Vec<(&'static str, String)>,
}

/// The commands whose programs are measured on the node, and their arguments: the DaemonSet's
/// and the one a user runs during an incident. Both find the node's devices themselves.
const COMMANDS: [(&str, &[&str]); 2] = [("serve", &["serve", "--metrics", METRICS, "--pods-from", "none"]), ("watch", WATCH)];

/// `tracer watch` as the node lab runs it, for its throughput and its programs alike.
const WATCH: &[&str] = &["watch", "--pods-from", "none", "-o", "json"];

/// The loads: (name, UDP, destination). To the Service (conntrack and NAT on every packet), and
/// straight to pod B (conntrack only: pod-to-pod traffic on a node with kube-proxy's rules).
const LOADS: [(&str, bool, &str); 3] = [("TCP", false, SERVICE_IP), ("UDP 64 B", true, SERVICE_IP), ("UDP 64 B, pod to pod", true, POD_B_IP)];

/// Throughput of each load with and without `tracer watch` in the node (statistics off: what a
/// node pays), `reps` alternating repetitions of `secs` seconds.
fn throughput(tracer: &std::path::Path, lab: &NodeLab, secs: u64, reps: usize) -> anyhow::Result<Vec<NodeThroughput>> {
    let mut out: Vec<NodeThroughput> =
        LOADS.iter().map(|(load, _, _)| NodeThroughput { load, base: Samples::default(), traced: Samples::default() }).collect();
    for rep in 0..reps {
        for traced in [false, true] {
            let mut watch = None;
            if traced {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &lab.node]).arg(tracer).args(WATCH);
                let mut p = Proc::spawn(&mut cmd, false)?;
                p.wait_for("tracer: attached", Duration::from_secs(30)).context("tracer watch in the node lab")?;
                watch = Some(p);
            }
            for ((_, udp, to), t) in LOADS.iter().zip(out.iter_mut()) {
                crate::bench::check_interrupted()?;
                let rate = iperf_between((&lab.pod_a, &lab.pod_b), (POD_B_IP, to), secs, *udp)?.rate;
                let samples = if traced { &mut t.traced } else { &mut t.base };
                samples.0.push(rate);
                eprintln!("bench:   node lab rep {} {}: {} {rate:.0}", rep + 1, if traced { "watch" } else { "baseline" }, t.load);
            }
            if let Some(mut p) = watch {
                p.interrupt(Duration::from_secs(30))?;
            }
        }
    }
    Ok(out)
}

/// Runs the node lab: throughput with and without `watch` (`throughput_reps` alternating
/// repetitions), then each of [`COMMANDS`] in the node with the statistics on, TCP and 64-byte
/// UDP from pod A to the Service and 64-byte UDP from pod A to pod B, `program_reps` times each;
/// every run `secs` seconds.
pub(crate) fn run(tracer: &std::path::Path, secs: u64, throughput_reps: usize, program_reps: usize) -> anyhow::Result<NodeCost> {
    let lab = NodeLab::create()?;
    let mut cost = NodeCost { throughput: throughput(tracer, &lab, secs, throughput_reps)?, ..NodeCost::default() };
    let _stats = progstats::StatsEnabled::on()?;
    let ends: Vec<(String, String)> = NODE_DEVS.iter().map(|d| (lab.node.clone(), (*d).to_string())).collect();
    for (command, args) in COMMANDS {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &lab.node]).arg(tracer).args(args);
        let mut tracer_proc = Proc::spawn(&mut cmd, false)?;
        tracer_proc.wait_for("tracer: attached", Duration::from_secs(30)).with_context(|| format!("tracer {command} in the node lab"))?;
        let attached = tracer_proc.stderr_text().split(" | ").find(|l| l.starts_with("tracer: attached")).unwrap_or_default().to_string();
        cost.attached.push((command, attached));
        let empty = progstats::EmptyClassifier::attach(&ends)?;
        for _ in 0..program_reps {
            for (load, udp, to) in LOADS {
                crate::bench::check_interrupted()?;
                let (e0, p0, s0) = (empty.counters()?, progstats::veth_packets(&lab.pod_ends())?, progstats::snapshot(tracer_proc.pid())?);
                iperf_between((&lab.pod_a, &lab.pod_b), (POD_B_IP, to), secs, udp)?;
                let (s1, p1, e1) = (progstats::snapshot(tracer_proc.pid())?, progstats::veth_packets(&lab.pod_ends())?, empty.counters()?);
                let progs = progstats::delta(&s0, &s1);
                let floor = progstats::Counters { run_cnt: e1.run_cnt - e0.run_cnt, run_time_ns: e1.run_time_ns - e0.run_time_ns };
                match cost.loads.iter_mut().find(|l| l.command == command && l.load == load) {
                    Some(l) => {
                        progstats::add(&mut l.progs, &progs);
                        progstats::add_counters(&mut l.floor, &floor);
                        l.packets += p1 - p0;
                    }
                    None => cost.loads.push(NodeLoad { command, load, packets: p1 - p0, progs, floor }),
                }
            }
        }
        drop(empty);
        tracer_proc.interrupt(Duration::from_secs(30))?;
    }
    Ok(cost)
}

/// A program runs on the healthy packet's path when it runs for at least half the packets (the
/// others run for events: drops, retransmissions).
const ON_THE_PATH: f64 = 0.5;

impl NodeLoad {
    fn floor_ns(&self) -> f64 {
        if self.floor.run_cnt == 0 { f64::NAN } else { self.floor.run_time_ns as f64 / self.floor.run_cnt as f64 }
    }

    /// (runs per packet, ns per run) of each program, by name.
    fn per_program(&self) -> Vec<(&str, f64, f64)> {
        let packets = self.packets.max(1) as f64;
        self.progs
            .iter()
            .filter(|(_, c)| c.run_cnt > 0)
            .map(|(name, c)| (name.as_str(), c.run_cnt as f64 / packets, c.run_time_ns as f64 / c.run_cnt as f64))
            .collect()
    }

    /// The healthy path's sum per packet: raw, and above the floor (each run less the floor).
    fn healthy(&self) -> (f64, f64) {
        let floor = self.floor_ns();
        self.per_program()
            .iter()
            .filter(|(_, runs, _)| *runs >= ON_THE_PATH)
            .fold((0.0, 0.0), |(raw, above), (_, runs, ns)| (raw + runs * ns, above + runs * (ns - floor).max(0.0)))
    }
}

impl NodeCost {
    /// Whether every load moved packets and ran tracer's programs (the smoke check).
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.loads.is_empty(), "node lab: no load measured");
        for t in &self.throughput {
            anyhow::ensure!(t.base.median() > 0.0 && t.traced.median() > 0.0, "node lab, {}: no throughput measured", t.load);
        }
        // On a node (pod veths in tracer's namespace) the NAT check rides in the egress
        // classifiers: no program on every transmit.
        for (command, _) in COMMANDS {
            let attached = self.attached.iter().find(|(c, _)| *c == command).map(|(_, line)| line.as_str()).unwrap_or_default();
            anyhow::ensure!(attached.contains("nat: tc egress"), "node lab: {command} did not put the NAT check in the classifiers: {attached}");
            anyhow::ensure!(self.loads.iter().any(|l| l.command == command), "node lab: {command}'s programs not measured");
        }
        for l in &self.loads {
            let what = format!("node lab, {}, {}", l.command, l.load);
            anyhow::ensure!(l.packets > 0, "{what}: no packet crossed the node");
            let runs = |name: &str| l.per_program().iter().find(|(n, _, _)| *n == name).map_or(0.0, |(_, runs, _)| *runs);
            anyhow::ensure!(runs("mtu_eth_egress") >= ON_THE_PATH, "{what}: the egress classifier did not run per packet");
            anyhow::ensure!(runs("nat_xmit") == 0.0, "{what}: nat_xmit ran beside the classifiers");
            anyhow::ensure!(l.floor.run_cnt > 0, "{what}: the empty classifier did not run (no statistics?)");
        }
        Ok(())
    }

    pub(crate) fn markdown(&self) -> String {
        let mut s = String::new();
        if self.loads.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n**Throughput through a node** (the same lab, statistics off: no tracer, then `tracer watch` in the node's namespace with the devices it finds, alternating; medians of the repetitions; TCP in Gbit/s, UDP in packets/s received by pod B):\n"
        );
        let _ = writeln!(s, "| load | baseline | with `watch` | ratio | spread (baseline / watch) |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for t in &self.throughput {
            let unit = if t.load.starts_with("TCP") { 1e9 } else { 1.0 };
            let (base, traced) = (t.base.median(), t.traced.median());
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | **{:.3}** | ±{:.0}% / ±{:.0}% |",
                t.load,
                base / unit,
                traced / unit,
                traced / base,
                t.base.spread_pct() / 2.0,
                t.traced.spread_pct() / 2.0
            );
        }
        for (command, _) in COMMANDS {
            self.program_table(&mut s, command);
        }
        s
    }

    /// The per-program table of one command's runs.
    fn program_table(&self, s: &mut String, command: &str) {
        let loads: Vec<&NodeLoad> = self.loads.iter().filter(|l| l.command == command).collect();
        if loads.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n**Per program on a node** (`tracer {command}` in the node's namespace with the devices it finds: pod A → Service ({SERVICE_IP}, DNATed by an iptables rule in the node) → pod B, and pod A → pod B straight (conntracked, not NATed), both pods behind veths into the node; kernel.bpf_stats_enabled; packets: what both pods transmitted, each crossing the node once):\n"
        );
        let _ =
            writeln!(s, "| program | {} |", loads.iter().map(|l| format!("{}: runs per packet, ns per run", l.load)).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(loads.len()));
        let mut names: Vec<&str> = loads.iter().flat_map(|l| l.per_program().into_iter().map(|(n, _, _)| n)).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let cells: Vec<String> = loads
                .iter()
                .map(|l| {
                    l.per_program()
                        .into_iter()
                        .find(|(n, _, _)| *n == name)
                        .map_or_else(|| "—".into(), |(_, runs, ns)| format!("{runs:.2} × {ns:.1}"))
                })
                .collect();
            let _ = writeln!(s, "| `{name}` | {} |", cells.join(" | "));
        }
        let sums: Vec<String> = loads
            .iter()
            .map(|l| {
                let (raw, above) = l.healthy();
                format!("**{raw:.1}** raw, **{above:.1}** above the floor ({:.0} ns per run)", l.floor_ns())
            })
            .collect();
        let _ = writeln!(s, "| healthy packet (programs run for ≥ {ON_THE_PATH} of the packets), ns per packet | {} |", sums.join(" | "));
        let packets: Vec<String> = loads.iter().map(|l| l.packets.to_string()).collect();
        let _ = writeln!(s, "| packets | {} |", packets.join(" | "));
    }
}
