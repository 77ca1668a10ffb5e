//! What `--pod`, `--namespace` and `--selector` select. Parts combine with AND: `--pod` names
//! (any of them), within `--namespace`, carrying every `--selector` label.

use std::fmt;

use super::Pod;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    /// (namespace, name) pairs from `--pod`.
    pub pods: Vec<(String, String)>,
    pub namespace: Option<String>,
    /// Label requirements from `--selector`: key = value.
    pub labels: Vec<(String, String)>,
}

/// Why a `--pod`, `--namespace` or `--selector` value is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SelectionError {
    #[error("--pod {0}: expected NAMESPACE/NAME, e.g. --pod shop/web-0")]
    Pod(String),
    #[error("--namespace {0}: not a valid namespace name (lower-case letters, digits and '-')")]
    Namespace(String),
    #[error("--selector {0}: expected KEY=VALUE[,KEY=VALUE...], e.g. --selector app=web,tier=front")]
    Selector(String),
}

impl Selection {
    pub(crate) fn parse(pods: &[String], namespace: Option<&str>, selector: Option<&str>) -> Result<Self, SelectionError> {
        let mut sel = Self::default();
        for text in pods {
            let (ns, name) = text.split_once('/').ok_or_else(|| SelectionError::Pod(text.clone()))?;
            let (ns, name) = (ns.trim(), name.trim());
            if !is_dns_label(ns) || name.is_empty() || name.contains('/') || name.len() > 253 {
                return Err(SelectionError::Pod(text.clone()));
            }
            sel.pods.push((ns.to_string(), name.to_string()));
        }
        if let Some(ns) = namespace {
            if !is_dns_label(ns.trim()) {
                return Err(SelectionError::Namespace(ns.to_string()));
            }
            sel.namespace = Some(ns.trim().to_string());
        }
        if let Some(text) = selector {
            for part in text.split(',') {
                // `==` is the API's other spelling of equality.
                let (k, v) = part.split_once("==").or_else(|| part.split_once('=')).ok_or_else(|| SelectionError::Selector(text.to_string()))?;
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() || k.contains('!') || v.contains('=') {
                    return Err(SelectionError::Selector(text.to_string()));
                }
                sel.labels.push((k.to_string(), v.to_string()));
            }
        }
        Ok(sel)
    }

    /// No pod option was given: every event passes.
    pub(crate) fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.namespace.is_none() && self.labels.is_empty()
    }

    pub(crate) fn matches(&self, pod: &Pod) -> bool {
        (self.pods.is_empty() || self.pods.iter().any(|(ns, n)| *ns == pod.namespace && *n == pod.name))
            && self.namespace.as_ref().is_none_or(|ns| *ns == pod.namespace)
            && self.labels.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
    }

    /// `--pod` names no live pod matches (with the other parts applied).
    pub(crate) fn missing(&self, live: &[&Pod]) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(ns, n)| !live.iter().any(|p| p.namespace == *ns && p.name == *n && self.matches(p)))
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect()
    }
}

impl fmt::Display for Selection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.pods.is_empty() {
            parts.push(format!("pod {}", self.pods.iter().map(|(ns, n)| format!("{ns}/{n}")).collect::<Vec<_>>().join(",")));
        }
        if let Some(ns) = &self.namespace {
            parts.push(format!("namespace {ns}"));
        }
        if !self.labels.is_empty() {
            parts.push(format!("selector {}", self.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")));
        }
        f.write_str(&parts.join(", "))
    }
}

/// RFC 1123 label: what Kubernetes accepts as a namespace name.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pods::SourceKind;

    fn pod(ns: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("{ns}-{name}"),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            ips: vec![],
            netns: None,
            host_network: false,
            created_unix_ns: None,
            source: SourceKind::Cri,
        }
    }

    #[test]
    fn parts_combine_with_and() {
        let s = Selection::parse(&["shop/web-0".into(), "shop/web-1".into()], Some("shop"), Some("app=web")).unwrap();
        assert!(s.matches(&pod("shop", "web-0", &[("app", "web")])));
        assert!(!s.matches(&pod("shop", "web-0", &[("app", "db")])));
        assert!(!s.matches(&pod("shop", "web-2", &[("app", "web")])));
        let ns_only = Selection::parse(&[], Some("shop"), None).unwrap();
        assert!(ns_only.matches(&pod("shop", "anything", &[])));
        assert!(!ns_only.matches(&pod("other", "anything", &[])));
        assert!(Selection::parse(&[], None, None).unwrap().is_empty());
    }

    #[test]
    fn selector_accepts_both_equalities() {
        let s = Selection::parse(&[], None, Some("app==web, tier=front")).unwrap();
        assert_eq!(s.labels, vec![("app".into(), "web".into()), ("tier".into(), "front".into())]);
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(Selection::parse(&["web-0".into()], None, None).is_err());
        assert!(Selection::parse(&["/web-0".into()], None, None).is_err());
        assert!(Selection::parse(&["shop/".into()], None, None).is_err());
        assert!(Selection::parse(&["Shop/web".into()], None, None).is_err());
        assert!(Selection::parse(&[], Some("Bad_NS"), None).is_err());
        assert!(Selection::parse(&[], None, Some("app")).is_err());
        assert!(Selection::parse(&[], None, Some("app!=web")).is_err());
    }

    #[test]
    fn missing_names_pods_not_live() {
        let s = Selection::parse(&["shop/web-0".into(), "shop/gone".into()], None, None).unwrap();
        let live = [pod("shop", "web-0", &[])];
        assert_eq!(s.missing(&live.iter().collect::<Vec<_>>()), vec!["shop/gone".to_string()]);
    }
}
