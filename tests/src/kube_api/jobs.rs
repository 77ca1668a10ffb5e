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
//!   `hold` the stream stays open until the Job is deleted (bounded).
//!
//! The wire format follows the API reference for Job (batch/v1) and Pod's `log` subresource.

use std::{
    io::Write,
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
    for line in &script.log {
        let line = format!("{line}\n");
        write!(w, "{:x}\r\n{line}\r\n", line.len())?;
    }
    w.flush()?;
    let pod_uid = pod["metadata"]["uid"].as_str().unwrap_or("").to_string();
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
