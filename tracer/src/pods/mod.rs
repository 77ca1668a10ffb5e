//! The pod layer: which pods this node runs, where that knowledge comes from, and which pods an
//! event touches.
//!
//! Sources ([`cri`], [`kube`], [`file`]) turn what they read into [`Pod`]s and send
//! [`SourceMsg`]s; the [`registry::Registry`] keeps every pod with the time span it existed, so an
//! address or network namespace reused by a new pod is never attributed to the old one; the
//! [`selection::Selection`] is what `--pod/--namespace/--selector` asked for; [`filter`] mirrors
//! the selected pods' addresses and namespaces into the kernel maps that drop unrelated events
//! before they are copied; [`scope`] keeps the node scope (`--netns`, `--this-node`: this node's
//! network namespaces, the pods' among them) in its kernel map; [`layer::PodLayer`] ties these together for the runner.
//! [`services`] names the Services whose addresses `tracer nat` sees translated, from the same
//! sources (the API or the file), apart from the pods: only that command needs them.
//!
//! Only this module (and the rest of `tracer/`) knows about Kubernetes.

pub(crate) mod cri;
pub(crate) mod file;
pub(crate) mod filter;
pub(crate) mod k8s;
pub(crate) mod kube;
pub(crate) mod layer;
pub(crate) mod registry;
pub(crate) mod scope;
pub(crate) mod selection;
pub(crate) mod services;

use std::{collections::BTreeMap, fmt, net::IpAddr};

/// Where pod names come from (`--pods-from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PodsFrom {
    /// CRI if its socket answers, else the Kubernetes API if configured, else nothing (warned).
    Auto,
    Cri,
    Kube,
    File(std::path::PathBuf),
    None,
}

/// Where a pod's record came from (shown by `tracer pods`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SourceKind {
    /// The container runtime's socket (knows network namespaces).
    Cri,
    /// The Kubernetes API.
    Kube,
    /// A `kubectl get pods -o json` file (--pods-from file:PATH).
    File,
}

impl SourceKind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Cri => "cri",
            Self::Kube => "kube",
            Self::File => "file",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One pod as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pod {
    pub namespace: String,
    pub name: String,
    /// Kubernetes pod UID; a CRI sandbox without one (not made by a kubelet) uses its sandbox id.
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// Every address of the pod (IPv4 and IPv6); empty until the network is set up.
    pub ips: Vec<IpAddr>,
    /// Inode of the pod's network namespace, when the source can tell (CRI can, the API cannot).
    pub netns: Option<u32>,
    /// The pod shares the node's network namespace and addresses.
    pub host_network: bool,
    /// When the pod was created, as the source says (ns since the Unix epoch).
    pub created_unix_ns: Option<i128>,
    pub source: SourceKind,
}

impl Pod {
    /// `namespace/name`, as CONTRACT's `src_pod`/`dst_pod` print it.
    pub(crate) fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What a source observed at one moment.
#[derive(Debug, Clone)]
pub(crate) enum PodUpdate {
    /// The complete list of pods the source knows now: any pod of this source not in it is gone.
    Snapshot(Vec<Pod>),
    /// One pod added or changed.
    Upsert(Pod),
    /// The pod with this UID is gone.
    Delete { uid: String },
    /// Nothing changed: the source is in sync up to `SourceMsg::at`.
    Tick,
}

/// A source's message: an update, and when the source started reading it (ns since the Unix
/// epoch). The registry is complete up to `at`, which lets the runner hold back events that are
/// newer than what the registry knows (see [`layer::PodLayer`]).
#[derive(Debug, Clone)]
pub(crate) struct SourceMsg {
    pub at: i128,
    pub source: SourceKind,
    pub update: PodUpdate,
}

/// Wall-clock now, in ns since the Unix epoch.
pub(crate) fn now_unix_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}
