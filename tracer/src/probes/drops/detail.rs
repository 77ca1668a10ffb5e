//! What a drop event carries beyond the flow, and how it is written: its JSON fields, its table
//! row, its timeline words and its metric.

use std::{collections::BTreeMap, io};

use crate::{
    events::Event,
    output::{
        JsonFields,
        metrics::{Cardinality, split_pod},
        table::RowParts,
    },
};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DropDetail {
    /// `enum skb_drop_reason` name without the SKB_DROP_REASON_ prefix.
    pub reason: String,
    /// Raw reason value, for reasons this kernel's BTF does not name.
    pub reason_code: u32,
    /// `symbol+0xoff` of the kernel code that dropped the packet.
    pub location: String,
    pub len: u32,
    /// The conntrack entry the packet carried (read for netfilter drops only).
    pub packet_ct: PacketCt,
    /// Set when conntrack itself made (or marked the packet for) this drop.
    pub conntrack: Option<ConntrackDrop>,
}

/// The conntrack entry a dropped packet carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PacketCt {
    /// Not read: not a netfilter drop, or conntrack's layout is unknown (module not loaded).
    #[default]
    Unread,
    /// No entry: conntrack could not make one (table full), found the packet invalid, or
    /// never saw it.
    Absent,
    /// A new connection's entry not yet in the table (inserting it happens last).
    Unconfirmed,
    Confirmed,
}

impl PacketCt {
    /// The JSON `packet_ct`; None for [`PacketCt::Unread`] (not written).
    pub(crate) const fn name(self) -> Option<&'static str> {
        match self {
            Self::Unread => None,
            Self::Absent => Some("absent"),
            Self::Unconfirmed => Some("unconfirmed"),
            Self::Confirmed => Some("confirmed"),
        }
    }
}

/// A drop that conntrack caused, told apart by the namespace's own conntrack counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConntrackDrop {
    pub cause: ConntrackCause,
    /// The namespace's table fill level when the drop was classified: entries and
    /// net.netfilter.nf_conntrack_max.
    pub entries: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConntrackCause {
    /// No room for a new entry (the `drop` counter, without `invalid`).
    TableFull,
    /// A new entry clashed with one inserted meanwhile (`insert_failed`).
    InsertFailed,
    /// Conntrack found the packet invalid and it, or a rule matching INVALID, dropped it.
    Invalid,
}

impl ConntrackCause {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::TableFull => "table_full",
            Self::InsertFailed => "insert_failed",
            Self::Invalid => "invalid",
        }
    }
}

/// The table's header for drops.
pub(crate) const TABLE_HEADER: &str = "TIME(UTC)     KIND  REASON                 PROTO   SOURCE                        DESTINATION                   DEVICE           NETNS              LEN  LOCATION";

impl DropDetail {
    /// The CONTRACT's drop fields.
    pub(crate) fn write_json(&self, w: &mut dyn JsonFields) -> io::Result<()> {
        w.str("reason", Some(&self.reason))?;
        w.uint("reason_code", Some(self.reason_code.into()))?;
        w.str("location", Some(&self.location))?;
        w.uint("len", Some(self.len.into()))?;
        // What diagnose's conntrack rule reads, so a recording replays it (absent when unread).
        if let Some(ct) = self.packet_ct.name() {
            w.str("packet_ct", Some(ct))?;
        }
        if let Some(c) = &self.conntrack {
            w.begin("conntrack")?;
            w.str("cause", Some(c.cause.name()))?;
            w.uint("entries", c.entries)?;
            w.uint("max", c.max)?;
            w.end()?;
        }
        Ok(())
    }

    /// One row under [`TABLE_HEADER`].
    pub(crate) fn table_row(&self, row: &RowParts) -> String {
        let conntrack = self.conntrack.as_ref().map_or_else(String::new, |c| match (c.entries, c.max) {
            (Some(n), Some(max)) => format!("  [conntrack {}, table {n}/{max}]", c.cause.name()),
            _ => format!("  [conntrack {}]", c.cause.name()),
        });
        let RowParts { time, proto, src, dst, dev, netns } = row;
        format!(
            "{time:<13} {:<5} {:<22} {proto:<7} {src:<29} {dst:<29} {dev:<16} {netns:<16} {:>5}  {}{conntrack}",
            "drop", self.reason, self.len, self.location
        )
    }

    /// What `watch`'s timeline says after the flow.
    pub(crate) fn timeline(&self) -> String {
        let mut text = format!("{} at {}, {} bytes", self.reason, self.location, self.len);
        if let Some(c) = &self.conntrack {
            text.push_str(&format!(" [conntrack {}", c.cause.name()));
            if let (Some(n), Some(max)) = (c.entries, c.max) {
                text.push_str(&format!(", table {n}/{max}"));
            }
            text.push(']');
        }
        text
    }

    /// Counts it in `tracer_drops_total`.
    pub(crate) fn observe(&self, event: &Event, limits: &mut Cardinality) {
        // The pod the drop concerns: where it happened, else either end.
        let pod = event.netns_pod.as_ref().or(event.dst_pod.as_ref()).or(event.src_pod.as_ref());
        let (ns, name) = split_pod(pod);
        limits.increment(
            "tracer_drops_total",
            vec![("reason", self.reason.clone()), ("function", function(&self.location)), ("namespace", ns), ("pod", name)],
        );
    }

    /// The help of its metrics.
    pub(crate) fn describe_metrics() {
        metrics::describe_counter!(
            "tracer_drops_total",
            "Packets the kernel dropped, by drop reason, kernel function and the pod it concerns (drops over --max-rate: pod \"\")"
        );
        metrics::describe_counter!(
            "tracer_drops_undelivered_total",
            "Drops the ring buffer had no room for (storm mode), counted in the kernel by drop reason and kernel function; not in tracer_drops_total"
        );
    }

    /// Adds the drops the rate budget (`--max-rate`) counted since `published` to
    /// `tracer_drops_total` under their reason and function, with no pod (the kernel counts them
    /// per namespace, not per flow), so a storm does not hide in a reason's rate.
    pub(crate) fn add_counted(totals: &BTreeMap<(String, String), u64>, published: &mut BTreeMap<(String, String), u64>) {
        for (key, count) in totals {
            let before = published.insert(key.clone(), *count).unwrap_or(0);
            let (reason, function) = key;
            if *count > before {
                metrics::counter!("tracer_drops_total", "reason" => reason.clone(), "function" => function.clone(), "namespace" => "", "pod" => "")
                    .increment(*count - before);
            }
        }
    }

    /// Sets `tracer_drops_undelivered_total` to the kernel's storm counts, summed per (reason,
    /// function). The reasons and functions of drops are few and fixed, and the kernel map holds
    /// at most `STORM_ENTRIES` places, so these labels are bounded without a cap.
    pub(crate) fn set_undelivered(totals: &BTreeMap<(String, String), u64>) {
        for ((reason, function), count) in totals {
            metrics::counter!("tracer_drops_undelivered_total", "reason" => reason.clone(), "function" => function.clone()).absolute(*count);
        }
    }
}

/// The kernel function of `symbol+0xoff` (offsets would make a series per call site).
pub(crate) fn function(location: &str) -> String {
    location.split('+').next().unwrap_or(location).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_names_the_function_not_the_call_site() {
        assert_eq!(function("nf_hook_slow+0x9c"), "nf_hook_slow");
        assert_eq!(function("unknown"), "unknown");
    }
}
