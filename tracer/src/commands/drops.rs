//! `tracer drops`: the drops family alone.

use crate::{
    cli::config::DropsCommandConfig,
    output,
    probes::{CommandId, FamilyOptions, drops, families_of},
    session::Session,
};

pub(crate) async fn run(config: DropsCommandConfig) -> anyhow::Result<()> {
    let options = FamilyOptions { drops: drops::Options { hook: config.hook, reasons: config.reasons }, ..FamilyOptions::default() };
    let mut session = Session::start(CommandId::Drops, families_of(CommandId::Drops, &options), &config.trace, false).await?;
    let mut sink = output::stdout_sink(config.trace.output);
    let delivered = session.run(config.trace.stop(), sink.as_mut()).await?;
    let selection = session.pods.selection().to_string();
    session.stop()?;
    delivered.report(&selection);
    Ok(())
}
