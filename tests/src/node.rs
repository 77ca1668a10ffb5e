//! A Kubernetes node in a box: a real containerd (Debian's, with runc and the CNI bridge
//! plugin) running inside a network namespace the test created, with a private root, state,
//! socket and CNI configuration, and real pod sandboxes created through the real CRI API.
//!
//! Each [`NodeLab`] is independent: several may run at once in one process or in parallel test
//! processes (names come from the pid and a counter, the pod subnet from [`AddrBlock`]). Dropping
//! it removes everything it made, also when the test panics: pods (through the CRI), containerd,
//! shims, runc and sandbox processes it started, mounts under its private directory, the pods'
//! CNI network namespaces, the node namespace and the directory itself. [`Leftovers`] checks
//! that afterwards.
//!
//! Why `nsenter --net` and not `ip netns exec`: the latter also remounts /sys for the namespace,
//! and runc then fails with "no cgroup mount found in mountinfo".

mod container;
mod image;
mod registry;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    net::Ipv4Addr,
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, anyhow, bail, ensure};
pub use container::{Container, ContainerExit, ContainerSpec, HostMount, cri_log_lines};
use hyper_util::rt::TokioIo;
pub use image::{BUSYBOX, SANDBOX_IMAGE, image_id, image_reference, is_static_elf, sandbox_image_tar};
use k8s_cri::v1::{
    ImageSpec, ImageStatusRequest, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
    VersionRequest, image_service_client::ImageServiceClient, runtime_service_client::RuntimeServiceClient,
};
pub use registry::{PulledImage, Registry, require_registry};
use tokio::runtime::Runtime;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{AddrBlock, CMD_TIMEOUT, Netns, Value, netns::next_id, run_timeout, unique_name};

/// Bound for containerd to answer the CRI `Version` call after it was started.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound for one CRI call (RunPodSandbox includes runc and CNI, normally well under a second).
pub const CRI_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound for one CRI call made while cleaning up: shorter, since a hung call must not stall the
/// whole test run and everything is killed afterwards anyway.
const CLEANUP_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Where the CNI plugins live (Debian `containernetworking-plugins`).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// libcni's result cache (containerd 1.6 does not let the config move it): one file per
/// network, container and interface, removed by CNI DEL, swept by the lab's drop just in case.
const CNI_RESULTS_DIR: &str = "/var/lib/cni/results";

// ---------------------------------------------------------------------------------------------
// Gate
// ---------------------------------------------------------------------------------------------

/// Set where tests that need containerd are known not to be able to run (the VM matrix).
pub const NO_CONTAINER_RUNTIME: &str = "TRACER_NO_CONTAINER_RUNTIME";

/// Like [`crate::require_privileged`], and also requires what a [`NodeLab`] runs: containerd,
/// ctr, runc, the runc v2 shim, nsenter, the CNI bridge/host-local/loopback plugins and a static
/// busybox for the sandbox image. A missing part is a loud skip (a failure under
/// `TRACER_REQUIRE_PRIVILEGED=1`), never a silent pass.
pub fn require_node(test: &str) -> bool {
    let Some(reasons) = require_node_reasons(test) else { return false };
    crate::privilege::skip_unless(test, reasons)
}

/// Why this machine cannot run a [`NodeLab`] (empty when it can), or None after printing the
/// expected skip of an environment without a container runtime by design.
fn require_node_reasons(test: &str) -> Option<Vec<String>> {
    // The kernel matrix VMs carry no container runtime by design (README: pod tests run on the
    // host kernel only); there the skip is expected, printed, and not a failure.
    if std::env::var_os(NO_CONTAINER_RUNTIME).is_some() {
        crate::skipped(
            test,
            &format!(
                "needs a container runtime, which this environment has none of by design ({NO_CONTAINER_RUNTIME} is set); it runs on the host kernel"
            ),
        );
        return None;
    }
    let mut reasons = crate::privilege::privileged_reasons();
    for tool in ["containerd", "ctr", "runc", "containerd-shim-runc-v2", "nsenter"] {
        if !crate::privilege::have_tool(tool) {
            reasons.push(format!("`{tool}` not found in PATH (scripts/setup.sh --lab installs it)"));
        }
    }
    for plugin in ["bridge", "host-local", "loopback"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            reasons.push(format!("CNI plugin {CNI_BIN_DIR}/{plugin} missing (containernetworking-plugins)"));
        }
    }
    match is_static_elf(Path::new(BUSYBOX)) {
        Ok(true) => {}
        Ok(false) => reasons.push(format!("{BUSYBOX} is not static (install busybox-static)")),
        Err(e) => reasons.push(format!("{e:#} (install busybox-static)")),
    }
    Some(reasons)
}

// ---------------------------------------------------------------------------------------------
// Commands inside a network namespace
// ---------------------------------------------------------------------------------------------

/// `nsenter --net=NETNS args...`, bounded by `timeout`. Only the network namespace changes, so
/// the command sees the host's files and tools (python3, ip, ...).
pub fn nsenter_net(netns: &Path, args: &[&str], timeout: Duration) -> Output {
    run_timeout(&mut nsenter_cmd(netns, args), timeout)
}

fn nsenter_cmd(netns: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display())).arg("--").args(args);
    c
}

fn nsenter_spawn(netns: &Path, args: &[&str]) -> Child {
    nsenter_cmd(netns, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", netns.display()))
}

fn assert_ok(out: Output, netns: &Path, args: &[&str]) -> Output {
    assert!(
        out.status.success(),
        "in netns {}: `{}` failed ({}): {}{}",
        netns.display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------------------------

/// A pod sandbox created through the CRI, as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// The CRI pod sandbox id.
    pub id: String,
    /// The pod IP from PodSandboxStatus; empty for host-network pods (containerd reports none).
    pub ip: String,
    /// The sandbox's network namespace: `/var/run/netns/cni-…` for ordinary pods, the node's
    /// namespace for host-network pods.
    pub netns_path: PathBuf,
    /// Inode of that namespace (what the kernel and the tracer call the netns id).
    pub netns_inode: u64,
    /// Pid of the sandbox process (busybox sleeping).
    pub pid: u32,
    pub host_network: bool,
}

impl Pod {
    /// `namespace/name`, as the tracer prints pods.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Runs a host command inside the pod's network namespace, bounded by [`CMD_TIMEOUT`].
    pub fn exec(&self, args: &[&str]) -> Output {
        nsenter_net(&self.netns_path, args, CMD_TIMEOUT)
    }

    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        nsenter_net(&self.netns_path, args, timeout)
    }

    /// Like [`Pod::exec`] but panics on failure.
    pub fn exec_ok(&self, args: &[&str]) -> Output {
        assert_ok(self.exec(args), &self.netns_path, args)
    }

    /// Starts a background command in the pod's network namespace (collect it with
    /// [`crate::wait_child`]).
    pub fn spawn(&self, args: &[&str]) -> Child {
        nsenter_spawn(&self.netns_path, args)
    }
}

// ---------------------------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------------------------

/// How a sandbox is set up beyond its name.
#[derive(Clone, Copy, Debug, Default)]
struct SandboxOptions {
    host_network: bool,
    /// The node's PID namespace (`hostPID`).
    host_pid: bool,
    /// A log directory, so containers in it have CRI log files.
    logs: bool,
}

/// Options of a [`NodeLab`].
#[derive(Clone, Debug, Default)]
pub struct NodeLabOptions {
    /// The last octets (inclusive) of the pod /24 that host-local may hand out. Default
    /// `2..=254` (`.1` is the bridge, the pods' gateway). A pool of one or two addresses makes
    /// IP reuse deterministic without [`NodeLab::run_pod_with_ip`].
    pub pool: Option<(u8, u8)>,
}

/// A node: its namespace, its containerd, its pods. See the module documentation.
///
/// The API is blocking (it drives the CRI client on its own single-threaded tokio runtime), so
/// use it from ordinary `#[test]` functions, not from inside another tokio runtime.
pub struct NodeLab {
    /// The node's network namespace: containerd, the shims and the CNI bridge live here.
    pub netns: Netns,
    /// The pod network (subnet 0 of `addrs`); subnets 1..=3 are free for extra test hosts.
    pub addrs: AddrBlock,
    /// The pod subnet as CIDR text (`198.x.y.0/24`).
    pub subnet: String,
    /// The bridge's address, the pods' default gateway (`.1`).
    pub gateway: String,
    /// The CNI bridge's name inside the node namespace.
    pub bridge: String,
    /// The CNI network name (also host-local's data directory name).
    pub network: String,
    /// First and last pod address host-local may hand out.
    pub pool: (Ipv4Addr, Ipv4Addr),
    /// How long containerd took to answer the CRI after it was started (the image import
    /// follows; `NodeLab::new` as a whole takes a few hundred ms more).
    pub cri_ready_after: Duration,
    dir: PathBuf,
    containerd: Option<Child>,
    rt: Runtime,
    channel: Option<Channel>,
    /// Live sandboxes this lab created: id -> netns path.
    pods: Mutex<BTreeMap<String, PathBuf>>,
    /// Every pod network namespace this lab ever saw, for clean-up and [`Leftovers`].
    pod_netns: Mutex<BTreeSet<PathBuf>>,
    /// Every sandbox process this lab ever saw, for [`Leftovers`].
    sandbox_pids: Mutex<BTreeSet<u32>>,
    /// Every sandbox id this lab ever saw: libcni names its cache files after them.
    sandbox_ids_seen: Mutex<BTreeSet<String>>,
    /// The config each live sandbox was created with: CreateContainer wants it again.
    sandbox_configs: Mutex<BTreeMap<String, PodSandboxConfig>>,
    /// Serialises pod creation: [`NodeLab::run_pod_with_ip`] steers host-local through its
    /// state file, which must not race another creation.
    create: Mutex<()>,
}

fn pod_uid() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        std::process::id(),
        next_id() & 0xffff,
        (nanos >> 12) & 0xfff,
        (nanos >> 24) & 0xfff,
        (nanos >> 36) & 0xffff_ffff_ffff,
    )
}

fn parse_v4(s: &str) -> Result<Ipv4Addr> {
    s.parse().with_context(|| format!("{s:?} is not an IPv4 address"))
}

fn toml_path(p: &Path) -> Result<String> {
    let s = p.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", p.display()))?;
    ensure!(!s.contains(['"', '\\']), "path {s} needs TOML escaping");
    Ok(s.to_string())
}

impl NodeLab {
    /// Starts a node with the default pool. Panics (after cleaning up) if any step fails.
    pub fn new() -> NodeLab {
        NodeLab::with_options(NodeLabOptions::default())
    }

    pub fn with_options(opts: NodeLabOptions) -> NodeLab {
        let addrs = AddrBlock::new();
        let (first, last) = opts.pool.unwrap_or((2, 254));
        assert!(2 <= first && first <= last && last <= 254, "pool {first}..={last} must lie in 2..=254");
        let host = |h: u8| parse_v4(&addrs.host(0, u32::from(h))).unwrap_or_else(|e| panic!("{e:#}"));
        let netns = Netns::new("nd");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("tokio runtime: {e}"));
        let mut lab = NodeLab {
            subnet: addrs.net(0),
            gateway: addrs.host(0, 1),
            bridge: unique_name("cb"),
            network: format!("{}-pods", netns.name),
            pool: (host(first), host(last)),
            cri_ready_after: Duration::ZERO,
            dir: private_dir(),
            netns,
            addrs,
            containerd: None,
            rt,
            channel: None,
            pods: Mutex::new(BTreeMap::new()),
            pod_netns: Mutex::new(BTreeSet::new()),
            sandbox_pids: Mutex::new(BTreeSet::new()),
            sandbox_ids_seen: Mutex::new(BTreeSet::new()),
            sandbox_configs: Mutex::new(BTreeMap::new()),
            create: Mutex::new(()),
        };
        // On failure `lab` is dropped while the panic unwinds, which removes whatever was made.
        if let Err(e) = lab.start() {
            let log = lab.containerd_log_tail();
            panic!("node lab failed to start: {e:#}\ncontainerd log ({}):\n{log}", lab.log_path().display());
        }
        lab
    }

    /// The private directory (config, root, state, sockets, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's CRI socket, for `tracer --cri-socket`.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    /// Pid of the containerd process.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    fn write_config(&self) -> Result<PathBuf> {
        let d = toml_path(&self.dir)?;
        for sub in ["root", "state", "cni", "ipam", "runc", "certs.d"] {
            fs::create_dir_all(self.dir.join(sub)).with_context(|| format!("mkdir {d}/{sub}"))?;
        }
        // Plugins that cannot work here (aufs, btrfs, zfs, devmapper), or that touch shared
        // places (`opt` creates /opt/containerd), or only add noise (tracing) are disabled so
        // start-up takes ~0.1 s and the log stays quiet. `io.containerd.runtime.v1.linux` must
        // stay: the tasks service (and so the CRI plugin) refuses to load without it.
        // runc's state goes under our directory too (its default /run/containerd/runc is shared
        // by every containerd on the machine).
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd-ttrpc.sock"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
  disable_apparmor = true
  restrict_oom_score_adj = true
  sandbox_image = "{SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{d}/cni"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
"#,
        );
        let path = self.dir.join("config.toml");
        fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;

        // The bridge plugin creates the bridge in the namespace containerd runs in (the node's)
        // and gives it the gateway address; no masquerading, and the only route out of a pod
        // leads to the node, which has no route anywhere else. host-local keeps its state in our
        // directory (its default /var/lib/cni/networks is shared). Loopback needs no entry:
        // containerd's CRI always adds its own `lo` network to every sandbox.
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.network,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": format!("{d}/ipam"),
                    "ranges": [[{
                        "subnet": self.subnet,
                        "rangeStart": self.pool.0.to_string(),
                        "rangeEnd": self.pool.1.to_string(),
                        "gateway": self.gateway,
                    }]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            }],
        });
        let cni = self.dir.join("cni/10-tracer-node-lab.conflist");
        fs::write(&cni, serde_json::to_vec_pretty(&conflist)?).with_context(|| format!("write {}", cni.display()))?;
        Ok(path)
    }

    fn start(&mut self) -> Result<()> {
        let tar = sandbox_image_tar()?;
        let config = self.write_config()?;
        let log = File::create(self.log_path()).with_context(|| format!("create {}", self.log_path().display()))?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.netns.path().display()))
            .arg("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn nsenter containerd")?;
        self.containerd = Some(child);

        let started = Instant::now();
        let deadline = started + NODE_START_TIMEOUT;
        let channel = loop {
            if let Some(st) = self.containerd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("containerd exited during start-up ({st})");
            }
            let sock = self.socket_path();
            let attempt = self.rt.block_on(async {
                let ch = connect(&sock).await?;
                let v = RuntimeServiceClient::new(ch.clone()).version(VersionRequest { version: "v1".into() }).await?;
                anyhow::Ok((ch, v.into_inner()))
            });
            match attempt {
                Ok((ch, v)) => {
                    ensure!(v.runtime_name == "containerd", "runtime at {} is {v:?}", sock.display());
                    break ch;
                }
                Err(e) if Instant::now() >= deadline => {
                    bail!("containerd did not answer CRI Version on {} within {NODE_START_TIMEOUT:?}: {e:#}", sock.display())
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        };
        self.channel = Some(channel);
        self.cri_ready_after = started.elapsed();
        self.import_image(&tar, SANDBOX_IMAGE)
    }

    /// Imports an image tarball (docker-archive) that holds `reference`, and waits until the CRI
    /// knows it.
    pub fn import_image(&self, tar: &Path, reference: &str) -> Result<()> {
        let sock = self.socket_path();
        let ctr = |args: &[&str]| {
            let out = run_timeout(Command::new("ctr").arg("--address").arg(&sock).args(["-n", "k8s.io"]).args(args), CMD_TIMEOUT);
            if out.status.success() {
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            } else {
                Err(anyhow!("ctr {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)))
            }
        };
        let tar_s = tar.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", tar.display()))?;
        ctr(&["images", "import", tar_s])?;
        let listed = ctr(&["images", "ls", "-q"])?;
        ensure!(listed.lines().any(|l| l == reference), "{reference} not listed after import: {listed}");
        // The CRI plugin learns of imported images from containerd's event stream, so it may
        // not know the image for a moment; RunPodSandbox would then try to pull it (and fail:
        // there is no registry). Wait until the CRI itself reports it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let known = self.rt.block_on(async {
                let mut c = ImageServiceClient::new(self.channel()?);
                let spec = ImageSpec { image: reference.into(), ..Default::default() };
                let r = c.image_status(ImageStatusRequest { image: Some(spec), verbose: false }).await?;
                anyhow::Ok(r.into_inner().image.is_some())
            })?;
            if known {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the CRI does not see {reference} 10 s after import");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn channel(&self) -> Result<Channel> {
        self.channel.clone().ok_or_else(|| anyhow!("containerd is not connected"))
    }

    fn runtime(&self) -> Result<RuntimeServiceClient<Channel>> {
        Ok(RuntimeServiceClient::new(self.channel()?))
    }

    /// Creates a pod sandbox with its own network namespace and a pool IP.
    pub fn run_pod(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
        self.try_run_pod(namespace, name, labels, false, None).unwrap_or_else(|e| self.fail(&e))
    }

    /// Creates a host-network pod: it shares the node's namespace and gets no IP of its own.
    pub fn run_pod_host_network(&self, namespace: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
        self.try_run_pod(namespace, name, labels, true, None).unwrap_or_else(|e| self.fail(&e))
    }

    /// Creates a pod that gets exactly `ip` (which must lie in the pool and be free), e.g. the
    /// IP of a pod just removed. host-local hands out the address after the one recorded in its
    /// `last_reserved_ip.0` file (round robin through the pool, skipping addresses in use), so
    /// writing the address before `ip` there steers the next allocation; the result is checked.
    pub fn run_pod_with_ip(&self, namespace: &str, name: &str, labels: &[(&str, &str)], ip: &str) -> Pod {
        self.try_run_pod(namespace, name, labels, false, Some(ip)).unwrap_or_else(|e| self.fail(&e))
    }

    fn fail(&self, e: &anyhow::Error) -> ! {
        panic!("{e:#}\ncontainerd log ({}):\n{}", self.log_path().display(), self.containerd_log_tail())
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn containerd_log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Creates a pod; `Err` describes which step failed. `want_ip` is as in
    /// [`NodeLab::run_pod_with_ip`].
    pub fn try_run_pod(&self, namespace: &str, name: &str, labels: &[(&str, &str)], host_network: bool, want_ip: Option<&str>) -> Result<Pod> {
        self.try_run_pod_with(namespace, name, labels, SandboxOptions { host_network, ..Default::default() }, want_ip)
    }

    /// Creates a pod that runs containers as a kubelet would set it up: `opts` from the pod
    /// spec (hostNetwork, hostPID), container logs under the lab's directory.
    pub fn run_pod_for_containers(&self, namespace: &str, name: &str, host_network: bool, host_pid: bool) -> Pod {
        let opts = SandboxOptions { host_network, host_pid, logs: true };
        self.try_run_pod_with(namespace, name, &[], opts, None).unwrap_or_else(|e| self.fail(&e))
    }

    fn try_run_pod_with(&self, namespace: &str, name: &str, labels: &[(&str, &str)], opts: SandboxOptions, want_ip: Option<&str>) -> Result<Pod> {
        let host_network = opts.host_network;
        let _serial = self.create.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = want_ip {
            self.steer_ipam(ip)?;
        }
        let uid = pod_uid();
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mode = if host_network { NamespaceMode::Node } else { NamespaceMode::Pod };
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: name.into(), uid: uid.clone(), namespace: namespace.into(), attempt: 0 }),
            // runc refuses a hostname without a private UTS namespace, which host-network pods
            // do not get (kubelet leaves it empty for them too).
            hostname: if host_network { String::new() } else { name.into() },
            labels: labels.clone().into_iter().collect(),
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        network: mode as i32,
                        pid: if opts.host_pid { NamespaceMode::Node as i32 } else { NamespaceMode::Pod as i32 },
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // Where the CRI writes container logs (kubelet: /var/log/pods/NS_NAME_UID).
            log_directory: if opts.logs { self.dir.join("pods").join(&uid).to_string_lossy().into_owned() } else { String::new() },
            ..Default::default()
        };
        let sandbox_config = config.clone();
        let id = self
            .rt
            .block_on(async {
                let mut c = self.runtime()?;
                let r = c.run_pod_sandbox(RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() });
                anyhow::Ok(tokio::time::timeout(CRI_CALL_TIMEOUT, r).await??.into_inner().pod_sandbox_id)
            })
            .with_context(|| format!("RunPodSandbox {namespace}/{name}"))?;
        // From here on the sandbox exists: track it first, so a later failure still removes it.
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), PathBuf::new());
        self.sandbox_ids_seen.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone());
        self.sandbox_configs.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), sandbox_config);
        let (ip, pid, netns_path) =
            self.sandbox_details(&id, CRI_CALL_TIMEOUT).with_context(|| format!("PodSandboxStatus {namespace}/{name} ({id})"))?;
        let netns_path = if host_network { self.netns.path() } else { netns_path };
        self.sandbox_pids.lock().unwrap_or_else(|p| p.into_inner()).insert(pid);
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), netns_path.clone());
        if !host_network {
            self.pod_netns.lock().unwrap_or_else(|p| p.into_inner()).insert(netns_path.clone());
        }
        let netns_inode = fs::metadata(&netns_path).with_context(|| format!("stat {}", netns_path.display()))?.ino();
        let by_pid = fs::metadata(format!("/proc/{pid}/ns/net")).with_context(|| format!("stat /proc/{pid}/ns/net"))?.ino();
        ensure!(
            netns_inode == by_pid,
            "{namespace}/{name}: netns {} has inode {netns_inode} but the sandbox process {pid} is in {by_pid}",
            netns_path.display()
        );
        if host_network {
            ensure!(netns_inode == self.netns.inode(), "host-network pod {namespace}/{name} is not in the node namespace");
        } else {
            let addr = parse_v4(&ip).with_context(|| format!("{namespace}/{name}: pod IP"))?;
            ensure!(self.pool.0 <= addr && addr <= self.pool.1, "{namespace}/{name}: IP {ip} outside the pool {:?}", self.pool);
            if let Some(w) = want_ip {
                ensure!(ip == w, "{namespace}/{name}: asked host-local for {w}, got {ip} (is {w} still in use?)");
            }
        }
        Ok(Pod { namespace: namespace.into(), name: name.into(), uid, labels, id, ip, netns_path, netns_inode, pid, host_network })
    }

    /// Points host-local's round-robin cursor just before `ip`.
    fn steer_ipam(&self, ip: &str) -> Result<()> {
        let want = parse_v4(ip)?;
        ensure!(self.pool.0 <= want && want <= self.pool.1, "{ip} is outside the pool {:?}", self.pool);
        let dir = self.dir.join("ipam").join(&self.network);
        ensure!(!dir.join(ip).exists(), "{ip} is still allocated (host-local has {})", dir.join(ip).display());
        fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        // Below the pool start, host-local starts from the pool start, which is then `ip`.
        let before = Ipv4Addr::from(u32::from(want) - 1);
        let file = dir.join("last_reserved_ip.0");
        fs::write(&file, before.to_string()).with_context(|| format!("write {}", file.display()))
    }

    /// (ip, pid, netns path) of a sandbox, from its verbose status: containerd puts its internal
    /// view in `info["info"]` as JSON, with the sandbox pid and the OCI runtime spec, whose
    /// network namespace entry names the CNI namespace file (absent for host-network pods).
    fn sandbox_details(&self, id: &str, bound: Duration) -> Result<(String, u32, PathBuf)> {
        let resp = self.rt.block_on(async {
            let mut c = self.runtime()?;
            let r = c.pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true });
            anyhow::Ok(tokio::time::timeout(bound, r).await??.into_inner())
        })?;
        let ip = resp.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
        let info = resp.info.get("info").ok_or_else(|| anyhow!("no verbose info"))?;
        let info: Value = serde_json::from_str(info).context("verbose info is not JSON")?;
        let pid = info["pid"].as_u64().filter(|&p| p > 0).ok_or_else(|| anyhow!("no pid in verbose info"))?;
        let netns = info["runtimeSpec"]["linux"]["namespaces"]
            .as_array()
            .and_then(|a| a.iter().find(|n| n["type"] == "network"))
            .and_then(|n| n["path"].as_str())
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok((ip, u32::try_from(pid)?, netns))
    }

    /// Stops and removes a pod (its CNI teardown frees the IP and deletes the netns file).
    pub fn remove_pod(&self, pod: &Pod) {
        if let Err(e) = self.stop_remove(&pod.id, CRI_CALL_TIMEOUT) {
            self.fail(&e.context(format!("removing {}", pod.key())));
        }
    }

    fn stop_remove(&self, id: &str, bound: Duration) -> Result<()> {
        self.rt.block_on(async {
            let mut c = self.runtime()?;
            let stop = c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() });
            tokio::time::timeout(bound, stop).await.context("StopPodSandbox timed out")??;
            let rm = c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() });
            tokio::time::timeout(bound, rm).await.context("RemovePodSandbox timed out")??;
            anyhow::Ok(())
        })?;
        self.pods.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.sandbox_configs.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        Ok(())
    }

    /// Ids of every sandbox the runtime knows (ready or not).
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.try_sandbox_ids(CRI_CALL_TIMEOUT).unwrap_or_else(|e| self.fail(&e))
    }

    fn try_sandbox_ids(&self, bound: Duration) -> Result<Vec<String>> {
        self.rt.block_on(async {
            let mut c = self.runtime()?;
            let r = c.list_pod_sandbox(ListPodSandboxRequest { filter: None });
            let r = tokio::time::timeout(bound, r).await.context("ListPodSandbox timed out")??;
            anyhow::Ok(r.into_inner().items.into_iter().map(|s| s.id).collect())
        })
    }

    /// Runs a command in the node's namespace (`nsenter --net`), bounded by [`CMD_TIMEOUT`].
    pub fn exec(&self, args: &[&str]) -> Output {
        nsenter_net(&self.netns.path(), args, CMD_TIMEOUT)
    }

    pub fn exec_ok(&self, args: &[&str]) -> Output {
        assert_ok(self.exec(args), &self.netns.path(), args)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        nsenter_spawn(&self.netns.path(), args)
    }

    /// Kills containerd with SIGKILL, as a runtime crash would: its shims and sandboxes keep
    /// running and the socket stops answering (a stale socket file stays). For tests of a dead
    /// CRI socket, and of the lab's clean-up without the CRI's help.
    pub fn kill_containerd(&mut self) {
        self.channel = None;
        if let Some(mut c) = self.containerd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What to look for after this lab is dropped (see [`Leftovers::find`]).
    pub fn leftovers(&self) -> Leftovers {
        Leftovers {
            dir: self.dir.clone(),
            node_netns: self.netns.path(),
            pod_netns: self.pod_netns.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect(),
            sandbox_pids: self.sandbox_pids.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect(),
            sandbox_ids: self.sandbox_ids_seen.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect(),
            network: self.network.clone(),
        }
    }
}

impl Default for NodeLab {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh private directory under the temp dir, e.g. `/tmp/trnode-1234-7` (short: the gRPC
/// socket path inside must stay under the 108-byte limit of unix socket addresses).
fn private_dir() -> PathBuf {
    loop {
        let dir = std::env::temp_dir().join(format!("trnode-{}-{}", std::process::id(), next_id()));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            // A leftover of an earlier process that had our pid: take the next number.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("mkdir {}: {e}", dir.display()),
        }
    }
}

async fn connect(sock: &Path) -> Result<Channel> {
    let sock = sock.to_path_buf();
    // The URI is a placeholder: the connector below ignores it and dials the unix socket.
    let ch = Endpoint::try_from("http://[::1]:50051")?
        .connect_timeout(Duration::from_secs(2))
        .timeout(CRI_CALL_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let sock = sock.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(sock).await?)) }
        }))
        .await?;
    Ok(ch)
}

// ---------------------------------------------------------------------------------------------
// Clean-up
// ---------------------------------------------------------------------------------------------

/// Pids of processes this lab started, directly or not: those whose command line names the
/// private directory (containerd's `--config`, the shims' `-address`, runc's `--root`), those in
/// one of the network namespaces `netns` (inodes of the pods' namespaces, still pinned by their
/// files while this runs), and all their descendants. The sandbox processes need the last two:
/// they run in their own mount namespace, so nothing in /proc names our directory for them, and
/// once their shim is gone they are re-parented to init.
fn lab_processes(dir: &Path, netns: &BTreeSet<u64>) -> Vec<i32> {
    let me = std::process::id() as i32;
    let needle = dir.as_os_str().as_bytes();
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    // (pid, ppid, ours)
    let procs: Vec<(i32, i32, bool)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // The directory itself or a path inside it: not a prefix of another lab's directory
            // (trnode-PID-1 is a prefix of trnode-PID-12, whose containerd this would kill).
            let in_cmdline =
                cmdline.windows(needle.len() + 1).any(|w| w.starts_with(needle) && matches!(w[needle.len()], b'/' | 0)) || cmdline.ends_with(needle);
            let in_netns = fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| netns.contains(&m.ino()));
            Some((pid, ppid, in_cmdline || in_netns))
        })
        .collect();
    let mut ours: BTreeSet<i32> = procs.iter().filter(|p| p.2).map(|p| p.0).collect();
    loop {
        let before = ours.len();
        for &(pid, ppid, _) in &procs {
            if ours.contains(&ppid) {
                ours.insert(pid);
            }
        }
        if ours.len() == before {
            return ours.into_iter().collect();
        }
    }
}

/// The inodes of the namespaces behind `paths` that still exist.
fn netns_inodes<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> BTreeSet<u64> {
    paths.into_iter().filter_map(|p| fs::metadata(p).ok()).map(|m| m.ino()).collect()
}

/// True when `pid` runs (not a zombie) the sandbox command of [`SANDBOX_IMAGE`].
fn is_sandbox_process(pid: u32) -> bool {
    let running = fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')));
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    running && cmdline == b"/bin/busybox\x00sleep\x002147483647\x00"
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = text.lines().filter_map(|l| l.split(' ').nth(4)).map(unescape_mountinfo).filter(|p| p.starts_with(dir)).collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// True when `path` is a mount point. mountinfo names mounts by their resolved path (netns files
/// appear as /run/netns/..., /var/run being a symlink), so the parent is resolved first.
fn is_mount_point(path: &Path) -> bool {
    let resolved = match (path.parent().and_then(|p| fs::canonicalize(p).ok()), path.file_name()) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => path.to_path_buf(),
    };
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| unescape_mountinfo(m) == resolved)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

fn umount_detach(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path; MNT_DETACH only unlinks the mount from our view.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) == 0 }
}

fn kill_all(pids: &[i32], sig: libc::c_int) {
    for &pid in pids {
        // SAFETY: plain kill(2) on a pid that this lab started (see `lab_processes`).
        unsafe { libc::kill(pid, sig) };
    }
}

impl Drop for NodeLab {
    fn drop(&mut self) {
        let t0 = Instant::now();
        // 1. Pods, through the CRI, so that CNI DEL frees addresses and deletes the cni-* netns
        //    files and the shims exit by themselves. Also sandboxes this lab lost track of.
        if self.channel.is_some() && self.containerd.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None))) {
            let mut ids: BTreeSet<String> = self.pods.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
            ids.extend(self.try_sandbox_ids(CLEANUP_CALL_TIMEOUT).unwrap_or_default());
            self.sandbox_ids_seen.lock().unwrap_or_else(|p| p.into_inner()).extend(ids.iter().cloned());
            for id in ids {
                if let Ok((_, _, netns)) = self.sandbox_details(&id, CLEANUP_CALL_TIMEOUT)
                    && !netns.as_os_str().is_empty()
                {
                    self.pod_netns.lock().unwrap_or_else(|p| p.into_inner()).insert(netns);
                }
                if let Err(e) = self.stop_remove(&id, CLEANUP_CALL_TIMEOUT) {
                    eprintln!("warning: node lab: removing sandbox {id}: {e:#}");
                }
            }
        }
        self.channel = None;
        // 2. containerd: SIGTERM, then SIGKILL after 5 s.
        if let Some(mut c) = self.containerd.take() {
            kill_all(&[c.id() as i32], libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // 3. Whatever it left running (shims, runc, sandbox processes of pods not removed).
        let netns = netns_inodes(self.pod_netns.lock().unwrap_or_else(|p| p.into_inner()).iter());
        for _ in 0..50 {
            let pids = lab_processes(&self.dir, &netns);
            if pids.is_empty() {
                break;
            }
            kill_all(&pids, libc::SIGKILL);
            thread::sleep(Duration::from_millis(20));
        }
        // 4. Mounts under the private directory (sandbox shm, rootfs overlays) and the pods' CNI
        //    namespace files, which are bind mounts of nsfs in /var/run/netns.
        for m in mounts_under(&self.dir) {
            if !umount_detach(&m) {
                eprintln!("warning: node lab: could not unmount {}", m.display());
            }
        }
        for ns in self.pod_netns.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if is_mount_point(ns) {
                umount_detach(ns);
            }
            if ns.starts_with("/var/run/netns") || ns.starts_with("/run/netns") {
                let _ = fs::remove_file(ns);
            }
        }
        // 5. libcni's cached results for our sandboxes (gone after CNI DEL, left when
        //    containerd died first).
        let ids = self.sandbox_ids_seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for f in cni_cache_files(&self.network, &ids) {
            let _ = fs::remove_file(f);
        }
        // 6. The directory. The node namespace goes when the `netns` field is dropped, after this.
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("warning: node lab: could not remove {}: {e}", self.dir.display());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            eprintln!("warning: node lab clean-up took {:?}", t0.elapsed());
        }
    }
}

/// libcni's result cache files of a lab: `NETWORK-ID-eth0` for the pod network and
/// `cni-loopback-ID-lo` for the loopback network containerd adds to every sandbox.
fn cni_cache_files(network: &str, ids: &BTreeSet<String>) -> Vec<PathBuf> {
    let prefix = format!("{network}-");
    let Ok(entries) = fs::read_dir(CNI_RESULTS_DIR) else { return Vec::new() };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&prefix) || ids.iter().any(|id| name.contains(id.as_str()))
        })
        .map(|e| e.path())
        .collect()
}

/// What a dropped [`NodeLab`] must not have left behind.
#[derive(Clone, Debug)]
pub struct Leftovers {
    pub dir: PathBuf,
    pub node_netns: PathBuf,
    pub pod_netns: Vec<PathBuf>,
    pub sandbox_pids: Vec<u32>,
    pub sandbox_ids: Vec<String>,
    pub network: String,
}

impl Leftovers {
    /// Descriptions of everything still there: processes, mounts, namespace files, the
    /// directory, libcni cache files. Empty means clean.
    pub fn find(&self) -> Vec<String> {
        let mut found = Vec::new();
        // Namespace inodes are not compared here: once the namespaces are gone, the kernel hands
        // their numbers to new ones (lowest free first), likely another test's.
        let pids = lab_processes(&self.dir, &BTreeSet::new());
        let sandboxes = self.sandbox_pids.iter().filter(|&&p| is_sandbox_process(p)).map(|&p| p as i32);
        for pid in pids.into_iter().chain(sandboxes) {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push(format!("process {pid}: {}", String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
        for m in mounts_under(&self.dir) {
            found.push(format!("mount {}", m.display()));
        }
        for ns in self.pod_netns.iter().chain([&self.node_netns]) {
            if is_mount_point(ns) {
                found.push(format!("netns mount {}", ns.display()));
            }
            if ns.exists() {
                found.push(format!("netns file {}", ns.display()));
            }
        }
        if self.dir.exists() {
            found.push(format!("directory {}", self.dir.display()));
        }
        let ids: BTreeSet<String> = self.sandbox_ids.iter().cloned().collect();
        for f in cni_cache_files(&self.network, &ids) {
            found.push(format!("CNI cache {}", f.display()));
        }
        found
    }
}
