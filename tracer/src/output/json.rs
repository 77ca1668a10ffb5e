//! JSON Lines: one object per event, flushed per event, fields exactly as CONTRACT.md says.

use std::io::{self, Write};

use serde::Serialize;

use super::{Sink, write_line};
use crate::events::{Detail, Event, rfc3339};

#[derive(Serialize)]
struct JsonEvent<'a> {
    ts: String,
    kind: &'static str,
    proto: String,
    src: Option<String>,
    dst: Option<String>,
    src_pod: Option<&'a str>,
    dst_pod: Option<&'a str>,
    netns: Option<u32>,
    netns_pod: Option<&'a str>,
    ifname: Option<&'a str>,
    ifindex: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    #[serde(flatten)]
    detail: JsonDetail<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonDetail<'a> {
    Drop {
        reason: &'a str,
        reason_code: u32,
        location: &'a str,
        len: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        conntrack: Option<JsonConntrack>,
    },
    Retransmit { state: Option<&'a str>, count: u32 },
    Reset { direction: Option<&'a str>, state: Option<&'a str> },
    ConnectFail { state: Option<&'a str>, duration_ms: Option<f64> },
    Nat {
        nat: &'a str,
        orig_src: Option<&'a str>,
        orig_dst: Option<&'a str>,
        reply_src: Option<&'a str>,
        reply_dst: Option<&'a str>,
        reply_seen: bool,
        assured: bool,
        state: &'a str,
        backend: Option<&'a str>,
        backend_pod: Option<&'a str>,
        service: Option<&'a str>,
    },
    Mtu {
        event: &'a str,
        mtu: Option<u32>,
        len: u32,
        dev_mtu: Option<u32>,
        icmp_src: Option<String>,
        icmp_dst: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        hook: &'a str,
    },
}

/// A drop conntrack made (CONTRACT extension): the cause and the table's fill level.
#[derive(Serialize)]
struct JsonConntrack {
    cause: &'static str,
    entries: Option<u64>,
    max: Option<u64>,
}

/// The CONTRACT JSON object of `event`.
pub fn to_json(event: &Event) -> serde_json::Result<Vec<u8>> {
    let detail = match &event.detail {
        Detail::Drop(d) => JsonDetail::Drop {
            reason: &d.reason,
            reason_code: d.reason_code,
            location: &d.location,
            len: d.len,
            conntrack: d.conntrack.as_ref().map(|c| JsonConntrack { cause: c.cause.name(), entries: c.entries, max: c.max }),
        },
        Detail::Retransmit(t) => JsonDetail::Retransmit { state: t.state, count: t.count },
        Detail::Reset(t) => JsonDetail::Reset { direction: t.direction, state: t.state },
        Detail::ConnectFail(t) => JsonDetail::ConnectFail { state: t.state, duration_ms: t.duration_ms },
        Detail::Nat(n) => JsonDetail::Nat {
            nat: n.nat,
            orig_src: n.orig_src.as_deref(),
            orig_dst: n.orig_dst.as_deref(),
            reply_src: n.reply_src.as_deref(),
            reply_dst: n.reply_dst.as_deref(),
            reply_seen: n.reply_seen,
            assured: n.assured,
            state: n.state,
            backend: n.backend.as_deref(),
            backend_pod: n.backend_pod.as_deref(),
            service: n.service.as_deref(),
        },
        Detail::Mtu(m) => JsonDetail::Mtu {
            event: m.event,
            mtu: m.mtu,
            len: m.len,
            dev_mtu: m.dev_mtu,
            icmp_src: m.icmp_src.map(|a| a.to_string()),
            icmp_dst: m.icmp_dst.map(|a| a.to_string()),
            reason: m.reason.as_deref(),
            hook: m.hook,
        },
    };
    serde_json::to_vec(&JsonEvent {
        ts: rfc3339(event.ts_unix_ns),
        kind: event.detail.kind(),
        proto: event.flow.proto_name(),
        src: event.flow.src_endpoint(),
        dst: event.flow.dst_endpoint(),
        src_pod: event.src_pod.as_deref(),
        dst_pod: event.dst_pod.as_deref(),
        netns: event.netns,
        netns_pod: event.netns_pod.as_deref(),
        ifname: event.ifname.as_deref(),
        ifindex: event.ifindex,
        icmp_type: event.flow.icmp.map(|(t, _)| t),
        icmp_code: event.flow.icmp.map(|(_, c)| c),
        detail,
    })
}

pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        let line = to_json(event).map_err(io::Error::other)?;
        write_line(&mut self.out, &line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{ConntrackCause, ConntrackDrop, DropDetail, Flow, PacketCt};

    fn drop_event() -> Event {
        Event {
            ts_unix_ns: 1_795_314_601_123_456_789,
            flow: Flow {
                src: Some("10.0.0.1".parse().unwrap()),
                dst: Some("10.0.0.2".parse().unwrap()),
                sport: Some(40000),
                dport: Some(53),
                l4_proto: Some(17),
                ..Flow::default()
            },
            netns: Some(4026531840),
            ifindex: Some(3),
            ifname: Some("eth0".into()),
            src_pod: None,
            dst_pod: Some("kube-system/coredns-1".into()),
            netns_pod: None,
            detail: Detail::Drop(DropDetail {
                reason: "NETFILTER_DROP".into(),
                reason_code: 12,
                location: "nf_hook_slow+0x9c".into(),
                len: 60,
                packet_ct: PacketCt::Absent,
                conntrack: None,
            }),
        }
    }

    #[test]
    fn drop_event_has_contract_fields() {
        let v: serde_json::Value = serde_json::from_slice(&to_json(&drop_event()).unwrap()).unwrap();
        assert_eq!(v["ts"], "2026-11-22T02:30:01.123456789Z");
        assert_eq!(v["kind"], "drop");
        assert_eq!(v["proto"], "udp");
        assert_eq!(v["src"], "10.0.0.1:40000");
        assert_eq!(v["dst"], "10.0.0.2:53");
        assert!(v["src_pod"].is_null());
        assert_eq!(v["dst_pod"], "kube-system/coredns-1");
        assert_eq!(v["netns"], 4026531840u64);
        assert_eq!(v["ifname"], "eth0");
        assert_eq!(v["reason"], "NETFILTER_DROP");
        assert_eq!(v["location"], "nf_hook_slow+0x9c");
        assert_eq!(v["len"], 60);
        assert!(v.get("icmp_type").is_none());
        assert!(v.get("conntrack").is_none(), "only conntrack's drops carry it");
    }

    #[test]
    fn conntrack_drops_carry_cause_and_fill_level() {
        let mut e = drop_event();
        let Detail::Drop(d) = &mut e.detail else { unreachable!() };
        d.conntrack = Some(ConntrackDrop { cause: ConntrackCause::TableFull, entries: Some(64), max: Some(64) });
        let v: serde_json::Value = serde_json::from_slice(&to_json(&e).unwrap()).unwrap();
        assert_eq!(v["conntrack"], serde_json::json!({"cause": "table_full", "entries": 64, "max": 64}));
        assert_eq!(v["reason"], "NETFILTER_DROP");
    }

    fn nat_event(service: Option<&str>) -> Event {
        let mut e = crate::events::test_dnat_event();
        if let Detail::Nat(n) = &mut e.detail {
            n.service = service.map(str::to_string);
        }
        e
    }

    #[test]
    fn nat_events_name_the_service_or_null() {
        let v: serde_json::Value = serde_json::from_slice(&to_json(&nat_event(Some("kube-system/kube-dns"))).unwrap()).unwrap();
        assert_eq!(v["kind"], "nat");
        assert_eq!(v["service"], "kube-system/kube-dns");
        assert_eq!(v["orig_dst"], "10.96.0.10:53");
        let v: serde_json::Value = serde_json::from_slice(&to_json(&nat_event(None)).unwrap()).unwrap();
        assert!(v.get("service").is_some_and(serde_json::Value::is_null), "present, null: {v}");
    }

    #[test]
    fn mtu_event_has_contract_fields() {
        let mut e = drop_event();
        e.flow.l4_proto = Some(6);
        e.detail = Detail::Mtu(crate::events::MtuDetail {
            event: "frag_needed_sent",
            mtu: Some(1400),
            len: 1500,
            dev_mtu: Some(1400),
            icmp_src: None,
            icmp_dst: Some("10.0.0.1".parse().unwrap()),
            reason: None,
            hook: "icmp_send",
        });
        let v: serde_json::Value = serde_json::from_slice(&to_json(&e).unwrap()).unwrap();
        assert_eq!((v["kind"].as_str(), v["event"].as_str(), v["proto"].as_str()), (Some("mtu"), Some("frag_needed_sent"), Some("tcp")));
        assert_eq!((v["mtu"].as_u64(), v["len"].as_u64()), (Some(1400), Some(1500)));
        assert!(v["icmp_src"].is_null());
        assert_eq!(v["icmp_dst"], "10.0.0.1");
        assert!(v.get("reason").is_none());
    }

    #[test]
    fn sink_writes_one_line_per_event() {
        let mut buf = Vec::new();
        {
            let mut sink = JsonSink::new(&mut buf);
            sink.event(&drop_event()).unwrap();
            sink.event(&drop_event()).unwrap();
        }
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.ends_with('\n'));
    }
}
