//! Checks of the tracer's JSON events (CONTRACT "JSON event"): the fields every event has
//! ([`check_common`]), those of drops ([`check_drop`]) and of TCP socket events
//! ([`check_tcp_event`]), and selections of events by flow.

use std::collections::BTreeMap;

use crate::{Value, parse_rfc3339_nanos};

fn is_nullable_string(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(|s| !s.is_empty())
}

/// Checks the fields every event has (CONTRACT "JSON event"), and that `ts` lies within
/// [`window`] (Unix nanoseconds, with 5 s of slack each side).
pub fn check_common(ev: &Value, window: (i128, i128)) {
    let ctx = || format!("event {ev}");
    let obj = ev.as_object().unwrap_or_else(|| panic!("{} is not an object", ctx()));
    for k in ["ts", "kind", "proto", "src", "dst", "src_pod", "dst_pod", "netns", "ifname"] {
        assert!(obj.contains_key(k), "{}: missing field {k:?}", ctx());
    }
    let ts = ev["ts"].as_str().unwrap_or_else(|| panic!("{}: ts not a string", ctx()));
    let t = parse_rfc3339_nanos(ts).unwrap_or_else(|| panic!("{}: ts {ts:?} is not RFC 3339 UTC with nanoseconds (..SS.nnnnnnnnnZ)", ctx()));
    let slack = 5_000_000_000;
    assert!(t >= window.0 - slack && t <= window.1 + slack, "{}: ts {ts} is outside the test's run window (clock conversion wrong?)", ctx());
    let kind = ev["kind"].as_str().unwrap_or_default();
    assert!(["drop", "retransmit", "reset", "connect_fail", "nat", "mtu"].contains(&kind), "{}: bad kind", ctx());
    let proto = ev["proto"].as_str().map(str::to_string).or_else(|| ev["proto"].as_u64().map(|n| n.to_string()));
    let proto = proto.unwrap_or_else(|| panic!("{}: proto is neither string nor number", ctx()));
    assert!(!proto.is_empty() && proto == proto.to_lowercase(), "{}: proto must be lower case", ctx());
    for k in ["src", "dst"] {
        assert!(ev[k].as_str().is_some_and(|s| !s.is_empty()), "{}: {k} not a non-empty string", ctx());
    }
    for k in ["src_pod", "dst_pod", "ifname"] {
        assert!(is_nullable_string(&ev[k]), "{}: {k} must be a non-empty string or null", ctx());
    }
    for k in ["src_pod", "dst_pod"] {
        if let Some(p) = ev[k].as_str() {
            assert!(p.split('/').count() == 2, "{}: {k} must be namespace/name", ctx());
        }
    }
    assert!(ev["netns"].is_null() || ev["netns"].is_u64(), "{}: netns must be an integer or null", ctx());
    // The lab's runs name no node: the host name stands in, as on a node without NODE_NAME.
    assert!(ev["node"].as_str().is_some_and(|n| !n.is_empty()), "{}: node must be the node's name", ctx());
}

/// Checks a `kind: drop` event: common fields plus reason, location (`symbol+0xOFF`), len.
pub fn check_drop(ev: &Value, window: (i128, i128)) {
    check_common(ev, window);
    assert_eq!(ev["kind"], "drop", "event {ev}: kind");
    let reason = ev["reason"].as_str().unwrap_or_else(|| panic!("event {ev}: reason not a string"));
    assert!(
        !reason.is_empty()
            && !reason.starts_with("SKB_DROP_REASON_")
            && reason.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'),
        "event {ev}: reason must be the bare enum name"
    );
    let loc = ev["location"].as_str().unwrap_or_else(|| panic!("event {ev}: location not a string"));
    assert!(is_symbol_offset(loc), "event {ev}: location {loc:?} is not symbol+0xOFFSET");
    assert!(ev["len"].is_u64(), "event {ev}: len must be an unsigned integer");
}

/// `sym+0xhex` optionally followed by `/0xhex` (the size, as tracefs prints it).
pub fn is_symbol_offset(loc: &str) -> bool {
    let Some((sym, off)) = loc.split_once('+') else { return false };
    let hex = |h: &str| h.strip_prefix("0x").is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_hexdigit()));
    let off_ok = match off.split_once('/') {
        Some((o, size)) => hex(o) && hex(size),
        None => hex(off),
    };
    !sym.is_empty() && sym.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'[' || c == b']' || c == b' ') && off_ok
}

/// `sym+0xoff` without a `/size` suffix.
pub fn strip_size(loc: &str) -> &str {
    loc.split('/').next().unwrap_or(loc)
}

/// Events whose `src` and `dst` are exactly these strings.
pub fn with_flow<'a>(events: &'a [Value], src: &str, dst: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["src"] == src && e["dst"] == dst).collect()
}

/// TCP state names as the tracer prints them (the kernel's `TCP_*` without the prefix).
pub const TCP_STATE_NAMES: &[&str] = &[
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "BOUND_INACTIVE",
];

/// `IP:PORT` (or `[IPv6]:PORT`) with a non-zero port.
pub fn is_ip_port(s: &str) -> bool {
    let Some((ip, port)) = s.rsplit_once(':') else { return false };
    let ip = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
    ip.parse::<std::net::IpAddr>().is_ok() && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// Checks a `retransmit`, `reset` or `connect_fail` event: the common fields (see
/// [`check_common`]), `proto` "tcp", both ends `IP:PORT`, `netns` and `netns_pod` present,
/// `ifname` null, and the kind's own fields: retransmit `state` and `count` >= 1; reset
/// `direction` sent|received and `state` (a name, or null where the kernel had no socket);
/// connect_fail `state`, `duration_ms` >= 0 and `syns_sent` an integer (every kernel this runs
/// on has `tcp_sock.segs_out`).
pub fn check_tcp_event(ev: &Value, window: (i128, i128)) {
    check_common(ev, window);
    let kind = ev["kind"].as_str().unwrap_or_default();
    assert!(["retransmit", "reset", "connect_fail"].contains(&kind), "event {ev}: not a retrans kind");
    assert_eq!(ev["proto"], "tcp", "event {ev}: proto");
    for k in ["src", "dst"] {
        let v = ev[k].as_str().unwrap_or_default();
        assert!(is_ip_port(v), "event {ev}: {k} {v:?} is not IP:PORT");
    }
    let obj = ev.as_object().expect("object");
    assert!(obj.contains_key("netns_pod"), "event {ev}: missing netns_pod");
    assert!(
        ev["netns_pod"].is_null() || ev["netns_pod"].as_str().is_some_and(|p| p.split('/').count() == 2),
        "event {ev}: netns_pod must be namespace/name or null"
    );
    assert!(ev["ifname"].is_null(), "event {ev}: ifname must be null for TCP socket events");
    let state_ok = |v: &Value| v.as_str().is_some_and(|s| TCP_STATE_NAMES.contains(&s));
    match kind {
        "retransmit" => {
            assert!(state_ok(&ev["state"]), "event {ev}: state must be one of {TCP_STATE_NAMES:?}");
            assert!(ev["count"].as_u64().is_some_and(|c| c >= 1), "event {ev}: count must be an integer >= 1");
            assert!(ev["netns"].is_u64(), "event {ev}: netns must be the socket's namespace inode");
        }
        "reset" => {
            let d = ev["direction"].as_str().unwrap_or_default();
            assert!(d == "sent" || d == "received", "event {ev}: direction must be sent or received");
            assert!(obj.contains_key("state"), "event {ev}: missing state");
            assert!(ev["state"].is_null() || state_ok(&ev["state"]), "event {ev}: state must be a TCP state name or null");
            if d == "received" {
                assert!(ev["netns"].is_u64(), "event {ev}: netns must be the socket's namespace inode");
            }
        }
        _ => {
            assert!(state_ok(&ev["state"]), "event {ev}: state must be one of {TCP_STATE_NAMES:?}");
            assert!(ev["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "event {ev}: duration_ms must be a number >= 0");
            assert!(ev["syns_sent"].is_u64(), "event {ev}: syns_sent must be an integer");
            assert!(ev["netns"].is_u64(), "event {ev}: netns must be the socket's namespace inode");
        }
    }
}

/// Events of `kind` whose `src`/`dst` are exactly these.
pub fn tcp_events<'a>(events: &'a [Value], kind: &str, src: &str, dst: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind && e["src"] == src && e["dst"] == dst).collect()
}

/// Number of `retransmit` events per (src, dst).
pub fn retransmits_by_flow(events: &[Value]) -> BTreeMap<(String, String), u64> {
    let mut m = BTreeMap::new();
    for e in events.iter().filter(|e| e["kind"] == "retransmit") {
        let key = (e["src"].as_str().unwrap_or("").to_string(), e["dst"].as_str().unwrap_or("").to_string());
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

/// Events one per line, for assertion messages.
pub fn dump(events: &[Value]) -> String {
    events.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}
