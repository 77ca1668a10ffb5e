//! Developer tasks: `cargo xtask setup | drops | test`.
//!
//! Every task that builds first runs scripts/setup.sh, which installs what is missing and returns
//! in seconds when nothing is, so each task works on a fresh machine as it is.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "tracer developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (idempotent)
    Setup,
    /// Set up, build, and run `tracer drops` on this node (30 s unless you pass --duration)
    Drops {
        /// Arguments for `tracer drops`
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and run every test: unit tests and the privileged integration tests
    Test {
        /// Only the unit tests (no root, no namespaces)
        #[arg(long)]
        unit_only: bool,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Setup => setup(),
        Task::Drops { args } => {
            setup()?;
            let bin = build_tracer()?;
            let mut cmd = Command::new(bin);
            cmd.arg("drops").args(&args);
            if !args.iter().any(|a| a == "--duration" || a.starts_with("--duration=")) {
                cmd.args(["--duration", "30s"]);
            }
            run(&mut cmd)
        }
        Task::Test { unit_only } => {
            setup()?;
            let bin = build_tracer()?;
            run(cargo().args(["test", "--release", "-p", "tracer", "-p", "tracer-common"]))?;
            if unit_only {
                return Ok(());
            }
            let mut cmd = cargo();
            cmd.args(["test", "--release", "-p", "tracer-tests"]).env("TRACER_BIN", &bin);
            // In CI a privileged test that cannot run is a failure, not a skip.
            if env::var_os("CI").is_some() {
                cmd.env("TRACER_REQUIRE_PRIVILEGED", "1");
            }
            run(&mut cmd)
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

fn setup() -> anyhow::Result<()> {
    run(Command::new("bash").arg(workspace().join("scripts/setup.sh")))
}

fn build_tracer() -> anyhow::Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "tracer"]))?;
    let bin = workspace().join("target/release/tracer");
    if !bin.exists() {
        bail!("{} was not built", bin.display());
    }
    Ok(bin)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
