//! `cargo xtask bench`'s recordings section (issue 22 item 7): `tracer diagnose --from` over two
//! nodes' recordings totalling 1,000,000 events (100,000 with `--smoke`), pinned to one core:
//! events/s (target ≥ 500,000) and peak resident memory. The recordings are made here, as
//! `watch -o json` writes them: drops at a firewall rule, NAT connections without reply,
//! retransmits and failed connects over a few thousand flows, then each node's `recording`
//! record and facts. Apart from bench.rs, which another section's author changes too.

use std::{
    fmt::Write as _,
    fs,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, ensure};

/// What was measured.
#[derive(Default)]
pub(crate) struct RecordingsBench {
    pub events: u64,
    pub bytes: u64,
    pub secs: f64,
    pub max_rss_kib: u64,
    /// CPU time it used (user + system): the machine's two cores are shared with other work,
    /// so the wall time may include waiting for the core.
    pub cpu_secs: f64,
    pub findings: usize,
}

impl RecordingsBench {
    /// Events per second of CPU time (the core's rate, not the machine's load).
    pub(crate) fn rate(&self) -> f64 {
        if self.cpu_secs > 0.0 { self.events as f64 / self.cpu_secs } else { 0.0 }
    }

    /// Its section of the report.
    pub(crate) fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n### `diagnose --from`: reading recordings (one core)\n");
        let _ = writeln!(s, "| recordings | events | size | wall | CPU | events/s (CPU) | target | peak RSS | findings |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        let rate = self.rate();
        let _ = writeln!(
            s,
            "| 2 nodes | {} | {:.0} MB | {:.2} s | {:.2} s | {:.0} | ≥ 500,000 ({}) | {:.0} MB | {} |",
            self.events,
            self.bytes as f64 / 1e6,
            self.secs,
            self.cpu_secs,
            rate,
            if rate >= 500_000.0 { "met" } else { "missed" },
            self.max_rss_kib as f64 / 1024.0,
            self.findings
        );
        s
    }

    /// The smoke run's checks: it ran, read every event and found the faults.
    pub(crate) fn check(&self) -> anyhow::Result<()> {
        ensure!(self.secs > 0.0 && self.max_rss_kib > 0, "diagnose --from was not measured");
        ensure!(self.findings > 0, "diagnose --from found nothing in the generated recordings");
        Ok(())
    }
}

/// Writes the recordings under target/, runs `taskset -c 0 tracer diagnose --from A --from B
/// -o json` and measures it.
pub(crate) fn run(workspace: &Path, tracer: &Path, smoke: bool) -> anyhow::Result<RecordingsBench> {
    let total: u64 = if smoke { 100_000 } else { 1_000_000 };
    let dir = workspace.join("target/bench-recordings");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let files: Vec<PathBuf> = ["node-a", "node-b"].iter().map(|n| dir.join(format!("{n}.jsonl"))).collect();
    let mut bytes = 0;
    for (i, file) in files.iter().enumerate() {
        bytes += write_recording(file, &format!("node-{}", ["a", "b"][i]), i as u64, total / 2)?;
    }
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(tracer).arg("diagnose");
    for f in &files {
        cmd.arg("--from").arg(f);
    }
    cmd.args(["-o", "json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
    let cpu_before = children_cpu_secs();
    let started = Instant::now();
    let mut child = cmd.spawn().context("running taskset -c 0 tracer diagnose --from")?;
    // Its high-water mark (VmHWM), read while it runs: the kernel keeps the peak, so the last
    // reading before it exits is its peak but for what it grows in its last 5 ms (it frees then).
    let status = format!("/proc/{}/status", child.id());
    let mut stdout = child.stdout.take().context("stdout")?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let mut max_rss_kib = 0;
    while child.try_wait()?.is_none() {
        if let Some(kib) = fs::read_to_string(&status).ok().and_then(|s| hwm_kib(&s)) {
            max_rss_kib = kib;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output().context("waiting for tracer diagnose --from")?;
    let secs = started.elapsed().as_secs_f64();
    let cpu_secs = children_cpu_secs() - cpu_before;
    let stdout = reader.join().unwrap_or_default();
    ensure!(out.status.success(), "tracer diagnose --from failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&stdout).context("diagnose --from printed no JSON object")?;
    let findings = report["findings"].as_array().map_or(0, Vec::len);
    let bench = RecordingsBench { events: total, bytes, secs, max_rss_kib, cpu_secs, findings };
    if std::env::var_os("TRACER_BENCH_KEEP").is_none() {
        for f in &files {
            let _ = fs::remove_file(f);
        }
    }
    Ok(bench)
}

/// User + system time of every waited-for child so far (getrusage(RUSAGE_CHILDREN)).
fn children_cpu_secs() -> f64 {
    // SAFETY: rusage is plain data, and getrusage writes it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// `VmHWM:  123456 kB` of /proc/PID/status.
fn hwm_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().trim_end_matches("kB").trim().parse().ok()
}

/// One node's recording of `events` events: a NETFILTER_DROP storm between pods, NAT connections
/// without reply to a Service, retransmits; then its `recording` record and facts. Returns its size.
fn write_recording(path: &Path, node: &str, seed: u64, events: u64) -> anyhow::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path).with_context(|| format!("creating {}", path.display()))?);
    let start_s: u64 = 1_795_314_600; // 2026-11-22T02:30:00Z
    let netns = 4_026_532_300 + seed;
    for i in 0..events {
        let ns = i * 10_000; // 10 µs apart
        let ts = format!("2026-11-22T02:{:02}:{:02}.{:09}Z", 30 + ns / 60_000_000_000, (ns / 1_000_000_000) % 60, ns % 1_000_000_000);
        let flow = i % 4000;
        let (a, b) = (flow % 250 + 2, (flow * 7) % 250 + 2);
        let sport = 30000 + flow;
        match i % 10 {
            0 => writeln!(
                out,
                r#"{{"ts":"{ts}","kind":"nat","proto":"tcp","src":"10.244.{seed}.{a}:{sport}","dst":"10.96.0.10:80","src_pod":"shop/client-{a}","dst_pod":null,"netns":{netns},"netns_pod":null,"ifname":"eth0","ifindex":2,"node":"{node}","nat":"dnat","orig_src":"10.244.{seed}.{a}:{sport}","orig_dst":"10.96.0.10:80","reply_src":"10.244.9.{b}:8080","reply_dst":"10.244.{seed}.{a}:{sport}","reply_seen":false,"assured":false,"state":"no_reply","backend":"10.244.9.{b}:8080","backend_pod":"shop/web-{b}","service":"shop/web","conn":{i}}}"#
            )?,
            1 => writeln!(
                out,
                r#"{{"ts":"{ts}","kind":"retransmit","proto":"tcp","src":"10.244.{seed}.{a}:{sport}","dst":"10.96.0.10:80","src_pod":"shop/client-{a}","dst_pod":null,"netns":{},"netns_pod":"shop/client-{a}","ifname":null,"ifindex":null,"node":"{node}","state":"SYN_SENT","count":{}}}"#,
                netns + 1000 + flow % 50,
                i / 4000 + 1
            )?,
            _ => writeln!(
                out,
                r#"{{"ts":"{ts}","kind":"drop","proto":"udp","src":"10.244.{seed}.{a}:{sport}","dst":"10.244.{seed}.{b}:5432","src_pod":"shop/client-{a}","dst_pod":"shop/db-{b}","netns":{},"netns_pod":"shop/db-{b}","ifname":"eth0","ifindex":3,"node":"{node}","reason":"NETFILTER_DROP","reason_code":8,"location":"nf_hook_slow+0x9c","len":128,"packet_ct":"confirmed"}}"#,
                netns + 2000 + b
            )?,
        }
    }
    let end_s = start_s + events * 10_000 / 1_000_000_000 + 1;
    writeln!(
        out,
        r#"{{"kind":"recording","version":1,"node":"{node}","start":"2026-11-22T02:30:00.000000000Z","end":"{}","start_boot_ns":1000000000,"duration_s":{},"events":{events},"lost":0,"beyond_limit":0,"reply_timeout_ms":3000,"probes":{{"drops":"tp_btf/kfree_skb","tcp":"tp_btf","nat":"tp_btf/net_dev_start_xmit","mtu":"tp_btf/icmp_send"}},"missing_probes":[],"mtu_mismatches":[]}}"#,
        rfc3339_s(end_s),
        end_s - start_s
    )?;
    writeln!(out, r#"{{"kind":"fact","node":"{node}","fact":"services_known","value":true}}"#)?;
    writeln!(out, r#"{{"kind":"fact","node":"{node}","fact":"service","ip":"10.96.0.10","port":80,"proto":6,"value":"shop/web"}}"#)?;
    out.flush()?;
    Ok(fs::metadata(path)?.len())
}

/// `2026-11-22T02:MM:SSZ` for a second of that hour (the generated recordings' span).
fn rfc3339_s(unix_s: u64) -> String {
    let into = unix_s - 1_795_312_800; // 2026-11-22T02:00:00Z
    format!("2026-11-22T{:02}:{:02}:{:02}.000000000Z", 2 + into / 3600, (into / 60) % 60, into % 60)
}
