//! core/v1 Events for the fake API server: what the Job controller, the scheduler and the
//! kubelet say about a Job and its pod (`kubectl describe` shows them), for the tests of `tracer
//! job run`'s wait for its pod.
//!
//! - `GET /api/v1/namespaces/NS/events` (a list; no watch) with the field selectors the API
//!   server supports for Events (`involvedObject.uid`, `involvedObject.name`, `reason`, `type`,
//!   ...: anything else is `400 BadRequest`, as from the real server);
//! - each Event is recorded by the fake's Job controller or kubelet when a Job's pod cannot
//!   start, and becomes visible at a given time ([`super::JobScript::events_after`]): a real
//!   kubelet reports a failed mount or pull some seconds after the pod appeared.
//!
//! The object follows the API reference of Event (core/v1): `involvedObject` (kind, namespace,
//! name, uid, apiVersion, fieldPath), `reason`, `message`, `type` (Normal, Warning), `source`,
//! `firstTimestamp`/`lastTimestamp`, `count`, `reportingComponent`.

use super::*;

/// The field labels the API server accepts in an Event list's fieldSelector.
const EVENT_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// The Events the server holds, each with the moment it becomes visible.
#[derive(Debug, Default)]
pub(super) struct Events {
    items: Vec<(Instant, Value)>,
}

/// Who says what about which object.
pub(super) struct NewEvent<'a> {
    /// The object it is about (a Job or a Pod, as the API serves it).
    pub object: &'a Value,
    /// `Normal` or `Warning`.
    pub kind: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
    /// `job-controller`, `default-scheduler`, `kubelet`.
    pub component: &'a str,
    /// Visible (and stamped) this long after now.
    pub after: Duration,
}

impl Events {
    /// Records `event` at the next resource version of `st`.
    pub(super) fn add(st: &mut State, event: NewEvent<'_>) {
        let object = event.object;
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let name = object["metadata"]["name"].as_str().unwrap_or("").to_string();
        st.rv += 1;
        let at = rfc3339_s(unix_now_s() + event.after.as_secs());
        let host = object["spec"]["nodeName"].as_str().unwrap_or("");
        let field_path = if object["kind"] == "Pod" && event.component == "kubelet" { json!("spec.containers{tracer}") } else { Value::Null };
        let value = json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {
                "name": format!("{name}.{:016x}", st.rv), "namespace": namespace,
                "uid": uid_for(&namespace, &format!("event-{}", st.rv)), "resourceVersion": st.rv.to_string(), "creationTimestamp": at,
            },
            "involvedObject": {
                "kind": object["kind"], "namespace": namespace, "name": name, "uid": object["metadata"]["uid"],
                "apiVersion": object["apiVersion"], "resourceVersion": object["metadata"]["resourceVersion"], "fieldPath": field_path,
            },
            "reason": event.reason, "message": event.message,
            "source": if host.is_empty() { json!({"component": event.component}) } else { json!({"component": event.component, "host": host}) },
            "firstTimestamp": at, "lastTimestamp": at, "count": 1, "type": event.kind, "eventTime": null,
            "reportingComponent": event.component, "reportingInstance": host,
        });
        st.events.items.push((Instant::now() + event.after, value));
    }
}

/// An Event's value for a field label.
fn field(event: &Value, label: &str) -> String {
    let v = match label {
        "source" => &event["source"]["component"],
        _ => label.split('.').fold(event, |v, key| &v[key]),
    };
    v.as_str().unwrap_or("").to_string()
}

/// Answers `GET /api/v1/namespaces/NS/events`; None for any other path.
pub(super) fn handle(w: &mut TcpStream, req: &mut ApiRequest, shared: &Shared) -> Option<std::io::Result<()>> {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "events"] = segments.as_slice() else { return None };
    let ns = ns.to_string();
    if req.method != "GET" || req.is_watch() {
        let msg = "this fake serves Event lists only";
        return Some(answer(w, req, shared, 405, &status_object(405, "MethodNotAllowed", msg)));
    }
    let fields = match parse_field_selector(req.param("fieldSelector").unwrap_or(""), EVENT_FIELDS) {
        Ok(f) => f,
        Err(msg) => return Some(answer(w, req, shared, 400, &status_object(400, "BadRequest", &msg))),
    };
    let body = {
        let st = shared.lock();
        let now = Instant::now();
        let items: Vec<Value> = st
            .events
            .items
            .iter()
            .filter(|(visible, e)| *visible <= now && e["metadata"]["namespace"] == ns.as_str())
            .filter(|(_, e)| fields.iter().all(|f| (field(e, &f.field) == f.value) == f.equal))
            .map(|(_, e)| e.clone())
            .collect();
        json!({"kind": "EventList", "apiVersion": "v1", "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
    };
    Some(answer(w, req, shared, 200, &body))
}

fn answer(w: &mut TcpStream, req: &mut ApiRequest, shared: &Shared, code: u16, body: &Value) -> std::io::Result<()> {
    req.status = code;
    record(shared, req);
    respond_json(w, code, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_fields_are_read_by_label() {
        let e = json!({"involvedObject": {"uid": "u1", "name": "p"}, "source": {"component": "kubelet"}, "type": "Warning"});
        assert_eq!(field(&e, "involvedObject.uid"), "u1");
        assert_eq!(field(&e, "source"), "kubelet");
        assert_eq!(field(&e, "type"), "Warning");
        assert!(parse_field_selector("involvedObject.uid=u1,type=Warning", EVENT_FIELDS).is_ok());
        assert!(parse_field_selector("involvedObject.bogus=x", EVENT_FIELDS).is_err());
    }
}
