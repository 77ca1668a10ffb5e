//! RBAC for the fake API server: with [`FakeApi::enforce_rbac`], every request is allowed only
//! when a rule of the user's roles covers its verb, API group, resource (with subresource) and
//! namespace, and refused otherwise with the `403 Forbidden` Status the API server writes — so a
//! test runs `tracer job` as a user bound to the roles of deploy/, and a request those roles do
//! not allow fails there as it would on a cluster.
//!
//! Request attributes follow the API server's (the "Authorization" reference: request verbs,
//! resource and subresource from the path): `GET` of a named object is `get`, of a collection
//! `list` (`watch` with `watch=true`), `POST` is `create`, `DELETE` `delete` (of a collection,
//! `deletecollection`), `PUT` `update`, `PATCH` `patch`.

use super::*;

/// One permission: `verb` on `resource` (`pods`, `pods/log`, `jobs`) of API `group` (`""` for
/// core), in `namespace` only (a Role, or a ClusterRole bound by a RoleBinding) or everywhere
/// (`None`: a ClusterRole bound by a ClusterRoleBinding).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub namespace: Option<String>,
    pub group: String,
    pub resource: String,
    pub verb: String,
}

/// What a request asks, in RBAC's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// With its subresource: `pods/log`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Attributes {
    /// The attributes of a resource request; None for a path that names no resource.
    pub fn of(method: &str, path: &str, watch: bool) -> Option<Self> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (group, rest) = match segments.as_slice() {
            ["api", "v1", rest @ ..] => ("", rest),
            ["apis", group, _version, rest @ ..] => (*group, rest),
            _ => return None,
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        let (resource, name) = match rest {
            [res] => (res.to_string(), None),
            [res, name] => (res.to_string(), Some(name.to_string())),
            [res, name, sub] => (format!("{res}/{sub}"), Some(name.to_string())),
            _ => return None,
        };
        let verb = match (method, name.is_some()) {
            ("GET", false) if watch => "watch",
            ("GET", false) => "list",
            ("GET", true) => "get",
            ("POST", _) => "create",
            ("DELETE", false) => "deletecollection",
            ("DELETE", true) => "delete",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            _ => return None,
        };
        Some(Self { verb: verb.into(), group: group.into(), resource, namespace, name })
    }

    /// Whether `rule` covers this request.
    pub fn allowed_by(&self, rule: &Rule) -> bool {
        rule.verb == self.verb
            && rule.group == self.group
            && rule.resource == self.resource
            && (rule.namespace.is_none() || rule.namespace == self.namespace)
    }

    /// The API server's message for refusing it to `user`.
    pub fn forbidden(&self, user: &str) -> String {
        let (base, _) = self.resource.split_once('/').unwrap_or((&self.resource, ""));
        let qualified = if self.group.is_empty() { base.to_string() } else { format!("{base}.{}", self.group) };
        let object = match &self.name {
            Some(name) => format!("{qualified} \"{name}\""),
            None => qualified,
        };
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".into(),
        };
        format!("{object} is forbidden: User \"{user}\" cannot {} resource \"{}\" in API group \"{}\" {scope}", self.verb, self.resource, self.group)
    }
}

/// The user and rules requests are checked against, when enforced.
#[derive(Debug, Default)]
pub(super) struct Rbac {
    enforced: Option<(String, Vec<Rule>)>,
}

impl FakeApi {
    /// From now on every request runs as `user` holding `rules` only: anything else is answered
    /// `403 Forbidden` with the API server's message.
    pub fn enforce_rbac(&self, user: &str, rules: Vec<Rule>) {
        self.shared.lock().rbac.enforced = Some((user.into(), rules));
    }
}

/// The API server's refusal of `req`, if RBAC is enforced and no rule allows it.
pub(super) fn refusal(req: &ApiRequest, shared: &Shared) -> Option<String> {
    let st = shared.lock();
    let (user, rules) = st.rbac.enforced.as_ref()?;
    let Some(attributes) = Attributes::of(&req.method, &req.path, req.is_watch()) else {
        return Some(format!("forbidden: User \"{user}\" cannot {} path \"{}\"", req.method.to_lowercase(), req.path));
    };
    if rules.iter().any(|r| attributes.allowed_by(r)) { None } else { Some(attributes.forbidden(user)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_rbac_attributes() {
        let a = Attributes::of("GET", "/api/v1/namespaces/shop/pods/web-0", false).expect("a resource");
        assert_eq!((a.verb.as_str(), a.group.as_str(), a.resource.as_str(), a.namespace.as_deref()), ("get", "", "pods", Some("shop")));
        assert_eq!(
            a.forbidden("u"),
            "pods \"web-0\" is forbidden: User \"u\" cannot get resource \"pods\" in API group \"\" in the namespace \"shop\""
        );
        let a = Attributes::of("GET", "/apis/batch/v1/jobs", false).expect("a resource");
        assert_eq!(a.forbidden("u"), "jobs.batch is forbidden: User \"u\" cannot list resource \"jobs\" in API group \"batch\" at the cluster scope");
        let log = Attributes::of("GET", "/api/v1/namespaces/t/pods/p/log", false).expect("a resource");
        assert_eq!((log.verb.as_str(), log.resource.as_str()), ("get", "pods/log"));
        assert_eq!(Attributes::of("GET", "/api/v1/pods", true).map(|a| a.verb), Some("watch".into()));
        let rule = |ns: Option<&str>| Rule { namespace: ns.map(String::from), group: String::new(), resource: "pods/log".into(), verb: "get".into() };
        assert!(log.allowed_by(&rule(Some("t"))) && log.allowed_by(&rule(None)) && !log.allowed_by(&rule(Some("other"))));
    }
}
