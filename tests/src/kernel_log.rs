//! What the kernel itself reports while a test runs, to cross-check the tracer: private tracefs
//! instances ([`tracefs_root`] mounts tracefs when needed) recording `skb:kfree_skb`
//! ([`KernelDropLog`]) and the TCP tracepoints ([`KernelTcpLog`]), and /proc/kallsyms to name
//! raw addresses ([`KernelSymbols`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use crate::{strip_size, unique_name};

/// One `skb:kfree_skb` record from tracefs, as the kernel printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDrop {
    /// `sym+0xoff` (size stripped) on kernels that print `%pS`, else what the kernel printed.
    pub location: String,
    pub reason: String,
    pub protocol: u32,
}

/// Text symbols of /proc/kallsyms, to name a raw address the way the kernel's `%pS` does
/// (`sym+0xoff`). The tests' own reading, on purpose independent of the tracer's.
pub struct KernelSymbols {
    /// (address, name) sorted by address; only code (t/T/w/W), so data never captures code.
    text: Vec<(u64, String)>,
}

impl KernelSymbols {
    pub fn load() -> KernelSymbols {
        let raw = fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let mut text: Vec<(u64, String)> = raw
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (addr, kind, name) = (w.next()?, w.next()?, w.next()?);
                let addr = u64::from_str_radix(addr, 16).ok().filter(|a| *a != 0)?;
                ["t", "T", "w", "W"].contains(&kind).then(|| (addr, name.to_string()))
            })
            .collect();
        text.sort();
        KernelSymbols { text }
    }

    /// False when kptr_restrict hides the addresses from this process.
    pub fn has_addresses(&self) -> bool {
        !self.text.is_empty()
    }

    /// `sym+0xoff` of the nearest symbol at or below `addr`.
    pub fn name(&self, addr: u64) -> Option<String> {
        let i = self.text.partition_point(|(a, _)| *a <= addr).checked_sub(1)?;
        let (start, name) = &self.text[i];
        Some(format!("{name}+{:#x}", addr - start))
    }
}

/// The mounted tracefs. A fresh machine has none mounted, and a test must not depend on an
/// earlier test (or tracer) having mounted it: this mounts it at the standard place when
/// needed, as tracer itself does, and fails loudly when it cannot.
pub fn tracefs_root() -> PathBuf {
    let mounted = || ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].into_iter().map(PathBuf::from).find(|p| p.join("instances").is_dir());
    if let Some(root) = mounted() {
        return root;
    }
    let status = Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]).status().expect("run mount -t tracefs");
    assert!(status.success(), "tracefs is not mounted and `mount -t tracefs nodev /sys/kernel/tracing` failed: {status}");
    mounted().expect("tracefs mounted at /sys/kernel/tracing, yet it has no instances/ directory")
}

/// How this kernel's `skb:kfree_skb` output gives the drop location. Decided from the event's
/// own `print fmt` and the instance options tracefs offers, never from the kernel version.
enum LocationSource {
    /// `location=%pS` (6.12, 6.18): the kernel prints `sym+0xoff/0xsize` itself.
    Symbolic,
    /// `location=%p` (6.1): the default output is a hashed pointer, useless for comparison.
    /// Instances with the `hash-ptr` option off print the real address, which /proc/kallsyms
    /// names. 6.1 also loses the `%s` reason text in such an instance, so every reason gets its
    /// own instance, filtered in the kernel on the reason's number.
    Addresses { symbols: KernelSymbols, by_reason: Vec<(String, TraceInstance)> },
    /// The location cannot be had on this kernel; the text says why.
    Unavailable(String),
}

/// A private tracefs instance with `skb:kfree_skb` enabled (non-overwriting buffer, so the first
/// records survive a later burst). Disabled and removed on drop.
struct TraceInstance {
    dir: PathBuf,
}

impl TraceInstance {
    /// `filter`: a tracefs event filter; `real_addresses`: turn `hash-ptr` off (the option must
    /// exist: the caller checked).
    fn new(root: &Path, filter: Option<&str>, real_addresses: bool) -> TraceInstance {
        let dir = root.join("instances").join(unique_name("kl"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let inst = TraceInstance { dir };
        let _ = fs::write(inst.dir.join("options/overwrite"), "0");
        if real_addresses {
            fs::write(inst.dir.join("options/hash-ptr"), "0").expect("turn hash-ptr off in a tracefs instance");
        }
        if let Some(f) = filter {
            fs::write(inst.dir.join("events/skb/kfree_skb/filter"), f).unwrap_or_else(|e| panic!("tracefs filter {f:?} on skb:kfree_skb: {e}"));
        }
        fs::write(inst.dir.join("events/skb/kfree_skb/enable"), "1").expect("enable skb:kfree_skb");
        inst
    }

    /// The `field=value` words and the `reason: NAME` tail of each record.
    fn records(&self) -> Vec<(Vec<(String, String)>, String)> {
        let text = fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains("kfree_skb:"))
            .map(|l| {
                let fields = l.split_whitespace().filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
                let reason = l.rsplit_once("reason:").map(|(_, r)| r.trim().to_string()).unwrap_or_default();
                (fields, reason)
            })
            .collect()
    }
}

impl Drop for TraceInstance {
    fn drop(&mut self) {
        let _ = fs::write(self.dir.join("events/skb/kfree_skb/enable"), "0");
        remove_instance(&self.dir);
    }
}

/// Removes a tracefs instance whose events are disabled (bounded: the kernel may still hold it
/// for a moment); warns when it cannot.
fn remove_instance(dir: &Path) {
    for _ in 0..50 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("warning: could not remove tracefs instance {}", dir.display());
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `{ 2, "NO_SOCKET" }` pairs of the `__print_symbolic(REC->reason, ...)` in a print fmt: the
/// kernel's own reason numbers, for tracefs filters.
pub fn print_symbolic_values(print_fmt: &str, field: &str) -> BTreeMap<String, u64> {
    let Some((_, rest)) = print_fmt.split_once(&format!("__print_symbolic(REC->{field},")) else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for pair in rest.split('{').skip(1) {
        let Some((body, _)) = pair.split_once('}') else { break };
        let Some((num, name)) = body.split_once(',') else { continue };
        let num = num.trim();
        let value = match num.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => num.parse().ok(),
        };
        if let Some(v) = value {
            out.insert(name.trim().trim_matches('"').to_string(), v);
        }
    }
    out
}

/// What the kernel itself reports for `skb:kfree_skb` while a test runs: reasons from one
/// instance with the default output, and drop locations from the best source this kernel offers
/// (see [`LocationSource`]). Create it before causing the drops, naming every reason whose
/// locations the test will ask for.
pub struct KernelDropLog {
    all: TraceInstance,
    locations: LocationSource,
}

impl KernelDropLog {
    pub fn new(reasons: &[&str]) -> KernelDropLog {
        let root = tracefs_root();
        let format = fs::read_to_string(root.join("events/skb/kfree_skb/format")).expect("skb:kfree_skb format");
        let print_fmt = format.lines().find_map(|l| l.strip_prefix("print fmt:")).unwrap_or_default().to_string();
        let locations = if print_fmt.contains("location=%pS") {
            LocationSource::Symbolic
        } else if !print_fmt.contains("location=%p") {
            LocationSource::Unavailable(format!("skb:kfree_skb prints no location=%p: {print_fmt:.80}"))
        } else if !root.join("options/hash-ptr").exists() {
            LocationSource::Unavailable("tracefs prints location as a hashed %p and has no hash-ptr option".into())
        } else {
            let symbols = KernelSymbols::load();
            if !symbols.has_addresses() {
                LocationSource::Unavailable("/proc/kallsyms hides addresses (kptr_restrict)".into())
            } else {
                let values = print_symbolic_values(&print_fmt, "reason");
                let by_reason = reasons
                    .iter()
                    .map(|r| {
                        let v = values.get(*r).unwrap_or_else(|| panic!("skb:kfree_skb print fmt has no reason {r}"));
                        let filter = format!("reason == {v} && protocol == {ETH_P_IP}");
                        (r.to_string(), TraceInstance::new(&root, Some(&filter), true))
                    })
                    .collect();
                LocationSource::Addresses { symbols, by_reason }
            }
        };
        KernelDropLog { all: TraceInstance::new(&root, None, false), locations }
    }

    /// All IPv4/IPv6 records so far, from the instance with the kernel's default output.
    pub fn drops(&self) -> Vec<KernelDrop> {
        self.all
            .records()
            .into_iter()
            .filter_map(|(fields, reason)| {
                Some(KernelDrop {
                    location: strip_size(field(&fields, "location")?).to_string(),
                    reason,
                    protocol: field(&fields, "protocol")?.parse().ok()?,
                })
            })
            .collect()
    }

    /// How many IPv4 drops with `reason` the kernel reported.
    pub fn ipv4_count(&self, reason: &str) -> usize {
        self.drops().iter().filter(|d| d.reason == reason && d.protocol == ETH_P_IP).count()
    }

    /// Distinct `sym+0xoff` locations the kernel reported for IPv4 drops with `reason`, or why
    /// this kernel cannot tell them.
    pub fn ipv4_locations(&self, reason: &str) -> Result<BTreeSet<String>, String> {
        match &self.locations {
            LocationSource::Symbolic => {
                Ok(self.drops().into_iter().filter(|d| d.reason == reason && d.protocol == ETH_P_IP).map(|d| d.location).collect())
            }
            LocationSource::Addresses { symbols, by_reason } => {
                let (_, inst) =
                    by_reason.iter().find(|(r, _)| r == reason).unwrap_or_else(|| panic!("KernelDropLog::new was not asked for reason {reason}"));
                Ok(inst
                    .records()
                    .iter()
                    .filter_map(|(fields, _)| {
                        let addr = u64::from_str_radix(field(fields, "location")?, 16).ok()?;
                        Some(symbols.name(addr).unwrap_or_else(|| format!("{addr:#x}")))
                    })
                    .collect())
            }
            LocationSource::Unavailable(why) => Err(why.clone()),
        }
    }
}

/// The EtherType of IPv4 as `skb:kfree_skb` prints `protocol`.
const ETH_P_IP: u32 = 0x0800;

/// Functions that free a packet an nftables rule dropped. Newer kernels free it inside
/// `nft_do_chain` (NF_DROP_REASON, with the reason set there); older ones (6.1) return NF_DROP
/// and `nf_hook_slow` frees it. Which one a kernel uses is read from its own report.
pub const NFT_DROP_FUNCTIONS: &[&str] = &[NFT_FREES_IN_CHAIN, NFT_FREES_AT_HOOK];
pub const NFT_FREES_IN_CHAIN: &str = "nft_do_chain";
pub const NFT_FREES_AT_HOOK: &str = "nf_hook_slow";

/// One record of a TCP tracepoint in tracefs.
#[derive(Clone, Debug)]
pub struct KernelTcpRecord {
    /// `tcp_retransmit_skb`, `tcp_retransmit_synack`, `tcp_send_reset`, `tcp_receive_reset`,
    /// `inet_sock_set_state`.
    pub event: String,
    /// Trace clock seconds.
    pub time: f64,
    /// Every `key=value` word.
    pub fields: BTreeMap<String, String>,
}

impl KernelTcpRecord {
    fn field(&self, k: &str) -> &str {
        self.fields.get(k).map(String::as_str).unwrap_or("")
    }

    /// (src, dst) as `IP:PORT`, in the event's own direction (for `tcp_send_reset`, the RST's:
    /// the kernel reverses the incoming segment's tuple when it has no socket). 6.10+ prints
    /// `tcp_send_reset` as `src=IP:PORT dest=IP:PORT`, older kernels like the other events.
    pub fn flow(&self) -> (String, String) {
        if self.fields.contains_key("src") && self.fields.contains_key("dest") {
            return (self.field("src").to_string(), self.field("dest").to_string());
        }
        (format!("{}:{}", self.field("saddr"), self.field("sport")), format!("{}:{}", self.field("daddr"), self.field("dport")))
    }

    /// The `state=` word without its `TCP_` prefix (`UNKNOWN` stays as it is).
    pub fn state(&self) -> String {
        self.field("state").trim_start_matches("TCP_").to_string()
    }
}

/// What the kernel itself reports through its TCP tracepoints while a test runs: a private
/// tracefs instance (non-overwriting) with tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack,
/// tcp:tcp_send_reset, tcp:tcp_receive_reset and sock:inet_sock_set_state enabled. Tracepoints
/// that this kernel lacks are left out (see [`KernelTcpLog::missing`]). Removed on drop.
pub struct KernelTcpLog {
    dir: PathBuf,
    enabled: Vec<String>,
    pub missing: Vec<String>,
}

const KERNEL_TCP_EVENTS: &[&str] =
    &["tcp/tcp_retransmit_skb", "tcp/tcp_retransmit_synack", "tcp/tcp_send_reset", "tcp/tcp_receive_reset", "sock/inet_sock_set_state"];

impl KernelTcpLog {
    pub fn new() -> KernelTcpLog {
        let root = tracefs_root();
        let dir = root.join("instances").join(unique_name("kt"));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let mut log = KernelTcpLog { dir, enabled: Vec::new(), missing: Vec::new() };
        let _ = fs::write(log.dir.join("options/overwrite"), "0");
        let _ = fs::write(log.dir.join("buffer_size_kb"), "4096");
        for ev in KERNEL_TCP_EVENTS {
            let enable = log.dir.join("events").join(ev).join("enable");
            if enable.exists() {
                fs::write(&enable, "1").unwrap_or_else(|e| panic!("enable {ev}: {e}"));
                log.enabled.push(ev.to_string());
            } else {
                log.missing.push(ev.to_string());
            }
        }
        log
    }

    /// Every record so far (of every namespace on the machine: filter by flow).
    pub fn records(&self) -> Vec<KernelTcpRecord> {
        let text = fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let i = words
                    .iter()
                    .position(|w| w.ends_with(':') && KERNEL_TCP_EVENTS.iter().any(|e| e.ends_with(&format!("/{}", w.trim_end_matches(':')))))?;
                let time = words.get(i.checked_sub(1)?)?.trim_end_matches(':').parse().ok()?;
                let fields = words[i + 1..].iter().filter_map(|w| w.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect();
                Some(KernelTcpRecord { event: words[i].trim_end_matches(':').to_string(), time, fields })
            })
            .collect()
    }

    /// Records of `event` for exactly this flow (in the record's own direction, see
    /// [`KernelTcpRecord::flow`]).
    pub fn of(&self, event: &str, src: &str, dst: &str) -> Vec<KernelTcpRecord> {
        self.records().into_iter().filter(|r| r.event == event && r.flow() == (src.to_string(), dst.to_string())).collect()
    }

    /// How many times the kernel retransmitted from `src` to `dst` (tcp_retransmit_skb and
    /// tcp_retransmit_synack together).
    pub fn retransmits(&self, src: &str, dst: &str) -> usize {
        self.of("tcp_retransmit_skb", src, dst).len() + self.of("tcp_retransmit_synack", src, dst).len()
    }
}

impl Default for KernelTcpLog {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KernelTcpLog {
    fn drop(&mut self) {
        for ev in &self.enabled {
            let _ = fs::write(self.dir.join("events").join(ev).join("enable"), "0");
        }
        remove_instance(&self.dir);
    }
}
