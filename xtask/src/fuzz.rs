//! `cargo xtask fuzz`: every fuzz target of `tracer::fuzzing` (the binaries of fuzz/) under
//! libFuzzer through cargo-fuzz, one at a time for a bounded time each, then a table of
//! executions per target.
//!
//! The build is cargo-fuzz's: nightly, optimised, with debug assertions (overflow checks) and
//! AddressSanitizer, in target/fuzz (a second, instrumented build of tracer and its
//! dependencies: 8 minutes cold on the 2-CPU machine, CONTRIBUTING.md "Fuzzing"). Each
//! target's working corpus is target/fuzz-corpus/TARGET (kept between runs, so coverage
//! accumulates), seeded read-only from the committed fuzz/corpus/TARGET; a crash, leak, timeout
//! or out-of-memory input goes to target/fuzz-artifacts/TARGET/ and fails the task; each
//! target's libFuzzer log is target/fuzz-logs/TARGET.log.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

/// The cargo-fuzz release `cargo xtask fuzz` installs when it finds none.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub(crate) struct Options {
    /// Seconds per target.
    pub secs: u64,
    /// Only these targets (empty: all).
    pub targets: Vec<String>,
}

/// One target's run, as libFuzzer reported it.
struct Outcome {
    target: String,
    executions: Option<u64>,
    /// libFuzzer's executions per second.
    rate: Option<u64>,
    secs: f64,
    corpus: usize,
    /// None: ran its time; Some: what it found and where the input is.
    failure: Option<String>,
}

/// `rustup run nightly cargo ...` with what cargo set for this process removed (it would pick
/// the stable toolchain's tools).
fn nightly_cargo(workspace: &Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo"]).current_dir(workspace);
    for key in ["CARGO", "RUSTC", "RUSTC_WORKSPACE_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(key);
    }
    cmd
}

/// The targets: the binaries in fuzz/fuzz_targets (a unit test of tracer checks they are
/// `tracer::fuzzing::TARGETS`).
fn all_targets(workspace: &Path) -> anyhow::Result<Vec<String>> {
    let dir = workspace.join("fuzz/fuzz_targets");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".rs").map(String::from))
        .collect();
    names.sort();
    Ok(names)
}

pub(crate) fn fuzz(workspace: &Path, opts: &Options) -> anyhow::Result<()> {
    let all = all_targets(workspace)?;
    if let Some(unknown) = opts.targets.iter().find(|t| !all.contains(t)) {
        bail!("no fuzz target {unknown}; the targets are {}", all.join(", "));
    }
    let targets: Vec<&String> = all.iter().filter(|t| opts.targets.is_empty() || opts.targets.contains(t)).collect();

    let has_cargo_fuzz =
        nightly_cargo(workspace).args(["fuzz", "--version"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !has_cargo_fuzz {
        eprintln!("fuzz: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about 1.5 minutes)");
        let start = Instant::now();
        crate::run(Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())).args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
        eprintln!("fuzz: cargo-fuzz installed in {:.0}s", start.elapsed().as_secs_f64());
    }

    let target_dir = workspace.join("target/fuzz");
    let fuzz_args = |cmd: &mut Command| {
        cmd.args(["--fuzz-dir", "fuzz"]).arg("--target-dir").arg(&target_dir);
    };
    eprintln!("fuzz: building the fuzz targets (instrumented: ASan, debug assertions) in {}", target_dir.display());
    let start = Instant::now();
    let mut build = nightly_cargo(workspace);
    build.args(["fuzz", "build"]);
    fuzz_args(&mut build);
    crate::run(&mut build).context("building the fuzz targets")?;
    eprintln!("fuzz: built in {:.0}s", start.elapsed().as_secs_f64());

    let mut outcomes = Vec::new();
    for target in targets {
        let corpus = workspace.join("target/fuzz-corpus").join(target);
        let artifacts = workspace.join("target/fuzz-artifacts").join(target);
        let logs = workspace.join("target/fuzz-logs");
        for dir in [&corpus, &artifacts, &logs] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log_path = logs.join(format!("{target}.log"));
        let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        eprintln!("fuzz: {target}: {} s (log: {})", opts.secs, log_path.display());
        let mut cmd = nightly_cargo(workspace);
        cmd.args(["fuzz", "run", target]);
        fuzz_args(&mut cmd);
        // The working corpus first (new inputs go there), the committed seeds read-only after.
        cmd.arg(&corpus).arg(workspace.join("fuzz/corpus").join(target)).arg("--").args([
            format!("-max_total_time={}", opts.secs),
            // One input running 10 s is a hang; 2 GiB of memory is a leak or unbounded
            // allocation (the default limits, named so the report can say them).
            "-timeout=10".into(),
            "-rss_limit_mb=2048".into(),
            "-print_final_stats=1".into(),
            format!("-artifact_prefix={}/", artifacts.display()),
        ]);
        let start = Instant::now();
        let status = cmd.stdout(log.try_clone()?).stderr(log).status().with_context(|| format!("running {cmd:?}"))?;
        let secs = start.elapsed().as_secs_f64();
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let failure = (!status.success()).then(|| failure(&text).unwrap_or_else(|| format!("exited with {status}; see {}", log_path.display())));
        let outcome = Outcome {
            target: target.clone(),
            executions: executions(&text),
            rate: stat(&text, "average_exec_per_sec"),
            secs,
            corpus: count_files(&corpus),
            failure,
        };
        eprintln!("fuzz: {}", line(&outcome));
        outcomes.push(outcome);
    }

    println!("{:<16} {:>12} {:>10} {:>8} {:>8}  result", "target", "executions", "exec/s", "secs", "corpus");
    for o in &outcomes {
        println!("{}", line(o));
    }
    let failed: Vec<&str> = outcomes.iter().filter(|o| o.failure.is_some()).map(|o| o.target.as_str()).collect();
    if !failed.is_empty() {
        bail!(
            "fuzzing found crashes in {} (inputs under target/fuzz-artifacts/; replay one with `cargo +nightly fuzz run --fuzz-dir fuzz --target-dir target/fuzz TARGET FILE`)",
            failed.join(", ")
        );
    }
    Ok(())
}

fn line(o: &Outcome) -> String {
    let executions = o.executions.map_or("?".to_string(), |n| n.to_string());
    let rate = o.rate.map_or("?".to_string(), |n| n.to_string());
    format!("{:<16} {executions:>12} {rate:>10} {:>8.0} {:>8}  {}", o.target, o.secs, o.corpus, o.failure.as_deref().unwrap_or("ok"))
}

/// One of libFuzzer's final statistics (-print_final_stats): `stat::NAME: N`.
fn stat(log: &str, name: &str) -> Option<u64> {
    log.lines().find_map(|l| l.strip_prefix("stat::")?.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
}

/// libFuzzer's count of inputs run: `stat::number_of_executed_units`, else the last `#N` status
/// line (a run that crashed may print no statistics).
fn executions(log: &str) -> Option<u64> {
    stat(log, "number_of_executed_units").or_else(|| log.lines().rev().find_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok()))
}

/// What libFuzzer found (`==N== ERROR: libFuzzer: deadly signal`, `... timeout`, a panic's
/// message) and the file it wrote the input to.
fn failure(log: &str) -> Option<String> {
    let what = log
        .lines()
        .find(|l| l.contains("panicked at") || l.contains("ERROR: libFuzzer:") || l.contains("ERROR: AddressSanitizer:"))
        .map(|l| l.trim().to_string())?;
    let input = log.lines().find_map(|l| l.split("Test unit written to ").nth(1)).map(str::trim);
    Some(match input {
        Some(path) => format!("{what} -> {path}"),
        None => what,
    })
}

fn count_files(dir: &PathBuf) -> usize {
    fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_counts_and_crashes() {
        let done = "#65536\tpulse  cov: 900 ft: 2000 corp: 50/3Kb exec/s: 21845 rss: 60Mb\n#70001\tDONE   cov: 901 ft: 2001 corp: 51/3Kb lim: 4096 exec/s: 23333 rss: 61Mb\nDone 70001 runs in 3 second(s)\nstat::number_of_executed_units: 70001\n";
        assert_eq!(executions(done), Some(70001));
        assert_eq!(stat(&format!("{done}stat::average_exec_per_sec:     23333\n"), "average_exec_per_sec"), Some(23333));
        assert_eq!(executions("#12\tINITED cov: 3\n"), Some(12));
        assert_eq!(failure(done), None);
        let crash = "thread '<unnamed>' panicked at tracer/src/kernel/btf.rs:130:13:\nattempt to add with overflow\n==7== ERROR: libFuzzer: deadly signal\nartifact_prefix='target/fuzz-artifacts/btf/'; Test unit written to target/fuzz-artifacts/btf/crash-da39a3\n";
        assert_eq!(
            failure(crash).as_deref(),
            Some("thread '<unnamed>' panicked at tracer/src/kernel/btf.rs:130:13: -> target/fuzz-artifacts/btf/crash-da39a3")
        );
    }
}
