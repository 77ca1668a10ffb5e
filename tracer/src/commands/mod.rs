//! One module per subcommand: each turns a validated config into work, using the kernel layer,
//! the probes, the runner and the outputs.

pub mod check;
pub mod diagnose;
pub mod drops;
pub mod job;
pub mod mtu;
pub mod nat;
pub mod pods;
pub mod retrans;
pub mod serve;
pub mod session;
pub mod watch;

use anyhow::Context as _;

use crate::{
    cli::UsageError,
    kernel::{btf::{BtfError, KernelBtf}, features},
    pods::layer::{PodLayer, PodsConfig},
};

/// Starts the pod source, says on stderr which one is used, and checks the selection (exit 2
/// for pods that do not exist, unless --wait).
pub(crate) async fn start_pods(config: &PodsConfig) -> anyhow::Result<PodLayer> {
    let mut pods = PodLayer::start(config).await?;
    // Bad input stays one line: check the selection before saying anything else.
    if !config.wait {
        pods.require_selection(false).await?;
    }
    if pods.description != "none" {
        eprintln!("tracer: pods from {}: {} pods", pods.description, pods.registry().live().len());
    }
    pods.require_selection(config.wait).await?;
    Ok(pods)
}

/// Loads kernel BTF, turning a bad `--btf` into bad input (exit 2).
pub(crate) fn load_btf(path: Option<&std::path::Path>) -> anyhow::Result<KernelBtf> {
    match KernelBtf::load(path) {
        Ok(btf) => Ok(btf),
        Err(err @ (BtfError::Missing { .. } | BtfError::Read { .. })) if path.is_some() => {
            // A usage error is one line: name the cause too, it says what is wrong with the file.
            let cause = std::error::Error::source(&err).map(|c| format!(": {c}")).unwrap_or_default();
            Err(UsageError(format!("--btf: {err}{cause}")).into())
        }
        Err(err @ BtfError::Missing { .. }) => Err(err)
            .context("this kernel publishes no BTF (CONFIG_DEBUG_INFO_BTF); pass --btf PATH to a BTF file for it"),
        Err(err) => Err(err.into()),
    }
}

/// Refuses to go on without a capability `command` cannot work without, naming each (exit 2,
/// nothing attached); warns once per missing capability that only costs part of the output.
/// `other_namespace`: it will attach inside another network namespace (`mtu --iface NETNS:DEV`).
pub(crate) fn require_privileges(command: &str, other_namespace: bool) -> Result<(), UsageError> {
    features::check_capabilities(command, other_namespace).map_err(|e| UsageError(e.to_string()))
}

/// `tracer: PROBE: N seen, N delivered, N lost[, N unread]` on stderr, and a warning naming the
/// count when the ring buffer overflowed. Seen counts what matched in the kernel; unread is what
/// was still in the ring buffer when --count stopped the run.
pub(crate) fn print_summary(probe: &str, counts: crate::loader::KernelCounts, read: u64) {
    eprintln!("{}", summary(probe, counts, read));
    if counts.lost > 0 {
        eprintln!(
            "tracer: warning: {} {probe} events were lost because the ring buffer was full; use a larger --ring-buffer or narrower filters",
            counts.lost
        );
    }
}

/// Gives the heap pages freed after start-up back to the kernel. Parsing BTF and kallsyms peaks
/// at tens of MB that glibc keeps mapped after they are dropped, so without this a tracer that
/// holds a few MB of state stays at the start-up peak for its whole run.
pub(crate) fn release_startup_memory() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

fn summary(probe: &str, counts: crate::loader::KernelCounts, read: u64) -> String {
    let mut line = format!("tracer: {probe}: {} seen, {} delivered, {} lost", counts.matched, read, counts.lost);
    let unread = counts.matched.saturating_sub(read + counts.lost);
    if unread > 0 {
        line.push_str(&format!(", {unread} unread"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_accounts_for_every_event() {
        let c = crate::loader::KernelCounts { matched: 10, lost: 3 };
        assert_eq!(summary("drops", c, 7), "tracer: drops: 10 seen, 7 delivered, 3 lost");
        assert_eq!(summary("retrans", c, 5), "tracer: retrans: 10 seen, 5 delivered, 3 lost, 2 unread");
    }
}
