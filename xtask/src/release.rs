//! `cargo xtask release`: the artefacts of a release, built and checked here, in
//! `target/release-artifacts/` (replaced on every run):
//!
//! - `tracer-linux-<arch>`: the static binary (glibc, `-C target-feature=+crt-static`; stripped),
//!   for amd64 and, cross-compiled, arm64. Each is checked to be a static ELF of its
//!   architecture (no `PT_INTERP`), and run: `--version` (through qemu-user for a foreign
//!   architecture, when installed) and, natively where BPF programs may be loaded, `tracer check`.
//! - `kubectl-tracer_v<version>_linux_<arch>.tar.gz`: the kubectl plugin (the same binary named
//!   `kubectl-tracer`, with the licence files), and `tracer.yaml`, the krew manifest rendered from
//!   the template `plugins/krew/tracer.yaml` with those archives' URLs and sha256.
//! - `tracer-image-<version>-linux-<arch>.tar`: the image (just `/tracer` and CA roots) as a
//!   docker-archive per architecture, and `tracer-image-<version>.oci.tar`: an OCI image layout
//!   (`oci-archive:`) whose tag is a multi-architecture index over them. Both are tagged with the
//!   image reference: `$TRACER_IMAGE`, else `ghcr.io/tracer-project/tracer:<version>`.
//! - `SHA256SUMS` of every file above.
//!
//! The architecture of this machine is required; another one is built when its Rust target and a
//! cross C toolchain with a static glibc (`<arch>-linux-gnu-gcc`, which also links) are installed
//! (`scripts/setup.sh --release` installs both for arm64), and otherwise skipped with the reason
//! said. `--arch` makes the named ones required.
//!
//! Why glibc and not musl: measured here, tracer built for musl does the userspace work per
//! event (decode, name the pods, write JSON: `cargo xtask bench`'s `decode_enrich_json`) about
//! 1.7 times slower (musl's allocator), and does not compile as it is (`malloc_trim`, and
//! `ioctl`'s request type differs). What static glibc costs: NSS modules cannot be loaded, so
//! only the `files` and `dns` sources built into glibc resolve names (/etc/hosts, then the DNS
//! servers of /etc/resolv.conf), which is all the Kubernetes client (hyper's getaddrinfo
//! resolver) needs; `getaddrinfo` is linked with a warning saying so.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, ensure};

use crate::image::{self, Image, Tar};

/// The crate version: the binary's `--version`, the image tag, the release's name.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where the release's assets are downloaded from (krew fetches the plugin archives there):
/// `$TRACER_RELEASE_URL`, else this project's GitHub release of the version.
const RELEASE_URL_ENV: &str = "TRACER_RELEASE_URL";

/// The krew manifest template (`{{version}}`, `{{platforms}}`), relative to the workspace.
const KREW_TEMPLATE: &str = "plugins/krew/tracer.yaml";

/// Licence files shipped in the plugin archive, from the workspace root.
const LICENSES: &[&str] = &["LICENSE-APACHE", "LICENSE-MIT"];

/// What `cargo xtask release` was asked for.
pub(crate) struct Options {
    /// Image platform names (`amd64`, `arm64`) that must be built; empty: this machine's, and
    /// the others when their toolchain is here.
    pub(crate) arches: Vec<String>,
    /// The output directory (replaced).
    pub(crate) out: PathBuf,
}

/// A release target: the Rust target and the names it goes by.
#[derive(Clone, Copy)]
struct Target {
    /// The image/krew platform name.
    arch: &'static str,
    /// Rust's `target_arch`.
    rust_arch: &'static str,
    /// The Rust target triple (glibc: built with `+crt-static`).
    triple: &'static str,
    /// Debian's GNU triple: `<gnu>-gcc` and `<gnu>-strip` cross-compile, link and strip for it.
    gnu: &'static str,
    /// `e_machine` in its ELF header.
    elf_machine: u16,
}

const TARGETS: &[Target] = &[
    Target { arch: "amd64", rust_arch: "x86_64", triple: "x86_64-unknown-linux-gnu", gnu: "x86_64-linux-gnu", elf_machine: 62 },
    Target { arch: "arm64", rust_arch: "aarch64", triple: "aarch64-unknown-linux-gnu", gnu: "aarch64-linux-gnu", elf_machine: 183 },
];

impl Target {
    fn native(&self) -> bool {
        self.rust_arch == std::env::consts::ARCH
    }

    /// Why this target cannot be built here, or None when it can.
    fn missing(&self, installed_targets: &str) -> Option<String> {
        let mut missing = Vec::new();
        if !installed_targets.lines().any(|l| l.trim() == self.triple) {
            missing.push(format!("the Rust target {} is not installed (`rustup target add {}`)", self.triple, self.triple));
        }
        let gcc = self.gcc();
        if !on_path(&gcc) {
            let package = if self.native() { "gcc".to_string() } else { format!("gcc-{}", self.gnu.replace('_', "-")) };
            missing.push(format!("no C compiler and linker {gcc} on PATH (Debian {package})"));
        } else {
            // Static linking needs glibc's archives, which a bare compiler lacks.
            let libc = Command::new(&gcc).arg("-print-file-name=libc.a").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
            if !libc.as_ref().is_ok_and(|p| Path::new(p).is_file()) {
                let package = if self.native() { "libc6-dev".to_string() } else { format!("libc6-dev-{}-cross", self.arch) };
                missing.push(format!("{gcc} finds no static glibc (libc.a; Debian {package})"));
            }
        }
        (!missing.is_empty()).then(|| missing.join("; "))
    }

    /// The C compiler that compiles ring's C code and links the binary.
    fn gcc(&self) -> String {
        if self.native() { "cc".to_string() } else { format!("{}-gcc", self.gnu) }
    }
}

/// What one target's build produced.
struct Built {
    target: Target,
    /// The stripped static binary in the output directory.
    binary: PathBuf,
    archive: PathBuf,
    archive_sha256: String,
    image: Image,
    /// `file`'s description of the binary (for the summary).
    file_says: String,
}

/// Builds, checks and writes every artefact (see the module documentation).
pub(crate) fn release(ws: &Path, opts: &Options) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let reference = image::reference()?;
    let tag = image::tag_of(&reference).context("the image reference has no tag")?.to_string();
    let base_url = std::env::var(RELEASE_URL_ENV)
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("https://github.com/tracer-project/tracer/releases/download/v{VERSION}"));
    for arch in &opts.arches {
        ensure!(TARGETS.iter().any(|t| t.arch == arch), "unknown --arch {arch}: {}", TARGETS.iter().map(|t| t.arch).collect::<Vec<_>>().join(", "));
    }
    println!("release: tracer {VERSION}, image {reference}, downloads from {base_url}");

    let out = &opts.out;
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("removing the previous {}", out.display()))?;
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let installed = rustup_targets()?;
    let mut built = Vec::new();
    let mut skipped = Vec::new();
    for target in TARGETS {
        let required = if opts.arches.is_empty() { target.native() } else { opts.arches.iter().any(|a| a == target.arch) };
        if !required && !opts.arches.is_empty() {
            continue;
        }
        if let Some(why) = target.missing(&installed) {
            ensure!(!required, "release: {} cannot be built here: {why}", target.arch);
            println!("release: {}: SKIPPED, cannot cross-compile here: {why}", target.arch);
            skipped.push(format!("{}: {why}", target.arch));
            continue;
        }
        let t = Instant::now();
        let b = build_target(ws, out, *target).with_context(|| format!("release: {}", target.arch))?;
        println!("release: {}: built and checked in {:.0} s", target.arch, t.elapsed().as_secs_f64());
        built.push(b);
    }
    ensure!(!built.is_empty(), "release: nothing was built");

    let manifest = krew_manifest(ws, &built, &base_url)?;
    let manifest_path = out.join("tracer.yaml");
    fs::write(&manifest_path, manifest).with_context(|| format!("writing {}", manifest_path.display()))?;

    for b in &built {
        let tar = out.join(format!("tracer-image-{VERSION}-linux-{}.tar", b.target.arch));
        let id = b.image.write_docker_archive(&reference, &tar)?;
        println!("release: image {reference} ({}): {} (docker-archive, id {id}, {})", b.target.arch, tar.display(), size(&tar));
    }
    let oci_tar = out.join(format!("tracer-image-{VERSION}.oci.tar"));
    let index = write_oci_archive(&built, &tag, &oci_tar)?;
    println!("release: image {reference} ({}): {} (OCI layout, index {index}, {})", arch_list(&built), oci_tar.display(), size(&oci_tar));
    verify_oci_archive(&oci_tar, &tag, built.len())?;

    let sums = sha256sums(out)?;
    let sums_path = out.join("SHA256SUMS");
    fs::write(&sums_path, &sums).with_context(|| format!("writing {}", sums_path.display()))?;

    println!("release: {} in {:.0} s:", out.display(), t0.elapsed().as_secs_f64());
    for b in &built {
        println!("  {}: {}", b.binary.display(), b.file_says);
        println!("  {}: sha256 {}", b.archive.display(), b.archive_sha256);
    }
    print!("{sums}");
    for s in &skipped {
        println!("release: not built: {s}");
    }
    Ok(())
}

/// Builds the binary of `target`, strips it into `out`, checks it, and makes its plugin archive
/// and image.
fn build_target(ws: &Path, out: &Path, target: Target) -> anyhow::Result<Built> {
    let mut cargo = crate::cargo();
    // With --target, even the native one, the flags reach only the target's code, not build
    // scripts and proc macros (which cannot be static); and the static build lives in a target
    // directory of its own, apart from target/release (the tests' dynamic binary).
    cargo.args(["build", "--release", "--locked", "-p", "tracer", "--target", target.triple]);
    let upper = target.triple.to_uppercase().replace('-', "_");
    cargo.env(format!("CARGO_TARGET_{upper}_RUSTFLAGS"), "-C target-feature=+crt-static");
    if !target.native() {
        // The linker, and the C compiler of ring (through the cc crate), for the foreign target.
        cargo.env(format!("CARGO_TARGET_{upper}_LINKER"), target.gcc()).env(format!("CC_{}", target.triple.replace('-', "_")), target.gcc());
    }
    println!("release: {}: cargo build --release --locked -p tracer --target {} (+crt-static)", target.arch, target.triple);
    crate::run(&mut cargo)?;
    let built = ws.join("target").join(target.triple).join("release/tracer");
    let binary = out.join(format!("tracer-linux-{}", target.arch));
    // Symbols only help a debugger; stripped, the binary is about a fifth smaller.
    let strip = if target.native() { "strip".to_string() } else { format!("{}-strip", target.gnu) };
    crate::run(Command::new(&strip).arg("-o").arg(&binary).arg(&built)).with_context(|| format!("stripping {} ({strip})", built.display()))?;

    let bytes = fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    let elf = Elf::parse(&bytes).with_context(|| binary.display().to_string())?;
    ensure!(
        elf.machine == target.elf_machine,
        "{} is for ELF machine {}, not {} ({})",
        binary.display(),
        elf.machine,
        target.elf_machine,
        target.arch
    );
    ensure!(!elf.interpreter, "{} is not static: it names a dynamic loader (PT_INTERP)", binary.display());
    let file_says = describe(&binary);
    println!("release: {}: {} ({}): {file_says}", target.arch, binary.display(), size(&binary));
    if target.native() {
        let ldd = Command::new("ldd").arg(&binary).output().context("running ldd")?;
        let said = format!("{}{}", String::from_utf8_lossy(&ldd.stdout), String::from_utf8_lossy(&ldd.stderr));
        ensure!(
            said.contains("statically linked") || said.contains("not a dynamic executable"),
            "ldd lists libraries of {}: {said}",
            binary.display()
        );
        println!("release: {}: ldd: {}", target.arch, said.trim());
    }
    run_checks(&binary, target)?;

    let archive = out.join(format!("kubectl-tracer_v{VERSION}_linux_{}.tar.gz", target.arch));
    let mut tar = Tar::default();
    tar.file("kubectl-tracer", 0o755, &bytes)?;
    for license in LICENSES {
        let path = ws.join(license);
        tar.file(license, 0o644, &fs::read(&path).with_context(|| format!("reading {}", path.display()))?)?;
    }
    let gz = image::gzip(&tar.finish())?;
    let archive_sha256 = image::sha256(&gz)?;
    image::write_atomic(&archive, &gz)?;

    let created_by = format!("cargo xtask release: tracer {VERSION}, static ({}), and CA roots", target.triple);
    let image = Image::assemble(&binary, target.arch, &[], &created_by)?;
    Ok(Built { target, binary, archive, archive_sha256, image, file_says })
}

/// Runs the binary: `--version` (natively, or through qemu-user for a foreign architecture when
/// it is installed), and `check` natively when this process may load BPF programs (root in a
/// container build may not). Says what it could not run and why.
fn run_checks(binary: &Path, target: Target) -> anyhow::Result<()> {
    let mut runner = Vec::new();
    if !target.native() {
        let qemu = format!("qemu-{}", target.rust_arch);
        if !on_path(&qemu) {
            println!(
                "release: {}: not run: no {qemu} here (Debian qemu-user) to run a {} binary on {}",
                target.arch,
                target.arch,
                std::env::consts::ARCH
            );
            return Ok(());
        }
        runner.push(qemu);
    }
    let command = |args: &[&str]| {
        let mut cmd = Command::new(runner.first().map_or(binary.as_os_str(), |q| q.as_ref()));
        if !runner.is_empty() {
            cmd.arg(binary);
        }
        cmd.args(args);
        cmd
    };
    let version = command(&["--version"]).output().with_context(|| format!("running {} --version", binary.display()))?;
    let said = String::from_utf8_lossy(&version.stdout);
    ensure!(
        version.status.success() && said.trim() == format!("tracer {VERSION}"),
        "{} --version said {said:?} ({})",
        binary.display(),
        version.status
    );
    println!("release: {}: `tracer --version`{}: {}", target.arch, runner.first().map(|q| format!(" under {q}")).unwrap_or_default(), said.trim());
    if !runner.is_empty() {
        // qemu-user has no bpf(2): `check` would only report that.
        println!("release: {}: `tracer check` not run: this kernel is {}", target.arch, std::env::consts::ARCH);
        return Ok(());
    }
    if !may_load_bpf() {
        println!("release: {}: `tracer check` not run: this process may not load BPF programs (no CAP_BPF or CAP_SYS_ADMIN)", target.arch);
        return Ok(());
    }
    let check = command(&["check"]).output().with_context(|| format!("running {} check", binary.display()))?;
    let text = String::from_utf8_lossy(&check.stdout);
    ensure!(check.status.success(), "{} check failed ({}):\n{text}{}", binary.display(), check.status, String::from_utf8_lossy(&check.stderr));
    let commands = text.lines().skip_while(|l| !l.starts_with("COMMAND")).skip(1).filter(|l| l.split_whitespace().nth(1) == Some("yes")).count();
    println!("release: {}: `tracer check`: exit 0, {commands} commands run on this kernel", target.arch);
    Ok(())
}

/// Whether this process has CAP_BPF or CAP_SYS_ADMIN in its effective set.
fn may_load_bpf() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).unwrap_or(0);
    caps & (1 << CAP_SYS_ADMIN | 1 << CAP_BPF) != 0
}

/// The krew manifest: the template with the version and one platform per built archive.
fn krew_manifest(ws: &Path, built: &[Built], base_url: &str) -> anyhow::Result<String> {
    let path = ws.join(KREW_TEMPLATE);
    let template = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    ensure!(
        template.contains("{{platforms}}\n") && template.contains("{{version}}"),
        "{} lacks {{{{version}}}} or a {{{{platforms}}}} line",
        path.display()
    );
    let mut platforms = String::new();
    for b in built {
        let name = b.archive.file_name().and_then(|n| n.to_str()).context("archive name")?;
        write!(
            platforms,
            "    - selector:\n        matchLabels:\n          os: linux\n          arch: {arch}\n      uri: {base_url}/{name}\n      sha256: \"{sha}\"\n      bin: kubectl-tracer\n      files:\n        - from: kubectl-tracer\n          to: .\n        - from: LICENSE-*\n          to: .\n",
            arch = b.target.arch,
            sha = b.archive_sha256,
        )?;
    }
    // The template's own comment explains the template; the result says where it came from.
    let body: String = template.lines().skip_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    let rendered = body.replace("{{platforms}}\n", &platforms).replace("{{version}}", VERSION);
    ensure!(!rendered.contains("{{"), "{} has a placeholder this xtask does not fill", path.display());
    Ok(format!("# Rendered by `cargo xtask release` from {KREW_TEMPLATE} (tracer {VERSION}; {}).\n{rendered}", arch_list(built)))
}

/// The OCI layout of every built image as one tar (`oci-archive:`, also what `tar -x` gives a
/// layout directory for `oci:`); returns the index's digest.
fn write_oci_archive(built: &[Built], tag: &str, out: &Path) -> anyhow::Result<String> {
    let dir = out.with_extension("d");
    let images: Vec<&Image> = built.iter().map(|b| &b.image).collect();
    let index = image::write_oci_layout(&images, tag, &dir)?;
    let mut files = Vec::new();
    collect_files(&dir, &dir, &mut files)?;
    let tar = image::tree_tar(&files)?;
    image::write_atomic(out, &tar)?;
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(index)
}

/// Every file under `dir` as (path relative to `root`, mode, bytes).
fn collect_files(root: &Path, dir: &Path, files: &mut Vec<(String, u32, Vec<u8>)>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(root, &path, files)?;
        } else {
            let name = path.strip_prefix(root)?.to_str().context("path is not UTF-8")?.to_string();
            files.push((name, 0o644, fs::read(&path).with_context(|| format!("reading {}", path.display()))?));
        }
    }
    Ok(())
}

/// Reads the OCI archive back with skopeo, which checks every blob's digest on the way: the tag
/// must be an index of `arches` images. Said and skipped when skopeo is not installed.
fn verify_oci_archive(tar: &Path, tag: &str, arches: usize) -> anyhow::Result<()> {
    if !on_path("skopeo") {
        println!("release: OCI layout not read back: no skopeo here (Debian skopeo; scripts/setup.sh --release)");
        return Ok(());
    }
    let source = format!("oci-archive:{}:{tag}", tar.display());
    let raw = Command::new("skopeo").args(["inspect", "--raw", &source]).output().context("running skopeo inspect")?;
    ensure!(raw.status.success(), "skopeo inspect --raw {source}: {}", String::from_utf8_lossy(&raw.stderr));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).context("skopeo inspect --raw printed no JSON")?;
    let n = index["manifests"].as_array().map_or(0, Vec::len);
    ensure!(n == arches, "{source} is an index of {n} images, not {arches}: {index}");
    let copy = std::env::temp_dir().join(format!("tracer-release-check-{}", std::process::id()));
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--all", "--insecure-policy", &source])
        .arg(format!("dir:{}", copy.display()))
        .status()
        .context("running skopeo copy");
    let _ = fs::remove_dir_all(&copy);
    ensure!(status?.success(), "skopeo copy --all {source} dir:... failed (a blob does not match its digest?)");
    println!("release: OCI layout read back by skopeo: an index of {n} images, every blob matches its digest");
    Ok(())
}

/// `sha256sum`'s format (`HASH  NAME`) for every file of `dir`, by name.
fn sha256sums(dir: &Path) -> anyhow::Result<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut sums = String::new();
    for name in names {
        let data = fs::read(dir.join(&name)).with_context(|| format!("reading {name}"))?;
        writeln!(sums, "{}  {name}", image::sha256(&data)?)?;
    }
    Ok(sums)
}

/// The fields of an ELF header and program headers that say for what and how it was linked.
struct Elf {
    machine: u16,
    /// A `PT_INTERP` header: the binary needs a dynamic loader.
    interpreter: bool,
}

impl Elf {
    /// Parses a 64-bit little-endian ELF file.
    fn parse(b: &[u8]) -> anyhow::Result<Elf> {
        const PT_INTERP: u32 = 3;
        ensure!(b.len() > 64 && b.starts_with(b"\x7fELF") && b[4] == 2 && b[5] == 1, "not a 64-bit little-endian ELF file");
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let mut phoff = [0u8; 8];
        phoff.copy_from_slice(&b[0x20..0x28]);
        let phoff = usize::try_from(u64::from_le_bytes(phoff))?;
        let (entsize, count) = (usize::from(u16_at(0x36)), usize::from(u16_at(0x38)));
        let mut interpreter = false;
        for i in 0..count {
            let at = phoff + i * entsize;
            let header = b.get(at..at + 4).with_context(|| format!("program header {i} lies outside the file"))?;
            interpreter |= u32::from_le_bytes([header[0], header[1], header[2], header[3]]) == PT_INTERP;
        }
        Ok(Elf { machine: u16_at(0x12), interpreter })
    }
}

/// The installed Rust targets of the toolchain cargo builds with.
fn rustup_targets() -> anyhow::Result<String> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output().context("running rustup target list --installed")?;
    ensure!(out.status.success(), "rustup target list --installed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `file`'s one-line description, or why there is none.
fn describe(path: &Path) -> String {
    match Command::new("file").arg("-b").arg(path).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "(`file` not available)".to_string(),
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn size(path: &Path) -> String {
    fs::metadata(path).map_or_else(|e| format!("size unknown: {e}"), |m| format!("{:.1} MiB", m.len() as f64 / f64::from(1 << 20)))
}

fn arch_list(built: &[Built]) -> String {
    built.iter().map(|b| b.target.arch).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_parse_finds_the_machine_and_the_interpreter() {
        let mut b = vec![0u8; 64 + 2 * 56];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[0x12..0x14].copy_from_slice(&183u16.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        b[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        let elf = Elf::parse(&b).expect("parse");
        assert_eq!(elf.machine, 183);
        assert!(!elf.interpreter, "static");
        b[64 + 56..64 + 60].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert!(Elf::parse(&b).expect("parse").interpreter, "dynamic");
        assert!(Elf::parse(&b[..40]).is_err(), "truncated");
    }

    #[test]
    fn the_krew_template_renders_every_platform_with_its_hash() {
        let ws = crate::workspace();
        let template = fs::read_to_string(ws.join(KREW_TEMPLATE)).expect("template");
        assert!(!template.contains("sha256: \"0000"), "the template carries no made-up hash");
        let built: Vec<Built> = TARGETS
            .iter()
            .map(|&target| Built {
                target,
                binary: PathBuf::from("tracer"),
                archive: PathBuf::from(format!("kubectl-tracer_v{VERSION}_linux_{}.tar.gz", target.arch)),
                archive_sha256: format!("{:064x}", target.elf_machine),
                image: Image::empty_for_tests(target.arch),
                file_says: String::new(),
            })
            .collect();
        let yaml = krew_manifest(&ws, &built, "https://example.test/v1").expect("render");
        for b in &built {
            assert!(yaml.contains(&format!("arch: {}\n", b.target.arch)), "{yaml}");
            assert!(yaml.contains(&format!("sha256: \"{}\"", b.archive_sha256)), "{yaml}");
            assert!(yaml.contains(&format!("uri: https://example.test/v1/kubectl-tracer_v{VERSION}_linux_{}.tar.gz", b.target.arch)), "{yaml}");
        }
        assert!(yaml.contains(&format!("version: v{VERSION}\n")), "{yaml}");
        assert!(!yaml.contains("{{"), "{yaml}");
    }
}
