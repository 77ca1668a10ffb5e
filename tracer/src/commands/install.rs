//! `tracer install print`: the manifests of `install.rs` on stdout, or the line that removes
//! them. Nothing is sent to a cluster.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::{cli::config::InstallConfig, install, job};

/// `tracer install print [--uninstall]`.
pub(crate) fn print(config: &InstallConfig) -> anyhow::Result<ExitCode> {
    if config.uninstall {
        super::print_stdout(&install::uninstall_line())?;
        return Ok(ExitCode::SUCCESS);
    }
    job::warn_version(&config.image);
    let yaml = install::manifests(config).context("install print")?;
    super::print_stdout(&yaml)?;
    Ok(ExitCode::SUCCESS)
}
