//! `--pods-from file:PATH`: the output of `kubectl get pods -A -o json` (a `List` of pods), or a
//! single pod object, read once. For offline use, and to name pods on a node where neither the
//! runtime nor the API can be reached.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod as ApiPod;

use super::{Pod, SourceKind, k8s};

#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error("--pods-from file:{path}: cannot read it")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("--pods-from file:{path}: not the JSON of `kubectl get pods -A -o json`")]
    Parse { path: PathBuf, source: serde_json::Error },
}

#[derive(serde::Deserialize)]
struct List {
    items: Vec<ApiPod>,
}

pub fn load(path: &Path) -> Result<Vec<Pod>, FileSourceError> {
    let bytes = std::fs::read(path).map_err(|source| FileSourceError::Read { path: path.into(), source })?;
    parse(&bytes).map_err(|source| FileSourceError::Parse { path: path.into(), source })
}

fn parse(bytes: &[u8]) -> Result<Vec<Pod>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    let items = if value.get("items").is_some() {
        serde_json::from_value::<List>(value)?.items
    } else {
        vec![serde_json::from_value::<ApiPod>(value)?]
    };
    Ok(items.iter().filter_map(|p| k8s::from_api(p, SourceKind::File)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_list_output() {
        let json = br#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":""},"items":[
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x","uid":"1"},"status":{"podIP":"10.0.0.1"}},
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"b","namespace":"x","uid":"2"},"status":{"podIP":"10.0.0.2"}}]}"#;
        let pods = parse(json).unwrap();
        assert_eq!(pods.iter().map(Pod::full_name).collect::<Vec<_>>(), ["x/a", "x/b"]);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"items": 3}"#).is_err());
    }
}
