//! Builds the kernel programs (tracer-ebpf) for the BPF target and leaves the object in OUT_DIR,
//! where src/loader.rs embeds it with `include_bytes_aligned!`. Needs the nightly toolchain with
//! rust-src and bpf-linker (scripts/setup.sh installs both).
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};
// A build dependency only so that cargo reruns this script when tracer-ebpf changes.
use tracer_ebpf as _;

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "tracer-ebpf")
        .ok_or_else(|| anyhow!("tracer-ebpf package not found in the workspace"))?;
    let root_dir = ebpf.manifest_path.parent().ok_or_else(|| anyhow!("tracer-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf([Package { name: "tracer-ebpf", root_dir: root_dir.as_str(), ..Default::default() }], Toolchain::default())
}
