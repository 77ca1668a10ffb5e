//! One module per subcommand: each turns a validated config into work through a
//! [`crate::session::Session`] of the families it runs, the runner and the outputs. Commands do
//! not import each other; what they share is here.

pub(crate) mod check;
pub(crate) mod diagnose;
pub(crate) mod family;
pub(crate) mod install;
pub(crate) mod job;
pub(crate) mod pods;
pub(crate) mod retrans;
pub(crate) mod serve;
pub(crate) mod watch;

use std::io::{self, Write as _};

use anyhow::Context as _;

use crate::{
    cli::config::WatchCommandConfig,
    probes::{self, CommandId, FamilyOptions, families_of},
    session::Session,
};

/// A session of the families chosen with `--probes` (every one by default) for `watch`,
/// `diagnose` or `serve`, with the NAT reply timeout and the MTU devices the user chose.
async fn start_every_family(command: CommandId, config: &WatchCommandConfig) -> anyhow::Result<Session> {
    let options = FamilyOptions {
        nat: probes::nat::Options { reply_timeout: config.reply_timeout },
        mtu: probes::mtu::Options { ifaces: config.ifaces.clone(), ..probes::mtu::Options::default() },
        ..FamilyOptions::default()
    };
    Session::start(command, families_of(&config.families, &options), &config.trace, options.other_namespace()).await
}

/// Writes `out` to stdout; a reader that went away (`| head`) is not an error.
fn print_stdout(out: &str) -> anyhow::Result<()> {
    match io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
