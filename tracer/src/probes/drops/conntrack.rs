//! Which netfilter drops conntrack made: table full, insert failed, invalid.
//!
//! The kernel frees all of them in `nf_hook_slow` with `NETFILTER_DROP`, like a rule's DROP, so
//! neither the reason nor the location tells them apart. Conntrack counts each one, though, per
//! network namespace (`/proc/PID/net/stat/nf_conntrack`), and bumps the counter just before the
//! packet is freed. A netfilter drop is conntrack's when its namespace's counters moved by an
//! event not yet given to an earlier drop:
//!
//! | packet's entry | counters moved       | cause                                      |
//! |----------------|----------------------|--------------------------------------------|
//! | none           | `drop`, `invalid`    | invalid (the protocol tracker dropped it)  |
//! | none           | `drop` only          | table full (no entry could be made)        |
//! | none           | `invalid` only       | invalid (a rule matching INVALID dropped it) |
//! | unconfirmed    | `insert_failed`      | insert failed (clash with another entry)   |
//!
//! A packet whose entry is confirmed was dropped by a rule, never by conntrack. Counters are
//! read (a small /proc file) only for drops that could be conntrack's and that the last read
//! cannot have counted (the drop happened after it): drops decoded together, behind a read, share
//! it, so the reads grow with how often the reader wakes, not with the drop rate.

use std::{collections::HashMap, fs};

use crate::{
    events::Clock,
    kernel::netns::Namespaces,
    probes::drops::detail::{ConntrackCause, ConntrackDrop, DropDetail, PacketCt},
};

const MAX_FILE: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// A namespace's conntrack counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CtStats {
    /// Entries in the table now (the same on every CPU's row).
    pub entries: u64,
    pub drop: u64,
    pub insert_failed: u64,
    pub invalid: u64,
}

/// Parses `/proc/net/stat/nf_conntrack`: a header naming the columns (they differ between
/// kernels), then one row of hex counters per CPU. None when the header lacks a needed column.
pub(crate) fn parse_stats(text: &str) -> Option<CtStats> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (entries, drop, insert_failed, invalid) = (column("entries")?, column("drop")?, column("insert_failed")?, column("invalid")?);
    let mut stats = CtStats::default();
    for (row, line) in lines.enumerate() {
        let values: Vec<u64> = line.split_whitespace().map(|v| u64::from_str_radix(v, 16).unwrap_or(0)).collect();
        let at = |i: usize| values.get(i).copied().unwrap_or(0);
        if row == 0 {
            stats.entries = at(entries);
        }
        stats.drop += at(drop);
        stats.insert_failed += at(insert_failed);
        stats.invalid += at(invalid);
    }
    Some(stats)
}

/// Counter increases not yet attributed to a drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Unexplained {
    drop: u64,
    insert_failed: u64,
    invalid: u64,
}

/// The pure part: given the packet's entry and the namespace's unexplained counter increases,
/// the cause (and what it uses up).
fn attribute(packet_ct: PacketCt, pending: &mut Unexplained) -> Option<ConntrackCause> {
    match packet_ct {
        PacketCt::Absent if pending.drop > 0 && pending.invalid > 0 => {
            pending.drop -= 1;
            pending.invalid -= 1;
            Some(ConntrackCause::Invalid)
        }
        PacketCt::Absent if pending.drop > 0 => {
            pending.drop -= 1;
            Some(ConntrackCause::TableFull)
        }
        PacketCt::Absent if pending.invalid > 0 => {
            pending.invalid -= 1;
            Some(ConntrackCause::Invalid)
        }
        // A clash bumps `drop` as well as `insert_failed`.
        PacketCt::Unconfirmed if pending.insert_failed > 0 => {
            pending.insert_failed -= 1;
            pending.drop = pending.drop.saturating_sub(1);
            Some(ConntrackCause::InsertFailed)
        }
        _ => None,
    }
}

fn could_be_conntrack(packet_ct: PacketCt, pending: &Unexplained) -> bool {
    match packet_ct {
        PacketCt::Absent => pending.drop == 0 && pending.invalid == 0,
        PacketCt::Unconfirmed => pending.insert_failed == 0,
        PacketCt::Unread | PacketCt::Confirmed => false,
    }
}

struct Namespace {
    last: CtStats,
    /// When the counters were last read, on the events' wall clock: a drop stamped later cannot
    /// be in them. (Any time-based throttle loses: two stray packets 0.4 ms apart were told
    /// apart wrongly with a 2 ms one.)
    read_at: Option<i128>,
    pending: Unexplained,
}

/// Classifies netfilter drops as conntrack's (see the module doc). One per `tracer drops` run.
pub(crate) struct Classifier {
    namespaces: HashMap<u32, Namespace>,
    netns: Namespaces,
    max: Option<u64>,
    /// The decoder's clock, so read times and event times compare exactly.
    clock: Clock,
}

impl Classifier {
    /// Takes the counters of every namespace it can find now, so that only what happens from
    /// here on is attributed. A namespace created later starts from zero, as its counters do.
    pub(crate) fn start(clock: Clock) -> Self {
        let mut c = Classifier { namespaces: HashMap::new(), netns: Namespaces::scan(), max: read_max(), clock };
        for inode in c.netns.inodes() {
            let read_at = Some(c.clock.now_unix_ns());
            if let Some(stats) = c.read(inode) {
                c.namespaces.insert(inode, Namespace { last: stats, read_at, pending: Unexplained::default() });
            }
        }
        c
    }

    /// Fills `drop.conntrack` when conntrack made this drop in namespace `netns`, at `at` (the
    /// event's wall-clock time).
    pub(crate) fn classify(&mut self, drop: &mut DropDetail, netns: Option<u32>, at: i128) {
        let Some(inode) = netns else { return };
        if drop.packet_ct == PacketCt::Unread || drop.packet_ct == PacketCt::Confirmed {
            return;
        }
        let ns =
            self.namespaces.entry(inode).or_insert_with(|| Namespace { last: CtStats::default(), read_at: None, pending: Unexplained::default() });
        // Counters are bumped before the drop they explain, so a read made after the drop has them.
        let stale = ns.read_at.is_none_or(|read_at| at > read_at);
        // Stamped before reading: a drop stamped earlier had bumped its counter before the read
        // began (one stamped later may be in it or not; then it is read again).
        let reading_at = self.clock.now_unix_ns();
        if could_be_conntrack(drop.packet_ct, &ns.pending)
            && stale
            && let Some(now) = self.read(inode)
        {
            let ns = self.namespaces.get_mut(&inode).expect("inserted above");
            // Counters only grow; a smaller value is a new namespace on a reused inode.
            let base = if now.drop < ns.last.drop || now.invalid < ns.last.invalid { CtStats::default() } else { ns.last };
            ns.pending.drop += now.drop - base.drop;
            ns.pending.insert_failed += now.insert_failed.saturating_sub(base.insert_failed);
            ns.pending.invalid += now.invalid - base.invalid;
            ns.last = now;
            ns.read_at = Some(reading_at);
            self.max = read_max().or(self.max);
        }
        let ns = self.namespaces.get_mut(&inode).expect("inserted above");
        if let Some(cause) = attribute(drop.packet_ct, &mut ns.pending) {
            drop.conntrack = Some(ConntrackDrop { cause, entries: ns.read_at.map(|_| ns.last.entries), max: self.max });
        }
    }

    fn read(&mut self, inode: u32) -> Option<CtStats> {
        parse_stats(&self.netns.read_proc_net(inode, "stat/nf_conntrack").ok()?)
    }
}

fn read_max() -> Option<u64> {
    fs::read_to_string(MAX_FILE).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS_6_18: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
        00000040  00000000 00000000 00000000 00000002 00000000 00000000 00000000 00000000 00000001 00000005 00000000 00000000  00000000 00000000 00000000 00000000\n\
        00000040  00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000000 0000000a 00000000 00000000  00000000 00000000 00000000 00000000\n";

    #[test]
    fn stats_are_summed_over_cpus_by_column_name() {
        let s = parse_stats(STATS_6_18).expect("parses");
        assert_eq!(s, CtStats { entries: 64, drop: 15, insert_failed: 1, invalid: 3 });
        // Older kernels have other columns, in another order: names, not positions, matter.
        let old = "entries searched found new invalid ignore delete delete_list insert insert_failed drop early_drop\n\
                   00000003 00000000 00000000 00000000 00000007 00000000 00000000 00000000 00000000 00000000 00000002 00000000\n";
        assert_eq!(parse_stats(old), Some(CtStats { entries: 3, drop: 2, insert_failed: 0, invalid: 7 }));
        assert_eq!(parse_stats("entries drop\n1 2\n"), None);
    }

    #[test]
    fn causes_follow_the_packet_entry_and_the_counters() {
        let mut p = Unexplained { drop: 2, insert_failed: 0, invalid: 0 };
        assert_eq!(attribute(PacketCt::Absent, &mut p), Some(ConntrackCause::TableFull));
        assert_eq!(attribute(PacketCt::Absent, &mut p), Some(ConntrackCause::TableFull));
        // Explained already: a third drop without an entry is a rule's.
        assert_eq!(attribute(PacketCt::Absent, &mut p), None);

        let mut p = Unexplained { drop: 1, insert_failed: 0, invalid: 1 };
        assert_eq!(attribute(PacketCt::Absent, &mut p), Some(ConntrackCause::Invalid));
        assert_eq!(p, Unexplained::default());

        let mut p = Unexplained { drop: 0, insert_failed: 0, invalid: 1 };
        assert_eq!(attribute(PacketCt::Absent, &mut p), Some(ConntrackCause::Invalid));

        let mut p = Unexplained { drop: 1, insert_failed: 1, invalid: 0 };
        assert_eq!(attribute(PacketCt::Confirmed, &mut p), None, "a confirmed entry: a rule dropped it");
        assert_eq!(attribute(PacketCt::Unconfirmed, &mut p), Some(ConntrackCause::InsertFailed));
        assert_eq!(p, Unexplained::default());
        assert_eq!(attribute(PacketCt::Unconfirmed, &mut Unexplained::default()), None);
    }
}
