//! Which kinds of hook this kernel really offers, found by loading a program that does nothing
//! (`r0 = 0; exit`) of each kind and attaching it, through the bare bpf(2) and
//! perf_event_open(2) calls. Nothing here is inferred from the kernel version or its config:
//! a kernel can have a feature configured and still refuse it (this development machine's 6.18
//! refuses fentry programs at load), so only doing it tells. `tracer check` prints each answer
//! with the method that produced it.
//!
//! The targets are chosen so that a probe changes nothing while it is attached:
//! - kprobe and fentry go on `bpf_fentry_test1`, a kernel function that exists to be traced by
//!   BPF self-tests and is only ever called from BPF_PROG_TEST_RUN;
//! - tracepoint and tp_btf attach to skb:kfree_skb (the hook tracer itself uses) only for the
//!   instant before their fds close; the program does nothing;
//! - TCX is asked to attach to interface index 0, which never exists: the kernel answers ENODEV
//!   when it knows TCX links and EINVAL when it does not, and nothing is attached either way.
//!
//! Everything is released when the fds drop, before `tracer check` prints.

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

use serde::Serialize;

use super::{btf::KernelBtf, tracefs};

/// The kernel function kprobe and fentry probes attach to (see the module comment).
pub(crate) const PROBE_TARGET: &str = "bpf_fentry_test1";
/// The name the probe programs carry, so `bpftool prog` can tell them apart (and tests can
/// prove none is left behind).
pub(crate) const PROBE_PROG_NAME: &str = "tracer_check";

/// One kind of hook, as `tracer check -o json` reports it under `hooks`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct HookSupport {
    /// `null` when it could not be probed (no privileges).
    pub available: Option<bool>,
    /// How the answer was found.
    pub method: String,
    /// What happened: success, or the step that failed with its errno.
    pub detail: String,
    /// The commands that use this hook on this kernel (filled in by `check`).
    pub used_by: Vec<&'static str>,
}

impl HookSupport {
    fn new(method: &str, result: Result<String, String>) -> Self {
        let (available, detail) = match result {
            Ok(detail) => (Some(true), detail),
            Err(detail) => (Some(false), detail),
        };
        Self { available, method: method.to_string(), detail, used_by: Vec::new() }
    }
}

/// Keys of [`probe_all`]'s answer, in report order.
pub(crate) const KPROBE: &str = "kprobe";
pub(crate) const FENTRY: &str = "fentry";
pub(crate) const TP_BTF: &str = "tp_btf";
pub(crate) const TRACEPOINT: &str = "tracepoint";
pub(crate) const TCX: &str = "tcx";

const METHOD_KPROBE: &str =
    "perf_event_open on the kprobe PMU at bpf_fentry_test1, then PERF_EVENT_IOC_SET_BPF of a no-op BPF_PROG_TYPE_KPROBE program";
const METHOD_FENTRY: &str = "BPF_PROG_LOAD of a no-op BPF_PROG_TYPE_TRACING/BPF_TRACE_FENTRY program on bpf_fentry_test1 (BTF id), then BPF_RAW_TRACEPOINT_OPEN (the trampoline)";
const METHOD_TP_BTF: &str =
    "BPF_PROG_LOAD of a no-op BPF_PROG_TYPE_TRACING/BPF_TRACE_RAW_TP program on btf_trace_kfree_skb (BTF id), then BPF_RAW_TRACEPOINT_OPEN";
const METHOD_TRACEPOINT: &str =
    "perf_event_open of tracepoint skb:kfree_skb (id from tracefs), then PERF_EVENT_IOC_SET_BPF of a no-op BPF_PROG_TYPE_TRACEPOINT program";
const METHOD_TCX: &str = "BPF_LINK_CREATE of a no-op BPF_PROG_TYPE_SCHED_CLS program as BPF_TCX_INGRESS on ifindex 0: ENODEV = TCX known, EINVAL = unknown; nothing is attached";

/// Probes every kind of hook. Needs the privileges to load programs; `btf` is the kernel's own
/// BTF (None without it: fentry and tp_btf cannot be probed then).
pub(crate) fn probe_all(btf: Option<&KernelBtf>) -> Vec<(&'static str, HookSupport)> {
    let btf_id = |name: &str, func: bool| -> Result<u32, String> {
        let btf = btf.ok_or("no kernel BTF (/sys/kernel/btf/vmlinux) to find the target in")?;
        btf.vmlinux_id(name, func).map_err(|e| e.to_string())
    };
    vec![
        (KPROBE, HookSupport::new(METHOD_KPROBE, probe_kprobe())),
        (FENTRY, HookSupport::new(METHOD_FENTRY, btf_id(PROBE_TARGET, true).and_then(|id| probe_btf_attach(ATTACH_FENTRY, id)))),
        (TP_BTF, HookSupport::new(METHOD_TP_BTF, btf_id("btf_trace_kfree_skb", false).and_then(|id| probe_btf_attach(ATTACH_RAW_TP, id)))),
        (TRACEPOINT, HookSupport::new(METHOD_TRACEPOINT, probe_tracepoint())),
        (TCX, HookSupport::new(METHOD_TCX, probe_tcx())),
    ]
}

/// The same keys, unprobed, with the reason.
pub(crate) fn unprobed(why: &str) -> Vec<(&'static str, HookSupport)> {
    [(KPROBE, METHOD_KPROBE), (FENTRY, METHOD_FENTRY), (TP_BTF, METHOD_TP_BTF), (TRACEPOINT, METHOD_TRACEPOINT), (TCX, METHOD_TCX)]
        .into_iter()
        .map(|(k, m)| (k, HookSupport { available: None, method: m.into(), detail: why.into(), used_by: Vec::new() }))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The probes

const PROG_KPROBE: u32 = 2;
const PROG_SCHED_CLS: u32 = 3;
const PROG_TRACEPOINT: u32 = 5;
const PROG_TRACING: u32 = 26;
const ATTACH_RAW_TP: u32 = 23;
const ATTACH_FENTRY: u32 = 24;
const ATTACH_TCX_INGRESS: u32 = 46;

fn probe_kprobe() -> Result<String, String> {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe/type");
    let Ok(ty) = std::fs::read_to_string(pmu) else {
        let legacy = tracefs::root().is_some_and(|r| r.join("kprobe_events").exists());
        return Err(if legacy {
            "no kprobe PMU (kernel < 4.17?), only tracefs kprobe_events, which tracer does not use".into()
        } else {
            "no kprobe PMU and no tracefs kprobe_events: the kernel is built without kprobes (CONFIG_KPROBES)".into()
        });
    };
    let ty: u32 = ty.trim().parse().map_err(|_| format!("{} is not a number", pmu.display()))?;
    let func = CString::new(PROBE_TARGET).map_err(|e| e.to_string())?;
    // config1 is the function's name (kprobe_func), config 0 a kprobe (bit 0 would be a kretprobe).
    let attr = PerfEventAttr { config1: func.as_ptr() as u64, ..PerfEventAttr::new(ty, 0) };
    let event = perf_event_open(&attr).map_err(|e| format!("perf_event_open(kprobe {PROBE_TARGET}): {}", errno(&e)))?;
    let prog = load(PROG_KPROBE, 0, 0)?;
    set_bpf(&event, &prog).map_err(|e| format!("attach: {}", errno(&e)))?;
    Ok(format!("attached a no-op program at {PROBE_TARGET} through the kprobe PMU"))
}

fn probe_tracepoint() -> Result<String, String> {
    let root = tracefs::mounted_or_mount().map_err(|e| e.to_string())?;
    let id_file = root.join("events/skb/kfree_skb/id");
    let id = std::fs::read_to_string(&id_file).map_err(|e| format!("{}: {e}", id_file.display()))?;
    let id: u64 = id.trim().parse().map_err(|_| format!("{} is not a number", id_file.display()))?;
    const PERF_TYPE_TRACEPOINT: u32 = 2;
    let event =
        perf_event_open(&PerfEventAttr::new(PERF_TYPE_TRACEPOINT, id)).map_err(|e| format!("perf_event_open(skb:kfree_skb): {}", errno(&e)))?;
    let prog = load(PROG_TRACEPOINT, 0, 0)?;
    set_bpf(&event, &prog).map_err(|e| format!("attach: {}", errno(&e)))?;
    Ok("attached a no-op program to skb:kfree_skb".into())
}

/// fentry and tp_btf: both are BPF_PROG_TYPE_TRACING; the kernel checks the target at load and
/// builds the trampoline (fentry) or links the tracepoint (tp_btf) at attach.
fn probe_btf_attach(attach_type: u32, btf_id: u32) -> Result<String, String> {
    let prog = load(PROG_TRACING, attach_type, btf_id)?;
    let mut attr = RawTracepointAttr { name: 0, prog_fd: prog.as_raw_fd() as u32, _pad: 0 };
    let _link = sys_bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).map_err(|e| format!("attach: {}", errno(&e)))?;
    Ok(format!("loaded and attached a no-op program (target BTF id {btf_id})"))
}

fn probe_tcx() -> Result<String, String> {
    let prog = load(PROG_SCHED_CLS, 0, 0)?;
    let mut attr = LinkCreateAttr { prog_fd: prog.as_raw_fd() as u32, attach_type: ATTACH_TCX_INGRESS, ..LinkCreateAttr::default() };
    match sys_bpf(BPF_LINK_CREATE, &mut attr) {
        // ifindex 0 does not exist; a success would mean something is very wrong. The link is
        // dropped (detached) right here either way.
        Ok(_link) => Err("BPF_LINK_CREATE on ifindex 0 succeeded: unexpected, not trusted".into()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok("the kernel knows TCX links (ENODEV for ifindex 0)".into()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err("no TCX links (EINVAL): tc programs attach through a clsact qdisc".into()),
        Err(e) => Err(format!("link_create: {}", errno(&e))),
    }
}

// ---------------------------------------------------------------------------------------------
// Bare syscalls: only the prefixes of bpf_attr and perf_event_attr these probes need. The
// kernel accepts a shorter attr than its own as long as the fields it does not get are zero.

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `r0 = 0; exit` (mov64 imm, exit), little-endian instruction encoding.
const NOOP_PROGRAM: [u8; 16] = [0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];

/// `union bpf_attr` for BPF_PROG_LOAD, up to `attach_btf_id` (kernel >= 5.5).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    prog_btf_fd: u32,
    func_info_rec_size: u32,
    func_info: u64,
    func_info_cnt: u32,
    line_info_rec_size: u32,
    line_info: u64,
    line_info_cnt: u32,
    attach_btf_id: u32,
    attach_prog_fd: u32,
}
const _: () = assert!(std::mem::offset_of!(ProgLoadAttr, attach_btf_id) == 108);

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
#[repr(C)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `union bpf_attr` for BPF_LINK_CREATE, with the `tcx` member.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
}

/// `struct perf_event_attr` up to `config2` (PERF_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    ty: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    /// bit 0: disabled. Created disabled: attaching is the question, running is not needed.
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
}
const _: () = assert!(size_of::<PerfEventAttr>() == 72);

impl PerfEventAttr {
    fn new(ty: u32, config: u64) -> Self {
        Self { ty, size: size_of::<Self>() as u32, config, sample_period: 1, wakeup_events: 1, flags: 1, ..Self::default() }
    }
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a fully initialised #[repr(C)] prefix of `union bpf_attr` for `cmd`, and
    // the size passed is its size, so the kernel reads only memory we own. Pointers inside it
    // point to buffers that outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>() as libc::c_uint) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

fn perf_event_open(attr: &PerfEventAttr) -> io::Result<OwnedFd> {
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    // SAFETY: `attr` is a valid perf_event_attr of the size it declares; pid -1 with cpu 0
    // watches all tasks on CPU 0; no group.
    let ret = unsafe { libc::syscall(libc::SYS_perf_event_open, std::ptr::from_ref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

fn set_bpf(event: &OwnedFd, prog: &OwnedFd) -> io::Result<()> {
    const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408; // _IOW('$', 8, __u32)
    // SAFETY: both fds are open; the ioctl takes the program fd by value.
    let ret = unsafe { libc::ioctl(event.as_raw_fd(), PERF_EVENT_IOC_SET_BPF, prog.as_raw_fd()) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Loads the no-op program; on failure loads it again with the verifier log to say why.
fn load(prog_type: u32, expected_attach_type: u32, attach_btf_id: u32) -> Result<OwnedFd, String> {
    const LICENSE: &CStr = c"GPL";
    let mut name = [0u8; 16];
    name[..PROBE_PROG_NAME.len()].copy_from_slice(PROBE_PROG_NAME.as_bytes());
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: (NOOP_PROGRAM.len() / 8) as u32,
        insns: NOOP_PROGRAM.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        prog_name: name,
        expected_attach_type,
        attach_btf_id,
        ..ProgLoadAttr::default()
    };
    let err = match sys_bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => return Ok(fd),
        Err(err) => err,
    };
    // Not logged the first time: a too small log buffer fails loads that would succeed.
    let mut log = vec![0u8; 64 * 1024];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    let _ = sys_bpf(BPF_PROG_LOAD, &mut attr);
    let text = String::from_utf8_lossy(log.split(|&b| b == 0).next().unwrap_or_default()).into_owned();
    let why = text.lines().map(str::trim).rfind(|l| !l.is_empty()).map(|l| format!(" ({l})")).unwrap_or_default();
    Err(format!("load: {}{why}", errno(&err)))
}

/// `EPERM (Operation not permitted)`: the name a reader can search for, and the text.
fn errno(err: &io::Error) -> String {
    let name = match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::E2BIG) => "E2BIG",
        Some(libc::EBADF) => "EBADF",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EFAULT) => "EFAULT",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOSPC) => "ENOSPC",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        // The kernel-internal ENOTSUPP leaks out of bpf(2), e.g. when an arch has no trampoline.
        Some(524) => "ENOTSUPP",
        _ => return err.to_string(),
    };
    let text = err.to_string();
    format!("{name} ({})", text.split(" (os error").next().unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names_the_error() {
        assert_eq!(errno(&io::Error::from_raw_os_error(libc::EPERM)), "EPERM (Operation not permitted)");
        assert!(errno(&io::Error::from_raw_os_error(524)).starts_with("ENOTSUPP"));
    }

    #[test]
    fn unprobed_has_every_key() {
        let keys: Vec<_> = unprobed("x").into_iter().map(|(k, h)| (k, h.available)).collect();
        assert_eq!(keys, [(KPROBE, None), (FENTRY, None), (TP_BTF, None), (TRACEPOINT, None), (TCX, None)]);
    }
}
