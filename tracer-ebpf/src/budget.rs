//! The drop rate budget (`--max-rate`): above a rate per CPU and per place (location, reason,
//! netns), a drop that passed the user's filters is counted in the kernel instead of emitted, so
//! a storm costs a lookup and an increment per drop rather than a ring-buffer record, a wakeup
//! and a decode, and never fills the ring. Per CPU: no atomics, no locks.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{LruPerCpuHashMap, PerCpuHashMap},
};
use tracer_common::{
    drop::{BUDGET_ENTRIES, BUDGET_WINDOW_NS, BudgetWindow, STORM_ENTRIES, StormKey},
    event::{counter, kind},
};

use crate::emit;

/// Set by the loader: drops per second delivered per CPU and place; 0 (the default of an object
/// loaded without the loader): no budget.
#[unsafe(no_mangle)]
static DROP_MAX_RATE: u64 = 0;

/// Each place's current window on this CPU. LRU: a node-wide storm over more places than this
/// evicts the oldest, which then start a fresh window (deliver more, never less).
#[map]
static DROP_BUDGET: LruPerCpuHashMap<StormKey, BudgetWindow> = LruPerCpuHashMap::with_max_entries(BUDGET_ENTRIES, 0);

/// Drops over the budget, counted per place instead of delivered (the ring-full ones are in
/// `DROP_STORM`: userspace tells the two apart).
#[map]
static DROP_COUNTED: PerCpuHashMap<StormKey, u64> = PerCpuHashMap::with_max_entries(STORM_ENTRIES, 0);

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

/// Whether the drop of `key` is over the budget. If so it is counted (seen, counted, and by
/// place) and the caller must not emit it. Called only for drops that passed every filter, so
/// a storm elsewhere never uses the budget of what the user asked about.
#[inline(always)]
pub(crate) fn counted_instead(key: &StormKey) -> bool {
    // SAFETY: a read of a plain u64 static; volatile so the zero initialiser is not folded.
    let max_rate = unsafe { core::ptr::read_volatile(&raw const DROP_MAX_RATE) };
    if max_rate == 0 {
        return false;
    }
    // SAFETY: a helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    match DROP_BUDGET.get_ptr_mut(key) {
        Some(window) => {
            // SAFETY: this CPU's value of the key; programs do not nest on one CPU for this hook.
            let window = unsafe { &mut *window };
            if now.wrapping_sub(window.start_ns) >= BUDGET_WINDOW_NS {
                *window = BudgetWindow { start_ns: now, delivered: 1 };
                return false;
            }
            if window.delivered < max_rate {
                window.delivered += 1;
                return false;
            }
        }
        None => {
            let _ = DROP_BUDGET.insert(key, &BudgetWindow { start_ns: now, delivered: 1 }, 0);
            return false;
        }
    }
    emit::count(kind::DROP, counter::MATCHED);
    emit::count(kind::DROP, counter::COUNTED);
    count_at(&DROP_COUNTED, key);
    true
}
