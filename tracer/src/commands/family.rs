//! `tracer drops`, `tracer nat`, `tracer mtu`: a session of the command's families with the options
//! the user chose, printed as a table or JSON Lines until it stops.

use crate::{cli::config::FamilyCommandConfig, output, probes::families_of, session::Session};

pub(crate) async fn run(config: FamilyCommandConfig) -> anyhow::Result<()> {
    let FamilyCommandConfig { command, trace, options } = config;
    let mut session = Session::start(command, families_of(command.families(), &options), &trace, options.other_namespace()).await?;
    let mut sink = output::stdout_sink(trace.output);
    let delivered = session.run(trace.stop(), sink.as_mut()).await?;
    let selection = session.pods.selection().to_string();
    session.stop()?;
    delivered.report(&selection);
    Ok(())
}
