//! `tracer check`: what this kernel supports and which commands will run. Tells the truth by
//! asking the kernel (loading trivial programs, reading BTF and tracefs), never by version.

use std::{collections::BTreeMap, path::Path};

use serde::Serialize;

use crate::{
    cli::{CheckArgs, HookChoice, OutputFormat},
    kernel::{
        self,
        btf::{MODULE_BTF_DIR, VMLINUX_BTF},
        drop_reasons::DropReasons,
        features::{self, Feature},
        hooks::{self, HookSupport},
        kallsyms::Kallsyms,
        tracefs,
    },
    probes::{
        drops::{self, Hook},
        mtu, nat, tcp,
    },
};

#[derive(Serialize)]
struct Report {
    kernel: String,
    features: Vec<Feature>,
    /// Each kind of hook, probed by attaching a no-op program (kernel/hooks.rs), keyed by kind:
    /// kprobe, fentry, tp_btf, tracepoint, tcx.
    hooks: BTreeMap<&'static str, HookSupport>,
    commands: Vec<CommandStatus>,
    drop_reasons: Vec<String>,
}

#[derive(Serialize)]
struct CommandStatus {
    command: &'static str,
    runs: bool,
    /// The kind of hook it will use here (a key of `hooks`), null when it cannot run.
    hook: Option<&'static str>,
    /// The exact attach point.
    attach: Option<&'static str>,
    detail: String,
}

/// Prints the report; returns whether `drops` can run (exit 1 when not).
pub fn run(args: &CheckArgs) -> anyhow::Result<bool> {
    let mut feats = Vec::new();
    let mut push = |name: &str, ok: bool, detail: String| {
        feats.push(Feature { name: name.into(), available: ok, detail });
    };
    let caps = features::effective_caps();
    let missing = features::missing_privileges(caps);
    let privileged = missing.is_none();
    push("privileges", privileged, missing.unwrap_or_else(|| "can load BPF programs".into()));

    let btf = super::load_btf(args.btf.as_deref());
    let btf_source = args.btf.as_deref().map_or(VMLINUX_BTF.to_string(), |p| p.display().to_string());
    push("kernel BTF", btf.is_ok(), match &btf {
        Ok(_) => format!("read {btf_source}"),
        Err(e) => format!("{e:#}"),
    });
    // Mounted here if need be, as the commands that read it would: the rows below then say what
    // those commands will find.
    let tracefs = tracefs::mounted_or_mount();
    push("tracefs", tracefs.is_ok(), match &tracefs {
        Ok(root) if tracefs::mounted_by_tracer() => format!("{} (was not mounted: tracer mounted it)", root.display()),
        Ok(root) => root.display().to_string(),
        Err(e) => format!("{e}: the classic tracepoint fallback is unavailable"),
    });
    let kallsyms = Kallsyms::load().map(|k| !k.is_empty()).unwrap_or(false);
    push("kallsyms addresses", kallsyms, if kallsyms { "symbolised locations".into() } else { "hidden: locations print as addresses".into() });

    if privileged {
        feats.extend(features::probe_bpf());
    } else {
        feats.push(Feature { name: "program and map types".into(), available: false, detail: "unknown: probing needs root".into() });
    }
    // tp_btf and fentry attach by id in the kernel's own BTF: a --btf file cannot stand in.
    let own_btf = match &args.btf {
        None => None,
        Some(_) => kernel::btf::KernelBtf::load(None).ok(),
    };
    let own_btf = if args.btf.is_none() { btf.as_ref().ok() } else { own_btf.as_ref() };
    let mut hook_report: BTreeMap<_, _> = if privileged {
        hooks::probe_all(own_btf).into_iter().collect()
    } else {
        hooks::unprobed("unknown: probing needs root").into_iter().collect()
    };

    let mut reasons_list = Vec::new();
    let mut btf = btf;
    if let Ok(btf) = &mut btf {
        // Conntrack types, for the NAT probe: in vmlinux when built in, else in module BTF.
        let (ok, detail) = match btf.with_module("nf_conntrack") {
            Ok(true) => (true, format!("module BTF {MODULE_BTF_DIR}/nf_conntrack")),
            Ok(false) if btf.offset_of("nf_conn", "status").is_ok() => (true, "built into the kernel".to_string()),
            Ok(false) => (false, "nf_conntrack module not loaded".to_string()),
            Err(e) => (false, e.to_string()),
        };
        feats.push(Feature { name: "conntrack types (struct nf_conn)".into(), available: ok, detail });
    }
    let drops_row = match &btf {
        Err(e) => CommandStatus { command: "drops", runs: false, hook: None, attach: None, detail: format!("no BTF: {e:#}") },
        Ok(btf) => {
            let offsets = btf.kernel_offsets();
            feats.push(Feature {
                name: "struct offsets (sk_buff, net_device, sock, net)".into(),
                available: offsets.is_ok(),
                detail: match &offsets {
                    Ok(o) => format!("from BTF: sk_buff.len={} sk_buff.head={} net_device.ifindex={}", o.skb_len, o.skb_head, o.net_device_ifindex),
                    Err(e) => e.to_string(),
                },
            });
            match DropReasons::from_btf(btf) {
                Ok(Some(r)) => {
                    feats.push(Feature { name: "drop reasons".into(), available: true, detail: format!("{} reasons in enum skb_drop_reason", r.len()) });
                    reasons_list = r.iter().map(|(_, n)| n.to_string()).collect();
                }
                Ok(None) => feats.push(Feature { name: "drop reasons".into(), available: false, detail: "none: kernel < 5.17, drops show as NOT_SPECIFIED".into() }),
                Err(e) => feats.push(Feature { name: "drop reasons".into(), available: false, detail: e.to_string() }),
            }
            for (name, choice) in [("drops layout: tp_btf/kfree_skb", HookChoice::TpBtf), ("drops layout: tracepoint skb/kfree_skb", HookChoice::Tracepoint)] {
                let p = drops::plan(btf, choice);
                feats.push(Feature { name: name.into(), available: p.is_ok(), detail: p.map_or_else(|e| e.reason, |_| "arguments resolved".into()) });
            }
            drops_status(drops::plan(btf, HookChoice::Auto).map_err(|e| e.to_string()), offsets.map_err(|e| e.to_string()), privileged, &hook_report)
        }
    };
    let retrans_row = match &btf {
        Err(e) => CommandStatus { command: "retrans", runs: false, hook: None, attach: None, detail: format!("no BTF: {e:#}") },
        Ok(btf) => retrans_status(tcp::plan(btf), privileged, &hook_report),
    };
    let nat_row = match &mut btf {
        Err(e) => CommandStatus { command: "nat", runs: false, hook: None, attach: None, detail: format!("no BTF: {e:#}") },
        Ok(btf) => match nat::plan(btf) {
            Err(e) => CommandStatus { command: "nat", runs: false, hook: None, attach: None, detail: e.reason },
            Ok(_) if !privileged => CommandStatus {
                command: "nat",
                runs: false,
                hook: None,
                attach: None,
                detail: "would use tp_btf/net_dev_start_xmit, but needs root".into(),
            },
            Ok(_) => CommandStatus {
                command: "nat",
                runs: hook_report.get(hooks::TP_BTF).is_none_or(|h| h.available != Some(false)),
                hook: Some(hooks::TP_BTF),
                attach: Some("tp_btf/net_dev_start_xmit"),
                detail: "via tp_btf/net_dev_start_xmit (nf_conn layout from BTF)".into(),
            },
        },
    };
    let mtu_row = match &btf {
        Err(e) => CommandStatus { command: "mtu", runs: false, hook: None, attach: None, detail: format!("no BTF: {e:#}") },
        Ok(btf) => mtu_status(mtu::plan(btf, crate::cli::SentHook::Auto), privileged, &hook_report),
    };
    let runs = drops_row.runs;
    for row in [&drops_row, &retrans_row, &nat_row, &mtu_row] {
        if let (true, Some(kind)) = (row.runs, row.hook)
            && let Some(h) = hook_report.get_mut(kind)
        {
            h.used_by.push(row.command);
        }
    }
    // mtu's tc programs go through TCX links where aya uses them (kernel >= 6.6).
    if mtu_row.runs
        && mtu::tc::uses_tcx()
        && let Some(h) = hook_report.get_mut(hooks::TCX)
    {
        h.used_by.push(mtu_row.command);
    }
    let report = Report {
        kernel: kernel::release(),
        features: feats,
        hooks: hook_report,
        commands: {
            let families = [&drops_row, &retrans_row, &nat_row, &mtu_row];
            let watch = all_probes_status("watch", &families);
            let diagnose = all_probes_status("diagnose", &families);
            vec![drops_row, retrans_row, nat_row, mtu_row, watch, diagnose]
        },
        drop_reasons: reasons_list,
    };

    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print_table(&report),
    }
    Ok(runs)
}

/// Whether `drops` runs, and on which hook: the planned one (`--hook auto`), as long as
/// attaching a no-op program there worked too.
fn drops_status(
    plan: Result<drops::Plan, String>,
    offsets: Result<tracer_common::offsets::KernelOffsets, String>,
    privileged: bool,
    hooks: &BTreeMap<&'static str, HookSupport>,
) -> CommandStatus {
    let not = |detail: String| CommandStatus { command: "drops", runs: false, hook: None, attach: None, detail };
    let plan = match (plan, offsets) {
        (Err(e), _) | (_, Err(e)) => return not(e),
        (Ok(p), Ok(_)) => p,
    };
    let (kind, attach) = match plan.hook {
        Hook::TpBtf => (hooks::TP_BTF, plan.hook.describe()),
        Hook::Tracepoint => (hooks::TRACEPOINT, plan.hook.describe()),
    };
    if !privileged {
        return not(format!("would use {attach}, but needs root"));
    }
    match hooks.get(kind).and_then(|h| h.available.map(|a| (a, &h.detail))) {
        Some((false, why)) => not(format!("plans {attach}, but this kernel refused a no-op {kind} program: {why}")),
        _ => CommandStatus { command: "drops", runs: true, hook: Some(kind), attach: Some(attach), detail: format!("via {attach}") },
    }
}

/// Whether `retrans` runs: its BTF tracepoints resolved (the retransmit one at least) and the
/// kernel takes tp_btf programs.
fn retrans_status(
    plan: Result<tcp::Plan, crate::probes::CannotRun>,
    privileged: bool,
    hooks: &BTreeMap<&'static str, HookSupport>,
) -> CommandStatus {
    let not = |detail: String| CommandStatus { command: "retrans", runs: false, hook: None, attach: None, detail };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return not(e.reason),
    };
    let attach = "tp_btf/tcp_retransmit_skb";
    let mut detail = format!("via tp_btf: {}", plan.hooks.iter().map(|h| h.tracepoint).collect::<Vec<_>>().join(", "));
    if !plan.missing.is_empty() {
        detail.push_str(&format!(" (without: {})", plan.missing.join("; ")));
    }
    if !privileged {
        return not(format!("would use {attach}, but needs root"));
    }
    match hooks.get(hooks::TP_BTF).and_then(|h| h.available.map(|a| (a, &h.detail))) {
        Some((false, why)) => not(format!("this kernel refused a no-op tp_btf program: {why}")),
        _ => CommandStatus { command: "retrans", runs: true, hook: Some(hooks::TP_BTF), attach: Some(attach), detail },
    }
}

/// Whether `mtu` runs and with which hooks: tp_btf (kfree_skb, and icmp_send where the kernel
/// has it) plus tc programs, through TCX links where the kernel has them.
fn mtu_status(
    plan: Result<mtu::Plan, crate::probes::CannotRun>,
    privileged: bool,
    hooks: &BTreeMap<&'static str, HookSupport>,
) -> CommandStatus {
    let not = |detail: String| CommandStatus { command: "mtu", runs: false, hook: None, attach: None, detail };
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return not(e.reason),
    };
    let attach = if plan.icmp_send { "tp_btf/icmp_send" } else { "tp_btf/kfree_skb" };
    let tcx = hooks.get(hooks::TCX).and_then(|h| h.available);
    let tc = match (mtu::tc::uses_tcx(), tcx) {
        (true, Some(false)) => "tc via TCX, which this kernel refused (tc attach will fail)",
        (true, _) => "tc via TCX links",
        (false, _) => "tc via a clsact qdisc (no TCX before 6.6)",
    };
    let mut detail = format!("via {}; {tc} on pod veths and tunnels (or --iface)", mtu::describe(&plan));
    if !plan.missing.is_empty() {
        detail.push_str(&format!(" (without: {})", plan.missing.join("; ")));
    }
    if !privileged {
        return not(format!("would use {attach}, but needs root"));
    }
    match hooks.get(hooks::TP_BTF).and_then(|h| h.available.map(|a| (a, &h.detail))) {
        Some((false, why)) => not(format!("this kernel refused a no-op tp_btf program: {why}")),
        _ => CommandStatus { command: "mtu", runs: true, hook: Some(hooks::TP_BTF), attach: Some(attach), detail },
    }
}

fn print_table(report: &Report) {
    println!("kernel {}{}", report.kernel, if Path::new(VMLINUX_BTF).exists() { "" } else { " (no /sys/kernel/btf/vmlinux)" });
    println!();
    println!("{:<48} {:<4} DETAIL", "FEATURE", "OK");
    for f in &report.features {
        println!("{:<48} {:<4} {}", f.name, if f.available { "yes" } else { "no" }, f.detail);
    }
    println!();
    println!("{:<12} {:<4} {:<10} DETAIL", "HOOK", "OK", "USED BY");
    for (kind, h) in &report.hooks {
        let ok = match h.available {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let used = if h.used_by.is_empty() { "-".to_string() } else { h.used_by.join(",") };
        println!("{kind:<12} {ok:<4} {used:<10} {}", h.detail);
    }
    println!();
    println!("{:<12} {:<4} {:<10} DETAIL", "COMMAND", "RUNS", "HOOK");
    for c in &report.commands {
        println!("{:<12} {:<4} {:<10} {}", c.command, if c.runs { "yes" } else { "no" }, c.hook.unwrap_or("-"), c.detail);
    }
    println!();
    println!("How each hook was probed (a no-op program, detached before this was printed):");
    for (kind, h) in &report.hooks {
        println!("  {kind}: {}", h.method);
    }
}

/// `watch` and `diagnose` run every family that can run here: they run when one can, and say
/// which are left out.
fn all_probes_status(command: &'static str, families: &[&CommandStatus]) -> CommandStatus {
    let running: Vec<&str> = families.iter().filter(|f| f.runs).map(|f| f.command).collect();
    let missing: Vec<&str> = families.iter().filter(|f| !f.runs).map(|f| f.command).collect();
    let detail = match (running.is_empty(), missing.is_empty()) {
        (true, _) => "no probe family runs here (see the rows above)".to_string(),
        (false, true) => format!("with {}", running.join(", ")),
        (false, false) => format!("with {}; without {} (see the rows above)", running.join(", "), missing.join(", ")),
    };
    CommandStatus { command, runs: !running.is_empty(), hook: None, attach: None, detail }
}

