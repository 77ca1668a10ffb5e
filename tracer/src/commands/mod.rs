//! One module per subcommand: each turns a validated config into work through a
//! [`crate::session::Session`] of the families it runs, the runner and the outputs. Commands do
//! not import each other; what they share is here.

pub(crate) mod check;
pub(crate) mod diagnose;
pub(crate) mod family;
pub(crate) mod job;
pub(crate) mod pods;
pub(crate) mod retrans;
pub(crate) mod serve;
pub(crate) mod watch;

use crate::{
    cli::config::WatchCommandConfig,
    probes::{self, CommandId, FamilyOptions, families_of},
    session::Session,
};

/// A session of every family (`watch`, `diagnose`, `serve`), with the NAT reply timeout and the
/// MTU devices the user chose.
async fn start_every_family(command: CommandId, config: &WatchCommandConfig) -> anyhow::Result<Session> {
    let options = FamilyOptions {
        nat: probes::nat::Options { reply_timeout: config.reply_timeout },
        mtu: probes::mtu::Options { ifaces: config.ifaces.clone(), ..probes::mtu::Options::default() },
        ..FamilyOptions::default()
    };
    Session::start(command, families_of(command, &options), &config.trace, options.other_namespace()).await
}
