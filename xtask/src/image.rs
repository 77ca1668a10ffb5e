//! tracer's container image, built without docker or a registry: one layer with `/tracer`, the
//! shared libraries it needs when it is not static (at the paths the dynamic loader looks in, so
//! the binary is self-contained) and the system's CA roots (the Kubernetes client loads them).
//!
//! Two formats: a docker-archive tarball (`cargo xtask image`, and `cargo xtask release` per
//! architecture), which `ctr -n k8s.io images import` (containerd 1.6), `docker load`,
//! `podman load` and `skopeo copy docker-archive:...` take as it is; and an OCI image layout
//! (`cargo xtask release`: one image index over every architecture built), which
//! `skopeo copy --all oci:DIR:TAG docker://...` pushes as a multi-architecture image.
//!
//! The bytes depend only on the inputs: tar headers carry mtime 0 and uid/gid 0, gzip stores no
//! name or time, and JSON keys are sorted, so the same binary always gives the same image id.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::json;

/// The path of the binary in the image: its entrypoint. The Job and DaemonSet manifests set no
/// `command`, so they run exactly this.
pub(crate) const ENTRYPOINT: &str = "/tracer";

/// Read by the Kubernetes client (rustls with the platform's roots) even for in-cluster use.
const CA_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The repository tracer's image is published to; the tag is the crate version. The same rule
/// as tracer's own `--image` default.
pub(crate) const DEFAULT_REPOSITORY: &str = "ghcr.io/tracer-project/tracer";

/// Overrides the whole image reference (`REGISTRY/PATH:TAG`), read at build time by tracer
/// (`option_env!`, its `--image` default) and by `cargo xtask image`/`release` (the tag they
/// write), so that a binary and its image always agree.
pub(crate) const IMAGE_ENV: &str = "TRACER_IMAGE";

/// The image reference: `$TRACER_IMAGE`, else `ghcr.io/tracer-project/tracer:<crate version>`.
/// Refuses what tracer could not use as a pinned image: an empty value, no tag, or `latest`.
pub(crate) fn reference() -> anyhow::Result<String> {
    let Some(value) = std::env::var_os(IMAGE_ENV) else {
        return Ok(format!("{DEFAULT_REPOSITORY}:{}", env!("CARGO_PKG_VERSION")));
    };
    let value = value.into_string().map_err(|v| anyhow::anyhow!("{IMAGE_ENV}={v:?} is not UTF-8"))?;
    check_reference(&value).with_context(|| format!("{IMAGE_ENV}={value:?}"))?;
    Ok(value)
}

/// Refuses a reference without a tag, or tagged `latest`.
fn check_reference(reference: &str) -> anyhow::Result<()> {
    let tag = tag_of(reference).context("no tag: give the full reference, e.g. registry.example/tracer:1.0")?;
    ensure!(tag != "latest", "the tag must name a version, not `latest` (a node keeps whatever `latest` it pulled first)");
    Ok(())
}

/// The tag of an image reference (`REPO:TAG`, `HOST:PORT/REPO:TAG`), None without one.
pub(crate) fn tag_of(reference: &str) -> Option<&str> {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    name.split_once(':').map(|(_, tag)| tag).filter(|t| !t.is_empty() && !t.contains('@'))
}

/// The image's platform name (GOARCH spelling, as in `architecture` and krew selectors) of a
/// Rust target architecture.
pub(crate) fn oci_arch(rust_arch: &str) -> anyhow::Result<&'static str> {
    match rust_arch {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => bail!("no image platform name for the architecture {other}"),
    }
}

/// One image: its config and its one layer, ready to be written in either format.
pub(crate) struct Image {
    /// `amd64`, `arm64`.
    pub(crate) arch: String,
    config: Vec<u8>,
    layer: Vec<u8>,
}

impl Image {
    /// The image of `tracer` for `arch`: `/tracer`, `libraries` at their own paths, CA roots.
    pub(crate) fn assemble(tracer: &Path, arch: &str, libraries: &[PathBuf], created_by: &str) -> anyhow::Result<Image> {
        let mut files: Vec<(String, u32, Vec<u8>)> = Vec::new();
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        files.push((ENTRYPOINT.trim_start_matches('/').to_string(), 0o755, read(tracer)?));
        for lib in libraries {
            let name = lib.to_str().context("library path is not UTF-8")?.trim_start_matches('/').to_string();
            files.push((name, 0o755, read(lib)?));
        }
        if Path::new(CA_ROOTS).is_file() {
            files.push((CA_ROOTS.trim_start_matches('/').to_string(), 0o644, read(Path::new(CA_ROOTS))?));
        }
        let layer = tree_tar(&files)?;
        let diff_id = sha256(&layer)?;
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {
                "Entrypoint": [ENTRYPOINT],
                "Env": ["PATH=/"],
                "WorkingDir": "/",
                "Labels": {"org.opencontainers.image.title": "tracer", "org.opencontainers.image.version": env!("CARGO_PKG_VERSION")},
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
            "history": [{"created_by": created_by}],
        });
        // serde_json's map is a BTreeMap (no preserve_order): keys come out sorted.
        Ok(Image { arch: arch.to_string(), config: serde_json::to_vec(&config)?, layer })
    }

    /// An image with nothing in it, for tests of what is written around images.
    #[cfg(test)]
    pub(crate) fn empty_for_tests(arch: &str) -> Image {
        Image { arch: arch.to_string(), config: Vec::new(), layer: Vec::new() }
    }

    /// Writes the image as a docker-archive tarball to `out`, tagged `tag`; returns its id.
    pub(crate) fn write_docker_archive(&self, tag: &str, out: &Path) -> anyhow::Result<String> {
        let config_id = sha256(&self.config)?;
        let config_name = format!("{config_id}.json");
        let manifest = serde_json::to_vec(&json!([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer.tar"]}]))?;
        let mut outer = Tar::default();
        outer.file(&config_name, 0o644, &self.config)?;
        outer.file("layer.tar", 0o644, &self.layer)?;
        outer.file("manifest.json", 0o644, &manifest)?;
        write_atomic(out, &outer.finish())?;
        Ok(format!("sha256:{config_id}"))
    }
}

/// Writes `images` (one per architecture) as an OCI image layout in `dir` (replaced): the layer
/// gzip-compressed, one manifest per image, and an image index over them that `index.json` names
/// `tag` (`org.opencontainers.image.ref.name`), so `oci:DIR:TAG` is the multi-architecture image.
/// Returns the index's digest.
pub(crate) fn write_oci_layout(images: &[&Image], tag: &str, dir: &Path) -> anyhow::Result<String> {
    ensure!(!images.is_empty(), "an OCI layout needs at least one image");
    let part = dir.with_extension("part");
    if part.exists() {
        std::fs::remove_dir_all(&part).with_context(|| format!("removing {}", part.display()))?;
    }
    let blobs = part.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    // A blob under its digest; returns its descriptor.
    let blob = |media_type: &str, data: &[u8]| -> anyhow::Result<serde_json::Value> {
        let digest = sha256(data)?;
        let path = blobs.join(&digest);
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        Ok(json!({"mediaType": media_type, "digest": format!("sha256:{digest}"), "size": data.len()}))
    };
    let version_label = json!({"org.opencontainers.image.version": env!("CARGO_PKG_VERSION")});
    let mut manifests = Vec::new();
    for image in images {
        let layer = blob("application/vnd.oci.image.layer.v1.tar+gzip", &gzip(&image.layer)?)?;
        let config = blob("application/vnd.oci.image.config.v1+json", &image.config)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": [layer],
            "annotations": version_label,
        });
        let mut descriptor = blob("application/vnd.oci.image.manifest.v1+json", &serde_json::to_vec(&manifest)?)?;
        descriptor["platform"] = json!({"architecture": image.arch, "os": "linux"});
        manifests.push(descriptor);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
        "annotations": version_label,
    });
    let mut index_descriptor = blob("application/vnd.oci.image.index.v1+json", &serde_json::to_vec(&index)?)?;
    index_descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
    let top = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [index_descriptor]});
    let write = |name: &str, data: Vec<u8>| std::fs::write(part.join(name), data).with_context(|| format!("writing {name} in {}", part.display()));
    write("oci-layout", serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?)?;
    write("index.json", serde_json::to_vec(&top)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&part, dir).with_context(|| format!("renaming {} to {}", part.display(), dir.display()))?;
    Ok(index_descriptor["digest"].as_str().unwrap_or_default().to_string())
}

/// `cargo xtask image`: the image of `tracer` (this machine's architecture, with the libraries
/// `ldd` names) as a docker-archive at `out`, tagged `tag`; returns the image id.
pub(crate) fn build(tracer: &Path, tag: &str, out: &Path) -> anyhow::Result<String> {
    let arch = oci_arch(std::env::consts::ARCH)?;
    // The loader and libraries at the paths ldd resolved, which are where the loader named in
    // the binary's PT_INTERP and its default search path will look inside the image too.
    let libraries = crate::vm::ldd(tracer)?;
    let image = Image::assemble(tracer, arch, &libraries, "cargo xtask image: target/release/tracer and the libraries ldd names")?;
    image.write_docker_archive(tag, out)
}

/// Writes `data` to `path` through a `.part` file renamed into place, so a reader never sees half
/// a file.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut part = path.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    std::fs::write(&part, data).with_context(|| format!("writing {}", part.display()))?;
    std::fs::rename(&part, path).with_context(|| format!("renaming {} to {}", part.display(), path.display()))
}

/// A tar of `files` (path, mode, bytes): every parent directory once, then the files, in name
/// order. An image layer, or an OCI layout.
pub(crate) fn tree_tar(files: &[(String, u32, Vec<u8>)]) -> anyhow::Result<Vec<u8>> {
    let mut sorted: Vec<&(String, u32, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut tar = Tar::default();
    let mut dirs = std::collections::BTreeSet::new();
    for (name, mode, data) in sorted {
        let mut parent = PathBuf::new();
        for part in Path::new(name).parent().into_iter().flat_map(Path::components) {
            parent.push(part);
            if dirs.insert(parent.clone()) {
                tar.dir(&format!("{}/", parent.display()))?;
            }
        }
        tar.file(name, *mode, data)?;
    }
    Ok(tar.finish())
}

/// A ustar archive in memory: regular files and directories, owned by root, mtime 0.
#[derive(Default)]
pub(crate) struct Tar {
    out: Vec<u8>,
}

impl Tar {
    fn dir(&mut self, name: &str) -> anyhow::Result<()> {
        self.entry(name, 0o755, b'5', &[])
    }

    /// Adds a regular file.
    pub(crate) fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.entry(name, mode, b'0', data)
    }

    fn entry(&mut self, name: &str, mode: u32, kind: u8, data: &[u8]) -> anyhow::Result<()> {
        // Longer names need a prefix split or pax headers; nothing here comes close.
        ensure!(name.len() < 100, "tar name too long: {name}");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        octal(&mut h, 100, 8, u64::from(mode));
        octal(&mut h, 108, 8, 0);
        octal(&mut h, 116, 8, 0);
        octal(&mut h, 124, 12, data.len() as u64);
        octal(&mut h, 136, 12, 0);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&h);
        self.out.extend_from_slice(data);
        self.out.resize(self.out.len().next_multiple_of(512), 0);
        Ok(())
    }

    /// The archive's bytes, with the two zero blocks that end it.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        // Two zero blocks end the archive.
        self.out.resize(self.out.len() + 1024, 0);
        self.out
    }
}

/// Hex SHA-256 of `data`, by coreutils' sha256sum (no hashing crate in the workspace).
pub(crate) fn sha256(data: &[u8]) -> anyhow::Result<String> {
    let out = filter(Command::new("sha256sum"), data)?;
    let text = String::from_utf8_lossy(&out);
    let hex = text.split_whitespace().next().unwrap_or_default();
    ensure!(hex.len() == 64, "sha256sum printed {text:?}");
    Ok(hex.to_string())
}

/// `data` gzip-compressed with no name and no time stored (`gzip -n`), so the same input always
/// gives the same bytes.
pub(crate) fn gzip(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut cmd = Command::new("gzip");
    cmd.args(["-n", "-9", "-c"]);
    filter(cmd, data)
}

/// Runs `cmd` with `data` on its stdin and returns its stdout.
fn filter(mut cmd: Command, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let name = format!("{:?}", cmd.get_program());
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().with_context(|| format!("running {name}"))?;
    let mut stdin = child.stdin.take().with_context(|| format!("{name} stdin"))?;
    // Megabytes through a 64 KiB pipe: written from another thread while this one reads.
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().with_context(|| format!("waiting for {name}"))?;
    writer.join().map_err(|_| anyhow::anyhow!("{name} writer panicked"))?.with_context(|| format!("writing to {name}"))?;
    if !out.status.success() {
        bail!("{name} failed: {}", out.status);
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_ustar_with_a_valid_checksum() {
        let t = {
            let mut t = Tar::default();
            t.file("a/b", 0o755, b"hello").expect("entry");
            t.finish()
        };
        assert_eq!(t.len(), 512 + 512 + 1024);
        assert_eq!(&t[..3], b"a/b");
        assert_eq!(&t[257..263], b"ustar\0");
        assert_eq!(&t[124..136], b"00000000005\0", "size in octal");
        let stored = u32::from_str_radix(std::str::from_utf8(&t[148..154]).expect("ascii"), 8).expect("octal");
        let mut h = t[..512].to_vec();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&t[512..517], b"hello");
    }

    #[test]
    fn references_need_a_version_tag() {
        assert_eq!(tag_of("ghcr.io/tracer-project/tracer:0.1.0"), Some("0.1.0"));
        assert_eq!(tag_of("127.0.0.1:5000/tracer"), None, "a registry port is no tag");
        assert_eq!(tag_of("127.0.0.1:5000/team/tracer:1.2"), Some("1.2"));
        assert!(check_reference("registry.example/team/tracer:0.1.0").is_ok());
        assert!(check_reference("registry.example/team/tracer").is_err());
        assert!(check_reference("registry.example/team/tracer:latest").is_err());
        assert!(check_reference("").is_err());
    }

    #[test]
    fn layers_list_each_parent_directory_once() {
        let files =
            vec![("lib/x/a.so".to_string(), 0o755, vec![1]), ("lib/x/b.so".to_string(), 0o755, vec![2]), ("tracer".to_string(), 0o755, vec![3])];
        let tar = tree_tar(&files).expect("layer");
        let names: Vec<String> = tar
            .chunks(512)
            .filter(|h| h[257..262] == *b"ustar")
            .map(|h| String::from_utf8_lossy(&h[..h.iter().position(|&b| b == 0).unwrap_or(100)]).into_owned())
            .collect();
        assert_eq!(names, ["lib/", "lib/x/", "lib/x/a.so", "lib/x/b.so", "tracer"]);
    }
}
