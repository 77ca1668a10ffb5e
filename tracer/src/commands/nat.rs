//! `tracer nat`: NATed connections as conntrack carries them, and the ones no reply came for.

use crate::{
    cli::config::NatCommandConfig,
    output,
    probes::{CommandId, FamilyOptions, families_of, nat},
    session::Session,
};

pub(crate) async fn run(config: NatCommandConfig) -> anyhow::Result<()> {
    let options = FamilyOptions { nat: nat::Options { reply_timeout: config.reply_timeout }, ..FamilyOptions::default() };
    let mut session = Session::start(CommandId::Nat, families_of(CommandId::Nat, &options), &config.trace, false).await?;
    let mut sink = output::stdout_sink(config.trace.output);
    session.run(config.trace.stop(), sink.as_mut()).await?;
    session.stop()?;
    Ok(())
}
