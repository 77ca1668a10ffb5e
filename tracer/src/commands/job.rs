//! `tracer job run | logs | list | delete`: the Job of `job render`, through the Kubernetes API
//! (kube-rs), the way kubectl-trace runs bpftrace on a node.
//!
//! `run` creates the Job, waits for its pod, follows the pod's log until the tracer in it exits
//! and returns its verdict; Ctrl-C (or SIGTERM) deletes the Job and its pod, so nothing keeps
//! tracing on the node after the user gave up. While the pod starts, the Job's and the pod's
//! Events and the pod's status say how far it got, and a pod that will not start without someone
//! changing something (refused, a volume or image missing, a node that rejects it) fails the run
//! at once with Kubernetes' reason. The log carries the tracer's JSON lines (stdout) and its
//! messages (stderr) in one stream: JSON objects are printed as a timeline or a report, anything
//! else goes to stderr as the tracer's own words (`check` and `pods` print as they are).

use std::{
    io::{self, Write as _},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use futures::{AsyncBufReadExt as _, TryStreamExt as _};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Event, Node, Pod},
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, LogParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
};
use serde_json::{Value, json};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::{
    cli::{
        OutputFormat, UsageError,
        config::{JobDeleteConfig, JobListConfig, JobLogsConfig, JobRequest, JobRunConfig, JobTarget, KubeApiConfig},
    },
    diagnose::report_text,
    job::{self, CONTAINER, DEADLINE_SLACK_S, JobSpec},
    output::{json::event_text, table::TIMELINE_HEADER, write_line},
    pods::kube::{client, describe},
};

mod several;
use several::{NodeLine, Several};

/// How often the pod is looked at while it starts.
const POLL: Duration = Duration::from_secs(1);
/// While the pod starts without news, a line says so this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);
/// After the log ends, how long the kubelet has to report the container's exit.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(15);
/// Bound for deleting the Job after Ctrl-C: the user is waiting for the prompt.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting reasons of a container that will not start without someone changing something.
const STUCK_WAITING: &[&str] =
    &["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError", "CreateContainerError"];
/// Reasons of Warning Events that say the same of the pod (or of the Job's pod before it
/// exists): the Job controller could not create it (FailedCreate: no ServiceAccount, PodSecurity,
/// quota), it cannot be placed (FailedScheduling), a volume cannot be mounted (FailedMount: a
/// hostPath of the wrong type or missing), the node cannot give it a network
/// (FailedCreatePodSandBox), the kubelet cannot pull the image or create the container (Failed,
/// ErrImageNeverPull, InspectFailed).
const STUCK_EVENTS: &[&str] = &[
    "FailedCreate",
    "FailedScheduling",
    "FailedMount",
    "FailedAttachVolume",
    "FailedCreatePodSandBox",
    "Failed",
    "ErrImageNeverPull",
    "InspectFailed",
];

#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    #[error("{op} {namespace}/{name}: {detail}")]
    Api { op: &'static str, namespace: String, name: String, detail: String },
    #[error("pod {namespace}/{name} not found (the Job runs on the node of --pod)")]
    PodNotFound { namespace: String, name: String },
    #[error(
        "reading pod {namespace}/{name}: {detail} (finding a pod outside the Job's namespace needs `get pods` in {namespace}: ClusterRole tracer-cluster-reader of `tracer install print`; or pass --node)"
    )]
    PodForbidden { namespace: String, name: String, detail: String },
    #[error("pod {namespace}/{name} is not scheduled on a node yet: there is no node to trace")]
    Unscheduled { namespace: String, name: String },
    #[error("job {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("job {namespace}/{name} exists already: delete it (tracer job delete {name}) or pass another --name")]
    Exists { namespace: String, name: String },
    #[error("job {namespace}/{name}: {what} cannot start: {reason}{message}")]
    CannotStart { namespace: String, name: String, what: String, reason: String, message: String },
    #[error("job {namespace}/{name} failed before its tracer ran: {reason}{message}")]
    Failed { namespace: String, name: String, reason: String, message: String },
    #[error("job {namespace}/{name} has no pod (removed with the Job's TTL, or deleted)")]
    NoPod { namespace: String, name: String },
    #[error("job {namespace}/{name}: the tracer on node {node} exited with code {code}{reason}")]
    TracerFailed { namespace: String, name: String, node: String, code: i32, reason: String },
    #[error("job {namespace}/{name}: the log stream ended while the tracer still runs; follow it again with `tracer job logs {name}`")]
    LogEnded { namespace: String, name: String },
    #[error("job {namespace}/{name}: its pod did not start within {waited_s} s ({state})")]
    StartTimeout { namespace: String, name: String, waited_s: u64, state: String },
}

fn api_error(op: &'static str, namespace: &str, name: &str, err: &kube::Error) -> JobError {
    JobError::Api { op, namespace: namespace.into(), name: name.into(), detail: describe(err) }
}

fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A client for the API the user chose: `--context` of `--kubeconfig` (else of KUBECONFIG or
/// ~/.kube/config), else what the pod source would use. A context the kubeconfig does not have
/// is bad input.
async fn connect(api: &KubeApiConfig) -> anyhow::Result<Client> {
    let Some(context) = &api.context else {
        return Ok(client(api.kubeconfig.as_deref()).await?.0);
    };
    let options = KubeConfigOptions { context: Some(context.clone()), ..KubeConfigOptions::default() };
    let config = match &api.kubeconfig {
        Some(path) => match Kubeconfig::read_from(path) {
            Ok(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options).await,
            Err(e) => Err(e),
        },
        None => Config::from_kubeconfig(&options).await,
    };
    let config = match config {
        Ok(config) => config,
        Err(KubeconfigError::LoadContext(name)) => {
            let file = api.kubeconfig.as_ref().map_or("the kubeconfig (KUBECONFIG or ~/.kube/config)".into(), |p| p.display().to_string());
            return Err(UsageError(format!("--context {name}: {file} has no such context")).into());
        }
        Err(e) => anyhow::bail!("--context {context}: the kubeconfig is not usable: {}", describe(&e)),
    };
    let url = config.cluster_url.to_string();
    Client::try_from(config).with_context(|| format!("Kubernetes API client for {url}"))
}

/// `tracer job render`: the Jobs' manifests on stdout, as YAML: one document, or a stream of
/// one per node (`---` between them, as `kubectl apply -f -` reads it).
pub(crate) fn render(specs: &[JobSpec]) -> anyhow::Result<ExitCode> {
    if let Some(first) = specs.first() {
        // One image for every Job: warned about once.
        job::warn_version(&first.image);
    }
    let mut yaml = String::new();
    for (i, spec) in specs.iter().enumerate() {
        if i > 0 {
            yaml.push_str("---\n");
        }
        yaml.push_str(&job::to_yaml(&job::manifest(spec)).with_context(|| format!("job {}/{}", spec.namespace, spec.name))?);
    }
    super::print_stdout(&yaml)?;
    Ok(ExitCode::SUCCESS)
}

/// Whether a Job's command prints one answer as it is (`check`, `pods`) rather than JSON lines.
fn prints_as_is(args: &[String]) -> bool {
    args.first().is_some_and(|c| c == "check" || c == "pods")
}

/// `tracer job run`.
pub(crate) async fn run(config: JobRunConfig) -> anyhow::Result<ExitCode> {
    let JobRunConfig { request, api, output, detach } = config;
    job::warn_version(&request.image);
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let client = connect(&api).await?;
    let mut nodes = nodes_of(&client, &request).await?;
    if nodes.len() > 1 {
        let several = Several { client: &client, request: &request, output, detach };
        return several.run(nodes, &mut sigint, &mut sigterm).await;
    }
    let (node, pods) = nodes.pop().context("no node to run on")?;
    let spec = request.spec(&node, &pods, request.name.is_none().then(random_suffix).as_deref(), false);
    let (namespace, name) = (spec.namespace.clone(), spec.name.clone());
    let job = job::manifest(&spec);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => {}
        Err(e) if api_code(&e) == Some(409) => return Err(JobError::Exists { namespace, name }.into()),
        Err(e) => return Err(api_error("creating job", &namespace, &name, &e).into()),
    }
    if detach {
        eprintln!("tracer: job {namespace}/{name} created on node {node}; follow it with `tracer job logs {name}`");
        println!("{name}");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("tracer: job {namespace}/{name} created on node {node} (Ctrl-C deletes it)");
    let start_bound = spec.duration + Duration::from_secs(DEADLINE_SLACK_S);
    let follow = Follow { client: &client, namespace: &namespace, name: &name, output, as_is: prints_as_is(&spec.args), created: true, lines: None };
    tokio::select! {
        result = follow.run(start_bound) => result.map(|()| ExitCode::SUCCESS),
        _ = sigint.recv() => interrupted(&jobs, &namespace, &name).await,
        _ = sigterm.recv() => interrupted(&jobs, &namespace, &name).await,
    }
}

async fn interrupted(jobs: &Api<Job>, namespace: &str, name: &str) -> anyhow::Result<ExitCode> {
    match tokio::time::timeout(DELETE_TIMEOUT, jobs.delete(name, &DeleteParams::background())).await {
        Ok(Ok(_)) => eprintln!("tracer: interrupted: deleted job {namespace}/{name} and its pod"),
        Ok(Err(e)) if api_code(&e) == Some(404) => eprintln!("tracer: interrupted: job {namespace}/{name} was gone already"),
        Ok(Err(e)) => return Err(api_error("interrupted: deleting job", namespace, name, &e).into()),
        Err(_) => {
            return Err(anyhow::anyhow!(
                "interrupted: deleting job {namespace}/{name}: no answer within {} s; delete it with `tracer job delete {name}`",
                DELETE_TIMEOUT.as_secs()
            ));
        }
    }
    // 128 + SIGINT, as a shell reports a command it interrupted.
    Ok(ExitCode::from(130))
}

/// The nodes the Jobs run on, in the order the targets were given, each with the target pods
/// that run there (`namespace/name`): `--node`s, the nodes of `--pod`s, or every Linux node.
async fn nodes_of(client: &Client, request: &JobRequest) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut nodes: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |node: String, pod: Option<String>| {
        let i = nodes.iter().position(|(n, _)| *n == node).unwrap_or_else(|| {
            nodes.push((node, Vec::new()));
            nodes.len() - 1
        });
        nodes[i].1.extend(pod);
    };
    if request.all_nodes {
        for node in linux_nodes(client).await? {
            add(node, None);
        }
    }
    for target in &request.targets {
        match target {
            JobTarget::Node(node) => add(node.clone(), None),
            JobTarget::Pod { namespace, name } => add(node_of_pod(client, namespace, name).await?, Some(format!("{namespace}/{name}"))),
        }
    }
    Ok(nodes)
}

/// The cluster's Linux nodes (those a tracer image runs on; the kubelet rejects the pod on a
/// node of another architecture, which its Job then says).
async fn linux_nodes(client: &Client) -> anyhow::Result<Vec<String>> {
    let api: Api<Node> = Api::all(client.clone());
    let list = api.list(&ListParams::default().labels("kubernetes.io/os=linux")).await.map_err(|e| match api_code(&e) {
        Some(403) => anyhow::anyhow!(
            "listing the nodes: {} (--all-nodes needs `list nodes`: ClusterRole tracer-cluster-reader of `tracer install print`; or name them with --node)",
            describe(&e)
        ),
        _ => anyhow::anyhow!("listing the nodes: {}", describe(&e)),
    })?;
    let nodes: Vec<String> = list.items.into_iter().filter_map(|n| n.metadata.name).collect();
    if nodes.is_empty() {
        anyhow::bail!("--all-nodes: the cluster has no Linux node");
    }
    Ok(nodes)
}

/// The node `namespace/name` runs on.
async fn node_of_pod(client: &Client, namespace: &str, name: &str) -> Result<String, JobError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = match pods.get(name).await {
        Ok(pod) => pod,
        Err(e) if api_code(&e) == Some(404) => return Err(JobError::PodNotFound { namespace: namespace.into(), name: name.into() }),
        Err(e) if api_code(&e) == Some(403) => {
            return Err(JobError::PodForbidden { namespace: namespace.into(), name: name.into(), detail: describe(&e) });
        }
        Err(e) => return Err(api_error("reading pod", namespace, name, &e)),
    };
    pod.spec
        .and_then(|s| s.node_name)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| JobError::Unscheduled { namespace: namespace.into(), name: name.into() })
}

/// Five characters as the API's generateName makes them (no vowels, no look-alikes), from the
/// standard library's randomly keyed hasher: enough to keep two runs' names apart.
fn random_suffix() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos());
    let mut x = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// `tracer job logs`.
pub(crate) async fn logs(config: JobLogsConfig) -> anyhow::Result<ExitCode> {
    let JobLogsConfig { namespace, name, api, output } = config;
    let (namespace, name) = (namespace.as_str(), name.as_str());
    let client = connect(&api).await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let job = match jobs.get(name).await {
        Ok(job) => job,
        Err(e) if api_code(&e) == Some(404) => return Err(JobError::NotFound { namespace: namespace.into(), name: name.into() }.into()),
        Err(e) => return Err(api_error("reading job", namespace, name, &e).into()),
    };
    let deadline = job.spec.as_ref().and_then(|s| s.active_deadline_seconds).unwrap_or(3600);
    let as_is = prints_as_is(&job_args(&job));
    let follow = Follow { client: &client, namespace, name, output, as_is, created: false, lines: None };
    follow.run(Duration::from_secs(deadline.max(0) as u64)).await?;
    Ok(ExitCode::SUCCESS)
}

/// What the Job's tracer container is doing.
#[derive(Debug, Clone, PartialEq)]
enum Container {
    /// Not started: the pod's phase or the container's waiting reason, and its message.
    Waiting {
        reason: String,
        message: String,
    },
    Running,
    Exited {
        code: i32,
        reason: String,
        message: String,
    },
}

fn container_state(pod: &Pod) -> Container {
    let status = pod.status.as_ref();
    let state =
        status.and_then(|s| s.container_statuses.as_ref()).and_then(|cs| cs.iter().find(|c| c.name == CONTAINER)).and_then(|c| c.state.as_ref());
    let waiting = |reason: Option<&String>, message: Option<&String>| Container::Waiting {
        reason: reason.cloned().unwrap_or_else(|| "Pending".into()),
        message: message.cloned().unwrap_or_default(),
    };
    match state {
        Some(s) if s.terminated.is_some() => {
            let t = s.terminated.as_ref().expect("checked");
            Container::Exited { code: t.exit_code, reason: t.reason.clone().unwrap_or_default(), message: t.message.clone().unwrap_or_default() }
        }
        Some(s) if s.running.is_some() => Container::Running,
        Some(s) => waiting(s.waiting.as_ref().and_then(|w| w.reason.as_ref()), s.waiting.as_ref().and_then(|w| w.message.as_ref())),
        None => waiting(status.and_then(|s| s.phase.as_ref()), status.and_then(|s| s.message.as_ref())),
    }
}

/// What Kubernetes says of a pod that is not running: a reason and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Why {
    reason: String,
    message: String,
}

impl Why {
    fn new(reason: Option<&String>, message: Option<&String>) -> Self {
        // Event messages may span lines (a kubelet error with its cause); the error is one line.
        let message = message.map(|m| m.split_whitespace().collect::<Vec<_>>().join(" ")).unwrap_or_default();
        Self { reason: reason.cloned().unwrap_or_default(), message }
    }

    /// What to do about it, where tracer knows.
    fn hint(&self) -> Option<&'static str> {
        let m = self.message.to_lowercase();
        let image = "the node cannot pull the image: push it where the nodes can pull from, and name it with --image or $TRACER_IMAGE";
        match self.reason.as_str() {
            "FailedCreate" if m.contains("serviceaccount") => Some(
                "the ServiceAccount `tracer` is missing in this namespace: `tracer install print | kubectl apply -f -` creates it in namespace tracer",
            ),
            "FailedCreate" if m.contains("podsecurity") => Some(
                "this namespace's PodSecurity level refuses hostPID and capabilities: use namespace tracer of `tracer install print` (level privileged)",
            ),
            "FailedMount" | "FailedAttachVolume" if m.contains(".sock") => Some(
                "no CRI socket at that path on the node: pass the node's with --cri-socket (k3s, RKE2: /run/k3s/containerd/containerd.sock; CRI-O: /var/run/crio/crio.sock), or --pods-from kube",
            ),
            "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull" => Some(image),
            "Failed" if m.contains("pull") || m.contains("errimage") || m.contains("imagepull") => Some(image),
            "NodeAffinity" => Some("tracer's image runs on Linux nodes of amd64 or arm64, and this node is not one"),
            "FailedCreatePodSandBox" => {
                Some("the node cannot give the pod a network (its CNI): mtu, watch, diagnose and check run on the node's network")
            }
            _ => None,
        }
    }

    /// `: message; the Job was deleted (hint)`, for [`JobError::CannotStart`].
    fn tail(&self, deleted: bool) -> String {
        let mut tail = with_message(&self.message);
        if deleted {
            tail.push_str("; the Job was deleted");
        }
        if let Some(hint) = self.hint() {
            tail.push_str(&format!(" ({hint})"));
        }
        tail
    }
}

/// Why the pod will not start by itself, from its status: a container that cannot be created
/// or whose image cannot be pulled, a pod the scheduler cannot place, a pod the kubelet
/// rejected at admission (`nodeName` skips the scheduler, not the kubelet's checks).
fn pod_stuck(pod: &Pod) -> Option<Why> {
    if let Container::Waiting { reason, message } = container_state(pod)
        && STUCK_WAITING.contains(&reason.as_str())
    {
        return Some(Why::new(Some(&reason), Some(&message)));
    }
    let status = pod.status.as_ref()?;
    let unschedulable = status.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unschedulable.filter(|c| c.reason.as_deref() == Some("Unschedulable")) {
        return Some(Why::new(c.reason.as_ref(), c.message.as_ref()));
    }
    if status.phase.as_deref() == Some("Failed") && !matches!(container_state(pod), Container::Exited { .. }) {
        let reason = status.reason.clone().unwrap_or_else(|| "Failed".into());
        return Some(Why::new(Some(&reason), status.message.as_ref()));
    }
    None
}

/// When an Event last happened (ns since the epoch).
fn event_time(e: &Event) -> Option<i128> {
    let last = e.last_timestamp.as_ref().map(|t| t.0.as_nanosecond());
    last.or_else(|| e.event_time.as_ref().map(|t| t.0.as_nanosecond())).or_else(|| e.first_timestamp.as_ref().map(|t| t.0.as_nanosecond()))
}

/// The newest Warning Event that says the pod will not start by itself.
fn events_stuck(events: &[Event]) -> Option<Why> {
    events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref().is_some_and(|r| STUCK_EVENTS.contains(&r)))
        .max_by_key(|e| event_time(e))
        .map(|e| Why::new(e.reason.as_ref(), e.message.as_ref()))
}

/// The Job's newest pod (a Job with backoffLimit 0 has one), if it has one yet.
async fn job_pod(pods: &Api<Pod>, namespace: &str, name: &str) -> Result<Option<Pod>, JobError> {
    // `job-name` is set by every Kubernetes version's Job controller.
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .map_err(|e| api_error("listing the pods of job", namespace, name, &e))?;
    Ok(list.items.into_iter().max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0)))
}

/// Why the Job failed, if it did.
fn job_failed(job: &Job) -> Option<(String, String)> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let c = conditions.iter().find(|c| c.type_ == "Failed" && c.status == "True")?;
    Some((c.reason.clone().unwrap_or_else(|| "Failed".into()), c.message.clone().unwrap_or_default()))
}

/// The command line of a Job's tracer container.
fn job_args(job: &Job) -> Vec<String> {
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    pod.and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER)).and_then(|c| c.args.clone()).unwrap_or_default()
}

fn with_message(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

/// Following one Job: waiting for its pod, then its log.
struct Follow<'a> {
    client: &'a Client,
    namespace: &'a str,
    name: &'a str,
    output: OutputFormat,
    /// The command prints its answer as it is (`check`, `pods`), not JSON lines.
    as_is: bool,
    /// This run made the Job, so a pod that cannot start takes it away.
    created: bool,
    /// With several Jobs: where the log's lines go (to be merged), instead of stdout.
    lines: Option<mpsc::UnboundedSender<NodeLine>>,
}

/// The progress lines printed while the pod starts: one when what it waits for changes, and
/// one every [`PROGRESS_EVERY`] without news.
struct Progress {
    said: String,
    at: Instant,
}

impl Progress {
    fn say(&mut self, namespace: &str, name: &str, now: String, waited: Duration) {
        if now != self.said {
            eprintln!("tracer: job {namespace}/{name}: waiting for its pod: {now}");
        } else if self.at.elapsed() >= PROGRESS_EVERY {
            eprintln!("tracer: job {namespace}/{name}: still waiting for its pod after {} s: {now}", waited.as_secs());
        } else {
            return;
        }
        self.said = now;
        self.at = Instant::now();
    }
}

impl Follow<'_> {
    /// The Events about object `uid` (the Job or its pod). Events it may not read (RBAC) are
    /// warned about once and done without: the wait still ends, only later and with less said.
    async fn events(&self, api: &Api<Event>, uid: Option<&str>, warned: &mut bool) -> Vec<Event> {
        let Some(uid) = uid else { return Vec::new() };
        match api.list(&ListParams::default().fields(&format!("involvedObject.uid={uid}"))).await {
            Ok(list) => list.items,
            Err(e) => {
                if !*warned {
                    log::warn!(
                        "job {}/{}: cannot read its Events ({}): why its pod does not start will not be said (tracer-job-user allows it)",
                        self.namespace,
                        self.name,
                        describe(&e)
                    );
                    *warned = true;
                }
                Vec::new()
            }
        }
    }

    async fn cannot_start(&self, jobs: &Api<Job>, what: String, why: Why) -> anyhow::Error {
        if self.created {
            let _ = jobs.delete(self.name, &DeleteParams::background()).await;
        }
        let (namespace, name) = (self.namespace.into(), self.name.into());
        JobError::CannotStart { namespace, name, what, message: why.tail(self.created), reason: why.reason }.into()
    }

    /// Waits for the Job's pod to run, prints its log until it ends, and returns the tracer's
    /// verdict.
    async fn run(&self, start_bound: Duration) -> anyhow::Result<()> {
        let (namespace, name) = (self.namespace, self.name);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let started = Instant::now();
        let mut progress = Progress { said: String::new(), at: Instant::now() };
        let mut warned = false;
        let pod = loop {
            let pod = job_pod(&pods, namespace, name).await?;
            let state = pod.as_ref().map(container_state);
            if let (Some(p), Some(Container::Running | Container::Exited { .. })) = (&pod, &state) {
                break p.clone();
            }
            let job = match jobs.get(name).await {
                Ok(job) => job,
                Err(e) if api_code(&e) == Some(404) => return Err(JobError::NotFound { namespace: namespace.into(), name: name.into() }.into()),
                Err(e) => return Err(api_error("reading job", namespace, name, &e).into()),
            };
            let pod_name = pod.as_ref().and_then(|p| p.metadata.name.clone());
            let mut said = self.events(&events, job.metadata.uid.as_deref(), &mut warned).await;
            said.extend(self.events(&events, pod.as_ref().and_then(|p| p.metadata.uid.as_deref()), &mut warned).await);
            let stuck = pod.as_ref().and_then(pod_stuck).or_else(|| events_stuck(&said));
            if let Some(why) = stuck {
                let what = pod_name.map_or_else(|| "its pod".to_string(), |p| format!("pod {p}"));
                return Err(self.cannot_start(&jobs, what, why).await);
            }
            if pod.is_none() {
                if let Some((reason, message)) = job_failed(&job) {
                    return Err(JobError::Failed { namespace: namespace.into(), name: name.into(), reason, message: with_message(&message) }.into());
                }
                if job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0 {
                    return Err(JobError::NoPod { namespace: namespace.into(), name: name.into() }.into());
                }
            }
            let mut now = match &state {
                Some(Container::Waiting { reason, .. }) => reason.clone(),
                _ => "no pod yet".into(),
            };
            // The newest Event says how far it got (Scheduled, Pulling, Pulled, ...).
            if let Some(e) = said.iter().max_by_key(|e| event_time(e)) {
                let why = Why::new(e.reason.as_ref(), e.message.as_ref());
                now.push_str(&format!(" ({}{})", why.reason, with_message(&why.message)));
            }
            progress.say(namespace, name, now, started.elapsed());
            if started.elapsed() > start_bound {
                let waited_s = start_bound.as_secs();
                return Err(JobError::StartTimeout { namespace: namespace.into(), name: name.into(), waited_s, state: progress.said }.into());
            }
            tokio::time::sleep(POLL).await;
        };
        self.print_log(&pods, &pod).await
    }

    /// Prints the running (or finished) pod's log until it ends, then its tracer's verdict.
    async fn print_log(&self, pods: &Api<Pod>, pod: &Pod) -> anyhow::Result<()> {
        let (namespace, name) = (self.namespace, self.name);
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "?".into());
        let params = LogParams { container: Some(CONTAINER.into()), follow: true, ..LogParams::default() };
        let stream = pods.log_stream(&pod_name, &params).await.map_err(|e| api_error("reading the log of pod", namespace, &pod_name, &e))?;
        let mut printer = LogPrinter::new(self.output, self.as_is);
        let mut lines = stream.lines();
        let job_node: Arc<str> = Arc::from(node.as_str());
        while let Some(line) = lines.try_next().await.with_context(|| format!("reading the log of pod {namespace}/{pod_name}"))? {
            if let Some(merged) = &self.lines {
                // The merger outlives every follower: a send fails only when the run is over.
                let _ = merged.send(NodeLine { node: job_node.clone(), line });
                continue;
            }
            match printer.line(&line) {
                Ok(()) => {}
                // The reader went away (`| head`): stop following, quietly.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e).context("writing to stdout"),
            }
        }
        // The kubelet reports the exit a moment after the log ends.
        let waited = Instant::now();
        loop {
            let pod = pods.get(&pod_name).await.map_err(|e| api_error("reading pod", namespace, &pod_name, &e))?;
            match container_state(&pod) {
                Container::Exited { code: 0, .. } => {
                    eprintln!("tracer: job {namespace}/{name} on node {node} finished");
                    return Ok(());
                }
                Container::Exited { code, reason, message } => {
                    // A container that could not even start says why in its message
                    // (`exec format error`: an image of another architecture).
                    let reason = match (reason.is_empty(), message.trim()) {
                        (true, "") => String::new(),
                        (false, "") => format!(" ({reason})"),
                        (_, m) => format!(" ({reason}: {})", m.split_whitespace().collect::<Vec<_>>().join(" ")),
                    };
                    return Err(JobError::TracerFailed { namespace: namespace.into(), name: name.into(), node, code, reason }.into());
                }
                _ if waited.elapsed() > EXIT_REPORT_WAIT => {
                    return Err(JobError::LogEnded { namespace: namespace.into(), name: name.into() }.into());
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }
}

/// Prints a Job's log lines: its JSON as people read it (or as it is), its messages on stderr.
struct LogPrinter {
    output: OutputFormat,
    /// `check` and `pods`: their answer as they print it (a table, or JSON over many lines).
    as_is: bool,
    header: bool,
}

impl LogPrinter {
    fn new(output: OutputFormat, as_is: bool) -> Self {
        Self { output, as_is, header: false }
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        if self.as_is {
            // Every message of tracer's starts so (`tracer: warning: ...`); the rest is stdout.
            if line.starts_with("tracer: ") {
                eprintln!("{line}");
                return Ok(());
            }
            return write_line(&mut out, line.as_bytes());
        }
        let value = serde_json::from_str::<Value>(line).ok().filter(Value::is_object);
        let Some(value) = value else {
            // The tracer's stderr: warnings, its closing counts.
            eprintln!("{line}");
            return Ok(());
        };
        if self.output == OutputFormat::Json {
            return write_line(&mut out, line.as_bytes());
        }
        // A recording's own records (`watch -o json` ends with them) are for `--from`, not people.
        if matches!(value["kind"].as_str(), Some("recording" | "fact")) {
            return Ok(());
        }
        if let Some(report) = report_text(&value) {
            out.write_all(report.as_bytes())?;
            return out.flush();
        }
        match event_text(&value) {
            Some(text) => {
                if !self.header {
                    write_line(&mut out, TIMELINE_HEADER.as_bytes())?;
                    self.header = true;
                }
                write_line(&mut out, text.as_bytes())
            }
            None => write_line(&mut out, line.as_bytes()),
        }
    }
}

/// `tracer job list`.
pub(crate) async fn list(config: JobListConfig) -> anyhow::Result<ExitCode> {
    let JobListConfig { namespace, api, output } = config;
    let namespace = namespace.as_deref();
    let client = connect(&api).await?;
    let jobs: Api<Job> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let list = jobs
        .list(&ListParams::default().labels(&job_labels()))
        .await
        .map_err(|e| api_error("listing tracer jobs in", namespace.unwrap_or("*"), "", &e))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let rows: Vec<Value> = list.items.iter().map(|j| job_summary(j, now)).collect();
    let text = match output {
        OutputFormat::Json => serde_json::to_string_pretty(&rows).context("encoding the list")? + "\n",
        OutputFormat::Table => list_table(&rows, namespace.is_none()),
    };
    super::print_stdout(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The label selector of every tracer Job (job.rs puts the labels on them).
fn job_labels() -> String {
    job::LABELS.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// One Job as `job list` shows it.
fn job_summary(job: &Job, now_s: i64) -> Value {
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let args = job_args(job);
    let status = job.status.as_ref();
    let count = |v: Option<i32>| v.unwrap_or(0) > 0;
    let state = if let Some((reason, _)) = job_failed(job) {
        format!("failed ({reason})")
    } else if count(status.and_then(|s| s.succeeded)) {
        "succeeded".into()
    } else if count(status.and_then(|s| s.active)) {
        "running".into()
    } else {
        "pending".into()
    };
    let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
    json!({
        "namespace": job.metadata.namespace, "name": job.metadata.name,
        "node": pod.and_then(|p| p.node_name.clone()), "command": args.join(" "),
        "state": state, "age_s": created.map(|c| (now_s - c).max(0)),
    })
}

fn list_table(rows: &[Value], with_namespace: bool) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return "no tracer jobs\n".into();
    }
    let cell = |r: &Value, k: &str| r[k].as_str().unwrap_or("-").to_string();
    let widths = |k: &str, min: usize| rows.iter().map(|r| cell(r, k).len()).max().unwrap_or(0).max(min);
    let (wn, wname, wnode, wstate) = (widths("namespace", 9), widths("name", 4), widths("node", 4), widths("state", 5));
    let ns = |s: &str| if with_namespace { format!("{s:<wn$}  ") } else { String::new() };
    out.push_str(&format!("{}{:<wname$}  {:<wnode$}  {:<wstate$}  {:>5}  COMMAND\n", ns("NAMESPACE"), "NAME", "NODE", "STATE", "AGE"));
    for r in rows {
        let age = r["age_s"].as_i64().map_or("-".into(), age_text);
        out.push_str(&format!(
            "{}{:<wname$}  {:<wnode$}  {:<wstate$}  {age:>5}  {}\n",
            ns(&cell(r, "namespace")),
            cell(r, "name"),
            cell(r, "node"),
            cell(r, "state"),
            cell(r, "command")
        ));
    }
    out
}

/// kubectl's short ages: 45s, 12m, 3h, 2d.
fn age_text(s: i64) -> String {
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

/// `tracer job delete`: every name is tried; the exit code says whether all went.
pub(crate) async fn delete(config: JobDeleteConfig) -> anyhow::Result<ExitCode> {
    let JobDeleteConfig { namespace, names, api } = config;
    let client = connect(&api).await?;
    let jobs: Api<Job> = Api::namespaced(client, &namespace);
    let mut failed = 0;
    for name in &names {
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => println!("job {namespace}/{name} deleted"),
            Err(e) => {
                failed += 1;
                let err = if api_code(&e) == Some(404) {
                    JobError::NotFound { namespace: namespace.clone(), name: name.clone() }
                } else {
                    api_error("deleting job", &namespace, name, &e)
                };
                eprintln!("tracer: error: {err}");
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age_text(45), "45s");
        assert_eq!(age_text(750), "12m");
        assert_eq!(age_text(3 * 3600 + 5), "3h");
        assert_eq!(age_text(3 * 86400), "3d");
    }

    #[test]
    fn suffixes_are_dns_safe_and_differ() {
        let a = random_suffix();
        assert_eq!(a.len(), 5);
        assert!(a.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{a}");
        assert!((0..20).any(|_| random_suffix() != a), "twenty suffixes in a row equal to {a}");
    }

    #[test]
    fn a_job_summary_names_node_command_and_state() {
        let spec = JobSpec {
            name: "tracer-drops-n1".into(),
            namespace: job::NAMESPACE.into(),
            node: "n1".into(),
            image: job::Image::parse("i").expect("an image"),
            args: vec!["drops".into(), "-o".into(), "json".into()],
            duration: Duration::from_secs(30),
        };
        let mut job = job::manifest(&spec);
        let row = job_summary(&job, 0);
        assert_eq!((row["node"].as_str(), row["command"].as_str(), row["state"].as_str()), (Some("n1"), Some("drops -o json"), Some("pending")));
        job.status =
            serde_json::from_value(json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]})).ok();
        assert_eq!(job_summary(&job, 0)["state"], "failed (DeadlineExceeded)");
        let table = list_table(&[job_summary(&job, 0)], false);
        assert!(table.starts_with("NAME") && table.contains("tracer-drops-n1") && table.contains("DeadlineExceeded"), "{table}");
    }
}
