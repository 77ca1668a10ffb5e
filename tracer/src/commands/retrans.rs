//! `tracer retrans`: TCP retransmits, resets and failed connects, streamed or (`--top`) as a
//! refreshing per-flow table counted in the kernel.

use std::{
    io::{IsTerminal as _, Write as _},
    net::IpAddr,
    time::Duration,
};

use anyhow::Context as _;
use aya::Ebpf;
use serde::Serialize;
use tokio::time::{interval, sleep_until};
use tracer_common::{
    event::kind,
    flow::{FAMILY_IPV4, FAMILY_IPV6},
    tcp::{FlowKey, FlowStats},
};

use crate::{
    cli::{OutputFormat, config::RetransCommandConfig},
    events::{Clock, rfc3339},
    loader, output,
    pods::{layer::PodLayer, now_unix_ns},
    probes::{CommandId, FamilyId, FamilyOptions, families_of, tcp, tcp::detail::tcp_state_name},
    runner::{self, Ring},
    session::Session,
};

pub(crate) async fn run(config: RetransCommandConfig) -> anyhow::Result<()> {
    let options = FamilyOptions { tcp: tcp::Options { stream_retransmits: config.top.is_none() }, ..FamilyOptions::default() };
    let mut session = Session::start(CommandId::Retrans, families_of(CommandId::Retrans.families(), &options), &config.trace, false).await?;
    let clock = Clock::new();
    match config.top {
        Some(every) => {
            // Retransmits were summarised in the kernel's flow map, not sent: all of them count
            // as delivered (the snapshots show them).
            let parts = session.parts();
            let ebpf = parts.decoders.ebpf().context("retrans --top: no loaded object")?;
            let read = top(parts.ring, ebpf, &config, parts.pods, clock, every).await?;
            let retransmits = loader::read_counts(session.ebpf(), kind::RETRANSMIT)?.matched;
            session.add_read(FamilyId::Tcp, read + retransmits);
            session.stop()?;
        }
        None => {
            let mut sink = output::stdout_sink(config.trace.output);
            let delivered = session.run(config.trace.stop(), sink.as_mut()).await?;
            if config.trace.duration.is_some() && !delivered.output_closed {
                let flows = flow_rows(&tcp::read_flows(session.ebpf())?, &session.pods, clock);
                let table = text_snapshot(&format!("summary {}", rfc3339(now_unix_ns())), &flows);
                match config.trace.output {
                    // stdout stays JSON Lines.
                    OutputFormat::Json => eprint!("{table}"),
                    OutputFormat::Table => print_out(&table)?,
                }
            }
            let selection = session.pods.selection().to_string();
            session.stop()?;
            delivered.report(&selection);
        }
    }
    Ok(())
}

/// One flow of the per-flow table.
#[derive(Debug, Clone, Serialize)]
struct FlowRow {
    src: String,
    dst: String,
    src_pod: Option<String>,
    dst_pod: Option<String>,
    retransmits: u64,
    resets: u64,
    connect_fails: u64,
    state: Option<&'static str>,
    last_seen: String,
}

fn endpoint(family: u8, addr: &[u8; 16], port: u16) -> Option<(IpAddr, String)> {
    let ip = match family {
        FAMILY_IPV4 => IpAddr::from([addr[0], addr[1], addr[2], addr[3]]),
        FAMILY_IPV6 => IpAddr::from(*addr),
        _ => return None,
    };
    let text = match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    Some((ip, text))
}

/// The kernel's flows, named and filtered by the pod layer, most retransmits first.
fn flow_rows(flows: &[(FlowKey, FlowStats)], pods: &PodLayer, clock: Clock) -> Vec<FlowRow> {
    let mut rows: Vec<FlowRow> = flows
        .iter()
        .filter_map(|(key, stats)| {
            let (src_ip, src) = endpoint(key.family, &key.saddr, key.sport)?;
            let (dst_ip, dst) = endpoint(key.family, &key.daddr, key.dport)?;
            let last = clock.to_unix_ns(stats.last_ns);
            let names = pods.names(Some(src_ip), Some(dst_ip), (key.netns != 0).then_some(key.netns), last);
            names.selected.then(|| FlowRow {
                src,
                dst,
                src_pod: names.src,
                dst_pod: names.dst,
                retransmits: stats.retransmits,
                resets: stats.resets,
                connect_fails: stats.connect_fails,
                state: tcp_state_name(stats.state),
                last_seen: rfc3339(last),
            })
        })
        .collect();
    rows.sort_by(|a, b| b.retransmits.cmp(&a.retransmits).then(b.resets.cmp(&a.resets)).then(a.src.cmp(&b.src)));
    rows
}

/// `=== TITLE  N flows`, a header, one row per flow (8 whitespace-separated columns, `-` for
/// nothing) so that scripts can read it too.
fn text_snapshot(title: &str, rows: &[FlowRow]) -> String {
    let mut out = format!("=== {title}  {} flows\n", rows.len());
    out.push_str(&format!(
        "{:<40} {:<40} {:<24} {:<24} {:>8} {:>7}  {:<12} {}\n",
        "SOURCE", "DESTINATION", "SRC_POD", "DST_POD", "RETRANS", "RESETS", "STATE", "LAST_SEEN"
    ));
    for r in rows {
        let time = r.last_seen.get(11..23).unwrap_or(&r.last_seen);
        out.push_str(&format!(
            "{:<40} {:<40} {:<24} {:<24} {:>8} {:>7}  {:<12} {time}\n",
            r.src,
            r.dst,
            r.src_pod.as_deref().unwrap_or("-"),
            r.dst_pod.as_deref().unwrap_or("-"),
            r.retransmits,
            r.resets,
            r.state.unwrap_or("-"),
        ));
    }
    out
}

#[derive(Serialize)]
struct JsonSnapshot<'a> {
    snapshot: String,
    /// CONTRACT `node`: the node whose flows these are.
    node: Option<&'a str>,
    #[serde(rename = "final")]
    is_final: bool,
    flows: &'a [FlowRow],
}

fn print_out(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// The `--top` loop: a snapshot of the kernel's flow map every `every`, a last one at the end.
/// Records in the ring buffer (resets, failed connects) are drained and counted, not printed:
/// the map has them.
async fn top(ring: &mut Ring, ebpf: &Ebpf, config: &RetransCommandConfig, pods: &mut PodLayer, clock: Clock, every: Duration) -> anyhow::Result<u64> {
    let runner::Waits { mut sigint, mut sigterm, deadline } = runner::waits(config.trace.duration)?;
    let mut tick = interval(every);
    tick.tick().await;
    let tty = config.trace.output == OutputFormat::Table && std::io::stdout().is_terminal();
    let mut read = 0u64;
    let show = |ebpf: &Ebpf, pods: &PodLayer, is_final: bool| -> anyhow::Result<bool> {
        let rows = flow_rows(&tcp::read_flows(ebpf)?, pods, clock);
        let now = rfc3339(now_unix_ns());
        let text = match config.trace.output {
            OutputFormat::Json => {
                let mut line = serde_json::to_string(&JsonSnapshot { snapshot: now, node: pods.node(), is_final, flows: &rows })?;
                line.push('\n');
                line
            }
            OutputFormat::Table => {
                let title = if is_final { format!("summary {now}") } else { now };
                let table = text_snapshot(&title, &rows);
                // Redraw in place on a terminal; plain snapshots one after another otherwise.
                if tty && !is_final { format!("\x1b[H\x1b[2J{table}") } else { table }
            }
        };
        match print_out(&text) {
            Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
            other => other.map(|()| true).context("writing output"),
        }
    };
    let mut open = true;
    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting for the ring buffer")?;
                let inner = guard.get_inner_mut();
                while inner.next().is_some() {
                    read += 1;
                }
                guard.clear_ready();
            }
            msg = pods.recv() => {
                if let Some(msg) = msg {
                    pods.apply(msg)?;
                }
            }
            _ = tick.tick() => {
                if !show(ebpf, pods, false)? {
                    open = false;
                    break;
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sleep_until(deadline) => break,
        }
    }
    let inner = ring.get_mut();
    while inner.next().is_some() {
        read += 1;
    }
    if open {
        show(ebpf, pods, true)?;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_rows_have_eight_columns() {
        let rows = vec![FlowRow {
            src: "10.0.0.1:40000".into(),
            dst: "10.0.0.2:80".into(),
            src_pod: Some("shop/web-0".into()),
            dst_pod: None,
            retransmits: 12,
            resets: 0,
            connect_fails: 0,
            state: Some("SYN_SENT"),
            last_seen: "2026-11-22T02:30:01.123456789Z".into(),
        }];
        let text = text_snapshot("2026-11-22T02:30:02.000000000Z", &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "=== 2026-11-22T02:30:02.000000000Z  1 flows");
        assert!(lines[1].starts_with("SOURCE"));
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cols, ["10.0.0.1:40000", "10.0.0.2:80", "shop/web-0", "-", "12", "0", "SYN_SENT", "02:30:01.123"]);
    }
}
