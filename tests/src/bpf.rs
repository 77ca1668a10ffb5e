//! What BPF the kernel holds, read with bpftool and /proc: programs and links, the programs a
//! process holds open, and the check that a tracer leaves none behind however it ends
//! ([`assert_nothing_left_after`]).

use std::{collections::BTreeSet, fs, path::PathBuf, thread, time::Duration};

use crate::{Tracer, Value, cmd_ok_retrying, parse_summary};

/// A loaded BPF program.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BpfProg {
    pub id: u64,
    pub name: String,
    pub kind: String,
}

/// A BPF link.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BpfLink {
    pub id: u64,
    pub prog_id: u64,
    pub kind: String,
}

/// How often a listing that raced an object going away is tried again.
const LISTING_TRIES: usize = 5;

/// `bpftool -j ARGS` (a listing: a JSON array), each element read by `item`.
///
/// bpftool walks ids and then opens each: an object freed in between (a tracer that is exiting,
/// which is what the clean-up checks wait for) fails the whole listing with "can't get ... by
/// id ...: Resource temporarily unavailable" (or ENOENT). That is a race of the listing, not a
/// leftover, so it is listed again, a bounded number of times; any other failure fails at once.
fn bpftool_list<T>(args: &[&str], item: impl Fn(&Value) -> T) -> Vec<T> {
    let mut v = vec!["bpftool", "-j"];
    v.extend_from_slice(args);
    let out = cmd_ok_retrying(&v, LISTING_TRIES, |out| String::from_utf8_lossy(&out.stdout).contains("by id"));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?}: bad JSON: {e}"));
    json.as_array().map(|a| a.iter().map(item).collect()).unwrap_or_default()
}

/// `bpftool prog show`.
pub fn bpf_progs() -> Vec<BpfProg> {
    bpftool_list(&["prog", "show"], |p| BpfProg {
        id: p["id"].as_u64().unwrap_or(0),
        name: p["name"].as_str().unwrap_or("").to_string(),
        kind: p["type"].as_str().unwrap_or("").to_string(),
    })
}

/// `bpftool link show`.
pub fn bpf_links() -> Vec<BpfLink> {
    bpftool_list(&["link", "show"], |l| BpfLink {
        id: l["id"].as_u64().unwrap_or(0),
        prog_id: l["prog_id"].as_u64().unwrap_or(0),
        kind: l["type"].as_str().unwrap_or("").to_string(),
    })
}

/// Programs whose name starts with any of `prefixes`.
pub fn bpf_progs_named(prefixes: &[&str]) -> Vec<BpfProg> {
    bpf_progs().into_iter().filter(|p| prefixes.iter().any(|x| p.name.starts_with(x))).collect()
}

/// Ids of the BPF programs process `pid` holds open (program and link file descriptors name
/// them as `prog_id:` in /proc/PID/fdinfo). Empty once the process is gone.
pub fn bpf_prog_ids_of_pid(pid: i32) -> BTreeSet<u64> {
    let dir = PathBuf::from(format!("/proc/{pid}/fdinfo"));
    let Ok(entries) = fs::read_dir(&dir) else { return BTreeSet::new() };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| fs::read_to_string(e.path()).ok())
        .flat_map(|info| info.lines().filter_map(|l| l.strip_prefix("prog_id:").and_then(|v| v.trim().parse::<u64>().ok())).collect::<Vec<_>>())
        .collect()
}

/// Polls (bounded: 5 s, since the kernel frees programs deferred) until no program among `ids`
/// is loaded and no link points at one of them; otherwise says what is left.
pub fn wait_bpf_released(ids: &BTreeSet<u64>) -> Result<(), String> {
    let mut left = String::new();
    for _ in 0..50 {
        let progs: BTreeSet<u64> = bpf_progs().into_iter().map(|p| p.id).filter(|id| ids.contains(id)).collect();
        let links: Vec<BpfLink> = bpf_links().into_iter().filter(|l| ids.contains(&l.prog_id)).collect();
        if progs.is_empty() && links.is_empty() {
            return Ok(());
        }
        left = format!("programs {progs:?}, links {links:?}");
        thread::sleep(Duration::from_millis(100));
    }
    Err(left)
}

/// For each case (extra arguments, and how the run ends: `SIGINT`, `SIGTERM`, `--duration`
/// (the case's arguments must contain one) or `SIGKILL`): starts `tracer PROBE BASE... EXTRA...`,
/// checks that it attached `PROBE` with at least one program and one link, ends it, checks exit 0
/// and the `tracer: PROBE: N seen, N delivered, N lost` line (except after SIGKILL), and that
/// every program it held and every link to them is gone ([`wait_bpf_released`]).
///
/// Each run has an empty `PATH`, as in the shipped image (`/tracer` and nothing else): tracer
/// must clean up without any tool (on kernels without TCX, mtu's clsact qdisc goes through
/// netlink, never `tc`); the mtu test then checks that no qdisc is left.
pub fn assert_nothing_left_after(probe: &str, base: &[&str], cases: &[(&[&str], &str)]) {
    for (extra, end) in cases {
        let what = format!("{probe} {extra:?}, ended by {end}");
        let mut args = vec![probe];
        args.extend_from_slice(base);
        args.extend_from_slice(extra);
        let t = Tracer::start_env(&args, &[("PATH", "")]);
        let attached = format!("attached {probe}");
        assert!(t.attached_lines().join("\n").contains(&attached), "{what}: no `{attached}` line: {}", t.stderr());
        let ids = bpf_prog_ids_of_pid(t.pid());
        assert!(!ids.is_empty(), "{what}: the attached tracer holds no BPF program");
        let links: Vec<BpfLink> = bpf_links().into_iter().filter(|l| ids.contains(&l.prog_id)).collect();
        assert!(!links.is_empty(), "{what}: no link attaches the programs {ids:?}");
        let run = match *end {
            "SIGINT" => t.stop_with(libc::SIGINT),
            "SIGTERM" => t.stop_with(libc::SIGTERM),
            "--duration" => t.wait_exit(Duration::from_secs(15)),
            "SIGKILL" => t.stop_with(libc::SIGKILL),
            other => panic!("{what}: unknown way to end a run: {other}"),
        };
        if *end == "SIGKILL" {
            assert!(run.status.code().is_none(), "{what}: expected death by SIGKILL");
        } else {
            run.assert_code(0);
            assert!(parse_summary(&run.stderr, probe).is_some(), "{what}: no `tracer: {probe}: N seen, N delivered, N lost` line:\n{}", run.stderr);
        }
        if let Err(left) = wait_bpf_released(&ids) {
            panic!("{what}: left behind after exit: {left}");
        }
    }
}
