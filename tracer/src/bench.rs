//! The userspace half of an event's cost, per core: `cargo xtask bench` runs this ignored test
//! (`cargo test --release -p tracer --lib -- --ignored --exact bench::tests::decode_enrich_json
//! --nocapture`) and reads its `BENCH <stage> <events/s>` lines.
//!
//! It uses the running kernel's kallsyms and drop reasons and a registry of 1,000 pods, so a
//! figure costs what it costs in `tracer drops`; only the ring buffer and the write(2) per line
//! are left out (the storm in `cargo xtask bench` measures those end to end).

#[cfg(test)]
mod tests {
    use std::{hint::black_box, time::Instant};

    use tracer_common::{
        drop::DropEvent,
        event::{EventHeader, kind},
        flow::{FAMILY_IPV4, IPPROTO_UDP, RawFlow},
    };

    use crate::{
        events::Clock,
        kernel::{btf::KernelBtf, drop_reasons::DropReasons, kallsyms::Kallsyms},
        output::{Sink as _, json::JsonSink},
        pods::{
            PodsFrom,
            layer::{PodLayer, PodsConfig},
        },
        probes::drops::decode::Decoder,
    };

    const PODS: usize = 1000;

    fn pod_ip(i: usize) -> [u8; 4] {
        [10, 244, (i / 250) as u8, (i % 250 + 2) as u8]
    }

    fn pods_file() -> String {
        let items: Vec<serde_json::Value> = (0..PODS)
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(pod_ip(i)).to_string();
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("pod-{i}"), "namespace": format!("ns-{}", i % 20), "uid": format!("00000000-0000-0000-0000-{i:012}"), "labels": {"app": "a"}},
                    "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
                    "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
                })
            })
            .collect();
        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
    }

    /// A record as the kernel writes it: a drop between two of the pods, at a real kernel address.
    fn record(i: usize, boot_ns: u64, location: u64, reason: u32) -> Vec<u8> {
        let mut flow = RawFlow {
            family: FAMILY_IPV4,
            l4_proto: IPPROTO_UDP,
            sport: 40000 + (i % 1000) as u16,
            dport: 53,
            ethertype: 0x0800,
            ..Default::default()
        };
        flow.saddr[..4].copy_from_slice(&pod_ip(i % PODS));
        flow.daddr[..4].copy_from_slice(&pod_ip((i * 7 + 3) % PODS));
        let mut ifname = [0u8; 16];
        ifname[..8].copy_from_slice(b"veth12ab");
        let event = DropEvent {
            header: EventHeader { ts_ns: boot_ns + i as u64, kind: kind::DROP, cpu: 0, _pad: [0; 4] },
            location: location + 0x4bc,
            reason,
            len: 128,
            netns: 4026532316,
            ifindex: 7,
            ifname,
            flow,
            tunnel: Default::default(),
            ct: 0,
            _pad: 0,
        };
        // SAFETY: DropEvent is plain #[repr(C)] integers.
        unsafe { std::slice::from_raw_parts((&raw const event).cast::<u8>(), size_of::<DropEvent>()) }.to_vec()
    }

    /// A memory buffer for the lines that starts over when full, so memory stays bounded.
    struct Lines(Vec<u8>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + bytes.len() > self.0.capacity() {
                self.0.clear();
            }
            self.0.extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    #[ignore = "a benchmark: run by `cargo xtask bench`"]
    fn decode_enrich_json() {
        let n: usize = std::env::var("TRACER_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        let kallsyms = Kallsyms::load().expect("reading /proc/kallsyms");
        let location = std::fs::read_to_string("/proc/kallsyms")
            .expect("kallsyms")
            .lines()
            .find(|l| l.ends_with(" __udp4_lib_rcv"))
            .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
            .unwrap_or(0);
        let btf = KernelBtf::load(None).expect("kernel BTF");
        let reasons = DropReasons::from_btf(&btf).expect("drop reasons");
        let reason = reasons.as_ref().and_then(|r| r.value("NO_SOCKET")).unwrap_or(0);
        drop(btf);
        let decoder = Decoder { reasons, kallsyms: kallsyms.into(), clock: Clock::new(), ct: None };

        let dir = std::env::temp_dir().join(format!("tracer-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("pods.json");
        std::fs::write(&path, pods_file()).expect("pods file");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let config = PodsConfig { from: PodsFrom::File(path), ..Default::default() };
        let pods = runtime.block_on(PodLayer::start(&config)).expect("pod layer");
        std::fs::remove_dir_all(&dir).expect("temp dir");
        assert_eq!(pods.registry().live().len(), PODS);

        // Stamped after the pods were listed: the registry names a pod only within its span.
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: now is a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) };
        let boot_ns = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        // Distinct records, so lookups are not one cached address.
        let records: Vec<Vec<u8>> = (0..4096).map(|i| record(i, boot_ns, location, reason)).collect();

        // Every event must come out named: a benchmark that skipped the enrichment would lie.
        let mut probe = decoder.decode(&records[1]).expect("a whole record");
        pods.annotate(&mut probe);
        assert!(probe.src_pod.is_some() && probe.dst_pod.is_some(), "{probe:?}");

        let rate = |start: Instant| n as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        for i in 0..n {
            black_box(decoder.decode(black_box(&records[i % records.len()])));
        }
        println!("BENCH decode {:.0}", rate(start));

        let start = Instant::now();
        for i in 0..n {
            let mut event = decoder.decode(&records[i % records.len()]).expect("a whole record");
            black_box(pods.annotate(&mut event));
            black_box(event);
        }
        println!("BENCH decode+enrich {:.0}", rate(start));

        // One sink for the run, as `tracer drops` has: it keeps its buffer from event to event.
        let mut sink = JsonSink::new(Lines(Vec::with_capacity(1 << 20)));
        let start = Instant::now();
        for i in 0..n {
            let mut event = decoder.decode(&records[i % records.len()]).expect("a whole record");
            pods.annotate(&mut event);
            sink.event(&event).expect("writing to memory");
        }
        println!("BENCH decode+enrich+json {:.0}", rate(start));
    }
}
