//! `tracer mtu`: frag-needed / packet-too-big sent, received and dropped, PKT_TOO_BIG drops and
//! oversize packets, each tied to the flow whose packets are too big; the device MTU facts and
//! their mismatches first, on stderr.

use crate::{
    cli::config::MtuCommandConfig,
    output,
    probes::{CommandId, FamilyOptions, families_of, mtu},
    session::Session,
};

pub(crate) async fn run(config: MtuCommandConfig) -> anyhow::Result<()> {
    let other_namespace = config.ifaces.iter().any(|i| i.netns.path.is_some());
    let options = FamilyOptions { mtu: mtu::Options { ifaces: config.ifaces, sent_hook: config.sent_hook }, ..FamilyOptions::default() };
    let mut session = Session::start(CommandId::Mtu, families_of(CommandId::Mtu, &options), &config.trace, other_namespace).await?;
    let mut sink = output::stdout_sink(config.trace.output);
    session.run(config.trace.stop(), sink.as_mut()).await?;
    session.stop()?;
    Ok(())
}
