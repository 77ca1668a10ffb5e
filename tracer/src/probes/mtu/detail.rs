//! What an MTU event carries beyond the flow (the MTU, lengths, the ICMP error's addresses, the
//! hook), and how it is written: JSON fields, table row, timeline words, metric.

use std::{io, net::IpAddr};

use crate::{
    events::Event,
    output::{
        JsonFields,
        metrics::{Cardinality, split_pod},
        table::RowParts,
    },
};

/// An MTU failure (`tracer mtu`). The event's flow is the one whose packets are too big: for an
/// ICMP error, the original packet quoted in it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MtuDetail {
    pub event: MtuEventKind,
    /// The MTU that applies: the ICMP error's, or the route's / device's.
    pub mtu: Option<u32>,
    /// Packet length in bytes.
    pub len: u32,
    /// The MTU of the event's device.
    pub dev_mtu: Option<u32>,
    /// The ICMP error's own addresses (who reported the MTU, to whom).
    pub icmp_src: Option<IpAddr>,
    pub icmp_dst: Option<IpAddr>,
    /// Drop reason name, for the two drop events.
    pub reason: Option<String>,
    pub hook: MtuHook,
}

/// What an MTU event saw: the CONTRACT's mtu event `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MtuEventKind {
    /// This node sent a frag-needed / packet-too-big error.
    FragNeededSent,
    /// One arrived on a traced device.
    FragNeededReceived,
    /// One was dropped here, so its sender never learns the MTU.
    FragNeededDropped,
    /// A packet dropped with reason PKT_TOO_BIG.
    TooBigDrop,
    /// A packet larger than the MTU of the device it leaves by.
    Oversize,
    /// A value the BPF side sent that this build does not know (a newer BPF object).
    Unknown,
}

impl MtuEventKind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::FragNeededSent => "frag_needed_sent",
            Self::FragNeededReceived => "frag_needed_received",
            Self::FragNeededDropped => "frag_needed_dropped",
            Self::TooBigDrop => "too_big_drop",
            Self::Oversize => "oversize",
            Self::Unknown => "unknown",
        }
    }
}

/// Where an MTU event was seen: its JSON `hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MtuHook {
    /// The tp_btf/icmp_send tracepoint.
    IcmpSend,
    /// tc ingress of a traced device.
    TcIngress,
    /// tc egress of a traced device.
    TcEgress,
    /// The kfree_skb tracepoint (drops).
    KfreeSkb,
    /// A value the BPF side sent that this build does not know (a newer BPF object).
    Unknown,
}

impl MtuHook {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::IcmpSend => "icmp_send",
            Self::TcIngress => "tc_ingress",
            Self::TcEgress => "tc_egress",
            Self::KfreeSkb => "kfree_skb",
            Self::Unknown => "unknown",
        }
    }
}

/// The table's header for MTU events.
pub(crate) const TABLE_HEADER: &str = "TIME(UTC)     EVENT                 PROTO   SOURCE (SENDS TOO BIG)                  DESTINATION                             DEVICE           MTU    LEN  DETAIL";

impl MtuDetail {
    /// The CONTRACT's mtu fields (`reason` only for the two drop events).
    pub(crate) fn write_json(&self, w: &mut dyn JsonFields) -> io::Result<()> {
        w.str("event", Some(self.event.as_str()))?;
        w.uint("mtu", self.mtu.map(u64::from))?;
        w.uint("len", Some(self.len.into()))?;
        w.uint("dev_mtu", self.dev_mtu.map(u64::from))?;
        w.addr("icmp_src", self.icmp_src)?;
        w.addr("icmp_dst", self.icmp_dst)?;
        if let Some(reason) = &self.reason {
            w.str("reason", Some(reason))?;
        }
        w.str("hook", Some(self.hook.as_str()))
    }

    /// One row under [`TABLE_HEADER`].
    pub(crate) fn table_row(&self, row: &RowParts) -> String {
        let mtu = self.mtu.map_or_else(|| "-".to_string(), |v| v.to_string());
        let mut detail = Vec::new();
        if self.icmp_src.is_some() || self.icmp_dst.is_some() {
            let side = |a: Option<std::net::IpAddr>| a.map_or_else(|| "-".to_string(), |a| a.to_string());
            detail.push(format!("icmp {} -> {}", side(self.icmp_src), side(self.icmp_dst)));
        }
        if let Some(reason) = &self.reason {
            detail.push(reason.clone());
        }
        if let Some(dev_mtu) = self.dev_mtu.filter(|d| Some(*d) != self.mtu) {
            detail.push(format!("device mtu {dev_mtu}"));
        }
        detail.push(format!("via {}", self.hook.as_str()));
        let RowParts { time, proto, src, dst, dev, .. } = row;
        format!("{time:<13} {:<21} {proto:<7} {src:<39} {dst:<39} {dev:<16} {mtu:<5} {:>5}  {}", self.event.as_str(), self.len, detail.join(", "))
    }

    /// What `watch`'s timeline says after the flow.
    pub(crate) fn timeline(&self) -> String {
        let mut text = format!("{} len {}", self.event.as_str(), self.len);
        if let Some(mtu) = self.mtu {
            text.push_str(&format!(" mtu {mtu}"));
        }
        if let Some(reason) = &self.reason {
            text.push_str(&format!(" {reason}"));
        }
        text
    }

    /// Counts it in `tracer_mtu_events_total`.
    pub(crate) fn observe(&self, event: &Event, limits: &mut Cardinality) {
        let (ns, name) = split_pod(event.src_pod.as_ref().or(event.dst_pod.as_ref()));
        limits.increment("tracer_mtu_events_total", vec![("event", self.event.as_str().to_string()), ("namespace", ns), ("pod", name)]);
    }

    /// The help of its metric.
    pub(crate) fn describe_metrics() {
        metrics::describe_counter!("tracer_mtu_events_total", "MTU events (frag-needed sent/received/dropped, too-big drops, oversize), by pod");
    }
}
