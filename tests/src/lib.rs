//! A small lab for the privileged integration tests: network namespaces, veth pairs, bridges,
//! traffic generators, a runner for the real `tracer` binary, a private tracefs instance that
//! shows what the kernel itself reports, and bpftool snapshots that prove clean-up.
//!
//! Every object the lab creates lives inside network namespaces it created itself, and every
//! guard removes what it made when it is dropped, also when a test panics.
//!
//! Tests that need root start with [`require_privileged`], which prints a loud `SKIPPED` line
//! (or panics when `TRACER_REQUIRE_PRIVILEGED=1`), so a skip never passes silently.
//!
//! The helpers are split by concern, and everything below is re-exported here, so a test
//! `use tracer_tests::*` and has them all:
//!
//! - [`privilege`]: the privilege gate, loud skips, what the kernel has, the cross-test lock;
//! - [`process`]: commands with timeouts, background children, servers that announce readiness;
//! - [`netns`]: unique names, address blocks, network namespaces, veth pairs;
//! - [`lab`]: ready-made topologies of namespaces; [`overlay`]: two nodes joined by VXLAN,
//!   Geneve or IPIP;
//! - [`traffic`]: the Python clients, servers and senders, and a lossy iptables rule;
//! - [`conntrack`]: filling a namespace's conntrack table;
//! - [`tracer_proc`]: running the tracer binary and reading what it wrote;
//! - [`events`]: checks of the tracer's JSON events;
//! - [`flow_table`]: parsers of the per-flow tables;
//! - [`time`]: the one RFC 3339 parser, its inverse, the clock;
//! - [`kernel_log`]: what the kernel itself reports, through private tracefs instances;
//! - [`bpf`]: bpftool snapshots that prove clean-up;
//! - [`fixtures`]: input files for the tracer;
//! - [`node`], [`kube_api`], [`kube_proxy`]: a CRI node with pods, a fake Kubernetes API, and
//!   kube-proxy's NAT chains (used through their own paths).

pub use serde_json::Value;

pub mod bpf;
pub mod conntrack;
pub mod events;
pub mod fixtures;
pub mod flow_table;
pub mod kernel_log;
pub mod lab;
pub mod netns;
pub mod overlay;
pub mod privilege;
pub mod process;
pub mod time;
pub mod tracer_proc;

pub mod kube_api;
pub mod kube_proxy;
pub mod node;
pub mod traffic;

pub use bpf::*;
pub use conntrack::*;
pub use events::*;
pub use fixtures::*;
pub use flow_table::*;
pub use kernel_log::*;
pub use lab::*;
pub use netns::*;
pub use privilege::*;
pub use process::*;
pub use time::*;
pub use tracer_proc::*;
pub use traffic::{TCP_ECHO_SERVER, TCP_SEND, TCP_SINK, TcpSink, Udp, lossy_input_rule, tcp_echo_server, tcp_send_argv};
