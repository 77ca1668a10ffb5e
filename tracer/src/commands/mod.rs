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
        nat: probes::nat::Options { reply_timeout: config.reply_timeout, hook: config.nat_hook.for_command(command) },
        mtu: probes::mtu::Options { ifaces: config.ifaces.clone(), ..probes::mtu::Options::default() },
        drops: probes::drops::Options { max_rate: config.max_rate, ..probes::drops::Options::default() },
        ..FamilyOptions::default()
    };
    Session::start(command, families_of(&config.families, &options), &config.trace, options.other_namespace()).await
}

/// What diagnose's rules know of a session besides its events: each family's hook (or why it
/// does not run) and the device MTU mismatches that lose packets of some sizes. `diagnose`
/// reads it live; `watch -o json` records it.
struct SessionFacts {
    probes: std::collections::BTreeMap<String, String>,
    missing_probes: Vec<(String, String)>,
    mtu_mismatches: Vec<(Vec<String>, String)>,
    services: crate::pods::services::ServiceNames,
    /// The drops the rate budget counted by place (read before the session stops).
    counted: Vec<probes::drops::CountedPlace>,
}

impl SessionFacts {
    fn of(session: &Session) -> Self {
        use crate::probes::{
            FamilyId,
            mtu::{Mtu, devices::find_mismatches},
        };
        let missing_probes =
            session.probes.iter().filter_map(|p| p.result.as_ref().err().map(|why| (p.family.name().to_string(), why.clone()))).collect();
        let probes = session
            .probes
            .iter()
            .map(|p| (p.family.name().to_string(), p.result.clone().unwrap_or_else(|why| format!("not running: {why}"))))
            .collect();
        let devices =
            session.family(FamilyId::Mtu).and_then(|f| f.as_any().downcast_ref::<Mtu>()).map(|mtu| mtu.devices().to_vec()).unwrap_or_default();
        // Only mismatches that lose packets of some sizes: different MTUs in one namespace (an
        // overlay node's eth0 1500 and vxlan 1450) are normal.
        let mtu_mismatches = find_mismatches(&devices).into_iter().filter(|m| m.severity != "info").map(|m| (m.devices, m.summary)).collect();
        let services = session.services().cloned().unwrap_or_else(|| crate::pods::services::ServiceNames::channel().1);
        let counted = session
            .family(FamilyId::Drops)
            .and_then(|f| f.as_any().downcast_ref::<crate::probes::drops::Drops>())
            .map(|drops| drops.counted_places(session.ebpf()))
            .unwrap_or_default();
        Self { probes, missing_probes, mtu_mismatches, services, counted }
    }
}

/// Reads every `--from` recording (`-` = stdin), warning once about what it skipped.
fn read_recordings(files: &[std::path::PathBuf]) -> anyhow::Result<crate::diagnose::recordings::Recordings> {
    let mut recordings = crate::diagnose::recordings::Recordings::default();
    for file in files {
        let name = file.display().to_string();
        if file.as_os_str() == "-" {
            recordings.read("stdin", io::stdin().lock()).context("reading a recording from stdin")?;
        } else {
            let f = std::fs::File::open(file).with_context(|| format!("--from {name}"))?;
            recordings.read(&name, io::BufReader::with_capacity(1 << 20, f)).with_context(|| format!("reading {name}"))?;
        }
    }
    warn_about(&recordings);
    Ok(recordings)
}

/// What reading `recordings` skipped, and each node's clock pair when several are merged (their
/// order rests on them).
fn warn_about(recordings: &crate::diagnose::recordings::Recordings) {
    let several = recordings.nodes.len() > 1;
    for line in recordings.warnings() {
        if line.starts_with("node ") {
            if several {
                eprintln!("tracer: {line}");
            } else {
                log::info!("{line}");
            }
        } else {
            log::warn!("{line}");
        }
    }
}

/// A `diagnose` report on stdout, as JSON or text; a reader that went away is not an error.
fn print_report(report: &crate::diagnose::Report, format: crate::cli::OutputFormat) -> anyhow::Result<()> {
    let text = match format {
        crate::cli::OutputFormat::Json => format!("{}\n", report.to_json()),
        crate::cli::OutputFormat::Table => report.to_text(),
    };
    print_stdout(&text)
}

/// Writes `out` to stdout; a reader that went away (`| head`) is not an error.
fn print_stdout(out: &str) -> anyhow::Result<()> {
    match io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
