//! Storm mode: when drops come faster than they can be printed, the ring buffer fills and the
//! kernel program counts each drop it could not deliver in `DROP_STORM`, per (location, reason,
//! netns). Before that, the rate budget (`--max-rate`, tracer-ebpf's budget.rs) counts the drops
//! of a place beyond its rate per CPU in `DROP_BUDGET` (keyed the same way, beside the place's
//! window). A watcher says on
//! stderr the moment either starts; at stop the counts are summed over CPUs and printed, so a
//! storm still ends with exact numbers per reason and place.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{MapData, PerCpuHashMap},
};
use tracer_common::{
    drop::{BudgetPlace, StormKey},
    event::kind,
};

use super::decode::Decoder;
use crate::loader::CounterReader;

/// How often the watcher looks at the lost counter.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Rows printed at stop; the rest are summed in one line.
const SHOWN: usize = 20;

/// One (location, reason, netns) and the drops of it the kernel counted instead of delivering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StormCount {
    pub key: StormKey,
    pub count: u64,
}

/// One place's drops over the rate budget, named: what `diagnose` adds to the findings of that
/// reason, location and namespace, and what `watch -o json` records (`"counted"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CountedPlace {
    /// The reason's name, as events spell it (`NETFILTER_DROP`).
    pub reason: String,
    /// `symbol+0xoff`, as events spell it.
    pub location: String,
    /// The namespace inode; None when unknown.
    pub netns: Option<u32>,
    pub count: u64,
}

/// `c` with its reason and location named.
pub(crate) fn place(c: &StormCount, decoder: &Decoder) -> CountedPlace {
    CountedPlace {
        reason: reason_name(c.key.reason, decoder),
        location: decoder.kallsyms.symbolize(c.key.location),
        netns: (c.key.netns != 0).then_some(c.key.netns),
        count: c.count,
    }
}

/// The ring-full counts (`DROP_STORM`), summed over CPUs, largest first.
pub(crate) fn read_ring_full(ebpf: &Ebpf) -> anyhow::Result<Vec<StormCount>> {
    read("DROP_STORM", ebpf, |count: &u64| *count)
}

/// The counts of drops over the rate budget (`DROP_BUDGET`'s `counted`), summed over CPUs,
/// largest first; places that never went over are left out.
pub(crate) fn read_over_budget(ebpf: &Ebpf) -> anyhow::Result<Vec<StormCount>> {
    read("DROP_BUDGET", ebpf, |place: &BudgetPlace| place.counted)
}

/// The per-CPU hash map `name` keyed by place, `count` of each value summed over CPUs.
fn read<V: aya::Pod>(name: &str, ebpf: &Ebpf, count: impl Fn(&V) -> u64) -> anyhow::Result<Vec<StormCount>> {
    let map = ebpf.map(name).with_context(|| format!("{name} map missing"))?;
    let map: PerCpuHashMap<&MapData, StormKey, V> = PerCpuHashMap::try_from(map).with_context(|| format!("{name} is not a per-CPU hash map"))?;
    let mut counts = Vec::new();
    for entry in map.iter() {
        let (key, values) = entry.with_context(|| format!("reading {name}"))?;
        let total = values.iter().map(&count).sum();
        if total > 0 {
            counts.push(StormCount { key, count: total });
        }
    }
    counts.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.location.cmp(&b.key.location)));
    Ok(counts)
}

/// Says once each, on stderr, when the kernel starts counting drops over the rate budget and
/// (`ring_full`: `tracer drops` alone) when it starts losing drop events (and so counting them).
pub(crate) fn watch(counters: CounterReader, max_rate: u64, ring_full: bool) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        let (mut said_counted, mut said_lost) = (max_rate == 0, !ring_full);
        while !(said_counted && said_lost) {
            tick.tick().await;
            match counters.read(&[kind::DROP]) {
                Ok(c) => {
                    if c.counted > 0 && !said_counted {
                        said_counted = true;
                        eprintln!(
                            "tracer: drops: rate budget: more than {max_rate} drops/s of one reason at one place on one CPU; the kernel now counts the rest by reason and location instead of printing them (exact totals at the end; --max-rate off prints every one)"
                        );
                    }
                    if c.lost > 0 && !said_lost {
                        said_lost = true;
                        eprintln!(
                            "tracer: drops: storm: drops come faster than they are printed; the kernel now counts those the ring buffer cannot take by reason and location (exact totals at the end; a larger --ring-buffer or a narrower filter shows more of them one by one)"
                        );
                    }
                }
                Err(e) => {
                    log::debug!("storm watch: {e:#}");
                    return;
                }
            }
        }
    })
}

/// The storm counts summed per (reason name, kernel function): the labels of
/// `tracer_drops_undelivered_total`, as those of `tracer_drops_total` name them.
pub(crate) fn by_reason_and_function(counts: &[StormCount], decoder: &Decoder) -> BTreeMap<(String, String), u64> {
    let mut totals = BTreeMap::new();
    for c in counts {
        let reason = reason_name(c.key.reason, decoder);
        let function = super::detail::function(&decoder.kallsyms.symbolize(c.key.location));
        *totals.entry((reason, function)).or_default() += c.count;
    }
    totals
}

/// The name of drop reason `value`; NOT_SPECIFIED on kernels without reasons.
fn reason_name(value: u32, decoder: &Decoder) -> String {
    decoder.reasons.as_ref().map_or_else(|| "NOT_SPECIFIED".to_string(), |r| r.name(value))
}

/// The stop report: how many lost drops were counted, by reason, location and namespace, and
/// any the map had no room for. Empty when nothing was lost.
pub(crate) fn report(counts: &[StormCount], lost: u64, decoder: &Decoder) -> Vec<String> {
    let counted: u64 = counts.iter().map(|c| c.count).sum();
    if lost == 0 && counted == 0 {
        return Vec::new();
    }
    let header = format!("tracer: drops: storm: {counted} of the {lost} drops not delivered were counted in the kernel, by reason and location:");
    places(header, counts, lost, decoder)
}

/// The stop report of the rate budget: the `total` drops over `--max-rate`, by reason, location
/// and namespace. Empty when the budget counted nothing.
pub(crate) fn budget_report(counts: &[StormCount], total: u64, max_rate: u64, decoder: &Decoder) -> Vec<String> {
    if total == 0 {
        return Vec::new();
    }
    let header = format!(
        "tracer: drops: rate budget: {total} drops over --max-rate {max_rate} (per second, CPU and place) were counted in the kernel instead of printed, by reason and location:"
    );
    places(header, counts, total, decoder)
}

/// `header`, then one line per place (the first [`SHOWN`]), and what `total` has beyond them.
fn places(header: String, counts: &[StormCount], total: u64, decoder: &Decoder) -> Vec<String> {
    let by_place: u64 = counts.iter().map(|c| c.count).sum();
    let mut lines = vec![header];
    for c in counts.iter().take(SHOWN) {
        let reason = reason_name(c.key.reason, decoder);
        let location = decoder.kallsyms.symbolize(c.key.location);
        let netns = if c.key.netns == 0 { String::new() } else { format!(" (netns {})", c.key.netns) };
        lines.push(format!("tracer: drops:   {:>10}  {reason} at {location}{netns}", c.count));
    }
    if counts.len() > SHOWN {
        let rest: u64 = counts[SHOWN..].iter().map(|c| c.count).sum();
        lines.push(format!("tracer: drops:   {rest:>10}  in {} more places", counts.len() - SHOWN));
    }
    if total > by_place {
        lines.push(format!(
            "tracer: drops:   {:>10}  not counted by place (more than {} distinct places)",
            total - by_place,
            tracer_common::drop::STORM_ENTRIES
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::Clock,
        kernel::{drop_reasons::DropReasons, kallsyms::Kallsyms},
    };

    fn decoder() -> Decoder {
        Decoder {
            reasons: Some(DropReasons::from_pairs([("SKB_DROP_REASON_NO_SOCKET".to_string(), 3)])),
            kallsyms: Kallsyms::parse("ffffffff81000000 T __udp4_lib_rcv\nffffffff81001000 T other\n").into(),
            clock: Clock::new(),
            ct: None,
        }
    }

    #[test]
    fn the_report_adds_up_to_the_lost_drops() {
        let key = |location, netns| StormKey { location, reason: 3, netns };
        let counts = vec![StormCount { key: key(0xffff_ffff_8100_0010, 7), count: 90 }, StormCount { key: key(0xffff_ffff_8100_0020, 0), count: 10 }];
        let lines = report(&counts, 100, &decoder());
        assert_eq!(lines[0], "tracer: drops: storm: 100 of the 100 drops not delivered were counted in the kernel, by reason and location:");
        assert_eq!(lines[1], "tracer: drops:           90  NO_SOCKET at __udp4_lib_rcv+0x10 (netns 7)");
        assert_eq!(lines.len(), 3, "{lines:?}");
        let full = report(&counts, 130, &decoder());
        assert!(full.last().is_some_and(|l| l.contains("30  not counted by place")), "{full:?}");
        assert!(report(&[], 0, &decoder()).is_empty(), "no storm, no report");
    }

    #[test]
    fn the_budget_report_names_each_place_with_its_exact_count() {
        let counts = vec![StormCount { key: StormKey { location: 0xffff_ffff_8100_0010, reason: 3, netns: 7 }, count: 900 }];
        let lines = budget_report(&counts, 900, 5000, &decoder());
        assert!(lines[0].starts_with("tracer: drops: rate budget: 900 drops over --max-rate 5000 "), "{lines:?}");
        assert_eq!(lines[1], "tracer: drops:          900  NO_SOCKET at __udp4_lib_rcv+0x10 (netns 7)");
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(budget_report(&counts, 950, 5000, &decoder()).last().is_some_and(|l| l.contains("50  not counted by place")));
        assert!(budget_report(&[], 0, 5000, &decoder()).is_empty(), "nothing counted, no report");
    }

    #[test]
    fn the_metric_sums_places_per_reason_and_function() {
        let key = |location, netns| StormKey { location, reason: 3, netns };
        let counts = vec![
            StormCount { key: key(0xffff_ffff_8100_0010, 7), count: 90 },
            StormCount { key: key(0xffff_ffff_8100_0020, 0), count: 10 },
            StormCount { key: key(0xffff_ffff_8100_1004, 0), count: 5 },
        ];
        let totals = by_reason_and_function(&counts, &decoder());
        let want: BTreeMap<(String, String), u64> =
            [(("NO_SOCKET".into(), "__udp4_lib_rcv".into()), 100), (("NO_SOCKET".into(), "other".into()), 5)].into_iter().collect();
        assert_eq!(totals, want, "two call sites and two namespaces of one function are one series");
    }
}
