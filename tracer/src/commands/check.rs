//! `tracer check`: what this kernel supports and which commands will run. Tells the truth by
//! asking the kernel (loading trivial programs, reading BTF and tracefs), never by version.

use std::path::Path;

use serde::Serialize;

use crate::{
    cli::{CheckArgs, HookChoice, OutputFormat},
    kernel::{self, btf::{MODULE_BTF_DIR, VMLINUX_BTF}, drop_reasons::DropReasons, features, features::Feature, kallsyms::Kallsyms, tracefs},
    probes::drops,
};

#[derive(Serialize)]
struct Report {
    kernel: String,
    features: Vec<Feature>,
    commands: Vec<CommandStatus>,
    drop_reasons: Vec<String>,
}

#[derive(Serialize)]
struct CommandStatus {
    command: &'static str,
    runs: bool,
    detail: String,
}

/// Prints the report; returns whether `drops` can run (exit 1 when not).
pub fn run(args: &CheckArgs) -> anyhow::Result<bool> {
    let mut feats = Vec::new();
    let mut push = |name: &str, ok: bool, detail: String| {
        feats.push(Feature { name: name.into(), available: ok, detail });
    };
    let caps = features::effective_caps();
    let privileged = features::missing_privileges(caps).is_none();
    push("privileges", privileged, if privileged { "can load BPF programs".into() } else { "not root: cannot load BPF programs".into() });

    let btf = super::load_btf(args.btf.as_deref());
    let btf_source = args.btf.as_deref().map_or(VMLINUX_BTF.to_string(), |p| p.display().to_string());
    push("kernel BTF", btf.is_ok(), match &btf {
        Ok(_) => format!("read {btf_source}"),
        Err(e) => format!("{e:#}"),
    });
    push("tracefs", tracefs::root().is_some(), tracefs::root().map_or("not mounted".into(), |p| p.display().to_string()));
    let kallsyms = Kallsyms::load().map(|k| !k.is_empty()).unwrap_or(false);
    push("kallsyms addresses", kallsyms, if kallsyms { "symbolised locations".into() } else { "hidden: locations print as addresses".into() });

    if privileged {
        feats.extend(features::probe_bpf());
    } else {
        feats.push(Feature { name: "program and map types".into(), available: false, detail: "unknown: probing needs root".into() });
    }

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
    let drops_status = match &btf {
        Err(e) => CommandStatus { command: "drops", runs: false, detail: format!("no BTF: {e:#}") },
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
            for (name, choice) in [("hook: tp_btf/kfree_skb", HookChoice::TpBtf), ("hook: tracepoint skb/kfree_skb", HookChoice::Tracepoint)] {
                let p = drops::plan(btf, choice);
                feats.push(Feature { name: name.into(), available: p.is_ok(), detail: p.map_or_else(|e| e.reason, |_| "layout resolved".into()) });
            }
            let plan = drops::plan(btf, HookChoice::Auto);
            match (&plan, &offsets, privileged) {
                (Ok(p), Ok(_), true) => CommandStatus { command: "drops", runs: true, detail: format!("via {}", p.hook.describe()) },
                (Ok(p), Ok(_), false) => CommandStatus { command: "drops", runs: false, detail: format!("would use {}, but needs root", p.hook.describe()) },
                (Err(e), _, _) => CommandStatus { command: "drops", runs: false, detail: e.to_string() },
                (_, Err(e), _) => CommandStatus { command: "drops", runs: false, detail: e.to_string() },
            }
        }
    };
    let runs = drops_status.runs;
    let report = Report { kernel: kernel::release(), features: feats, commands: vec![drops_status], drop_reasons: reasons_list };

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
    println!("{:<48} {:<4} DETAIL", "COMMAND", "RUNS");
    for c in &report.commands {
        println!("{:<48} {:<4} {}", c.command, if c.runs { "yes" } else { "no" }, c.detail);
    }
}
