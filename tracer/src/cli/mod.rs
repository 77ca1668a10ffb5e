//! Command-line arguments (clap) and their validation into a [`config`] before any syscall.

pub(crate) mod config;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::probes::{self, CommandId, FamilyArgs};
pub(crate) use crate::{output::OutputFormat, probes::drops::HookChoice, usage::UsageError};

const ABOUT: &str = "eBPF network troubleshooting for Kubernetes nodes: packet drops with the kernel's \
reason, tied to flows, devices and network namespaces.";

const AFTER_HELP: &str = "\
Examples:
  tracer drops                          live drops on this node (Ctrl-C to stop)
  tracer drops --duration 30s -o json   30 seconds of drops as JSON Lines
  tracer drops --ip 10.244.1.7/32 --proto tcp --port 8080
  tracer drops --reason NETFILTER_DROP --reason NO_SOCKET
  tracer drops --pod shop/web-0         only this pod's drops, both ends named
  tracer mtu --pod shop/web-0           why its large packets hang: frag-needed sent, received, dropped
  tracer watch --pod shop/web-0         every probe in one timeline
  tracer diagnose --pod shop/web-0      run everything for 10s, then say what is wrong
  tracer pods                           the pods this node runs, with IPs and netns
  tracer check                          what this kernel supports

Exit codes: 0 success, 1 failure at run time, 2 bad usage or input (nothing attached).";

#[derive(Debug, Parser)]
#[command(name = "tracer", version, about = ABOUT, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// A session of one family with its own flags (`drops`, `nat`, `mtu`)
    #[command(flatten)]
    Family(FamilyCommand),
    /// TCP retransmits, resets and failed connects, live; --top shows a refreshing per-flow table
    #[command(after_help = RETRANS_HELP)]
    Retrans(RetransArgs),
    /// Every probe at once (drops, retransmits/resets, NAT, MTU) in one timeline; --by-flow
    /// tells each connection's story
    #[command(after_help = WATCH_HELP)]
    Watch(WatchArgs),
    /// Runs every probe for --duration (default 10s), then says what is wrong and where, with
    /// the kernel's evidence
    #[command(after_help = DIAGNOSE_HELP)]
    Diagnose(DiagnoseArgs),
    /// Long-running: every probe, Prometheus metrics on --metrics ADDR, events as JSON Lines
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// kubectl-trace-style Jobs: a tracer command on one node, as a least-privilege Job
    Job(JobArgs),
    /// The namespace, RBAC and DaemonSet that install tracer on a cluster, for this version
    Install(InstallArgs),
    /// The pods this node knows: namespace/name, IPs, network namespace, where the data came from
    #[command(after_help = PODS_HELP)]
    Pods(PodsArgs),
    /// What this kernel supports and which commands will work (exit 1 if `drops` cannot run)
    Check(CheckArgs),
}

/// The commands that run one family with its own flags: the common tracing options, then the
/// family's (`probes::FAMILY::Args`). A family with a command of its own adds its variant here and
/// its arm in [`FamilyCommand::into_config`].
#[derive(Debug, Subcommand)]
pub(crate) enum FamilyCommand {
    /// Packet drops: kernel drop reason, kernel location, flow, device, network namespace
    #[command(after_help = DROPS_HELP)]
    Drops(FamilyCommandArgs<probes::drops::Args>),
    /// Conntrack NAT rewrites (original flow -> translated flow), and whether a reply ever came
    #[command(after_help = NAT_HELP)]
    Nat(FamilyCommandArgs<probes::nat::Args>),
    /// MTU failures: frag-needed / packet-too-big sent, received or dropped; PKT_TOO_BIG drops;
    /// oversize packets; device MTU mismatches
    #[command(after_help = MTU_HELP)]
    Mtu(FamilyCommandArgs<probes::mtu::Args>),
}

impl FamilyCommand {
    /// The checked config: which command, the common options, the family's options.
    pub(crate) fn into_config(self) -> Result<config::FamilyCommandConfig, UsageError> {
        match self {
            Self::Drops(args) => args.into_config(CommandId::Drops),
            Self::Nat(args) => args.into_config(CommandId::Nat),
            Self::Mtu(args) => args.into_config(CommandId::Mtu),
        }
    }
}

/// A family command's arguments: what every tracing command takes, then the family's own.
#[derive(Debug, Args)]
pub(crate) struct FamilyCommandArgs<F: FamilyArgs> {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub family: F,
}

const RETRANS_HELP: &str = "\
Each retransmitted segment (or SYN-ACK) is one `retransmit` event with the socket's state and
the flow's running count; resets sent and received are `reset` events; a connect that gives up
(SYN_SENT -> CLOSE: no answer, or refused) is a `connect_fail` with how long it tried and how
many SYNs it sent (0: it failed on this node, e.g. no free source port). SYNs retransmitted with
no reply look like this:

  retransmit  SYN_SENT  10.244.1.7:51234 (shop/web-0) -> 10.96.0.10:53  #1, #2, #3 ...
  connect_fail  SYN_SENT  ... gave up after 7.0s

--top counts in the kernel instead of streaming (a storm costs nothing to print) and shows a
per-flow table every --interval, sorted by retransmits; on a terminal it redraws in place,
otherwise it prints plain snapshots. With --duration both modes end with a per-flow summary.

Examples:
  tracer retrans --pod shop/web-0
  tracer retrans -o json --port 443 --duration 30s
  tracer retrans --top --namespace shop
  tracer retrans --top --interval 5s --duration 1m > retrans.txt";

const NAT_HELP: &str = "\
Each NATed connection (a Service's ClusterIP DNATed to a backend, masquerade, NodePort) is shown
when conntrack first carries it out of a device (state new), and again when the backend's reply
is seen (reply) and when the connection is assured. A connection whose reply does not come within
--reply-timeout is shown once more with state no_reply: the Service resolved to a backend that
did not answer.

The Service a connection was addressed to is named (namespace/name) from the Kubernetes API
whenever it is configured (the Services of all namespaces: list and watch on services), or from
a --pods-from file saved with `kubectl get pods,services -A -o json`.

Examples:
  tracer nat --pod shop/web-0
  tracer nat --pods-from file:cluster.json   # from `kubectl get pods,services -A -o json`
  tracer nat -o json --ip 10.96.0.0/12 --duration 30s
  tracer nat --reply-timeout 5s --port 53";

const MTU_HELP: &str = "\
Large packets that hang while small ones work: a hop with a smaller MTU drops them and sends
frag-needed (ICMP 3/4) or packet-too-big (ICMPv6 2) back, which is lost or filtered. Events
(kind mtu, `event`):
  frag_needed_sent      this node sent one (icmp:icmp_send; ICMPv6 at tc egress of a traced device)
  frag_needed_received  one arrived on a traced device (tc ingress)
  frag_needed_dropped   one was dropped here (filtered ICMP: the sender never learns)
  too_big_drop          a packet dropped with reason PKT_TOO_BIG
  oversize              a packet longer than the MTU of the traced device it was on
Each names the flow whose packets are too big (for ICMP errors, the packet quoted inside them),
its pods, the device and the MTU. At start, stderr lists the MTUs of the devices and flags
mismatches (a pod veth larger than the tunnel, a tunnel too large for the uplink).

tc programs go on every veth and tunnel device of tracer's network namespace, including those
created while it runs (a pod that starts; stderr says so, and forgets devices that go), or on
the devices given with --iface (NETNS:DEV for another namespace: a name in /var/run/netns or a
path such as /proc/PID/ns/net). They are removed on exit.

Examples:
  tracer mtu --pod shop/web-0
  tracer mtu -o json --duration 30s
  tracer mtu --iface eth0 --iface flannel.1
  tracer mtu --iface node1:veth12ab --ip 10.244.0.0/16";

const PODS_HELP: &str = "\
Pod names come from the container runtime (CRI: containerd's socket by default), the Kubernetes
API (the pods of this node: --node-name, else NODE_NAME, else the host name; in-cluster config
or --kubeconfig), or a file saved with `kubectl get pods -A -o json`. `auto` tries CRI, then the
API, and says on stderr which one it used.

Examples:
  tracer pods
  tracer pods -o json --namespace shop
  tracer pods --pods-from file:pods.json
  tracer pods --cri-socket /run/k3s/containerd/containerd.sock";

/// Where pod names come from; shared by `pods` and every tracing command.
#[derive(Debug, Args)]
pub(crate) struct PodSourceArgs {
    /// Where pod names come from: auto (CRI, then the Kubernetes API), cri, kube,
    /// file:PATH (`kubectl get pods -A -o json` output), or none
    #[arg(long, value_name = "SOURCE", default_value = "auto", overrides_with = "pods_from")]
    pub pods_from: String,
    /// The container runtime's CRI socket [default: /run/containerd/containerd.sock]
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<PathBuf>,
    /// Kubeconfig for the Kubernetes API source [default: in-cluster, KUBECONFIG, ~/.kube/config]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name in Kubernetes: whose pods the API source lists, and serve's `node` label
    /// [default: NODE_NAME, else the host name]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
}

/// Which pods: shared by `pods` and every tracing command.
#[derive(Debug, Args)]
pub(crate) struct PodSelectArgs {
    /// Only events whose source or destination is this pod, or seen in its network namespace
    /// (NAMESPACE/NAME; repeatable)
    #[arg(long = "pod", value_name = "NS/NAME")]
    pub pods: Vec<String>,
    /// Only events touching pods of this namespace
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Only events touching pods with these labels (KEY=VALUE[,KEY=VALUE...])
    #[arg(long, value_name = "K=V,...")]
    pub selector: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct PodsArgs {
    #[command(flatten)]
    pub source: PodSourceArgs,
    #[command(flatten)]
    pub select: PodSelectArgs,
    /// Output format: table, or json (one JSON array)
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

const DROPS_HELP: &str = "\
By default every drop reason is shown except NOT_SPECIFIED: that is what kfree_skb() reports
when the caller gives no reason, and on a busy node it is mostly routine frees that are not
packet loss. --all-reasons shows it too; --reason picks exact reasons. On kernels older than 5.17
(no drop reasons) every drop is shown.

Examples:
  tracer drops --duration 10s
  tracer drops -o json --proto udp --port 53
  tracer drops --ip 10.0.0.0/8 --ip fd00::/8 --all-reasons
  tracer drops --reason NETFILTER_DROP,NO_SOCKET --count 100
  tracer drops --pod shop/web-0 --pod shop/web-1
  tracer drops --namespace shop --selector app=web --wait";

/// Options shared by every tracing command (docs/json.md, "Commands").
#[derive(Debug, Args)]
pub(crate) struct TraceArgs {
    #[command(flatten)]
    pub select: PodSelectArgs,
    /// With --pod/--namespace/--selector: wait for matching pods to appear instead of failing
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub source: PodSourceArgs,
    /// Only events whose source or destination is in CIDR (repeatable, up to 8)
    #[arg(long = "ip", value_name = "CIDR")]
    pub ip: Vec<String>,
    /// Only events with this source or destination port
    #[arg(long, value_name = "N")]
    pub port: Option<String>,
    /// Only this protocol
    #[arg(long, value_enum)]
    pub proto: Option<Proto>,
    /// Stop after DUR (e.g. 500ms, 10s, 2m, 1h); default: until Ctrl-C or SIGTERM
    #[arg(long, value_name = "DUR")]
    pub duration: Option<String>,
    /// Stop after N events
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Output format: table, or json (JSON Lines, one object per event, flushed per event)
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Read kernel types from this BTF file instead of /sys/kernel/btf/vmlinux
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,
    /// Size of the kernel->user ring buffer (power of two, at least 4K; e.g. 4096, 256K, 8M)
    #[arg(long, value_name = "SIZE", default_value = "4M")]
    pub ring_buffer: String,
    /// Also take UDP to PORT as VXLAN, besides 4789 and 8472 (repeatable, up to 2): packets
    /// inside are shown and filtered by their pod flow
    #[arg(long = "vxlan-port", value_name = "PORT")]
    pub vxlan_ports: Vec<String>,
    /// Also take UDP to PORT as Geneve, besides 6081 (repeatable, up to 3)
    #[arg(long = "geneve-port", value_name = "PORT")]
    pub geneve_ports: Vec<String>,
    #[command(flatten)]
    pub scope: NodeScopeArgs,
}

/// The node scope of a tracing command: which network namespaces its events may come from.
#[derive(Debug, Args)]
pub(crate) struct NodeScopeArgs {
    /// Only events seen in this network namespace: a name in /var/run/netns, a path such as
    /// /proc/PID/ns/net, or an inode number (repeatable; filtered in the kernel)
    #[arg(long = "netns", value_name = "NAME|PATH|INODE")]
    pub netns: Vec<String>,
    /// Only events of this node: tracer's own network namespace and its pods' (from the CRI,
    /// followed as pods come and go). For nodes that share one kernel: kind, k3d, minikube
    #[arg(long)]
    pub this_node: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RetransArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Show a refreshing per-flow table (counted in the kernel) instead of one line per event
    #[arg(long)]
    pub top: bool,
    /// How often --top refreshes (e.g. 500ms, 2s)
    #[arg(long, value_name = "DUR", requires = "top")]
    pub interval: Option<String>,
}

/// What `watch`, `diagnose` and `serve` add to the common options: which families, and the NAT
/// and MTU probes' own.
#[derive(Debug, Args)]
pub(crate) struct AllProbesArgs {
    /// Only these probe families (comma-separated or repeated): drops, tcp, nat, mtu
    /// [default: all]
    #[arg(long = "probes", value_name = "NAME,...", value_delimiter = ',')]
    pub probes: Vec<String>,
    /// Mark NATed connections with no reply after this long (e.g. 1s, 500ms)
    #[arg(long, value_name = "DUR", default_value = "3s")]
    pub reply_timeout: String,
    /// Attach the MTU probe's tc programs to this device ([NETNS:]DEV; repeatable) instead of
    /// every veth and tunnel device of tracer's own network namespace (also those created later)
    #[arg(long = "iface", value_name = "[NETNS:]DEV")]
    pub ifaces: Vec<String>,
    /// Where the NAT probe checks each packet's conntrack entry: auto (watch and serve: tc where
    /// the MTU probe's classifiers cover this node: no --iface, a pod veth or tunnel in tracer's
    /// namespace, else xmit; diagnose: xmit), tc (inside those classifiers: once a packet, on the
    /// pod veths and tunnels of tracer's namespace), or xmit (every transmit of every namespace:
    /// costs every packet)
    #[arg(long, value_enum, value_name = "HOOK", default_value_t = crate::probes::nat::Hook::Auto)]
    pub nat_hook: crate::probes::nat::Hook,
    #[command(flatten)]
    pub budget: crate::probes::drops::BudgetArgs,
}

const WATCH_HELP: &str = "\
All probe families at once, in one stream ordered as the kernel produced the events: drops
(with the kernel's reason), TCP retransmits, resets and failed connects, NAT rewrites (and
connections with no reply), MTU failures. A probe this kernel cannot run is skipped with a
warning. --by-flow collects the events instead and, when tracing stops, prints each
connection's story from its first event to its last: the Service address and the backend it
was DNATed to are one connection.

Examples:
  tracer watch --pod shop/web-0
  tracer watch -o json --duration 30s > timeline.jsonl
  tracer watch --by-flow --duration 20s --namespace shop
  tracer watch --iface eth0 --iface flannel.1 --proto tcp
  tracer watch --probes drops,nat --pod shop/web-0   # only these families
  tracer watch --nat-hook xmit   # NAT in every namespace, not only where the node's pods leave";

const DIAGNOSE_HELP: &str = "\
Runs every probe for --duration, shows its progress on a terminal, then prints findings: a code,
a severity, one sentence to act on, the pods and flows concerned and the evidence (event counts,
drop reasons and locations, devices and MTUs, sysctls read from the namespace involved). A
finding needs evidence from this run: a healthy node gets `no problems found`. The codes and
what raises each are in docs/FINDINGS.md. Reproduce the problem (run the failing request)
while it runs.

Examples:
  tracer diagnose --pod shop/web-0
  tracer diagnose --duration 30s -o json
  tracer diagnose --namespace shop --reply-timeout 2s
  tracer diagnose --probes drops,tcp --pod shop/web-0
  tracer diagnose --pods-from file:cluster.json   # `kubectl get pods,services -A -o json`";

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub probes: AllProbesArgs,
    /// Group events per connection (printed when tracing stops) instead of one stream
    #[arg(long)]
    pub by_flow: bool,
    #[command(flatten)]
    pub from: FromArgs,
}

/// `--from`: read recordings (`watch -o json` output) instead of tracing.
#[derive(Debug, Args, Default)]
pub(crate) struct FromArgs {
    /// Read this recording (the output of `tracer watch -o json`; `-` = stdin) instead of
    /// tracing: no BPF, no root. Repeat for several nodes: one merged story
    #[arg(long = "from", value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

const SERVE_HELP: &str = "\
Runs every probe until stopped (Ctrl-C, SIGTERM) and serves Prometheus metrics (text format
0.0.4) on --metrics, for a DaemonSet on every node: drops by reason, kernel function and pod,
drops a storm kept from the ring buffer (tracer_drops_undelivered_total), retransmits, resets
and failed connects by pod, NAT connections without reply by pod and Service, MTU events,
events seen and lost per probe, whether each probe runs, and tracer_build_info. Every series
has a `node` label (--node-name, else NODE_NAME, else the host name). Events also go to stdout
as JSON Lines unless --quiet.

Labels are bounded: a metric keeps at most --max-series label sets as they are; past that, new
ones are counted with pod=\"other\" (and backend_pod), keeping reason, function, direction,
event, namespace and Service; past --max-series of those, namespace and service are \"other\"
too (tracer_metric_series_capped_total counts such events). A label set not counted for
--series-idle is forgotten and its series leaves the output, so pod churn does not fill the
bound for good.

Examples:
  tracer serve                                   # metrics on 127.0.0.1:9464
  tracer serve --metrics 0.0.0.0:9464 --quiet    # in a DaemonSet (tracer install print)
  tracer serve --probes drops,tcp                # only these families
  curl -s localhost:9464/metrics | grep tracer_drops_total";

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub probes: AllProbesArgs,
    /// Address to serve metrics on (IP:PORT)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub metrics: String,
    /// Label sets a metric keeps as they are; past that, new ones are counted with pod="other"
    /// (then namespace="other"); reason, function, direction and event are always kept
    #[arg(long, value_name = "N", default_value_t = 2000)]
    pub max_series: usize,
    /// Forget a label set (and drop its series) when no event counted it for this long
    #[arg(long, value_name = "DUR", default_value = "10m")]
    pub series_idle: String,
    /// Do not print events on stdout (metrics only)
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    #[command(subcommand)]
    pub action: JobAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum JobAction {
    /// Print the Job manifest (YAML) that runs a tracer command on a node; needs no cluster
    #[command(after_help = JOB_RENDER_HELP)]
    Render(JobRenderArgs),
    /// Create the Job on the cluster, follow its output until it ends; Ctrl-C deletes it
    #[command(after_help = JOB_RUN_HELP)]
    Run(JobRunArgs),
    /// Follow the output of a tracer Job, pretty-printed
    #[command(after_help = JOB_LOGS_HELP)]
    Logs(JobLogsArgs),
    /// The tracer Jobs of a namespace: node, command, state, age
    List(JobListArgs),
    /// Delete tracer Jobs (and their pods)
    Delete(JobDeleteArgs),
}

const JOB_RENDER_HELP: &str = "\
The Job is pinned to --node (Linux, amd64 or arm64), runs the command with `-o json --duration
DUR` (check and pods as they are), ends by itself (activeDeadlineSeconds = DUR + 120 s), is
deleted an hour after it finished, tolerates every taint, and runs without `privileged`: only
the capabilities its command needs (why each, in the README), a read-only root filesystem,
hostPID, the CRI socket its command uses mounted read-only (--cri-socket: containerd's by
default; k3s and RKE2 /run/k3s/containerd/containerd.sock, CRI-O /var/run/crio/crio.sock; none
with --pods-from kube), and hostNetwork for mtu, watch, diagnose, serve and check (tc on the
node's devices). Those capabilities are node-root-equivalent, though less than `privileged`:
whoever may create such a Job owns the node. The namespace (default `tracer`, from `tracer install
print`) needs the ServiceAccount `tracer` and PodSecurity level `privileged`.

The image is --image, else $TRACER_IMAGE, else the one this tracer was built for; its tag should be
this tracer's version (a warning says when it is not). It is pulled IfNotPresent.

Examples:
  tracer job render --node node-1 -- drops --pod shop/web-0
  tracer job render --node node-1 -- drops --cri-socket /run/k3s/containerd/containerd.sock
  tracer job render --node node-1 --duration 2m -- diagnose --namespace shop | kubectl apply -f -";

const JOB_RUN_HELP: &str = "\
The Job is the one `tracer job render` prints, created through the Kubernetes API (kubeconfig:
--kubeconfig, in-cluster, KUBECONFIG or ~/.kube/config; --context picks one of its contexts).
With --pod the Job runs on that pod's node and traces that pod (the command gets `--pod NS/NAME`
unless it has its own --pod, --namespace or --selector); finding a pod outside the Job's
namespace needs `get pods` there (ClusterRole tracer-cluster-reader, docs/kubernetes.md).

While the pod starts, its progress is printed. A pod that cannot start fails the run at once
(exit 1, the Job deleted) with the reason Kubernetes gives: FailedCreate (no ServiceAccount
`tracer`, PodSecurity refusing hostPID and capabilities), FailedMount (no CRI socket at that
path: pass --cri-socket), FailedScheduling, an image that cannot be pulled, a node that refuses
the pod (another OS or architecture).

The Job's output is printed as it comes (events as a timeline, diagnose as findings, check and
pods as they print), the tracer's messages on stderr. The exit code is the tracer's in the Job.
Ctrl-C deletes the Job.

With several --node and --pod (a pod selects its node), or --all-nodes, there is one Job per
node, and their events are one timeline, the node first (in time order within a second); each
node's messages on stderr start with its name; Ctrl-C deletes every Job. On nodes that share a
kernel (kind, k3d, minikube) give the command --this-node. With -- diagnose each node's Job
records, and the findings are made here across the nodes (a cross-node finding where one node's
connection is dropped on another). A Job that ran to its end stays an hour (its logs too):
`tracer job logs NAME`.

Examples:
  tracer job run --pod shop/web-0 -- drops
  tracer job run --node node-1 --duration 30s -- diagnose
  tracer job run --node node-1 -- check
  tracer job run --node node-1 -- pods -o json
  tracer job run --context prod --node node-1 -- drops --cri-socket /var/run/crio/crio.sock
  tracer job run --node node-1 --detach -- retrans && tracer job logs tracer-retrans-node-1-x7k2p
  tracer job run --pod shop/web-0 --pod shop/db-0 -- drops --this-node
  tracer job run --all-nodes --duration 30s -- watch
  tracer job run --pod shop/client --pod shop/web-0 --duration 30s -- diagnose --this-node";

const JOB_LOGS_HELP: &str = "\
Prints the Job's JSON lines as a timeline (or as they are with -o json), following them until
the Job's tracer exits.

Examples:
  tracer job logs tracer-drops-node-1-x7k2p
  tracer job logs tracer-drops-node-1-x7k2p -o json | jq .reason";

/// The image of tracer's pods: `job render/run`, `install print`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ImageArgs {
    /// Container image with the tracer binary [default: $TRACER_IMAGE, else the image this
    /// tracer was built for, tagged with its version]
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
}

/// Where and what a Job runs: `job render` and `job run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct JobSpecArgs {
    /// The node to run on (repeatable: one Job per node)
    #[arg(long = "node", value_name = "NAME", required_unless_present_any = ["pods", "all_nodes"])]
    pub nodes: Vec<String>,
    /// Run on the node of this pod, tracing it (repeatable; `job run` only: it asks the API)
    #[arg(long = "pod", value_name = "NS/NAME")]
    pub pods: Vec<String>,
    /// One Job on every Linux node of the cluster (`job run` only: it lists the nodes)
    #[arg(long, conflicts_with_all = ["nodes", "pods"])]
    pub all_nodes: bool,
    /// Namespace of the Job (its ServiceAccount `tracer` must exist there)
    #[arg(long, value_name = "NS", default_value = JOB_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub image: ImageArgs,
    /// How long the trace runs
    #[arg(long, value_name = "DUR", default_value = "60s")]
    pub duration: String,
    /// Job name [default: tracer-COMMAND-NODE, plus a random suffix for `job run`]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The tracer command, after `--` (e.g. `-- drops --pod shop/web-0`, `-- check`)
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The namespace tracer's Jobs and ServiceAccount live in unless told otherwise.
pub(crate) const JOB_NAMESPACE: &str = crate::job::NAMESPACE;

#[derive(Debug, Args)]
pub(crate) struct JobRenderArgs {
    #[command(flatten)]
    pub spec: JobSpecArgs,
}

/// How to reach the API (job run/logs/list/delete).
#[derive(Debug, Args)]
pub(crate) struct KubeApiArgs {
    /// Kubeconfig [default: in-cluster, KUBECONFIG, ~/.kube/config]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use, as kubectl's --context [default: its current-context]
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct JobRunArgs {
    #[command(flatten)]
    pub spec: JobSpecArgs,
    #[command(flatten)]
    pub api: KubeApiArgs,
    /// How to print the Job's output: a timeline or its JSON lines as they are
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Create the Job, print its name and return (follow later with `job logs`)
    #[arg(long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub(crate) struct JobLogsArgs {
    /// The Job's name (as `job run` or `job list` printed it)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Namespace of the Job
    #[arg(long, value_name = "NS", default_value = JOB_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub api: KubeApiArgs,
    /// How to print: a timeline or the JSON lines as they are
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct JobListArgs {
    /// Namespace of the Jobs
    #[arg(long, value_name = "NS", default_value = JOB_NAMESPACE, conflicts_with = "all_namespaces")]
    pub namespace: String,
    /// tracer Jobs of every namespace
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub api: KubeApiArgs,
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct JobDeleteArgs {
    /// Names of the Jobs
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
    /// Namespace of the Jobs
    #[arg(long, value_name = "NS", default_value = JOB_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub api: KubeApiArgs,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    #[command(subcommand)]
    pub action: InstallAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InstallAction {
    /// Print the manifests (YAML) that install tracer: namespace, RBAC, DaemonSet; needs no cluster
    #[command(after_help = INSTALL_PRINT_HELP)]
    Print(InstallPrintArgs),
}

const INSTALL_PRINT_HELP: &str = "\
Prints, for this tracer's version and image, what `kubectl apply -f -` needs to install it:
  - the namespace `tracer`, PodSecurity level `privileged` (its pods need hostPID and
    capabilities that `baseline` refuses);
  - the ServiceAccount `tracer`, allowed to read pods and Services, nothing else;
  - the Role `tracer-job-user` (run `tracer job` in namespace tracer) and the ClusterRole
    `tracer-cluster-reader` (find the pod of `job run --pod NS/NAME` in any namespace, `job list
    -A`), bound only to the groups given with --job-user-group;
  - the DaemonSet running `tracer serve` on every Linux node (amd64, arm64): Prometheus metrics on
    port 9464 of each node, liveness and readiness on /healthz;
  - with --podmonitor, a prometheus-operator PodMonitor for those metrics.
Nothing is sent to a cluster. The capabilities of the DaemonSet and of tracer's Jobs are
node-root-equivalent, though less than `privileged`: whoever may create Jobs in namespace tracer
owns the nodes, so bind tracer-job-user only to people you would give root on them.
Uninstall: `tracer install print --uninstall` prints the `kubectl delete` line.

Examples:
  tracer install print | kubectl apply -f -
  tracer install print --cri-socket /run/k3s/containerd/containerd.sock | kubectl apply -f -
  tracer install print --cri-socket /var/run/crio/crio.sock | kubectl apply -f -
  tracer install print --podmonitor --job-user-group sre | kubectl apply -f -
  tracer install print --no-daemonset --job-user-group sre | kubectl apply -f -
  tracer install print --image registry.example/tracer:1.2.3 > tracer.yaml
  tracer install print --this-node | kubectl apply -f -     # kind, k3d, minikube: nodes share a kernel
  tracer install print --uninstall | sh";

#[derive(Debug, Args)]
pub(crate) struct InstallPrintArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The nodes' CRI socket, which the DaemonSet mounts to name pods [default:
    /// /run/containerd/containerd.sock; k3s and RKE2: /run/k3s/containerd/containerd.sock; CRI-O:
    /// /var/run/crio/crio.sock]
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<String>,
    /// Leave the DaemonSet out: only what `tracer job` needs
    #[arg(long)]
    pub no_daemonset: bool,
    /// Add a PodMonitor (prometheus-operator's monitoring.coreos.com/v1) for the DaemonSet's metrics
    #[arg(long, conflicts_with = "no_daemonset")]
    pub podmonitor: bool,
    /// Bind tracer-job-user (in namespace tracer) and tracer-cluster-reader to this group
    /// (repeatable)
    #[arg(long = "job-user-group", value_name = "GROUP")]
    pub job_user_groups: Vec<String>,
    /// Print the `kubectl delete` line that removes everything `install print` creates
    #[arg(long)]
    pub uninstall: bool,
    /// The DaemonSet's tracers report their own node only (`serve --this-node`): for clusters
    /// whose nodes share one kernel (kind, k3d, minikube with several nodes)
    #[arg(long)]
    pub this_node: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DiagnoseArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    #[command(flatten)]
    pub probes: AllProbesArgs,
    #[command(flatten)]
    pub from: FromArgs,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// Output format
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Read kernel types from this BTF file instead of /sys/kernel/btf/vmlinux
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Proto {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl Proto {
    pub(crate) const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmp => 1,
            Self::Icmpv6 => 58,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        kernel::features,
        probes::{FamilyId, FamilyOptions, describe_metrics, family_needs, new_family},
    };

    /// ARCHITECTURE.md's recipe, walked for every family of the registry: each place the recipe
    /// names is filled in, so a family that skipped one fails here, not on a cluster.
    #[test]
    fn the_recipe_places_are_filled_for_every_family() {
        use clap::Parser as _;
        let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tracer/ is in the workspace");
        let options = FamilyOptions::default();
        for id in FamilyId::ALL {
            let name = id.name();
            // tracer-common/src/lib.rs: its record kinds lead back to it.
            assert!(!id.kinds().is_empty(), "{name}: no record kinds");
            for kind in id.kinds() {
                assert_eq!(FamilyId::of_kind(*kind), Some(id), "{name}: kind {kind}");
            }
            // probes/mod.rs: the registry builds it, and what it needs is declared (a Job of its
            // command gets these capabilities, check_capabilities checks them).
            let family = new_family(id, &options);
            assert_eq!(family.id(), id);
            assert!(family_needs(id).iter().any(|n| n.cap == features::BPF.cap), "{name}: needs no CAP_BPF?");
            describe_metrics(id);
            // Its check row names its command, even when it could not plan.
            let row = family.check_row(&Err("not planned".into()), false, &BTreeMap::new());
            assert_eq!(row.command, id.command(), "{name}: check row");
            assert!(!row.runs);
            // cli/mod.rs: its command parses (with every flag at its default).
            let command = CommandId::parse(id.command()).unwrap_or_else(|| panic!("{name} has no CommandId"));
            assert_eq!(command.families(), [id]);
            let parsed = Cli::try_parse_from(["tracer", id.command()]);
            assert!(parsed.is_ok(), "{name}: `tracer {}` does not parse: {:?}", id.command(), parsed.err());
            // tests/: its integration test binary, which `cargo xtask vm-test` runs by this name.
            let test = workspace.join("tests/tests").join(format!("{}.rs", id.command()));
            assert!(test.is_file(), "{name}: no {}", test.display());
        }
    }
}
