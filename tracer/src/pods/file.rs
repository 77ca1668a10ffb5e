//! `--pods-from file:PATH`: the output of `kubectl get pods -A -o json` (a `List` of pods), or a
//! single pod object, read once. For offline use, and to name pods on a node where neither the
//! runtime nor the API can be reached. `kubectl get pods,services -A -o json` also gives the
//! Services, which `tracer nat` names; items of other kinds are left out.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Pod as ApiPod, Service as ApiService};

use super::{
    Pod, SourceKind, k8s,
    services::{self, Service},
};

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

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"items": 3}"#).is_err());
        assert!(parse(br#"{"items": [{"kind": "Pod", "metadata": 3}]}"#).is_err());
    }
}
