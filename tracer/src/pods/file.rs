//! `--pods-from file:PATH`: the output of `kubectl get pods -A -o json` (a `List` of pods), or a
//! single pod object, read at start and again whenever it changes ([`follow`]). For offline use,
//! and to name pods on a node where neither the runtime nor the API can be reached (something
//! else keeps the file current). `kubectl get pods,services -A -o json` also gives the Services,
//! which `tracer nat` names (read once); items of other kinds are left out.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use k8s_openapi::api::core::v1::{Pod as ApiPod, Service as ApiService};
use tokio::sync::mpsc;

use super::{
    Pod, PodUpdate, SourceKind, SourceMsg, k8s, now_unix_ns,
    services::{self, Service},
};

/// How often the file is looked at (one stat(2)) for a change.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub(crate) enum FileSourceError {
    #[error("--pods-from file:{path}: cannot read it")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--pods-from file:{path}: not the JSON of `kubectl get pods -A -o json`")]
    Parse { path: PathBuf, source: serde_json::Error },
}

#[derive(serde::Deserialize)]
struct List {
    items: Vec<serde_json::Value>,
}

/// What the file holds.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
}

pub(crate) fn load(path: &Path) -> Result<Objects, FileSourceError> {
    let bytes = std::fs::read(path).map_err(|source| FileSourceError::Read { path: path.into(), source })?;
    parse(&bytes).map_err(|source| FileSourceError::Parse { path: path.into(), source })
}

/// What tells one version of the file from the next without reading it: a rewrite in place
/// changes the modification time or the size, a new file renamed over it the inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Version {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The version of the file now; None when it cannot be looked at.
pub(crate) fn version(path: &Path) -> Option<Version> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Version { modified: meta.modified().ok(), len: meta.len(), inode: meta.ino() })
}

/// Looks at the file every [`POLL_INTERVAL`] until the receiver is gone and sends the pods it
/// lists as a snapshot whenever it changed from `read` (the version last read), so pods written
/// into it or taken out of it while tracing are named, and then forgotten. A file that cannot
/// be read or parsed (missing, or seen half-written: write it elsewhere and rename it over) is
/// warned about once, keeping the pods last read, and read again at its next change.
pub(crate) fn follow(path: PathBuf, mut read: Option<Version>, tx: mpsc::Sender<SourceMsg>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut failing = false;
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let now = version(&path);
            if now.is_none() || now == read {
                continue;
            }
            let at = now_unix_ns();
            match load(&path) {
                Ok(objects) => {
                    if failing {
                        log::warn!("--pods-from file:{}: read again", path.display());
                        failing = false;
                    }
                    read = now;
                    if tx.send(SourceMsg { at, source: SourceKind::File, update: PodUpdate::Snapshot(objects.pods) }).await.is_err() {
                        return;
                    }
                }
                Err(err) => {
                    if !failing {
                        log::warn!("{:#}; keeping the pods it listed before until it can be read", anyhow::Error::from(err));
                        failing = true;
                    }
                    read = now;
                }
            }
        }
    })
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Objects, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    let items = if value.get("items").is_some() { serde_json::from_value::<List>(value)?.items } else { vec![value] };
    let mut objects = Objects::default();
    for item in items {
        // A List's items carry their kind; a lone object without one is taken for a pod.
        match item.get("kind").and_then(serde_json::Value::as_str) {
            None | Some("Pod") => {
                objects.pods.extend(k8s::from_api(&serde_json::from_value::<ApiPod>(item)?, SourceKind::File));
            }
            Some("Service") => objects.services.extend(services::from_api(&serde_json::from_value::<ApiService>(item)?)),
            Some(_) => {}
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_list_output() {
        let json = br#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x","uid":"1"},"status":{"podIP":"10.0.0.1"}},
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"b","namespace":"x","uid":"2"},"status":{"podIP":"10.0.0.2"}}]}"#;
        let objects = parse(json).unwrap();
        assert_eq!(objects.pods.iter().map(Pod::full_name).collect::<Vec<_>>(), ["x/a", "x/b"]);
        assert!(objects.services.is_empty());
    }

    #[test]
    fn pods_and_services_list() {
        let json = br#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x","uid":"1"},"status":{"podIP":"10.0.0.1"}},
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"x"},
             "spec":{"clusterIP":"10.96.0.5","ports":[{"port":80,"protocol":"TCP"}]}},
            {"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"x"},"spec":{}}]}"#;
        let objects = parse(json).unwrap();
        assert_eq!(objects.pods.iter().map(Pod::full_name).collect::<Vec<_>>(), ["x/a"]);
        assert_eq!(objects.services.len(), 1, "the Deployment is left out");
        assert_eq!(objects.services[0].name, "x/web");
        assert_eq!(objects.services[0].addrs.len(), 1);
        let single = parse(br#"{"metadata":{"name":"a","namespace":"x","uid":"1"}}"#).unwrap();
        assert_eq!(single.pods.len(), 1, "a lone object without a kind is a pod");
    }

    /// The next message of `rx` within `secs` seconds: the names of the snapshot's pods.
    async fn next_snapshot(rx: &mut mpsc::Receiver<SourceMsg>, secs: u64) -> Option<Vec<String>> {
        match tokio::time::timeout(Duration::from_secs(secs), rx.recv()).await.ok()??.update {
            PodUpdate::Snapshot(pods) => Some(pods.iter().map(Pod::full_name).collect()),
            other => panic!("a file sends snapshots only: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_followed_file_sends_its_pods_at_each_change_and_keeps_them_when_it_breaks() {
        let dir = std::env::temp_dir().join(format!("tracer-file-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pods.json");
        let pod = |name: &str| format!(r#"{{"kind":"Pod","metadata":{{"name":"{name}","namespace":"x","uid":"{name}"}}}}"#);
        // As its writer should: elsewhere, then renamed over (a new inode, maybe the same size and second).
        let replace = |text: String| {
            let tmp = dir.join("pods.json.new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        replace(pod("a"));
        let (tx, mut rx) = mpsc::channel(8);
        let task = follow(path.clone(), version(&path), tx);
        assert_eq!(next_snapshot(&mut rx, 1).await, None, "nothing changed: nothing sent");
        replace(pod("b"));
        assert_eq!(next_snapshot(&mut rx, 3).await, Some(vec!["x/b".to_string()]));
        std::fs::write(&path, "{\"items\": [").unwrap();
        assert_eq!(next_snapshot(&mut rx, 1).await, None, "a half-written file changes nothing");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(next_snapshot(&mut rx, 1).await, None, "nor a missing one");
        replace(pod("c"));
        assert_eq!(next_snapshot(&mut rx, 3).await, Some(vec!["x/c".to_string()]), "read again once whole");
        // Rewritten in place, same size: the modification time tells.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, pod("d")).unwrap();
        assert_eq!(next_snapshot(&mut rx, 3).await, Some(vec!["x/d".to_string()]));
        drop(rx);
        replace(pod("e"));
        tokio::time::timeout(Duration::from_secs(3), task).await.expect("the follower ends with its receiver").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"items": 3}"#).is_err());
        assert!(parse(br#"{"items": [{"kind": "Pod", "metadata": 3}]}"#).is_err());
    }
}
