//! The short fuzz pass of `cargo xtask test`: one unit test per target runs its committed seeds
//! (`fuzz/corpus/<target>/`), then mutates them for a few seconds (bit flips, interesting
//! integers, truncations, insertions, splices of two seeds, tokens of the text formats) in this
//! ordinary test binary: no second, instrumented build. It keeps every target alive in CI;
//! finding new bugs is `cargo xtask fuzz`'s work (libFuzzer, coverage-guided).
//!
//! `TRACER_FUZZ_SECS` sets the seconds per target (default 3); `TRACER_FUZZ_SEED` the generator's
//! seed (default: one per target, so a run is repeatable). An input that panics, or runs for
//! more than [`STALL`], is written to `target/fuzz-failures/` and fails the test with its path:
//! `cargo fuzz run TARGET FILE` (or this test) replays it.
//!
//! `write_seed_corpus` (ignored) rewrites the seeds: `cargo test -p tracer --lib
//! fuzzing::short_pass::write_seed_corpus -- --ignored`.

use std::{
    collections::HashMap,
    net::IpAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tracer_common::{
    drop::{CT_PRESENT, DropEvent},
    event::{EventHeader, kind},
    flow::{FAMILY_IPV4, FAMILY_IPV6, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, RawFlow, RawTunnel, tunnel},
    mtu::{MtuEvent, event, hook},
    nat::{NatEvent, NatTuple},
    tcp::{TcpEvent, direction},
};

use super::{TARGETS, Target, btf_writer};

/// Seconds of mutation per target when `TRACER_FUZZ_SECS` is not set.
const DEFAULT_SECS: f64 = 3.0;
/// One input running longer than this is a hang.
const STALL: Duration = Duration::from_secs(10);
/// Mutated inputs grow up to this (or twice the largest seed).
const MAX_LEN: usize = 4096;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(target)
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files.iter().map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).collect()
}

/// xorshift64*: small, fast, repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Integers at the edges, where length and offset arithmetic breaks.
const INTERESTING: &[u64] =
    &[0, 1, 2, 4, 8, 16, 24, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, u64::MAX];

/// Pieces of the text formats (JSON, tracefs format files), so text targets leave their first
/// error behind.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e999",
    b"18446744073709551616",
    b"\\u0000",
    b"\"items\":[",
    b"\"kind\":\"Service\"",
    b";",
    b"\t",
    b"\n",
    b"field:",
    b"offset:",
    b"size:",
    b"[16]",
    b"*",
];

/// One to four random edits of `input`; `seeds` are the splice partners.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>], max_len: usize) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
            }
            2 if len > 0 => {
                // An interesting integer of 2, 4 or 8 bytes, either endianness.
                let width = [2, 4, 8][rng.below(3)].min(len);
                let at = rng.below(len - width + 1);
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let bytes = if rng.below(2) == 0 { value.to_le_bytes() } else { value.to_be_bytes() };
                let bytes = if rng.below(2) == 0 { &bytes[..width] } else { &bytes[8 - width..] };
                input[at..at + width].copy_from_slice(bytes);
            }
            3 if len > 0 => input.truncate(rng.below(len)),
            4 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                input.drain(at..end);
            }
            5 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            6 if len > 0 => {
                // A copy of one piece elsewhere: repeated fields, attributes, list items.
                let from = rng.below(len);
                let piece = input[from..(from + 1 + rng.below(64)).min(len)].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, piece);
            }
            7 => {
                let other = &seeds[rng.below(seeds.len())];
                let (cut, from) = (rng.below(len + 1), rng.below(other.len() + 1));
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            8 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            _ => {
                let at = rng.below(len + 1);
                let end = (at + rng.below(8)).min(len);
                let bytes: Vec<u8> = (at..end).map(|_| rng.next() as u8).collect();
                input.splice(at..end, bytes);
            }
        }
    }
    input.truncate(max_len);
}

/// What the worker is running now, for the stall check.
struct Current {
    started: Instant,
    input: Vec<u8>,
    done: bool,
}

/// Writes a failing input where the report says, and returns that path.
fn keep_failure(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-failures");
    std::fs::create_dir_all(&dir).expect("target/fuzz-failures");
    // FNV-1a: a stable name for the same input.
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    let path = dir.join(format!("{target}-{hash:016x}"));
    std::fs::write(&path, input).expect("writing the failing input");
    path
}

/// Runs `target` over its seeds, then mutations for the configured time; panics naming the file
/// of the first input that panics or stalls.
fn short_pass(name: &'static str) {
    let target: Target = *TARGETS.iter().find(|t| t.name == name).expect("a target of TARGETS");
    let seeds = seeds(name);
    assert!(!seeds.is_empty(), "no seeds in {}", corpus_dir(name).display());
    let secs: f64 = std::env::var("TRACER_FUZZ_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_SECS);
    let seed = std::env::var("TRACER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| name.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)));
    let max_len = seeds.iter().map(Vec::len).max().unwrap_or(0).saturating_mul(2).max(MAX_LEN);
    let current = Arc::new(Mutex::new(Current { started: Instant::now(), input: Vec::new(), done: false }));

    let worker = {
        let current = Arc::clone(&current);
        // Named, so that what cannot be caught (a stack overflow aborts the process) names its
        // target.
        std::thread::Builder::new().name(format!("fuzz {name}")).spawn(move || -> Result<u64, (Vec<u8>, String)> {
            let run = |input: &[u8]| -> Result<(), (Vec<u8>, String)> {
                {
                    let mut c = current.lock().expect("not poisoned");
                    c.started = Instant::now();
                    c.input.clear();
                    c.input.extend_from_slice(input);
                }
                catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|panic| {
                    let message = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                    (input.to_vec(), message.unwrap_or_else(|| "a panic".into()))
                })
            };
            for s in &seeds {
                run(s)?;
            }
            let mut rng = Rng(seed | 1);
            let deadline = Instant::now() + Duration::from_secs_f64(secs);
            let mut execs = seeds.len() as u64;
            let mut input = Vec::new();
            while Instant::now() < deadline {
                input.clear();
                input.extend_from_slice(&seeds[rng.below(seeds.len())]);
                mutate(&mut rng, &mut input, &seeds, max_len);
                run(&input)?;
                execs += 1;
            }
            current.lock().expect("not poisoned").done = true;
            Ok(execs)
        })
    }
    .expect("spawning the worker");

    // Watch for a stalled input; the worker cannot be stopped, so a stall fails the test and
    // leaves it behind.
    loop {
        std::thread::sleep(Duration::from_millis(100));
        if worker.is_finished() {
            break;
        }
        let c = current.lock().expect("not poisoned");
        if !c.done && c.started.elapsed() > STALL {
            let path = keep_failure(name, &c.input);
            panic!("fuzz {name}: one input ran for more than {}s (seed {seed}): {}", STALL.as_secs(), path.display());
        }
    }
    match worker.join().expect("the worker catches panics") {
        Ok(execs) => eprintln!("fuzz {name}: {execs} executions in {secs}s (seed {seed})"),
        Err((input, message)) => {
            let path = keep_failure(name, &input);
            panic!("fuzz {name}: panicked ({message}) on {} ({} bytes, seed {seed})", path.display(), input.len());
        }
    }
}

macro_rules! short_passes {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                short_pass(stringify!($name));
            }
        )*

        #[test]
        fn every_target_has_a_short_pass() {
            let tested = [$(stringify!($name)),*];
            for target in TARGETS {
                assert!(tested.contains(&target.name), "{} has no short-pass test here", target.name);
            }
        }
    };
}

short_passes!(drop_record, tcp_record, nat_record, mtu_record, tracefs_format, btf, pods_file, ctnetlink, nftables, xtables, cri, job_log, recording);

// The seeds, as `write_seed_corpus` makes them and the test below checks they reach past the
// parsers.

/// Seeds of one target: (file name, bytes).
type Seeds = Vec<(&'static str, Vec<u8>)>;

fn bytes_of<T>(value: &T) -> Vec<u8> {
    // SAFETY: the records are #[repr(C)] plain integers (padding included, zeroed by Default),
    // viewed as bytes as the ring buffer carries them.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

fn flow(v6: bool, proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> RawFlow {
    let mut f = RawFlow { l4_proto: proto, sport, dport, ..RawFlow::default() };
    if v6 {
        f.family = FAMILY_IPV6;
        f.ethertype = 0x86dd;
        f.saddr = std::net::Ipv6Addr::from(u128::from(u32::from_be_bytes(src)) | 0xfd00 << 112).octets();
        f.daddr = std::net::Ipv6Addr::from(u128::from(u32::from_be_bytes(dst)) | 0xfd00 << 112).octets();
    } else {
        f.family = FAMILY_IPV4;
        f.ethertype = 0x0800;
        f.saddr[..4].copy_from_slice(&src);
        f.daddr[..4].copy_from_slice(&dst);
    }
    f
}

fn header(kind: u16) -> EventHeader {
    EventHeader { ts_ns: 1_234_567_890_123, kind, cpu: 1, _pad: [0; 4] }
}

fn ifname(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

fn drop_seeds() -> Seeds {
    let udp = DropEvent {
        header: header(kind::DROP),
        location: 0xffff_ffff_81b0_04bc,
        reason: 3,
        len: 128,
        netns: 4026532316,
        ifindex: 7,
        ifname: ifname("veth12ab"),
        flow: flow(false, IPPROTO_UDP, [10, 244, 1, 7], 40000, [10, 244, 2, 9], 53),
        ..DropEvent::default()
    };
    let netfilter = DropEvent {
        reason: 8,
        location: 0xffff_ffff_81a0_009c,
        ct: CT_PRESENT | 8,
        flow: flow(true, IPPROTO_TCP, [0, 0, 0, 1], 44000, [0, 0, 0, 2], 443),
        ..udp
    };
    let mut arp = DropEvent { reason: 2, location: 0, ifindex: 0, ifname: [0; 16], netns: 0, flow: RawFlow::default(), ..udp };
    arp.flow.ethertype = 0x0806;
    let icmp = DropEvent {
        reason: 9999,
        flow: RawFlow { icmp_type: 3, icmp_code: 4, ..flow(false, IPPROTO_ICMP, [10, 0, 0, 1], 0, [10, 0, 0, 2], 0) },
        ..udp
    };
    let mut vxlan = DropEvent { reason: 10, flow: flow(false, IPPROTO_TCP, [10, 244, 1, 7], 40000, [10, 244, 2, 9], 80), ..udp };
    vxlan.tunnel = RawTunnel {
        kind: tunnel::VXLAN,
        family: FAMILY_IPV4,
        l4_proto: IPPROTO_UDP,
        sport: 59694,
        dport: 8472,
        vni: 1,
        has_vni: 1,
        ..RawTunnel::default()
    };
    vxlan.tunnel.saddr[..4].copy_from_slice(&[10, 78, 0, 1]);
    vxlan.tunnel.daddr[..4].copy_from_slice(&[10, 78, 0, 2]);
    vec![
        ("udp-no-socket", bytes_of(&udp)),
        ("ipv6-netfilter-ct", bytes_of(&netfilter)),
        ("arp-no-device", bytes_of(&arp)),
        ("icmp-unknown-reason", bytes_of(&icmp)),
        ("tcp-in-vxlan", bytes_of(&vxlan)),
    ]
}

fn tcp_seeds() -> Seeds {
    let retransmit = TcpEvent {
        header: header(kind::RETRANSMIT),
        flow: flow(false, IPPROTO_TCP, [10, 0, 0, 1], 40000, [10, 0, 1, 1], 80),
        netns: 4026531840,
        count: 3,
        state: 1,
        ..TcpEvent::default()
    };
    let reset = TcpEvent { header: header(kind::RESET), direction: direction::RECEIVED, state: 2, ..retransmit };
    let connect_fail = TcpEvent {
        header: header(kind::CONNECT_FAIL),
        duration_ns: 3_000_000_000,
        state: 2,
        flow: flow(true, IPPROTO_TCP, [0, 0, 0, 1], 40000, [0, 0, 0, 2], 443),
        ..retransmit
    };
    vec![("retransmit", bytes_of(&retransmit)), ("reset-received", bytes_of(&reset)), ("connect-fail-ipv6", bytes_of(&connect_fail))]
}

fn nat_tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> NatTuple {
    let mut t = NatTuple { sport_be: sport.to_be(), dport_be: dport.to_be(), l3num: 2, protonum: proto, ..NatTuple::default() };
    t.src[..4].copy_from_slice(&src);
    t.dst[..4].copy_from_slice(&dst);
    t
}

fn nat_seeds() -> Seeds {
    let dnat = NatEvent {
        header: header(kind::NAT),
        flow: flow(false, IPPROTO_TCP, [10, 244, 1, 7], 40000, [10, 96, 0, 10], 80),
        orig: nat_tuple([10, 244, 1, 7], 40000, [10, 96, 0, 10], 80, 6),
        reply: nat_tuple([10, 244, 2, 9], 8080, [10, 244, 1, 7], 40000, 6),
        status: 32 | 8,
        netns: 4026532316,
        ifindex: 3,
        ifname: ifname("cni0"),
        ct: 0xffff_8880_1234_5600,
        ..NatEvent::default()
    };
    let assured = NatEvent { status: 32 | 8 | 2 | 4, ..dnat };
    let snat = NatEvent {
        flow: flow(false, IPPROTO_UDP, [10, 244, 1, 7], 5353, [192, 0, 2, 1], 53),
        orig: nat_tuple([10, 244, 1, 7], 5353, [192, 0, 2, 1], 53, 17),
        reply: nat_tuple([192, 0, 2, 1], 53, [198, 51, 100, 4], 61000, 17),
        status: 16 | 8,
        ..dnat
    };
    vec![("dnat-new", bytes_of(&dnat)), ("dnat-assured", bytes_of(&assured)), ("snat-udp", bytes_of(&snat))]
}

fn mtu_seeds() -> Seeds {
    let mut dropped = MtuEvent {
        header: header(kind::MTU),
        flow: flow(false, IPPROTO_TCP, [10, 0, 0, 1], 40000, [10, 0, 1, 1], 5201),
        event: event::FRAG_NEEDED_DROPPED,
        hook: hook::KFREE_SKB,
        len: 1500,
        mtu: 1400,
        dev_mtu: 1500,
        ifindex: 7,
        reason: 8,
        netns: 4026531840,
        ..MtuEvent::default()
    };
    dropped.icmp_src[..4].copy_from_slice(&[10, 0, 0, 254]);
    dropped.icmp_dst[..4].copy_from_slice(&[10, 0, 0, 1]);
    let received = MtuEvent { event: event::FRAG_NEEDED_RECEIVED, hook: hook::TC_INGRESS, ifindex: 2, dev_mtu: 1450, ..dropped };
    let oversize = MtuEvent { event: event::OVERSIZE, hook: hook::TC_EGRESS, ifindex: 7, mtu: 0, ..dropped };
    let mut too_big = MtuEvent {
        event: event::TOO_BIG_DROP,
        hook: hook::ICMP_SEND,
        reason: 60,
        flow: flow(true, IPPROTO_UDP, [0, 0, 0, 1], 4000, [0, 0, 0, 2], 4001),
        ..dropped
    };
    too_big.icmp_src = too_big.flow.daddr;
    too_big.icmp_dst = too_big.flow.saddr;
    vec![
        ("frag-needed-dropped", bytes_of(&dropped)),
        ("tc-ingress-received", bytes_of(&received)),
        ("tc-egress-oversize", bytes_of(&oversize)),
        ("ipv6-too-big", bytes_of(&too_big)),
    ]
}

/// skb:kfree_skb before 6.11 (no `rx_sk`: `protocol` and `reason` at 24 and 28).
const KFREE_SKB_6_1: &str = "name: kfree_skb
ID: 1416
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;

print fmt: \"skbaddr=%p protocol=%u location=%pS reason: %s\", REC->skbaddr, REC->protocol, REC->location, __print_symbolic(REC->reason, { 2, \"NOT_SPECIFIED\" })
";

fn pods_seeds() -> Seeds {
    // As tests/src/fixtures.rs writes them for the lab, plus what real clusters add: dual stack,
    // a finished pod, host network, Services of each shape.
    let pod = |i: usize, name: &str, ip: &str| {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "lab", "uid": format!("00000000-0000-0000-0000-{i:012}"), "labels": {"app": name},
                         "creationTimestamp": "2026-11-22T02:30:01Z"},
            "spec": {"nodeName": "node-lab", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        })
    };
    let mut dual = pod(2, "web-0", "10.244.1.7");
    dual["status"]["podIPs"] = serde_json::json!([{"ip": "10.244.1.7"}, {"ip": "fd00:10:244:1::7"}]);
    let mut done = pod(3, "job-x", "10.244.1.8");
    done["status"]["phase"] = "Succeeded".into();
    let mut host = pod(4, "kube-proxy", "192.168.1.10");
    host["spec"]["hostNetwork"] = true.into();
    let services = [
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "lab"},
            "spec": {"clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5", "fd00:96::5"], "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless", "namespace": "lab"}, "spec": {"clusterIP": "None"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": "lab"},
            "spec": {"clusterIP": "10.96.0.6", "externalIPs": ["192.0.2.10"], "ports": [{"port": 443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}}),
    ];
    let list = |items: Vec<serde_json::Value>| {
        serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}).to_string()
    };
    let lab = list(vec![pod(0, "client", "10.0.0.1"), pod(1, "server", "10.0.0.2")]);
    let mut cluster = vec![pod(0, "client", "10.0.0.1"), dual.clone(), done, host];
    cluster.extend(services);
    cluster.push(serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "lab"}, "spec": {}}));
    vec![
        ("lab-pods.json", lab.into_bytes()),
        ("pods-and-services.json", list(cluster).into_bytes()),
        ("single-pod.json", dual.to_string().into_bytes()),
    ]
}

fn ctnetlink_seeds() -> Seeds {
    use crate::probes::nat::ctnetlink::wire::*;
    let v4 = [
        v4_tuple(1, [10, 0, 0, 5], [10, 96, 0, 10], 6, 40000, 80),
        v4_tuple(2, [10, 244, 1, 7], [10, 0, 0, 5], 6, 8080, 40000),
        attr(3, &0x19e_u32.to_be_bytes()),
        tcp_state(7),
    ]
    .concat();
    let mut datagram = message(DELETE, &v4);
    datagram.extend(message(NEW, &v4));
    let (a, b): (IpAddr, IpAddr) = ("fd00::5".parse().expect("address"), "fd00:96::a".parse().expect("address"));
    let v6 = [tuple(1, a, b, 17, 5353, 53), tuple(2, b, a, 17, 53, 5353)].concat();
    let icmp = [v4_tuple(1, [10, 0, 0, 5], [10, 0, 0, 6], 1, 7, 0), v4_tuple(2, [10, 0, 0, 6], [10, 0, 0, 5], 1, 7, 0)].concat();
    let mut three = message(DELETE, &v6);
    three.extend(message(DELETE, &icmp));
    three.extend(message(DELETE, &v4));
    vec![("destroy-and-new-tcp", datagram), ("three-destroys", three)]
}

fn cri_seeds() -> Seeds {
    use k8s_cri::v1::*;
    use prost::Message as _;
    let meta = |name: &str, uid: &str| Some(PodSandboxMetadata { name: name.into(), uid: uid.into(), namespace: "lab".into(), attempt: 0 });
    // containerd 1.6's verbose info, trimmed to what tracer reads and a little around it.
    let info = serde_json::json!({
        "pid": 0, "processStatus": "running", "netNamespaceClosed": false,
        "runtimeType": "io.containerd.runc.v2",
        "runtimeSpec": {"linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                                                   {"type": "network", "path": "/proc/self/ns/net"}]}}
    });
    let status = PodSandboxStatusResponse {
        status: Some(PodSandboxStatus {
            id: "5e1c0ffee".into(),
            metadata: meta("web-0", "1f6c0a2e-0000-4000-8000-000000000001"),
            state: PodSandboxState::SandboxReady as i32,
            created_at: 1_795_314_601_000_000_000,
            network: Some(PodSandboxNetworkStatus { ip: "10.244.1.7".into(), additional_ips: vec![PodIp { ip: "fd00:10:244:1::7".into() }] }),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace { options: Some(NamespaceOption { network: NamespaceMode::Pod as i32, pid: 1, ..Default::default() }) }),
            }),
            labels: HashMap::from([("app".into(), "web".into()), ("io.kubernetes.pod.name".into(), "web-0".into())]),
            annotations: HashMap::from([("kubernetes.io/config.source".into(), "api".into())]),
            runtime_handler: String::new(),
        }),
        info: HashMap::from([("info".into(), info.to_string())]),
        containers_statuses: Vec::new(),
        timestamp: 0,
    };
    let mut host = status.clone();
    if let Some(s) = host.status.as_mut() {
        s.metadata = meta("kube-proxy-x", "");
        s.linux = Some(LinuxPodSandboxStatus {
            namespaces: Some(Namespace { options: Some(NamespaceOption { network: NamespaceMode::Node as i32, ..Default::default() }) }),
        });
    }
    host.info = HashMap::from([("info".into(), serde_json::json!({"pid": std::process::id()}).to_string())]);
    let sandbox = |id: &str, name: &str| PodSandbox { id: id.into(), metadata: meta(name, "u"), state: 0, created_at: 1, ..Default::default() };
    let list = ListPodSandboxResponse { items: vec![sandbox("5e1c0ffee", "web-0"), sandbox("b0a710ad", "kube-proxy-x")] };
    vec![("status-pod-network", status.encode_to_vec()), ("status-host-network", host.encode_to_vec()), ("list-two-sandboxes", list.encode_to_vec())]
}

fn job_log_seeds() -> Seeds {
    let drop = serde_json::json!({
        "ts": "2026-11-22T02:30:01.123456789Z", "kind": "drop", "proto": "udp", "src": "10.244.1.7:40000", "dst": "10.244.2.9:53",
        "src_pod": "lab/client", "dst_pod": "lab/server", "netns": 4026532316_u32, "netns_pod": "lab/client", "ifname": "veth12ab", "ifindex": 7,
        "reason": "NO_SOCKET", "reason_code": 3, "location": "__udp4_lib_rcv+0x4bc", "len": 128
    });
    let nat = serde_json::json!({
        "ts": "2026-11-22T02:30:02.000000001Z", "kind": "nat", "proto": "tcp", "src": "10.244.1.7:40000", "dst": "10.96.0.10:80",
        "nat": "dnat", "backend": "10.244.2.9:8080", "service": "lab/web", "state": "reply", "reply_seen": true, "assured": false
    });
    let report = serde_json::json!({
        "duration_s": 10.0, "events": 42, "lost": 0,
        "findings": [{"severity": "error", "code": "firewall_drop", "summary": "an iptables rule drops lab/client's traffic to lab/server",
                      "pods": ["lab/client", "lab/server"], "flows": ["10.244.1.7 -> 10.244.2.9:53/udp"],
                      "evidence": {"reason": "NETFILTER_DROP", "count": 3, "rules": ["-A INPUT -p udp --dport 53 -j DROP"], "empty": {}}}]
    });
    let run = format!("{drop}\n{nat}\ntracer: drops: 1 seen, 1 delivered, 0 lost\n");
    vec![("drop-and-nat-events", run.into_bytes()), ("diagnose-report", format!("{report}\n").into_bytes())]
}

/// Two nodes' recordings in one file: events (a drop at a rule, a NAT no_reply), the
/// `recording` records and facts of each kind; and one cut short.
fn recording_seeds() -> Seeds {
    let drop = serde_json::json!({
        "ts": "2026-11-22T02:30:01.123456789Z", "kind": "drop", "proto": "udp", "src": "10.244.1.7:40000", "dst": "10.244.2.9:53",
        "src_pod": "lab/client", "dst_pod": "lab/server", "netns": 4026532316_u32, "netns_pod": "lab/server", "ifname": "veth12ab", "ifindex": 7,
        "node": "node-b", "reason": "NETFILTER_DROP", "reason_code": 8, "location": "nf_hook_slow+0x9c", "len": 128, "packet_ct": "confirmed",
        "tunnel": {"type": "vxlan", "vni": 1, "src": "192.168.0.1:40000", "dst": "192.168.0.2:8472"}
    });
    let nat = serde_json::json!({
        "ts": "2026-11-22T02:30:02.000000001Z", "kind": "nat", "proto": "tcp", "src": "10.244.1.7:40001", "dst": "10.96.0.10:80",
        "node": "node-a", "netns": 4026531840_u32, "nat": "dnat", "orig_src": "10.244.1.7:40001", "orig_dst": "10.96.0.10:80",
        "reply_src": "10.244.2.9:8080", "reply_dst": "10.244.1.7:40001", "backend": "10.244.2.9:8080", "service": "lab/web",
        "state": "no_reply", "reply_seen": false, "assured": false, "conn": 7, "tcp_flags": "SYN"
    });
    let retrans = serde_json::json!({
        "ts": "2026-11-22T02:30:03Z", "kind": "retransmit", "proto": "tcp", "src": "10.244.1.7:40001", "dst": "10.96.0.10:80",
        "node": "node-a", "netns": 4026532300_u32, "state": "SYN_SENT", "count": 1
    });
    let run = |node: &str| {
        serde_json::json!({"kind": "recording", "version": 1, "node": node, "start": "2026-11-22T02:30:00Z", "end": "2026-11-22T02:30:10Z",
            "start_boot_ns": 1000, "duration_s": 10.0, "events": 2, "lost": 0, "beyond_limit": 0, "reply_timeout_ms": 3000,
            "probes": {"drops": "tp_btf/kfree_skb"}, "missing_probes": [["mtu", "no tc"]], "mtu_mismatches": [[["eth0", "vxlan0"], "vxlan0 is wider"]]})
    };
    let facts = [
        serde_json::json!({"kind": "fact", "node": "node-b", "fact": "rules", "netns": 4026532316_u32, "rules": [{"family": "ipv4", "table": "filter",
            "chain": "INPUT", "text": "filter/INPUT: -A INPUT -p udp --dport 53 -j DROP (1 packets)", "packets": 1, "proto": 17, "dport": [53, 53]}], "unreadable": ["nftables: EPERM"]}),
        serde_json::json!({"kind": "fact", "node": "node-b", "fact": "sysctl", "netns": 4026532316_u32, "key": "net.ipv4.ip_forward", "value": "1"}),
        serde_json::json!({"kind": "fact", "node": "node-b", "fact": "netns_name", "netns": 4026532316_u32, "value": "server"}),
        serde_json::json!({"kind": "fact", "node": "node-a", "fact": "service", "ip": "10.96.0.10", "port": 80, "proto": 6, "value": "lab/web"}),
        serde_json::json!({"kind": "fact", "node": "node-a", "fact": "services_known", "value": true}),
        serde_json::json!({"kind": "fact", "node": "node-b", "fact": "tunnels", "netns": 4026532316_u32, "value": {"devices": [{"name": "vxlan0",
            "ifindex": 5, "kind": "vxlan", "vni": 1, "local": null, "remote": null, "dstport": 8472, "link": 2, "link_name": "eth0", "learning": true,
            "external": false, "mtu": 1450}], "fdb": [], "neighbours": [], "addresses": [{"ifindex": 2, "ip": "192.168.0.2", "prefix": 24}],
            "names": [[2, "eth0"], [5, "vxlan0"]], "mtus": [[2, 1500], [5, 1450]]}}),
        serde_json::json!({"kind": "fact", "node": "node-b", "fact": "route", "netns": 4026532316_u32, "dst": "192.168.0.1",
            "value": {"oif": 2, "gateway": null, "prefsrc": "192.168.0.2"}}),
    ];
    let mut two = format!("{drop}\n{nat}\n{retrans}\n{}\n{}\n", run("node-a"), run("node-b"));
    for fact in facts {
        two.push_str(&format!("{fact}\n"));
    }
    let cut = format!("{nat}\n{}", &drop.to_string()[..60]);
    vec![("two-nodes", two.into_bytes()), ("cut-short", cut.into_bytes())]
}

/// The smallest module BTF of this machine, when it has any (6.18 here has none: everything is
/// built in): the kernel's encoder's output, split BTF.
fn smallest_module_btf() -> Option<Vec<u8>> {
    let dir = std::fs::read_dir(crate::kernel::btf::MODULE_BTF_DIR).ok()?;
    let smallest = dir.flatten().filter(|e| e.file_name() != "vmlinux").filter_map(|e| Some((e.metadata().ok()?.len(), e.path()))).min()?;
    std::fs::read(smallest.1).ok()
}

/// The `.BTF` section of tracer's own kernel object: LLVM's encoder's output (tracer-common's
/// structs, the maps, the programs), 25 KB.
fn ebpf_object_btf() -> Option<Vec<u8>> {
    let elf = crate::loader::OBJECT;
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?) as usize);
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?) as usize);
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?) as usize);
    // ELF64: section headers at e_shoff, e_shnum of e_shentsize bytes, names in section e_shstrndx.
    let (shoff, shentsize, shnum, shstrndx) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let section = |i: usize| Some((u32_at(shoff + i * shentsize)?, u64_at(shoff + i * shentsize + 0x18)?, u64_at(shoff + i * shentsize + 0x20)?));
    let (_, names, _) = section(shstrndx)?;
    (0..shnum)
        .filter_map(section)
        .find(|(name, _, _)| elf.get(names + name..names + name + 5) == Some(b".BTF\0"))
        .map(|(_, off, size)| elf[off..off + size].to_vec())
}

/// Every generated seed, by target.
fn generated_seeds() -> Vec<(&'static str, Seeds)> {
    let base = btf_writer::vmlinux(false);
    vec![
        ("drop_record", drop_seeds()),
        ("tcp_record", tcp_seeds()),
        ("nat_record", nat_seeds()),
        ("mtu_record", mtu_seeds()),
        ("tracefs_format", vec![("kfree_skb-6.1", KFREE_SKB_6_1.as_bytes().to_vec())]),
        (
            "btf",
            vec![
                ("vmlinux-min.btf", btf_writer::vmlinux(true).finish()),
                ("vmlinux-min-no-conntrack.btf", base.finish()),
                ("nf_conntrack-split.btf", btf_writer::nf_conntrack_split(&base)),
            ],
        ),
        ("pods_file", pods_seeds()),
        ("ctnetlink", ctnetlink_seeds()),
        // The lab's rules as this machine's kernel (6.18) dumped them (kernel/firewall/lab.rs).
        ("nftables", vec![("lab-dump-6.18", include_bytes!("../kernel/firewall/testdata/nft-dump.bin").to_vec())]),
        (
            "xtables",
            vec![
                ("lab-filter-6.18", include_bytes!("../kernel/firewall/testdata/ipt-filter.bin").to_vec()),
                ("lab-filter6-6.18", include_bytes!("../kernel/firewall/testdata/ip6t-filter.bin").to_vec()),
            ],
        ),
        ("cri", cri_seeds()),
        ("job_log", job_log_seeds()),
        ("recording", recording_seeds()),
    ]
}

#[test]
#[ignore = "rewrites fuzz/corpus/: run by hand when the formats change"]
fn write_seed_corpus() {
    for (target, seeds) in generated_seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).expect("seed");
        }
    }
    // Real files of this machine, when it has them.
    let tracefs = Path::new(crate::kernel::tracefs::MOUNT_POINT).join("events/skb/kfree_skb/format");
    if let Ok(text) = std::fs::read(&tracefs) {
        std::fs::write(corpus_dir("tracefs_format").join(format!("kfree_skb-{}", crate::kernel::release())), text).expect("seed");
    }
    if let Some(module) = smallest_module_btf() {
        std::fs::write(corpus_dir("btf").join("real-module-split.btf"), module).expect("seed");
    }
    std::fs::write(corpus_dir("btf").join("tracer-ebpf.btf"), ebpf_object_btf().expect("the object has .BTF")).expect("seed");
}

/// The seeds must get past the parsers (else the mutations only exercise the first checks): the
/// records decode, the small vmlinux plans every family, the files give pods and Services.
#[test]
fn seeds_reach_past_the_parsers() {
    use crate::{
        kernel::btf::KernelBtf,
        probes::{drops, nat, tcp},
    };
    for (target, seeds) in generated_seeds() {
        for (name, bytes) in seeds {
            let why = format!("{target}/{name}");
            match target {
                "drop_record" => assert!(super::DROP.decode(&bytes).is_some(), "{why}"),
                "mtu_record" => assert!(super::MTU.decode(&bytes).is_some(), "{why}"),
                "nat_record" => assert!(super::NAT.decode(&bytes).is_some(), "{why}"),
                "tcp_record" => {
                    let header = crate::runner::header(&bytes).expect("a header");
                    assert!(super::TCP.decode(header.kind, &bytes).is_some(), "{why}");
                }
                "pods_file" => assert!(!crate::pods::file::parse(&bytes).expect("parses").pods.is_empty(), "{why}"),
                "recording" => {
                    let mut read = crate::diagnose::recordings::Recordings::default();
                    read.read("seed", bytes.as_slice()).expect("reads");
                    assert!(read.nodes.values().all(|n| !n.events.is_empty()), "{why}: every node's events parse");
                    if name == "two-nodes" {
                        assert_eq!(read.skipped, 0, "{why}");
                        assert!(read.nodes.values().all(|n| n.run.is_some()), "{why}");
                    }
                }
                "ctnetlink" => assert!(!crate::probes::nat::ctnetlink::parse(&bytes).is_empty(), "{why}"),
                "nftables" => assert!(!crate::kernel::firewall::nftables::parse_dump(&bytes).expect("parses").is_empty(), "{why}"),
                "xtables" => {
                    use crate::kernel::firewall::xtables::{IpVersion, parse_capture};
                    let version = if name.contains("filter6") { IpVersion::V6 } else { IpVersion::V4 };
                    assert!(!parse_capture(version, &bytes).expect("parses").is_empty(), "{why}");
                }
                "tracefs_format" => {
                    assert!(crate::kernel::tracefs::Format::parse(&String::from_utf8_lossy(&bytes)).field("reason").is_some(), "{why}")
                }
                _ => {}
            }
        }
    }
    let full = KernelBtf::from_bytes(&btf_writer::vmlinux(true).finish()).expect("the small vmlinux parses");
    full.kernel_offsets().expect("every offset");
    let plan = drops::plan(&full, drops::HookChoice::TpBtf).expect("the drops plan");
    assert_eq!(plan.reasons.as_ref().and_then(|r| r.value("NETFILTER_DROP")), Some(8));
    assert_eq!((plan.config.skb_arg, plan.config.location_arg, plan.config.reason_arg), (0, 1, 2));
    drops::conntrack_layout(&full).expect("the conntrack layout");
    let tcp = tcp::plan(&full).expect("the tcp plan");
    assert!(tcp.missing.is_empty(), "{:?}", tcp.missing);
    nat::layout(&full).expect("the nat layout");
    let base = btf_writer::vmlinux(false);
    let mut split = KernelBtf::from_bytes(&base.finish()).expect("the base parses");
    assert!(nat::layout(&split).is_err(), "no conntrack in the base");
    split.add_module("nf_conntrack", &btf_writer::nf_conntrack_split(&base)).expect("the split BTF parses");
    nat::layout(&split).expect("the nat layout through the module");
    let status = k8s_cri_status(&cri_seeds()[0].1);
    let pod = crate::pods::cri::pod_from_status("id", status).expect("a pod");
    assert_eq!((pod.full_name(), pod.ips.len(), pod.host_network), ("lab/web-0".to_string(), 2, false));
    assert_eq!(pod.labels.keys().collect::<Vec<_>>(), ["app"], "the kubelet's labels are left out");
    let host = crate::pods::cri::pod_from_status("id", k8s_cri_status(&cri_seeds()[1].1)).expect("a pod");
    assert_eq!((host.uid.as_str(), host.host_network), ("id", true), "no UID: the sandbox id stands in");
}

fn k8s_cri_status(bytes: &[u8]) -> k8s_cri::v1::PodSandboxStatusResponse {
    use prost::Message as _;
    k8s_cri::v1::PodSandboxStatusResponse::decode(bytes).expect("decodes")
}

#[test]
fn the_committed_seeds_are_the_generated_ones_plus_real_files() {
    // A format change without `write_seed_corpus` would leave seeds that no longer reach past
    // the parsers; every generated seed must be committed as generated (CRI's maps aside: their
    // order is not fixed).
    for (target, seeds) in generated_seeds() {
        for (name, bytes) in seeds {
            let path = corpus_dir(target).join(name);
            let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run write_seed_corpus)", path.display()));
            if target != "cri" {
                assert!(committed == bytes, "{} differs from what write_seed_corpus makes", path.display());
            }
        }
    }
}

#[test]
fn every_target_is_a_cargo_fuzz_binary_with_seeds() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut files: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut expected: Vec<String> = TARGETS.iter().map(|t| format!("{}.rs", t.name)).collect();
    expected.sort();
    assert_eq!(files, expected, "fuzz/fuzz_targets/ holds one file per target of TARGETS");
    for target in TARGETS {
        let source = std::fs::read_to_string(fuzz.join("fuzz_targets").join(format!("{}.rs", target.name))).expect("target source");
        assert!(source.contains(&format!("tracer::fuzzing::{}(data)", target.name)), "{}.rs calls its entry point", target.name);
        assert!(
            manifest.contains(&format!("name = \"{0}\"\npath = \"fuzz_targets/{0}.rs\"", target.name)),
            "fuzz/Cargo.toml has [[bin]] {}",
            target.name
        );
        assert!(corpus_dir(target.name).is_dir(), "fuzz/corpus/{} holds its seeds", target.name);
    }
}
