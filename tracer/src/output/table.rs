//! A readable table: a header once, then one row per event.

use std::io::{self, Write};

use super::{Sink, write_line};
use crate::events::{Detail, Event, ResetDirection, rfc3339};

pub(crate) struct TableSink<W: Write> {
    out: W,
    header_written: bool,
}

impl<W: Write> TableSink<W> {
    pub(crate) fn new(out: W) -> Self {
        Self { out, header_written: false }
    }
}

const HEADER: &str = "TIME(UTC)     KIND  REASON                 PROTO   SOURCE                        DESTINATION                   DEVICE           NETNS              LEN  LOCATION";
const TCP_HEADER: &str = "TIME(UTC)     KIND          STATE         SOURCE                                  DESTINATION                             NETNS             DETAIL";

const NAT_HEADER: &str = "TIME(UTC)     NAT   STATE     ORIGINAL (CLIENT -> SERVICE)                                                  REPLY FROM (BACKEND)                    DEVICE";

const MTU_HEADER: &str = "TIME(UTC)     EVENT                 PROTO   SOURCE (SENDS TOO BIG)                  DESTINATION                             DEVICE           MTU    LEN  DETAIL";

fn header(event: &Event) -> &'static str {
    match event.detail {
        Detail::Drop(_) => HEADER,
        Detail::Mtu(_) => MTU_HEADER,
        Detail::Nat(_) => NAT_HEADER,
        Detail::Retransmit(_) | Detail::Reset(_) | Detail::ConnectFail(_) => TCP_HEADER,
    }
}

/// One row, columns aligned with [`HEADER`].
pub(crate) fn row(event: &Event) -> String {
    let ts = rfc3339(event.ts_unix_ns);
    // HH:MM:SS.mmm is enough on a live screen; JSON has the full stamp.
    let time = ts.get(11..23).unwrap_or(&ts);
    let src = with_pod(event.flow.src_endpoint(), event.src_pod.as_deref());
    let dst = with_pod(event.flow.dst_endpoint(), event.dst_pod.as_deref());
    let dev = event.ifname.clone().unwrap_or_else(|| "-".into());
    // A pod's namespace is easier to read by its pod's name; the inode is in the JSON.
    let netns = match (&event.netns_pod, event.netns) {
        (Some(pod), _) => pod.clone(),
        (None, Some(inode)) => inode.to_string(),
        (None, None) => "-".into(),
    };
    let mut proto = event.flow.proto_name();
    if let Some((t, c)) = event.flow.icmp {
        proto = format!("{proto}/{t}/{c}");
    }
    match &event.detail {
        Detail::Drop(d) => {
            let conntrack = d.conntrack.as_ref().map_or_else(String::new, |c| match (c.entries, c.max) {
                (Some(n), Some(max)) => format!("  [conntrack {}, table {n}/{max}]", c.cause.name()),
                _ => format!("  [conntrack {}]", c.cause.name()),
            });
            format!(
                "{time:<13} {:<5} {:<22} {proto:<7} {src:<29} {dst:<29} {dev:<16} {netns:<16} {:>5}  {}{conntrack}",
                "drop", d.reason, d.len, d.location
            )
        }
        Detail::Nat(n) => {
            let orig =
                format!("{} -> {}", with_pod(n.orig_src.clone(), event.src_pod.as_deref()), with_pod(n.orig_dst.clone(), n.service.as_deref()));
            let backend = with_pod(n.reply_src.clone(), n.backend_pod.as_deref());
            format!("{time:<13} {:<5} {:<9} {orig:<77} {backend:<39} {dev}", n.nat.as_str(), n.state.as_str())
        }
        Detail::Mtu(m) => {
            let mtu = m.mtu.map_or_else(|| "-".to_string(), |v| v.to_string());
            let mut detail = Vec::new();
            if m.icmp_src.is_some() || m.icmp_dst.is_some() {
                let side = |a: Option<std::net::IpAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
                detail.push(format!("icmp {} -> {}", side(m.icmp_src), side(m.icmp_dst)));
            }
            if let Some(reason) = &m.reason {
                detail.push(reason.clone());
            }
            if let Some(dev_mtu) = m.dev_mtu.filter(|d| Some(*d) != m.mtu) {
                detail.push(format!("device mtu {dev_mtu}"));
            }
            detail.push(format!("via {}", m.hook.as_str()));
            format!("{time:<13} {:<21} {proto:<7} {src:<39} {dst:<39} {dev:<16} {mtu:<5} {:>5}  {}", m.event.as_str(), m.len, detail.join(", "))
        }
        Detail::Retransmit(t) | Detail::Reset(t) | Detail::ConnectFail(t) => {
            let detail = match &event.detail {
                Detail::Retransmit(_) => format!("#{} for this flow", t.count),
                Detail::Reset(_) => t.direction.map_or("-", ResetDirection::as_str).to_string(),
                _ => t.duration_ms.map_or_else(|| "gave up".to_string(), |ms| format!("gave up after {:.1}s", ms / 1000.0)),
            };
            format!("{time:<13} {:<13} {:<13} {src:<39} {dst:<39} {netns:<17} {detail}", event.detail.kind(), t.state.unwrap_or("-"))
        }
    }
}

/// One timeline line for an event of any kind (`tracer watch`): time, kind, flow with pods,
/// then what the kind adds. Kinds have different columns, so the detail is words, not columns.
pub(crate) fn timeline_row(event: &Event) -> String {
    let ts = rfc3339(event.ts_unix_ns);
    let time = ts.get(11..23).unwrap_or(&ts);
    let src = with_pod(event.flow.src_endpoint(), event.src_pod.as_deref());
    let dst = with_pod(event.flow.dst_endpoint(), event.dst_pod.as_deref());
    let mut proto = event.flow.proto_name();
    if let Some((t, c)) = event.flow.icmp {
        proto = format!("{proto}/{t}/{c}");
    }
    let mut detail = match &event.detail {
        Detail::Drop(d) => {
            let mut text = format!("{} at {}, {} bytes", d.reason, d.location, d.len);
            if let Some(c) = &d.conntrack {
                text.push_str(&format!(" [conntrack {}", c.cause.name()));
                if let (Some(n), Some(max)) = (c.entries, c.max) {
                    text.push_str(&format!(", table {n}/{max}"));
                }
                text.push(']');
            }
            text
        }
        Detail::Retransmit(t) => format!("{} #{}", t.state.unwrap_or("-"), t.count),
        Detail::Reset(t) => format!("{} in {}", t.direction.map_or("-", ResetDirection::as_str), t.state.unwrap_or("no socket")),
        Detail::ConnectFail(t) => match t.duration_ms {
            Some(ms) => format!("{} gave up after {:.1}s", t.state.unwrap_or("-"), ms / 1000.0),
            None => format!("{} gave up", t.state.unwrap_or("-")),
        },
        Detail::Nat(n) => format!(
            "{} {} {} -> {} => {}",
            n.nat.as_str(),
            n.state.as_str(),
            n.orig_src.as_deref().unwrap_or("-"),
            with_pod(n.orig_dst.clone(), n.service.as_deref()),
            with_pod(n.reply_src.clone(), n.backend_pod.as_deref())
        ),
        Detail::Mtu(m) => {
            let mut text = format!("{} len {}", m.event.as_str(), m.len);
            if let Some(mtu) = m.mtu {
                text.push_str(&format!(" mtu {mtu}"));
            }
            if let Some(reason) = &m.reason {
                text.push_str(&format!(" {reason}"));
            }
            text
        }
    };
    if let Some(dev) = &event.ifname {
        detail.push_str(&format!(" on {dev}"));
    }
    if let Some(pod) = &event.netns_pod {
        detail.push_str(&format!(" (in {pod})"));
    }
    format!("{time:<13} {:<13} {proto:<6} {src} -> {dst}  {detail}", event.detail.kind())
}

pub(crate) const TIMELINE_HEADER: &str = "TIME(UTC)     KIND          PROTO  FLOW  DETAIL";

/// `tracer watch`'s table: every kind in one stream.
pub(crate) struct TimelineSink<W: Write> {
    out: W,
    header_written: bool,
}

impl<W: Write> TimelineSink<W> {
    pub(crate) fn new(out: W) -> Self {
        Self { out, header_written: false }
    }
}

impl<W: Write> Sink for TimelineSink<W> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        if !self.header_written {
            write_line(&mut self.out, TIMELINE_HEADER.as_bytes())?;
            self.header_written = true;
        }
        write_line(&mut self.out, timeline_row(event).as_bytes())
    }
}

fn with_pod(endpoint: Option<String>, pod: Option<&str>) -> String {
    let endpoint = endpoint.unwrap_or_else(|| "-".into());
    match pod {
        Some(pod) => format!("{endpoint} ({pod})"),
        None => endpoint,
    }
}

impl<W: Write> Sink for TableSink<W> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        if !self.header_written {
            write_line(&mut self.out, header(event).as_bytes())?;
            self.header_written = true;
        }
        write_line(&mut self.out, row(event).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{DropDetail, Flow, MtuEventKind, MtuHook, PacketCt};

    #[test]
    fn row_shows_reason_flow_device_location() {
        let e = Event {
            ts_unix_ns: 1_795_314_601_123_456_789,
            flow: Flow {
                src: Some("10.0.0.1".parse().unwrap()),
                dst: Some("10.0.0.2".parse().unwrap()),
                sport: Some(1),
                dport: Some(2),
                l4_proto: Some(6),
                ..Flow::default()
            },
            netns: None,
            ifindex: None,
            ifname: None,
            src_pod: Some("shop/web-0".into()),
            dst_pod: None,
            netns_pod: None,
            detail: Detail::Drop(DropDetail {
                reason: "NO_SOCKET".into(),
                reason_code: 3,
                location: "x+0x1".into(),
                len: 9,
                packet_ct: PacketCt::Unread,
                conntrack: None,
            }),
        };
        let r = row(&e);
        assert!(r.starts_with("02:30:01.123 "));
        let mut m = e;
        m.ifname = Some("eth0".into());
        m.detail = Detail::Mtu(crate::events::MtuDetail {
            event: MtuEventKind::FragNeededDropped,
            mtu: Some(1400),
            len: 1500,
            dev_mtu: Some(1500),
            icmp_src: Some("10.0.0.254".parse().unwrap()),
            icmp_dst: Some("10.0.0.1".parse().unwrap()),
            reason: Some("NETFILTER_DROP".into()),
            hook: MtuHook::KfreeSkb,
        });
        let mtu_row = row(&m);
        for part in [
            "frag_needed_dropped",
            "10.0.0.1:1 (shop/web-0)",
            "eth0",
            "1400",
            "1500",
            "icmp 10.0.0.254 -> 10.0.0.1",
            "NETFILTER_DROP",
            "device mtu 1500",
        ] {
            assert!(mtu_row.contains(part), "{part} missing in {mtu_row}");
        }
        assert!(header(&m).starts_with("TIME(UTC)     EVENT"));
        for part in ["NO_SOCKET", "tcp", "10.0.0.1:1 (shop/web-0)", "10.0.0.2:2", "x+0x1"] {
            assert!(r.contains(part), "{part} missing in {r}");
        }
    }

    #[test]
    fn nat_row_names_the_service_next_to_the_original_destination() {
        let mut e = crate::events::test_dnat_event();
        if let Detail::Nat(n) = &mut e.detail {
            n.service = Some("kube-system/kube-dns".into());
        }
        let r = row(&e);
        assert!(r.contains("10.244.1.7:40000 -> 10.96.0.10:53 (kube-system/kube-dns)"), "{r}");
        assert!(r.contains("10.244.2.9:53"), "{r}");
    }
}
