//! An image registry for the node lab: Debian's `docker-registry` (the CNCF distribution
//! registry) serving plain HTTP on 127.0.0.1 inside the node's network namespace, where the
//! lab's containerd reaches it, on a port the kernel picked, with its storage under the lab's
//! directory. Images go in with `skopeo copy` (run in the same namespace) and come out through
//! the CRI's `PullImage`, as kubelet pulls them; [`NodeLab::trust_plain_http_registry`] tells
//! containerd the registry speaks plain HTTP (a `hosts.toml` in its `config_path`).
//!
//! Nothing listens outside the node's namespace, and the [`Registry`] guard kills the registry
//! and removes its storage when dropped, also when the test panics.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, ensure};
use k8s_cri::v1::{ImageSpec, ImageStatusRequest, PullImageRequest, image_service_client::ImageServiceClient};

use super::{CRI_CALL_TIMEOUT, NodeLab, require_node_reasons};
use crate::run_timeout;

/// Bound for the registry to say where it listens after it was started.
const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for one `skopeo copy` of the tracer image (about 30 MB; 2 s here).
const PUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// The registry binary (Debian `docker-registry`).
const DOCKER_REGISTRY: &str = "docker-registry";

/// Like [`super::require_node`], and also requires `docker-registry` and `skopeo`: a missing one is
/// a loud skip, a failure under `TRACER_REQUIRE_PRIVILEGED=1`.
pub fn require_registry(test: &str) -> bool {
    let Some(mut reasons) = require_node_reasons(test) else { return false };
    for tool in [DOCKER_REGISTRY, "skopeo"] {
        if !crate::privilege::have_tool(tool) {
            reasons.push(format!("`{tool}` not found in PATH (scripts/setup.sh --lab installs it)"));
        }
    }
    crate::privilege::skip_unless(test, reasons)
}

/// A running registry; killed, and its storage removed, on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`: where it listens, inside the node's network namespace.
    pub host: String,
    netns: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    /// Its log (stderr), for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

/// An image as the CRI reports it after a pull.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// What PullImage returned (containerd: the image id).
    pub image_ref: String,
    /// The image id: the config's digest.
    pub id: String,
    /// The references it is known by (the pulled one among them).
    pub repo_tags: Vec<String>,
    /// `REPOSITORY@sha256:...` of the manifest it was pulled by.
    pub repo_digests: Vec<String>,
}

impl Registry {
    /// Starts a registry in `lab`'s network namespace and waits until it listens.
    pub fn start(lab: &NodeLab) -> Result<Registry> {
        let dir = lab.dir().join(format!("registry-{}", crate::netns::next_id()));
        fs::create_dir_all(dir.join("storage")).with_context(|| format!("mkdir {}", dir.display()))?;
        let config = dir.join("config.yml");
        // Port 0: the kernel picks a free one, and the registry logs the address it got.
        let yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\n",
            dir.join("storage").display()
        );
        fs::write(&config, yaml).with_context(|| format!("write {}", config.display()))?;
        let netns = lab.netns.path();
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg(DOCKER_REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn nsenter docker-registry")?;
        let stderr = child.stderr.take().context("registry stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let lines = Arc::clone(&log);
        // Reads the log to its end (so the registry never blocks on a full pipe), and passes on
        // the address of its "listening on 127.0.0.1:PORT" line.
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on ") {
                    let addr = line[at + "listening on ".len()..].split(['"', ' ']).next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let mut registry = Registry { host: String::new(), netns, dir, child: Some(child), log };
        let host = rx.recv_timeout(REGISTRY_START_TIMEOUT).map_err(|_| {
            anyhow!("{DOCKER_REGISTRY} did not say where it listens within {REGISTRY_START_TIMEOUT:?}; its log:\n{}", registry.log_text())
        })?;
        ensure!(host.starts_with("127.0.0.1:"), "{DOCKER_REGISTRY} listens on {host}, not on 127.0.0.1");
        registry.host = host;
        Ok(registry)
    }

    /// Pushes the image of a docker-archive tarball as `HOST/repository:tag`, with skopeo in the
    /// node's namespace (plain HTTP); returns that reference.
    pub fn push(&self, archive: &Path, repository: &str, tag: &str) -> Result<String> {
        let reference = format!("{}/{repository}:{tag}", self.host);
        // --insecure-policy: no signature policy file is needed (nor read) for a lab push.
        let out = run_timeout(
            Command::new("nsenter")
                .arg(format!("--net={}", self.netns.display()))
                .args(["skopeo", "copy", "--quiet", "--insecure-policy", "--dest-tls-verify=false"])
                .arg(format!("docker-archive:{}", archive.display()))
                .arg(format!("docker://{reference}")),
            PUSH_TIMEOUT,
        );
        ensure!(
            out.status.success(),
            "skopeo copy docker-archive:{} docker://{reference} failed ({}): {}\nregistry log:\n{}",
            archive.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        Ok(reference)
    }

    /// The registry's log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: registry: could not remove {}: {e}", self.dir.display());
        }
    }
}

impl NodeLab {
    /// Tells containerd that `host` (`HOST:PORT`) is a registry that speaks plain HTTP: a
    /// `hosts.toml` in the registry `config_path` of the lab's configuration, which containerd
    /// reads at each pull.
    pub fn trust_plain_http_registry(&self, host: &str) -> Result<()> {
        let dir = self.dir.join("certs.d").join(host);
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let toml = format!("server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n");
        fs::write(dir.join("hosts.toml"), toml).with_context(|| format!("write {}/hosts.toml", dir.display()))
    }

    /// Pulls `reference` through the CRI (`PullImage`, as kubelet does for a container whose
    /// image is not present), then reads back what the CRI knows of it.
    pub fn pull_image(&self, reference: &str) -> Result<PulledImage> {
        let spec = || ImageSpec { image: reference.to_string(), ..Default::default() };
        self.rt
            .block_on(async {
                let mut c = ImageServiceClient::new(self.channel()?);
                let pull = c.pull_image(PullImageRequest { image: Some(spec()), auth: None, sandbox_config: None });
                let image_ref = tokio::time::timeout(CRI_CALL_TIMEOUT, pull).await.context("PullImage timed out")??.into_inner().image_ref;
                let status = c.image_status(ImageStatusRequest { image: Some(spec()), verbose: false });
                let status = tokio::time::timeout(CRI_CALL_TIMEOUT, status).await.context("ImageStatus timed out")??.into_inner();
                let image = status.image.ok_or_else(|| anyhow!("the CRI does not know {reference} after pulling it"))?;
                anyhow::Ok(PulledImage { image_ref, id: image.id, repo_tags: image.repo_tags, repo_digests: image.repo_digests })
            })
            .with_context(|| format!("pulling {reference} through the CRI"))
    }

    /// Whether the CRI already has `reference` (an image present is not pulled again).
    pub fn has_image(&self, reference: &str) -> Result<bool> {
        self.rt.block_on(async {
            let mut c = ImageServiceClient::new(self.channel()?);
            let spec = ImageSpec { image: reference.to_string(), ..Default::default() };
            let r = c.image_status(ImageStatusRequest { image: Some(spec), verbose: false });
            anyhow::Ok(tokio::time::timeout(CRI_CALL_TIMEOUT, r).await.context("ImageStatus timed out")??.into_inner().image.is_some())
        })
    }
}
