//! A fake Kubernetes API server for the tests of tracer's Kubernetes API pod source: plain HTTP/1.1
//! on `127.0.0.1:<random port>`, serving `GET /api/v1/pods` and `GET /api/v1/services` (list and
//! watch, all namespaces) in the API's real wire format.
//!
//! The format follows the API documentation ("API Concepts": efficient detection of changes,
//! watch bookmarks, resource versions) and what kube-rs 5 sends and expects (read from
//! kube-core's `ListParams`/`WatchParams::populate_qp` and kube-runtime's `watcher`):
//!
//! - list: `GET /api/v1/pods?&fieldSelector=spec.nodeName%3DNODE[&limit=500]` answered
//!   `200` with `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"N"},"items":[..]}`
//!   (`Content-Length`, connection kept alive);
//! - watch: `GET /api/v1/pods?&watch=true&timeoutSeconds=290&fieldSelector=..&allowWatchBookmarks=true&resourceVersion=N`
//!   answered `200` with `Transfer-Encoding: chunked` and one chunk per event, each one JSON
//!   object and a newline: `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{..}}`.
//!   Events after resource version N are replayed from the history, then new ones are streamed
//!   as the test pushes them; a watch from `0` or without a version first gets a synthetic
//!   `ADDED` per existing object. A version older than [`FakeApi::compact`] gets the
//!   documented `ERROR` event with a `410 Expired` Status, and the stream ends.
//!
//! The field selector is honoured (pods of other nodes are not returned, unsupported field
//! labels get `400 BadRequest` as from the real server), a bearer token is required when the
//! kubeconfig carries one (`401 Unauthorized` Status otherwise), a resource can be refused as
//! RBAC refuses it ([`FakeApi::forbid`]: `403 Forbidden`), and every request is recorded so a
//! test can assert what the client sent. Pods and Services share one resource-version sequence,
//! as they do in a real server's etcd.
//!
//! Jobs (`tracer job run/logs/list/delete`) are served by [`jobs`]: batch/v1 Jobs, a Job
//! controller that makes each Job's pod, and the pods' logs, scripted by the test; the Events
//! they record about a pod that cannot start by [`events`]. With [`FakeApi::enforce_rbac`]
//! ([`rbac`]) every request must be allowed by the given roles' rules.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead, BufReader, ErrorKind, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};

use crate::time::{rfc3339_s, unix_now_s};

mod events;
mod jobs;
mod rbac;
pub use jobs::{JobScript, Start};
pub use rbac::{Attributes, Rule};

/// The token the written kubeconfig carries and the server requires.
pub const TOKEN: &str = "tracer-test-token-8d3f";

/// The resource version the server's history starts at (real servers start anywhere).
const FIRST_RV: u64 = 81_000;

// ---------------------------------------------------------------------------------------------
// Pod fixtures
// ---------------------------------------------------------------------------------------------

/// One pod as the test wants it; [`PodFixture::object`] renders the API object.
#[derive(Clone, Debug)]
pub struct PodFixture {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// Pod IPs, the first is `status.podIP`; empty for a pod whose network is not set up yet.
    pub ips: Vec<String>,
    pub host_network: bool,
    pub labels: BTreeMap<String, String>,
    /// `Running`, `Pending`, `Succeeded`, `Failed`.
    pub phase: String,
    /// `metadata.creationTimestamp`, Unix seconds (the API's precision).
    pub created_unix_s: u64,
    /// Set when the pod is being deleted (`metadata.deletionTimestamp`).
    pub deleting: bool,
}

impl PodFixture {
    /// A running pod on `node` with these IPs, created a minute ago, uid derived from the name.
    pub fn new(namespace: &str, name: &str, node: &str, ips: &[&str]) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid_for(namespace, name),
            node: node.into(),
            ips: ips.iter().map(|s| s.to_string()).collect(),
            host_network: false,
            labels: BTreeMap::new(),
            phase: "Running".into(),
            created_unix_s: unix_now_s().saturating_sub(60),
            deleting: false,
        }
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn host_network(mut self) -> Self {
        self.host_network = true;
        self
    }

    pub fn phase(mut self, phase: &str) -> Self {
        self.phase = phase.into();
        self
    }

    /// Created now (for pods added while a test runs).
    pub fn created_now(mut self) -> Self {
        self.created_unix_s = unix_now_s();
        self
    }

    /// `namespace/name`, as tracer prints pods.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The pod object as the API serves it (`resourceVersion` is set by the server).
    pub fn object(&self) -> Value {
        let created = rfc3339_s(self.created_unix_s);
        let started = rfc3339_s(self.created_unix_s + 2);
        let host_ip = "192.0.2.10";
        let container = json!({
            "name": "app",
            "image": "registry.k8s.io/pause:3.10",
            "resources": {},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent"
        });
        let mut spec = json!({
            "volumes": [],
            "containers": [container],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "nodeName": self.node,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0,
            "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority"
        });
        if self.host_network {
            spec["hostNetwork"] = json!(true);
            spec["dnsPolicy"] = json!("ClusterFirstWithHostNet");
        }
        let running = self.phase == "Running";
        let mut status = json!({
            "phase": self.phase,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": if self.ips.is_empty() { "False" } else { "True" }, "lastProbeTime": null, "lastTransitionTime": started},
                {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": created},
                {"type": "Ready", "status": if running { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": started},
                {"type": "ContainersReady", "status": if running { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": started},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": created}
            ],
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": created,
            "qosClass": "BestEffort"
        });
        if let Some(first) = self.ips.first() {
            status["podIP"] = json!(first);
            status["podIPs"] = Value::Array(self.ips.iter().map(|ip| json!({"ip": ip})).collect());
        }
        status["containerStatuses"] = if running {
            json!([{
                "name": "app",
                "state": {"running": {"startedAt": started}},
                "lastState": {},
                "ready": true,
                "restartCount": 0,
                "image": "registry.k8s.io/pause:3.10",
                "imageID": "registry.k8s.io/pause@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a",
                "containerID": format!("containerd://{}", self.uid.replace('-', "")),
                "started": true
            }])
        } else {
            json!([{
                "name": "app",
                "state": {"waiting": {"reason": "ContainerCreating"}},
                "lastState": {},
                "ready": false,
                "restartCount": 0,
                "image": "registry.k8s.io/pause:3.10",
                "imageID": "",
                "started": false
            }])
        };
        let mut metadata = json!({
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "resourceVersion": "0",
            "creationTimestamp": created,
            "labels": self.labels,
            "annotations": {"kubernetes.io/config.seen": created},
            "managedFields": [
                {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1", "time": created,
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:containers": {}}}},
                {"manager": "kubelet", "operation": "Update", "apiVersion": "v1", "time": started,
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:conditions": {}, "f:podIP": {}, "f:podIPs": {}}},
                 "subresource": "status"}
            ]
        });
        if self.deleting {
            metadata["deletionTimestamp"] = json!(rfc3339_s(unix_now_s() + 30));
            metadata["deletionGracePeriodSeconds"] = json!(30);
        }
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": status})
    }
}

/// A stable, UUID-shaped uid for a pod name.
fn uid_for(namespace: &str, name: &str) -> String {
    // FNV-1a, twice with different seeds, formatted as a UUID.
    let h = |seed: u64| {
        let mut x = seed;
        for b in namespace.bytes().chain([b'/']).chain(name.bytes()) {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x0100_0000_01b3);
        }
        x
    };
    let (a, b) = (h(0xcbf2_9ce4_8422_2325), h(0x8422_2325_cbf2_9ce4));
    format!("{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff, b >> 52, b & 0xffff_ffff_ffff)
}

// ---------------------------------------------------------------------------------------------
// Service fixtures
// ---------------------------------------------------------------------------------------------

/// One Service as the test wants it; [`ServiceFixture::object`] renders the API object.
#[derive(Clone, Debug)]
pub struct ServiceFixture {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.clusterIPs` (the first is `spec.clusterIP`); `["None"]` for a headless Service.
    pub cluster_ips: Vec<String>,
    /// (protocol `TCP`/`UDP`/`SCTP`, port, targetPort).
    pub ports: Vec<(String, u16, u16)>,
}

impl ServiceFixture {
    /// A ClusterIP Service with one TCP port, uid derived from the name.
    pub fn new(namespace: &str, name: &str, cluster_ips: &[&str], port: u16, target_port: u16) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid_for(namespace, &format!("svc/{name}")),
            cluster_ips: cluster_ips.iter().map(|s| s.to_string()).collect(),
            ports: vec![("TCP".into(), port, target_port)],
        }
    }

    /// One more port.
    pub fn port(mut self, protocol: &str, port: u16, target_port: u16) -> Self {
        self.ports.push((protocol.into(), port, target_port));
        self
    }

    /// `namespace/name`, as tracer prints Services.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The Service object as the API serves it (`resourceVersion` is set by the server).
    pub fn object(&self) -> Value {
        let created = rfc3339_s(unix_now_s().saturating_sub(3600));
        let families: Vec<&str> =
            self.cluster_ips.iter().filter(|ip| ip.as_str() != "None").map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" }).collect();
        let ports: Vec<Value> = self
            .ports
            .iter()
            .map(|(proto, port, target)| json!({"name": format!("{}-{port}", proto.to_lowercase()), "protocol": proto, "port": port, "targetPort": target}))
            .collect();
        json!({
            "kind": "Service",
            "apiVersion": "v1",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "resourceVersion": "0",
                "creationTimestamp": created,
                "labels": {"app": self.name},
                "managedFields": [
                    {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1", "time": created,
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:ports": {}, "f:selector": {}}}}
                ]
            },
            "spec": {
                "ports": ports,
                "selector": {"app": self.name},
                "clusterIP": self.cluster_ips.first().cloned().unwrap_or_default(),
                "clusterIPs": self.cluster_ips,
                "type": "ClusterIP",
                "sessionAffinity": "None",
                "ipFamilies": if families.is_empty() { vec!["IPv4"] } else { families.clone() },
                "ipFamilyPolicy": if families.len() > 1 { "PreferDualStack" } else { "SingleStack" },
                "internalTrafficPolicy": "Cluster"
            },
            "status": {"loadBalancer": {}}
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Recorded requests
// ---------------------------------------------------------------------------------------------

/// One request the server received.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The raw query string (without `?`).
    pub raw_query: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The status code answered.
    pub status: u16,
    /// The request's body (JSON for POST and DELETE), empty if none.
    pub body: String,
}

impl ApiRequest {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// `watch=true` or `watch=1`.
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }
}

impl std::fmt::Display for ApiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}?{} -> {}", self.method, self.path, self.raw_query, self.status)
    }
}

/// `application/x-www-form-urlencoded` decoding of one component.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (url_decode(k), url_decode(v)),
            None => (url_decode(p), String::new()),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Resources and field selectors (the subset of field labels the API supports)
// ---------------------------------------------------------------------------------------------

/// The resources the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Pods,
    Services,
}

impl Resource {
    fn from_path(path: &str) -> Option<Self> {
        match path {
            "/api/v1/pods" => Some(Self::Pods),
            "/api/v1/services" => Some(Self::Services),
            _ => None,
        }
    }

    /// The plural name, as in paths and RBAC messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pods => "pods",
            Self::Services => "services",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Pods => "Pod",
            Self::Services => "Service",
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Pods => POD_FIELDS,
            Self::Services => SERVICE_FIELDS,
        }
    }
}

#[derive(Debug)]
struct FieldReq {
    field: String,
    equal: bool,
    value: String,
}

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.hostNetwork",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const SERVICE_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"];

/// Parses `a=b,c!=d` (also `==`) for a resource whose supported field labels are `fields`. Err is
/// the API's message for an unsupported label.
fn parse_field_selector(sel: &str, fields: &[&str]) -> Result<Vec<FieldReq>, String> {
    let mut reqs = Vec::new();
    for term in sel.split(',').filter(|t| !t.is_empty()) {
        let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
            (f, false, v)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, true, v)
        } else {
            return Err(format!("invalid selector: '{sel}'; can't understand '{term}'"));
        };
        if !fields.contains(&field) {
            return Err(format!("field label not supported: {field}"));
        }
        reqs.push(FieldReq { field: field.into(), equal, value: value.into() });
    }
    Ok(reqs)
}

fn field_value(pod: &Value, field: &str) -> String {
    let v = match field {
        "metadata.name" => &pod["metadata"]["name"],
        "metadata.namespace" => &pod["metadata"]["namespace"],
        "spec.nodeName" => &pod["spec"]["nodeName"],
        "spec.hostNetwork" => return pod["spec"]["hostNetwork"].as_bool().unwrap_or(false).to_string(),
        "spec.restartPolicy" => &pod["spec"]["restartPolicy"],
        "spec.schedulerName" => &pod["spec"]["schedulerName"],
        "spec.serviceAccountName" => &pod["spec"]["serviceAccountName"],
        "status.phase" => &pod["status"]["phase"],
        "status.podIP" => &pod["status"]["podIP"],
        "status.nominatedNodeName" => &pod["status"]["nominatedNodeName"],
        "spec.clusterIP" => &pod["spec"]["clusterIP"],
        "spec.type" => &pod["spec"]["type"],
        _ => &Value::Null,
    };
    v.as_str().unwrap_or("").to_string()
}

fn selected(reqs: &[FieldReq], pod: &Value) -> bool {
    reqs.iter().all(|r| (field_value(pod, &r.field) == r.value) == r.equal)
}

// ---------------------------------------------------------------------------------------------
// Server state
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Change {
    /// ADDED / MODIFIED / DELETED with the object at that version.
    Object { resource: Resource, kind: &'static str, object: Value },
    /// A bookmark at this version (sent only to watches that allow them).
    Bookmark,
}

#[derive(Debug)]
struct State {
    /// Current objects by resource and uid.
    objects: BTreeMap<(Resource, String), Value>,
    /// The latest resource version.
    rv: u64,
    /// Every change, with its resource version, in order.
    history: Vec<(u64, Change)>,
    /// Watches from a version older than this get 410 Gone.
    compacted_rv: u64,
    /// Bumped by [`FakeApi::end_watches`]: open watch streams end.
    watch_epoch: u64,
    /// Watch streams open now.
    open_watches: usize,
    requests: Vec<ApiRequest>,
    token: Option<String>,
    /// Resources answered `403 Forbidden`, as RBAC answers a service account without the verbs.
    forbidden: BTreeSet<Resource>,
    /// Jobs, their controller's script and the pods' logs.
    jobs: jobs::Jobs,
    /// What the Job controller, scheduler and kubelet said about objects.
    events: events::Events,
    /// The user and rules requests are checked against, if any.
    rbac: rbac::Rbac,
}

impl State {
    /// The current objects of `resource` that `fields` select.
    fn current(&self, resource: Resource, fields: &[FieldReq]) -> Vec<Value> {
        self.objects.iter().filter(|((r, _), o)| *r == resource && selected(fields, o)).map(|(_, o)| o.clone()).collect()
    }

    /// Records a change at the next resource version and returns that version.
    fn change(&mut self, resource: Resource, kind: &'static str, uid: &str, mut object: Value) -> u64 {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (resource, uid.to_string());
        if kind == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, object.clone());
        }
        self.history.push((self.rv, Change::Object { resource, kind, object }));
        self.rv
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    shutdown: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fake API server; stops (and removes its kubeconfig directory) on drop.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl FakeApi {
    /// Starts a server holding `pods`, requiring the bearer [`TOKEN`].
    pub fn start(pods: &[PodFixture]) -> FakeApi {
        Self::start_with(pods, &[])
    }

    /// Starts a server holding `pods` and `services`, requiring the bearer [`TOKEN`].
    pub fn start_with(pods: &[PodFixture], services: &[ServiceFixture]) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking listener");
        let addr = listener.local_addr().expect("local_addr");
        let mut state = State {
            objects: BTreeMap::new(),
            rv: FIRST_RV,
            history: Vec::new(),
            compacted_rv: 0,
            watch_epoch: 0,
            open_watches: 0,
            requests: Vec::new(),
            token: Some(TOKEN.to_string()),
            forbidden: BTreeSet::new(),
            jobs: jobs::Jobs::default(),
            events: events::Events::default(),
            rbac: rbac::Rbac::default(),
        };
        for p in pods {
            state.change(Resource::Pods, "ADDED", &p.uid, p.object());
        }
        for s in services {
            state.change(Resource::Services, "ADDED", &s.uid, s.object());
        }
        let shared = Arc::new(Shared { state: Mutex::new(state), changed: Condvar::new(), shutdown: AtomicBool::new(false) });
        let dir = std::env::temp_dir().join(format!("tracer-kube-api-{}-{}", std::process::id(), addr.port()));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let s = shared.clone();
        let accept = thread::spawn(move || accept_loop(listener, s));
        FakeApi { addr, shared, accept: Some(accept), dir }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a kubeconfig for this server (bearer token [`TOKEN`]) and returns its path.
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.join("kubeconfig");
        write_kubeconfig(&path, &self.url(), Some(TOKEN));
        path
    }

    /// A scratch directory removed with the server.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn change(&self, kind: &'static str, p: &PodFixture) -> u64 {
        self.change_object(Resource::Pods, kind, &p.uid, p.object())
    }

    fn change_object(&self, resource: Resource, kind: &'static str, uid: &str, object: Value) -> u64 {
        let rv = self.shared.lock().change(resource, kind, uid, object);
        self.shared.changed.notify_all();
        rv
    }

    /// The Service is created: an `ADDED` event. Returns its resource version.
    pub fn add_service(&self, s: &ServiceFixture) -> u64 {
        self.change_object(Resource::Services, "ADDED", &s.uid, s.object())
    }

    /// The Service is gone: a `DELETED` event carrying its last state.
    pub fn delete_service(&self, s: &ServiceFixture) -> u64 {
        self.change_object(Resource::Services, "DELETED", &s.uid, s.object())
    }

    /// From now on every request for `resource` is answered `403 Forbidden` with the message
    /// RBAC gives a service account without list/watch on it.
    pub fn forbid(&self, resource: Resource) {
        self.shared.lock().forbidden.insert(resource);
    }

    /// The pod is created: an `ADDED` event. Returns its resource version.
    pub fn add(&self, p: &PodFixture) -> u64 {
        self.change("ADDED", p)
    }

    /// The pod changed: a `MODIFIED` event.
    pub fn modify(&self, p: &PodFixture) -> u64 {
        self.change("MODIFIED", p)
    }

    /// The pod is gone: a `DELETED` event carrying its last state.
    pub fn delete(&self, p: &PodFixture) -> u64 {
        self.change("DELETED", p)
    }

    /// A `BOOKMARK` at the current version, to watches that asked for bookmarks.
    pub fn bookmark(&self) -> u64 {
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        st.history.push((rv, Change::Bookmark));
        drop(st);
        self.shared.changed.notify_all();
        rv
    }

    /// Forgets the history up to now: a watch resuming from an older version gets 410 Gone.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.compacted_rv = st.rv;
    }

    /// The pod is deleted while no watch can see it: the deletion is compacted out of the
    /// history and open watches end, so a client resuming from its last version gets 410 Gone
    /// and must list again to learn of it.
    pub fn delete_unseen(&self, p: &PodFixture) {
        let mut st = self.shared.lock();
        st.objects.remove(&(Resource::Pods, p.uid.clone()));
        st.rv += 1;
        st.compacted_rv = st.rv;
        st.watch_epoch += 1;
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Ends every open watch stream (as the server does at `timeoutSeconds`).
    pub fn end_watches(&self) {
        self.shared.lock().watch_epoch += 1;
        self.shared.changed.notify_all();
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.shared.lock().requests.clone()
    }

    /// The requests, one per line, for assertion messages.
    pub fn request_log(&self) -> String {
        self.requests().iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.lock().open_watches
    }

    /// Waits (bounded) until at least `n` watch streams are open.
    pub fn wait_watching(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.open_watches() >= n {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits (bounded) until `pred` holds for the requests received so far.
    pub fn wait_requests(&self, timeout: Duration, pred: impl Fn(&[ApiRequest]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.requests()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        // The kubelet's processes end with the server, also when a test panics.
        self.shared.lock().jobs.kill_all();
        self.shared.shutdown.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A kubeconfig with one cluster (`server`), one user (optional bearer token) and one context.
pub fn write_kubeconfig(path: &Path, server: &str, token: Option<&str>) {
    let user = match token {
        Some(t) => format!("    token: {t}\n"),
        None => "    {}\n".to_string(),
    };
    let text = format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: fake\n  cluster:\n    server: {server}\n\
         users:\n\
         - name: tester\n  user:\n{user}\
         contexts:\n\
         - name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: default\n\
         current-context: fake\n\
         preferences: {{}}\n"
    );
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = Vec::new();
    while !shared.shutdown.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let s = shared.clone();
                conns.push(thread::spawn(move || {
                    let _ = serve_conn(stream, &s);
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(10)),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
        conns.retain(|c: &JoinHandle<()>| !c.is_finished());
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Reads one line (up to `\n`), retrying read timeouts until shutdown. None at EOF or shutdown.
fn read_line(r: &mut BufReader<TcpStream>, shared: &Shared) -> Option<String> {
    let mut buf = Vec::new();
    loop {
        match r.read_until(b'\n', &mut buf) {
            Ok(0) => return None,
            Ok(_) if buf.ends_with(b"\n") => return Some(String::from_utf8_lossy(&buf).into_owned()),
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                if shared.shutdown.load(Ordering::Relaxed) {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

fn serve_conn(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    stream.set_nodelay(true)?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    loop {
        let Some(line) = read_line(&mut r, shared) else { return Ok(()) };
        let line = line.trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut headers = Vec::new();
        loop {
            let Some(h) = read_line(&mut r, shared) else { return Ok(()) };
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let body_len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; body_len];
        if body_len > 0 {
            r.read_exact(&mut body)?;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let (path, raw_query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        let mut req = ApiRequest { method, path, query: parse_query(&raw_query), raw_query, headers, status: 0, body };
        let close = req.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        handle(&mut w, &mut req, shared)?;
        if close {
            return Ok(());
        }
    }
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        _ => "Error",
    }
}

fn respond_json(w: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let body = serde_json::to_vec(body).map_err(std::io::Error::other)?;
    write!(
        w,
        "HTTP/1.1 {code} {}\r\nAudit-Id: {}\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        reason_phrase(code),
        uid_for("audit", &format!("{:?}", SystemTime::now())),
        body.len()
    )?;
    w.write_all(&body)?;
    w.flush()
}

fn record(shared: &Shared, req: &ApiRequest) {
    shared.lock().requests.push(req.clone());
}

fn handle(w: &mut TcpStream, req: &mut ApiRequest, shared: &Shared) -> std::io::Result<()> {
    let token = shared.lock().token.clone();
    let fail = |req: &mut ApiRequest, w: &mut TcpStream, code: u16, reason: &str, msg: &str| {
        req.status = code;
        record(shared, req);
        respond_json(w, code, &status_object(code, reason, msg))
    };
    if let Some(t) = token
        && req.header("authorization") != Some(&format!("Bearer {t}"))
    {
        return fail(req, w, 401, "Unauthorized", "Unauthorized");
    }
    if let Some(msg) = rbac::refusal(req, shared) {
        return fail(req, w, 403, "Forbidden", &msg);
    }
    if let Some(answered) = jobs::handle(w, req, shared) {
        return answered;
    }
    if let Some(answered) = events::handle(w, req, shared) {
        return answered;
    }
    let Some(resource) = Resource::from_path(&req.path) else {
        let msg = format!("the server could not find the requested resource ({})", req.path);
        return fail(req, w, 404, "NotFound", &msg);
    };
    if req.method != "GET" {
        let msg = format!("the server does not allow this method on the requested resource ({})", req.method);
        return fail(req, w, 405, "MethodNotAllowed", &msg);
    }
    if shared.lock().forbidden.contains(&resource) {
        let verb = if req.is_watch() { "watch" } else { "list" };
        let msg = format!(
            "{0} is forbidden: User \"system:serviceaccount:tracer:tracer\" cannot {verb} resource \"{0}\" in API group \"\" at the cluster scope",
            resource.name()
        );
        return fail(req, w, 403, "Forbidden", &msg);
    }
    let fields = match parse_field_selector(req.param("fieldSelector").unwrap_or(""), resource.fields()) {
        Ok(f) => f,
        Err(msg) => return fail(req, w, 400, "BadRequest", &msg),
    };
    if req.is_watch() {
        req.status = 200;
        record(shared, req);
        watch(w, req, resource, &fields, shared)
    } else {
        req.status = 200;
        let body = {
            let st = shared.lock();
            let items = st.current(resource, &fields);
            let kind = format!("{}List", resource.kind());
            json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
        };
        record(shared, req);
        respond_json(w, 200, &body)
    }
}

fn chunk(w: &mut TcpStream, event: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write!(w, "{:x}\r\n", line.len())?;
    w.write_all(&line)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

struct WatchGuard<'a>(&'a Shared);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().open_watches -= 1;
    }
}

fn watch(w: &mut TcpStream, req: &ApiRequest, resource: Resource, fields: &[FieldReq], shared: &Shared) -> std::io::Result<()> {
    let bookmarks = req.param("allowWatchBookmarks") == Some("true");
    let timeout = Duration::from_secs(req.param("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let deadline = Instant::now() + timeout;
    let from: Option<u64> = match req.param("resourceVersion") {
        None | Some("" | "0") => None,
        Some(v) => match v.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                let msg = format!("invalid resource version: {v}");
                return respond_json(w, 400, &status_object(400, "BadRequest", &msg));
            }
        },
    };
    write!(
        w,
        "HTTP/1.1 200 OK\r\nAudit-Id: {}\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        uid_for("watch", &req.raw_query)
    )?;
    w.flush()?;
    let (mut next, epoch) = {
        let mut st = shared.lock();
        st.open_watches += 1;
        let epoch = st.watch_epoch;
        match from {
            Some(rv) if rv < st.compacted_rv => {
                drop(st);
                let _g = WatchGuard(shared);
                let msg = format!("too old resource version: {rv} ({})", shared.lock().compacted_rv);
                chunk(w, &json!({"type": "ERROR", "object": status_object(410, "Expired", &msg)}))?;
                w.write_all(b"0\r\n\r\n")?;
                return w.flush();
            }
            Some(rv) => (st.history.iter().position(|(v, _)| *v > rv).unwrap_or(st.history.len()), epoch),
            None => {
                // "Start at most recent": synthetic ADDED for every object that exists now.
                let current = st.current(resource, fields);
                let n = st.history.len();
                drop(st);
                for obj in current {
                    chunk(w, &json!({"type": "ADDED", "object": obj}))?;
                }
                (n, epoch)
            }
        }
    };
    let _g = WatchGuard(shared);
    loop {
        let pending: Vec<(u64, Change)> = {
            let mut st = shared.lock();
            while st.history.len() == next && st.watch_epoch == epoch && !shared.shutdown.load(Ordering::Relaxed) && Instant::now() < deadline {
                st = shared.changed.wait_timeout(st, Duration::from_millis(100)).unwrap_or_else(|e| e.into_inner()).0;
            }
            if st.watch_epoch != epoch || shared.shutdown.load(Ordering::Relaxed) || Instant::now() >= deadline {
                break;
            }
            let out = st.history[next..].to_vec();
            next = st.history.len();
            out
        };
        for (rv, change) in pending {
            match change {
                Change::Object { resource: r, kind, object } if r == resource && selected(fields, &object) => {
                    chunk(w, &json!({"type": kind, "object": object}))?;
                }
                Change::Object { .. } => {}
                Change::Bookmark if bookmarks => {
                    chunk(
                        w,
                        &json!({"type": "BOOKMARK", "object": {"kind": resource.kind(), "apiVersion": "v1",
                                 "metadata": {"resourceVersion": rv.to_string(), "creationTimestamp": null}}}),
                    )?;
                }
                Change::Bookmark => {}
            }
        }
    }
    // The end of a watch: the terminating chunk; the client watches again from its last version.
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_decoding() {
        assert_eq!(rfc3339_s(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_s(1_795_314_601), "2026-11-22T02:30:01Z");
        assert_eq!(url_decode("spec.nodeName%3Dnode-a"), "spec.nodeName=node-a");
        assert_eq!(url_decode("a+b%2"), "a b%2");
        let q = parse_query("&watch=true&fieldSelector=spec.nodeName%3Dn&resourceVersion=5");
        assert_eq!(q[0], ("watch".into(), "true".into()));
        assert_eq!(q[1].1, "spec.nodeName=n");
        assert!(parse_field_selector("spec.nodeName=a,metadata.namespace!=b", POD_FIELDS).is_ok());
        assert!(parse_field_selector("spec.bogus=a", POD_FIELDS).is_err());
        assert!(parse_field_selector("spec.nodeName=a", SERVICE_FIELDS).is_err());
        let p = PodFixture::new("ns", "p", "node-a", &["10.0.0.1"]).object();
        let sel = parse_field_selector("spec.nodeName=node-a", POD_FIELDS).expect("selector");
        assert!(selected(&sel, &p));
        let s = ServiceFixture::new("ns", "web", &["10.96.0.5", "fd00::5"], 80, 8080).object();
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));
        let sel = parse_field_selector("spec.clusterIP=10.96.0.5", SERVICE_FIELDS).expect("selector");
        assert!(selected(&sel, &s));
        let sel = parse_field_selector("spec.nodeName==node-b", POD_FIELDS).expect("selector");
        assert!(!selected(&sel, &p));
        assert_eq!(uid_for("a", "b").len(), 36);
    }
}
