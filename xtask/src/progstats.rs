//! The kernel's own per-program statistics for the bench: `kernel.bpf_stats_enabled` on for the
//! run (restored after), the programs a tracer process holds found through its
//! `/proc/PID/fdinfo` (`prog_id`: tracer's own programs, never another tool's), and their
//! `run_cnt` / `run_time_ns` and names read with `BPF_PROG_GET_FD_BY_ID` +
//! `BPF_OBJ_GET_INFO_BY_FD`. These figures are CPU time spent inside each program, so they hardly
//! depend on how busy the machine is, unlike throughput.

use std::{
    collections::BTreeMap,
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::Context as _;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns `kernel.bpf_stats_enabled` on while alive; its drop writes the old value back. It also
/// holds a `BPF_ENABLE_STATS` descriptor (5.8+), the kernel's own reference on the statistics:
/// another run on a shared machine that writes the sysctl back to 0 while this one measures
/// (seen: a whole smoke run with every counter at 0) cannot turn them off under it.
pub(crate) struct StatsEnabled {
    old: String,
    _held: Option<OwnedFd>,
}

/// `BPF_ENABLE_STATS` and its one type, `BPF_STATS_RUN_TIME` (uapi linux/bpf.h).
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

impl StatsEnabled {
    pub(crate) fn on() -> anyhow::Result<Self> {
        let old = fs::read_to_string(STATS_SYSCTL).with_context(|| format!("reading {STATS_SYSCTL}"))?;
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("writing {STATS_SYSCTL}"))?;
        // union bpf_attr for ENABLE_STATS: type (u32).
        let mut attr = [BPF_STATS_RUN_TIME, 0];
        // SAFETY: bpf(2) reads size_of_val(&attr) bytes of attr.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_mut_ptr(), size_of_val(&attr)) };
        // SAFETY: on success, a new descriptor of our own.
        let held = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
        if held.is_none() {
            eprintln!("bench: BPF_ENABLE_STATS: {} (only the sysctl keeps the statistics on)", std::io::Error::last_os_error());
        }
        Ok(Self { old: old.trim().to_string(), _held: held })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(err) = fs::write(STATS_SYSCTL, &self.old) {
            eprintln!("bench: could not restore {STATS_SYSCTL} to {}: {err}", self.old);
        }
    }
}

/// One program's counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Every program of a process by name (programs of the same name, e.g. one per attachment,
/// added up).
pub(crate) type Snapshot = BTreeMap<String, Counters>;

/// The programs process `pid` holds open, with their counters now.
pub(crate) fn snapshot(pid: i32) -> anyhow::Result<Snapshot> {
    let mut ids: Vec<u32> = Vec::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?.flatten() {
        // A file descriptor closed meanwhile has no fdinfo any more: skipped.
        let Ok(text) = fs::read_to_string(entry.path()) else { continue };
        if let Some(id) = prog_id(&text)
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    let mut snap = Snapshot::new();
    for id in ids {
        // A program unloaded between the two reads is skipped.
        let Ok((name, c)) = prog_info(id) else { continue };
        let e = snap.entry(name).or_default();
        e.run_cnt += c.run_cnt;
        e.run_time_ns += c.run_time_ns;
    }
    Ok(snap)
}

/// The `prog_id:` of a BPF program's fdinfo text.
fn prog_id(fdinfo: &str) -> Option<u32> {
    fdinfo.lines().find_map(|l| l.strip_prefix("prog_id:")).and_then(|v| v.trim().parse().ok())
}

/// `b - a` per program (programs in `b` only count from zero).
pub(crate) fn delta(a: &Snapshot, b: &Snapshot) -> Snapshot {
    b.iter()
        .map(|(name, cb)| {
            let ca = a.get(name).copied().unwrap_or_default();
            (name.clone(), Counters { run_cnt: cb.run_cnt.saturating_sub(ca.run_cnt), run_time_ns: cb.run_time_ns.saturating_sub(ca.run_time_ns) })
        })
        .collect()
}

/// Adds `d` into `total`.
pub(crate) fn add(total: &mut Snapshot, d: &Snapshot) {
    for (name, c) in d {
        let e = total.entry(name.clone()).or_default();
        e.run_cnt += c.run_cnt;
        e.run_time_ns += c.run_time_ns;
    }
}

// The uAPI (linux/bpf.h): command numbers and the offsets in `struct bpf_prog_info` of the fields
// read here. This is the stable syscall ABI (fields are only ever appended), not a kernel-internal
// layout.
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const INFO_NAME: usize = 64;
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
const INFO_LEN: usize = 208;

/// Name and counters of program `id`.
fn prog_info(id: u32) -> anyhow::Result<(String, Counters)> {
    // union bpf_attr for GET_FD_BY_ID: prog_id (u32), next_id, open_flags.
    let mut attr = [0u32; 4];
    attr[0] = id;
    // SAFETY: bpf(2) reads size_of_val(&attr) bytes of attr.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_GET_FD_BY_ID, attr.as_mut_ptr(), size_of_val(&attr)) };
    anyhow::ensure!(fd >= 0, "BPF_PROG_GET_FD_BY_ID {id}: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor of our own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    prog_info_fd(fd.as_raw_fd())
}

/// Name and counters of the program behind `fd`.
fn prog_info_fd(fd: i32) -> anyhow::Result<(String, Counters)> {
    let mut info = [0u8; INFO_LEN];
    // union bpf_attr for OBJ_GET_INFO_BY_FD: bpf_fd (u32), info_len (u32), info (u64 pointer).
    let mut attr = [0u64; 2];
    attr[0] = u64::from(fd as u32) | ((INFO_LEN as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, attr.as_mut_ptr(), size_of_val(&attr)) };
    anyhow::ensure!(ret == 0, "BPF_OBJ_GET_INFO_BY_FD: {}", std::io::Error::last_os_error());
    let name = &info[INFO_NAME..INFO_NAME + 16];
    let name = String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(16)]).into_owned();
    let u64_at = |o: usize| u64::from_ne_bytes(info[o..o + 8].try_into().expect("8 bytes"));
    Ok((name, Counters { run_cnt: u64_at(INFO_RUN_CNT), run_time_ns: u64_at(INFO_RUN_TIME_NS) }))
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// The measurement's own floor: a classifier that does nothing (`r0 = -1` (TCX_NEXT); `exit`),
/// attached with TCX where tracer's classifiers are, so its ns per run, measured the same way in
/// the same run, is what the statistics charge any program (mostly the two clock reads around
/// it). Detached and unloaded on drop (its descriptors close).
pub(crate) struct EmptyClassifier {
    prog: OwnedFd,
    _links: Vec<OwnedFd>,
}

impl EmptyClassifier {
    /// Loads it and attaches it to ingress and egress of each (namespace, device).
    pub(crate) fn attach(ends: &[(String, String)]) -> anyhow::Result<Self> {
        // mov64 r0, -1; exit
        let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0])];
        let license = c"GPL";
        // union bpf_attr for PROG_LOAD: prog_type, insn_cnt, insns, license, log_level,
        // log_size, log_buf, kern_version, prog_flags, prog_name[16] (at byte 48).
        let mut attr = [0u8; 72];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SCHED_CLS.to_ne_bytes());
        attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[48..59].copy_from_slice(b"bench_empty");
        // SAFETY: bpf(2) reads the attr and the instructions and licence it points to.
        let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_mut_ptr(), attr.len()) };
        anyhow::ensure!(fd >= 0, "loading the empty classifier: {}", std::io::Error::last_os_error());
        // SAFETY: a new descriptor of our own.
        let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut links = Vec::new();
        for (ns, dev) in ends {
            for attach_type in [BPF_TCX_INGRESS, BPF_TCX_EGRESS] {
                let (prog_fd, dev) = (prog.as_raw_fd(), dev.clone());
                // The device's index is resolved in the calling thread's namespace.
                let link = crate::bench::in_netns(ns, move || link_tcx(prog_fd, &dev, attach_type))??;
                links.push(link);
            }
        }
        Ok(Self { prog, _links: links })
    }

    /// Its counters so far.
    pub(crate) fn counters(&self) -> anyhow::Result<Counters> {
        Ok(prog_info_fd(self.prog.as_raw_fd())?.1)
    }
}

/// A TCX link of `prog_fd` on `dev` of the calling thread's namespace.
fn link_tcx(prog_fd: i32, dev: &str, attach_type: u32) -> anyhow::Result<OwnedFd> {
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    anyhow::ensure!(ifindex != 0, "no device {dev}");
    // union bpf_attr for LINK_CREATE: prog_fd, target_ifindex, attach_type, flags, then tcx's
    // relative_fd and expected_revision: all zero.
    let mut attr = [0u32; 8];
    attr[0] = prog_fd as u32;
    attr[1] = ifindex;
    attr[2] = attach_type;
    // SAFETY: bpf(2) reads the attr.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, attr.as_mut_ptr(), size_of_val(&attr)) };
    anyhow::ensure!(fd >= 0, "TCX link on {dev}: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor of our own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Packets that crossed the lab's veth pair: what each end transmitted (every packet leaves
/// one end and enters the other, so each crosses one egress and one ingress hook).
pub(crate) fn veth_packets(ends: &[(&str, &str)]) -> anyhow::Result<u64> {
    let mut total = 0;
    for (ns, dev) in ends {
        let out = std::process::Command::new("ip").args(["-n", ns, "-s", "-j", "link", "show", "dev", dev]).output().context("ip -s link")?;
        anyhow::ensure!(out.status.success(), "ip -n {ns} -s link show dev {dev}: {}", String::from_utf8_lossy(&out.stderr).trim());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("ip -j output")?;
        total += v[0]["stats64"]["tx"]["packets"].as_u64().with_context(|| format!("tx packets of {dev} in {ns}"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prog_id_from_fdinfo() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2063\nprog_type:\t26\nprog_jited:\t1\nprog_tag:\tabc\nmemlock:\t4096\nprog_id:\t917\nrun_time_ns:\t0\n";
        assert_eq!(prog_id(text), Some(917));
        assert_eq!(prog_id("pos:\t0\nmap_id:\t3\n"), None);
    }

    #[test]
    fn delta_and_add() {
        let a: Snapshot = [("p".to_string(), Counters { run_cnt: 10, run_time_ns: 100 })].into();
        let b: Snapshot =
            [("p".to_string(), Counters { run_cnt: 15, run_time_ns: 160 }), ("q".to_string(), Counters { run_cnt: 1, run_time_ns: 9 })].into();
        let d = delta(&a, &b);
        assert_eq!(d["p"], Counters { run_cnt: 5, run_time_ns: 60 });
        assert_eq!(d["q"], Counters { run_cnt: 1, run_time_ns: 9 });
        let mut t = Snapshot::new();
        add(&mut t, &d);
        add(&mut t, &d);
        assert_eq!(t["p"], Counters { run_cnt: 10, run_time_ns: 120 });
    }
}
