//! What this kernel and this process can do: privileges, program and map types, hooks.
//! `tracer check` prints these; probes use them to choose a hook (Retis' `can_run`).

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

/// A capability tracer may need, by its number in linux/capability.h.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capability {
    NetAdmin = 12,
    SysPtrace = 19,
    SysAdmin = 21,
    SysResource = 24,
    Syslog = 34,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    /// `CAP_BPF`, as the kernel and capsh name it.
    pub(crate) fn cap_name(self) -> String {
        format!("CAP_{}", self.k8s_name())
    }

    /// `BPF`, as a Kubernetes securityContext names it.
    pub(crate) fn k8s_name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "NET_ADMIN",
            Capability::SysPtrace => "SYS_PTRACE",
            Capability::SysAdmin => "SYS_ADMIN",
            Capability::SysResource => "SYS_RESOURCE",
            Capability::Syslog => "SYSLOG",
            Capability::Perfmon => "PERFMON",
            Capability::Bpf => "BPF",
        }
    }

    fn held(self, caps: u64) -> bool {
        caps & (1u64 << self as u32) != 0
    }
}

/// One capability a command needs, and why. Measured on 6.18 by running each command with one
/// capability taken away (README, "Capabilities").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Need {
    pub cap: Capability,
    pub why: &'static str,
    /// Without it the command cannot start (the kernel refuses a load or an attach). The others
    /// only cost part of the output, which a warning names.
    pub essential: bool,
}

const fn need(cap: Capability, why: &'static str, essential: bool) -> Need {
    Need { cap, why, essential }
}

pub(crate) const BPF: Need = need(Capability::Bpf, "load eBPF programs and create maps", true);
pub(crate) const PERFMON: Need = need(Capability::Perfmon, "load tracing programs (tracepoints, BTF tracepoints), which read kernel memory", true);
pub(crate) const NET_ADMIN: Need = need(
    Capability::NetAdmin,
    "load and attach the MTU probe's tc/TCX programs; read the firewall rules of a namespace (nftables dump, iptables getsockopt)",
    true,
);
pub(crate) const SYS_PTRACE: Need = need(
    Capability::SysPtrace,
    "find network namespaces through other processes' /proc/PID/ns/net (pods' namespaces, their conntrack counters)",
    false,
);
pub(crate) const SYSLOG: Need = need(Capability::Syslog, "read kernel addresses in /proc/kallsyms to name drop locations", false);
pub(crate) const SETNS: Need =
    need(Capability::SysAdmin, "setns(2) into other network namespaces (conntrack end events, sysctls, firewall rules)", false);
pub(crate) const SETNS_IFACE: Need = need(Capability::SysAdmin, "setns(2) into the namespace of an --iface NETNS:DEV to attach there", true);
/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones ignore it.
const MEMLOCK: Need = need(Capability::SysResource, "raise RLIMIT_MEMLOCK, which this kernel (before 5.11) charges BPF maps to", true);
/// Before 5.8 there is no CAP_BPF or CAP_PERFMON: loading anything takes CAP_SYS_ADMIN.
const OLD_KERNEL_ADMIN: Need = need(Capability::SysAdmin, "load eBPF programs: this kernel has no CAP_BPF/CAP_PERFMON (before 5.8)", true);

/// The order capabilities are listed in (error messages, a Job's securityContext): what every
/// tracing command needs first, then what only some do.
pub(crate) fn listing_rank(cap: Capability) -> u8 {
    match cap {
        Capability::Bpf => 0,
        Capability::Perfmon => 1,
        Capability::NetAdmin => 2,
        Capability::SysPtrace => 3,
        Capability::Syslog => 4,
        Capability::SysAdmin => 5,
        Capability::SysResource => 6,
    }
}

/// What of the running kernel decides which capabilities stand in for which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kernel {
    /// /proc/sys/kernel/cap_last_cap: 39 and up means CAP_BPF exists (5.8+).
    pub last_cap: u32,
    /// BPF memory is charged to RLIMIT_MEMLOCK (before 5.11) and the limit is not infinite.
    pub memlock_limited: bool,
    /// /proc/kallsyms hides addresses from a reader without CAP_SYSLOG (kptr_restrict 1, or 0
    /// with perf_event_paranoid above 1); with kptr_restrict 2 nothing shows them.
    pub kallsyms_needs_syslog: bool,
}

impl Kernel {
    /// The running kernel.
    pub(crate) fn running() -> Self {
        let sysctl = |name: &str| -> Option<i64> { std::fs::read_to_string(format!("/proc/sys/kernel/{name}")).ok()?.trim().parse().ok() };
        let before_5_11 = super::version().is_some_and(|v| v < (5, 11));
        let mut rlim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own.
        let infinite = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rlim) } == 0 && rlim.rlim_cur == libc::RLIM_INFINITY;
        let kallsyms_needs_syslog = match sysctl("kptr_restrict") {
            Some(0) => sysctl("perf_event_paranoid").is_none_or(|p| p > 1),
            Some(1) => true,
            _ => false,
        };
        Kernel { last_cap: sysctl("cap_last_cap").map_or(40, |c| c as u32), memlock_limited: before_5_11 && !infinite, kallsyms_needs_syslog }
    }
}

/// `needs` adapted to `kernel`, with the capability each is met by.
fn needs_on(needs: &[Need], kernel: Kernel) -> Vec<Need> {
    let has_bpf_caps = kernel.last_cap >= Capability::Bpf as u32;
    let mut out: Vec<Need> = Vec::new();
    for need in needs {
        let need = match need.cap {
            Capability::Bpf | Capability::Perfmon if !has_bpf_caps => OLD_KERNEL_ADMIN,
            Capability::Syslog if !kernel.kallsyms_needs_syslog => continue,
            _ => *need,
        };
        // One line per capability: an essential reason outranks a degrading one.
        match out.iter_mut().find(|n| n.cap == need.cap) {
            Some(known) if need.essential && !known.essential => *known = need,
            Some(_) => {}
            None => out.push(need),
        }
    }
    if kernel.memlock_limited {
        out.push(MEMLOCK);
    }
    out
}

/// The needs of `needs` that `caps` (an effective set) does not meet, on `kernel`. The kernel's
/// bpf_capable() and perfmon_capable() accept CAP_SYS_ADMIN for CAP_BPF and CAP_PERFMON.
pub(crate) fn missing(needs: &[Need], caps: u64, kernel: Kernel) -> Vec<Need> {
    let admin = Capability::SysAdmin.held(caps);
    needs_on(needs, kernel).into_iter().filter(|n| !(n.cap.held(caps) || (admin && matches!(n.cap, Capability::Bpf | Capability::Perfmon)))).collect()
}

/// A command started without a capability it cannot work without.
#[derive(Debug, thiserror::Error)]
#[error("{}", missing_message(.command, .missing))]
pub(crate) struct MissingCapabilities {
    pub command: String,
    pub missing: Vec<Need>,
}

fn missing_message(command: &str, missing: &[Need]) -> String {
    let each: Vec<String> = missing.iter().map(|n| format!("{} ({})", n.cap.cap_name(), n.why)).collect();
    let names: Vec<&str> = missing.iter().map(|n| n.cap.k8s_name()).collect();
    let them = if missing.len() == 1 { "it" } else { "them" };
    format!(
        "tracer {command} needs {}, missing from this process's effective capabilities; add {them} to the container's securityContext (capabilities.add: [{}]), or run tracer as root",
        each.join(" and "),
        names.join(", ")
    )
}

/// Checks this process's effective capabilities against what `command` needs (`needs`): an
/// error naming every essential capability missing, else one warning line per missing
/// capability that only costs part of the output.
pub(crate) fn check_capabilities(command: &str, needs: &[Need]) -> Result<(), MissingCapabilities> {
    let missing = missing(needs, effective_caps(), Kernel::running());
    let (essential, optional): (Vec<Need>, Vec<Need>) = missing.into_iter().partition(|n| n.essential);
    if !essential.is_empty() {
        return Err(MissingCapabilities { command: command.to_string(), missing: essential });
    }
    for n in optional {
        log::warn!(
            "{} is missing from this process's effective capabilities: cannot {}; add {} to the container's capabilities for that",
            n.cap.cap_name(),
            n.why,
            n.cap.k8s_name()
        );
    }
    Ok(())
}

/// The effective capabilities of this process, from /proc/self/status.
pub(crate) fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()))
        .unwrap_or(0)
}

/// Why this process cannot run `command`, whose needs are `needs`, if it cannot (`tracer check`
/// asks for `drops`).
pub(crate) fn missing_privileges(command: &str, needs: &[Need], caps: u64) -> Option<String> {
    let essential: Vec<Need> = missing(needs, caps, Kernel::running()).into_iter().filter(|n| n.essential).collect();
    (!essential.is_empty()).then(|| MissingCapabilities { command: command.into(), missing: essential }.to_string())
}

/// One capability of the kernel, as `tracer check` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Feature {
    pub name: String,
    pub available: bool,
    pub detail: String,
}

impl Feature {
    fn new(name: &str, available: bool, detail: impl Into<String>) -> Self {
        Self { name: name.into(), available, detail: detail.into() }
    }
}

fn probe_program(name: &str, ty: ProgramType) -> Feature {
    match is_program_supported(ty) {
        Ok(ok) => Feature::new(name, ok, if ok { "loads" } else { "not supported by this kernel" }),
        Err(err) => Feature::new(name, false, format!("probe failed: {err}")),
    }
}

/// Program and map types tracer uses or may use, probed by loading trivial programs (aya's
/// probes). Hooks (kprobe, fentry, tp_btf, tracepoint, TCX) are probed by attaching, in
/// [`super::hooks`].
pub(crate) fn probe_bpf() -> Vec<Feature> {
    vec![
        probe_program("program: raw tracepoint", ProgramType::RawTracePoint),
        probe_program("program: tc classifier", ProgramType::SchedClassifier),
        match is_map_supported(MapType::RingBuf) {
            Ok(ok) => Feature::new("map: ring buffer", ok, if ok { "supported (>= 5.8)" } else { "not supported (< 5.8)" }),
            Err(err) => Feature::new("map: ring buffer", false, format!("probe failed: {err}")),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: Kernel = Kernel { last_cap: 40, memlock_limited: false, kallsyms_needs_syslog: true };
    const fn bits(caps: &[Capability]) -> u64 {
        let mut b = 0;
        let mut i = 0;
        while i < caps.len() {
            b |= 1 << caps[i] as u32;
            i += 1;
        }
        b
    }
    use Capability::*;

    fn names(needs: &[Need]) -> Vec<&'static str> {
        needs.iter().map(|n| n.cap.k8s_name()).collect()
    }

    // What `drops` and `mtu` need (their families' lists, probes/mod.rs).
    const DROPS: [Need; 4] = [BPF, PERFMON, SYS_PTRACE, SYSLOG];
    const MTU: [Need; 4] = [BPF, PERFMON, NET_ADMIN, SYS_PTRACE];

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_but_not_net_admin() {
        let needs = MTU;
        assert!(missing(&needs, bits(&[SysAdmin, NetAdmin, SysPtrace]), NEW).is_empty());
        assert_eq!(names(&missing(&needs, bits(&[SysAdmin, SysPtrace]), NEW)), ["NET_ADMIN"]);
        assert_eq!(names(&missing(&needs, bits(&[Bpf, NetAdmin, SysPtrace]), NEW)), ["PERFMON"]);
    }

    #[test]
    fn old_kernels_need_sys_admin_and_memlock() {
        let needs = DROPS;
        let old = Kernel { last_cap: 37, memlock_limited: true, kallsyms_needs_syslog: false };
        let m = missing(&needs, bits(&[Bpf, Perfmon, SysPtrace]), old);
        assert_eq!(names(&m), ["SYS_ADMIN", "SYS_RESOURCE"]);
        assert!(m.iter().all(|n| n.essential));
        assert!(m[0].why.contains("before 5.8"), "{m:?}");
        assert!(missing(&needs, bits(&[SysAdmin, SysResource, SysPtrace]), old).is_empty());
    }

    #[test]
    fn syslog_only_where_kallsyms_hides_addresses() {
        let needs = DROPS;
        let open = Kernel { kallsyms_needs_syslog: false, ..NEW };
        assert!(missing(&needs, bits(&[Bpf, Perfmon, SysPtrace]), open).is_empty());
        let m = missing(&needs, bits(&[Bpf, Perfmon, SysPtrace]), NEW);
        assert_eq!(names(&m), ["SYSLOG"]);
        assert!(!m[0].essential, "unnamed locations are no reason to refuse");
    }

    #[test]
    fn the_error_names_each_missing_capability_and_what_it_is_for() {
        let needs = DROPS;
        let m: Vec<Need> = missing(&needs, bits(&[Perfmon, SysPtrace, Syslog]), NEW);
        let e = MissingCapabilities { command: "drops".into(), missing: m }.to_string();
        assert!(e.starts_with("tracer drops needs CAP_BPF (load eBPF programs and create maps), missing from this process's effective capabilities; add it to the container's securityContext (capabilities.add: [BPF])"), "{e}");
        let m = missing(&needs, bits(&[SysPtrace]), NEW).into_iter().filter(|n| n.essential).collect();
        let e = MissingCapabilities { command: "drops".into(), missing: m }.to_string();
        assert!(e.contains("CAP_BPF (") && e.contains(" and CAP_PERFMON (") && e.contains("[BPF, PERFMON]"), "{e}");
    }

    #[test]
    fn privileges_need_bpf_and_perfmon_or_sys_admin() {
        assert!(missing_privileges("drops", &DROPS, 0).is_some());
        assert!(missing_privileges("drops", &DROPS, bits(&[Bpf])).is_some());
        assert!(missing_privileges("drops", &DROPS, bits(&[Bpf, Perfmon])).is_none());
        assert!(missing_privileges("drops", &DROPS, bits(&[SysAdmin])).is_none());
    }
}
