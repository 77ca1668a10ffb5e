//! tc attachments of the MTU programs, in the namespace of each device: TCX links on
//! kernels >= 6.6 (nothing else to create or remove), else a clsact qdisc (added only where
//! missing, and then removed again) with direct-action filters. Everything is undone when
//! [`TcAttachments`] drops — after Ctrl-C, --duration, an error half-way, or a panic — inside
//! the device's namespace, where the netlink requests must go.

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::Array,
    programs::{SchedClassifier, TcAttachType, tc, tc::SchedClassifierLink},
    util::KernelVersion,
};

use super::devices::{DeviceFacts, Directions};

/// Program names in tracer-ebpf/src/main.rs: for any device, and for Ethernet devices, where
/// the healthy packet is judged from the packet itself.
const PROG_INGRESS: &str = "mtu_tc_ingress";
const PROG_EGRESS: &str = "mtu_tc_egress";
const PROG_INGRESS_ETH: &str = "mtu_eth_ingress";
const PROG_EGRESS_ETH: &str = "mtu_eth_egress";

/// The programs' MTU_FLOOR map (tracer-ebpf/src/mtu.rs).
const FLOOR_MAP: &str = "MTU_FLOOR";
/// The floor's cap: packets up to this length are the healthy small ones (and every ICMP error
/// is at most this long), so a higher floor would save nothing worth a stale value's risk.
const FLOOR_CAP: u32 = 1280;

/// Tells the classifiers the narrowest MTU among `mtus` (the traced devices' MTUs now), capped
/// at [`FLOOR_CAP`]: an IP packet no longer than that is not oversize on any traced device, so
/// the classifiers let it pass without asking the kernel for the device's MTU. With no device
/// (or an MTU of 0, unread) the floor is 0 and every packet is checked.
pub(crate) fn set_floor(ebpf: &mut Ebpf, mtus: impl IntoIterator<Item = u32>) -> anyhow::Result<()> {
    let floor = mtus.into_iter().map(|m| m.min(FLOOR_CAP)).min().unwrap_or(0);
    let mut map: Array<_, u32> = Array::try_from(ebpf.map_mut(FLOOR_MAP).with_context(|| format!("{FLOOR_MAP} missing from the object"))?)?;
    map.set(0, floor, 0).with_context(|| format!("setting {FLOOR_MAP}"))
}

/// The programs for `device`, in the directions it is watched in.
fn programs_for(device: &DeviceFacts, directions: Directions) -> &'static [(&'static str, TcAttachType)] {
    match (device.ethernet, directions) {
        (true, Directions::Both) => &[(PROG_INGRESS_ETH, TcAttachType::Ingress), (PROG_EGRESS_ETH, TcAttachType::Egress)],
        (true, Directions::EgressOnly) => &[(PROG_EGRESS_ETH, TcAttachType::Egress)],
        (false, Directions::Both) => &[(PROG_INGRESS, TcAttachType::Ingress), (PROG_EGRESS, TcAttachType::Egress)],
        (false, Directions::EgressOnly) => &[(PROG_EGRESS, TcAttachType::Egress)],
    }
}

/// The classifier programs `devices` need, each once (`chosen`: named with `--iface`), so that
/// the session verifies them beside the BTF tracepoint programs rather than one after another
/// while attaching.
pub(crate) fn programs_needed(devices: &[DeviceFacts], chosen: bool) -> Vec<&'static str> {
    let mut names = Vec::new();
    for device in devices {
        for (name, _) in programs_for(device, device.classified(chosen)) {
            if !names.contains(name) {
                names.push(*name);
            }
        }
    }
    names
}

/// One device with the programs attached.
pub(crate) struct Attached {
    pub device: DeviceFacts,
    pub netns_inode: u32,
    links: Vec<SchedClassifierLink>,
    /// This run added the clsact qdisc (legacy tc only), so it removes it.
    clsact_added: bool,
}

/// The attachments; dropping detaches them all.
pub(crate) struct TcAttachments {
    pub devices: Vec<Attached>,
    /// TCX links (kernel >= 6.6), else clsact + cls_bpf.
    pub tcx: bool,
    /// The devices were named by the user (`--iface`): every one is watched both ways
    /// ([`DeviceFacts::classified`]).
    chosen: bool,
}

/// Whether aya attaches through TCX here: it does from 6.6 on (its own rule, repeated here
/// because aya keeps it private).
pub(crate) fn uses_tcx() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Attaches the classifiers to every device, in the directions [`DeviceFacts::classified`]
/// says; `chosen`: the user named the devices.
pub(crate) fn attach(ebpf: &mut Ebpf, devices: &[DeviceFacts], chosen: bool) -> anyhow::Result<TcAttachments> {
    let mut out = TcAttachments { devices: Vec::new(), tcx: uses_tcx(), chosen };
    // Before any classifier is attached: until then the floor is 0 and everything is checked.
    set_floor(ebpf, devices.iter().map(|d| d.mtu))?;
    for device in devices {
        match out.add(ebpf, device) {
            Ok(_) => {}
            // A device found by tracer itself that went away between the listing and now (a
            // CNI's short-lived device, a pod deleted): nothing to watch there, the run goes on.
            // One the user named is an error.
            Err(err) if !chosen && device.netns.path.is_none() && !listed_again(device) => {
                out.forget(device.ifindex);
                log::warn!("mtu: device {} went away before tc was attached to it: {err:#}", device.name);
            }
            Err(err) => return Err(err),
        }
    }
    Ok(out)
}

/// Whether `device` (of tracer's own namespace) still exists under its name.
pub(crate) fn listed_again(device: &DeviceFacts) -> bool {
    let Ok(name) = std::ffi::CString::new(device.name.as_str()) else { return false };
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

impl TcAttachments {
    /// Attaches the classifiers to `device`, inside its namespace. Each
    /// program is loaded the first time a device needs it: the verifier's time is spent only on
    /// the variants in use.
    pub(crate) fn add(&mut self, ebpf: &mut Ebpf, device: &DeviceFacts) -> anyhow::Result<&Attached> {
        let netns_inode = device.netns.inode()?;
        let _inside = device.netns.enter()?;
        let mut attached = Attached { device: device.clone(), netns_inode, links: Vec::new(), clsact_added: false };
        if !self.tcx {
            match tc::qdisc_add_clsact(&device.name) {
                Ok(()) => attached.clsact_added = true,
                // EEXIST: someone's clsact is there already (Cilium's, say): share it, leave it.
                Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("adding a clsact qdisc to {}", describe(device))),
            }
        }
        // Pushed before attaching, so a failure below still removes the qdisc.
        self.devices.push(attached);
        let attached = self.devices.last_mut().context("just pushed")?;
        for &(name, at) in programs_for(device, device.classified(self.chosen)) {
            let prog: &mut SchedClassifier = ebpf.program_mut(name).with_context(|| format!("{name} missing from the object"))?.try_into()?;
            if prog.fd().is_err() {
                prog.load().with_context(|| format!("loading {name}"))?;
            }
            let id = prog.attach(&device.name, at).with_context(|| format!("attaching {name} to {}", describe(device)))?;
            attached.links.push(prog.take_link(id)?);
        }
        Ok(attached)
    }

    /// Renames the device of tracer's own namespace with `ifindex` (a rename keeps the links,
    /// and its qdisc is removed by its new name).
    pub(crate) fn rename(&mut self, ifindex: u32, name: &str) {
        for a in self.devices.iter_mut().filter(|a| a.device.netns.path.is_none() && a.device.ifindex == ifindex) {
            a.device.name = name.to_string();
        }
    }

    /// Forgets the device of tracer's own namespace with `ifindex`, which is gone; its name.
    /// The links go with the device (a TCX link's fd is closed, a netlink filter's delete fails
    /// quietly), and so does a clsact qdisc tracer added. A device moved into another namespace
    /// (a CNI's pod end) keeps a clsact qdisc and filter there on kernels without TCX.
    pub(crate) fn forget(&mut self, ifindex: u32) -> Option<String> {
        let i = self.devices.iter().position(|a| a.device.netns.path.is_none() && a.device.ifindex == ifindex)?;
        let gone = self.devices.remove(i);
        drop(gone.links);
        Some(gone.device.name)
    }
}

fn describe(device: &DeviceFacts) -> String {
    match device.netns.path {
        None => device.name.clone(),
        Some(_) => format!("{}:{}", device.netns.label(), device.name),
    }
}

impl Drop for TcAttachments {
    fn drop(&mut self) {
        for attached in self.devices.drain(..) {
            let Attached { device, links, clsact_added, .. } = attached;
            let inside = match device.netns.enter() {
                Ok(guard) => guard,
                Err(err) => {
                    log::warn!("cannot detach from {}: {err}", describe(&device));
                    continue;
                }
            };
            // A TCX link detaches when its fd closes; a netlink filter is deleted by its drop,
            // in the namespace we are now in.
            drop(links);
            if clsact_added && let Err(err) = remove_clsact(&device.name) {
                log::warn!("could not remove the clsact qdisc tracer added to {}: {err:#}", describe(&device));
            }
            drop(inside);
        }
    }
}

/// aya cannot delete a qdisc: a netlink request does, in this thread's namespace (the image
/// has no `tc`).
fn remove_clsact(device: &str) -> anyhow::Result<()> {
    crate::kernel::rtnetlink::delete_clsact(device).context("RTM_DELQDISC clsact")
}
