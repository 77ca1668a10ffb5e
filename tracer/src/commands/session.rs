//! Every probe family in one kernel object: what `watch` and `diagnose` run. Each family is
//! planned on its own; one this kernel cannot run is left out with a warning (Retis-style:
//! nobody asked for it by name), and only a run where none can work is an error.

use std::cell::RefCell;

use anyhow::Context as _;
use aya::Ebpf;
use tracer_common::{drop::DropConfig, event::{EventHeader, kind}, mtu::MtuConfig, nat::NatConfig, tcp::TcpConfig};

use super::{
    mtu::{choose_devices, label, print_facts, shorten},
    nat::{Ends, NoReply},
};
use crate::{
    cli::{HookChoice, SentHook, config::{ReasonSelection, WatchConfig}},
    events::{Clock, Detail, Event},
    kernel::kallsyms::Kallsyms,
    loader::{self, Globals, KernelCounts},
    pods::{layer::{PodLayer, start_services}, services::ServiceNames},
    probes::{
        CannotRun,
        drops::{self, conntrack::Classifier},
        mtu::{self, decode::TcDevice, devices::DeviceFacts, tc::TcAttachments},
        nat,
        tcp,
    },
};

/// One family's fate on this kernel: how it is hooked, or why it is not running.
#[derive(Debug, Clone)]
pub struct ProbeStatus {
    pub family: &'static str,
    pub result: Result<String, String>,
}

/// Records how `family` will run, or why it cannot (it is then left out), and returns its plan.
fn planned<T>(probes: &mut Vec<ProbeStatus>, family: &'static str, plan: Result<T, CannotRun>, describe: impl FnOnce(&T) -> String) -> Option<T> {
    let result = plan.as_ref().map(describe).map_err(|why| why.reason.clone());
    probes.push(ProbeStatus { family, result });
    plan.ok()
}

/// The families' decoders, and the userspace state that turns records into events.
struct Decoders {
    drops: Option<drops::decode::Decoder>,
    conntrack: Option<RefCell<Classifier>>,
    tcp: Option<tcp::decode::Decoder>,
    nat: Option<nat::decode::Decoder>,
    no_reply: RefCell<NoReply>,
    ends: Option<RefCell<Ends>>,
    mtu: Option<mtu::decode::Decoder>,
    services: ServiceNames,
}

/// The loaded object with everything attached. Drop order matters: tc attachments (inside
/// their devices' namespaces) go before the object, whose drop detaches the tracepoints.
pub struct Session {
    pub tc: Option<TcAttachments>,
    pub ebpf: Ebpf,
    pub pods: PodLayer,
    pub probes: Vec<ProbeStatus>,
    /// Every device of the namespaces the MTU probe looked at (for MTU facts).
    pub devices: Vec<DeviceFacts>,
    decoders: Decoders,
    /// NATed connections marked no_reply (not kernel records).
    pub marked_no_reply: std::cell::Cell<u64>,
    /// Records read per family (drops, tcp, nat, mtu), for each family's summary line.
    read: RefCell<[u64; 4]>,
    pub reply_timeout: std::time::Duration,
}

impl Session {
    /// Plans, loads and attaches every family that can run here; prints the `attached` line.
    /// `command` names the command in that line.
    pub async fn start(config: &WatchConfig, command: &str) -> anyhow::Result<Session> {
        super::require_privileges(command, config.ifaces.iter().any(|i| i.netns.path.is_some()))?;
        // A wrong --iface is bad input: refused before BTF is read (as `tracer mtu` does).
        let (traced, devices) = choose_devices(&config.ifaces)?;
        let kallsyms = std::thread::spawn(Kallsyms::load);
        let mut btf = super::load_btf(config.trace.btf.as_deref())?;
        let mut probes = Vec::new();

        let drop_parts = match planned(&mut probes, "drops", drops::plan(&btf, HookChoice::Auto), |p| p.hook.describe().to_string()) {
            Some(mut plan) => {
                let ct = drops::plan_conntrack(&mut btf, &mut plan);
                let reasons = drops::select_reasons(&plan, &ReasonSelection::Default)?;
                Some((plan, reasons, ct))
            }
            None => None,
        };
        let drop_config = drop_parts.as_ref().map_or_else(DropConfig::empty, |(plan, reasons, _)| drops::program_config(plan, reasons));
        let tcp_plan = planned(&mut probes, "tcp", tcp::plan(&btf), |p| {
            let hooks: Vec<&str> = p.hooks.iter().map(|h| h.tracepoint).collect();
            format!("tp_btf: {}", hooks.join(", "))
        });
        let tcp_config = tcp_plan.as_ref().map_or_else(TcpConfig::empty, |plan| TcpConfig { stream_retransmits: 1, ..plan.config });
        for why in tcp_plan.iter().flat_map(|p| &p.missing) {
            log::warn!("{why}; the tcp probe runs without it");
        }
        let nat_plan = planned(&mut probes, "nat", nat::plan(&mut btf), |_| "tp_btf/net_dev_start_xmit".into());
        let (nat_config, nat_bits) = nat_plan.map_or((NatConfig::default(), None), |(config, bits)| (config, Some(bits)));
        // The MTU probe's kfree_skb program reads the drops layout: it runs only with it.
        let drops_tp_btf = drop_parts.as_ref().is_some_and(|(plan, ..)| plan.hook == drops::Hook::TpBtf);
        let mtu_plan = mtu::plan(&btf, SentHook::Auto)
            .and_then(|plan| if drops_tp_btf { Ok(plan) } else { Err(CannotRun { probe: "mtu", reason: "needs tp_btf/kfree_skb".into() }) });
        let mtu_plan = planned(&mut probes, "mtu", mtu_plan, mtu::describe);
        for why in mtu_plan.iter().flat_map(|p| &p.missing) {
            log::warn!("{why}");
        }
        let offsets = btf.kernel_offsets().context("resolving kernel struct offsets from BTF")?;
        drop(btf);
        for p in &probes {
            if let Err(why) = &p.result {
                log::warn!("{}: cannot run on this kernel ({why}); {command} goes on without it", p.family);
            }
        }
        if probes.iter().all(|p| p.result.is_err()) {
            anyhow::bail!("no probe can run on this kernel (see the warnings above)");
        }

        let mut pods = super::start_pods(&config.trace.pods).await?;
        let services = start_services(&config.trace.pods).await;
        let kallsyms = kallsyms.join().map_err(|_| anyhow::anyhow!("kallsyms reader panicked"))?.unwrap_or_else(|err| {
            log::warn!("cannot read /proc/kallsyms ({err}); drop locations will be raw addresses");
            Kallsyms::default()
        });
        if mtu_plan.is_some() {
            print_facts(&devices, &traced);
        }

        let globals = Globals {
            offsets,
            filter: config.trace.filter,
            drop: drop_config,
            tcp: tcp_config,
            nat: nat_config,
            mtu: mtu_plan.as_ref().map_or_else(MtuConfig::empty, |p| p.config),
        };
        let mut ebpf = loader::load(&globals, config.trace.ring_buffer_bytes)?;
        pods.attach_kernel_filter(&mut ebpf)?;
        let mut conntrack = None;
        let mut drop_decoder = None;
        if let Some((plan, reasons, ct)) = drop_parts {
            drops::write_reasons(&mut ebpf, &reasons)?;
            drops::attach(&mut ebpf, plan.hook, config.trace.btf.as_deref())?;
            conntrack = ct.map(|_| RefCell::new(Classifier::start()));
            drop_decoder = Some(drops::decode::Decoder { reasons: plan.reasons, kallsyms, clock: Clock::new(), ct });
        }
        if let Some(plan) = &tcp_plan {
            tcp::attach(&mut ebpf, plan)?;
        }
        let mut ends = None;
        if nat_bits.is_some() {
            nat::attach(&mut ebpf)?;
            // Before `attached`, as in `tracer nat`: a connection opened after it gets its end.
            ends = Some(RefCell::new(Ends::start()));
        }
        let mut tc = None;
        let mut mtu_decoder = None;
        if let Some(plan) = &mtu_plan {
            mtu::attach_tracing(&mut ebpf, plan)?;
            let attached = mtu::tc::attach(&mut ebpf, &traced)?;
            let tc_devices = attached
                .devices
                .iter()
                .map(|a| TcDevice { ifindex: a.device.ifindex, name: a.device.name.clone(), netns: a.netns_inode, mtu: a.device.mtu })
                .collect();
            mtu_decoder = Some(mtu::decode::Decoder { clock: Clock::new(), reasons: plan.reasons.clone(), tc_devices });
            tc = Some(attached);
        }
        let running: Vec<String> = probes
            .iter()
            .filter_map(|p| p.result.as_ref().ok().map(|hook| format!("{}: {hook}", p.family)))
            .collect();
        let tc_names: Vec<String> = tc.iter().flat_map(|t| t.devices.iter().map(|a| label(&a.device))).collect();
        super::release_startup_memory();
        eprintln!(
            "tracer: attached {command} ({}; tc on {} devices{}){}",
            running.join("; "),
            tc_names.len(),
            if tc_names.is_empty() { String::new() } else { format!(": {}", shorten(&tc_names)) },
            if config.trace.duration.is_some() { "" } else { "; stop with Ctrl-C" }
        );
        Ok(Session {
            tc,
            ebpf,
            pods,
            probes,
            devices,
            decoders: Decoders {
                drops: drop_decoder,
                conntrack,
                tcp: tcp_plan.map(|_| tcp::decode::Decoder { clock: Clock::new() }),
                nat: nat_bits.map(|bits| nat::decode::Decoder { clock: Clock::new(), bits }),
                no_reply: RefCell::new(NoReply::new(config.reply_timeout.as_nanos() as i128)),
                ends,
                mtu: mtu_decoder,
                services,
            },
            marked_no_reply: std::cell::Cell::new(0),
            read: RefCell::new([0; 4]),
            reply_timeout: config.reply_timeout,
        })
    }

    /// The Services known (for `diagnose`'s service-not-translated).
    pub fn services(&self) -> &ServiceNames {
        &self.decoders.services
    }

    /// Splits the session into what the runner borrows mutably (object, pods) and the decoder
    /// that borrows the rest.
    pub fn parts(&mut self) -> (&mut Ebpf, &mut PodLayer, Decode<'_>) {
        (&mut self.ebpf, &mut self.pods, Decode { decoders: &self.decoders, marked: &self.marked_no_reply, read: &self.read })
    }

    /// Reads the kernel counters of every family, detaches everything (tc first) and prints
    /// each family's `seen, delivered, lost` line. Returns the counts and the pod layer (for
    /// naming what is reported after the run).
    pub fn stop(self) -> anyhow::Result<(Vec<(&'static str, KernelCounts)>, PodLayer)> {
        let mut counts = Vec::new();
        for p in &self.probes {
            if p.result.is_err() {
                continue;
            }
            counts.push((p.family, loader::read_counts_of(&self.ebpf, family_kinds(p.family))?));
        }
        // The drops family's storm counts (drops the ring buffer could not take), as `tracer drops`.
        let storm = if self.decoders.drops.is_some() { drops::storm::read(&self.ebpf)? } else { Vec::new() };
        let Session { tc, ebpf, pods, decoders, read, marked_no_reply, reply_timeout, .. } = self;
        drop(tc);
        drop(ebpf);
        let read = read.into_inner();
        for (family, c) in &counts {
            super::print_summary(family, *c, read[family_index(family)]);
            if let (&"drops", Some(decoder)) = (family, &decoders.drops) {
                for line in drops::storm::report(&storm, c.lost, decoder) {
                    eprintln!("{line}");
                }
            }
        }
        if marked_no_reply.get() > 0 {
            eprintln!("tracer: nat: {} connections got no reply within {reply_timeout:?} (marked no_reply)", marked_no_reply.get());
        }
        if let Some(ends) = decoders.ends {
            ends.into_inner().report();
        }
        Ok((counts, pods))
    }
}

/// Turns records of any family into events (and makes the NAT events no record carries).
pub struct Decode<'a> {
    decoders: &'a Decoders,
    marked: &'a std::cell::Cell<u64>,
    read: &'a RefCell<[u64; 4]>,
}

impl Decode<'_> {
    pub fn decode(&self, header: &EventHeader, bytes: &[u8]) -> Option<Event> {
        let d = self.decoders;
        let family = match header.kind {
            kind::DROP => "drops",
            kind::RETRANSMIT | kind::RESET | kind::CONNECT_FAIL => "tcp",
            kind::NAT => "nat",
            _ => "mtu",
        };
        self.read.borrow_mut()[family_index(family)] += 1;
        match header.kind {
            kind::DROP => {
                let mut event = d.drops.as_ref()?.decode(bytes)?;
                if let (Some(classifier), Detail::Drop(drop)) = (&d.conntrack, &mut event.detail) {
                    classifier.borrow_mut().classify(drop, event.netns);
                }
                Some(event)
            }
            kind::RETRANSMIT | kind::RESET | kind::CONNECT_FAIL => d.tcp.as_ref()?.decode(header.kind, bytes),
            kind::NAT => {
                let mut event = d.nat.as_ref()?.decode(bytes)?;
                d.services.annotate(&mut event);
                d.no_reply.borrow_mut().saw(&event);
                if let Some(ends) = &d.ends {
                    ends.borrow_mut().saw(&event);
                }
                Some(event)
            }
            kind::MTU => d.mtu.as_ref()?.decode(bytes),
            _ => None,
        }
    }

    /// NAT connections whose reply is overdue and those that ended, as of `now`.
    pub fn tick(&self, now: i128) -> Vec<Event> {
        let d = self.decoders;
        let mut out = d.no_reply.borrow_mut().expired(now);
        self.marked.set(self.marked.get() + out.len() as u64);
        if let Some(ends) = &d.ends {
            out.extend(ends.borrow_mut().ended(now));
        }
        out
    }
}

/// The record kinds a family writes.
pub fn family_kinds(family: &str) -> &'static [u16] {
    match family {
        "drops" => &[kind::DROP],
        "tcp" => &[kind::RETRANSMIT, kind::RESET, kind::CONNECT_FAIL],
        "nat" => &[kind::NAT],
        _ => &[kind::MTU],
    }
}

fn family_index(family: &str) -> usize {
    match family {
        "drops" => 0,
        "tcp" => 1,
        "nat" => 2,
        _ => 3,
    }
}
