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
    probes::{CheckRow, CommandId, FamilyId, FamilyOptions, PlanContext, PlanError, drops, new_family},
    session::load_btf,
};

#[derive(Serialize)]
struct Report {
    kernel: String,
    features: Vec<Feature>,
    /// Each kind of hook, probed by attaching a no-op program (kernel/hooks.rs), keyed by kind:
    /// kprobe, fentry, tp_btf, tracepoint, tcx.
    hooks: BTreeMap<&'static str, HookSupport>,
    commands: Vec<CheckRow>,
    drop_reasons: Vec<String>,
}

/// Prints the report; returns whether `drops` can run (exit 1 when not).
pub(crate) fn run(args: &CheckArgs) -> anyhow::Result<bool> {
    let mut feats = Vec::new();
    let mut push = |name: &str, ok: bool, detail: String| {
        feats.push(Feature { name: name.into(), available: ok, detail });
    };
    let caps = features::effective_caps();
    let missing = features::missing_privileges(CommandId::Drops.name(), &CommandId::Drops.needs(false), caps);
    let privileged = missing.is_none();
    push("privileges", privileged, missing.unwrap_or_else(|| "can load BPF programs".into()));

    let btf = load_btf(args.btf.as_deref());
    let btf_source = args.btf.as_deref().map_or(VMLINUX_BTF.to_string(), |p| p.display().to_string());
    push(
        "kernel BTF",
        btf.is_ok(),
        match &btf {
            Ok(_) => format!("read {btf_source}"),
            Err(e) => format!("{e:#}"),
        },
    );
    // Mounted here if need be, as the commands that read it would: the rows below then say what
    // those commands will find.
    let tracefs = tracefs::mounted_or_mount();
    push(
        "tracefs",
        tracefs.is_ok(),
        match &tracefs {
            Ok(root) if tracefs::mounted_by_tracer() => format!("{} (was not mounted: tracer mounted it)", root.display()),
            Ok(root) => root.display().to_string(),
            Err(e) => format!("{e}: the classic tracepoint fallback is unavailable"),
        },
    );
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
    let mut offsets_failed = None;
    if let Ok(btf) = &btf {
        let offsets = btf.kernel_offsets();
        feats.push(Feature {
            name: "struct offsets (sk_buff, net_device, sock, net)".into(),
            available: offsets.is_ok(),
            detail: match &offsets {
                Ok(o) => format!("from BTF: sk_buff.len={} sk_buff.head={} net_device.ifindex={}", o.skb_len, o.skb_head, o.net_device_ifindex),
                Err(e) => e.to_string(),
            },
        });
        offsets_failed = offsets.err().map(|e| e.to_string());
        match DropReasons::from_btf(btf) {
            Ok(Some(r)) => {
                feats.push(Feature { name: "drop reasons".into(), available: true, detail: format!("{} reasons in enum skb_drop_reason", r.len()) });
                reasons_list = r.iter().map(|(_, n)| n.to_string()).collect();
            }
            Ok(None) => feats.push(Feature {
                name: "drop reasons".into(),
                available: false,
                detail: "none: kernel < 5.17, drops show as NOT_SPECIFIED".into(),
            }),
            Err(e) => feats.push(Feature { name: "drop reasons".into(), available: false, detail: e.to_string() }),
        }
        for (name, choice) in
            [("drops layout: tp_btf/kfree_skb", HookChoice::TpBtf), ("drops layout: tracepoint skb/kfree_skb", HookChoice::Tracepoint)]
        {
            let p = drops::plan(btf, choice);
            feats.push(Feature { name: name.into(), available: p.is_ok(), detail: p.map_or_else(|e| e.reason, |_| "arguments resolved".into()) });
        }
    }
    // Every family of the registry, planned as its own command would plan it.
    let options = FamilyOptions::default();
    let mut rows = Vec::new();
    for id in FamilyId::ALL {
        let mut family = new_family(id, &options);
        let row = match &mut btf {
            Err(e) => CheckRow::not_running(id.command(), format!("no BTF: {e:#}")),
            Ok(btf) => {
                let planned = match family.plan(&mut PlanContext { btf, alone: true, egress_checks: false }) {
                    Ok(()) => offsets_failed.clone().map_or(Ok(()), Err),
                    Err(PlanError::CannotRun(e)) => Err(e.reason),
                    Err(PlanError::Usage(e)) => Err(e.0),
                };
                family.check_row(&planned, privileged, &hook_report)
            }
        };
        rows.push(row);
    }
    let runs = rows.iter().find(|r| r.command == CommandId::Drops.name()).is_some_and(|r| r.runs);
    for row in &rows {
        for kind in [row.hook, row.also_uses].into_iter().flatten() {
            if row.runs
                && let Some(h) = hook_report.get_mut(kind)
            {
                h.used_by.push(row.command);
            }
        }
    }
    let mut commands = rows.clone();
    for command in CommandId::ALL.into_iter().filter(|c| !c.alone()) {
        commands.push(all_probes_status(command.name(), &rows));
    }
    let report = Report { kernel: kernel::release(), features: feats, hooks: hook_report, commands, drop_reasons: reasons_list };

    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Table => print_table(&report),
    }
    Ok(runs)
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
fn all_probes_status(command: &'static str, families: &[CheckRow]) -> CheckRow {
    let running: Vec<&str> = families.iter().filter(|f| f.runs).map(|f| f.command).collect();
    let missing: Vec<&str> = families.iter().filter(|f| !f.runs).map(|f| f.command).collect();
    let detail = match (running.is_empty(), missing.is_empty()) {
        (true, _) => "no probe family runs here (see the rows above)".to_string(),
        (false, true) => format!("with {}", running.join(", ")),
        (false, false) => format!("with {}; without {} (see the rows above)", running.join(", "), missing.join(", ")),
    };
    CheckRow { command, runs: !running.is_empty(), hook: None, attach: None, detail, also_uses: None }
}
