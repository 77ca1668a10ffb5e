//! Validated configuration: everything the user typed, checked and typed, before any syscall.

use std::{net::IpAddr, os::unix::fs::MetadataExt as _, path::PathBuf, time::Duration};

use tracer_common::{
    filter::{Cidr, FlowFilter, MAX_CIDRS},
    flow::{FAMILY_IPV4, FAMILY_IPV6, TunnelPorts},
};

use super::{
    AllProbesArgs, DiagnoseArgs, FamilyCommandArgs, InstallAction, InstallArgs, JobAction, JobArgs, KubeApiArgs, NodeScopeArgs, OutputFormat,
    PodSelectArgs, PodSourceArgs, PodsArgs, RetransArgs, ServeArgs, TraceArgs, UsageError, WatchArgs,
};
use crate::{
    job::{BUILD_IMAGE, IMAGE_ENV, Image},
    kernel::netns::Netns,
    pods::{PodsFrom, layer::PodsConfig, scope::NodeScope, selection::Selection},
    probes::{CommandId, FamilyArgs, FamilyId, FamilyOptions, parse_families},
};
pub(crate) use crate::{
    probes::{mtu::choice::parse_iface, nat::parse_reply_timeout},
    session::TraceConfig,
    usage::parse_duration,
};

/// `tracer retrans`.
#[derive(Debug, Clone)]
pub(crate) struct RetransCommandConfig {
    pub trace: TraceConfig,
    /// Some(refresh interval) for --top.
    pub top: Option<Duration>,
}

impl RetransCommandConfig {
    pub(crate) fn from_args(args: RetransArgs) -> Result<Self, UsageError> {
        if args.top && args.trace.count.is_some() {
            return Err(UsageError("--count counts streamed events; --top streams none (use --duration)".into()));
        }
        let interval = match &args.interval {
            Some(text) => parse_duration(text).map_err(|_| UsageError(format!("--interval {text}: expected a duration such as 500ms, 2s or 1m")))?,
            None => Duration::from_secs(1),
        };
        if interval < Duration::from_millis(100) {
            return Err(UsageError(format!("--interval {}: at least 100ms", args.interval.unwrap_or_default())));
        }
        Ok(Self { trace: TraceConfig::from_args(args.trace)?, top: args.top.then_some(interval) })
    }
}

/// A command that is a session of its families (`drops`, `nat`, `mtu`): the common options and
/// each family's own, checked.
#[derive(Debug, Clone)]
pub(crate) struct FamilyCommandConfig {
    pub command: CommandId,
    pub trace: TraceConfig,
    pub options: FamilyOptions,
}

impl<F: FamilyArgs> FamilyCommandArgs<F> {
    /// The config of `command`, whose families' flags these are.
    pub(crate) fn into_config(self, command: CommandId) -> Result<FamilyCommandConfig, UsageError> {
        let mut options = FamilyOptions::default();
        self.family.into_options(&mut options)?;
        Ok(FamilyCommandConfig { command, trace: TraceConfig::from_args(self.trace)?, options })
    }
}

/// What `watch`, `diagnose` and `serve` share: the families (`--probes`), the NAT reply timeout
/// and the MTU devices.
#[derive(Debug, Clone)]
pub(crate) struct WatchCommandConfig {
    pub trace: TraceConfig,
    /// `--probes`, in the registry's order; every family by default.
    pub families: Vec<FamilyId>,
    pub reply_timeout: Duration,
    pub ifaces: Vec<IfaceChoice>,
    /// `--nat-hook`.
    pub nat_hook: crate::probes::nat::Hook,
    /// `--by-flow` (watch only).
    pub by_flow: bool,
    /// `--from`: recordings to read instead of tracing (`-` = stdin), each checked readable.
    pub from: Vec<PathBuf>,
    /// `--max-rate`: the drops family's rate budget (drops/s per CPU and place; 0 = none).
    pub max_rate: u64,
}

/// How long `diagnose` runs without --duration.
pub(crate) const DIAGNOSE_DEFAULT_DURATION: Duration = Duration::from_secs(10);

impl WatchCommandConfig {
    pub(crate) fn from_args(args: WatchArgs) -> Result<Self, UsageError> {
        let mut config = Self::from_parts(args.trace, args.probes)?;
        config.by_flow = args.by_flow;
        config.from = check_from(args.from)?;
        Ok(config)
    }

    /// `diagnose`: the same probes for --duration (default 10s); --count would cut the evidence
    /// short, so it is refused.
    pub(crate) fn diagnose_from_args(args: DiagnoseArgs) -> Result<Self, UsageError> {
        let from = check_from(args.from)?;
        if !from.is_empty() {
            let mut config = Self::from_parts(args.trace, args.probes)?;
            config.from = from;
            return Ok(config);
        }
        if args.trace.count.is_some() {
            return Err(UsageError("--count: diagnose runs for --duration and reads every event (use tracer watch --count)".into()));
        }
        let mut config = Self::from_parts(args.trace, args.probes)?;
        let duration = config.trace.duration.get_or_insert(DIAGNOSE_DEFAULT_DURATION);
        if *duration < Duration::from_secs(1) {
            return Err(UsageError("--duration: diagnose needs at least 1s to see anything".into()));
        }
        Ok(config)
    }

    fn from_parts(trace: TraceArgs, probes: AllProbesArgs) -> Result<Self, UsageError> {
        let reply_timeout = parse_reply_timeout(&probes.reply_timeout)?;
        let ifaces = probes.ifaces.iter().map(|t| parse_iface(t)).collect::<Result<Vec<_>, _>>()?;
        let families = parse_families(&probes.probes)?;
        let max_rate = probes.budget.max_rate()?;
        let nat_hook = probes.nat_hook;
        if nat_hook == crate::probes::nat::Hook::Tc {
            if !families.contains(&FamilyId::Nat) || !families.contains(&FamilyId::Mtu) {
                return Err(UsageError(
                    "--nat-hook tc: the NAT check rides in the mtu probe's classifiers; --probes must name both nat and mtu".into(),
                ));
            }
            if !ifaces.is_empty() {
                return Err(UsageError(
                    "--nat-hook tc: not with --iface (the classifiers then watch only the devices named, not the node's every pod veth and tunnel)"
                        .into(),
                ));
            }
        }
        Ok(Self { trace: TraceConfig::from_args(trace)?, families, reply_timeout, ifaces, nat_hook, by_flow: false, from: Vec::new(), max_rate })
    }
}

/// `--from` files: each an existing file (or `-`, stdin, once), before anything is read.
fn check_from(args: super::FromArgs) -> Result<Vec<PathBuf>, UsageError> {
    let stdin = args.files.iter().filter(|f| f.as_os_str() == "-").count();
    if stdin > 1 {
        return Err(UsageError("--from -: stdin can be read once".into()));
    }
    for file in args.files.iter().filter(|f| f.as_os_str() != "-") {
        if let Err(e) = std::fs::File::open(file) {
            return Err(UsageError(format!("--from {}: {e} (a recording: the output of `tracer watch -o json`)", file.display())));
        }
    }
    Ok(args.files)
}

/// The tracing commands a Job may run, to which it adds `-o json --duration`: every one of the
/// registry but `serve`, which runs until stopped (the DaemonSet's).
fn job_tracing_commands() -> Vec<&'static str> {
    CommandId::ALL.into_iter().filter(|c| *c != CommandId::Serve).map(CommandId::name).collect()
}
/// The other commands a Job may run, as they are: one answer each, printed when they end.
const JOB_REPORT_COMMANDS: &[&str] = &["check", "pods"];

/// The image of a Job or the DaemonSet: `--image`, else `$TRACER_IMAGE`, else the built-in
/// default; checked as a reference, whichever gave it.
pub(crate) fn image_arg(flag: Option<&str>) -> Result<Image, UsageError> {
    let (text, from) = match flag {
        Some(image) => (image.to_string(), "--image".to_string()),
        None => match std::env::var(IMAGE_ENV) {
            Ok(image) if !image.is_empty() => (image, format!("${IMAGE_ENV}")),
            _ => (BUILD_IMAGE.to_string(), format!("the built-in image (${IMAGE_ENV} when tracer was built)")),
        },
    };
    Image::parse(&text).map_err(|e| UsageError(format!("{from} {text:?}: not an image reference: {e}")))
}

/// Where a Job is to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum JobTarget {
    Node(String),
    /// The node of this pod, which only the API knows.
    Pod {
        namespace: String,
        name: String,
    },
}

/// Jobs to render or create, checked; the nodes of `--pod` targets (and of `--all-nodes`) are
/// found later, through the API.
#[derive(Debug, Clone)]
pub(crate) struct JobRequest {
    /// `--node` and `--pod`, in the order given (at least one unless `all_nodes`).
    pub targets: Vec<JobTarget>,
    /// `--all-nodes`: one Job on every Linux node.
    pub all_nodes: bool,
    /// `--name`, checked.
    pub name: Option<String>,
    pub namespace: String,
    pub image: Image,
    /// The command in the Job (`drops`, ..., `check`, `pods`).
    pub command: String,
    /// The tracer command line inside the container, `-o json --duration` included; the
    /// `--pod` of each target pod on the Job's node go in after the command when
    /// `adds_pods`.
    pub args: Vec<String>,
    /// A tracing command that chooses no pods of its own: a Job for pods traces those pods.
    pub adds_pods: bool,
    pub duration: Duration,
}

impl JobRequest {
    /// The Job on `node`, tracing `pods` (`namespace/name`: the target pods that run there).
    /// Without `--name` it is `tracer-COMMAND-NODE`, then `-SUFFIX` if given (so that a second
    /// `job run` does not collide with the first); `several`: other Jobs are made beside it,
    /// so a `--name` gets the node too.
    pub(crate) fn spec(&self, node: &str, pods: &[String], suffix: Option<&str>, several: bool) -> crate::job::JobSpec {
        let name = match (&self.name, suffix) {
            (Some(name), _) if several => job_name_cleaned(&format!("{name}-{node}"), JOB_NAME_MAX),
            (Some(name), _) => name.clone(),
            (None, None) => job_name(&self.command, node, JOB_NAME_MAX),
            (None, Some(sfx)) => format!("{}-{sfx}", job_name(&self.command, node, JOB_NAME_MAX - 1 - sfx.len())),
        };
        let mut args = self.args.clone();
        if self.adds_pods {
            let pods = pods.iter().flat_map(|p| ["--pod".to_string(), p.clone()]);
            args.splice(1..1, pods);
        }
        crate::job::JobSpec {
            name,
            namespace: self.namespace.clone(),
            node: node.to_string(),
            image: self.image.clone(),
            args,
            duration: self.duration,
        }
    }
}

/// `tracer job render`: one Job per `--node`, checked; it needs no cluster, so no `--pod` nor
/// `--all-nodes`.
fn job_render_spec(args: super::JobSpecArgs) -> Result<Vec<crate::job::JobSpec>, UsageError> {
    let request = job_request(args)?;
    if request.all_nodes {
        return Err(UsageError(
            "job render --all-nodes: listing the nodes needs the cluster; name them with --node, or use `job run --all-nodes`".into(),
        ));
    }
    let several = request.targets.len() > 1;
    request
        .targets
        .iter()
        .map(|target| match target {
            JobTarget::Node(node) => Ok(request.spec(node, &[], None, several)),
            JobTarget::Pod { .. } => {
                Err(UsageError("job render --pod: finding the pod's node needs the cluster; pass --node, or use `job run --pod`".into()))
            }
        })
        .collect()
}

/// `ns/name` of `--pod`, checked as names.
fn parse_job_pod(text: &str) -> Result<JobTarget, UsageError> {
    match text.split_once('/') {
        Some((ns, name)) if is_dns_label(ns) && is_dns_subdomain(name) => Ok(JobTarget::Pod { namespace: ns.into(), name: name.into() }),
        _ => Err(UsageError(format!("--pod {text:?}: expected NAMESPACE/NAME"))),
    }
}

/// A name of an existing Job (`job logs`, `job delete`), checked before asking the API.
fn job_name_arg(name: &str) -> Result<(), UsageError> {
    if is_dns_label(name) { Ok(()) } else { Err(UsageError(format!("{name:?}: not a Job name (lower-case letters, digits and `-`, at most 63)"))) }
}

/// How `job run`, `logs`, `list` and `delete` reach the Kubernetes API.
#[derive(Debug, Clone)]
pub(crate) struct KubeApiConfig {
    /// `--kubeconfig`, a file that exists; None: in-cluster, KUBECONFIG, ~/.kube/config.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`: a context of that kubeconfig instead of its current one.
    pub context: Option<String>,
}

impl KubeApiConfig {
    /// A `--kubeconfig` that is not there is bad input, as for the pod source; so is an empty
    /// `--context` (whether the kubeconfig has it is known when it is read).
    pub(crate) fn from_args(args: KubeApiArgs) -> Result<Self, UsageError> {
        if let Some(path) = &args.kubeconfig
            && !path.is_file()
        {
            return Err(UsageError(format!("--kubeconfig {}: no such file", path.display())));
        }
        if args.context.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(UsageError("--context needs the name of a kubeconfig context".into()));
        }
        Ok(Self { kubeconfig: args.kubeconfig, context: args.context })
    }
}

/// `tracer job ...`, checked: bad input stops here, before anything is asked of the API.
#[derive(Debug, Clone)]
pub(crate) enum JobConfig {
    /// `job render`: one Job per named node (no cluster to find a pod's node).
    Render(Vec<crate::job::JobSpec>),
    Run(JobRunConfig),
    Logs(JobLogsConfig),
    List(JobListConfig),
    Delete(JobDeleteConfig),
}

/// `tracer job run`.
#[derive(Debug, Clone)]
pub(crate) struct JobRunConfig {
    pub request: JobRequest,
    pub api: KubeApiConfig,
    pub output: OutputFormat,
    /// Create the Job and return without following it.
    pub detach: bool,
}

/// `tracer job logs`.
#[derive(Debug, Clone)]
pub(crate) struct JobLogsConfig {
    pub namespace: String,
    pub name: String,
    pub api: KubeApiConfig,
    pub output: OutputFormat,
}

/// `tracer job list`.
#[derive(Debug, Clone)]
pub(crate) struct JobListConfig {
    /// None: every namespace (`-A`).
    pub namespace: Option<String>,
    pub api: KubeApiConfig,
    pub output: OutputFormat,
}

/// `tracer job delete`.
#[derive(Debug, Clone)]
pub(crate) struct JobDeleteConfig {
    pub namespace: String,
    /// Every one a valid Job name: one bad name refuses them all, so none is half-deleted.
    pub names: Vec<String>,
    pub api: KubeApiConfig,
}

impl JobConfig {
    /// Checks every `job` subcommand's input as far as it can be without a cluster.
    pub(crate) fn from_args(args: JobArgs) -> Result<Self, UsageError> {
        Ok(match args.action {
            JobAction::Render(a) => Self::Render(job_render_spec(a.spec)?),
            JobAction::Run(a) => {
                let request = job_request(a.spec)?;
                Self::Run(JobRunConfig { request, api: KubeApiConfig::from_args(a.api)?, output: a.output, detach: a.detach })
            }
            JobAction::Logs(a) => {
                namespace_arg(&a.namespace)?;
                job_name_arg(&a.name)?;
                Self::Logs(JobLogsConfig { api: KubeApiConfig::from_args(a.api)?, namespace: a.namespace, name: a.name, output: a.output })
            }
            JobAction::List(a) => {
                namespace_arg(&a.namespace)?;
                let namespace = (!a.all_namespaces).then_some(a.namespace);
                Self::List(JobListConfig { api: KubeApiConfig::from_args(a.api)?, namespace, output: a.output })
            }
            JobAction::Delete(a) => {
                namespace_arg(&a.namespace)?;
                a.names.iter().try_for_each(|n| job_name_arg(n))?;
                Self::Delete(JobDeleteConfig { api: KubeApiConfig::from_args(a.api)?, namespace: a.namespace, names: a.names })
            }
        })
    }
}

/// `tracer install print`, checked.
#[derive(Debug, Clone)]
pub(crate) struct InstallConfig {
    /// The DaemonSet's image.
    pub image: Image,
    /// The nodes' CRI socket, an absolute path.
    pub cri_socket: String,
    /// Print the DaemonSet (not `--no-daemonset`).
    pub daemonset: bool,
    /// Print a PodMonitor for it.
    pub podmonitor: bool,
    /// Groups bound to tracer-job-user and tracer-cluster-reader.
    pub job_user_groups: Vec<String>,
    /// Print the `kubectl delete` line instead of the manifests.
    pub uninstall: bool,
    /// `--this-node`: the DaemonSet's tracer reports its own node only (nodes sharing a kernel).
    pub this_node: bool,
}

impl InstallConfig {
    /// Checks `install print`'s options.
    pub(crate) fn from_args(args: InstallArgs) -> Result<Self, UsageError> {
        let InstallAction::Print(a) = args.action;
        let cri_socket = a.cri_socket.unwrap_or_else(|| crate::job::DEFAULT_CRI_SOCKET.into());
        host_path_arg("--cri-socket", &cri_socket)?;
        for group in &a.job_user_groups {
            if group.trim().is_empty() || group.chars().any(char::is_control) {
                return Err(UsageError(format!("--job-user-group {group:?}: not a group name")));
            }
        }
        Ok(Self {
            image: image_arg(a.image.image.as_deref())?,
            cri_socket,
            daemonset: !a.no_daemonset,
            podmonitor: a.podmonitor,
            job_user_groups: a.job_user_groups,
            uninstall: a.uninstall,
            this_node: a.this_node,
        })
    }
}

/// A path on the node that a pod mounts: absolute and plain, as a hostPath must be.
fn host_path_arg(flag: &str, path: &str) -> Result<(), UsageError> {
    let plain =
        path.starts_with('/') && !path.split('/').any(|c| c == ".." || c == ".") && !path.chars().any(|c| c.is_whitespace() || c.is_control());
    if plain {
        Ok(())
    } else {
        Err(UsageError(format!("{flag} {path:?}: expected an absolute path on the node, such as /run/k3s/containerd/containerd.sock")))
    }
}

/// `--namespace`, checked.
fn namespace_arg(namespace: &str) -> Result<(), UsageError> {
    if is_dns_label(namespace) {
        Ok(())
    } else {
        Err(UsageError(format!("--namespace {namespace:?}: not a namespace name (lower-case letters, digits and `-`, at most 63)")))
    }
}

/// The Job of `job render` or `job run`, checked as far as it can be without a cluster.
fn job_request(args: super::JobSpecArgs) -> Result<JobRequest, UsageError> {
    let duration =
        parse_duration(&args.duration).map_err(|_| UsageError(format!("--duration {}: expected a duration such as 30s or 5m", args.duration)))?;
    if duration < Duration::from_secs(1) {
        return Err(UsageError("--duration: at least 1s".into()));
    }
    let mut targets = Vec::new();
    for node in &args.nodes {
        if !is_dns_subdomain(node) {
            return Err(UsageError(format!("--node {node:?}: not a node name (lower-case letters, digits, `-` and `.`)")));
        }
        let target = JobTarget::Node(node.clone());
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    for pod in &args.pods {
        let target = parse_job_pod(pod)?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    if targets.is_empty() && !args.all_nodes {
        return Err(UsageError("--node NAME, --pod NS/NAME or --all-nodes: where the Job runs".into()));
    }
    namespace_arg(&args.namespace)?;
    let image = image_arg(args.image.image.as_deref())?;
    let command = args.command.first().cloned().unwrap_or_default();
    let tracing = job_tracing_commands().contains(&command.as_str());
    if !tracing && !JOB_REPORT_COMMANDS.contains(&command.as_str()) {
        let all: Vec<&str> = job_tracing_commands().into_iter().chain(JOB_REPORT_COMMANDS.iter().copied()).collect();
        return Err(UsageError(format!("the command after --: {command:?} is not one of {}", all.join(", "))));
    }
    let mut inner = args.command.clone();
    if tracing {
        if let Some(own) = args.command.iter().find(|a| ["-o", "--output", "--duration", "--count"].contains(&a.split('=').next().unwrap_or(a))) {
            return Err(UsageError(format!("the command after --: {own} is set by the Job (-o json --duration from `job --duration`)")));
        }
        inner.extend(["-o".into(), "json".into(), "--duration".into(), args.duration.clone()]);
    }
    // `job run --pod P -- drops` traces P's traffic: the pod is the point of the Job, unless
    // the command chooses its own pods.
    let selects = |a: &String| ["--pod", "--namespace", "--selector"].contains(&a.split('=').next().unwrap_or(a));
    let adds_pods = tracing && !args.command.iter().any(selects);
    let mut checked_args = inner.clone();
    if adds_pods {
        // Checked with every target pod: a Job gets those of its node.
        let pods = targets.iter().filter_map(|t| match t {
            JobTarget::Pod { namespace, name } => Some(["--pod".to_string(), format!("{namespace}/{name}")]),
            JobTarget::Node(_) => None,
        });
        checked_args.splice(1..1, pods.flatten());
    }
    // The whole command line must parse as the tracer in the Job will parse it.
    let argv = std::iter::once("tracer".to_string()).chain(checked_args.iter().cloned());
    let cli = <super::Cli as clap::Parser>::try_parse_from(argv).map_err(|err| {
        let rendered = err.render().to_string();
        let first = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid").trim_start_matches("error: ").to_string();
        UsageError(format!("the command after --: {first}"))
    })?;
    // And its values must pass the same checks as on a node (CIDRs, ports, reasons' syntax).
    let checked = match cli.command {
        super::Command::Family(a) => a.into_config().map(drop),
        super::Command::Retrans(a) => RetransCommandConfig::from_args(a).map(drop),
        super::Command::Watch(a) => WatchCommandConfig::from_args(a).map(drop),
        super::Command::Diagnose(a) => WatchCommandConfig::diagnose_from_args(a).map(drop),
        super::Command::Pods(a) => PodsCommandConfig::from_args(a).map(drop),
        _ => Ok(()),
    };
    match checked {
        // Files (--btf, --kubeconfig) are the node's, not this machine's.
        Err(e) if e.0.contains("no such file") => {}
        other => other.map_err(|e| UsageError(format!("the command after --: {e}")))?,
    }
    // The pod mounts the CRI socket the command names: a hostPath must be absolute.
    if let Some(socket) = crate::job::cri_socket(&inner) {
        host_path_arg("the command after --: --cri-socket", &socket)?;
    }
    let name = match args.name {
        Some(n) if is_dns_label(&n) && n.len() <= JOB_NAME_MAX => Some(n),
        Some(n) => return Err(UsageError(format!("--name {n:?}: not a Job name (lower-case letters, digits and `-`, at most {JOB_NAME_MAX})"))),
        None => None,
    };
    Ok(JobRequest { targets, all_nodes: args.all_nodes, name, namespace: args.namespace, image, command, args: inner, adds_pods, duration })
}

/// The Job controller names pods NAME-XXXXX, and a pod name must stay a DNS label (63).
const JOB_NAME_MAX: usize = 52;

/// `tracer-COMMAND-NODE`, made a DNS label of at most `max` characters.
fn job_name(command: &str, node: &str, max: usize) -> String {
    job_name_cleaned(&format!("tracer-{command}-{node}"), max)
}

/// `raw` made a DNS label of at most `max` characters.
fn job_name_cleaned(raw: &str, max: usize) -> String {
    let raw = raw.to_lowercase();
    let cleaned: String = raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    cleaned.chars().take(max).collect::<String>().trim_end_matches('-').to_string()
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `tracer serve`.
#[derive(Debug, Clone)]
pub(crate) struct ServeCommandConfig {
    pub watch: WatchCommandConfig,
    pub metrics: std::net::SocketAddr,
    pub max_series: usize,
    /// `--series-idle`: a label set unused this long is forgotten.
    pub series_idle: Duration,
    pub quiet: bool,
}

impl ServeCommandConfig {
    pub(crate) fn from_args(args: ServeArgs) -> Result<Self, UsageError> {
        let metrics = args
            .metrics
            .parse()
            .map_err(|_| UsageError(format!("--metrics {}: expected IP:PORT, e.g. 127.0.0.1:9464 or 0.0.0.0:9464", args.metrics)))?;
        if args.max_series == 0 {
            return Err(UsageError("--max-series: at least 1".into()));
        }
        if args.trace.count.is_some() {
            return Err(UsageError("--count: serve runs until stopped (or --duration)".into()));
        }
        let series_idle = parse_duration(&args.series_idle)
            .ok()
            .filter(|d| *d >= Duration::from_secs(1))
            .ok_or_else(|| UsageError(format!("--series-idle {}: expected a duration of at least 1s, such as 10m or 1h", args.series_idle)))?;
        let watch = WatchCommandConfig::from_parts(args.trace, args.probes)?;
        Ok(Self { watch, metrics, max_series: args.max_series, series_idle, quiet: args.quiet })
    }
}

pub(crate) use crate::probes::mtu::IfaceChoice;

/// `tracer pods`.
#[derive(Debug, Clone)]
pub(crate) struct PodsCommandConfig {
    pub pods: PodsConfig,
    pub output: OutputFormat,
}

impl PodsCommandConfig {
    pub(crate) fn from_args(args: PodsArgs) -> Result<Self, UsageError> {
        Ok(Self { pods: pods_config(args.source, args.select, false)?, output: args.output })
    }
}

/// `--pods-from` and friends plus the selection, checked.
pub(crate) fn pods_config(source: PodSourceArgs, select: PodSelectArgs, wait: bool) -> Result<PodsConfig, UsageError> {
    let from = parse_pods_from(&source.pods_from)?;
    let selection = Selection::parse(&select.pods, select.namespace.as_deref(), select.selector.as_deref()).map_err(|e| UsageError(e.to_string()))?;
    if from == PodsFrom::None && !selection.is_empty() {
        return Err(UsageError("--pod, --namespace and --selector need pod names: not with --pods-from none".into()));
    }
    if wait && selection.is_empty() {
        return Err(UsageError("--wait waits for pods chosen with --pod, --namespace or --selector".into()));
    }
    if let Some(path) = &source.kubeconfig
        && !path.is_file()
    {
        return Err(UsageError(format!("--kubeconfig {}: no such file", path.display())));
    }
    if source.cri_socket.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        return Err(UsageError("--cri-socket needs a path".into()));
    }
    if source.node_name.as_ref().is_some_and(|n| n.trim().is_empty()) {
        return Err(UsageError("--node-name needs a name".into()));
    }
    Ok(PodsConfig {
        from,
        cri_socket: source.cri_socket,
        kubeconfig: source.kubeconfig,
        node_name: source.node_name.map(|n| n.trim().to_string()),
        selection,
        wait,
        scope: NodeScope::default(),
    })
}

/// `auto`, `cri`, `kube`, `none` or `file:PATH` (the file must exist).
pub(crate) fn parse_pods_from(text: &str) -> Result<PodsFrom, UsageError> {
    Ok(match text.trim() {
        "auto" => PodsFrom::Auto,
        "cri" => PodsFrom::Cri,
        "kube" => PodsFrom::Kube,
        "none" => PodsFrom::None,
        other => match other.strip_prefix("file:") {
            Some(path) if !path.is_empty() => {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(UsageError(format!("--pods-from file:{}: no such file", path.display())));
                }
                PodsFrom::File(path)
            }
            _ => {
                return Err(UsageError(format!("--pods-from {text}: expected auto, cri, kube, none or file:PATH")));
            }
        },
    })
}

impl TraceConfig {
    pub(crate) fn from_args(args: TraceArgs) -> Result<Self, UsageError> {
        let mut filter = FlowFilter::default();
        if args.ip.len() > MAX_CIDRS {
            return Err(UsageError(format!("at most {MAX_CIDRS} --ip filters are supported, got {}", args.ip.len())));
        }
        for (slot, text) in filter.cidrs.iter_mut().zip(&args.ip) {
            *slot = parse_cidr(text)?;
        }
        filter.n_cidrs = args.ip.len() as u32;
        let mut pods = pods_config(args.source, args.select, args.wait)?;
        filter.pods = u8::from(!pods.selection.is_empty());
        pods.scope = node_scope(&args.scope)?;
        filter.netns = u8::from(pods.scope.is_active());
        if let Some(port) = &args.port {
            filter.port = parse_port(port)?;
        }
        if let Some(proto) = args.proto {
            filter.proto = proto.number();
        }
        let duration = args.duration.as_deref().map(parse_duration).transpose()?;
        if args.count == Some(0) {
            return Err(UsageError("--count must be at least 1".into()));
        }
        if let Some(path) = &args.btf
            && !path.is_file()
        {
            return Err(UsageError(format!("--btf {}: no such file", path.display())));
        }
        let tunnel_ports = tunnel_ports(&args.vxlan_ports, &args.geneve_ports)?;
        Ok(Self {
            filter,
            tunnel_ports,
            duration,
            count: args.count,
            output: args.output,
            btf: args.btf,
            ring_buffer_bytes: parse_ring_size(&args.ring_buffer)?,
            pods,
        })
    }
}

/// `--netns` (each a name in /var/run/netns, a path, or an inode number) and `--this-node`.
/// A name or path must be a network namespace now (a file of the kernel's nsfs, as
/// /proc/self/ns/net is): its inode is what the kernel reports for events seen in it.
pub(crate) fn node_scope(args: &NodeScopeArgs) -> Result<NodeScope, UsageError> {
    let mut scope = NodeScope { inodes: std::collections::BTreeSet::new(), this_node: args.this_node };
    for text in &args.netns {
        let text = text.trim();
        if let Ok(inode) = text.parse::<u32>() {
            if inode == 0 {
                return Err(UsageError("--netns 0: not a namespace inode".into()));
            }
            scope.inodes.insert(inode);
            continue;
        }
        if text.is_empty() || (!text.starts_with('/') && text.contains('/')) {
            return Err(UsageError(format!("--netns {text:?}: expected a name in /var/run/netns, an absolute path or an inode number")));
        }
        let netns = Netns::parse(text);
        let path = netns.path.clone().unwrap_or_default();
        let Ok(meta) = std::fs::metadata(&path) else {
            // "no such file": a Job's command is checked on the client, where the node's
            // namespaces are not (cli::config::job_request lets that pass).
            return Err(UsageError(format!(
                "--netns {text}: no such file {} (a name in /var/run/netns, a path such as /proc/PID/ns/net, or an inode number)",
                path.display()
            )));
        };
        let nsfs = std::fs::metadata("/proc/self/ns/net").map(|m| m.dev()).ok();
        if Some(meta.dev()) != nsfs {
            return Err(UsageError(format!("--netns {text}: {} is not a network namespace", path.display())));
        }
        scope.inodes.insert(meta.ino() as u32);
    }
    Ok(scope)
}

/// `10.0.0.0/8`, `fd00::/64`, or a bare address (a /32 or /128).
pub(crate) fn parse_cidr(text: &str) -> Result<Cidr, UsageError> {
    let bad = |why: &str| UsageError(format!("--ip {text}: {why} (expected an address or CIDR such as 10.0.0.0/8)"));
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad("not an IP address"))?;
    let (bytes, family, max) = match addr {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, FAMILY_IPV4, 32u32)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_IPV6, 128u32),
    };
    let prefix = match prefix {
        Some(p) => p.trim().parse::<u32>().map_err(|_| bad("prefix length is not a number"))?,
        None => max,
    };
    if prefix > max {
        return Err(bad(&format!("prefix length {prefix} is larger than {max}")));
    }
    let mut mask_bytes = [0u8; 16];
    for (i, byte) in mask_bytes.iter_mut().enumerate() {
        let bits = prefix.saturating_sub(i as u32 * 8).min(8);
        *byte = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    // The kernel compares native-endian words loaded from packet bytes; build them the same way.
    let word = |b: &[u8; 16], i: usize| u32::from_ne_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let mut cidr = Cidr { family, ..Cidr::default() };
    for i in 0..4 {
        cidr.mask[i] = word(&mask_bytes, i);
        cidr.net[i] = word(&bytes, i) & cidr.mask[i];
    }
    Ok(cidr)
}

pub(crate) fn parse_port(text: &str) -> Result<u16, UsageError> {
    match text.trim().parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(UsageError(format!("--port {text}: expected a port number from 1 to 65535"))),
    }
}

/// The UDP ports taken as VXLAN and Geneve: the standard ones and the user's, in the free slots.
pub(crate) fn tunnel_ports(vxlan: &[String], geneve: &[String]) -> Result<TunnelPorts, UsageError> {
    let mut ports = TunnelPorts::DEFAULT;
    for (flag, given, slots) in [("--vxlan-port", vxlan, &mut ports.vxlan), ("--geneve-port", geneve, &mut ports.geneve)] {
        for text in given {
            let port = match text.trim().parse::<u32>() {
                Ok(p) if (1..=65535).contains(&p) => p as u16,
                _ => return Err(UsageError(format!("{flag} {text}: expected a port number from 1 to 65535"))),
            };
            if slots.contains(&port) {
                continue;
            }
            let free = slots.iter_mut().find(|p| **p == 0);
            let Some(free) = free else {
                let standard = slots.iter().filter(|p| **p != 0).count() - given.len().min(slots.len());
                return Err(UsageError(format!("{flag}: at most {} extra ports (the standard ones are always taken)", slots.len() - standard)));
            };
            *free = port;
        }
    }
    Ok(ports)
}

/// Ring buffer sizes must be a power of two and a multiple of the page size (the kernel's rule).
pub(crate) fn parse_ring_size(text: &str) -> Result<u32, UsageError> {
    let bad = |why: &str| UsageError(format!("--ring-buffer {text}: {why}"));
    let t = text.trim();
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1u64 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1u64 << 30),
        _ => (t, 1),
    };
    let bytes = num.parse::<u64>().map_err(|_| bad("expected a size such as 4096, 256K or 8M"))? * mult;
    let page = page_size();
    if bytes < page || !bytes.is_power_of_two() {
        return Err(bad(&format!("must be a power of two and at least the page size ({page} bytes)")));
    }
    if bytes > 1 << 30 {
        return Err(bad("at most 1G"));
    }
    Ok(bytes as u32)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_v4_is_premasked() {
        let c = parse_cidr("10.1.2.3/16").unwrap();
        assert_eq!(c.family, FAMILY_IPV4);
        assert_eq!(c.net[0].to_ne_bytes(), [10, 1, 0, 0]);
        assert_eq!(c.mask[0].to_ne_bytes(), [255, 255, 0, 0]);
        assert_eq!(c.mask[1], 0);
    }

    #[test]
    fn bare_address_is_host_route() {
        let c = parse_cidr("192.168.0.9").unwrap();
        assert_eq!(c.mask[0], u32::MAX);
        let c6 = parse_cidr("fd00::1").unwrap();
        assert_eq!(c6.family, FAMILY_IPV6);
        assert!(c6.mask.iter().all(|m| *m == u32::MAX));
    }

    #[test]
    fn cidr_v6_partial_byte_prefix() {
        let c = parse_cidr("fd00:abcd::/20").unwrap();
        assert_eq!(c.mask[0].to_ne_bytes(), [0xff, 0xff, 0xf0, 0]);
        assert_eq!(c.net[0].to_ne_bytes(), [0xfd, 0x00, 0xa0, 0]);
    }

    #[test]
    fn bad_cidrs_are_usage_errors() {
        for bad in ["10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("53").unwrap(), 53);
        for bad in ["0", "70000", "-1", "http"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        for bad in ["", "0s", "10x", "s", "-5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pods_from_values() {
        assert_eq!(parse_pods_from("auto").unwrap(), PodsFrom::Auto);
        assert_eq!(parse_pods_from("none").unwrap(), PodsFrom::None);
        assert_eq!(parse_pods_from("file:/proc/self/status").unwrap(), PodsFrom::File("/proc/self/status".into()));
        for bad in ["file:", "file:/nonexistent/pods.json", "crio", ""] {
            assert!(parse_pods_from(bad).is_err(), "{bad}");
        }
    }

    /// `watch`'s config from a command line (after `tracer watch`).
    fn watch_config(argv: &[&str]) -> Result<WatchCommandConfig, UsageError> {
        let cli = <super::super::Cli as clap::Parser>::try_parse_from(["tracer", "watch"].iter().chain(argv)).expect("parses");
        let super::super::Command::Watch(args) = cli.command else { panic!("not watch") };
        WatchCommandConfig::from_args(args)
    }

    #[test]
    fn nat_hook_tc_needs_the_mtu_classifiers_on_the_node() {
        use crate::probes::nat::Hook;
        assert_eq!(watch_config(&[]).unwrap().nat_hook, Hook::Auto);
        assert_eq!(watch_config(&["--nat-hook", "xmit", "--iface", "eth0"]).unwrap().nat_hook, Hook::Xmit);
        assert_eq!(watch_config(&["--nat-hook", "tc", "--probes", "nat,mtu"]).unwrap().nat_hook, Hook::Tc);
        let refused = |argv: &[&str]| watch_config(argv).expect_err("refused").0;
        assert!(refused(&["--nat-hook", "tc", "--probes", "nat,drops"]).starts_with("--nat-hook tc: "));
        assert!(refused(&["--nat-hook", "tc", "--iface", "eth0"]).contains("--iface"));
        assert!(<super::super::Cli as clap::Parser>::try_parse_from(["tracer", "watch", "--nat-hook", "kprobe"]).is_err());
    }

    #[test]
    fn ifaces() {
        let i = parse_iface("eth0").unwrap();
        assert_eq!((i.netns.path, i.name.as_str()), (None, "eth0"));
        let i = parse_iface("node1:veth1").unwrap();
        assert_eq!(i.netns.path.as_deref(), Some(std::path::Path::new("/var/run/netns/node1")));
        assert_eq!(i.name, "veth1");
        let i = parse_iface("/proc/1/ns/net:eth0").unwrap();
        assert_eq!(i.netns.path.as_deref(), Some(std::path::Path::new("/proc/1/ns/net")));
        for bad in ["", ":eth0", "node1:", "a-very-long-device-name", "x:y:z", "eth 0"] {
            assert!(parse_iface(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_specs_are_checked_before_anything() {
        let args = |cmd: &[&str]| super::super::JobSpecArgs {
            nodes: vec!["node-1".into()],
            pods: vec![],
            all_nodes: false,
            namespace: "tracer".into(),
            image: super::super::ImageArgs { image: Some("i".into()) },
            duration: "30s".into(),
            name: None,
            command: cmd.iter().map(|s| s.to_string()).collect(),
        };
        let render = |a| job_render_spec(a).map(|mut specs: Vec<crate::job::JobSpec>| specs.remove(0));
        let spec = render(args(&["drops", "--pod", "shop/web-0"])).expect("valid");
        assert_eq!(spec.args, ["drops", "--pod", "shop/web-0", "-o", "json", "--duration", "30s"]);
        assert_eq!(spec.name, "tracer-drops-node-1");
        assert!(render(args(&["serve"])).is_err(), "not a command for a Job");
        let check = render(args(&["check"])).expect("check runs as a Job");
        assert_eq!(check.args, ["check"], "as it is: no -o json, no --duration");
        let pods = render(args(&["pods", "-o", "json"])).expect("pods runs as a Job");
        assert_eq!(pods.args, ["pods", "-o", "json"], "its own output");
        assert!(render(args(&["drops", "--cri-socket", "run/k3s.sock"])).is_err(), "a hostPath is absolute");
        assert!(render(args(&["drops", "-o", "table"])).is_err(), "the Job sets the output");
        assert!(render(args(&["drops", "--ip", "nonsense"])).is_err(), "the inner command is parsed");
        let mut bad_node = args(&["drops"]);
        bad_node.nodes = vec!["Node_1".into()];
        assert!(render(bad_node).is_err());
        // At most 52: the Job controller appends to it for the pod's name.
        assert_eq!(
            job_name("diagnose", "ip-10-0-0-1.eu-west-1.compute.internal", JOB_NAME_MAX),
            "tracer-diagnose-ip-10-0-0-1-eu-west-1-compute-intern"
        );
    }

    #[test]
    fn a_job_for_a_pod_is_named_after_the_node_it_lands_on() {
        let mut a = super::super::JobSpecArgs {
            nodes: vec![],
            pods: vec!["shop/web-0".into()],
            all_nodes: false,
            namespace: "tracer".into(),
            image: super::super::ImageArgs { image: Some("i".into()) },
            duration: "30s".into(),
            name: None,
            command: vec!["drops".into()],
        };
        let request = job_request(a.clone()).expect("valid");
        assert_eq!(request.targets, [JobTarget::Pod { namespace: "shop".into(), name: "web-0".into() }]);
        let pods = ["shop/web-0".to_string()];
        let spec = request.spec("n1", &pods, None, false);
        assert_eq!(spec.args[..3], ["drops", "--pod", "shop/web-0"], "the pod's traffic, unless the command selects");
        let own = job_request(super::super::JobSpecArgs { command: vec!["drops".into(), "--namespace=shop".into()], ..a.clone() }).expect("valid");
        assert_eq!(own.spec("n1", &pods, None, false).args[..2], ["drops", "--namespace=shop"]);
        let long = "ip-10-0-0-1.eu-west-1.compute.internal";
        let spec = request.spec(long, &pods, Some("x7k2p"), false);
        assert_eq!(spec.node, long);
        assert!(spec.name.len() <= JOB_NAME_MAX && spec.name.ends_with("-x7k2p"), "{}", spec.name);
        assert!(job_render_spec(a.clone()).is_err(), "render needs no cluster, so no --pod");
        a.pods = vec!["web-0".into()];
        assert!(job_request(a).is_err(), "--pod without a namespace");
    }

    /// `tracer job ARGV...`, checked.
    fn job_config(argv: &[&str]) -> Result<JobConfig, UsageError> {
        let cli = <super::super::Cli as clap::Parser>::try_parse_from(["tracer", "job"].iter().chain(argv)).expect("parses");
        match cli.command {
            super::super::Command::Job(args) => JobConfig::from_args(args),
            other => panic!("not a job command: {other:?}"),
        }
    }

    #[test]
    fn several_nodes_and_pods_are_one_job_per_node() {
        let config = job_config;
        let Ok(JobConfig::Render(specs)) = config(&["render", "--node", "a", "--node", "b", "--node", "a", "--", "drops"]) else {
            panic!("a valid render")
        };
        let names: Vec<(&str, &str)> = specs.iter().map(|s| (s.node.as_str(), s.name.as_str())).collect();
        assert_eq!(names, [("a", "tracer-drops-a"), ("b", "tracer-drops-b")], "one Job per node, a node named twice once");
        let Ok(JobConfig::Render(specs)) = config(&["render", "--node", "a", "--node", "b", "--name", "mine", "--", "drops"]) else { panic!() };
        assert_eq!((specs[0].name.as_str(), specs[1].name.as_str()), ("mine-a", "mine-b"), "--name stays apart per node");
        assert!(config(&["render", "--all-nodes", "--", "drops"]).is_err(), "render lists no nodes");
        assert!(config(&["render", "--node", "a", "--pod", "shop/web-0", "--", "drops"]).is_err(), "render finds no pod's node");
        let Ok(JobConfig::Run(run)) = config(&["run", "--pod", "shop/web-0", "--pod", "shop/db-0", "--node", "c", "--", "drops"]) else { panic!() };
        assert_eq!(run.request.targets.len(), 3);
        let both = ["shop/web-0".to_string(), "shop/db-0".to_string()];
        assert_eq!(run.request.spec("n1", &both, None, true).args[..5], ["drops", "--pod", "shop/web-0", "--pod", "shop/db-0"]);
        assert_eq!(run.request.spec("c", &[], None, true).args[..3], ["drops", "-o", "json"], "a node of its own: no pod selection");
        let Ok(JobConfig::Run(all)) = config(&["run", "--all-nodes", "--", "watch"]) else { panic!("a valid run") };
        assert!(all.request.all_nodes && all.request.targets.is_empty());
        assert!(<super::super::Cli as clap::Parser>::try_parse_from(["tracer", "job", "run", "--all-nodes", "--node", "a", "--", "drops"]).is_err());
    }

    #[test]
    fn job_subcommands_are_checked_into_a_config() {
        let config = job_config;
        assert!(matches!(config(&["list", "-A"]), Ok(JobConfig::List(JobListConfig { namespace: None, .. }))));
        assert!(matches!(config(&["list"]), Ok(JobConfig::List(JobListConfig { namespace: Some(ns), .. })) if ns == "tracer"));
        let Ok(JobConfig::Run(run)) = config(&["run", "--pod", "shop/web-0", "--detach", "--", "drops"]) else { panic!("a valid run") };
        assert_eq!(run.request.targets, [JobTarget::Pod { namespace: "shop".into(), name: "web-0".into() }]);
        assert!(run.detach && run.api.kubeconfig.is_none());
        assert!(
            matches!(config(&["render", "--node", "n1", "--", "drops"]), Ok(JobConfig::Render(specs)) if specs.len() == 1 && specs[0].node == "n1")
        );
        assert!(config(&["delete", "ok-name", "Bad_Name"]).is_err(), "one bad name refuses them all");
        assert!(config(&["logs", "Not_A_Name"]).is_err());
        let missing = config(&["logs", "tracer-x", "--kubeconfig", "/nonexistent/kubeconfig"]).map(drop).expect_err("no such file");
        assert!(missing.0.contains("--kubeconfig /nonexistent/kubeconfig: no such file"), "{missing}");
        assert!(
            matches!(config(&["list", "--context", "prod"]), Ok(JobConfig::List(JobListConfig { api: KubeApiConfig { context: Some(c), .. }, .. })) if c == "prod")
        );
        assert!(config(&["list", "--context", ""]).is_err());
        assert!(config(&["render", "--node", "n1", "--image", "Bad Image", "--", "drops"]).is_err());
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("4096").unwrap(), 4096);
        assert_eq!(parse_ring_size("256K").unwrap(), 256 << 10);
        assert_eq!(parse_ring_size("8M").unwrap(), 8 << 20);
        for bad in ["1000", "12K", "2048", "2G", "big"] {
            assert!(parse_ring_size(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod install_tests {
    use super::*;

    fn config(argv: &[&str]) -> Result<InstallConfig, UsageError> {
        let cli = <super::super::Cli as clap::Parser>::try_parse_from(["tracer", "install", "print"].iter().chain(argv)).expect("parses");
        match cli.command {
            super::super::Command::Install(args) => InstallConfig::from_args(args),
            other => panic!("not install: {other:?}"),
        }
    }

    #[test]
    fn install_print_is_checked_into_a_config() {
        let c = config(&["--image", "registry.example/tracer:1.2.3"]).expect("valid");
        assert_eq!(
            (c.image.as_str(), c.cri_socket.as_str(), c.daemonset, c.uninstall),
            ("registry.example/tracer:1.2.3", crate::job::DEFAULT_CRI_SOCKET, true, false)
        );
        let c = config(&["--cri-socket", "/run/k3s/containerd/containerd.sock", "--job-user-group", "sre", "--no-daemonset"]).expect("valid");
        assert_eq!(
            (c.cri_socket.as_str(), c.job_user_groups.as_slice(), c.daemonset),
            ("/run/k3s/containerd/containerd.sock", &["sre".to_string()][..], false)
        );
        for bad in [&["--cri-socket", "crio.sock"][..], &["--cri-socket", "/run/../x.sock"], &["--image", "UPPER/case"], &["--job-user-group", " "]] {
            assert!(config(bad).is_err(), "{bad:?}");
        }
    }
}
