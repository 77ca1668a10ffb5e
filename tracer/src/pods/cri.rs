//! The container runtime (CRI) source: pod sandboxes from containerd's (or CRI-O's) socket, with
//! their addresses and network namespaces, polled while tracing.
//!
//! The runtime knows what the API server may not yet: the sandbox's network namespace and its
//! addresses the moment CNI has set them up, and it answers even when the API is unreachable.
//! containerd 1.6 has no event stream in CRI, so the source polls `ListPodSandbox` (cheap) and
//! asks `PodSandboxStatus` only for sandboxes it has not seen.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    ListPodSandboxRequest, NamespaceMode, PodSandboxFilter, PodSandboxState, PodSandboxStateValue, PodSandboxStatusRequest, PodSandboxStatusResponse,
    VersionRequest, runtime_service_client::RuntimeServiceClient,
};
use tokio::{net::UnixStream, sync::mpsc};
use tonic::transport::{Channel, Endpoint, Uri};

use super::{Pod, PodUpdate, SourceKind, SourceMsg, now_unix_ns};

/// Sockets `--pods-from auto` tries, in order.
pub(crate) const DEFAULT_SOCKETS: &[&str] = &["/run/containerd/containerd.sock", "/run/crio/crio.sock"];

/// How often the runtime is asked for its sandboxes while tracing.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Bound on every call, so a wedged runtime cannot hang start-up.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Labels the kubelet adds to every sandbox; they repeat the pod's identity, not its labels.
const KUBELET_LABEL_PREFIX: &str = "io.kubernetes.";

#[derive(Debug, thiserror::Error)]
pub(crate) enum CriError {
    #[error("CRI socket {path}: no such socket (is the container runtime running? --cri-socket PATH names another)")]
    Missing { path: PathBuf },
    #[error("CRI socket {path}: not a unix socket")]
    NotSocket { path: PathBuf },
    #[error("CRI socket {path}: cannot connect")]
    Connect { path: PathBuf, source: tonic::transport::Error },
    #[error("CRI socket {path}: {op} failed (is this a CRI runtime socket?)")]
    Call { path: PathBuf, op: &'static str, source: tonic::Status },
    #[error("CRI socket {path}: {op} got no answer within {}s", CALL_TIMEOUT.as_secs())]
    Timeout { path: PathBuf, op: &'static str },
}

pub(crate) struct CriSource {
    socket: PathBuf,
    client: RuntimeServiceClient<Channel>,
    /// The runtime's name and version, e.g. "containerd 1.6.20".
    pub runtime: String,
    /// Pods by sandbox id; a sandbox's identity and addresses do not change once it is ready.
    known: HashMap<String, Pod>,
}

impl CriSource {
    /// Connects and asks the runtime its version: a socket that is missing, refuses, or does not
    /// speak CRI fails here, before anything is attached.
    pub(crate) async fn connect(socket: &Path) -> Result<Self, CriError> {
        let path = socket.to_path_buf();
        let meta = std::fs::metadata(socket).map_err(|_| CriError::Missing { path: path.clone() })?;
        if !meta.file_type().is_socket() {
            return Err(CriError::NotSocket { path });
        }
        let connect_path = path.clone();
        // The URI is required by the API and ignored by the connector.
        let endpoint = Endpoint::from_static("http://[::]:50051").connect_timeout(CALL_TIMEOUT).timeout(CALL_TIMEOUT);
        let channel = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = connect_path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(p).await?)) }
        }));
        let channel = tokio::time::timeout(CALL_TIMEOUT, channel)
            .await
            .map_err(|_| CriError::Timeout { path: path.clone(), op: "connect" })?
            .map_err(|source| CriError::Connect { path: path.clone(), source })?;
        let mut client = RuntimeServiceClient::new(channel);
        let version = tokio::time::timeout(CALL_TIMEOUT, client.version(VersionRequest::default()))
            .await
            .map_err(|_| CriError::Timeout { path: path.clone(), op: "Version" })?
            .map_err(|source| CriError::Call { path: path.clone(), op: "Version", source })?
            .into_inner();
        Ok(Self { socket: path, client, runtime: format!("{} {}", version.runtime_name, version.runtime_version), known: HashMap::new() })
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// The ready sandboxes now.
    pub(crate) async fn list(&mut self) -> Result<Vec<Pod>, CriError> {
        let request = ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                state: Some(PodSandboxStateValue { state: PodSandboxState::SandboxReady as i32 }),
                ..Default::default()
            }),
        };
        let sandboxes = self.call("ListPodSandbox", |mut c| async move { c.list_pod_sandbox(request).await }).await?.items;
        let mut pods = Vec::with_capacity(sandboxes.len());
        let mut seen = HashMap::with_capacity(sandboxes.len());
        for sandbox in sandboxes {
            let pod = match self.known.remove(&sandbox.id) {
                Some(pod) => pod,
                None => match self.status(&sandbox.id).await {
                    Ok(Some(pod)) => pod,
                    Ok(None) => continue,
                    // Gone between list and status: it will not be in the next list either.
                    Err(CriError::Call { source, .. }) if source.code() == tonic::Code::NotFound => continue,
                    Err(err) => return Err(err),
                },
            };
            pods.push(pod.clone());
            seen.insert(sandbox.id, pod);
        }
        self.known = seen;
        Ok(pods)
    }

    async fn status(&mut self, id: &str) -> Result<Option<Pod>, CriError> {
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: true };
        let response = self.call("PodSandboxStatus", |mut c| async move { c.pod_sandbox_status(request).await }).await?;
        Ok(pod_from_status(id, response))
    }

    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, CriError>
    where
        F: FnOnce(RuntimeServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(CALL_TIMEOUT, f(self.client.clone())).await {
            Err(_) => Err(CriError::Timeout { path: self.socket.clone(), op }),
            Ok(Err(source)) => Err(CriError::Call { path: self.socket.clone(), op, source }),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// Polls the runtime until the receiver is gone, sending a full snapshot each time (the
    /// registry diffs). A failing poll is warned about once and retried; the registry keeps what
    /// it knew.
    pub(crate) fn follow(mut self, tx: mpsc::Sender<SourceMsg>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(POLL_INTERVAL).await;
                let at = now_unix_ns();
                let update = match self.list().await {
                    Ok(pods) => {
                        if failing {
                            log::warn!("CRI socket {} answers again", self.socket.display());
                            failing = false;
                        }
                        PodUpdate::Snapshot(pods)
                    }
                    Err(err) => {
                        if !failing {
                            log::warn!("{:#}; pod names may be stale until it answers again", anyhow::Error::from(err));
                            failing = true;
                        }
                        continue;
                    }
                };
                if tx.send(SourceMsg { at, source: SourceKind::Cri, update }).await.is_err() {
                    return;
                }
            }
        })
    }
}

/// The pod of sandbox `id` from the runtime's verbose `PodSandboxStatus` answer; None when it
/// lacks the status or the pod's metadata.
pub(crate) fn pod_from_status(id: &str, response: PodSandboxStatusResponse) -> Option<Pod> {
    let status = response.status?;
    let meta = status.metadata?;
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(net) = &status.network {
        let extra = net.additional_ips.iter().map(|p| p.ip.as_str());
        for text in std::iter::once(net.ip.as_str()).chain(extra) {
            if let Ok(ip) = text.parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    let host_network = status
        .linux
        .as_ref()
        .and_then(|l| l.namespaces.as_ref())
        .and_then(|n| n.options.as_ref())
        .is_some_and(|o| o.network == NamespaceMode::Node as i32);
    let labels: BTreeMap<String, String> = status.labels.into_iter().filter(|(k, _)| !k.starts_with(KUBELET_LABEL_PREFIX)).collect();
    Some(Pod {
        namespace: meta.namespace,
        name: meta.name,
        uid: if meta.uid.is_empty() { id.to_string() } else { meta.uid },
        labels,
        ips,
        netns: netns_inode(&response.info),
        host_network,
        created_unix_ns: (status.created_at > 0).then_some(i128::from(status.created_at)),
        source: SourceKind::Cri,
    })
}

/// The inode of the sandbox's network namespace, from the verbose status: through the sandbox
/// process (works when tracer shares the host's PID namespace, as a node agent does) or else the
/// namespace path in the runtime spec (works when it shares the host's mounts).
fn netns_inode(info: &HashMap<String, String>) -> Option<u32> {
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let by_pid = info
        .get("pid")
        .and_then(serde_json::Value::as_u64)
        .filter(|pid| *pid > 0)
        .and_then(|pid| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok());
    let by_path = || {
        let namespaces = info.pointer("/runtimeSpec/linux/namespaces")?.as_array()?;
        let path = namespaces.iter().find(|ns| ns.get("type").and_then(serde_json::Value::as_str) == Some("network"))?.get("path")?.as_str()?;
        std::fs::metadata(path).ok()
    };
    // Namespace inodes are 32-bit in the kernel (ns_common.inum).
    by_pid.or_else(by_path).map(|m| m.ino() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_from_the_runtime_spec_path() {
        // Our own namespace stands in for a sandbox's: same kind of file, known inode.
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino() as u32;
        let spec = serde_json::json!({
            "pid": 0,
            "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/proc/self/ns/net"}]}}
        });
        let info = HashMap::from([("info".to_string(), spec.to_string())]);
        assert_eq!(netns_inode(&info), Some(own));
        let by_pid = serde_json::json!({"pid": std::process::id()});
        let info = HashMap::from([("info".to_string(), by_pid.to_string())]);
        assert_eq!(netns_inode(&info), Some(own));
        assert_eq!(netns_inode(&HashMap::new()), None);
    }
}
