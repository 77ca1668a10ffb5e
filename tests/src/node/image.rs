//! The sandbox ("pause") image, built here from Debian's static busybox: no registry is
//! reachable, and a one-layer docker-archive is all `ctr images import` and the CRI need.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};

use crate::run_timeout;

/// The image reference the node lab's containerd uses as `sandbox_image`. `.test` is a reserved
/// top-level domain, so this can never name an image that exists anywhere else.
pub const SANDBOX_IMAGE: &str = "tracer.test/node-lab/pause:v1";

/// Where the static busybox comes from (Debian `busybox-static`, installed by scripts/setup.sh).
pub const BUSYBOX: &str = "/bin/busybox";

/// Writes a docker-archive tarball: `manifest.json`, the config (named by its sha256, as
/// `docker save` does) and `layer.tar` holding `bin/busybox`. Every tar header has mtime 0 and
/// uid/gid 0, and JSON keys are sorted, so the same busybox always gives the same bytes (and the
/// same image id).
const BUILD_IMAGE: &str = r#"
import hashlib, io, json, sys, tarfile
busybox, out, ref = sys.argv[1], sys.argv[2], sys.argv[3]
def info(name, **kw):
    ti = tarfile.TarInfo(name)
    ti.mtime = 0; ti.uid = ti.gid = 0; ti.uname = ti.gname = "root"
    for k, v in kw.items(): setattr(ti, k, v)
    return ti
def tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for ti, data in entries:
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()
bb = open(busybox, "rb").read()
layer = tar([(info("bin/", type=tarfile.DIRTYPE, mode=0o755), None),
             (info("bin/busybox", size=len(bb), mode=0o755), bb)])
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"], "Env": ["PATH=/bin"], "WorkingDir": "/"},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    "history": [{"created_by": "tracer-tests node lab: static busybox sleeping forever"}],
}, sort_keys=True).encode()
cfg = hashlib.sha256(config).hexdigest() + ".json"
manifest = json.dumps([{"Config": cfg, "RepoTags": [ref], "Layers": ["layer.tar"]}]).encode()
open(out, "wb").write(tar([(info(n, size=len(d), mode=0o644), d)
                           for n, d in [(cfg, config), ("layer.tar", layer), ("manifest.json", manifest)]]))
"#;

/// True when `path` is an ELF file without a PT_INTERP program header, i.e. statically linked.
/// A dynamic busybox would start in the sandbox's empty root and die at once, which containerd
/// reports only as a vague start failure; checking here names the real cause.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let b = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    ensure!(b.len() > 64 && &b[..4] == b"\x7fELF" && b[4] == 2, "{} is not a 64-bit ELF file", path.display());
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let mut off8 = [0u8; 8];
    off8.copy_from_slice(&b[0x20..0x28]);
    let phoff = u64::from_le_bytes(off8) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        ensure!(o + 4 <= b.len(), "{}: program header {i} out of bounds", path.display());
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The image tarball, built once per busybox version and cached in the temp dir. Parallel test
/// processes may build it at the same time: each writes a private file and renames it into
/// place, and since the build is deterministic every rename installs the same bytes.
pub fn sandbox_image_tar() -> Result<PathBuf> {
    let meta = fs::metadata(BUSYBOX).with_context(|| format!("stat {BUSYBOX} (Debian busybox-static)"))?;
    ensure!(is_static_elf(Path::new(BUSYBOX))?, "{BUSYBOX} is not statically linked (install busybox-static)");
    let tar = std::env::temp_dir().join(format!("tracer-node-lab-pause-v1-{}-{}.tar", meta.size(), meta.mtime()));
    if tar.is_file() {
        return Ok(tar);
    }
    let part = tar.with_extension(format!("{}.{}.part", std::process::id(), crate::netns::next_id()));
    let out = run_timeout(Command::new("python3").args(["-c", BUILD_IMAGE, BUSYBOX]).arg(&part).arg(SANDBOX_IMAGE), Duration::from_secs(60));
    if !out.status.success() {
        let _ = fs::remove_file(&part);
        bail!("building {} failed: {}", tar.display(), String::from_utf8_lossy(&out.stderr));
    }
    fs::rename(&part, &tar).with_context(|| format!("rename {} -> {}", part.display(), tar.display()))?;
    Ok(tar)
}

/// The reference a docker-archive tarball tags its image with (`RepoTags` of its manifest.json),
/// e.g. the one `cargo xtask image` wrote.
pub fn image_reference(tar: &Path) -> Result<String> {
    let manifest = archive_manifest(tar)?;
    let tag = manifest[0]["RepoTags"][0].as_str();
    tag.map(str::to_string).with_context(|| format!("{} names no image (RepoTags): {manifest}", tar.display()))
}

/// The image id of a docker-archive tarball: its config's digest (manifest.json's `Config` is
/// `<hex>.json`), which is what the CRI reports as the id of the image wherever it came from.
pub fn image_id(tar: &Path) -> Result<String> {
    let manifest = archive_manifest(tar)?;
    let config = manifest[0]["Config"].as_str().and_then(|c| c.strip_suffix(".json"));
    config.map(|hex| format!("sha256:{hex}")).with_context(|| format!("{} has no config (Config): {manifest}", tar.display()))
}

/// manifest.json of a docker-archive tarball.
fn archive_manifest(tar: &Path) -> Result<serde_json::Value> {
    let out = run_timeout(Command::new("tar").arg("-xOf").arg(tar).arg("manifest.json"), Duration::from_secs(60));
    ensure!(out.status.success(), "reading manifest.json of {}: {}", tar.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).with_context(|| format!("manifest.json of {}", tar.display()))
}
