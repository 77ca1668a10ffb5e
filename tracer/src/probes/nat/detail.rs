//! What a NAT event carries beyond the flow (the conntrack entry's tuples, state, backend and
//! Service), and how it is written: JSON fields, table row, timeline words, metric.

use std::{
    io,
    net::{IpAddr, SocketAddr},
};

use crate::{
    events::Event,
    output::{
        JsonFields,
        metrics::{Cardinality, split_pod},
        table::{RowParts, with_pod},
    },
};

/// A NATed connection, as conntrack holds it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NatDetail {
    pub nat: NatKind,
    pub orig_src: Option<String>,
    pub orig_dst: Option<String>,
    /// The original destination as an address, to find the Service it belongs to.
    pub orig_dst_addr: Option<SocketAddr>,
    pub reply_src: Option<String>,
    pub reply_dst: Option<String>,
    pub reply_seen: bool,
    pub assured: bool,
    pub state: NatState,
    /// Where DNAT sent the connection (the reply tuple's source), and its pod.
    pub backend: Option<String>,
    pub backend_ip: Option<IpAddr>,
    pub backend_pod: Option<String>,
    /// For DNAT, the Service whose address the original destination is (`namespace/name`).
    pub service: Option<String>,
    /// The conntrack entry's address: one connection within a run.
    pub conn: u64,
}

/// Which addresses conntrack rewrote: the CONTRACT's nat event `nat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatKind {
    /// The destination only (a Service address sent to a backend).
    Dnat,
    /// The source only (masquerading on the way out).
    Snat,
    /// Source and destination.
    Both,
}

impl NatKind {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Dnat => "dnat",
            Self::Snat => "snat",
            Self::Both => "both",
        }
    }
}

/// Where a NATed connection stands: the nat event's `state`, from conntrack's status bits
/// when it was seen, from the reply timeout, or from conntrack's destroy event when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatState {
    /// No reply seen yet.
    New,
    /// A reply was seen.
    Reply,
    /// Conntrack marked the connection assured (traffic both ways, past the handshake).
    Assured,
    /// No reply within --reply-timeout.
    NoReply,
    /// Ended by TCP closing it (FIN or RST).
    Closed,
    /// Ended unanswered: a handshake that did not finish, or a UDP/ICMP entry that expired.
    TimedOut,
    /// An answered entry removed otherwise: idle timeout, flush.
    Destroyed,
}

impl NatState {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Reply => "reply",
            Self::Assured => "assured",
            Self::NoReply => "no_reply",
            Self::Closed => "closed",
            Self::TimedOut => "timed_out",
            Self::Destroyed => "destroyed",
        }
    }
}

/// The table's header for NAT events.
pub(crate) const TABLE_HEADER: &str = "TIME(UTC)     NAT   STATE     ORIGINAL (CLIENT -> SERVICE)                                                  REPLY FROM (BACKEND)                    DEVICE";

impl NatDetail {
    /// The CONTRACT's nat fields.
    pub(crate) fn write_json(&self, w: &mut dyn JsonFields) -> io::Result<()> {
        w.str("nat", Some(self.nat.as_str()))?;
        w.str("orig_src", self.orig_src.as_deref())?;
        w.str("orig_dst", self.orig_dst.as_deref())?;
        w.str("reply_src", self.reply_src.as_deref())?;
        w.str("reply_dst", self.reply_dst.as_deref())?;
        w.bool("reply_seen", self.reply_seen)?;
        w.bool("assured", self.assured)?;
        w.str("state", Some(self.state.as_str()))?;
        w.str("backend", self.backend.as_deref())?;
        w.str("backend_pod", self.backend_pod.as_deref())?;
        w.str("service", self.service.as_deref())?;
        // One connection's events share it (diagnose joins them by it; recordings keep it).
        w.uint("conn", Some(self.conn))
    }

    /// One row under [`TABLE_HEADER`]: the client is the event's source pod.
    pub(crate) fn table_row(&self, event: &Event, row: &RowParts) -> String {
        let orig =
            format!("{} -> {}", with_pod(self.orig_src.clone(), event.src_pod.as_deref()), with_pod(self.orig_dst.clone(), self.service.as_deref()));
        let backend = with_pod(self.reply_src.clone(), self.backend_pod.as_deref());
        let RowParts { time, dev, .. } = row;
        format!("{time:<13} {:<5} {:<9} {orig:<77} {backend:<39} {dev}", self.nat.as_str(), self.state.as_str())
    }

    /// What `watch`'s timeline says after the flow.
    pub(crate) fn timeline(&self) -> String {
        format!(
            "{} {} {} -> {} => {}",
            self.nat.as_str(),
            self.state.as_str(),
            self.orig_src.as_deref().unwrap_or("-"),
            with_pod(self.orig_dst.clone(), self.service.as_deref()),
            with_pod(self.reply_src.clone(), self.backend_pod.as_deref())
        )
    }

    /// Counts a connection that got no reply in `tracer_nat_no_reply_total` (the other states
    /// are routine).
    pub(crate) fn observe(&self, event: &Event, limits: &mut Cardinality) {
        if self.state != NatState::NoReply {
            return;
        }
        let (ns, name) = split_pod(event.src_pod.as_ref());
        limits.increment(
            "tracer_nat_no_reply_total",
            vec![
                ("namespace", ns),
                ("pod", name),
                ("service", self.service.clone().unwrap_or_default()),
                ("backend_pod", self.backend_pod.clone().unwrap_or_default()),
            ],
        );
    }

    /// The help of its metric.
    pub(crate) fn describe_metrics() {
        metrics::describe_counter!(
            "tracer_nat_no_reply_total",
            "NATed connections with no reply within --reply-timeout, by client pod, Service and backend pod"
        );
    }
}

#[cfg(test)]
/// A DNAT event to a Service address (kube-dns), for tests.
pub(crate) fn test_dnat_event() -> Event {
    let ip = |s: &str| s.parse::<IpAddr>().ok();
    Event {
        ts_unix_ns: 1_795_314_601_123_456_789,
        flow: crate::events::Flow {
            src: ip("10.244.1.7"),
            dst: ip("10.244.2.9"),
            sport: Some(40000),
            dport: Some(53),
            l4_proto: Some(17),
            ..crate::events::Flow::default()
        },
        netns: Some(4026531840),
        ifindex: Some(3),
        ifname: Some("cni0".into()),
        src_pod: None,
        dst_pod: None,
        netns_pod: None,
        node: None,
        detail: crate::probes::Detail::Nat(NatDetail {
            nat: NatKind::Dnat,
            orig_src: Some("10.244.1.7:40000".into()),
            orig_dst: Some("10.96.0.10:53".into()),
            orig_dst_addr: Some(SocketAddr::from(([10, 96, 0, 10], 53))),
            reply_src: Some("10.244.2.9:53".into()),
            reply_dst: Some("10.244.1.7:40000".into()),
            reply_seen: false,
            assured: false,
            state: NatState::New,
            backend: Some("10.244.2.9:53".into()),
            backend_ip: ip("10.244.2.9"),
            backend_pod: None,
            service: None,
            conn: 1,
        }),
    }
}
