//! The pod layer as a tracing command uses it: start the source the user chose, check the
//! selection against what exists, keep the registry and the kernel filter current while tracing,
//! and name the pods of each event.

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use aya::Ebpf;
use tokio::sync::mpsc;

use super::{
    Pod, PodUpdate, PodsFrom, SourceKind, SourceMsg,
    cri::{self, CriSource},
    file,
    filter::KernelPodFilter,
    kube::{self, KubeError, KubeSource, ServiceSource},
    now_unix_ns,
    registry::Registry,
    scope::{ActiveScope, KernelScope, NodeScope},
    selection::Selection,
    services::{ServiceNames, ServiceUpdate},
};
use crate::{events::Event, usage::UsageError};

/// An event newer than what the registry knows is held back at most this long for the source to
/// catch up (a pod created just now), then shown with what is known.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(2);

/// The validated pod options of a tracing command.
#[derive(Debug, Clone)]
pub(crate) struct PodsConfig {
    pub from: PodsFrom,
    pub cri_socket: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub node_name: Option<String>,
    pub selection: Selection,
    /// Wait for selected pods that do not exist yet instead of failing.
    pub wait: bool,
    /// `--netns`, `--this-node`: only events seen in these network namespaces.
    pub scope: NodeScope,
}

impl Default for PodsConfig {
    fn default() -> Self {
        Self {
            from: PodsFrom::None,
            cri_socket: None,
            kubeconfig: None,
            node_name: None,
            selection: Selection::default(),
            wait: false,
            scope: NodeScope::default(),
        }
    }
}

pub(crate) struct PodLayer {
    registry: Registry,
    selection: Selection,
    /// Updates from a source that changes (a file too: it is followed); None without a source.
    rx: Option<mpsc::Receiver<SourceMsg>>,
    /// The registry is complete up to this time (Unix ns); i128::MAX when events are never held
    /// for the source (a file, or none).
    synced_until: i128,
    kernel: Option<KernelPodFilter>,
    kernel_generation: u64,
    /// "cri (containerd 1.6.20 at /run/containerd/containerd.sock)", for messages.
    pub description: String,
    /// None when no source runs (--pods-from none, or auto found none): no pod has a name.
    pub source: Option<SourceKind>,
    /// This node's name, given to every event (None only when not even the host name is known).
    node: Option<Arc<str>>,
    /// The node scope, when one is asked for.
    scope: Option<ActiveScope>,
    /// Its kernel map, once attached.
    kernel_scope: Option<KernelScope>,
}

impl PodLayer {
    /// Starts the configured source and reads the pods that exist now. Failures of a source the
    /// user named are bad input (exit 2, nothing attached); `auto` degrades with a warning.
    pub(crate) async fn start(config: &PodsConfig) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::channel(64);
        let at = now_unix_ns();
        let (description, initial, rx) = match &config.from {
            PodsFrom::None => ("none".to_string(), None, None),
            PodsFrom::File(path) => {
                // The version before the read: a change while reading is read again.
                let version = file::version(path);
                let pods = file::load(path).map(|objects| objects.pods).map_err(|e| UsageError(format!("{:#}", anyhow::Error::from(e))))?;
                file::follow(path.clone(), version, tx);
                (format!("file {}", path.display()), Some((SourceKind::File, pods)), Some(rx))
            }
            PodsFrom::Cri => {
                let socket = config.cri_socket.clone().unwrap_or_else(|| cri::DEFAULT_SOCKETS[0].into());
                let (desc, pods) = start_cri(&socket, tx).await.map_err(|e| UsageError(format!("{e:#}")))?;
                (desc, Some((SourceKind::Cri, pods)), Some(rx))
            }
            PodsFrom::Kube => {
                let (desc, pods) = start_kube(config, tx).await.map_err(|e| UsageError(format!("{e:#}")))?;
                (desc, Some((SourceKind::Kube, pods)), Some(rx))
            }
            PodsFrom::Auto => match auto(config, tx).await {
                Some((desc, kind, pods)) => (desc, Some((kind, pods)), Some(rx)),
                None => ("none".to_string(), None, None),
            },
        };
        let mut registry = Registry::new();
        let source = initial.as_ref().map(|(source, _)| *source);
        if let Some((source, pods)) = initial {
            registry.apply(SourceMsg { at, source, update: PodUpdate::Snapshot(pods) });
        }
        // Events wait for a source that reports how far it is in sync (its polls, its watch).
        // A file lags the cluster by however long its writer takes, which no wait here can
        // know: its changes apply when they are read, and events are never held for it.
        let synced_until = if rx.is_some() && source != Some(SourceKind::File) { at } else { i128::MAX };
        let node = kube::node_name(config.node_name.as_deref()).ok().map(Arc::from);
        let scope = ActiveScope::new(&config.scope)?;
        if scope.as_ref().is_some_and(ActiveScope::follows_pods) && source != Some(SourceKind::Cri) {
            // Only the runtime knows the pods' namespaces (the API and a file do not).
            log::warn!(
                "--this-node: pods from {description} carry no network namespaces; the scope is tracer's own namespace only (--pods-from cri adds the pods')"
            );
        }
        let layer = Self {
            registry,
            selection: config.selection.clone(),
            rx,
            synced_until,
            kernel: None,
            kernel_generation: 0,
            description,
            source,
            node,
            scope,
            kernel_scope: None,
        };
        if !layer.selection.is_empty() && layer.source.is_none() {
            return Err(UsageError(format!(
                "{} needs pod names, but no pod source is available: give --pods-from cri|kube|file:PATH",
                pod_options_named(&layer.selection)
            ))
            .into());
        }
        Ok(layer)
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn selection(&self) -> &Selection {
        &self.selection
    }

    /// A pod selection is active, so the kernel filter is wanted.
    pub(crate) fn filters(&self) -> bool {
        !self.selection.is_empty()
    }

    /// What of the selection is not there: named pods missing, or nothing matching at all.
    pub(crate) fn unmet(&self) -> Option<String> {
        if self.selection.is_empty() {
            return None;
        }
        let missing = self.selection.missing(&self.registry.live());
        if !missing.is_empty() {
            return Some(format!("no pod {} on this node", missing.join(", ")));
        }
        (!self.registry.live().into_iter().any(|p| self.selection.matches(p))).then(|| format!("no pod on this node matches {}", self.selection))
    }

    /// Fails (exit 2) when the selection names pods that do not exist, or waits for them with
    /// `--wait`, saying so on stderr.
    pub(crate) async fn require_selection(&mut self, wait: bool) -> anyhow::Result<()> {
        let Some(unmet) = self.unmet() else { return Ok(()) };
        if !wait {
            return Err(
                UsageError(format!("{unmet} (pods from {}: {} known); --wait waits for it", self.description, self.registry.live().len())).into()
            );
        }
        if self.rx.is_none() {
            return Err(UsageError(format!("{unmet}, and pods from {} do not change: --wait cannot help", self.description)).into());
        }
        eprintln!("tracer: {unmet}; waiting for it (pods from {}; Ctrl-C to stop)", self.description);
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        while self.unmet().is_some() {
            tokio::select! {
                msg = self.recv() => match msg {
                    Some(msg) => self.apply(msg)?,
                    None => anyhow::bail!("the pod source stopped while waiting for {}", self.selection),
                },
                _ = sigint.recv() => anyhow::bail!("interrupted while waiting for {}", self.selection),
                _ = sigterm.recv() => anyhow::bail!("terminated while waiting for {}", self.selection),
            }
        }
        eprintln!("tracer: {} is there", self.selection);
        Ok(())
    }

    /// Takes the kernel's pod maps and fills them (only with a selection), and the node scope's
    /// (only with one).
    pub(crate) fn attach_kernel_filter(&mut self, ebpf: &mut Ebpf) -> anyhow::Result<()> {
        if let Some(scope) = &self.scope {
            let mut kernel = KernelScope::take(ebpf)?;
            kernel.sync(scope.wanted(&self.registry))?;
            self.kernel_scope = Some(kernel);
            self.kernel_generation = self.registry.generation();
        }
        if !self.filters() {
            return Ok(());
        }
        let mut kernel = KernelPodFilter::take(ebpf)?;
        kernel.sync(&self.registry, &self.selection)?;
        self.kernel_generation = self.registry.generation();
        self.kernel = Some(kernel);
        Ok(())
    }

    /// The next message of a live source; never resolves without one.
    pub(crate) async fn recv(&mut self) -> Option<SourceMsg> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Applies a source message and, when pods changed, updates the kernel filter.
    pub(crate) fn apply(&mut self, msg: SourceMsg) -> anyhow::Result<()> {
        self.synced_until = self.synced_until.max(msg.at);
        self.registry.apply(msg);
        if self.registry.generation() == self.kernel_generation {
            return Ok(());
        }
        if let Some(kernel) = self.kernel.as_mut() {
            kernel.sync(&self.registry, &self.selection)?;
        }
        if let (Some(kernel), Some(scope)) = (self.kernel_scope.as_mut(), &self.scope) {
            kernel.sync(scope.wanted(&self.registry))?;
        }
        self.kernel_generation = self.registry.generation();
        Ok(())
    }

    /// This node's name (CONTRACT `node`), for what a command prints beside its events.
    pub(crate) fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// Whether the registry already knows the pods as of `ts_unix_ns`, so the event can be named
    /// now; else the runner holds it back (up to [`MAX_HOLD`]).
    pub(crate) fn is_current(&self, ts_unix_ns: i128) -> bool {
        ts_unix_ns <= self.synced_until
    }

    /// Names the event's pods (by address and by network namespace, at the event's time) and
    /// says whether it passes the selection.
    pub(crate) fn annotate(&self, event: &mut Event) -> bool {
        let names = self.names(event.flow.src, event.flow.dst, event.netns, event.ts_unix_ns);
        if let crate::events::Detail::Nat(nat) = &mut event.detail {
            nat.backend_pod = nat.backend_ip.and_then(|ip| self.registry.by_ip(ip, event.ts_unix_ns)).map(Pod::full_name);
        }
        event.src_pod = names.src;
        event.dst_pod = names.dst;
        event.netns_pod = names.netns;
        event.node = self.node.clone();
        names.selected && self.scope.as_ref().is_none_or(|s| s.admits(&self.registry, event.netns, event.ts_unix_ns))
    }

    /// The pods of a flow at `ts`, and whether it touches the selection.
    pub(crate) fn names(&self, src: Option<IpAddr>, dst: Option<IpAddr>, netns: Option<u32>, ts: i128) -> PodNames {
        let src = src.and_then(|ip| self.registry.by_ip(ip, ts));
        let dst = dst.and_then(|ip| self.registry.by_ip(ip, ts));
        let seen_in = netns.and_then(|inode| self.registry.by_netns(inode, ts));
        PodNames {
            selected: self.selection.is_empty() || [src, dst, seen_in].into_iter().flatten().any(|p| self.selection.matches(p)),
            src: src.map(Pod::full_name),
            dst: dst.map(Pod::full_name),
            netns: seen_in.map(Pod::full_name),
        }
    }
}

/// The pods of one flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PodNames {
    pub src: Option<String>,
    pub dst: Option<String>,
    pub netns: Option<String>,
    pub selected: bool,
}

fn pod_options_named(selection: &Selection) -> &'static str {
    if !selection.pods.is_empty() {
        "--pod"
    } else if selection.namespace.is_some() {
        "--namespace"
    } else {
        "--selector"
    }
}

async fn start_cri(socket: &std::path::Path, tx: mpsc::Sender<SourceMsg>) -> anyhow::Result<(String, Vec<Pod>)> {
    let mut source = CriSource::connect(socket).await?;
    let pods = source.list().await?;
    let description = format!("cri ({} at {})", source.runtime, source.socket().display());
    source.follow(tx);
    Ok((description, pods))
}

async fn start_kube(config: &PodsConfig, tx: mpsc::Sender<SourceMsg>) -> anyhow::Result<(String, Vec<Pod>)> {
    let node = kube::node_name(config.node_name.as_deref())?;
    let source = KubeSource::connect(config.kubeconfig.as_deref(), node).await?;
    let pods = source.list().await?;
    let description = format!("kube ({} node {})", source.url, source.node);
    source.follow(tx);
    Ok((description, pods))
}

/// CRI first (the first socket that exists, or --cri-socket), then the API; each failure is a
/// warning, since the user did not ask for that source by name.
async fn auto(config: &PodsConfig, tx: mpsc::Sender<SourceMsg>) -> Option<(String, SourceKind, Vec<Pod>)> {
    let sockets: Vec<PathBuf> = match &config.cri_socket {
        Some(socket) => vec![socket.clone()],
        None => cri::DEFAULT_SOCKETS.iter().map(PathBuf::from).filter(|p| p.exists()).collect(),
    };
    for socket in sockets {
        match start_cri(&socket, tx.clone()).await {
            Ok((desc, pods)) => return Some((desc, SourceKind::Cri, pods)),
            Err(err) => log::warn!("{err:#}; trying the next pod source"),
        }
    }
    if config.kubeconfig.is_some() || kube::is_configured(None) {
        match start_kube(config, tx).await {
            Ok((desc, pods)) => return Some((desc, SourceKind::Kube, pods)),
            Err(err) => log::warn!("{err:#}"),
        }
    }
    log::warn!("no pod source answered (no CRI socket, no Kubernetes API configuration): pods are not named; --pods-from none silences this");
    None
}

/// The Service names for `tracer nat`, from where the pods come from: the file's Services with
/// `file:`, else the API whenever it is configured (also when the pods come from CRI), nothing
/// with `none`. Never fails: without Services (no API, RBAC refuses them) events are just not
/// named, said in one warning. Call after [`PodLayer::start`], which has already refused a
/// source the user named that cannot start.
pub(crate) async fn start_services(config: &PodsConfig) -> ServiceNames {
    let (tx, names) = ServiceNames::channel();
    let kubeconfig = config.kubeconfig.as_deref();
    let (description, count) = match &config.from {
        PodsFrom::None => return names,
        PodsFrom::File(path) => match file::load(path) {
            Ok(objects) => {
                let count = objects.services.len();
                tx.send_modify(|index| index.apply(ServiceUpdate::Snapshot(objects.services)));
                (format!("file {}", path.display()), count)
            }
            Err(err) => {
                log::warn!("{:#}; Services are not named", anyhow::Error::from(err));
                return names;
            }
        },
        PodsFrom::Kube | PodsFrom::Cri | PodsFrom::Auto if kubeconfig.is_some() || kube::is_configured(None) => {
            let source = match ServiceSource::connect(kubeconfig).await {
                Ok(source) => source,
                Err(err) => {
                    log::warn!("{err}; Services are not named");
                    return names;
                }
            };
            let description = format!("kube ({})", source.url);
            match source.list().await {
                Ok(services) => {
                    let count = services.len();
                    tx.send_modify(|index| index.apply(ServiceUpdate::Snapshot(services)));
                    source.follow(tx, false);
                    (description, count)
                }
                // RBAC will not change while we run: no watch that would fail the same way.
                Err(err @ KubeError::ListServices { forbidden: true, .. }) => {
                    log::warn!("{err}; Services are not named (tracer needs list and watch on services)");
                    return names;
                }
                Err(err) => {
                    log::warn!("{err}; Services are not named until the watch succeeds");
                    source.follow(tx, true);
                    return names;
                }
            }
        }
        PodsFrom::Kube | PodsFrom::Cri | PodsFrom::Auto => return names,
    };
    eprintln!("tracer: services from {description}: {count} services");
    names
}
