//! Kubernetes API pod objects (as `kubectl get pods -o json` and the API's list and watch return
//! them) turned into registry [`Pod`]s. Shared by the [`super::kube`] and [`super::file`] sources.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod as ApiPod;

use super::{Pod, SourceKind};

/// Converts one API pod. Pods that no longer hold their addresses (phase Succeeded or Failed,
/// whose IPs the node may already have given to another pod) and objects without a namespace,
/// name or UID are left out.
pub(crate) fn from_api(pod: &ApiPod, source: SourceKind) -> Option<Pod> {
    let meta = &pod.metadata;
    let status = pod.status.as_ref();
    if status.and_then(|s| s.phase.as_deref()).is_some_and(|phase| matches!(phase, "Succeeded" | "Failed")) {
        return None;
    }
    let mut ips: Vec<IpAddr> = Vec::new();
    if let Some(status) = status {
        let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
        for text in status.pod_ip.as_deref().into_iter().chain(listed) {
            if let Ok(ip) = text.parse::<IpAddr>()
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    Some(Pod {
        namespace: meta.namespace.clone()?,
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        labels: meta.labels.clone().unwrap_or_default(),
        ips,
        netns: None,
        host_network: pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false),
        created_unix_ns: meta.creation_timestamp.as_ref().map(|t| t.0.as_nanosecond()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> ApiPod {
        serde_json::from_str(json).expect("valid pod JSON")
    }

    #[test]
    fn running_pod_with_two_addresses() {
        let pod = parse(
            r#"{"apiVersion":"v1","kind":"Pod",
                "metadata":{"name":"web-0","namespace":"shop","uid":"1f6c","labels":{"app":"web"},
                            "creationTimestamp":"2026-11-22T02:30:01Z"},
                "spec":{"containers":[{"name":"c","image":"i"}]},
                "status":{"phase":"Running","podIP":"10.244.1.7",
                          "podIPs":[{"ip":"10.244.1.7"},{"ip":"fd00:10:244:1::7"}]}}"#,
        );
        let p = from_api(&pod, SourceKind::File).unwrap();
        assert_eq!(p.full_name(), "shop/web-0");
        assert_eq!(p.ips, vec!["10.244.1.7".parse::<IpAddr>().unwrap(), "fd00:10:244:1::7".parse().unwrap()]);
        assert_eq!(p.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(p.created_unix_ns, Some(1_795_314_601_000_000_000));
        assert!(!p.host_network);
    }

    #[test]
    fn finished_pods_and_host_network() {
        let done = parse(r#"{"metadata":{"name":"job","namespace":"b","uid":"u"},"status":{"phase":"Succeeded","podIP":"10.0.0.1"}}"#);
        assert_eq!(from_api(&done, SourceKind::File), None);
        let hn = parse(
            r#"{"metadata":{"name":"kp","namespace":"kube-system","uid":"u2"},"spec":{"hostNetwork":true,"containers":[]},
                "status":{"phase":"Running","podIP":"192.168.1.10"}}"#,
        );
        assert!(from_api(&hn, SourceKind::File).unwrap().host_network);
    }
}
