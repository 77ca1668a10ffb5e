//! What a TCP event (retransmit, reset, connect_fail) carries beyond the flow, and how each kind
//! is written: JSON fields, table row, timeline words, metrics.

use std::io;

use crate::{
    events::Event,
    output::{
        JsonFields,
        metrics::{Cardinality, split_pod},
        table::RowParts,
    },
};

/// The family's three event kinds, which share [`TcpDetail`] and differ in what they show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TcpKind {
    Retransmit,
    Reset,
    ConnectFail,
}

impl TcpKind {
    /// The CONTRACT's `kind`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Retransmit => "retransmit",
            Self::Reset => "reset",
            Self::ConnectFail => "connect_fail",
        }
    }
}

/// A TCP event's socket facts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TcpDetail {
    /// TCP state name (`SYN_SENT`, `ESTABLISHED`, ...): the socket's state at the event; for
    /// connect_fail the state it left. None when there was no socket (a reset to a closed port).
    pub state: Option<&'static str>,
    /// Retransmits of this flow so far in this run (retransmit).
    pub count: u32,
    /// Which way the reset went (reset; None for the other kinds).
    pub direction: Option<ResetDirection>,
    /// How long the connect tried, in ms (connect_fail; None when its start was not seen).
    pub duration_ms: Option<f64>,
    /// The SYNs the connect sent (connect_fail; None where the kernel does not say). 0: it
    /// failed on this node before sending anything, so no answer was missing.
    pub syns_sent: Option<u32>,
}

/// Which way a TCP reset went: the CONTRACT's reset event `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetDirection {
    /// This node's socket sent it.
    Sent,
    /// It arrived for one of this node's sockets.
    Received,
}

impl ResetDirection {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Received => "received",
        }
    }
}

/// The kernel's TCP state names (include/net/tcp_states.h; the numbering is visible to userspace
/// through tcp_info and `ss`, so it is stable across kernels).
pub(crate) fn tcp_state_name(state: u8) -> Option<&'static str> {
    Some(match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        _ => return None,
    })
}

/// The table's header for TCP events.
pub(crate) const TABLE_HEADER: &str = "TIME(UTC)     KIND          STATE         SOURCE                                  DESTINATION                             NETNS             DETAIL";

impl TcpDetail {
    /// The CONTRACT's fields of `kind`.
    pub(crate) fn write_json(&self, kind: TcpKind, w: &mut dyn JsonFields) -> io::Result<()> {
        match kind {
            TcpKind::Retransmit => {
                w.str("state", self.state)?;
                w.uint("count", Some(self.count.into()))
            }
            TcpKind::Reset => {
                w.str("direction", self.direction.map(ResetDirection::as_str))?;
                w.str("state", self.state)
            }
            TcpKind::ConnectFail => {
                w.str("state", self.state)?;
                w.float("duration_ms", self.duration_ms)?;
                w.uint("syns_sent", self.syns_sent.map(u64::from))
            }
        }
    }

    /// One row under [`TABLE_HEADER`].
    pub(crate) fn table_row(&self, kind: TcpKind, row: &RowParts) -> String {
        let detail = match kind {
            TcpKind::Retransmit => format!("#{} for this flow", self.count),
            TcpKind::Reset => self.direction.map_or("-", ResetDirection::as_str).to_string(),
            TcpKind::ConnectFail => self.gave_up(),
        };
        let RowParts { time, src, dst, netns, .. } = row;
        format!("{time:<13} {:<13} {:<13} {src:<39} {dst:<39} {netns:<17} {detail}", kind.as_str(), self.state.unwrap_or("-"))
    }

    /// What `watch`'s timeline says after the flow.
    pub(crate) fn timeline(&self, kind: TcpKind) -> String {
        match kind {
            TcpKind::Retransmit => format!("{} #{}", self.state.unwrap_or("-"), self.count),
            TcpKind::Reset => format!("{} in {}", self.direction.map_or("-", ResetDirection::as_str), self.state.unwrap_or("no socket")),
            TcpKind::ConnectFail => format!("{} {}", self.state.unwrap_or("-"), self.gave_up()),
        }
    }

    /// How a connect_fail ended, in words.
    fn gave_up(&self) -> String {
        match (self.syns_sent, self.duration_ms) {
            (Some(0), _) => "failed before sending a SYN".to_string(),
            (_, Some(ms)) => format!("gave up after {:.1}s", ms / 1000.0),
            (_, None) => "gave up".to_string(),
        }
    }

    /// Whether this connect_fail never reached the network: it failed on this node before its
    /// SYN left (the kernel said it sent none).
    pub(crate) fn never_sent(&self) -> bool {
        self.syns_sent == Some(0)
    }

    /// Counts it in the metric of `kind`.
    pub(crate) fn observe(&self, kind: TcpKind, event: &Event, limits: &mut Cardinality) {
        let metric = match kind {
            TcpKind::Retransmit => "tracer_retransmits_total",
            TcpKind::ConnectFail => "tracer_connect_failures_total",
            TcpKind::Reset => {
                let pod = if self.direction == Some(ResetDirection::Received) {
                    event.src_pod.as_ref()
                } else {
                    event.src_pod.as_ref().or(event.dst_pod.as_ref())
                };
                let (ns, name) = split_pod(pod);
                let direction = self.direction.map_or("", ResetDirection::as_str).to_string();
                limits.increment("tracer_resets_total", vec![("direction", direction), ("namespace", ns), ("pod", name)]);
                return;
            }
        };
        // A socket's flow starts at its own end.
        let (ns, name) = split_pod(event.src_pod.as_ref());
        limits.increment(metric, vec![("namespace", ns), ("pod", name)]);
    }

    /// The help of its metrics.
    pub(crate) fn describe_metrics() {
        metrics::describe_counter!("tracer_retransmits_total", "TCP retransmits, by the sending pod");
        metrics::describe_counter!("tracer_resets_total", "TCP resets sent or received, by pod");
        metrics::describe_counter!("tracer_connect_failures_total", "TCP connects that gave up (SYN_SENT to CLOSE), by pod");
    }
}
