//! What this kernel and this process can do: privileges, program and map types, hooks.
//! `tracer check` prints these; probes use them to choose a hook (Retis' `can_run`).

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

/// Capability bits (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capabilities of this process, from /proc/self/status.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Why this process cannot load tracing programs, if it cannot: loading tracepoint programs
/// needs CAP_BPF and CAP_PERFMON (kernel >= 5.8) or CAP_SYS_ADMIN.
pub fn missing_privileges(caps: u64) -> Option<&'static str> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        None
    } else {
        Some("tracer needs root (or CAP_BPF and CAP_PERFMON) to load its kernel programs; run it as root")
    }
}


/// One capability of the kernel, as `tracer check` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Feature {
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
pub fn probe_bpf() -> Vec<Feature> {
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

    #[test]
    fn privileges_need_bpf_and_perfmon_or_sys_admin() {
        assert!(missing_privileges(0).is_some());
        assert!(missing_privileges(1 << CAP_BPF).is_some());
        assert!(missing_privileges((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_none());
        assert!(missing_privileges(1 << CAP_SYS_ADMIN).is_none());
    }
}
