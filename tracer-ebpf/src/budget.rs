//! The drop rate budget (`--max-rate`): above a rate per CPU and per place (location, reason,
//! netns), a drop that passed the user's filters is counted in the kernel instead of emitted, so
//! a storm costs one map lookup and two increments per drop rather than a ring-buffer record and
//! a decode in userspace, and never fills the ring. Per CPU: no atomics, no locks.

use aya_ebpf::{macros::map, maps::PerCpuHashMap};
use tracer_common::{
    drop::{BUDGET_WINDOW_NS, BudgetPlace, STORM_ENTRIES, StormKey},
    event::{counter, kind},
};

use crate::emit;

/// Set by the loader: drops per second delivered per CPU and place; 0 (the default of an object
/// loaded without the loader): no budget.
#[unsafe(no_mangle)]
static DROP_MAX_RATE: u64 = 0;

/// Each place's window and its count of drops over the budget, on this CPU: one lookup per drop
/// does both. A plain hash, not an LRU: a place never leaves it, so its count stays exact (a new
/// place that finds it full has no budget, and its drops are delivered).
#[map]
static DROP_BUDGET: PerCpuHashMap<StormKey, BudgetPlace> = PerCpuHashMap::with_max_entries(STORM_ENTRIES, 0);

/// Adds one to this CPU's count of `key` in `map`. A key created meanwhile on another CPU is
/// updated, not replaced (an update from a program touches this CPU's value).
#[inline(always)]
pub(crate) fn count_at(map: &PerCpuHashMap<StormKey, u64>, key: &StormKey) {
    match map.get_ptr_mut(key) {
        // SAFETY: this CPU's value of the key; programs do not nest on one CPU for this hook.
        Some(count) => unsafe { *count += 1 },
        // When the map is full the drop stays counted in COUNTERS only; the report says so.
        None => {
            let _ = map.insert(key, &1, 0);
        }
    }
}

/// Whether the drop of `key` at `now_ns` (the event's boot-time stamp: no second clock read) is
/// over the budget. If so it is counted (seen, counted, and by place) and the caller must not
/// emit it. Called only for drops that passed every filter, so a storm elsewhere never uses the
/// budget of what the user asked about.
#[inline(always)]
pub(crate) fn counted_instead(key: &StormKey, now_ns: u64) -> bool {
    // SAFETY: a read of a plain u64 static; volatile so the zero initialiser is not folded.
    let max_rate = unsafe { core::ptr::read_volatile(&raw const DROP_MAX_RATE) };
    if max_rate == 0 {
        return false;
    }
    let Some(place) = DROP_BUDGET.get_ptr_mut(key) else {
        // The place's first drop on this CPU opens its first window. (Full map: no budget.)
        let _ = DROP_BUDGET.insert(key, &BudgetPlace { start_ns: now_ns, delivered: 1, counted: 0 }, 0);
        return false;
    };
    // SAFETY: this CPU's value of the key; programs do not nest on one CPU for this hook.
    let place = unsafe { &mut *place };
    if now_ns.wrapping_sub(place.start_ns) >= BUDGET_WINDOW_NS {
        place.start_ns = now_ns;
        place.delivered = 1;
        return false;
    }
    if place.delivered < max_rate {
        place.delivered += 1;
        return false;
    }
    place.counted += 1;
    emit::count(kind::DROP, counter::MATCHED);
    emit::count(kind::DROP, counter::COUNTED);
    true
}
