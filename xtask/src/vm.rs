//! `cargo xtask vm-test`: the same `tracer` binary on several kernels, each booted in qemu (TCG,
//! never KVM) from an initramfs built here (issue 3).
//!
//! Per kernel:
//! 1. fetch the Debian kernel package with `apt-get download` and `dpkg -x` it under
//!    `target/vm/kernels/<package>/` (skipped when already there);
//! 2. build `target/vm/kernels/<package>/initramfs.cpio` (newc, uncompressed): static busybox with
//!    its applet links, the kernel's network modules and their dependencies (decompressed, in load
//!    order), `target/release/tracer` with the libraries `ldd` names, and scripts/vm/init.sh as /init;
//! 3. boot it with a time limit, keep the serial console in `console.log`, and check on the host
//!    what /init printed between its markers: `tracer check` succeeded and found the hooks the
//!    kernel's build configuration provides, `tracer drops` saw a NO_SOCKET drop for UDP to a
//!    closed port (loopback and across a veth pair) with each hook, and (`--with-tests`) every
//!    integration-test binary passed.
//!
//! Kernels run in parallel, `--jobs` at a time (default: one per host CPU, at most 2: a TCG VM
//! keeps one host CPU busy, and more VMs than CPUs only make each slower). Each VM has its own
//! time limit, cut to what is left of the limit for the whole matrix; a kernel not started by
//! then fails. Every kernel ends with one PASS/FAIL line as soon as it is done, and a summary
//! follows at the end.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Kernels of the default matrix: short name, Debian package.
pub(crate) const KERNELS: &[(&str, &str)] = &[("6.1", "linux-image-6.1.0-50-cloud-amd64"), ("6.12", "linux-image-6.12.100+deb12-cloud-amd64")];

/// Modules to put in every initramfs (with their dependencies), when the kernel has them as
/// modules. Built-in ones are skipped; unknown ones are reported and skipped.
const MODULES: &[&str] = &[
    "veth",
    "bridge",
    "nf_conntrack",
    "nf_tables",
    "nft_reject_inet",
    "nft_ct",
    "x_tables",
    "ip_tables",
    "iptable_filter",
    "ipt_REJECT",
    "xt_conntrack",
    "xt_tcpudp",
    // retrans: periodic loss (statistic nth) on large segments (length); nat: DNAT/masquerade.
    "xt_statistic",
    "xt_length",
    "nf_nat",
    "iptable_nat",
    "xt_nat",
    "xt_MASQUERADE",
    "xt_comment",
    "xt_mark",
    "nf_conntrack_netlink",
    "sch_ingress",
    "cls_bpf",
    // mtu: packet-too-big filtered in the client's INPUT.
    "ip6_tables",
    "ip6table_filter",
    // diagnose: loss no drop reason names (an NFQUEUE verdict nobody listens to).
    "xt_NFQUEUE",
    // overlay: the tunnels the CNIs use (6.18 on the host has VXLAN only).
    "vxlan",
    "geneve",
    "ipip",
];

/// The hooks `tracer drops` is run with inside the VM; each must report NO_SOCKET.
const HOOKS: &[&str] = &["tp_btf", "tracepoint"];

pub(crate) struct Options {
    pub kernels: Vec<String>,
    /// Integration-test binaries (tests/ of tracer-tests) to run inside the VM, with the host
    /// tools they call; empty: only the built-in checks of scripts/vm/init.sh
    pub tests: Vec<PathBuf>,
    /// Per VM, from boot to power-off.
    pub timeout: Duration,
    /// For the whole matrix.
    pub total_timeout: Duration,
    /// VMs at a time.
    pub jobs: usize,
    pub memory_mb: u32,
}

struct Kernel {
    package: String,
    /// `lib/modules/<release>`
    release: String,
    root: PathBuf,
    vmlinuz: PathBuf,
}

impl Kernel {
    /// The package's build configuration (`boot/config-<release>`).
    fn config(&self) -> PathBuf {
        self.root.join("tree/boot").join(format!("config-{}", self.release))
    }
}

#[derive(Default)]
struct Outcome {
    name: String,
    passed: bool,
    /// Everything worth knowing, printed under the kernel in the details.
    lines: Vec<String>,
    /// One line for the summary: time, test counts, hooks.
    brief: String,
    /// `SKIPPED ...` lines the tests printed (deduplicated), repeated in the summary.
    skipped: Vec<String>,
    elapsed: Duration,
}

impl Outcome {
    fn failed(name: &str, why: String) -> Self {
        Outcome { name: name.to_string(), lines: vec![format!("FAIL: {why}")], brief: why, ..Outcome::default() }
    }
}

pub(crate) fn vm_test(ws: &Path, tracer: &Path, opts: &Options) -> anyhow::Result<()> {
    let start = Instant::now();
    let deadline = start + opts.total_timeout;
    ensure_host_packages()?;
    let dir = ws.join("target/vm");
    fs::create_dir_all(dir.join("debs"))?;

    let packages: Vec<String> = if opts.kernels.is_empty() {
        KERNELS.iter().map(|(_, p)| (*p).to_string()).collect()
    } else {
        opts.kernels.iter().map(|k| resolve_kernel(k)).collect::<anyhow::Result<_>>()?
    };
    // One after the other: cheap once cached, and concurrent apt-get runs would share debs/.
    let fetched: Vec<Result<Kernel, String>> = packages.iter().map(|p| fetch_kernel(&dir, p).map_err(|e| format!("{e:#}"))).collect();

    let jobs = opts.jobs.clamp(1, packages.len().max(1));
    eprintln!(
        "vm-test: {} kernel(s), {jobs} VM(s) at a time, {} s per VM, {} s for all",
        packages.len(),
        opts.timeout.as_secs(),
        opts.total_timeout.as_secs()
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(packages.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(kernel) = fetched.get(i) else { break };
                    let t = Instant::now();
                    let mut outcome = match kernel {
                        Err(e) => Outcome::failed(&packages[i], format!("fetching the kernel: {e}")),
                        Ok(k) if Instant::now() >= deadline => Outcome::failed(
                            &k.release,
                            format!("not started: the {} s limit for the whole matrix was used up", opts.total_timeout.as_secs()),
                        ),
                        Ok(k) => run_one(ws, tracer, k, opts, deadline).unwrap_or_else(|e| Outcome::failed(&k.release, format!("{e:#}"))),
                    };
                    outcome.elapsed = t.elapsed();
                    // The kernel's line as soon as it is known: the other VM may run for minutes.
                    eprintln!(
                        "vm-test: {} {} after {:.0} s: {}",
                        if outcome.passed { "PASS" } else { "FAIL" },
                        outcome.name,
                        outcome.elapsed.as_secs_f64(),
                        outcome.brief
                    );
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(outcome);
                    }
                }
            });
        }
    });
    let outcomes: Vec<Outcome> = results.into_inner().unwrap_or_default().into_iter().flatten().collect();

    println!("\n==== vm-test details ====");
    for o in &outcomes {
        println!("{} {}", if o.passed { "PASS" } else { "FAIL" }, o.name);
        for l in &o.lines {
            println!("     {l}");
        }
    }
    println!("\n==== vm-test summary ====");
    for o in &outcomes {
        println!("{} {:<28} {:>4.0} s  {}", if o.passed { "PASS" } else { "FAIL" }, o.name, o.elapsed.as_secs_f64(), o.brief);
        for skip in &o.skipped {
            println!("       {skip}");
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    println!(
        "vm-test: {} of {} kernels passed in {:.0} s ({jobs} VM(s) at a time)",
        outcomes.len() - failed,
        outcomes.len(),
        start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        bail!("{failed} of {} kernels failed", outcomes.len());
    }
    Ok(())
}

fn resolve_kernel(spec: &str) -> anyhow::Result<String> {
    if let Some((_, p)) = KERNELS.iter().find(|(short, p)| *short == spec || *p == spec) {
        return Ok((*p).to_string());
    }
    if spec.starts_with("linux-image-") {
        return Ok(spec.to_string());
    }
    let known: Vec<_> = KERNELS.iter().map(|(s, _)| *s).collect();
    bail!("unknown kernel {spec:?}: use one of {known:?} or a Debian linux-image-* package name")
}

fn ensure_host_packages() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for pkg in ["qemu-system-x86", "busybox-static"] {
        let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]).output()?;
        if !String::from_utf8_lossy(&out.stdout).contains("install ok installed") {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("vm-test: installing {missing:?}");
    let install = |update: bool| -> anyhow::Result<bool> {
        if update {
            crate::run(Command::new("apt-get").args(["update", "-q"]))?;
        }
        Ok(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success())
    };
    if !install(false)? && !install(true)? {
        bail!("apt-get install {missing:?} failed");
    }
    Ok(())
}

fn run_one(ws: &Path, tracer: &Path, kernel: &Kernel, opts: &Options, deadline: Instant) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let initramfs = kernel.root.join("initramfs.cpio");
    let notes = build_initramfs(ws, kernel, tracer, &opts.tests, &initramfs)?;
    let prep = t0.elapsed();

    let log = kernel.root.join("console.log");
    let timeout = opts.timeout.min(deadline.saturating_duration_since(Instant::now()));
    eprintln!("vm-test: booting {} (timeout {} s, console: {})", kernel.release, timeout.as_secs(), log.display());
    let t1 = Instant::now();
    let timed_out = boot(kernel, &initramfs, &log, timeout, opts.memory_mb)?;
    let boot_time = t1.elapsed();

    let console = String::from_utf8_lossy(&fs::read(&log)?).replace('\r', "");
    let config = fs::read_to_string(kernel.config()).ok();
    let mut o = evaluate(&kernel.release, &console, timed_out, config.as_deref());
    o.lines.insert(0, format!("package {}", kernel.package));
    o.lines.insert(1, format!("prepare {:.1}s, boot to power-off {:.1}s", prep.as_secs_f64(), boot_time.as_secs_f64()));
    o.lines.extend(notes);
    o.lines.push(format!("console: {}", log.display()));
    Ok(o)
}

fn fetch_kernel(dir: &Path, package: &str) -> anyhow::Result<Kernel> {
    let root = dir.join("kernels").join(package);
    let tree = root.join("tree");
    let stamp = root.join(".extracted");
    if !stamp.exists() {
        let debs = dir.join("debs");
        let find_deb = || -> anyhow::Result<Option<PathBuf>> {
            let prefix = format!("{package}_");
            for e in fs::read_dir(&debs)? {
                let p = e?.path();
                let n = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                if n.starts_with(&prefix) && n.ends_with(".deb") {
                    return Ok(Some(p));
                }
            }
            Ok(None)
        };
        let deb = match find_deb()? {
            Some(d) => d,
            None => {
                eprintln!("vm-test: apt-get download {package}");
                let ok = Command::new("apt-get").arg("download").arg(package).current_dir(&debs).status()?.success();
                if !ok {
                    crate::run(Command::new("apt-get").args(["update", "-q"]))?;
                    crate::run(Command::new("apt-get").arg("download").arg(package).current_dir(&debs))?;
                }
                find_deb()?.with_context(|| format!("apt-get download {package} left no .deb in {}", debs.display()))?
            }
        };
        if tree.exists() {
            fs::remove_dir_all(&tree)?;
        }
        fs::create_dir_all(&tree)?;
        crate::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tree))?;
        fs::write(&stamp, "")?;
    }
    let mods = tree.join("lib/modules");
    let release = fs::read_dir(&mods)
        .with_context(|| format!("reading {}", mods.display()))?
        .next()
        .context("no lib/modules/<release> in the package")??
        .file_name()
        .to_string_lossy()
        .into_owned();
    let vmlinuz = tree.join(format!("boot/vmlinuz-{release}"));
    if !vmlinuz.exists() {
        bail!("{} is missing", vmlinuz.display());
    }
    Ok(Kernel { package: package.to_string(), release, root, vmlinuz })
}

// ---------------------------------------------------------------------------------------------
// initramfs

/// A newc cpio archive written in memory.
#[derive(Default)]
struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        let name = name.trim_start_matches('/');
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040_755, &[], (0, 0));
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_start_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        if !self.files.insert(path.trim_start_matches('/').to_string()) {
            return;
        }
        self.parent(path);
        self.entry(path, 0o100_000 | mode, data, (0, 0));
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.entry(path, 0o120_777, target.as_bytes(), (0, 0));
    }

    fn chardev(&mut self, path: &str, major: u32, minor: u32) {
        self.parent(path);
        self.entry(path, 0o020_600, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.buf
    }
}

/// Host programs the integration tests call, copied in (with their libraries) when tests run.
const TEST_TOOLS: &[&str] = &[
    "/usr/sbin/ip",
    "/usr/sbin/xtables-legacy-multi",
    "/usr/sbin/nft",
    "/usr/sbin/conntrack",
    "/usr/sbin/bpftool",
    // mtu: removing a clsact qdisc (aya cannot) and checking that none is left.
    "/usr/sbin/tc",
    // overlay: flannel's forwarding-database entries.
    "/usr/sbin/bridge",
    "/usr/bin/setpriv",
    "/usr/bin/stat",
    "/usr/bin/python3.11",
];

fn build_initramfs(ws: &Path, k: &Kernel, tracer: &Path, tests: &[PathBuf], out: &Path) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut c = Cpio::default();
    for d in ["dev", "proc", "sys", "tmp", "run", "root", "sys/fs/bpf", "modules", "etc"] {
        c.dir(d);
    }
    c.symlink("var/run", "../run");
    c.chardev("dev/console", 5, 1);
    c.chardev("dev/null", 1, 3);

    // busybox-static and its applets
    let busybox = Path::new("/bin/busybox");
    c.file("bin/busybox", 0o755, &fs::read(busybox).context("reading /bin/busybox (busybox-static)")?);
    // names that the test tools replace (busybox's ip/setpriv/stat lack what the tests use)
    let mut replaced = BTreeSet::new();
    if !tests.is_empty() {
        replaced.extend(["ip", "setpriv", "stat"]);
    }
    let list = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "busybox" && !replaced.contains(applet) {
            c.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    for d in ["sbin", "usr/bin", "usr/sbin"] {
        c.symlink(d, if d.starts_with("usr") { "../bin" } else { "bin" });
    }

    // the tracer and its libraries
    c.file("tracer", 0o755, &fs::read(tracer).with_context(|| format!("reading {}", tracer.display()))?);
    for lib in ldd(tracer)? {
        let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        c.file(&lib.to_string_lossy(), 0o755, &data);
    }

    if !tests.is_empty() {
        add_test_tools(&mut c, tests)?;
        // The Kubernetes client loads the system's roots even for a plain-http test API server,
        // as it would on a node (which has them).
        let roots = Path::new("/etc/ssl/certs/ca-certificates.crt");
        c.file(&roots.to_string_lossy(), 0o644, &fs::read(roots).with_context(|| format!("reading {}", roots.display()))?);
        notes.push(format!("tests: {}", tests.iter().map(|t| t.file_name().unwrap_or_default().to_string_lossy()).collect::<Vec<_>>().join(" ")));
    }

    // modules, dependencies first
    let (order, mod_notes) = module_order(k)?;
    notes.extend(mod_notes);
    let mut names = String::new();
    for (i, path) in order.iter().enumerate() {
        let data = read_module(path)?;
        let base = module_name(path);
        let file = format!("{i:02}-{base}.ko");
        c.file(&format!("modules/{file}"), 0o644, &data);
        names.push_str(&file);
        names.push('\n');
    }
    c.file("modules/order", 0o644, names.as_bytes());

    // The build configuration, where tests that compare against it look (/boot/config-RELEASE).
    if let Ok(config) = fs::read(k.config()) {
        c.file(&format!("boot/config-{}", k.release), 0o644, &config);
    }

    let init = ws.join("scripts/vm/init.sh");
    c.file("init", 0o755, &fs::read(&init).with_context(|| format!("reading {}", init.display()))?);

    let data = c.finish();
    let mut f = fs::File::create(out)?;
    f.write_all(&data)?;
    notes.push(format!(
        "initramfs {:.1} MiB, {} modules: {}",
        data.len() as f64 / (1 << 20) as f64,
        order.len(),
        order.iter().map(|p| module_name(p)).collect::<Vec<_>>().join(" ")
    ));
    Ok(notes)
}

fn add_binary(c: &mut Cpio, src: &Path, dst: &str, libs: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    c.file(dst, 0o755, &fs::read(src).with_context(|| format!("reading {}", src.display()))?);
    libs.extend(ldd(src)?);
    Ok(())
}

/// The integration-test binaries as /tests/<name>, and the tools they call in /bin.
fn add_test_tools(c: &mut Cpio, tests: &[PathBuf]) -> anyhow::Result<()> {
    let mut libs = BTreeSet::new();
    for t in tests {
        let name = t.file_name().unwrap_or_default().to_string_lossy();
        // drops-<hash> -> drops
        let short = name.rsplit_once('-').map_or(&*name, |(n, _)| n);
        add_binary(c, t, &format!("tests/{short}"), &mut libs)?;
    }
    for tool in TEST_TOOLS {
        let src = Path::new(tool);
        let name = src.file_name().unwrap_or_default().to_string_lossy().into_owned();
        add_binary(c, src, &format!("bin/{name}"), &mut libs)?;
    }
    for name in ["iptables-legacy", "ip6tables-legacy", "iptables-legacy-save", "ip6tables-legacy-save", "iptables-legacy-restore"] {
        c.symlink(&format!("bin/{name}"), "xtables-legacy-multi");
    }
    c.symlink("bin/python3", "python3.11");
    // iptables extensions are dlopened from here
    let xt = Path::new("/usr/lib/x86_64-linux-gnu/xtables");
    for e in fs::read_dir(xt).with_context(|| format!("reading {}", xt.display()))? {
        let p = e?.path();
        add_binary(c, &p, &p.to_string_lossy(), &mut libs)?;
    }
    // python: the pure-Python standard library minus what a socket script never imports
    let skip = [
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "site-packages",
        "dist-packages",
        "pydoc_data",
        "__pycache__",
        "lib-dynload",
        "unittest",
        "distutils",
        "config-3.11-x86_64-linux-gnu",
    ];
    let py = Path::new("/usr/lib/python3.11");
    let mut stack = vec![py.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            let n = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            if p.is_dir() {
                if !skip.contains(&n.as_str()) {
                    stack.push(p);
                }
            } else if n.ends_with(".py") {
                c.file(&p.to_string_lossy(), 0o644, &fs::read(&p)?);
            }
        }
    }
    for lib in libs {
        let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        c.file(&lib.to_string_lossy(), 0o755, &data);
    }
    Ok(())
}

/// The libraries (and the loader) `ldd` names for a binary (also what `cargo xtask image` puts
/// beside it).
pub(crate) fn ldd(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

fn module_name(path: &Path) -> String {
    let n = path.file_name().unwrap_or_default().to_string_lossy();
    let n = n.trim_end_matches(".xz").trim_end_matches(".zst").trim_end_matches(".gz");
    n.trim_end_matches(".ko").replace('-', "_")
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let ext = path.extension().unwrap_or_default().to_string_lossy().into_owned();
    let tool = match ext.as_str() {
        "ko" => return Ok(fs::read(path)?),
        "xz" => "xz",
        "zst" => "zstd",
        "gz" => "gzip",
        _ => bail!("unknown module format: {}", path.display()),
    };
    let out = Command::new(tool).arg("-dc").arg(path).output().with_context(|| format!("running {tool}"))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// `depends=` from a module's .modinfo section (the NUL-separated key=value strings).
fn module_depends(data: &[u8]) -> Vec<String> {
    let key = b"depends=";
    let mut deps = Vec::new();
    let mut i = 0;
    while let Some(pos) = data[i..].windows(key.len()).position(|w| w == key) {
        let start = i + pos;
        i = start + key.len();
        if start > 0 && data[start - 1] != 0 {
            continue;
        }
        let end = data[i..].iter().position(|&b| b == 0).map_or(data.len(), |e| i + e);
        let value = String::from_utf8_lossy(&data[i..end]);
        deps.extend(value.split(',').filter(|d| !d.is_empty()).map(|d| d.replace('-', "_")));
        break;
    }
    deps
}

/// The module files to load, dependencies first (no modules.dep in the package: depmod runs at
/// install time, so read `depends=` from each module).
fn module_order(k: &Kernel) -> anyhow::Result<(Vec<PathBuf>, Vec<String>)> {
    let base = k.root.join("tree/lib/modules").join(&k.release);
    let mut index = BTreeMap::new();
    let mut stack = vec![base.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(".ko") {
                index.insert(module_name(&p), p);
            }
        }
    }
    let builtin: BTreeSet<String> =
        fs::read_to_string(base.join("modules.builtin")).unwrap_or_default().lines().map(|l| module_name(Path::new(l))).collect();

    let mut notes = Vec::new();
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
        depth: usize,
    ) -> anyhow::Result<()> {
        if done.contains(name) || depth > 32 {
            return Ok(());
        }
        let path = index.get(name).with_context(|| format!("dependency {name} not found"))?;
        for dep in module_depends(&read_module(path)?) {
            visit(&dep, index, done, order, depth + 1)?;
        }
        done.insert(name.to_string());
        order.push(path.clone());
        Ok(())
    }
    let mut builtins = Vec::new();
    for m in MODULES {
        if index.contains_key(*m) {
            visit(m, &index, &mut done, &mut order, 0)?;
        } else if builtin.contains(*m) {
            builtins.push(*m);
        } else {
            notes.push(format!("module {m}: neither a module nor built in, skipped"));
        }
    }
    if !builtins.is_empty() {
        notes.push(format!("built in: {}", builtins.join(" ")));
    }
    Ok((order, notes))
}

// ---------------------------------------------------------------------------------------------
// qemu

/// Boots the VM with the console going to `log`; true when it had to be killed at the timeout.
fn boot(k: &Kernel, initramfs: &Path, log: &Path, timeout: Duration, memory_mb: u32) -> anyhow::Result<bool> {
    let out = fs::File::create(log)?;
    let err = out.try_clone()?;
    // TCG only: -enable-kvm hangs on the development machines.
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-machine", "q35,accel=tcg", "-smp", "1", "-m", &memory_mb.to_string()])
        .args(["-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(&k.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 oops=panic rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------------
// evaluation of what /init printed

struct Section {
    body: String,
    rc: Option<i32>,
    /// VM uptime at the end of the section
    t: Option<f64>,
}

fn sections(console: &str) -> BTreeMap<String, Section> {
    let mut map = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in console.lines() {
        if let Some(name) = line.strip_prefix("===VMTEST-BEGIN ").and_then(|l| l.strip_suffix("===")) {
            current = Some((name.to_string(), String::new()));
        } else if let Some(rest) = line.strip_prefix("===VMTEST-END ").and_then(|l| l.strip_suffix("===")) {
            let (name, tail) = rest.rsplit_once(" rc=").unwrap_or((rest, ""));
            let (rc, t) = tail.split_once(" t=").unwrap_or((tail, ""));
            if let Some((cur, body)) = current.take()
                && cur == name
            {
                map.insert(cur, Section { body, rc: rc.parse().ok(), t: t.parse().ok() });
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    // a section that never ended (the VM died inside it)
    if let Some((name, body)) = current {
        map.insert(name, Section { body, rc: None, t: None });
    }
    map
}

/// The `SKIPPED <what>: <reason> (kernel X)` lines in test output, without the `!!!!` the tests
/// frame them with (libtest may put a test's name before one on the same line).
fn skip_lines(body: &str) -> impl Iterator<Item = String> + '_ {
    body.lines().filter_map(|l| l.find("SKIPPED ").map(|i| &l[i..])).map(|l| l.trim_end_matches(['!', ' ']).to_string())
}

/// What the kernel's build configuration says about each hook kind, to compare with what
/// `tracer check` found by attaching. The VMs add no restriction of their own (no lockdown, no
/// LSM policy), so here the two must agree exactly. (The 6.18 development machine shows why
/// this holds only in the VMs: its config has everything fentry needs, and it refuses fentry
/// with EPERM.)
fn expected_hooks(config: &str) -> Vec<(&'static str, bool, &'static str)> {
    let y = |k: &str| config.lines().any(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')) == Some("y"));
    let all = |ks: &[&str]| ks.iter().all(|k| y(k));
    const KPROBE: &[&str] = &["CONFIG_KPROBES"];
    const FENTRY: &[&str] = &["CONFIG_BPF_JIT", "CONFIG_DEBUG_INFO_BTF", "CONFIG_FUNCTION_TRACER", "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS"];
    const TP_BTF: &[&str] = &["CONFIG_DEBUG_INFO_BTF", "CONFIG_BPF_EVENTS"];
    const TRACEPOINT: &[&str] = &["CONFIG_BPF_EVENTS"];
    // TCX came with 6.6 and CONFIG_NET_XGRESS.
    const TCX: &[&str] = &["CONFIG_NET_XGRESS"];
    vec![
        ("kprobe", all(KPROBE), "CONFIG_KPROBES"),
        ("fentry", all(FENTRY), "CONFIG_BPF_JIT, DEBUG_INFO_BTF, FUNCTION_TRACER, DYNAMIC_FTRACE_WITH_DIRECT_CALLS"),
        ("tp_btf", all(TP_BTF), "CONFIG_DEBUG_INFO_BTF, BPF_EVENTS"),
        ("tracepoint", all(TRACEPOINT), "CONFIG_BPF_EVENTS"),
        ("tcx", all(TCX), "CONFIG_NET_XGRESS"),
    ]
}

fn evaluate(release: &str, console: &str, timed_out: bool, config: Option<&str>) -> Outcome {
    let s = sections(console);
    let mut lines = Vec::new();
    let mut passed = true;
    let mut fail = |lines: &mut Vec<String>, msg: String| {
        passed = false;
        lines.push(format!("FAIL: {msg}"));
    };

    if timed_out {
        fail(&mut lines, "qemu timed out and was killed".into());
    }
    if !console.contains("===VMTEST-DONE===") {
        fail(&mut lines, "/init did not finish (no ===VMTEST-DONE===)".into());
        let tail: Vec<_> = console.lines().rev().take(15).collect();
        lines.extend(tail.into_iter().rev().map(|l| format!("| {l}")));
    }

    let mut times: Vec<(f64, &str)> = s.iter().filter_map(|(n, sec)| Some((sec.t?, n.as_str()))).collect();
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    lines.push(format!("VM uptime at end of: {}", times.iter().map(|(t, n)| format!("{n} {t:.1}s")).collect::<Vec<_>>().join(", ")));

    if let Some(m) = s.get("modules") {
        if m.rc != Some(0) {
            fail(&mut lines, format!("loading modules: {}", m.body.trim()));
        } else {
            lines.push(format!("modules loaded: {}", m.body.trim()));
        }
    }
    if let Some(b) = s.get("btf") {
        lines.push(format!("/sys/kernel/btf: {}", b.body.trim()));
    }

    let mut hooks_brief = String::new();
    let mut config_skip = None;
    match s.get("check") {
        None => fail(&mut lines, "no `tracer check` output".into()),
        Some(c) => {
            if c.rc != Some(0) {
                fail(&mut lines, format!("`tracer check` exited {:?}", c.rc));
            }
            match serde_json::from_str::<serde_json::Value>(&c.body) {
                Ok(v) => {
                    // The table (section check-table) is what a reader looks at; from the JSON
                    // only what is compared here.
                    let have: Vec<&str> = v["hooks"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(_, h)| h["available"].as_bool() == Some(true))
                        .map(|(k, _)| k.as_str())
                        .collect();
                    hooks_brief = format!("hooks: {}", have.join(" "));
                    match config {
                        None => config_skip = Some(format!("SKIPPED hooks vs kernel config: the package has no boot/config-* (kernel {release})")),
                        Some(config) => {
                            for (kind, want, why) in expected_hooks(config) {
                                let got = v["hooks"][kind]["available"].as_bool();
                                if got != Some(want) {
                                    fail(&mut lines, format!("check: hook {kind} is {got:?}; the kernel config ({why}) says {want}"));
                                }
                            }
                        }
                    }
                }
                Err(e) => fail(&mut lines, format!("`tracer check -o json` is not JSON ({e}): {}", c.body.trim())),
            }
        }
    }
    if let Some(t) = s.get("check-table") {
        lines.extend(t.body.lines().map(|l| format!("check | {l}")));
    }

    if let Some(l) = s.get("lab")
        && l.rc != Some(0)
    {
        fail(&mut lines, format!("veth lab setup failed: {}", l.body.trim()));
    }

    for hook in HOOKS {
        let name = format!("drops-{hook}");
        let stderr = s.get(&format!("{name}-stderr")).map(|e| e.body.trim().to_string()).unwrap_or_default();
        let Some(d) = s.get(&name) else {
            fail(&mut lines, format!("{name}: no output"));
            continue;
        };
        let mut loopback = 0;
        let mut veth = 0;
        let mut other = BTreeMap::<String, usize>::new();
        for line in d.body.lines().filter(|l| l.starts_with('{')) {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            let reason = v["reason"].as_str().unwrap_or("?");
            let dst = v["dst"].as_str().unwrap_or("");
            match (reason, dst) {
                ("NO_SOCKET", "127.0.0.1:9999") => loopback += 1,
                ("NO_SOCKET", "10.99.0.2:9998") => veth += 1,
                _ => *other.entry(format!("{reason}->{dst}")).or_default() += 1,
            }
        }
        lines.push(format!(
            "{name}: rc={:?}, NO_SOCKET loopback={loopback} veth={veth}, other={other:?}; stderr: {}",
            d.rc,
            stderr.replace('\n', " | ")
        ));
        // SIGTERM is how /init stops it; 0 is the expected exit
        if d.rc != Some(0) {
            fail(&mut lines, format!("{name}: tracer exited {:?}", d.rc));
        }
        if loopback == 0 {
            fail(&mut lines, format!("{name}: no NO_SOCKET drop for UDP to 127.0.0.1:9999"));
        }
        if veth == 0 {
            fail(&mut lines, format!("{name}: no NO_SOCKET drop for UDP to 10.99.0.2:9998 (veth)"));
        }
    }

    let (mut tests_passed, mut tests_failed) = (0u64, 0u64);
    let mut skipped: BTreeSet<String> = config_skip.into_iter().collect();
    let mut test_sections = 0;
    for (name, t) in s.iter().filter(|(n, _)| n.starts_with("test-")) {
        test_sections += 1;
        let results: Vec<_> = t.body.lines().filter(|l| l.starts_with("test result:")).collect();
        for r in &results {
            tests_passed += crate::count_before(r, " passed");
            tests_failed += crate::count_before(r, " failed");
        }
        skipped.extend(skip_lines(&t.body));
        lines.push(format!("{name}: rc={:?} {}", t.rc, results.join(" | ")));
        if t.rc != Some(0) {
            fail(&mut lines, format!("{name} exited {:?}", t.rc));
            lines.extend(t.body.lines().filter(|l| l.contains("FAILED") || l.contains("panicked")).map(|l| format!("| {l}")));
        }
    }
    lines.extend(skipped.iter().cloned());

    if let Some(d) = s.get("dmesg")
        && !d.body.trim().is_empty()
    {
        lines.extend(d.body.lines().map(|l| format!("dmesg: {l}")));
    }

    let tests = if test_sections == 0 {
        "smoke only (no --with-tests)".to_string()
    } else {
        format!("tests: {tests_passed} passed, {tests_failed} failed, {} skipped", skipped.len())
    };
    let brief = format!("{tests}; {hooks_brief}");
    Outcome { name: release.to_string(), passed, lines, brief, skipped: skipped.into_iter().collect(), ..Outcome::default() }
}

/// The integration-test binaries (tests/tests/*.rs) run inside each VM: `check` and `lab`, each
/// probe family's own (named after its command, from the family registry), `diagnose`,
/// `overlay` (IPIP and Geneve exist only there), `scope` (the node scope's kernel filter, in
/// every family's programs) and `recording` (a recording replays the live run on every kernel).
fn test_binary_names() -> Vec<&'static str> {
    let families = tracer_common::family::FamilyId::ALL.map(|f| f.command());
    ["check", "lab"].into_iter().chain(families).chain(["diagnose", "overlay", "scope", "recording"]).collect()
}

/// The newest executable of each of [`test_binary_names`] under target/release/deps, built first
/// with `cargo test --release -p tracer-tests --no-run` unless `no_build`.
pub(crate) fn test_binaries(ws: &Path, no_build: bool, only: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let names = test_binary_names();
    if let Some(unknown) = only.iter().find(|o| !names.contains(&o.as_str())) {
        anyhow::bail!("--test {unknown}: not one of the VM's test binaries ({})", names.join(", "));
    }
    if !no_build {
        crate::run(
            Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["test", "--release", "-p", "tracer-tests", "--no-run"])
                .current_dir(ws),
        )?;
    }
    let deps = ws.join("target/release/deps");
    let mut found = Vec::new();
    for stem in names.iter().filter(|t| only.is_empty() || only.iter().any(|o| o == *t)) {
        let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
        for e in fs::read_dir(&deps)? {
            let p = e?.path();
            let n = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let Some(hash) = n.strip_prefix(&format!("{stem}-")) else { continue };
            if hash.contains('.') {
                continue;
            }
            let t = p.metadata()?.modified()?;
            if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                best = Some((t, p));
            }
        }
        found.push(best.with_context(|| format!("no {stem}-* test binary in {}", deps.display()))?.1);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_lines_are_found_and_unframed() {
        let body = "running 3 tests\ntest a ... \n!!!!!!!! SKIPPED a: no hash-ptr (kernel 5.10.0) !!!!!!!!\nok\ntest b ... ok\n";
        assert_eq!(skip_lines(body).collect::<Vec<_>>(), ["SKIPPED a: no hash-ptr (kernel 5.10.0)"]);
    }

    #[test]
    fn hooks_expected_from_config() {
        let config = "CONFIG_KPROBES=y\nCONFIG_BPF_JIT=y\nCONFIG_DEBUG_INFO_BTF=y\nCONFIG_FUNCTION_TRACER=y\n\
                      # CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS is not set\nCONFIG_BPF_EVENTS=y\nCONFIG_KPROBES_ON_FTRACE=y\n";
        let got: Vec<_> = expected_hooks(config).into_iter().map(|(k, v, _)| (k, v)).collect();
        assert_eq!(got, [("kprobe", true), ("fentry", false), ("tp_btf", true), ("tracepoint", true), ("tcx", false)]);
    }

    #[test]
    fn summary_counts_tests_and_skips() {
        let console = "===VMTEST-BEGIN test-drops===\n\
                       !!!!!!!! SKIPPED x: why (kernel 6.1) !!!!!!!!\n\
                       test result: ok. 9 passed; 0 failed; 0 ignored\n\
                       ===VMTEST-END test-drops rc=0 t=50.0===\n\
                       ===VMTEST-BEGIN test-lab===\ntest result: FAILED. 6 passed; 1 failed; 0 ignored\n\
                       ===VMTEST-END test-lab rc=101 t=60.0===\n===VMTEST-DONE===\n";
        let o = evaluate("6.1", console, false, None);
        assert!(!o.passed);
        assert!(o.brief.starts_with("tests: 15 passed, 1 failed, 1 skipped"), "{}", o.brief);
        assert!(o.skipped.iter().any(|l| l == "SKIPPED x: why (kernel 6.1)"), "{:?}", o.skipped);
    }
}
