//! `tracer job run | logs | list | delete`: the Job of `job render`, through the Kubernetes API
//! (kube-rs), the way kubectl-trace runs bpftrace on a node.
//!
//! `run` creates the Job, waits for its pod, follows the pod's log until the tracer in it exits
//! and returns its verdict; Ctrl-C (or SIGTERM) deletes the Job and its pod, so nothing keeps
//! tracing on the node after the user gave up. The log carries the tracer's JSON lines (stdout)
//! and its messages (stderr) in one stream: JSON objects are printed as a timeline or a report,
//! anything else goes to stderr as the tracer's own words.

use std::{
    io::{self, Write as _},
    process::ExitCode,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use futures::{AsyncBufReadExt as _, TryStreamExt as _};
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, LogParams, PostParams},
};
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    cli::{
        OutputFormat,
        config::{JobDeleteConfig, JobListConfig, JobLogsConfig, JobRunConfig, JobTarget, KubeApiConfig},
    },
    diagnose::report_text,
    job::{self, CONTAINER, DEADLINE_SLACK_S, JobSpec},
    output::{json::event_text, table::TIMELINE_HEADER, write_line},
    pods::kube::{client, describe},
};

/// How often the pod is looked at while it starts.
const POLL: Duration = Duration::from_secs(1);
/// After the log ends, how long the kubelet has to report the container's exit.
const EXIT_REPORT_WAIT: Duration = Duration::from_secs(15);
/// Bound for deleting the Job after Ctrl-C: the user is waiting for the prompt.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// Waiting reasons of a container that will not start without someone changing something.
const STUCK: &[&str] = &["ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError"];

#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    #[error("{op} {namespace}/{name}: {detail}")]
    Api { op: &'static str, namespace: String, name: String, detail: String },
    #[error("pod {namespace}/{name} not found (the Job runs on the node of --pod)")]
    PodNotFound { namespace: String, name: String },
    #[error("pod {namespace}/{name} is not scheduled on a node yet: there is no node to trace")]
    Unscheduled { namespace: String, name: String },
    #[error("job {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("job {namespace}/{name} exists already: delete it (tracer job delete {name}) or pass another --name")]
    Exists { namespace: String, name: String },
    #[error("job {namespace}/{name}: pod {pod} cannot start: {reason}{message}")]
    CannotStart { namespace: String, name: String, pod: String, reason: String, message: String },
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

async fn connect(api: &KubeApiConfig) -> anyhow::Result<Client> {
    Ok(client(api.kubeconfig.as_deref()).await?.0)
}

/// Writes `out` to stdout; a reader that went away (`| head`) is not an error.
fn print(out: &str) -> anyhow::Result<()> {
    match io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// `tracer job render`: the Job's manifest on stdout, as YAML.
pub(crate) fn render(spec: &JobSpec) -> anyhow::Result<ExitCode> {
    let yaml = job::to_yaml(&job::manifest(spec)).with_context(|| format!("job {}/{}", spec.namespace, spec.name))?;
    print(&yaml)?;
    Ok(ExitCode::SUCCESS)
}

/// `tracer job run`.
pub(crate) async fn run(config: JobRunConfig) -> anyhow::Result<ExitCode> {
    let JobRunConfig { request, api, output, detach } = config;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let client = connect(&api).await?;
    let node = match &request.target {
        JobTarget::Node(node) => node.clone(),
        JobTarget::Pod { namespace, name } => node_of_pod(&client, namespace, name).await?,
    };
    let spec = request.spec(&node, request.name.is_none().then(random_suffix).as_deref());
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
    let follow = follow(&client, &namespace, &name, output, start_bound, true);
    tokio::select! {
        result = follow => result.map(|()| ExitCode::SUCCESS),
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

/// The node `namespace/name` runs on.
async fn node_of_pod(client: &Client, namespace: &str, name: &str) -> Result<String, JobError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = match pods.get(name).await {
        Ok(pod) => pod,
        Err(e) if api_code(&e) == Some(404) => return Err(JobError::PodNotFound { namespace: namespace.into(), name: name.into() }),
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
    follow(&client, namespace, name, output, Duration::from_secs(deadline.max(0) as u64), false).await?;
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
            Container::Exited { code: t.exit_code, reason: t.reason.clone().unwrap_or_default() }
        }
        Some(s) if s.running.is_some() => Container::Running,
        Some(s) => waiting(s.waiting.as_ref().and_then(|w| w.reason.as_ref()), s.waiting.as_ref().and_then(|w| w.message.as_ref())),
        None => waiting(status.and_then(|s| s.phase.as_ref()), status.and_then(|s| s.message.as_ref())),
    }
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

fn with_message(message: &str) -> String {
    if message.is_empty() { String::new() } else { format!(": {message}") }
}

/// Waits for the Job's pod to run, prints its log until it ends, and returns the tracer's
/// verdict. `created` says this run made the Job, so a pod that cannot start takes it away.
async fn follow(client: &Client, namespace: &str, name: &str, output: OutputFormat, start_bound: Duration, created: bool) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let mut said = String::new();
    let pod = loop {
        let pod = job_pod(&pods, namespace, name).await?;
        let state = pod.as_ref().map(container_state);
        match (&pod, &state) {
            (Some(p), Some(Container::Running | Container::Exited { .. })) => break p.clone(),
            (Some(p), Some(Container::Waiting { reason, message })) if STUCK.contains(&reason.as_str()) => {
                let pod = p.metadata.name.clone().unwrap_or_default();
                if created {
                    let _ = jobs.delete(name, &DeleteParams::background()).await;
                }
                let message = format!("{}{}", with_message(message), if created { "; the Job was deleted" } else { "" });
                return Err(JobError::CannotStart { namespace: namespace.into(), name: name.into(), pod, reason: reason.clone(), message }.into());
            }
            _ => {}
        }
        let job = match jobs.get(name).await {
            Ok(job) => job,
            Err(e) if api_code(&e) == Some(404) => return Err(JobError::NotFound { namespace: namespace.into(), name: name.into() }.into()),
            Err(e) => return Err(api_error("reading job", namespace, name, &e).into()),
        };
        if pod.is_none() {
            if let Some((reason, message)) = job_failed(&job) {
                return Err(JobError::Failed { namespace: namespace.into(), name: name.into(), reason, message: with_message(&message) }.into());
            }
            if job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0 {
                return Err(JobError::NoPod { namespace: namespace.into(), name: name.into() }.into());
            }
        }
        let now = match &state {
            Some(Container::Waiting { reason, .. }) => reason.clone(),
            _ => "no pod yet".into(),
        };
        if now != said {
            eprintln!("tracer: job {namespace}/{name}: waiting for its pod: {now}");
            said = now;
        }
        if started.elapsed() > start_bound {
            let waited_s = start_bound.as_secs();
            return Err(JobError::StartTimeout { namespace: namespace.into(), name: name.into(), waited_s, state: said }.into());
        }
        tokio::time::sleep(POLL).await;
    };
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_else(|| "?".into());
    let params = LogParams { container: Some(CONTAINER.into()), follow: true, ..LogParams::default() };
    let stream = pods.log_stream(&pod_name, &params).await.map_err(|e| api_error("reading the log of pod", namespace, &pod_name, &e))?;
    let mut printer = LogPrinter::new(output);
    let mut lines = stream.lines();
    while let Some(line) = lines.try_next().await.with_context(|| format!("reading the log of pod {namespace}/{pod_name}"))? {
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
            Container::Exited { code, reason } => {
                let reason = if reason.is_empty() { reason } else { format!(" ({reason})") };
                return Err(JobError::TracerFailed { namespace: namespace.into(), name: name.into(), node, code, reason }.into());
            }
            _ if waited.elapsed() > EXIT_REPORT_WAIT => {
                return Err(JobError::LogEnded { namespace: namespace.into(), name: name.into() }.into());
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Prints a Job's log lines: its JSON as people read it (or as it is), its messages on stderr.
struct LogPrinter {
    output: OutputFormat,
    header: bool,
}

impl LogPrinter {
    fn new(output: OutputFormat) -> Self {
        Self { output, header: false }
    }

    fn line(&mut self, line: &str) -> io::Result<()> {
        let mut out = io::stdout().lock();
        let value = serde_json::from_str::<Value>(line).ok().filter(Value::is_object);
        let Some(value) = value else {
            // The tracer's stderr: warnings, its closing counts.
            eprintln!("{line}");
            return Ok(());
        };
        if self.output == OutputFormat::Json {
            return write_line(&mut out, line.as_bytes());
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
    print(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// The label selector of every tracer Job (job.rs puts the labels on them).
fn job_labels() -> String {
    job::LABELS.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// One Job as `job list` shows it.
fn job_summary(job: &Job, now_s: i64) -> Value {
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let args = pod.and_then(|p| p.containers.iter().find(|c| c.name == CONTAINER)).and_then(|c| c.args.clone()).unwrap_or_default();
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
            namespace: "kube-system".into(),
            node: "n1".into(),
            image: "i".into(),
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
