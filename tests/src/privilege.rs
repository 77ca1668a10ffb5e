//! Whether a test may run here, and how tests share the machine: the privilege gate
//! ([`require_privileged`], which skips loudly, or fails under `TRACER_REQUIRE_PRIVILEGED=1`),
//! the loud [`skipped`] line for checks this kernel cannot support, what the running kernel has
//! (release, BTF names), and the cross-process [`LabLock`] that keeps machine-wide checks apart
//! from other tests' tracers.

use std::{
    fs::{self, File, OpenOptions},
    os::fd::AsRawFd,
    path::Path,
    thread,
    time::{Duration, Instant},
};

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file())).unwrap_or(false)
}

/// Returns true when the test may run. Otherwise prints
/// `SKIPPED <test>: <reason> (kernel <release>)` to stderr and returns false, or panics when
/// `TRACER_REQUIRE_PRIVILEGED=1` (CI), so a skip can never look like a silent pass there.
pub fn require_privileged(test: &str) -> bool {
    skip_unless(test, privileged_reasons())
}

/// Why this machine cannot run privileged tests (empty when it can).
pub(crate) fn privileged_reasons() -> Vec<String> {
    let mut reasons = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        reasons.push("not root (euid != 0)".to_string());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        reasons.push("kernel has no BTF (/sys/kernel/btf/vmlinux missing)".to_string());
    }
    for tool in ["ip", "python3"] {
        if !have_tool(tool) {
            reasons.push(format!("`{tool}` not found in PATH"));
        }
    }
    reasons
}

/// True when `reasons` is empty; otherwise the loud skip (or, under
/// `TRACER_REQUIRE_PRIVILEGED=1`, the panic) of [`require_privileged`].
pub(crate) fn skip_unless(test: &str, reasons: Vec<String>) -> bool {
    if reasons.is_empty() {
        return true;
    }
    let reasons = reasons.join("; ");
    if std::env::var("TRACER_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("SKIPPED {test}: {reasons} (kernel {}); TRACER_REQUIRE_PRIVILEGED=1 forbids skipping", kernel_release());
    }
    skipped(test, &reasons);
    false
}

/// Prints `SKIPPED <what>: <reason> (kernel <release>)` loudly, for a check that cannot apply on
/// this kernel. Unlike a missing privilege this is no failure under CI: the kernel lacks what the
/// check needs, and the line says so.
pub fn skipped(what: &str, reason: &str) {
    // Written to fd 2 directly: libtest captures eprintln! of passing tests, and a skip must be
    // visible even then.
    use std::io::Write as _;
    let msg = format!("SKIPPED {what}: {reason} (kernel {})", kernel_release());
    let _ = writeln!(std::io::stderr().lock(), "\n!!!!!!!! {msg} !!!!!!!!");
}

/// Whether the running kernel's BTF names `name` (a type, a tracepoint's `btf_trace_NAME`, an
/// enumerator): the kernel's own account of what it has, for per-kernel expectations.
pub fn kernel_btf_has(name: &str) -> bool {
    let Ok(bytes) = fs::read("/sys/kernel/btf/vmlinux") else { return false };
    // BTF names are NUL-terminated strings in the string section.
    let mut needle = vec![0u8];
    needle.extend_from_slice(name.as_bytes());
    needle.push(0);
    bytes.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// A file lock shared by every test process. Normal tests hold it shared; tests that inspect
/// machine-wide state (bpftool listings, huge drop bursts) hold it exclusively, so they never
/// see another test's tracer.
pub struct LabLock {
    _file: File,
}

const LOCK_PATH: &str = "/run/tracer-tests.lock";

fn take_lock(op: libc::c_int) -> LabLock {
    let file =
        OpenOptions::new().create(true).truncate(false).read(true).write(true).open(LOCK_PATH).unwrap_or_else(|e| panic!("open {LOCK_PATH}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        // SAFETY: valid open fd; LOCK_NB makes this non-blocking.
        let r = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if r == 0 {
            return LabLock { _file: file };
        }
        assert!(Instant::now() < deadline, "could not take {LOCK_PATH} within 300 s");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Shared lock: any number of ordinary tests may run together.
pub fn shared_lock() -> LabLock {
    take_lock(libc::LOCK_SH)
}

/// Exclusive lock: no other lab test runs a tracer meanwhile.
pub fn exclusive_lock() -> LabLock {
    take_lock(libc::LOCK_EX)
}
