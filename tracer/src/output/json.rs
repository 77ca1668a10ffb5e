//! JSON Lines: one object per event, flushed per event, fields exactly as CONTRACT.md says.

use std::{
    io::{self, Write},
    net::IpAddr,
};

use serde::Serialize;
use serde_json::Value;

use super::{JsonFields, Sink};
use crate::events::{Event, Flow, rfc3339};

/// A flow's protocol: `(l4_proto, ethertype)`.
type ProtoId = (Option<u8>, u16);

/// Encodes events as CONTRACT JSON lines into one buffer it reuses, so an event costs no
/// allocation: each field is written straight into the buffer (numbers and strings exactly as
/// serde_json writes them, escapes included), and what repeats from event to event (the
/// timestamp's second, the protocol's name) is formatted again only when it changes.
#[derive(Default)]
pub(crate) struct Encoder {
    buf: Vec<u8>,
    /// The second of the last timestamp, and its RFC 3339 text up to the fraction
    /// (`2026-11-22T02:30:01.`).
    second: Option<(i128, String)>,
    /// The last flow's `(l4_proto, ethertype)`, and its `proto` as a JSON string.
    proto: Option<(ProtoId, Vec<u8>)>,
    /// A nested object was just opened: its first key has no comma before it.
    nested_first: bool,
}

impl JsonFields for Encoder {
    fn str(&mut self, key: &str, value: Option<&str>) -> io::Result<()> {
        self.field(key, &value)
    }

    fn uint(&mut self, key: &str, value: Option<u64>) -> io::Result<()> {
        self.field(key, &value)
    }

    fn float(&mut self, key: &str, value: Option<f64>) -> io::Result<()> {
        self.field(key, &value)
    }

    fn bool(&mut self, key: &str, value: bool) -> io::Result<()> {
        self.field(key, &value)
    }

    fn addr(&mut self, key: &str, ip: Option<IpAddr>) -> io::Result<()> {
        Encoder::addr(self, key, ip, None);
        Ok(())
    }

    fn begin(&mut self, key: &str) -> io::Result<()> {
        self.key(key);
        self.buf.push(b'{');
        self.nested_first = true;
        Ok(())
    }

    fn end(&mut self) -> io::Result<()> {
        self.nested_first = false;
        self.buf.push(b'}');
        Ok(())
    }
}

impl Encoder {
    /// The JSON line of `event`, newline included.
    pub(crate) fn line(&mut self, event: &Event) -> io::Result<&[u8]> {
        self.buf.clear();
        self.buf.extend_from_slice(b"{\"ts\":");
        self.ts(event.ts_unix_ns);
        self.field("kind", event.detail.kind())?;
        self.proto(&event.flow)?;
        self.addr("src", event.flow.src, event.flow.sport);
        self.addr("dst", event.flow.dst, event.flow.dport);
        self.field("src_pod", &event.src_pod)?;
        self.field("dst_pod", &event.dst_pod)?;
        self.field("netns", &event.netns)?;
        self.field("netns_pod", &event.netns_pod)?;
        self.field("ifname", &event.ifname)?;
        self.field("ifindex", &event.ifindex)?;
        self.field("node", &event.node.as_deref())?;
        if let Some((icmp_type, icmp_code)) = event.flow.icmp {
            self.field("icmp_type", &icmp_type)?;
            self.field("icmp_code", &icmp_code)?;
        }
        if let Some(flags) = event.flow.tcp_flags {
            self.field("tcp_flags", &flags.name())?;
        }
        if let Some(tunnel) = &event.flow.tunnel {
            super::write_tunnel(tunnel, self)?;
        }
        event.detail.write_json(self)?;
        self.buf.extend_from_slice(b"}\n");
        Ok(&self.buf)
    }

    /// `,"key":` (every key but the first, `ts`, and the first of a nested object). Keys are
    /// plain ASCII: nothing to escape.
    fn key(&mut self, key: &str) {
        if std::mem::take(&mut self.nested_first) {
            self.buf.push(b'"');
        } else {
            self.buf.extend_from_slice(b",\"");
        }
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    /// A field as serde_json writes its value: numbers, escaped strings, null for None.
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> io::Result<()> {
        self.key(key);
        Ok(serde_json::to_writer(&mut self.buf, value)?)
    }

    /// An address as a JSON string (`IP:PORT`, `[IPv6]:PORT` or a bare IP, as
    /// [`Flow::src_endpoint`] has it), or null. Addresses have nothing to escape; IPv4, the
    /// common case, is written digit by digit.
    fn addr(&mut self, key: &str, ip: Option<IpAddr>, port: Option<u16>) {
        self.key(key);
        // Writing to a Vec cannot fail.
        let _ = match (ip, port) {
            (None, _) => return self.buf.extend_from_slice(b"null"),
            (Some(IpAddr::V4(v4)), port) => {
                let [a, b, c, d] = v4.octets();
                self.buf.push(b'"');
                for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                    if i > 0 {
                        self.buf.push(b'.');
                    }
                    decimal(&mut self.buf, octet.into(), 1);
                }
                if let Some(p) = port {
                    self.buf.push(b':');
                    decimal(&mut self.buf, p.into(), 1);
                }
                return self.buf.push(b'"');
            }
            (Some(ip), Some(p)) => write!(self.buf, "\"[{ip}]:{p}\""),
            (Some(ip), None) => write!(self.buf, "\"{ip}\""),
        };
    }

    /// The timestamp as [`rfc3339`] writes it; the date and time of day are formatted once a second.
    fn ts(&mut self, unix_ns: i128) {
        let nanos = unix_ns.rem_euclid(1_000_000_000);
        let second = unix_ns - nanos;
        let (_, text) = match &mut self.second {
            Some(cached) if cached.0 == second => cached,
            slot => {
                let mut text = rfc3339(second);
                // Without the fraction's nine zeros and `Z`.
                text.truncate(text.len() - 10);
                slot.insert((second, text))
            }
        };
        self.buf.push(b'"');
        self.buf.extend_from_slice(text.as_bytes());
        decimal(&mut self.buf, nanos as u32, 9);
        self.buf.extend_from_slice(b"Z\"");
    }

    /// `proto`, named by [`Flow::proto_name`] when it differs from the last event's.
    fn proto(&mut self, flow: &Flow) -> io::Result<()> {
        let id = (flow.l4_proto, flow.ethertype);
        self.key("proto");
        if let Some((last, text)) = &self.proto
            && *last == id
        {
            self.buf.extend_from_slice(text);
            return Ok(());
        }
        let mut text = Vec::new();
        serde_json::to_writer(&mut text, &flow.proto_name())?;
        self.buf.extend_from_slice(&text);
        self.proto = Some((id, text));
        Ok(())
    }
}

/// The CONTRACT JSON object of `event` (without the line's newline).
pub(crate) fn to_json(event: &Event) -> io::Result<Vec<u8>> {
    let mut encoder = Encoder::default();
    let line = encoder.line(event)?;
    Ok(line[..line.len() - 1].to_vec())
}

/// `n` in decimal, zero-padded to `width` digits (at most 10).
fn decimal(buf: &mut Vec<u8>, n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut start = digits.len();
    let mut rest = n;
    while rest > 0 || start > digits.len() - width.max(1) {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    buf.extend_from_slice(&digits[start..]);
}

/// Writes each event's line with one write and flushes it, so a reader sees it when it happens;
/// or, [`JsonSink::batched`], flushes only when the event loop says a batch ended.
pub(crate) struct JsonSink<W: Write> {
    out: W,
    encoder: Encoder,
    flush_each: bool,
}

impl<W: Write> JsonSink<W> {
    pub(crate) fn new(out: W) -> Self {
        Self { out, encoder: Encoder::default(), flush_each: true }
    }

    /// A sink whose lines reach `out`'s reader at [`Sink::flush`] (a buffered `out` then makes
    /// one write per batch).
    pub(crate) fn batched(out: W) -> Self {
        Self { out, encoder: Encoder::default(), flush_each: false }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        let line = self.encoder.line(event)?;
        self.out.write_all(line)?;
        if self.flush_each { self.out.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Fields every event has (CONTRACT), shown in the fixed columns of [`event_text`].
const COMMON_FIELDS: &[&str] = &["ts", "kind", "proto", "src", "dst", "src_pod", "dst_pod", "netns", "netns_pod", "ifindex", "reason_code", "node"];
/// The kind's fields a reader looks for first; the rest follow by name.
const FIRST_FIELDS: &[&str] = &["reason", "event", "nat", "state", "direction", "location"];

/// An event read back as JSON (a Job's log) as one timeline line: the columns of
/// [`super::table::TIMELINE_HEADER`], then the kind's own fields as `key=value`, whatever they
/// are, so that fields added later show up too. None if `v` is not an event.
pub(crate) fn event_text(v: &Value) -> Option<String> {
    let ts = v.get("ts")?.as_str()?;
    let kind = v.get("kind")?.as_str()?;
    let time = ts.get(11..23).unwrap_or(ts);
    let text = |k: &str| v.get(k).and_then(Value::as_str);
    let end = |addr: &str, pod: &str| match (text(addr), text(pod)) {
        (Some(a), Some(p)) => format!("{a} ({p})"),
        (Some(a), None) => a.to_string(),
        (None, _) => "-".to_string(),
    };
    let mut fields: Vec<(&String, &Value)> =
        v.as_object()?.iter().filter(|(k, val)| !COMMON_FIELDS.contains(&k.as_str()) && !val.is_null()).collect();
    fields.sort_by_key(|(k, _)| FIRST_FIELDS.iter().position(|f| f == k).unwrap_or(FIRST_FIELDS.len()));
    let detail: Vec<String> = fields
        .into_iter()
        .map(|(k, val)| match val {
            Value::String(s) => format!("{k}={s}"),
            Value::Object(t) if k == "tunnel" => {
                let text = |f: &str| t.get(f).and_then(Value::as_str).unwrap_or("-");
                let vni = t.get("vni").and_then(Value::as_u64).map(|v| format!(":{v}")).unwrap_or_default();
                format!("tunnel={}{vni} {}->{}", text("type"), text("src"), text("dst"))
            }
            other => format!("{k}={other}"),
        })
        .collect();
    Some(format!(
        "{time:<13} {kind:<13} {:<6} {} -> {}  {}",
        text("proto").unwrap_or("-"),
        end("src", "src_pod"),
        end("dst", "dst_pod"),
        detail.join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::Flow,
        probes::{
            Detail,
            drops::detail::{ConntrackCause, ConntrackDrop, DropDetail, PacketCt},
            mtu::detail::{MtuDetail, MtuEventKind, MtuHook},
            nat::detail::{NatKind, NatState},
            tcp::detail::TcpDetail,
        },
    };

    /// The serde-derived encoder the [`Encoder`] replaced, kept as the reference its output must
    /// equal byte for byte.
    mod reference {
        use std::{io, net::IpAddr};

        use serde::Serialize;
        use serde_json::Value;

        use crate::{
            events::{Event, rfc3339},
            output::JsonFields,
        };

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
            node: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            icmp_type: Option<u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            icmp_code: Option<u8>,
            #[serde(skip_serializing_if = "Option::is_none")]
            tcp_flags: Option<String>,
            #[serde(flatten)]
            detail: Ordered,
        }

        /// A detail's field as the reference writes it: serde_json values, objects kept in the
        /// order their fields were written.
        enum Field {
            Value(Value),
            Object(Ordered),
        }

        #[derive(Default)]
        struct Ordered(Vec<(String, Field)>);

        impl Serialize for Ordered {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap as _;
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (key, field) in &self.0 {
                    match field {
                        Field::Value(v) => map.serialize_entry(key, v)?,
                        Field::Object(o) => map.serialize_entry(key, o)?,
                    }
                }
                map.end()
            }
        }

        /// The family's fields through [`JsonFields`], into serde_json values (addresses through
        /// `Display`, not the encoder's digit writer).
        #[derive(Default)]
        struct Collect {
            top: Ordered,
            open: Option<(String, Ordered)>,
        }

        impl Collect {
            fn push(&mut self, key: &str, value: Value) -> io::Result<()> {
                let target = match &mut self.open {
                    Some((_, o)) => o,
                    None => &mut self.top,
                };
                target.0.push((key.to_string(), Field::Value(value)));
                Ok(())
            }
        }

        impl JsonFields for Collect {
            fn str(&mut self, key: &str, value: Option<&str>) -> io::Result<()> {
                self.push(key, serde_json::to_value(value)?)
            }

            fn uint(&mut self, key: &str, value: Option<u64>) -> io::Result<()> {
                self.push(key, serde_json::to_value(value)?)
            }

            fn float(&mut self, key: &str, value: Option<f64>) -> io::Result<()> {
                self.push(key, serde_json::to_value(value)?)
            }

            fn bool(&mut self, key: &str, value: bool) -> io::Result<()> {
                self.push(key, Value::Bool(value))
            }

            fn addr(&mut self, key: &str, ip: Option<IpAddr>) -> io::Result<()> {
                self.push(key, ip.map_or(Value::Null, |a| Value::String(a.to_string())))
            }

            fn begin(&mut self, key: &str) -> io::Result<()> {
                self.open = Some((key.to_string(), Ordered::default()));
                Ok(())
            }

            fn end(&mut self) -> io::Result<()> {
                if let Some((key, object)) = self.open.take() {
                    self.top.0.push((key, Field::Object(object)));
                }
                Ok(())
            }
        }

        pub(super) fn to_json(event: &Event) -> Vec<u8> {
            let mut detail = Collect::default();
            if let Some(tunnel) = &event.flow.tunnel {
                crate::output::write_tunnel(tunnel, &mut detail).expect("collecting fields");
            }
            event.detail.write_json(&mut detail).expect("collecting fields");
            let detail = detail.top;
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
                node: event.node.as_deref(),
                icmp_type: event.flow.icmp.map(|(t, _)| t),
                icmp_code: event.flow.icmp.map(|(_, c)| c),
                tcp_flags: event.flow.tcp_flags.map(|f| f.name()),
                detail,
            })
            .expect("serializable")
        }
    }

    /// Events of every kind, with what is unusual in each field: strings that need escapes,
    /// IPv6, no ports, no addresses, nulls, ICMP type and code, timestamps in other seconds.
    fn every_kind() -> Vec<Event> {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let tcp = |state, count, direction, duration_ms| TcpDetail { state, count, direction, duration_ms, syns_sent: None };
        let mut events = vec![drop_event()];

        let mut e = drop_event();
        let Detail::Drop(d) = &mut e.detail else { unreachable!() };
        d.reason = "odd \"reason\"\\ with\ttab\nnewline \u{1}\u{1f} é ☃ 🦀 \u{7f}".into();
        d.location = "</script>+0x1".into();
        d.conntrack = Some(ConntrackDrop { cause: ConntrackCause::Invalid, entries: None, max: Some(262_144) });
        e.src_pod = Some("ns/\"quoted\"\\pod".into());
        e.netns_pod = Some("ns/a\u{2028}b".into());
        e.ifname = Some("eth\u{0}0".into());
        e.node = Some("node-\"a\"".into());
        events.push(e.clone());
        let mut tunnelled = drop_event();
        tunnelled.flow.tunnel = Some(crate::events::Tunnel {
            kind: crate::events::TunnelKind::Vxlan,
            vni: Some(1),
            src: "10.78.0.228".parse().expect("ip"),
            dst: "10.78.0.20".parse().expect("ip"),
            sport: Some(59694),
            dport: Some(8472),
        });
        events.push(tunnelled.clone());
        tunnelled.flow.tunnel = Some(crate::events::Tunnel {
            kind: crate::events::TunnelKind::Ipip,
            vni: None,
            src: "fd00::1".parse().expect("ip"),
            dst: "fd00::2".parse().expect("ip"),
            sport: None,
            dport: None,
        });
        events.push(tunnelled);
        for cause in [ConntrackCause::TableFull, ConntrackCause::InsertFailed] {
            let Detail::Drop(d) = &mut e.detail else { unreachable!() };
            d.conntrack = Some(ConntrackDrop { cause, entries: Some(u64::MAX), max: None });
            e.ts_unix_ns += 1_000_000_000;
            events.push(e.clone());
        }

        // IPv6 with ports, then ICMPv6 (no ports, type and code), then not IP at all.
        let mut e = drop_event();
        e.flow =
            Flow { src: ip("fe80::1"), dst: ip("2001:db8::ffff:1.2.3.4"), sport: Some(0), dport: Some(65535), l4_proto: Some(6), ..Flow::default() };
        e.ts_unix_ns = 0;
        events.push(e.clone());
        // TCP segments with their flags: one, several, none set.
        for flags in [0x02, 0x11, 0x00, 0xff] {
            e.flow.tcp_flags = Some(crate::events::TcpFlags(flags));
            events.push(e.clone());
        }
        e.flow =
            Flow { src: ip("255.255.255.255"), dst: ip("0.10.100.9"), sport: Some(65535), dport: Some(0), l4_proto: Some(17), ..Flow::default() };
        events.push(e.clone());
        e.flow = Flow { src: ip("::1"), dst: ip("::"), l4_proto: Some(58), icmp: Some((1, 4)), ..Flow::default() };
        e.ts_unix_ns = -1;
        events.push(e.clone());
        e.flow = Flow { src: ip("10.0.0.1"), dst: ip("10.0.0.2"), l4_proto: Some(1), icmp: Some((0, 0)), ..Flow::default() };
        events.push(e.clone());
        for (l4_proto, ethertype) in [(None, 0x0806), (None, 0x1234), (None, 0), (Some(99), 0x0800), (Some(132), 0x86dd)] {
            e.flow = Flow { l4_proto, ethertype, ..Flow::default() };
            e.netns = None;
            e.ifindex = None;
            e.ifname = None;
            e.dst_pod = None;
            e.ts_unix_ns = 1_709_164_800_000_000_001;
            events.push(e.clone());
        }

        let mut e = drop_event();
        e.flow.l4_proto = Some(6);
        e.src_pod = Some("a/b".into());
        for (ts, detail) in [
            (1, Detail::Retransmit(tcp(Some("ESTABLISHED"), 3, None, None))),
            (2, Detail::Retransmit(tcp(None, u32::MAX, None, None))),
            (3, Detail::Reset(tcp(Some("SYN_SENT"), 0, Some(crate::probes::tcp::detail::ResetDirection::Received), None))),
            (4, Detail::Reset(tcp(None, 0, None, None))),
            (5, Detail::ConnectFail(tcp(Some("SYN_SENT"), 0, None, Some(1000.0)))),
            (6, Detail::ConnectFail(tcp(None, 0, None, Some(0.123_456_789)))),
            (7, Detail::ConnectFail(tcp(None, 0, None, Some(1e21)))),
            (8, Detail::ConnectFail(tcp(None, 0, None, Some(f64::NAN)))),
            (9, Detail::ConnectFail(tcp(None, 0, None, None))),
        ] {
            e.ts_unix_ns = 1_795_314_601_123_456_789 + ts * 333_333_333;
            e.detail = detail;
            events.push(e.clone());
        }

        events.push(nat_event(Some("kube-system/kube-dns")));
        let mut e = nat_event(None);
        let Detail::Nat(n) = &mut e.detail else { unreachable!() };
        (n.orig_src, n.orig_dst, n.reply_src, n.reply_dst, n.backend) = (None, None, None, None, None);
        (n.reply_seen, n.assured, n.nat, n.state) = (true, true, NatKind::Both, NatState::Assured);
        n.backend_pod = Some("ns/\"backend\"".into());
        events.push(e);

        let mtu = |reason: Option<&str>, icmp_src, icmp_dst| MtuDetail {
            event: MtuEventKind::FragNeededDropped,
            mtu: Some(1400),
            len: 1500,
            dev_mtu: None,
            icmp_src,
            icmp_dst,
            reason: reason.map(str::to_string),
            hook: MtuHook::KfreeSkb,
        };
        let mut e = drop_event();
        for detail in [mtu(None, None, None), mtu(Some("PKT_TOO_BIG"), ip("2001:db8::1"), ip("10.0.0.1")), mtu(Some("a\"b"), ip("10.0.0.9"), None)] {
            e.detail = Detail::Mtu(detail);
            events.push(e.clone());
        }
        events
    }

    #[test]
    fn encoder_writes_what_serde_wrote() {
        let mut encoder = Encoder::default();
        for event in every_kind().iter().chain(every_kind().iter().rev()) {
            let mut expected = reference::to_json(event);
            expected.push(b'\n');
            let line = encoder.line(event).unwrap();
            assert_eq!(String::from_utf8_lossy(line), String::from_utf8_lossy(&expected), "{event:?}");
        }
    }

    #[test]
    fn decimals() {
        for (n, width, text) in [
            (0, 1, "0"),
            (7, 1, "7"),
            (65535, 1, "65535"),
            (u32::MAX, 1, "4294967295"),
            (0, 9, "000000000"),
            (123_456_789, 9, "123456789"),
            (1, 9, "000000001"),
        ] {
            let mut buf = Vec::new();
            decimal(&mut buf, n, width);
            assert_eq!(buf, text.as_bytes());
        }
    }

    #[test]
    fn encoder_reuses_its_buffer() {
        let mut encoder = Encoder::default();
        let event = drop_event();
        let first = encoder.line(&event).unwrap().as_ptr();
        for _ in 0..3 {
            assert_eq!(encoder.line(&event).unwrap().as_ptr(), first);
        }
    }

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
            node: None,
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
    fn an_event_read_back_from_json_is_one_timeline_line() {
        let v: Value = serde_json::from_slice(&to_json(&drop_event()).unwrap()).unwrap();
        let line = event_text(&v).expect("an event");
        assert!(line.starts_with("02:30:01.123  drop          udp    10.0.0.1:40000 -> 10.0.0.2:53 (kube-system/coredns-1)  reason=NETFILTER_DROP location=nf_hook_slow+0x9c "), "{line}");
        assert!(line.contains("len=60") && line.contains("ifname=eth0") && !line.contains("reason_code"), "{line}");
        assert_eq!(event_text(&serde_json::json!({"findings": []})), None, "not an event");
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
        assert!(v.get("tcp_flags").is_none(), "UDP has no flags");
        assert!(v.get("conntrack").is_none(), "only conntrack's drops carry it");
    }

    #[test]
    fn tcp_segments_carry_their_flags_by_name() {
        let mut e = drop_event();
        e.flow.l4_proto = Some(6);
        e.flow.tcp_flags = Some(crate::events::TcpFlags(0x11));
        let v: serde_json::Value = serde_json::from_slice(&to_json(&e).unwrap()).unwrap();
        assert_eq!(v["tcp_flags"], "ACK|FIN");
        e.flow.tcp_flags = None;
        let v: serde_json::Value = serde_json::from_slice(&to_json(&e).unwrap()).unwrap();
        assert!(v.get("tcp_flags").is_none(), "a flow without a segment (a socket's) has no flags: {v}");
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
        let mut e = crate::probes::nat::detail::test_dnat_event();
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
        e.detail = Detail::Mtu(crate::probes::mtu::detail::MtuDetail {
            event: MtuEventKind::FragNeededSent,
            mtu: Some(1400),
            len: 1500,
            dev_mtu: Some(1400),
            icmp_src: None,
            icmp_dst: Some("10.0.0.1".parse().unwrap()),
            reason: None,
            hook: MtuHook::IcmpSend,
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
