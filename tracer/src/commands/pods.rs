//! `tracer pods`: what the pod registry knows, from the source the user chose.

use std::io::Write as _;

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    cli::{OutputFormat, config::PodsCommandConfig},
    events::rfc3339,
    pods::{Pod, PodsFrom, layer::PodLayer},
};

#[derive(Serialize)]
struct JsonPod<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    ips: Vec<String>,
    netns: Option<u32>,
    host_network: bool,
    labels: &'a std::collections::BTreeMap<String, String>,
    created: Option<String>,
    source: String,
}

pub(crate) async fn run(config: PodsCommandConfig) -> anyhow::Result<()> {
    if config.pods.from == PodsFrom::None {
        return Err(crate::usage::UsageError("tracer pods needs a pod source: not --pods-from none".into()).into());
    }
    let layer = PodLayer::start(&config.pods).await?;
    if layer.description == "none" {
        anyhow::bail!("no pod source answered: give --cri-socket PATH, --kubeconfig PATH or --pods-from file:PATH");
    }
    eprintln!("tracer: pods from {}", layer.description);
    let selection = layer.selection();
    let pods: Vec<&Pod> = layer.registry().live().into_iter().filter(|p| selection.matches(p)).collect();
    let mut out = std::io::stdout().lock();
    let written = match config.output {
        OutputFormat::Json => {
            let json: Vec<JsonPod<'_>> = pods.iter().map(|p| to_json(p)).collect();
            serde_json::to_writer_pretty(&mut out, &json).map_err(std::io::Error::other).and_then(|()| writeln!(out))
        }
        OutputFormat::Table => write_table(&mut out, &pods),
    };
    match written.and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing output"),
    }
}

fn to_json(pod: &Pod) -> JsonPod<'_> {
    JsonPod {
        namespace: &pod.namespace,
        name: &pod.name,
        uid: &pod.uid,
        ips: pod.ips.iter().map(ToString::to_string).collect(),
        netns: pod.netns,
        host_network: pod.host_network,
        labels: &pod.labels,
        created: pod.created_unix_ns.map(rfc3339),
        source: pod.source.to_string(),
    }
}

fn write_table(out: &mut impl std::io::Write, pods: &[&Pod]) -> std::io::Result<()> {
    let names: Vec<String> = pods.iter().map(|p| p.full_name()).collect();
    let width = names.iter().map(String::len).max().unwrap_or(0).max("NAMESPACE/NAME".len());
    writeln!(out, "{:<width$}  {:<31}  {:<10}  {:<5}  {:<6}  LABELS", "NAMESPACE/NAME", "IPS", "NETNS", "HOST", "SOURCE")?;
    for (pod, name) in pods.iter().zip(&names) {
        let ips = if pod.ips.is_empty() { "-".to_string() } else { pod.ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(",") };
        let netns = pod.netns.map_or_else(|| "-".into(), |n| n.to_string());
        let labels =
            if pod.labels.is_empty() { "-".to_string() } else { pod.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",") };
        let host = if pod.host_network { "yes" } else { "no" };
        writeln!(out, "{name:<width$}  {ips:<31}  {netns:<10}  {host:<5}  {:<6}  {labels}", pod.source.as_str())?;
    }
    if pods.is_empty() {
        writeln!(out, "(no pods)")?;
    }
    Ok(())
}
