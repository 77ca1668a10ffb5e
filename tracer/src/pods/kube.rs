//! The Kubernetes API source: the pods scheduled on this node, listed then watched (kube-rs's
//! watcher: list + watch with resource versions, relisting after a lost watch).
//!
//! [`ServiceSource`] lists and watches the Services of all namespaces the same way, for the
//! Service names of `tracer nat`.
//!
//! The API knows what the runtime does not: host-network pods' identity, the pod's real labels,
//! and pods on nodes whose runtime socket tracer cannot reach. It does not know network
//! namespaces, so attribution by namespace needs the CRI source.

use std::path::{Path, PathBuf};

use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::{Pod as ApiPod, Service as ApiService};
use kube::{
    Api, Client, Config,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::{mpsc, watch};

use super::{
    Pod, PodUpdate, SourceKind, SourceMsg, k8s, now_unix_ns,
    services::{self, Service, ServiceIndex, ServiceUpdate},
};

/// While the watch is healthy, the source tells the registry it is in sync this often.
const TICK: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub(crate) enum KubeError {
    #[error("--kubeconfig {path}: not a usable kubeconfig: {detail}")]
    Kubeconfig { path: PathBuf, detail: String },
    #[error(
        "no Kubernetes API configuration: not in a cluster (KUBERNETES_SERVICE_HOST unset) and no kubeconfig (--kubeconfig, KUBECONFIG or ~/.kube/config)"
    )]
    NotConfigured,
    #[error("Kubernetes API configuration is unusable: {detail}")]
    Config { detail: String },
    #[error("Kubernetes API client for {url}: {detail}")]
    Client { url: String, detail: String },
    #[error("Kubernetes API {url}: listing the pods of node {node} failed: {detail}")]
    List { url: String, node: String, detail: String },
    #[error("Kubernetes API {url}: listing the Services failed: {detail}")]
    ListServices { url: String, detail: String, forbidden: bool },
    #[error("no node name: pass --node-name NAME or set NODE_NAME (the kubelet's node name)")]
    NoNodeName,
}

/// One line for an error and its causes: the first line of each message, skipping messages
/// already said (kube and hyper repeat their causes: "client error (Connect): client error
/// (Connect): tcp connect error: ..."), and an API Status as "CODE Reason: message".
pub(crate) fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(kube::Error::Api(status)) = err.downcast_ref::<kube::Error>() {
        let mut text = format!("the API answered {}", status.code);
        if !status.reason.is_empty() {
            text.push(' ');
            text.push_str(&status.reason);
        }
        if !status.message.is_empty() && status.message != status.reason {
            text.push_str(": ");
            text.push_str(&status.message);
        }
        return text;
    }
    let mut text = String::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        let msg = msg.lines().next().unwrap_or("").trim();
        // Drop kube's variant prefixes ("ServiceError: ") and what was already said.
        let msg = msg.strip_prefix("ServiceError: ").or_else(|| msg.strip_prefix("HyperError: ")).unwrap_or(msg);
        let msg = msg.strip_prefix("error: ").unwrap_or(msg);
        if !msg.is_empty() && !text.contains(msg) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(msg);
        }
        cur = e.source();
    }
    text
}

pub(crate) struct KubeSource {
    api: Api<ApiPod>,
    pub node: String,
    /// The API server's address, for messages.
    pub url: String,
}

/// The node whose pods to watch: `--node-name`, else NODE_NAME (set by a Job's downward API),
/// else this host's name (the kubelet's default).
pub(crate) fn node_name(flag: Option<&str>) -> Result<String, KubeError> {
    if let Some(name) = flag.filter(|n| !n.is_empty()) {
        return Ok(name.to_string());
    }
    if let Some(name) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        return Ok(name);
    }
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let len = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        if let Ok(name) = std::str::from_utf8(&buf[..len])
            && !name.is_empty()
        {
            return Ok(name.to_ascii_lowercase());
        }
    }
    Err(KubeError::NoNodeName)
}

/// Whether there is any API configuration to try (for `--pods-from auto`).
pub(crate) fn is_configured(kubeconfig: Option<&Path>) -> bool {
    kubeconfig.is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some_and(|k| !k.is_empty())
        || std::env::var_os("HOME").is_some_and(|h| Path::new(&h).join(".kube/config").is_file())
}

/// A client for the configured API (`--kubeconfig`, else in-cluster, else KUBECONFIG or
/// ~/.kube/config) and the server's address, for messages.
pub(crate) async fn client(kubeconfig: Option<&Path>) -> Result<(Client, String), KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let bad = |e: kube::config::KubeconfigError| KubeError::Kubeconfig { path: path.into(), detail: describe(&e) };
            let kc = Kubeconfig::read_from(path).map_err(bad)?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.map_err(bad)?
        }
        None if !is_configured(None) => return Err(KubeError::NotConfigured),
        None => match Config::incluster() {
            Ok(config) => config,
            Err(_) => Config::from_kubeconfig(&KubeConfigOptions::default()).await.map_err(|e| KubeError::Config { detail: describe(&e) })?,
        },
    };
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| KubeError::Client { url: url.clone(), detail: describe(&e) })?;
    Ok((client, url))
}

impl KubeSource {
    pub(crate) async fn connect(kubeconfig: Option<&Path>, node: String) -> Result<Self, KubeError> {
        let (client, url) = client(kubeconfig).await?;
        Ok(Self { api: Api::all(client), node, url })
    }

    fn field_selector(&self) -> String {
        format!("spec.nodeName={}", self.node)
    }

    /// The node's pods now (one list call): start-up needs them before attaching.
    pub(crate) async fn list(&self) -> Result<Vec<Pod>, KubeError> {
        let params = ListParams::default().fields(&self.field_selector());
        let list =
            self.api.list(&params).await.map_err(|e| KubeError::List { url: self.url.clone(), node: self.node.clone(), detail: describe(&e) })?;
        Ok(list.items.iter().filter_map(|p| k8s::from_api(p, SourceKind::Kube)).collect())
    }

    /// Watches until the receiver is gone. A relist (after a lost watch) becomes one snapshot;
    /// changes become upserts and deletes; ticks say the registry is current while the watch is
    /// healthy. Errors are warned about once and retried with backoff by the watcher.
    pub(crate) fn follow(self, tx: mpsc::Sender<SourceMsg>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let config = watcher::Config::default().fields(&self.field_selector());
            let stream = watcher(self.api.clone(), config).default_backoff();
            futures::pin_mut!(stream);
            let mut fold = Fold::new("pods", "pod names", &self.url, |pod: &ApiPod| k8s::from_api(pod, SourceKind::Kube));
            let mut tick = tokio::time::interval(TICK);
            loop {
                let event = tokio::select! {
                    // An event already received must be applied before a tick says "in sync".
                    biased;
                    event = stream.try_next() => Some(event),
                    _ = tick.tick() => None,
                };
                let at = now_unix_ns();
                let Some(event) = event else {
                    if fold.in_sync() && tx.send(SourceMsg { at: now_unix_ns(), source: SourceKind::Kube, update: PodUpdate::Tick }).await.is_err() {
                        return;
                    }
                    continue;
                };
                // The watcher's stream does not end; if it did, the registry keeps what it has.
                let Some(event) = event.transpose() else { return };
                let update = fold.fold(event).map(|change| match change {
                    Change::Snapshot(pods) => PodUpdate::Snapshot(pods),
                    Change::Apply(pod) => match k8s::from_api(&pod, SourceKind::Kube) {
                        Some(p) => PodUpdate::Upsert(p),
                        // Finished pods give their addresses back: forget them.
                        None => PodUpdate::Delete { uid: pod.metadata.uid.unwrap_or_default() },
                    },
                    Change::Delete(pod) => PodUpdate::Delete { uid: pod.metadata.uid.unwrap_or_default() },
                });
                if let Some(update) = update
                    && tx.send(SourceMsg { at, source: SourceKind::Kube, update }).await.is_err()
                {
                    return;
                }
            }
        })
    }
}

/// A watcher event as a source applies it: a relist folded into one snapshot of converted
/// objects, or one object changed or deleted.
enum Change<K, T> {
    Snapshot(Vec<T>),
    Apply(K),
    Delete(K),
}

/// Folds a kube-rs watcher's events into [`Change`]s, warning once per streak of errors.
struct Fold<K, T> {
    /// What is watched and what goes stale while it fails, for warnings ("pods", "pod names").
    what: &'static str,
    stale: &'static str,
    url: String,
    convert: fn(&K) -> Option<T>,
    /// The objects of a relist in progress.
    relist: Option<Vec<T>>,
    failing: bool,
}

impl<K, T> Fold<K, T> {
    fn new(what: &'static str, stale: &'static str, url: &str, convert: fn(&K) -> Option<T>) -> Self {
        Self { what, stale, url: url.to_string(), convert, relist: None, failing: false }
    }

    /// The watch is healthy and no relist is half read: what was applied is all there is.
    fn in_sync(&self) -> bool {
        !self.failing && self.relist.is_none()
    }

    fn fold(&mut self, event: Result<watcher::Event<K>, watcher::Error>) -> Option<Change<K, T>> {
        let change = match event {
            Ok(watcher::Event::Init) => {
                self.relist = Some(Vec::new());
                None
            }
            Ok(watcher::Event::InitApply(obj)) => {
                if let (Some(buf), Some(item)) = (self.relist.as_mut(), (self.convert)(&obj)) {
                    buf.push(item);
                }
                None
            }
            Ok(watcher::Event::InitDone) => self.relist.take().map(Change::Snapshot),
            Ok(watcher::Event::Apply(obj)) => Some(Change::Apply(obj)),
            Ok(watcher::Event::Delete(obj)) => Some(Change::Delete(obj)),
            // 410 Gone: the watch fell behind the server's history (compaction); the watcher
            // lists again, which is routine and not worth a warning.
            Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                log::debug!("Kubernetes API {}: watch of {} expired ({}); listing again", self.url, self.what, status.message);
                None
            }
            Err(err) => {
                if !self.failing {
                    log::warn!(
                        "Kubernetes API {}: watching {} failed ({}); retrying, {} may be stale",
                        self.url,
                        self.what,
                        describe(&err),
                        self.stale
                    );
                    self.failing = true;
                }
                None
            }
        };
        if change.is_some() && self.failing {
            log::warn!("Kubernetes API {}: watching {} again", self.url, self.what);
            self.failing = false;
        }
        change
    }
}

/// The Services of every namespace, for `tracer nat`: listed, then watched into the index.
pub(crate) struct ServiceSource {
    api: Api<ApiService>,
    /// The API server's address, for messages.
    pub url: String,
}

impl ServiceSource {
    pub(crate) async fn connect(kubeconfig: Option<&Path>) -> Result<Self, KubeError> {
        let (client, url) = client(kubeconfig).await?;
        Ok(Self { api: Api::all(client), url })
    }

    /// The Services now (one list call), so the first events are named.
    pub(crate) async fn list(&self) -> Result<Vec<Service>, KubeError> {
        let list = self.api.list(&ListParams::default()).await.map_err(|e| KubeError::ListServices {
            url: self.url.clone(),
            forbidden: matches!(&e, kube::Error::Api(status) if status.code == 403),
            detail: describe(&e),
        })?;
        Ok(list.items.iter().filter_map(services::from_api).collect())
    }

    /// Keeps `tx`'s index current until every reader is gone. `failing` says the start-up list
    /// failed and was warned about, so the watcher's retries do not warn again.
    pub(crate) fn follow(self, tx: watch::Sender<ServiceIndex>, failing: bool) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let stream = watcher(self.api.clone(), watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut fold = Fold::new("services", "Service names", &self.url, services::from_api);
            fold.failing = failing;
            loop {
                let event = tokio::select! {
                    event = stream.try_next() => event,
                    () = tx.closed() => return,
                };
                let Some(event) = event.transpose() else { return };
                let update = fold.fold(event).and_then(|change| match change {
                    Change::Snapshot(all) => Some(ServiceUpdate::Snapshot(all)),
                    Change::Apply(svc) => services::from_api(&svc).map(ServiceUpdate::Upsert),
                    Change::Delete(svc) => services::api_name(&svc).map(|name| ServiceUpdate::Delete { name }),
                });
                if let Some(update) = update {
                    tx.send_modify(|index| index.apply(update));
                }
            }
        })
    }
}
