//! Containers in a [`NodeLab`] pod, created through the CRI the way kubelet turns a pod spec's
//! container into a CreateContainer call: the image's entrypoint (or `command`) with `args`, capabilities
//! added and dropped by their Kubernetes names, read-only root, no_new_privs, host paths mounted
//! in; the output lands in the CRI's log file.
//!
//! Removing the pod (or dropping the lab) stops and removes its containers with it: containerd's
//! StopPodSandbox kills them and RemovePodSandbox deletes them.

use std::{
    fs,
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, ensure};
use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest, ImageSpec, KeyValue,
    LinuxContainerConfig, LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption, RemoveContainerRequest, StartContainerRequest,
    StopContainerRequest,
};

use super::{CRI_CALL_TIMEOUT, NodeLab, Pod};

/// A host path in the container (a pod spec's hostPath volume and its volumeMount).
#[derive(Clone, Debug)]
pub struct HostMount {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

/// What a container runs with: the fields of a Kubernetes container (and of its pod, for the
/// namespaces) that reach the CRI.
#[derive(Clone, Debug, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    /// The pod spec's `command`: replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    /// Arguments to the entrypoint (the pod spec's `args`).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Kubernetes names (`BPF`, `ALL`): the CRI takes them so and containerd adds `CAP_`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub read_only_root: bool,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// The pod's hostNetwork and hostPID: kubelet repeats them for every container.
    pub host_network: bool,
    pub host_pid: bool,
    pub mounts: Vec<HostMount>,
}

/// A created and started container.
#[derive(Clone, Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// Its CRI log file.
    pub log: PathBuf,
}

/// How a container ended, as the CRI reports it.
#[derive(Clone, Debug)]
pub struct ContainerExit {
    pub code: i32,
    pub reason: String,
    pub message: String,
}

impl NodeLab {
    /// Creates and starts a container in `pod` (made with [`NodeLab::run_pod_for_containers`]).
    pub fn run_container(&self, pod: &Pod, spec: &ContainerSpec) -> Result<Container> {
        let sandbox_config = self
            .sandbox_configs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&pod.id)
            .cloned()
            .ok_or_else(|| anyhow!("{} is not a live pod of this lab", pod.key()))?;
        ensure!(!sandbox_config.log_directory.is_empty(), "{} has no log directory: make it with run_pod_for_containers", pod.key());
        let log_path = format!("{}/0.log", spec.name);
        let log = Path::new(&sandbox_config.log_directory).join(&log_path);
        fs::create_dir_all(log.parent().unwrap_or(Path::new("/"))).with_context(|| format!("mkdir for {}", log.display()))?;
        let mode = |host: bool| if host { NamespaceMode::Node as i32 } else { NamespaceMode::Pod as i32 };
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata { name: spec.name.clone(), attempt: 0 }),
            image: Some(ImageSpec { image: spec.image.clone(), ..Default::default() }),
            command: spec.command.clone(),
            args: spec.args.clone(),
            envs: spec.env.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect(),
            mounts: spec
                .mounts
                .iter()
                .map(|m| Mount {
                    container_path: m.container.clone(),
                    host_path: m.host.to_string_lossy().into_owned(),
                    readonly: m.read_only,
                    ..Default::default()
                })
                .collect(),
            log_path,
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    capabilities: Some(Capability {
                        add_capabilities: spec.cap_add.clone(),
                        drop_capabilities: spec.cap_drop.clone(),
                        ..Default::default()
                    }),
                    privileged: spec.privileged,
                    namespace_options: Some(NamespaceOption {
                        network: mode(spec.host_network),
                        pid: if spec.host_pid { NamespaceMode::Node as i32 } else { NamespaceMode::Container as i32 },
                        ..Default::default()
                    }),
                    readonly_rootfs: spec.read_only_root,
                    no_new_privs: spec.no_new_privs,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self.rt.block_on(async {
            let mut c = self.runtime()?;
            let r = c.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            });
            let id = tokio::time::timeout(CRI_CALL_TIMEOUT, r).await.context("CreateContainer timed out")??.into_inner().container_id;
            let start = c.start_container(StartContainerRequest { container_id: id.clone() });
            tokio::time::timeout(CRI_CALL_TIMEOUT, start).await.context("StartContainer timed out")??;
            anyhow::Ok(id)
        });
        let id = id.with_context(|| format!("container {} in {}", spec.name, pod.key()))?;
        Ok(Container { id, name: spec.name.clone(), log })
    }

    /// Waits (polling the CRI, bounded by `timeout`) until `container` has exited.
    pub fn wait_container(&self, container: &Container, timeout: Duration) -> Result<ContainerExit> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.rt.block_on(async {
                let mut c = self.runtime()?;
                let r = c.container_status(ContainerStatusRequest { container_id: container.id.clone(), verbose: false });
                let r = tokio::time::timeout(CRI_CALL_TIMEOUT, r).await.context("ContainerStatus timed out")??;
                r.into_inner().status.ok_or_else(|| anyhow!("no status for container {}", container.id))
            })?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(ContainerExit { code: status.exit_code, reason: status.reason, message: status.message });
            }
            ensure!(Instant::now() < deadline, "container {} still running after {timeout:?}", container.name);
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid (in the node's PID namespace) of a running container's process, from its verbose
    /// status (containerd puts its own view, with the pid, in `info["info"]`).
    pub fn container_pid(&self, container: &Container) -> Result<u32> {
        let info = self.rt.block_on(async {
            let mut c = self.runtime()?;
            let r = c.container_status(ContainerStatusRequest { container_id: container.id.clone(), verbose: true });
            let r = tokio::time::timeout(CRI_CALL_TIMEOUT, r).await.context("ContainerStatus timed out")??;
            r.into_inner().info.remove("info").ok_or_else(|| anyhow!("no verbose info for container {}", container.id))
        })?;
        let info: serde_json::Value = serde_json::from_str(&info).context("verbose info is not JSON")?;
        let pid = info["pid"].as_u64().filter(|&p| p > 0).ok_or_else(|| anyhow!("no pid in the verbose info of {}", container.name))?;
        Ok(u32::try_from(pid)?)
    }

    /// Stops (at once) and removes a container; removing its pod does this too.
    pub fn remove_container(&self, container: &Container) -> Result<()> {
        self.rt.block_on(async {
            let mut c = self.runtime()?;
            let stop = c.stop_container(StopContainerRequest { container_id: container.id.clone(), timeout: 0 });
            tokio::time::timeout(CRI_CALL_TIMEOUT, stop).await.context("StopContainer timed out")??;
            let rm = c.remove_container(RemoveContainerRequest { container_id: container.id.clone() });
            tokio::time::timeout(CRI_CALL_TIMEOUT, rm).await.context("RemoveContainer timed out")??;
            anyhow::Ok(())
        })
    }
}

/// The lines of a CRI log file (`TIMESTAMP STREAM P|F TEXT` per line; `P` is a partial line
/// the next record continues) as (stream, line) pairs, partial records joined.
pub fn cri_log_lines(log: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    let mut partial = String::new();
    for record in text.lines() {
        let mut parts = record.splitn(4, ' ');
        let (Some(_ts), Some(stream), Some(tag), rest) = (parts.next(), parts.next(), parts.next(), parts.next()) else { continue };
        partial.push_str(rest.unwrap_or_default());
        if tag != "P" {
            out.push((stream.to_string(), std::mem::take(&mut partial)));
        }
    }
    out
}
