//! A readable table: a header once, then one row per event.

use std::io::{self, Write};

use super::{Sink, write_line};
use crate::events::{Event, rfc3339};

pub(crate) struct TableSink<W: Write> {
    out: W,
    header_written: bool,
}

impl<W: Write> TableSink<W> {
    pub(crate) fn new(out: W) -> Self {
        Self { out, header_written: false }
    }
}

/// The columns every kind's table row has, formatted once; the family's detail lays them out.
pub(crate) struct RowParts {
    /// HH:MM:SS.mmm (UTC).
    pub time: String,
    /// The protocol, with ICMP's type and code or a TCP segment's flags.
    pub proto: String,
    /// The ends, with their pods.
    pub src: String,
    pub dst: String,
    pub dev: String,
    /// The namespace's pod, else its inode.
    pub netns: String,
}

/// One row, columns aligned with its kind's header ([`crate::probes::Detail::table_header`]).
pub(crate) fn row(event: &Event) -> String {
    let ts = rfc3339(event.ts_unix_ns);
    // HH:MM:SS.mmm is enough on a live screen; JSON has the full stamp.
    let time = ts.get(11..23).unwrap_or(&ts);
    let src = with_pod(event.flow.src_endpoint(), event.src_pod.as_deref());
    let dst = with_tunnel(with_pod(event.flow.dst_endpoint(), event.dst_pod.as_deref()), event);
    let dev = event.ifname.clone().unwrap_or_else(|| "-".into());
    // A pod's namespace is easier to read by its pod's name; the inode is in the JSON.
    let netns = match (&event.netns_pod, event.netns) {
        (Some(pod), _) => pod.clone(),
        (None, Some(inode)) => inode.to_string(),
        (None, None) => "-".into(),
    };
    let proto = proto_words(event);
    let time = time.to_string();
    event.detail.table_row(event, &RowParts { time, proto, src, dst, dev, netns })
}

/// The protocol as a row shows it: `icmp/TYPE/CODE`, `tcp/FLAGS` for a TCP segment read from a
/// packet (`tcp/ACK|FIN`), else its name.
fn proto_words(event: &Event) -> String {
    let proto = event.flow.proto_name();
    match (event.flow.icmp, event.flow.tcp_flags) {
        (Some((t, c)), _) => format!("{proto}/{t}/{c}"),
        (None, Some(flags)) => format!("{proto}/{}", flags.name()),
        (None, None) => proto,
    }
}

/// One timeline line for an event of any kind (`tracer watch`): time, kind, flow with pods,
/// then what the kind adds. Kinds have different columns, so the detail is words, not columns.
pub(crate) fn timeline_row(event: &Event) -> String {
    let ts = rfc3339(event.ts_unix_ns);
    let time = ts.get(11..23).unwrap_or(&ts);
    let src = with_pod(event.flow.src_endpoint(), event.src_pod.as_deref());
    let dst = with_tunnel(with_pod(event.flow.dst_endpoint(), event.dst_pod.as_deref()), event);
    let proto = proto_words(event);
    let mut detail = event.detail.timeline();
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

/// The flow's far end, then the tunnel it travelled in, compactly: `[vxlan:1 10.78.0.1->10.78.0.2]`.
fn with_tunnel(dst: String, event: &Event) -> String {
    match &event.flow.tunnel {
        Some(tunnel) => format!("{dst} [{}]", tunnel.short()),
        None => dst,
    }
}

/// `endpoint (namespace/name)`, or the endpoint alone.
pub(crate) fn with_pod(endpoint: Option<String>, pod: Option<&str>) -> String {
    let endpoint = endpoint.unwrap_or_else(|| "-".into());
    match pod {
        Some(pod) => format!("{endpoint} ({pod})"),
        None => endpoint,
    }
}

impl<W: Write> Sink for TableSink<W> {
    fn event(&mut self, event: &Event) -> io::Result<()> {
        if !self.header_written {
            write_line(&mut self.out, event.detail.table_header().as_bytes())?;
            self.header_written = true;
        }
        write_line(&mut self.out, row(event).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::Flow,
        probes::{
            Detail,
            drops::detail::{DropDetail, PacketCt},
            mtu::detail::{MtuEventKind, MtuHook},
        },
    };

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
            node: None,
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
        m.detail = Detail::Mtu(crate::probes::mtu::detail::MtuDetail {
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
        assert!(m.detail.table_header().starts_with("TIME(UTC)     EVENT"));
        for part in ["NO_SOCKET", "tcp", "10.0.0.1:1 (shop/web-0)", "10.0.0.2:2", "x+0x1"] {
            assert!(r.contains(part), "{part} missing in {r}");
        }
    }

    #[test]
    fn tcp_segments_show_their_flags_next_to_the_protocol() {
        let mut e = crate::probes::nat::detail::test_dnat_event();
        e.detail = Detail::Drop(DropDetail {
            reason: "NO_SOCKET".into(),
            reason_code: 3,
            location: "tcp_v4_rcv+0x99".into(),
            len: 40,
            packet_ct: PacketCt::Unread,
            conntrack: None,
        });
        e.flow.l4_proto = Some(6);
        e.flow.tcp_flags = Some(crate::events::TcpFlags(0x02));
        assert!(row(&e).contains(" tcp/SYN "), "{}", row(&e));
        assert!(timeline_row(&e).contains(" tcp/SYN "), "{}", timeline_row(&e));
        e.flow.tcp_flags = None;
        assert!(!row(&e).contains("tcp/"), "{}", row(&e));
    }

    #[test]
    fn nat_row_names_the_service_next_to_the_original_destination() {
        let mut e = crate::probes::nat::detail::test_dnat_event();
        if let Detail::Nat(n) = &mut e.detail {
            n.service = Some("kube-system/kube-dns".into());
        }
        let r = row(&e);
        assert!(r.contains("10.244.1.7:40000 -> 10.96.0.10:53 (kube-system/kube-dns)"), "{r}");
        assert!(r.contains("10.244.2.9:53"), "{r}");
    }
}
