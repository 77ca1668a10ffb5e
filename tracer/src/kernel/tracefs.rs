//! Classic tracepoint record layouts, from the tracefs `format` files (they change between
//! kernels: skb:kfree_skb gained `rx_sk` in 6.11, which moved `protocol` and `reason`).
//!
//! tracefs is not always mounted: a fresh machine without systemd's `sys-kernel-tracing.mount`,
//! and a container whose runtime does not bind it in, have none. tracer mounts it itself at the
//! standard place when a path it takes needs it ([`mounted_or_mount`]), as perf and libtracefs
//! do, and says so once. It leaves the mount in place at exit: tracefs is one kernel-wide
//! instance, mounting it changes nothing the kernel does, and unmounting it could pull it from
//! under another tool that started using it meanwhile. In a container the mount lives in the
//! container's own mount namespace and goes with it. Mounting needs CAP_SYS_ADMIN; without it
//! the error says so and the paths that need tracefs are reported unavailable with that reason.

use std::{
    collections::HashMap,
    ffi::CString,
    path::{Path, PathBuf},
    sync::Mutex,
};

const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Where tracer mounts tracefs when nothing has (the place kernels since 4.1 create for it).
pub(crate) const MOUNT_POINT: &str = "/sys/kernel/tracing";

#[derive(Debug, thiserror::Error)]
pub(crate) enum TracefsError {
    #[error("tracefs is not mounted (looked in {}); mount it with `mount -t tracefs nodev /sys/kernel/tracing`", MOUNTS.join(", "))]
    NotMounted,
    // The errno is part of the message: callers report plan failures as one line of text.
    #[error("tracefs is not mounted and mounting it at {MOUNT_POINT} failed: {errno}{}", mount_hint(.errno))]
    MountFailed { errno: std::io::Error },
    #[error("tracepoint {category}:{name} does not exist on this kernel")]
    NoTracepoint { category: String, name: String },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One field of a tracepoint record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    pub offset: u32,
    pub size: u32,
}

/// The fields of one tracepoint's record, by name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Format {
    fields: HashMap<String, Field>,
}

impl Format {
    /// Reads `events/CATEGORY/NAME/format` from tracefs, mounting it first if needed.
    pub(crate) fn read(category: &str, name: &str) -> Result<Self, TracefsError> {
        let root = mounted_or_mount()?;
        let path = root.join("events").join(category).join(name).join("format");
        if !path.exists() {
            return Err(TracefsError::NoTracepoint { category: category.into(), name: name.into() });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read { path, source })?;
        Ok(Self::parse(&text))
    }

    /// Parses lines like `field:void * skbaddr;<TAB>offset:8;<TAB>size:8;<TAB>signed:0;`.
    pub(crate) fn parse(text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut decl = None;
            let mut offset = None;
            let mut size = None;
            for part in line.split(';').map(str::trim) {
                if let Some(d) = part.strip_prefix("field:") {
                    decl = Some(d);
                } else if let Some(o) = part.strip_prefix("offset:") {
                    offset = o.parse().ok();
                } else if let Some(s) = part.strip_prefix("size:") {
                    size = s.parse().ok();
                }
            }
            if let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) {
                // The name is the last word, without any array suffix (`char name[16]`).
                let name = decl.split_whitespace().last().unwrap_or_default();
                let name = name.split('[').next().unwrap_or(name).trim_start_matches('*');
                fields.insert(name.to_string(), Field { offset, size });
            }
        }
        Self { fields }
    }

    pub(crate) fn field(&self, name: &str) -> Option<Field> {
        self.fields.get(name).copied()
    }
}

/// The mounted tracefs, if any.
pub(crate) fn root() -> Option<PathBuf> {
    MOUNTS.iter().map(Path::new).find(|p| p.join("events").is_dir()).map(Path::to_path_buf)
}

/// Whether this process mounted tracefs (so `check` can say so); `None` until it was needed.
static MOUNTED_BY_US: Mutex<Option<bool>> = Mutex::new(None);

/// The mounted tracefs; when none is, mounts it at [`MOUNT_POINT`] and says so once on stderr.
pub(crate) fn mounted_or_mount() -> Result<PathBuf, TracefsError> {
    // One caller at a time: two threads must not both mount it.
    let mut mounted_by_us = MOUNTED_BY_US.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(root) = root() {
        mounted_by_us.get_or_insert(false);
        return Ok(root);
    }
    mount_tracefs().map_err(|errno| TracefsError::MountFailed { errno })?;
    let root = root().ok_or(TracefsError::NotMounted)?;
    *mounted_by_us = Some(true);
    eprintln!("tracer: tracefs was not mounted: mounted it at {MOUNT_POINT} (left mounted at exit)");
    Ok(root)
}

/// True when this process mounted tracefs through [`mounted_or_mount`].
pub(crate) fn mounted_by_tracer() -> bool {
    MOUNTED_BY_US.lock().unwrap_or_else(std::sync::PoisonError::into_inner).unwrap_or(false)
}

fn mount_tracefs() -> std::io::Result<()> {
    let source = CString::new("nodev").expect("no NUL");
    let target = CString::new(MOUNT_POINT).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; data is null.
    let rc = unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// What to tell the user about a failed mount, beyond the errno the cause chain gives.
fn mount_hint(err: &std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) => " (mounting needs CAP_SYS_ADMIN; or mount it on the host and bind it in)".into(),
        Some(libc::ENOENT) => format!(" ({MOUNT_POINT} does not exist: kernel older than 4.1 or /sys not mounted)"),
        Some(libc::ENODEV) => " (this kernel has no tracefs: CONFIG_TRACING is off)".into(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // skb:kfree_skb as kernel 6.11+ prints it (rx_sk moved protocol and reason).
    const KFREE_SKB_6_11: &str = "name: kfree_skb
ID: 2310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;
";

    #[test]
    fn parses_field_offsets() {
        let f = Format::parse(KFREE_SKB_6_11);
        assert_eq!(f.field("skbaddr"), Some(Field { offset: 8, size: 8 }));
        assert_eq!(f.field("reason"), Some(Field { offset: 36, size: 4 }));
        assert_eq!(f.field("protocol"), Some(Field { offset: 32, size: 2 }));
        assert_eq!(f.field("missing"), None);
    }

    #[test]
    fn parses_array_fields() {
        let f = Format::parse("\tfield:char name[16];\toffset:12;\tsize:16;\tsigned:0;");
        assert_eq!(f.field("name"), Some(Field { offset: 12, size: 16 }));
    }
}
