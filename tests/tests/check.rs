//! `tracer check -o json` against the kernel it runs on: the hook kinds it reports (kprobe,
//! fentry, tp_btf, tracepoint, tcx) must agree with what the kernel was built with, with what
//! `tracer drops` then really attaches, with the table output, and the probes must leave nothing
//! loaded. Runs on the host and inside every kernel of the VM matrix (cargo xtask vm-test).
#![expect(unused_crate_dependencies, reason = "each test binary links all of tracer-tests' dependencies and uses a few")]

use std::{collections::BTreeMap, time::Duration};

use tracer_tests::*;

const HOOK_KINDS: &[&str] = &["fentry", "kprobe", "tcx", "tp_btf", "tracepoint"];
/// The name tracer gives its probe programs (tracer/src/kernel/hooks.rs).
const PROBE_PROG_NAME: &str = "tracer_check";

fn check_json() -> Value {
    let run = run_tracer(&["check", "-o", "json"], Duration::from_secs(60));
    run.assert_code(0);
    serde_json::from_str(&run.lines.join("\n")).unwrap_or_else(|e| panic!("check -o json is not JSON ({e}):\n{}", run.lines.join("\n")))
}

/// `CONFIG_X=y|m|...` of the running kernel, from /boot/config-RELEASE (the VM initramfs carries
/// it there) or /proc/config.gz; None when neither is readable.
fn kernel_config() -> Option<BTreeMap<String, String>> {
    let release = kernel_release();
    let text = std::fs::read_to_string(format!("/boot/config-{release}")).ok().or_else(|| {
        let out = cmd(&["zcat", "/proc/config.gz"]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })?;
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("CONFIG_"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

#[test]
fn check_json_reports_hooks_consistently() {
    let test = "check_json_reports_hooks_consistently";
    if !require_privileged(test) {
        return;
    }
    // Exclusive: the bpftool listing below must not see another test's programs.
    let _lock = exclusive_lock();
    let report = check_json();
    assert_eq!(report["kernel"], kernel_release().as_str(), "kernel release in {report}");

    // Every kind, probed (root: never null), with its method and result named.
    let hooks = report["hooks"].as_object().unwrap_or_else(|| panic!("no `hooks` object in {report}"));
    let mut available = BTreeMap::new();
    for kind in HOOK_KINDS {
        let h = &hooks.get(*kind).unwrap_or_else(|| panic!("hooks.{kind} missing in {report}"));
        let ok = h["available"].as_bool().unwrap_or_else(|| panic!("hooks.{kind}.available is not a bool as root: {h}"));
        for field in ["method", "detail"] {
            assert!(h[field].as_str().is_some_and(|s| !s.is_empty()), "hooks.{kind}.{field} empty: {h}");
        }
        assert!(h["used_by"].is_array(), "hooks.{kind}.used_by not an array: {h}");
        if !ok {
            let d = h["detail"].as_str().unwrap_or_default();
            // A refusal names the step (load/attach/perf_event_open/link_create) or the reason.
            assert!(
                ["load:", "attach:", "perf_event_open", "link_create", "no ", "BTF", "tracefs"].iter().any(|w| d.contains(w)),
                "hooks.{kind} unavailable without saying why: {d}"
            );
        }
        available.insert(*kind, ok);
    }
    eprintln!("kernel {}: hooks {available:?}", kernel_release());
    assert_eq!(hooks.len(), HOOK_KINDS.len(), "unexpected hook kinds in {report}");
    // tracer needs one of these two on every supported kernel.
    assert!(available["tp_btf"] || available["tracepoint"], "neither tp_btf nor tracepoint: {report}");

    // Against the kernel's build configuration: kprobes exist exactly when CONFIG_KPROBES=y;
    // fentry needs a JIT, BTF and the function tracer's call sites (a kernel may still refuse
    // it, as the 6.18 development machine does with EPERM, so only that direction is checked).
    match kernel_config() {
        Some(config) => {
            let y = |k: &str| config.get(k).is_some_and(|v| v == "y");
            assert_eq!(available["kprobe"], y("CONFIG_KPROBES"), "hooks.kprobe vs CONFIG_KPROBES: {}", hooks["kprobe"]);
            if available["fentry"] {
                for k in ["CONFIG_BPF_JIT", "CONFIG_DEBUG_INFO_BTF", "CONFIG_FUNCTION_TRACER"] {
                    assert!(y(k), "fentry attached although {k} is not y");
                }
            }
            if !y("CONFIG_DEBUG_INFO_BTF") {
                assert!(!available["tp_btf"] && !available["fentry"], "tp_btf/fentry without CONFIG_DEBUG_INFO_BTF");
            }
        }
        None => skipped(&format!("{test}: hooks vs kernel config"), "no /boot/config-RELEASE and no /proc/config.gz"),
    }
    let kprobe_pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists();
    assert!(!available["kprobe"] || kprobe_pmu, "kprobe available without a kprobe PMU");

    // The hook check names for drops is the one drops attaches, and the only one that says so.
    let drops = report["commands"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["command"] == "drops"))
        .unwrap_or_else(|| panic!("no drops command in {report}"));
    assert_eq!(drops["runs"], true, "drops should run as root here: {drops}");
    let kind = drops["hook"].as_str().unwrap_or_else(|| panic!("drops.hook missing: {drops}"));
    assert!(available.get(kind) == Some(&true), "drops uses {kind}, which check reports unavailable");
    for k in HOOK_KINDS {
        let used: Vec<&str> = hooks[*k]["used_by"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        assert_eq!(used.contains(&"drops"), *k == kind, "hooks.{k}.used_by {used:?} vs drops.hook {kind}");
    }
    let attach = drops["attach"].as_str().unwrap_or_else(|| panic!("drops.attach missing: {drops}"));
    let run = run_tracer(&["drops", "-o", "json", "--ip", "198.18.255.255/32", "--duration", "1s"], Duration::from_secs(60));
    run.assert_code(0);
    let attached = run.stderr_lines().into_iter().find(|l| l.contains("attached")).unwrap_or_default().to_string();
    assert!(attached.contains(&format!("({attach};")), "check says drops attaches {attach}; drops said: {attached}");

    // watch and diagnose run with every family that runs, and name the ones that do not.
    let commands = report["commands"].as_array().cloned().unwrap_or_default();
    let row = |name: &str| commands.iter().find(|c| c["command"] == name).cloned().unwrap_or_else(|| panic!("no {name} row in {report}"));
    let families: Vec<Value> = ["drops", "retrans", "nat", "mtu"].iter().map(|f| row(f)).collect();
    for all in ["watch", "diagnose"] {
        let r = row(all);
        let any = families.iter().any(|f| f["runs"] == true);
        assert_eq!(r["runs"], any, "{all} runs iff a family runs: {r}");
        let detail = r["detail"].as_str().unwrap_or_default();
        for f in &families {
            let name = f["command"].as_str().unwrap_or_default();
            let said = if f["runs"] == true { "with" } else { "without" };
            let part = detail.split(';').find(|p| p.trim_start().starts_with(said)).unwrap_or_default();
            assert!(part.contains(name), "{all}: {name} should be listed `{said}` in {detail:?}");
        }
    }

    // The table says the same as the JSON.
    let table = run_tracer(&["check"], Duration::from_secs(60));
    table.assert_code(0);
    for kind in HOOK_KINDS {
        let row = table
            .lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(kind))
            .unwrap_or_else(|| panic!("no {kind} row in:\n{}", table.lines.join("\n")));
        let ok = row.split_whitespace().nth(1).unwrap_or_default();
        assert_eq!(ok, if available[kind] { "yes" } else { "no" }, "table row {row:?} vs JSON");
    }

    // Nothing of the probes stays loaded (program freeing is deferred: poll, bounded).
    let mut left = Vec::new();
    for _ in 0..50 {
        left = bpf_progs_named(&[PROBE_PROG_NAME]);
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left.is_empty(), "probe programs left loaded after tracer check: {left:?}");
}
