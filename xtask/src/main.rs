//! Developer tasks: `cargo xtask setup | drops | test | bench | soak | image | release | vm-test | fuzz`.
//!
//! Every task that builds first runs scripts/setup.sh, which installs what is missing and returns
//! in seconds when nothing is, so each task works on a fresh machine as it is: the build's
//! packages always, the test lab's (`--lab`: containerd, qemu, a registry...) only for the tasks
//! that run tests, and the release tools (`--release`: static glibc, the arm64 cross toolchain)
//! only for `release`.

use std::{
    env,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod bench;
mod bench_node;
mod bench_recordings;
mod fuzz;
mod image;
mod progstats;
mod release;
mod soak;
mod vm;

#[derive(Parser)]
#[command(name = "xtask", about = "tracer developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build needs, and with --lab what the tests need (idempotent)
    Setup {
        /// Also the test lab: containerd, runc, qemu, prometheus, a registry, skopeo...
        #[arg(long)]
        lab: bool,
        /// Also the release tools: static glibc, the arm64 cross toolchain and Rust target, qemu-user
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run `tracer drops` on this node (30 s unless you pass --duration)
    Drops {
        /// Arguments for `tracer drops`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, check formatting and clippy, build, and run every test: unit tests and the
    /// privileged integration tests
    Test {
        /// Only the unit tests (no root, no namespaces)
        #[arg(long)]
        unit_only: bool,
    },
    /// Measure tracer's overhead, storm throughput (beside bpftrace), start-up and memory; the
    /// table goes to BENCHMARKS.md (needs root; see xtask/src/bench.rs)
    Bench {
        /// Seconds, one repetition of each: checks that every figure is measured (CI)
        #[arg(long)]
        smoke: bool,
        /// Repetitions of each iperf3 measurement, with and without tracer
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Seconds per iperf3 run
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Seconds of each drop storm
        #[arg(long, default_value_t = 5)]
        storm_secs: u64,
        /// Where the table goes [default: BENCHMARKS.md, or target/bench-smoke.md with --smoke]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Use target/release/tracer as it is (no setup, no build)
        #[arg(long)]
        no_build: bool,
        /// Measure this tracer binary as it is instead (no setup, no build): an older build, to
        /// compare two versions in alternating runs (give --out too, or TRACER_BENCH_ONLY=node,
        /// which prints its table)
        #[arg(long, value_name = "PATH")]
        tracer: Option<PathBuf>,
    },
    /// `tracer serve` for minutes under a steady drop load, with 1,000 pods through its pods file
    /// and 10 scrapes/s: slopes of RSS, fds and series, and every counter against the events it
    /// counted; the report goes to BENCHMARKS.md (needs root; not in CI; see xtask/src/soak.rs)
    Soak {
        /// Length of the run, the warm-up of 5.5 minutes included (at least 7.5)
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Where the report goes [default: BENCHMARKS.md]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Use target/release/tracer as it is (no setup, no build)
        #[arg(long)]
        no_build: bool,
    },
    /// Build target/tracer-image.tar: tracer's container image (docker-archive) from
    /// target/release/tracer and the libraries ldd names, without docker (xtask/src/image.rs)
    Image {
        /// The image reference it is tagged with [default: $TRACER_IMAGE, else
        /// ghcr.io/tracer-project/tracer:<version>]
        #[arg(long)]
        tag: Option<String>,
        /// Use target/release/tracer as it is (no setup, no build)
        #[arg(long)]
        no_build: bool,
    },
    /// Build the release artefacts into target/release-artifacts: static binaries (glibc linked in,
    /// amd64 and arm64), the kubectl plugin archives and their krew manifest, the image (OCI layout and
    /// docker-archive) and SHA256SUMS (xtask/src/release.rs)
    Release {
        /// Architectures that must be built (repeatable: amd64, arm64) [default: this machine's,
        /// and the others when their cross toolchain is installed]
        #[arg(long = "arch", value_name = "ARCH")]
        arches: Vec<String>,
        /// Output directory, replaced [default: target/release-artifacts]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Boot other kernels in qemu (TCG) and run the same tracer binary in each (see xtask/src/vm.rs)
    VmTest {
        /// Kernel to test (repeatable): 6.1, 6.12, or a Debian linux-image-* package; default: all
        #[arg(long = "kernel", value_name = "KVER")]
        kernels: Vec<String>,
        /// Seconds before a VM is killed [default: 180, or 1800 with --with-tests]
        #[arg(long)]
        timeout: Option<u64>,
        /// Seconds for the whole matrix: VMs still running then are killed, kernels not started
        /// fail [default: 900, or 2700 with --with-tests]
        #[arg(long)]
        total_timeout: Option<u64>,
        /// VMs at a time [default: one per host CPU, at most 2]
        #[arg(long)]
        jobs: Option<usize>,
        /// VM memory in MiB
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Use target/release/tracer as it is (no setup, no build)
        #[arg(long)]
        no_build: bool,
        /// Also run the integration tests (tests/) inside each VM
        #[arg(long)]
        with_tests: bool,
        /// With --with-tests: only these test binaries (repeatable; e.g. diagnose) [default: all]
        #[arg(long = "test", value_name = "NAME", requires = "with_tests")]
        only: Vec<String>,
    },
    /// Run every fuzz target (fuzz/) under libFuzzer, one at a time, and report executions per
    /// target (installs cargo-fuzz if missing; see xtask/src/fuzz.rs)
    Fuzz {
        /// Seconds per target
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Only this target (repeatable) [default: all]
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup { lab, release } => {
            let mut groups = Vec::new();
            if lab {
                groups.push(Setup::Lab);
            }
            if release {
                groups.push(Setup::Release);
            }
            setup(&groups)
        }
        Task::Drops { args } => {
            setup(&[])?;
            let bin = build_tracer()?;
            let mut cmd = Command::new(bin);
            cmd.arg("drops").args(&args);
            if !args.iter().any(|a| a == "--duration" || a.starts_with("--duration=")) {
                cmd.args(["--duration", "30s"]);
            }
            run(&mut cmd)
        }
        Task::Test { unit_only } => {
            setup(if unit_only { &[] } else { &[Setup::Lab] })?;
            style()?;
            let bin = build_tracer()?;
            let mut totals = Totals::default();
            let mut result =
                run_tests(cargo().args(["test", "--release", "--no-fail-fast", "-p", "tracer", "-p", "tracer-common", "-p", "xtask"]), &mut totals);
            if !unit_only && result.is_ok() {
                // After the unit tests: the image must hold the very binary the tests run.
                // TRACER_IMAGE is the image reference (tracer's --image default); the tests get
                // the tarball as TRACER_IMAGE_ARCHIVE.
                let image = build_image(&bin, &image::reference()?)?;
                let mut cmd = cargo();
                cmd.args(["test", "--release", "--no-fail-fast", "-p", "tracer-tests", "--tests"])
                    .env("TRACER_BIN", &bin)
                    .env("TRACER_IMAGE_ARCHIVE", &image);
                // In CI a privileged test that cannot run is a failure, not a skip.
                if env::var_os("CI").is_some() {
                    cmd.env("TRACER_REQUIRE_PRIVILEGED", "1");
                }
                result = run_tests(&mut cmd, &mut totals);
            }
            // One closing line for the whole suite (the last `test result:` of cargo is often a
            // crate with no tests, which says nothing about the run).
            println!("tests: {} passed, {} failed", totals.passed, totals.failed);
            if !totals.panics.is_empty() {
                println!("the failures' panics (their first {PANIC_LINES} lines):");
                for line in &totals.panics {
                    println!("  {line}");
                }
            }
            result
        }
        Task::Bench { smoke, reps, secs, storm_secs, out, no_build, tracer } => {
            let tracer = match tracer {
                Some(path) => path.canonicalize().with_context(|| format!("--tracer {}", path.display()))?,
                None => tracer_binary(no_build, &[Setup::Lab])?,
            };
            bench::bench(&workspace(), &bench::Options { tracer, smoke, reps, secs, storm_secs, out })
        }
        Task::Soak { minutes, out, no_build } => {
            let tracer = tracer_binary(no_build, &[Setup::Lab])?;
            soak::soak(&workspace(), &soak::Options { tracer, minutes, out })
        }
        Task::Image { tag, no_build } => {
            let bin = tracer_binary(no_build, &[])?;
            let tag = match tag {
                Some(tag) => tag,
                None => image::reference()?,
            };
            build_image(&bin, &tag).map(drop)
        }
        Task::Release { arches, out } => {
            setup(&[Setup::Release])?;
            let out = out.unwrap_or_else(|| workspace().join("target/release-artifacts"));
            release::release(&workspace(), &release::Options { arches, out })
        }
        Task::VmTest { kernels, timeout, total_timeout, jobs, memory, no_build, with_tests, only } => {
            let bin = tracer_binary(no_build, &[Setup::Lab])?;
            let tests = if with_tests { vm::test_binaries(&workspace(), no_build, &only)? } else { Vec::new() };
            // Under TCG the integration tests take about 2 minutes per kernel; the limits leave
            // room for a loaded machine without letting a hung VM hold CI for long.
            let secs = std::time::Duration::from_secs;
            let timeout = secs(timeout.unwrap_or(if with_tests { 1800 } else { 180 }));
            let total_timeout = secs(total_timeout.unwrap_or(if with_tests { 2700 } else { 900 }));
            // A TCG VM keeps one host CPU busy: more VMs than CPUs would only slow each down.
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            let jobs = jobs.unwrap_or(cpus.min(2));
            let opts = vm::Options { kernels, tests, timeout, total_timeout, jobs, memory_mb: memory };
            vm::vm_test(&workspace(), &bin, &opts)
        }
        Task::Fuzz { secs, targets } => {
            setup(&[])?;
            fuzz::fuzz(&workspace(), &fuzz::Options { secs, targets })
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace());
    cmd
}

/// A group of scripts/setup.sh beyond the build's packages.
#[derive(Clone, Copy)]
enum Setup {
    /// `--lab`: what the tests, the VM matrix and the benchmark run.
    Lab,
    /// `--release`: what `cargo xtask release` builds and checks with.
    Release,
}

/// Runs scripts/setup.sh: the build's packages and toolchain, and `groups`.
fn setup(groups: &[Setup]) -> anyhow::Result<()> {
    let mut cmd = Command::new("bash");
    cmd.arg(workspace().join("scripts/setup.sh"));
    for group in groups {
        cmd.arg(match group {
            Setup::Lab => "--lab",
            Setup::Release => "--release",
        });
    }
    run(&mut cmd)
}

/// The style checks of `cargo xtask test`: rustfmt (nightly: rustfmt.toml's import options are
/// unstable) and clippy with every warning an error, the workspace lints included. tracer-ebpf
/// only builds for the BPF target, so clippy checks it as tracer/build.rs (aya-build) compiles
/// it: nightly, `-Z build-std=core`, the `bpf_target_arch` cfg, in a target directory of its own.
fn style() -> anyhow::Result<()> {
    let nightly_cargo = || {
        let mut cmd = Command::new("rustup");
        cmd.args(["run", "nightly", "cargo"]).current_dir(workspace());
        // What cargo set for this process would pick the stable toolchain's tools.
        for key in ["CARGO", "RUSTC", "RUSTC_WORKSPACE_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
            cmd.env_remove(key);
        }
        cmd
    };
    eprintln!("style: cargo +nightly fmt --all -- --check");
    run(nightly_cargo().args(["fmt", "--all", "--", "--check"]))
        .context("style: the code is not formatted as rustfmt.toml says (diff above); run `cargo +nightly fmt --all`")?;
    eprintln!("style: cargo clippy --workspace --exclude tracer-ebpf --all-targets --release -- -D warnings");
    run(cargo().args(["clippy", "--workspace", "--exclude", "tracer-ebpf", "--all-targets", "--release", "--", "-D", "warnings"]))
        .context("style: clippy found warnings (above); fix them, or #[expect] one with a reason where the lint is wrong")?;
    eprintln!("style: cargo +nightly clippy -p tracer-ebpf --target bpfel-unknown-none -- -D warnings");
    let bpf_arch = format!("--cfg=bpf_target_arch=\"{}\"", env::consts::ARCH);
    let target_dir = workspace().join("target/clippy-bpf");
    run(nightly_cargo()
        .args(["clippy", "-p", "tracer-ebpf", "--bins", "--lib", "--release", "--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--", "-D", "warnings"])
        .env("CARGO_ENCODED_RUSTFLAGS", bpf_arch))
    .context("style: clippy found warnings in tracer-ebpf (above); fix them, or #[expect] one with a reason where the lint is wrong")
}

/// target/release/tracer: as it is with `no_build`, else after the set-up (with `groups`) and a
/// build.
fn tracer_binary(no_build: bool, groups: &[Setup]) -> anyhow::Result<PathBuf> {
    if no_build {
        return Ok(workspace().join("target/release/tracer"));
    }
    setup(groups)?;
    build_tracer()
}

fn build_tracer() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "tracer"]))?;
    let bin = workspace().join("target/release/tracer");
    if !bin.exists() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

/// target/tracer-image.tar from `bin`; says where it went and its id.
fn build_image(bin: &Path, tag: &str) -> anyhow::Result<PathBuf> {
    let out = workspace().join("target/tracer-image.tar");
    let id = image::build(bin, tag, &out).with_context(|| format!("building {}", out.display()))?;
    println!("image: {} ({tag}, {id}, {:.1} MiB)", out.display(), std::fs::metadata(&out)?.len() as f64 / f64::from(1 << 20));
    Ok(out)
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    /// The first lines of each panic, said again after the closing line: CI shows a long run's
    /// head and tail, and a failing test's own output (a report per round) can push its panic
    /// message out of both.
    panics: Vec<String>,
}

/// How many lines of a panic's message are said again at the end, and how long each may be.
const PANIC_LINES: usize = 6;
const PANIC_LINE_CHARS: usize = 300;

/// Runs a `cargo test`, passing its output through and adding up its `test result:` lines.
fn run_tests(cmd: &mut Command, totals: &mut Totals) -> anyhow::Result<()> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("running {cmd:?}"))?;
    let stdout = child.stdout.take().context("test stdout")?;
    let mut panic_lines_left = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        if line.starts_with("thread '") && line.contains("panicked at") {
            panic_lines_left = PANIC_LINES;
        }
        if panic_lines_left > 0 {
            panic_lines_left -= 1;
            totals.panics.push(line.chars().take(PANIC_LINE_CHARS).collect());
        }
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.passed += count_before(rest, " passed");
            totals.failed += count_before(rest, " failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The number just before `label` in "ok. 42 passed; 0 failed; ...".
fn count_before(text: &str, label: &str) -> u64 {
    text.split(';')
        .find(|part| part.ends_with(label))
        .and_then(|part| part.trim_end_matches(label).rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
