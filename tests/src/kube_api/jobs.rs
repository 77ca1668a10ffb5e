//! batch/v1 Jobs for the fake API server, and what a cluster does with them, for the tests of
//! `tracer job run/logs/list/delete`:
//!
//! - `POST /apis/batch/v1/namespaces/NS/jobs` stores the Job as sent (`409 AlreadyExists` for a
//!   taken name) and, as the Job controller would, creates its pod `NAME-xxxxx` (labels
//!   `job-name`, `batch.kubernetes.io/job-name`, `controller-uid`; the template's spec, so its
//!   `nodeName`), running, or — as the [`Start`] of the [`JobScript`] says — never: refused by
//!   admission (no pod, a `FailedCreate` Event on the Job), a volume that cannot be mounted, a
//!   pod the scheduler cannot place, an image that cannot be pulled, a pod the kubelet rejects,
//!   each with the status and the Events (events.rs) a cluster gives;
//! - `GET .../jobs`, `GET /apis/batch/v1/jobs` (label selectors of `k=v` terms), `GET .../jobs/NAME`;
//! - `DELETE .../jobs/NAME` removes the Job, and its pods only when the body asks for
//!   `Background` or `Foreground` propagation: the API's default for Jobs orphans them, which is
//!   how a careless client leaves a tracer running on a node;
//! - `GET /api/v1/namespaces/NS/pods[/NAME]` (label selectors) and `.../pods/NAME/log`
//!   (`follow=true`: chunked, as the kubelet streams it): the script's lines, then the container
//!   exits with the script's code (pod `Succeeded`/`Failed`, Job `Complete`/`Failed`), or with
//!   `hold` the stream stays open until the Job is deleted (bounded);
//! - a small kubelet ([`FakeApi::kubelet`]): on a node given a lab namespace, a Job's pod runs
//!   its container's command for real: the tracer binary (`TRACER_BIN`) with the Job's
//!   arguments and `NODE_NAME`, inside that namespace (`nsenter --net`), its stdout and stderr
//!   as the pod's log (streamed with `follow=true` as the process writes it), its exit code as
//!   the container's; deleting the Job stops it (SIGTERM, as the kubelet stops a container);
//! - `GET /api/v1/nodes`: the nodes given to [`FakeApi::add_node`] and [`FakeApi::kubelet`],
//!   labelled Linux amd64 (`labelSelector` honoured).
//!
//! The wire format follows the API reference for Job (batch/v1) and Pod's `log` subresource.

use std::{
    io::Write,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{events, *};

/// How long a held log stream stays open at most, so a test that forgets cannot hang.
const HOLD_LIMIT: Duration = Duration::from_secs(120);

/// What the pods of Jobs created from now on do.
#[derive(Clone, Debug, Default)]
pub struct JobScript {
    /// What the tracer container writes, one line each (stdout and stderr, as the kubelet
    /// merges them into one log).
    pub log: Vec<String>,
    /// The container's exit code after its log.
    pub exit_code: i32,
    /// After its lines the log stays open until the Job is deleted: a tracer still tracing.
    pub hold: bool,
    /// Whether and how the pod starts.
    pub start: Start,
    /// The Warning Events of a pod that does not start appear this long after the Job was
    /// created (its status says so at once): until then it looks like a pod on its way.
    pub events_after: Duration,
    /// No Events at all (expired after their hour, or never written): only the pod's status
    /// says what is wrong.
    pub no_events: bool,
}

/// How the pod of a Job starts, or why it does not, as a cluster reports each case.
#[derive(Clone, Debug, Default)]
pub enum Start {
    /// The container runs.
    #[default]
    Runs,
    /// Admission refuses the pod (a missing ServiceAccount, PodSecurity): no pod; the Job
    /// controller records `FailedCreate` with this message on the Job.
    Refused(String),
    /// A volume cannot be mounted (a hostPath that is not a socket): the container waits in
    /// `ContainerCreating`; the kubelet records `FailedMount` with this message on the pod.
    FailedMount(String),
    /// The scheduler cannot place the pod: `PodScheduled` False, `Unschedulable`, and a
    /// `FailedScheduling` Event with this message.
    Unschedulable(String),
    /// The image cannot be pulled: the container waits with `reason` (`ErrImagePull`,
    /// `ImagePullBackOff`) and `message`; the kubelet records `Pulling`, then `Failed`.
    ImagePull { reason: String, message: String },
    /// The kubelet rejects the pod at admission (`NodeAffinity` on a node of another OS or
    /// arch): phase `Failed` with this reason and message, a Warning Event of that reason, and
    /// the Job fails.
    Rejected { reason: String, message: String },
    /// The container waits with this reason forever, and nobody says why.
    Waiting(String),
}

/// The Jobs the server holds.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    /// By (namespace, name).
    objects: BTreeMap<(String, String), Value>,
    script: JobScript,
    /// Pods whose container has exited (its status was written once).
    exited: BTreeSet<String>,
    /// Log streams open now.
    open_logs: usize,
    /// The nodes, and for those with a kubelet, the lab namespace their Jobs run in.
    nodes: BTreeMap<String, Option<PathBuf>>,
    /// Containers the kubelet runs (by pod uid).
    running: BTreeMap<String, Arc<Container>>,
}

/// A container the kubelet runs: the real process, what it wrote, how it ended.
#[derive(Debug, Default)]
struct Container {
    state: Mutex<Output>,
    changed: Condvar,
    pid: u32,
}

#[derive(Debug, Default)]
struct Output {
    /// Lines of stdout and stderr, in the order they were read.
    lines: Vec<String>,
    /// Set once both streams ended and the process was reaped.
    exit: Option<i32>,
}

impl Container {
    /// Runs `argv` inside the network namespace at `netns` with `env`; threads collect its
    /// output and its exit.
    fn start(netns: &Path, argv: &[String], env: &[(&str, &str)]) -> std::io::Result<Arc<Container>> {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg("--")
            .args(argv)
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let container = Arc::new(Container { pid: child.id(), ..Container::default() });
        let readers: Vec<JoinHandle<()>> =
            [child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>), child.stderr.take().map(|e| Box::new(e) as _)]
                .into_iter()
                .flatten()
                .map(|stream| {
                    let container = container.clone();
                    thread::spawn(move || {
                        for line in BufReader::new(stream).lines() {
                            let Ok(line) = line else { break };
                            container.lock().lines.push(line);
                            container.changed.notify_all();
                        }
                    })
                })
                .collect();
        let waiter = container.clone();
        thread::spawn(move || {
            for reader in readers {
                let _ = reader.join();
            }
            let code = wait_child_code(&mut child);
            waiter.lock().exit = Some(code);
            waiter.changed.notify_all();
        });
        Ok(container)
    }

    fn lock(&self) -> MutexGuard<'_, Output> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the process to stop, as the kubelet stops a container (its tracer then detaches and
    /// prints its summary); `kill`: at once (the fake itself stops).
    fn stop(&self, kill: bool) {
        if self.lock().exit.is_none() {
            // SAFETY: kill(2) on the pid of our own child, which is not reaped before `exit` is set.
            unsafe { libc::kill(self.pid as i32, if kill { libc::SIGKILL } else { libc::SIGTERM }) };
        }
    }
}

/// The exit code of a child that ended (128 + signal when a signal ended it).
fn wait_child_code(child: &mut Child) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    match child.wait() {
        Ok(status) => status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(_) => -1,
    }
}

impl Jobs {
    /// Stops every container the kubelet runs (the server stops).
    pub(super) fn kill_all(&self) {
        for container in self.running.values() {
            container.stop(true);
        }
    }
}

impl FakeApi {
    /// What the pods of Jobs created from now on do.
    pub fn script_jobs(&self, script: JobScript) {
        self.shared.lock().jobs.script = script;
    }

    /// The Jobs held now.
    pub fn jobs(&self) -> Vec<Value> {
        self.shared.lock().jobs.objects.values().cloned().collect()
    }

    /// The pods (of any Job or fixture) in `namespace` that carry label `job-name=job`.
    pub fn job_pods(&self, namespace: &str, job: &str) -> Vec<Value> {
        let st = self.shared.lock();
        pods_in(&st, namespace).filter(|p| p["metadata"]["labels"]["job-name"] == job).cloned().collect()
    }

    /// Log streams open now.
    pub fn open_logs(&self) -> usize {
        self.shared.lock().jobs.open_logs
    }

    /// A node of the cluster (listed by `GET /api/v1/nodes`).
    pub fn add_node(&self, name: &str) {
        self.shared.lock().jobs.nodes.entry(name.to_string()).or_insert(None);
    }

    /// A node whose kubelet runs Jobs for real: the container's command is the tracer binary
    /// ([`crate::tracer_bin`]) with the Job's arguments, run inside the network namespace at
    /// `netns` (the node's lab namespace) with `NODE_NAME=name`.
    pub fn kubelet(&self, name: &str, netns: &Path) {
        self.shared.lock().jobs.nodes.insert(name.to_string(), Some(netns.to_path_buf()));
    }

    /// Processes the kubelet runs that have not ended.
    pub fn running_containers(&self) -> usize {
        self.shared.lock().jobs.running.values().filter(|c| c.lock().exit.is_none()).count()
    }
}

fn pods_in<'a>(st: &'a State, namespace: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    st.objects.iter().filter(move |((r, _), p)| *r == Resource::Pods && p["metadata"]["namespace"] == namespace).map(|(_, p)| p)
}

/// `k=v,k2==v2` against an object's labels; Err for terms this fake does not support.
fn labels_match(object: &Value, selector: &str) -> Result<bool, String> {
    let labels = &object["metadata"]["labels"];
    for term in selector.split(',').filter(|t| !t.is_empty()) {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .ok_or_else(|| format!("unable to parse requirement: {term:?} (this fake knows only k=v)"))?;
        if labels[k.trim()] != v.trim() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Answers the Job paths and the namespaced pod paths; None for any other path.
pub(super) fn handle(w: &mut TcpStream, req: &mut ApiRequest, shared: &Shared) -> Option<std::io::Result<()>> {
    let segments: Vec<String> = req.path.trim_start_matches('/').split('/').map(String::from).collect();
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method.clone();
    let answer = match (method.as_str(), segs.as_slice()) {
        ("POST", ["apis", "batch", "v1", "namespaces", ns, "jobs"]) => create(req, shared, ns),
        ("GET", ["apis", "batch", "v1", "namespaces", ns, "jobs"]) => list_jobs(req, shared, Some(ns)),
        ("GET", ["apis", "batch", "v1", "jobs"]) => list_jobs(req, shared, None),
        ("GET", ["apis", "batch", "v1", "namespaces", ns, "jobs", name]) => {
            let st = shared.lock();
            match st.jobs.objects.get(&(ns.to_string(), name.to_string())) {
                Some(job) => (200, job.clone()),
                None => not_found("jobs.batch", name),
            }
        }
        ("DELETE", ["apis", "batch", "v1", "namespaces", ns, "jobs", name]) => delete(req, shared, ns, name),
        ("GET", ["api", "v1", "namespaces", ns, "pods"]) => {
            let st = shared.lock();
            let selector = req.param("labelSelector").unwrap_or("").to_string();
            let mut items = Vec::new();
            for p in pods_in(&st, ns) {
                match labels_match(p, &selector) {
                    Ok(true) => items.push(p.clone()),
                    Ok(false) => {}
                    Err(msg) => return Some(fail(w, req, shared, 400, "BadRequest", &msg)),
                }
            }
            (200, json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}))
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
            let st = shared.lock();
            match pods_in(&st, ns).find(|p| p["metadata"]["name"] == *name) {
                Some(p) => (200, p.clone()),
                None => not_found("pods", name),
            }
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods", name, "log"]) => return Some(log(w, req, shared, ns, name)),
        ("GET", ["api", "v1", "nodes"]) => {
            let st = shared.lock();
            let selector = req.param("labelSelector").unwrap_or("").to_string();
            let mut items = Vec::new();
            for name in st.jobs.nodes.keys() {
                let node = json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "uid": uid_for("node", name),
                    "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "kubernetes.io/hostname": name}}});
                match labels_match(&node, &selector) {
                    Ok(true) => items.push(node),
                    Ok(false) => {}
                    Err(msg) => return Some(fail(w, req, shared, 400, "BadRequest", &msg)),
                }
            }
            (200, json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}))
        }
        _ => return None,
    };
    let (code, body) = answer;
    req.status = code;
    record(shared, req);
    Some(respond_json(w, code, &body))
}

fn fail(w: &mut TcpStream, req: &mut ApiRequest, shared: &Shared, code: u16, reason: &str, msg: &str) -> std::io::Result<()> {
    req.status = code;
    record(shared, req);
    respond_json(w, code, &status_object(code, reason, msg))
}

fn not_found(what: &str, name: &str) -> (u16, Value) {
    (404, status_object(404, "NotFound", &format!("{what} \"{name}\" not found")))
}

fn create(req: &ApiRequest, shared: &Shared, ns: &str) -> (u16, Value) {
    let Ok(mut job) = serde_json::from_str::<Value>(&req.body) else {
        return (400, status_object(400, "BadRequest", "the body is not JSON"));
    };
    let name = job["metadata"]["name"].as_str().unwrap_or("").to_string();
    if job["kind"] != "Job" || job["apiVersion"] != "batch/v1" || name.is_empty() {
        return (400, status_object(400, "BadRequest", "expected a batch/v1 Job with metadata.name"));
    }
    if job["metadata"]["namespace"].as_str().is_some_and(|n| n != ns) {
        let msg = "the namespace of the provided object does not match the namespace sent on the request";
        return (400, status_object(400, "BadRequest", msg));
    }
    let mut st = shared.lock();
    let key = (ns.to_string(), name.clone());
    if st.jobs.objects.contains_key(&key) {
        return (409, status_object(409, "AlreadyExists", &format!("jobs.batch \"{name}\" already exists")));
    }
    let now = rfc3339_s(unix_now_s());
    let uid = uid_for(&format!("job-{}", st.rv), &name);
    job["metadata"]["namespace"] = json!(ns);
    job["metadata"]["uid"] = json!(uid);
    job["metadata"]["creationTimestamp"] = json!(now);
    st.rv += 1;
    job["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    let script = st.jobs.script.clone();
    job["status"] = json!({"startTime": now, "active": 1});
    // The Job controller's pod.
    let template = &job["spec"]["template"];
    let pod_name = format!("{name}-{}", &uid.replace('-', "")[..5]);
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    for (k, v) in
        [("job-name", &name), ("batch.kubernetes.io/job-name", &name), ("controller-uid", &uid), ("batch.kubernetes.io/controller-uid", &uid)]
    {
        labels[k] = json!(v);
    }
    // A node with a kubelet runs the container's command as the kubelet would: the image's
    // entrypoint is the tracer.
    let kubelet = template["spec"]["nodeName"]
        .as_str()
        .and_then(|n| st.jobs.nodes.get(n).cloned().flatten().map(|netns| (n.to_string(), netns)))
        .map(|(node, netns)| {
            let mut argv = vec![crate::tracer_bin().display().to_string()];
            argv.extend(template["spec"]["containers"][0]["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)));
            (node, netns, argv)
        });
    let image = template["spec"]["containers"][0]["image"].clone();
    let container = template["spec"]["containers"][0]["name"].clone();
    let (phase, state) = match &script.start {
        Start::Runs => ("Running", json!({"running": {"startedAt": now}})),
        Start::ImagePull { reason, message } => ("Pending", json!({"waiting": {"reason": reason, "message": message}})),
        Start::Waiting(reason) => ("Pending", json!({"waiting": {"reason": reason}})),
        Start::Rejected { .. } => ("Failed", Value::Null),
        Start::Refused(_) | Start::FailedMount(_) | Start::Unschedulable(_) => ("Pending", json!({"waiting": {"reason": "ContainerCreating"}})),
    };
    let pod_uid = uid_for(ns, &pod_name);
    let mut pod = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {
            "name": pod_name, "namespace": ns, "uid": pod_uid, "labels": labels, "creationTimestamp": now,
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": template["spec"].clone(),
        "status": {
            "phase": phase, "hostIP": "192.0.2.10", "startTime": now,
            "containerStatuses": [{"name": container, "image": image, "imageID": "", "ready": phase == "Running", "restartCount": 0, "state": state}],
        },
    });
    // The Events of a pod that does not start: (object, type, reason, message, component, after).
    let warn = |object: &Value, reason: &str, message: String, component: &'static str| {
        (object.clone(), "Warning", reason.to_string(), message, component, script.events_after)
    };
    let mut said = Vec::new();
    match &script.start {
        Start::Runs | Start::Waiting(_) => {}
        Start::Refused(message) => {
            // Admission refused it: there is no pod, and the Job controller keeps trying.
            job["status"] = json!({"startTime": now});
            said.push(warn(&job, "FailedCreate", message.clone(), "job-controller"));
        }
        Start::FailedMount(message) => said.push(warn(&pod, "FailedMount", message.clone(), "kubelet")),
        Start::Unschedulable(message) => {
            pod["status"] = json!({"phase": "Pending", "qosClass": "Burstable", "conditions": [{"type": "PodScheduled", "status": "False",
                                   "reason": "Unschedulable", "message": message, "lastProbeTime": null, "lastTransitionTime": now}]});
            said.push(warn(&pod, "FailedScheduling", message.clone(), "default-scheduler"));
        }
        Start::ImagePull { reason, message } => {
            let image = image.as_str().unwrap_or("");
            said.push((pod.clone(), "Normal", "Pulling".into(), format!("Pulling image \"{image}\""), "kubelet", Duration::ZERO));
            said.push(warn(&pod, "Failed", format!("Failed to pull image \"{image}\": {message}"), "kubelet"));
            said.push(warn(&pod, "Failed", format!("Error: {reason}"), "kubelet"));
        }
        Start::Rejected { reason, message } => {
            pod["status"] = json!({"phase": "Failed", "reason": reason, "message": format!("Pod was rejected: {message}"), "startTime": now});
            said.push(warn(&pod, reason, message.clone(), "kubelet"));
            job["status"] = json!({"startTime": now, "failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                   "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}]});
        }
    }
    if let (Start::Runs, Some((node, netns, argv))) = (&script.start, kubelet) {
        match Container::start(&netns, &argv, &[("NODE_NAME", node.as_str())]) {
            Ok(container) => {
                st.jobs.running.insert(pod_uid.clone(), container);
            }
            Err(e) => return (500, status_object(500, "InternalError", &format!("the fake kubelet could not start {argv:?}: {e}"))),
        }
    }
    if !matches!(script.start, Start::Refused(_)) {
        st.change(Resource::Pods, "ADDED", &pod_uid, pod);
    }
    st.jobs.objects.insert(key, job.clone());
    if !script.no_events {
        for (object, kind, reason, message, component, after) in &said {
            // An Event names the object as stored (its resourceVersion too).
            let stored = match object["kind"].as_str() {
                Some("Pod") => st.objects.get(&(Resource::Pods, pod_uid.clone())).cloned().unwrap_or_else(|| object.clone()),
                _ => job.clone(),
            };
            events::Events::add(&mut st, events::NewEvent { object: &stored, kind, reason, message, component, after: *after });
        }
    }
    drop(st);
    shared.changed.notify_all();
    (201, job)
}

fn list_jobs(req: &ApiRequest, shared: &Shared, ns: Option<&str>) -> (u16, Value) {
    let st = shared.lock();
    let selector = req.param("labelSelector").unwrap_or("");
    let mut items = Vec::new();
    for ((job_ns, _), job) in &st.jobs.objects {
        if ns.is_some_and(|n| n != job_ns) {
            continue;
        }
        match labels_match(job, selector) {
            Ok(true) => items.push(job.clone()),
            Ok(false) => {}
            Err(msg) => return (400, status_object(400, "BadRequest", &msg)),
        }
    }
    (200, json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}))
}

fn delete(req: &ApiRequest, shared: &Shared, ns: &str, name: &str) -> (u16, Value) {
    let policy = serde_json::from_str::<Value>(&req.body).ok().and_then(|b| b["propagationPolicy"].as_str().map(String::from));
    let mut st = shared.lock();
    let Some(job) = st.jobs.objects.remove(&(ns.to_string(), name.to_string())) else {
        return not_found("jobs.batch", name);
    };
    // batch/v1's default is to orphan the pods (kept for compatibility): only an explicit
    // policy takes them with the Job.
    if matches!(policy.as_deref(), Some("Background" | "Foreground")) {
        let pods: Vec<Value> = pods_in(&st, ns).filter(|p| p["metadata"]["labels"]["job-name"] == name).cloned().collect();
        for p in pods {
            let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
            if let Some(container) = st.jobs.running.get(&uid) {
                container.stop(false);
            }
            st.change(Resource::Pods, "DELETED", &uid, p);
        }
    }
    drop(st);
    shared.changed.notify_all();
    let details = json!({"name": name, "group": "batch", "kind": "jobs", "uid": job["metadata"]["uid"]});
    (200, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}))
}

/// The container exits with the script's code: the pod's and the Job's status say so (once).
fn exit(st: &mut State, ns: &str, pod: &Value, code: i32) {
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if !st.jobs.exited.insert(pod_uid.clone()) {
        return;
    }
    let now = rfc3339_s(unix_now_s());
    let mut pod = pod.clone();
    let (phase, reason) = if code == 0 { ("Succeeded", "Completed") } else { ("Failed", "Error") };
    pod["status"]["phase"] = json!(phase);
    pod["status"]["containerStatuses"][0]["ready"] = json!(false);
    pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": now}});
    st.change(Resource::Pods, "MODIFIED", &pod_uid, pod.clone());
    let job_name = pod["metadata"]["labels"]["job-name"].as_str().unwrap_or("").to_string();
    if let Some(job) = st.jobs.objects.get_mut(&(ns.to_string(), job_name)) {
        let (count, condition, why) = if code == 0 { ("succeeded", "Complete", "") } else { ("failed", "Failed", "BackoffLimitExceeded") };
        job["status"]["active"] = json!(0);
        job["status"][count] = json!(1);
        let mut c = json!({"type": condition, "status": "True", "lastProbeTime": now, "lastTransitionTime": now});
        if !why.is_empty() {
            c["reason"] = json!(why);
            c["message"] = json!("Job has reached the specified backoff limit");
        }
        job["status"]["conditions"] = json!([c]);
    }
}

struct LogGuard<'a>(&'a Shared);

impl Drop for LogGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().jobs.open_logs -= 1;
    }
}

fn log(w: &mut TcpStream, req: &mut ApiRequest, shared: &Shared, ns: &str, name: &str) -> std::io::Result<()> {
    let (pod, script) = {
        let st = shared.lock();
        (pods_in(&st, ns).find(|p| p["metadata"]["name"] == name).cloned(), st.jobs.script.clone())
    };
    let Some(pod) = pod else {
        let (code, body) = not_found("pods", name);
        return fail(w, req, shared, code, "NotFound", body["message"].as_str().unwrap_or(""));
    };
    let container = pod["spec"]["containers"][0]["name"].as_str().unwrap_or("").to_string();
    if req.param("container").is_some_and(|c| c != container) {
        let msg = format!("container {} is not valid for pod {name}", req.param("container").unwrap_or(""));
        return fail(w, req, shared, 400, "BadRequest", &msg);
    }
    if let Some(reason) = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str() {
        let msg = format!("container \"{container}\" in pod \"{name}\" is waiting to start: {reason}");
        return fail(w, req, shared, 400, "BadRequest", &msg);
    }
    req.status = 200;
    record(shared, req);
    let follow = matches!(req.param("follow"), Some("true" | "1"));
    shared.lock().jobs.open_logs += 1;
    let _guard = LogGuard(shared);
    write!(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let running = shared.lock().jobs.running.get(&pod_uid).cloned();
    if let Some(container) = running {
        return stream_container(w, shared, ns, &pod, &container, follow);
    }
    for line in &script.log {
        let line = format!("{line}\n");
        write!(w, "{:x}\r\n{line}\r\n", line.len())?;
    }
    w.flush()?;
    if follow && script.hold {
        // A tracer still tracing: the stream ends when its pod goes (the Job deleted).
        let deadline = Instant::now() + HOLD_LIMIT;
        let mut st = shared.lock();
        while st.objects.contains_key(&(Resource::Pods, pod_uid.clone())) && !shared.shutdown.load(Ordering::Relaxed) && Instant::now() < deadline {
            st = shared.changed.wait_timeout(st, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
        }
    } else {
        let mut st = shared.lock();
        exit(&mut st, ns, &pod, script.exit_code);
        drop(st);
        shared.changed.notify_all();
    }
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// The log of a container the kubelet runs: what it wrote so far, then (`follow`) each line as
/// it comes until the process ends, the pod is deleted or the server stops (bounded); an
/// ended process's exit goes into the pod's and the Job's status.
fn stream_container(w: &mut TcpStream, shared: &Shared, ns: &str, pod: &Value, container: &Container, follow: bool) -> std::io::Result<()> {
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let deadline = Instant::now() + HOLD_LIMIT;
    let mut sent = 0;
    loop {
        let (lines, exit) = {
            let out = container.lock();
            (out.lines[sent..].to_vec(), out.exit)
        };
        sent += lines.len();
        for line in lines {
            let line = format!("{line}\n");
            write!(w, "{:x}\r\n{line}\r\n", line.len())?;
        }
        w.flush()?;
        if let Some(code) = exit {
            // Every line was read before the exit was set.
            if sent == container.lock().lines.len() {
                let mut st = shared.lock();
                exit_of(&mut st, ns, pod, code);
                drop(st);
                shared.changed.notify_all();
                break;
            }
            continue;
        }
        let gone = !shared.lock().objects.contains_key(&(Resource::Pods, pod_uid.clone()));
        if !follow || gone || shared.shutdown.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let out = container.lock();
        if out.lines.len() == sent && out.exit.is_none() {
            let _ = container.changed.wait_timeout(out, Duration::from_millis(100));
        }
    }
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// [`exit`] for a pod that may have been deleted meanwhile (then nothing is left to update).
fn exit_of(st: &mut State, ns: &str, pod: &Value, code: i32) {
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
    if let Some(current) = st.objects.get(&(Resource::Pods, uid)).cloned() {
        exit(st, ns, &current, code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_of_equality_terms() {
        let pod = json!({"metadata": {"labels": {"job-name": "j1", "app": "x"}}});
        assert_eq!(labels_match(&pod, "job-name=j1"), Ok(true));
        assert_eq!(labels_match(&pod, "job-name==j1,app=x"), Ok(true));
        assert_eq!(labels_match(&pod, "job-name=j2"), Ok(false));
        assert_eq!(labels_match(&pod, ""), Ok(true));
        assert!(labels_match(&pod, "job-name in (j1)").is_err());
    }
}
