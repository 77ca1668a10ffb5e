//! Packet drops (skb:kfree_skb). Plans which hook to use on this kernel, builds the program's
//! configuration, attaches, and decodes records.

pub(crate) mod conntrack;
pub(crate) mod decode;
pub(crate) mod detail;
pub(crate) mod storm;

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use aya::{Btf, Ebpf, maps::Array, programs::TracePoint};
pub(crate) use storm::CountedPlace;
use tracer_common::{
    drop::{DEFAULT_MAX_RATE, DropConfig, ReasonFilter, hook},
    event::EventHeader,
};

use super::{AttachContext, CannotRun, CheckRow, Family, FamilyId, PlanContext, PlanError};
use crate::{
    events::{Clock, Detail, Event},
    kernel::{
        btf::{KernelBtf, ParamType, VMLINUX_BTF},
        drop_reasons::DropReasons,
        hooks::{self, HookSupport},
        kallsyms::LazyKallsyms,
        tracefs,
    },
    loader::{CounterReader, Globals, KernelCounts},
    usage::UsageError,
};

const PROBE: &str = "drops";

/// `--hook`: how `tracer drops` hooks kfree_skb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HookChoice {
    Auto,
    /// BTF tracepoint tp_btf/kfree_skb
    #[value(name = "tp_btf")]
    TpBtf,
    /// Classic tracepoint skb:kfree_skb
    Tracepoint,
}

/// Which drop reasons to report. Names are checked against the kernel's BTF later, since only
/// the running kernel knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReasonSelection {
    /// Everything but NOT_SPECIFIED (see `tracer drops --help`).
    Default,
    All,
    Named(Vec<String>),
}

/// Program names in tracer-ebpf/src/main.rs.
const PROG_TP_BTF: &str = "drop_tp_btf";
const PROG_TP: &str = "drop_tp";
/// The program's global (tracer-ebpf/src/drops.rs); the MTU family's kfree_skb program reads it too.
pub(crate) const DROP_CONFIG: &str = "DROP_CONFIG";
/// The rate budget's global (tracer-ebpf/src/budget.rs): drops/s per CPU and place, 0 = none.
const DROP_MAX_RATE: &str = "DROP_MAX_RATE";

/// The hook the drops probe will use on this kernel, with its layout.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub hook: DropHook,
    /// Hook layout filled in; reasons still empty.
    pub config: DropConfig,
    /// None: the kernel has no `enum skb_drop_reason` (< 5.17).
    pub reasons: Option<DropReasons>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropHook {
    TpBtf,
    Tracepoint,
}

impl DropHook {
    pub(crate) const fn describe(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf/kfree_skb",
            Self::Tracepoint => "tracepoint/skb/kfree_skb",
        }
    }
}

/// Works out how to hook kfree_skb here. `auto` prefers the BTF tracepoint (typed arguments, no
/// record copy) and falls back to the classic tracepoint; an explicit choice that cannot work
/// is an error that names why.
pub(crate) fn plan(btf: &KernelBtf, choice: HookChoice) -> Result<Plan, CannotRun> {
    let reasons = DropReasons::from_btf(btf).map_err(|e| CannotRun { probe: PROBE, reason: format!("reading enum skb_drop_reason: {e}") })?;
    let tp_btf = plan_tp_btf(btf);
    let result = match choice {
        HookChoice::TpBtf => tp_btf,
        HookChoice::Tracepoint => plan_tracepoint(),
        HookChoice::Auto => tp_btf.or_else(|btf_err| plan_tracepoint().map_err(|tp_err| format!("{btf_err}; and {tp_err}"))),
    };
    let (hook, config) = result.map_err(|reason| CannotRun { probe: PROBE, reason })?;
    Ok(Plan { hook, config, reasons })
}

fn plan_tp_btf(btf: &KernelBtf) -> Result<(DropHook, DropConfig), String> {
    // The kernel resolves tp_btf targets in its own BTF: a --btf file cannot stand in for it.
    if !Path::new(VMLINUX_BTF).exists() {
        return Err(format!("tp_btf needs the kernel's own BTF ({VMLINUX_BTF} is missing)"));
    }
    let params = btf.tracepoint_params("kfree_skb").map_err(|e| format!("tp_btf/kfree_skb: {e}"))?;
    let position = |want: &dyn Fn(&ParamType) -> bool| params.iter().position(want);
    let skb = position(&|p| *p == ParamType::StructPtr("sk_buff".into())).ok_or("tp_btf/kfree_skb has no struct sk_buff * argument")?;
    let location = params
        .iter()
        .enumerate()
        .skip(skb + 1)
        .find(|(_, p)| **p == ParamType::OtherPtr)
        .map(|(i, _)| i)
        .ok_or("tp_btf/kfree_skb has no location argument")?;
    let reason = position(&|p| *p == ParamType::Enum("skb_drop_reason".into()));
    // The program loads its arguments from the context at these fixed positions (the verifier
    // allows context loads at constant offsets only, and types the skb only when it is loaded
    // so); every kernel so far has them there.
    let expected = (0, 1, Some(2));
    if (skb, location, reason) != expected && (skb, location, reason) != (0, 1, None) {
        return Err(format!(
            "tp_btf/kfree_skb has its sk_buff, location and reason at arguments {skb}, {location}, {reason:?}; tracer reads them at {}, {} and {:?}",
            expected.0, expected.1, expected.2
        ));
    }
    let mut config = DropConfig::empty();
    config.hook = hook::TP_BTF;
    config.skb_arg = skb as u32;
    config.location_arg = location as u32;
    config.reason_arg = reason.map_or(DropConfig::ABSENT, |r| r as u32);
    Ok((DropHook::TpBtf, config))
}

fn plan_tracepoint() -> Result<(DropHook, DropConfig), String> {
    let format = tracefs::Format::read("skb", "kfree_skb").map_err(|e| e.to_string())?;
    let skb = format.field("skbaddr").ok_or("skb:kfree_skb has no skbaddr field")?;
    let location = format.field("location").ok_or("skb:kfree_skb has no location field")?;
    let mut config = DropConfig::empty();
    config.hook = hook::TRACEPOINT;
    config.skb_arg = skb.offset;
    config.location_arg = location.offset;
    match format.field("reason") {
        Some(reason) if reason.size == 4 => {
            config.reason_arg = reason.offset;
        }
        Some(reason) => return Err(format!("skb:kfree_skb reason field has size {}, expected 4", reason.size)),
        None => {}
    }
    Ok((DropHook::Tracepoint, config))
}

/// How to read a dropped packet's conntrack entry, when conntrack is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CtLayout {
    /// `IPS_CONFIRMED` of `enum ip_conntrack_status`: the entry is in the table.
    pub confirmed: u32,
}

/// Lets the program read the conntrack entry of netfilter drops (see [`conntrack`]). None, and
/// the drops are shown without conntrack's causes, when conntrack is not loaded (then it drops
/// nothing) or its BTF lacks a field.
pub(crate) fn plan_conntrack(btf: &mut KernelBtf, plan: &mut Plan) -> Option<CtLayout> {
    match btf.with_module("nf_conntrack") {
        Ok(true) => {}
        Ok(false) if btf.offset_of("nf_conn", "status").is_ok() => {}
        Ok(false) => {
            log::debug!("conntrack is not loaded: netfilter drops are not checked for conntrack causes");
            return None;
        }
        Err(e) => {
            log::warn!("reading nf_conntrack's BTF: {e}; conntrack drops are shown as netfilter drops");
            return None;
        }
    }
    match conntrack_layout(btf) {
        Ok((nfct, status, confirmed)) => {
            plan.config.skb_nfct = nfct;
            plan.config.ct_status = status;
            plan.config.netfilter_reason = plan.reasons.as_ref().and_then(|r| r.value("NETFILTER_DROP")).unwrap_or(DropConfig::ABSENT);
            Some(CtLayout { confirmed })
        }
        Err(e) => {
            log::warn!("conntrack's layout from BTF: {e}; conntrack drops are shown as netfilter drops");
            None
        }
    }
}

/// Where the program finds a packet's conntrack entry and its status, and the value of
/// `IPS_CONFIRMED`: `(skb->_nfct, nf_conn.status, confirmed)`.
pub(crate) fn conntrack_layout(btf: &KernelBtf) -> Result<(u32, u32, u32), String> {
    let nfct = btf.offset_of("sk_buff", "_nfct").map_err(|e| e.to_string())?;
    let status = btf.offset_of("nf_conn", "status").map_err(|e| e.to_string())?;
    let bits = btf.enum_values("ip_conntrack_status").map_err(|e| e.to_string())?;
    let confirmed = bits.iter().find(|(n, _)| n == "IPS_CONFIRMED").ok_or("no IPS_CONFIRMED")?.1 as u32;
    Ok((nfct, status, confirmed))
}

/// The reasons to report. Unknown names are bad input (exit 2), named from this kernel's list.
pub(crate) fn select_reasons(plan: &Plan, selection: &ReasonSelection) -> Result<ReasonFilter, UsageError> {
    let Some(reasons) = &plan.reasons else {
        if let ReasonSelection::Named(names) = selection {
            return Err(UsageError(format!(
                "--reason {}: this kernel ({}) has no drop reasons (they appeared in 5.17); drop --reason",
                names.join(","),
                crate::kernel::release()
            )));
        }
        return Ok(ReasonFilter::ALL);
    };
    Ok(match selection {
        ReasonSelection::All => ReasonFilter::ALL,
        ReasonSelection::Default => {
            let mut filter = ReasonFilter::ALL;
            if let Some(not_specified) = reasons.value("NOT_SPECIFIED") {
                filter.unselect(not_specified);
            }
            filter
        }
        ReasonSelection::Named(names) => {
            let mut filter = ReasonFilter::NONE;
            for name in names {
                let value = reasons.value(name).ok_or_else(|| {
                    UsageError(format!(
                        "--reason {name}: not a drop reason of this kernel; `tracer check -o json` lists them (e.g. NETFILTER_DROP, NO_SOCKET)"
                    ))
                })?;
                filter.select(value);
            }
            filter
        }
    })
}

/// The program's configuration: the planned layout plus the reason selection's high bit.
pub(crate) fn program_config(plan: &Plan, reasons: &ReasonFilter) -> DropConfig {
    DropConfig { high_reasons: u32::from(reasons.high), ..plan.config }
}

/// Writes the reason bitmap into the `DROP_REASONS` map (before attaching).
pub(crate) fn write_reasons(ebpf: &mut Ebpf, reasons: &ReasonFilter) -> anyhow::Result<()> {
    let map = ebpf.map_mut("DROP_REASONS").context("DROP_REASONS map missing")?;
    let mut array: Array<_, u64> = Array::try_from(map)?;
    for (i, word) in reasons.words.iter().enumerate() {
        array.set(i as u32, *word, 0).context("writing DROP_REASONS")?;
    }
    Ok(())
}

/// Loads and attaches the planned program. Links live as long as `ebpf`; dropping it detaches.
pub(crate) fn attach(ebpf: &mut Ebpf, hook: DropHook, btf: &Btf) -> anyhow::Result<()> {
    match hook {
        DropHook::TpBtf => {
            super::attach_btf_tracepoint(ebpf, PROG_TP_BTF, "kfree_skb", btf)?;
        }
        DropHook::Tracepoint => {
            let prog: &mut TracePoint = ebpf.program_mut(PROG_TP).context("drop_tp program missing from the object")?.try_into()?;
            prog.load().context("loading tracepoint skb/kfree_skb")?;
            prog.attach("skb", "kfree_skb").context("attaching tracepoint skb/kfree_skb")?;
        }
    }
    Ok(())
}

/// `tracer drops`' own flags.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Only these drop reasons (names as the kernel spells them, e.g. NETFILTER_DROP; repeatable
    /// or comma-separated)
    #[arg(long = "reason", value_name = "NAME", value_delimiter = ',', conflicts_with = "all_reasons")]
    pub reasons: Vec<String>,
    /// Show every reason, including NOT_SPECIFIED
    #[arg(long)]
    pub all_reasons: bool,
    /// Kernel hook: auto picks the BTF tracepoint when the kernel has BTF, else the classic one
    #[arg(long, value_enum, default_value_t = HookChoice::Auto)]
    pub hook: HookChoice,
    #[command(flatten)]
    pub budget: BudgetArgs,
}

/// `--max-rate`, on every command that traces drops (`drops`, `watch`, `diagnose`, `serve`).
#[derive(Debug, clap::Args)]
pub(crate) struct BudgetArgs {
    /// Drops per second printed per CPU and per place (reason, kernel location, network
    /// namespace); beyond it the kernel counts them by place instead, reported at the end
    /// (`off` or 0: print every drop) [default: 5000]
    #[arg(long = "max-rate", value_name = "N|off")]
    pub max_rate: Option<String>,
}

impl BudgetArgs {
    /// The rate checked: a whole number of drops per second, or `off`/0 for no budget.
    pub(crate) fn max_rate(&self) -> Result<u64, UsageError> {
        let Some(text) = self.max_rate.as_deref() else { return Ok(DEFAULT_MAX_RATE) };
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(0);
        }
        match text.parse::<u64>() {
            Ok(n) if n <= MAX_RATE_LIMIT => Ok(n),
            _ => Err(UsageError(format!(
                "--max-rate {text}: expected drops per second per CPU and place, a whole number from 0 to {MAX_RATE_LIMIT} (e.g. 5000), or off"
            ))),
        }
    }
}

/// The largest `--max-rate`: far above what one CPU can drop, so it means "no budget" anyway.
const MAX_RATE_LIMIT: u64 = 1_000_000_000;

impl super::FamilyArgs for Args {
    fn into_options(self, options: &mut super::FamilyOptions) -> Result<(), UsageError> {
        options.drops.reasons = if self.all_reasons {
            ReasonSelection::All
        } else if self.reasons.is_empty() {
            ReasonSelection::Default
        } else {
            // The names themselves are checked against this kernel's BTF when the family plans.
            let names: Vec<String> = self.reasons.iter().map(|r| r.trim().to_string()).filter(|r| !r.is_empty()).collect();
            if names.is_empty() {
                return Err(UsageError("--reason needs a reason name, e.g. --reason NETFILTER_DROP".into()));
            }
            ReasonSelection::Named(names)
        };
        options.drops.hook = self.hook;
        options.drops.max_rate = self.budget.max_rate()?;
        Ok(())
    }
}

/// What the user chose for the drops family.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub hook: HookChoice,
    pub reasons: ReasonSelection,
    /// `--max-rate`: drops/s delivered per CPU and place; 0: no budget.
    pub max_rate: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { hook: HookChoice::Auto, reasons: ReasonSelection::Default, max_rate: DEFAULT_MAX_RATE }
    }
}

/// The drops family: kfree_skb with the kernel's reason, conntrack's own drops told apart, and
/// storm counts for what the ring buffer cannot take.
pub(crate) struct Drops {
    options: Options,
    planned: Option<Planned>,
    decoder: Option<decode::Decoder>,
    conntrack: Option<conntrack::Classifier>,
    storm_watch: Option<tokio::task::JoinHandle<()>>,
    /// Read at stop: the ring-full counts (`storm`) and the over-budget ones (`counted`).
    storm: Vec<storm::StormCount>,
    counted: Vec<storm::StormCount>,
    /// The over-budget counts already added to `tracer_drops_total` (`serve`).
    counted_published: BTreeMap<(String, String), u64>,
}

struct Planned {
    plan: Plan,
    reasons: ReasonFilter,
    ct: Option<CtLayout>,
}

impl Drops {
    pub(crate) fn new(options: Options) -> Self {
        Drops {
            options,
            planned: None,
            decoder: None,
            conntrack: None,
            storm_watch: None,
            storm: Vec::new(),
            counted: Vec::new(),
            counted_published: BTreeMap::new(),
        }
    }

    /// The drops the rate budget counted so far, by place, with their names: what `diagnose`
    /// adds to its findings' counts.
    pub(crate) fn counted_places(&self, ebpf: &Ebpf) -> Vec<CountedPlace> {
        let Some(decoder) = &self.decoder else { return Vec::new() };
        let counts = storm::read_over_budget(ebpf).unwrap_or_else(|err| {
            log::warn!("reading the rate budget's counts: {err:#}");
            Vec::new()
        });
        counts.iter().map(|c| storm::place(c, decoder)).collect()
    }
}

fn describe_reasons(sel: &ReasonSelection) -> String {
    match sel {
        ReasonSelection::Default => "all but NOT_SPECIFIED".into(),
        ReasonSelection::All => "all".into(),
        ReasonSelection::Named(names) => names.join(","),
    }
}

impl Family for Drops {
    fn id(&self) -> FamilyId {
        FamilyId::Drops
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn plan(&mut self, ctx: &mut PlanContext<'_>) -> Result<(), PlanError> {
        let mut plan = plan(ctx.btf, self.options.hook)?;
        let ct = plan_conntrack(ctx.btf, &mut plan);
        let reasons = select_reasons(&plan, &self.options.reasons)?;
        self.planned = Some(Planned { plan, reasons, ct });
        Ok(())
    }

    fn describe(&self) -> String {
        self.planned.as_ref().map_or("", |p| p.plan.hook.describe()).to_string()
    }

    fn describe_alone(&self) -> String {
        let budget = match self.options.max_rate {
            0 => "no rate budget".to_string(),
            n => format!("at most {n}/s per CPU and place, the rest counted"),
        };
        format!("{}; reasons: {}; {budget}", self.describe(), describe_reasons(&self.options.reasons))
    }

    fn btf_tracepoints(&self) -> Vec<(&'static str, &'static str)> {
        match self.planned.as_ref().map(|p| p.plan.hook) {
            Some(DropHook::TpBtf) => vec![(PROG_TP_BTF, "kfree_skb")],
            _ => Vec::new(),
        }
    }

    fn configure(&mut self, globals: &mut Globals) -> Result<(), CannotRun> {
        let p = self.planned.as_ref().ok_or(CannotRun { probe: PROBE, reason: "not planned".into() })?;
        globals.set(DROP_CONFIG, &program_config(&p.plan, &p.reasons));
        globals.set(DROP_MAX_RATE, &self.options.max_rate);
        Ok(())
    }

    fn attach(&mut self, ebpf: &mut Ebpf, ctx: &AttachContext<'_>) -> anyhow::Result<()> {
        let p = self.planned.as_ref().context("drops: attach before plan")?;
        write_reasons(ebpf, &p.reasons)?;
        attach(ebpf, p.plan.hook, ctx.btf)?;
        // Read once the program is attached, off the way to `attached` (the first tick or event
        // takes it): BTF's parses had the CPUs before.
        let kallsyms = LazyKallsyms::spawn(ctx.alone);
        if ctx.alone && p.plan.reasons.is_none() {
            log::warn!("kernel {} has no drop reasons (added in 5.17): every drop is shown as NOT_SPECIFIED", crate::kernel::release());
        }
        // Said the moment the kernel starts counting instead of delivering (the ring-full
        // storm only alone, as before: watch's own summary says it).
        if ctx.alone || self.options.max_rate > 0 {
            self.storm_watch = Some(storm::watch(CounterReader::open(ebpf)?, self.options.max_rate, ctx.alone));
        }
        // Baselines of every namespace's conntrack counters, taken before `attached` is
        // printed: a conntrack drop from there on is told apart from a rule's.
        let clock = Clock::new();
        self.conntrack = p.ct.map(|_| conntrack::Classifier::start(clock));
        self.decoder = Some(decode::Decoder { reasons: p.plan.reasons.clone(), kallsyms, clock, ct: p.ct });
        Ok(())
    }

    fn tick(&mut self, _now: i128) -> Vec<Event> {
        // The kallsyms table is taken at the first tick if no drop needed it before, so that
        // its warnings come soon after `attached` rather than with the first drop.
        if let Some(decoder) = &self.decoder {
            decoder.kallsyms.get();
        }
        Vec::new()
    }

    fn decode(&mut self, _header: &EventHeader, bytes: &[u8]) -> Option<Event> {
        let mut event = self.decoder.as_ref()?.decode(bytes)?;
        if let (Some(classifier), Detail::Drop(drop)) = (self.conntrack.as_mut(), &mut event.detail) {
            classifier.classify(drop, event.netns, event.ts_unix_ns);
        }
        Some(event)
    }

    fn publish_metrics(&mut self, ebpf: &Ebpf) {
        let Some(decoder) = &self.decoder else { return };
        match storm::read_ring_full(ebpf) {
            Ok(counts) => detail::DropDetail::set_undelivered(&storm::by_reason_and_function(&counts, decoder)),
            Err(err) => log::debug!("storm counts: {err:#}"),
        }
        match storm::read_over_budget(ebpf) {
            Ok(counts) => detail::DropDetail::add_counted(&storm::by_reason_and_function(&counts, decoder), &mut self.counted_published),
            Err(err) => log::debug!("rate budget counts: {err:#}"),
        }
    }

    fn before_detach(&mut self, ebpf: &Ebpf) -> anyhow::Result<()> {
        if let Some(watch) = self.storm_watch.take() {
            watch.abort();
        }
        self.storm = storm::read_ring_full(ebpf)?;
        self.counted = storm::read_over_budget(ebpf)?;
        Ok(())
    }

    fn report(&self, counts: KernelCounts) {
        if let Some(decoder) = &self.decoder {
            let budget = storm::budget_report(&self.counted, counts.counted, self.options.max_rate, decoder);
            for line in budget.iter().chain(&storm::report(&self.storm, counts.lost, decoder)) {
                eprintln!("{line}");
            }
        }
    }

    fn check_row(&self, planned: &Result<(), String>, privileged: bool, hooks: &BTreeMap<&'static str, HookSupport>) -> CheckRow {
        let command = FamilyId::Drops.command();
        let Some(p) = self.planned.as_ref().filter(|_| planned.is_ok()) else {
            return CheckRow::not_running(command, planned.clone().err().unwrap_or_default());
        };
        let attach = p.plan.hook.describe();
        let kind = match p.plan.hook {
            DropHook::TpBtf => hooks::TP_BTF,
            DropHook::Tracepoint => hooks::TRACEPOINT,
        };
        if !privileged {
            return CheckRow::not_running(command, format!("would use {attach}, but needs root"));
        }
        match hooks.get(kind).and_then(|h| h.available.map(|a| (a, &h.detail))) {
            Some((false, why)) => CheckRow::not_running(command, format!("plans {attach}, but this kernel refused a no-op {kind} program: {why}")),
            _ => CheckRow { command, runs: true, hook: Some(kind), attach: Some(attach), detail: format!("via {attach}"), also_uses: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_with_reasons() -> Plan {
        Plan {
            hook: DropHook::TpBtf,
            config: DropConfig::empty(),
            reasons: Some(DropReasons::from_pairs([
                ("SKB_DROP_REASON_NOT_SPECIFIED".to_string(), 2),
                ("SKB_DROP_REASON_NO_SOCKET".to_string(), 3),
                ("SKB_DROP_REASON_NETFILTER_DROP".to_string(), 12),
            ])),
        }
    }

    #[test]
    fn default_hides_only_not_specified() {
        let c = select_reasons(&plan_with_reasons(), &ReasonSelection::Default).unwrap();
        assert!(!c.wants(2));
        assert!(c.wants(3) && c.wants(12) && c.wants(100) && c.wants(0x10001));
    }

    #[test]
    fn named_reasons_select_exactly() {
        let c = select_reasons(&plan_with_reasons(), &ReasonSelection::Named(vec!["netfilter_drop".into()])).unwrap();
        assert!(c.wants(12));
        assert!(!c.wants(3) && !c.wants(2) && !c.wants(0x10001));
    }

    #[test]
    fn unknown_reason_is_usage_error() {
        let err = select_reasons(&plan_with_reasons(), &ReasonSelection::Named(vec!["NOPE".into()])).unwrap_err();
        assert!(err.0.contains("NOPE"));
    }

    #[test]
    fn kernels_without_reasons_show_everything() {
        let mut p = plan_with_reasons();
        p.reasons = None;
        let c = select_reasons(&p, &ReasonSelection::Default).unwrap();
        assert!(c.wants(0) && c.wants(2));
        assert!(select_reasons(&p, &ReasonSelection::Named(vec!["NO_SOCKET".into()])).is_err());
    }

    #[test]
    fn max_rate_is_a_whole_number_or_off() {
        let rate = |text: Option<&str>| BudgetArgs { max_rate: text.map(String::from) }.max_rate();
        assert_eq!(rate(None).unwrap(), DEFAULT_MAX_RATE);
        assert_eq!(rate(Some("off")).unwrap(), 0);
        assert_eq!(rate(Some("OFF")).unwrap(), 0);
        assert_eq!(rate(Some("0")).unwrap(), 0);
        assert_eq!(rate(Some("250")).unwrap(), 250);
        for bad in ["-1", "lots", "1e3", "", "5000000000", "2.5"] {
            let err = rate(Some(bad)).unwrap_err();
            assert!(err.0.starts_with("--max-rate ") && err.0.contains("off"), "{bad}: {}", err.0);
        }
    }

    #[test]
    fn running_kernel_plans_tp_btf_and_tracepoint() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIPPED: no kernel BTF on {}", crate::kernel::release());
            return;
        }
        let btf = KernelBtf::load(None).unwrap();
        let p = plan(&btf, HookChoice::TpBtf).expect("tp_btf plan");
        assert_eq!((p.config.skb_arg, p.config.location_arg), (0, 1));
        if let Err(e) = tracefs::mounted_or_mount() {
            eprintln!("SKIPPED: classic tracepoint plan not checked: {e}");
            return;
        }
        let p = plan(&btf, HookChoice::Tracepoint).expect("tracepoint plan");
        // The common header is 8 bytes on every kernel; skbaddr is the first field after it.
        assert_eq!(p.config.skb_arg, 8);
    }
}
