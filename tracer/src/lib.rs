//! tracer: eBPF network troubleshooting for Kubernetes nodes.
//!
//! The whole program is this library; `main.rs` only calls [`main`]. A library, so that the fuzz
//! targets (the cargo-fuzz crate in `fuzz/`) can reach the parsers of outside bytes while every
//! module stays `pub(crate)`: the crate's public surface is [`main`], plus `fuzzing` (one entry
//! point per target) in test builds and with the `fuzzing` feature, never in a release build.
//!
//! [`main`] parses arguments into a validated config before any syscall, runs the command, and
//! maps errors to exit codes: 2 for bad usage or input (nothing was attached), 1 for failures
//! at run time. Errors print as one line with their cause chain.

mod bench;
mod cli;
mod commands;
mod diagnose;
mod events;
mod install;
mod job;
mod kernel;
mod loader;
mod output;
mod pods;
mod probes;
mod runner;
mod session;
mod usage;

// Not in the shipped binary: unit tests (the short fuzz pass) and fuzz/ (feature `fuzzing`) have it.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

use std::process::ExitCode;

use clap::error::ErrorKind;

use crate::{
    cli::{
        Cli, Command, UsageError,
        config::{InstallConfig, JobConfig, PodsCommandConfig, RetransCommandConfig, ServeCommandConfig, WatchCommandConfig},
    },
    probes::CannotRun,
};

/// Runs tracer as the command line asks and returns its exit code: 0, 2 for bad usage or input
/// (nothing was attached), 1 for a failure at run time.
pub fn main() -> ExitCode {
    // kube-rs logs each failed request at ERROR on its own; the pod layer reports those failures
    // itself, once, as one line with their cause.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,kube_client=off,kube_runtime=off")).format(write_message).init();

    let prog = program_name();
    let cli = match parse(prog) {
        Ok(cli) => cli,
        Err(err) => return clap_error(&err, prog),
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One line, the whole cause chain: "what failed: because: because". Verifier logs
            // span lines; fold them so the line stays one line.
            let line = format!("{err:#}");
            let line: Vec<&str> = line.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            eprintln!("tracer: error: {}", line.join(" | "));
            if is_usage(&err) { ExitCode::from(2) } else { ExitCode::from(1) }
        }
    }
}

/// Every message for the user on stderr, in one style: `tracer: warning: ...` (and `error`,
/// `info`, `debug: MODULE: ...`). Warnings are `log::warn!` everywhere, so `RUST_LOG` governs them
/// all and they read the same whichever layer says them.
fn write_message(out: &mut env_logger::fmt::Formatter, record: &log::Record<'_>) -> std::io::Result<()> {
    use std::io::Write as _;
    match record.level() {
        log::Level::Error => writeln!(out, "tracer: error: {}", record.args()),
        log::Level::Warn => writeln!(out, "tracer: warning: {}", record.args()),
        log::Level::Info => writeln!(out, "tracer: {}", record.args()),
        level => writeln!(out, "tracer: {}: {}: {}", level.as_str().to_lowercase(), record.target(), record.args()),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Family(command) => {
            let config = command.into_config()?;
            tokio_runtime()?.block_on(commands::family::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Retrans(args) => {
            let config = RetransCommandConfig::from_args(args)?;
            tokio_runtime()?.block_on(commands::retrans::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch(args) => {
            let config = WatchCommandConfig::from_args(args)?;
            if !config.from.is_empty() {
                commands::watch::run_from(&config)?;
                return Ok(ExitCode::SUCCESS);
            }
            tokio_runtime()?.block_on(commands::watch::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose(args) => {
            let config = WatchCommandConfig::diagnose_from_args(args)?;
            if !config.from.is_empty() {
                commands::diagnose::run_from(&config)?;
                return Ok(ExitCode::SUCCESS);
            }
            tokio_runtime()?.block_on(commands::diagnose::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            let config = ServeCommandConfig::from_args(args)?;
            tokio_runtime()?.block_on(commands::serve::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Job(args) => match JobConfig::from_args(args)? {
            JobConfig::Render(specs) => commands::job::render(&specs),
            JobConfig::Run(config) => tokio_runtime()?.block_on(commands::job::run(config)),
            JobConfig::Logs(config) => tokio_runtime()?.block_on(commands::job::logs(config)),
            JobConfig::List(config) => tokio_runtime()?.block_on(commands::job::list(config)),
            JobConfig::Delete(config) => tokio_runtime()?.block_on(commands::job::delete(config)),
        },
        Command::Install(args) => commands::install::print(&InstallConfig::from_args(args)?),
        Command::Pods(args) => {
            let config = PodsCommandConfig::from_args(args)?;
            tokio_runtime()?.block_on(commands::pods::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => {
            let runs = commands::check::run(&args)?;
            Ok(if runs { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
    }
}

/// How the user called us: `tracer`, or `kubectl tracer` when run as the kubectl plugin
/// (kubectl execs `kubectl-tracer` from PATH: a copy or a link to this binary).
fn program_name() -> &'static str {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let base = std::path::Path::new(&argv0).file_name().unwrap_or_default().to_string_lossy().into_owned();
    if base == "kubectl-tracer" { "kubectl tracer" } else { "tracer" }
}

fn parse(prog: &'static str) -> Result<Cli, clap::Error> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let command = Cli::command().bin_name(prog).display_name(prog);
    Cli::from_arg_matches(&command.try_get_matches()?)
}

fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread: the work is one ring buffer and one output; a pool would only add wakeups.
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<UsageError>()) && !err.chain().any(|e| e.is::<CannotRun>())
}

/// clap's errors are several lines with usage; the contract wants one line and exit 2.
/// Help and version requests print in full and succeed.
fn clap_error(err: &clap::Error, prog: &str) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand { ExitCode::from(2) } else { ExitCode::SUCCESS }
        }
        _ => {
            let rendered = err.render().to_string();
            let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            // "required arguments were not provided:" names them on the following lines.
            let mut line = first.to_string();
            if first.ends_with(':') {
                let named: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
                line = format!("{first} {}", named.join(", "));
            }
            eprintln!("tracer: error: {line} (see '{prog} --help')");
            ExitCode::from(2)
        }
    }
}
