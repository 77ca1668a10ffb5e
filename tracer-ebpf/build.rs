use std::env;

/// The kernel object is linked by bpf-linker, which cargo does not know about: rebuild when the
/// linker on PATH changes (scripts/setup.sh installs it).
fn main() {
    // The library target is also compiled for the host (tracer's build dependency); only the
    // BPF build needs the linker.
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() != Ok("bpf") {
        return;
    }
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run scripts/setup.sh"),
    }
}
