//! `tracer job run` on several nodes (`--node` and `--pod` repeated, `--all-nodes`): one Job per
//! node, every log followed at once, and one merged live timeline in which each line names its
//! node. Ctrl-C deletes every Job the run made. With `-- diagnose`, each node's Job records
//! (`watch -o json`) for the duration and the client keeps each node's recording, to be
//! diagnosed across nodes by one call, [`diagnose_recordings`], as `diagnose --from` does.

use std::{
    collections::BTreeMap,
    io::{self, Write as _},
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use serde_json::Value;
use tokio::{signal::unix::Signal, sync::mpsc};

use super::{DELETE_TIMEOUT, Follow, JobError, api_code, api_error, interrupted, prints_as_is, random_suffix};
use crate::{
    cli::{OutputFormat, config::JobRequest},
    diagnose::{recordings::Recordings, report_text},
    job::{self, DEADLINE_SLACK_S, JobSpec},
    output::{json::event_text, table::TIMELINE_HEADER, write_line},
};

/// How long an event of one node waits for an older one of another node before it is printed:
/// logs of different nodes arrive with different delays, and within this window the timeline is
/// in time order (beyond it, in the order the lines arrived).
const MERGE_WINDOW: Duration = Duration::from_millis(1000);

/// One line of one node's Job log.
#[derive(Debug)]
pub(in crate::commands) struct NodeLine {
    /// The node the Job runs on.
    pub node: Arc<str>,
    pub line: String,
}

/// `job run` with Jobs on several nodes.
pub(in crate::commands) struct Several<'a> {
    pub client: &'a Client,
    pub request: &'a JobRequest,
    pub output: OutputFormat,
    pub detach: bool,
}

impl Several<'_> {
    /// Creates one Job per node of `nodes` (with the target pods there), follows them all,
    /// prints the merged timeline and returns when every Job's tracer has ended (exit 1 if one
    /// failed, each failure said with its node), or deletes them all on Ctrl-C or SIGTERM.
    pub(in crate::commands) async fn run(
        self,
        nodes: Vec<(String, Vec<String>)>,
        sigint: &mut Signal,
        sigterm: &mut Signal,
    ) -> anyhow::Result<ExitCode> {
        let names: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
        let diagnose = self.request.command == "diagnose";
        let suffix = self.request.name.is_none().then(random_suffix);
        let specs: Vec<JobSpec> = nodes
            .iter()
            .map(|(node, pods)| {
                let mut spec = self.request.spec(node, pods, suffix.as_deref(), true);
                if diagnose {
                    // Each node records (`watch -o json` is a recording); the findings are made
                    // here, across the nodes.
                    spec.args[0] = "watch".into();
                }
                spec
            })
            .collect();
        let namespace = self.request.namespace.as_str();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let mut made: Vec<String> = Vec::new();
        for spec in &specs {
            if let Err(e) = jobs.create(&PostParams::default(), &job::manifest(spec)).await {
                // None is left half-made: the Jobs already created go.
                for name in &made {
                    let _ = tokio::time::timeout(DELETE_TIMEOUT, jobs.delete(name, &DeleteParams::background())).await;
                }
                let name = spec.name.clone();
                return Err(match api_code(&e) {
                    Some(409) => JobError::Exists { namespace: namespace.into(), name },
                    _ => api_error("creating job", namespace, &name, &e),
                }
                .into());
            }
            made.push(spec.name.clone());
        }
        if self.detach {
            for spec in &specs {
                eprintln!("tracer: job {namespace}/{} created on node {}; follow it with `tracer job logs {}`", spec.name, spec.node, spec.name);
                println!("{}", spec.name);
            }
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("tracer: {} jobs created in {namespace} on nodes {} (Ctrl-C deletes them all)", specs.len(), names.join(", "));
        let start_bound = self.request.duration + Duration::from_secs(DEADLINE_SLACK_S);
        let as_is = prints_as_is(&specs[0].args);
        let (tx, rx) = mpsc::unbounded_channel();
        let follows = futures::future::join_all(specs.iter().map(|spec| {
            let follow =
                Follow { client: self.client, namespace, name: &spec.name, output: self.output, as_is, created: true, lines: Some(tx.clone()) };
            // The follower (and its sender) is dropped when its Job ends: the merger ends after
            // the last one.
            async move { (spec.node.as_str(), follow.run(start_bound).await) }
        }));
        drop(tx);
        let mode = if diagnose {
            Mode::Record
        } else if as_is {
            Mode::AsIs
        } else {
            Mode::Timeline(self.output)
        };
        let mut merger = Merger::new(mode, &names);
        let work = async { tokio::join!(follows, merger.run(rx)) };
        let (results, merged) = tokio::select! {
            done = work => done,
            _ = sigint.recv() => return interrupted_all(&jobs, namespace, &made).await,
            _ = sigterm.recv() => return interrupted_all(&jobs, namespace, &made).await,
        };
        merged?;
        let mut failed = 0;
        for (node, result) in &results {
            if let Err(e) = result {
                failed += 1;
                eprintln!("tracer: error: node {node}: {e:#}");
            }
        }
        if failed > 0 {
            anyhow::bail!("{failed} of {} jobs failed (above); the others ran to their end", results.len());
        }
        if diagnose {
            return diagnose_recordings(&merger.recordings, self.output);
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Diagnoses the recordings of several nodes (each node's Job log: `watch -o json`) as `tracer
/// diagnose --from FILE...` does, from memory: the one place the cross-node diagnosis plugs into
/// `job run`.
fn diagnose_recordings(recordings: &BTreeMap<Arc<str>, Vec<String>>, output: OutputFormat) -> anyhow::Result<ExitCode> {
    let mut read = read_logs(recordings)?;
    super::super::warn_about(&read);
    let report = crate::diagnose::recordings::diagnose(&mut read);
    super::super::print_report(&report, output)?;
    Ok(ExitCode::SUCCESS)
}

/// Each node's Job log read as that node's recording.
fn read_logs(logs: &BTreeMap<Arc<str>, Vec<String>>) -> anyhow::Result<Recordings> {
    let mut read = Recordings::default();
    for (node, lines) in logs {
        let mut text = lines.join("\n");
        text.push('\n');
        read.read(node, text.as_bytes()).with_context(|| format!("reading the recording of node {node}"))?;
    }
    Ok(read)
}

/// Ctrl-C or SIGTERM: every Job of the run is deleted (each tried, whatever the others did).
async fn interrupted_all(jobs: &Api<Job>, namespace: &str, names: &[String]) -> anyhow::Result<ExitCode> {
    let mut first_error = None;
    for name in names {
        if let Err(e) = interrupted(jobs, namespace, name).await {
            eprintln!("tracer: error: {e:#}");
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(ExitCode::from(130)),
    }
}

/// What the merger does with the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Events as one timeline (a table with the node first, or the JSON lines as they are).
    Timeline(OutputFormat),
    /// `check`, `pods`: each node's answer as it printed it, one node after the other.
    AsIs,
    /// Each node's JSON lines kept as its recording.
    Record,
}

/// The lines of every node's Job, as they arrive.
struct Merger {
    mode: Mode,
    window: MergeWindow<(Arc<str>, Value, String)>,
    /// Width of the node column.
    width: usize,
    header: bool,
    /// The reader went away (`| head`): lines are read and dropped until the Jobs end.
    closed: bool,
    /// [`Mode::AsIs`] and [`Mode::Record`]: each node's lines.
    recordings: BTreeMap<Arc<str>, Vec<String>>,
}

impl Merger {
    fn new(mode: Mode, nodes: &[&str]) -> Self {
        let width = nodes.iter().map(|n| n.len()).max().unwrap_or(0).max("NODE".len());
        Self { mode, window: MergeWindow::new(MERGE_WINDOW), width, header: false, closed: false, recordings: BTreeMap::new() }
    }

    /// Reads every line until all followers are done, then prints what is held.
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<NodeLine>) -> anyhow::Result<()> {
        loop {
            let deadline = self.window.next_due();
            tokio::select! {
                line = rx.recv() => match line {
                    Some(line) => self.line(line)?,
                    None => break,
                },
                () = sleep_until(deadline), if deadline.is_some() => {
                    for (node, value, line) in self.window.due(Instant::now()) {
                        self.print_event(&node, &value, &line)?;
                    }
                }
            }
        }
        for (node, value, line) in self.window.drain() {
            self.print_event(&node, &value, &line)?;
        }
        if self.mode == Mode::AsIs {
            for (node, lines) in std::mem::take(&mut self.recordings) {
                self.print(&format!("== node {node} =="))?;
                for line in lines {
                    // Every message of tracer's starts so (`tracer: warning: ...`); the rest is stdout.
                    if line.starts_with("tracer: ") {
                        eprintln!("{node}: {line}");
                    } else {
                        self.print(&line)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, NodeLine { node, line }: NodeLine) -> anyhow::Result<()> {
        if self.mode == Mode::AsIs {
            self.recordings.entry(node).or_default().push(line);
            return Ok(());
        }
        let Some(value) = serde_json::from_str::<Value>(&line).ok().filter(Value::is_object) else {
            // The tracer's stderr: warnings, its closing counts.
            eprintln!("{node}: {line}");
            return Ok(());
        };
        if self.mode == Mode::Record {
            self.recordings.entry(node).or_default().push(line);
            return Ok(());
        }
        match value.get("ts").and_then(Value::as_str).map(String::from) {
            Some(ts) => self.window.push(Instant::now(), ts, (node, value, line)),
            None => self.print_event(&node, &value, &line)?,
        }
        Ok(())
    }

    /// One JSON object of `node`'s Job: an event as a timeline row with its node (the event's
    /// own `node`, else the Job's), a report as its text, or the line as it is.
    fn print_event(&mut self, node: &str, value: &Value, line: &str) -> anyhow::Result<()> {
        if self.mode == Mode::Timeline(OutputFormat::Json) {
            return self.print(line);
        }
        if let Some(report) = report_text(value) {
            return self.print(&format!("== node {node} ==\n{}", report.trim_end()));
        }
        let Some(text) = event_text(value) else { return self.print(line) };
        if !self.header {
            self.header = true;
            self.print(&format!("{:<w$}  {TIMELINE_HEADER}", "NODE", w = self.width))?;
        }
        let node = value.get("node").and_then(Value::as_str).unwrap_or(node);
        self.print(&format!("{node:<w$}  {text}", w = self.width))
    }

    fn print(&mut self, text: &str) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        match write_line(&mut io::stdout().lock(), text.as_bytes()).and_then(|()| io::stdout().flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(e).context("writing to stdout"),
        }
    }
}

/// Sleeps until `deadline` (never without one: the branch is then disabled).
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// Items held a short while after they arrive and released in time order: each is due
/// `window` after its arrival, and releasing it releases every item with an earlier or equal
/// time too, so what comes out is in time order as long as no line is later than the window.
#[derive(Debug)]
struct MergeWindow<T> {
    window: Duration,
    /// (due, time, arrival number, item).
    held: Vec<(Instant, String, u64, T)>,
    seq: u64,
}

impl<T> MergeWindow<T> {
    fn new(window: Duration) -> Self {
        Self { window, held: Vec::new(), seq: 0 }
    }

    /// Holds `item`, whose time is `ts` (RFC 3339 in UTC with nanoseconds, which sort as
    /// text), arrived at `now`.
    fn push(&mut self, now: Instant, ts: String, item: T) {
        self.seq += 1;
        self.held.push((now + self.window, ts, self.seq, item));
    }

    /// When the next item is due.
    fn next_due(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.0).min()
    }

    /// The items due at `now` and every item not later than them, in time order (ties: in
    /// the order they arrived).
    fn due(&mut self, now: Instant) -> Vec<T> {
        let Some(cutoff) = self.held.iter().filter(|h| h.0 <= now).map(|h| h.1.clone()).max() else { return Vec::new() };
        let (mut out, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().partition(|h| h.1 <= cutoff);
        self.held = keep;
        out.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));
        out.into_iter().map(|h| h.3).collect()
    }

    /// Everything held, in time order.
    fn drain(&mut self) -> Vec<T> {
        let mut out = std::mem::take(&mut self.held);
        out.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));
        out.into_iter().map(|h| h.3).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_releases_in_time_order_what_came_out_of_order() {
        let t0 = Instant::now();
        let w = Duration::from_millis(100);
        let mut window = MergeWindow::new(w);
        window.push(t0, "2026-01-01T00:00:02.000000000Z".into(), "b2");
        window.push(t0 + Duration::from_millis(10), "2026-01-01T00:00:01.000000000Z".into(), "a1");
        window.push(t0 + Duration::from_millis(50), "2026-01-01T00:00:03.000000000Z".into(), "a3");
        assert_eq!(window.next_due(), Some(t0 + w));
        assert!(window.due(t0 + Duration::from_millis(99)).is_empty(), "nothing is due before its window ends");
        assert_eq!(window.due(t0 + w), ["a1", "b2"], "the due one and the older one that came later");
        window.push(t0 + Duration::from_millis(120), "2026-01-01T00:00:02.500000000Z".into(), "b2.5");
        assert_eq!(window.due(t0 + Duration::from_millis(150)), ["b2.5", "a3"]);
        assert!(window.drain().is_empty());
        window.push(t0, "2026-01-01T00:00:05.000000000Z".into(), "x");
        window.push(t0, "2026-01-01T00:00:05.000000000Z".into(), "y");
        assert_eq!(window.drain(), ["x", "y"], "equal times keep their arrival order");
    }

    #[test]
    fn each_jobs_log_is_its_nodes_recording() {
        let drop = r#"{"dst":"10.244.2.9:53","kind":"drop","len":128,"location":"nf_hook_slow+0x9c","netns":4026532316,"proto":"udp","reason":"NETFILTER_DROP","reason_code":8,"src":"10.244.1.7:40000","ts":"2026-11-22T02:30:01.123456789Z"}"#;
        let logs =
            BTreeMap::from([(Arc::from("node-a"), vec![drop.to_string()]), (Arc::from("node-b"), vec![drop.to_string(), "not json".to_string()])]);
        let read = read_logs(&logs).expect("read");
        let nodes: Vec<(&str, usize)> = read.nodes.iter().map(|(n, r)| (n.as_str(), r.events.len())).collect();
        assert_eq!(nodes, [("node-a", 1), ("node-b", 1)], "a line without `node` is the node of the Job that printed it");
        assert_eq!(read.skipped, 1);
    }
}
