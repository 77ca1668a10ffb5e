//! Probe families. Each has the same four parts: a kernel program (tracer-ebpf/src/FAMILY.rs),
//! a raw struct (tracer-common/src/FAMILY.rs), a planner + attach + decode here
//! (probes/FAMILY/), and presentation (output/). ARCHITECTURE.md has the recipe for a new one.

pub mod drops;
pub mod mtu;
pub mod nat;
pub mod tcp;

/// Why a probe cannot run on this kernel, said so the user can act on it.
#[derive(Debug, thiserror::Error)]
#[error("{probe}: {reason}")]
pub struct CannotRun {
    pub probe: &'static str,
    pub reason: String,
}
