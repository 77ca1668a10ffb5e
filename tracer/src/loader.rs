//! Loading the embedded kernel object with this kernel's offsets and the user's filters.

use std::os::fd::AsFd as _;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
};
use tracer_common::{event::counter, filter::FlowFilter, flow::TunnelPorts, offsets::KernelOffsets};

use crate::kernel::kfunc;

/// The kernel object built by build.rs from tracer-ebpf.
pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Everything the programs read from read-only globals: the shared offsets and filter, and each
/// running family's own configuration under its global's name. A family that does not run
/// leaves its global as compiled (all "absent", so its programs do nothing).
pub(crate) struct Globals {
    pub offsets: KernelOffsets,
    pub filter: FlowFilter,
    pub tunnel_ports: TunnelPorts,
    /// Unread ring-buffer data at which a record wakes the reader (tracer-ebpf's emit.rs): an
    /// eighth of the ring; below it the reader's timer (`runner::POLL`) collects records.
    ring_wake_bytes: u64,
    families: Vec<(&'static str, Vec<u8>)>,
    /// (marker, BTF id) of each kfunc a family resolved: what the marker calls are rewritten to
    /// (`kernel::kfunc`). A marker not listed is rewritten to `r0 = 0`.
    kfuncs: Vec<(u32, Option<u32>)>,
    /// A family of the run carries egress checks (see
    /// [`crate::probes::Family::carries_egress_checks`]): its classifiers will be attached to the
    /// node's devices. Set by the session, read by the families that can ride in them.
    pub egress_checks: bool,
}

impl Globals {
    pub(crate) fn new(offsets: KernelOffsets, filter: FlowFilter, tunnel_ports: TunnelPorts) -> Self {
        Self { offsets, filter, tunnel_ports, ring_wake_bytes: 0, families: Vec::new(), kfuncs: Vec::new(), egress_checks: false }
    }

    /// Has the programs' calls of `marker` (a `tracer_common::kfunc` marker) call kernel function
    /// `id` (from `kernel::kfunc::vmlinux_id`), or, with None, become `r0 = 0` on a kernel without
    /// it. Replaces an earlier setting of the same marker.
    pub(crate) fn set_kfunc(&mut self, marker: u32, id: Option<u32>) {
        self.kfuncs.retain(|(m, _)| *m != marker);
        self.kfuncs.push((marker, id));
    }

    /// What each marker call is rewritten to: the ids set, and None for every other known marker.
    fn kfunc_calls(&self) -> Vec<(u32, Option<u32>)> {
        let unset = kfunc::MARKERS.iter().filter(|(m, _)| !self.kfuncs.iter().any(|(k, _)| k == m)).map(|(m, _)| (*m, None));
        self.kfuncs.iter().copied().chain(unset).collect()
    }

    /// Sizes the reader's wake-up mark to a ring buffer of `bytes`.
    pub(crate) fn set_ring_buffer(&mut self, bytes: u32) {
        self.ring_wake_bytes = u64::from(bytes / 8);
    }

    /// Sets the global `name` (a family's `*_CONFIG`) to `value`, replacing an earlier value.
    pub(crate) fn set<T: aya::Pod>(&mut self, name: &'static str, value: &T) {
        // SAFETY: T is Pod (plain integers and arrays, no padding holes), so its bytes may be read.
        let bytes = unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }.to_vec();
        self.families.retain(|(n, _)| *n != name);
        self.families.push((name, bytes));
    }

    /// The value set for `name`, if any family set it.
    pub(crate) fn get<T: aya::Pod>(&self, name: &str) -> Option<T> {
        let (_, bytes) = self.families.iter().find(|(n, _)| *n == name)?;
        (bytes.len() == size_of::<T>())
            // SAFETY: the length matches and T is Pod (any bit pattern is a valid T).
            .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }
}

/// A loader, made on a thread: `EbpfLoader::new()` parses the kernel's BTF (~20 ms of CPU), which
/// the session lets happen while it plans.
pub(crate) fn new_loader_in_background() -> std::thread::JoinHandle<EbpfLoader<'static>> {
    std::thread::spawn(EbpfLoader::new)
}

/// Creates the maps and parses the programs; nothing is loaded into the kernel until a probe
/// loads its own programs, and nothing runs until it attaches. `btf` is the kernel BTF the
/// object is relocated against: the one every family attaches with (`--btf` when given).
pub(crate) fn load<'a>(mut loader: EbpfLoader<'a>, globals: &'a Globals, ring_buffer_bytes: u32, btf: &'a aya::Btf) -> anyhow::Result<Ebpf> {
    raise_memlock();
    loader.btf(Some(btf));
    loader.override_global("OFFSETS", &globals.offsets, true).override_global("FLOW_FILTER", &globals.filter, true).override_global(
        "TUNNEL_PORTS",
        &globals.tunnel_ports,
        true,
    );
    loader.override_global("RING_WAKE_BYTES", &globals.ring_wake_bytes, true);
    for (name, bytes) in &globals.families {
        loader.override_global(name, bytes.as_slice(), true);
    }
    // aya copies what it needs while parsing (`Ebpf` borrows nothing), so the patched copy only
    // has to live through this call.
    let calls = globals.kfunc_calls();
    let (object, counts) = kfunc::patch(OBJECT, &calls).context("rewriting the kfunc calls of tracer's kernel object")?;
    for ((marker, id), count) in calls.iter().zip(counts) {
        let to = id.map_or_else(|| "r0 = 0 (no kfunc used)".to_string(), |id| format!("a kfunc call to BTF id {id}"));
        log::debug!("kfunc {}: {count} call(s) rewritten into {to}", kfunc::name_of(*marker));
    }
    loader.map_max_entries("EVENTS", ring_buffer_bytes).load(object.bytes()).context("creating the BPF maps of tracer's kernel object")
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones use memcg and ignore it.
fn raise_memlock() {
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: rlim is a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        let needed = crate::kernel::version().is_some_and(|v| v < (5, 11));
        let err = std::io::Error::last_os_error();
        if needed {
            log::warn!("cannot raise RLIMIT_MEMLOCK ({err}); loading may fail on this kernel");
        } else {
            log::debug!("cannot raise RLIMIT_MEMLOCK ({err}); not needed on kernels >= 5.11");
        }
    }
}

/// Kernel-side counts for one record kind, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelCounts {
    pub matched: u64,
    pub lost: u64,
    /// Matched but over the drop rate budget: counted in the kernel by place, not delivered.
    pub counted: u64,
}

/// Kernel-side counts summed over several record kinds (one probe family).
pub(crate) fn read_counts_of(ebpf: &Ebpf, kinds: &[u16]) -> anyhow::Result<KernelCounts> {
    let mut total = KernelCounts::default();
    for kind in kinds {
        let c = read_counts(ebpf, *kind)?;
        total.matched += c.matched;
        total.lost += c.lost;
        total.counted += c.counted;
    }
    Ok(total)
}

pub(crate) fn read_counts(ebpf: &Ebpf, kind: u16) -> anyhow::Result<KernelCounts> {
    let map = ebpf.map("COUNTERS").context("COUNTERS map missing")?;
    let counters: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
    let sum = |slot| -> anyhow::Result<u64> { Ok(counters.get(&counter::index(kind, slot), 0)?.iter().sum()) };
    Ok(KernelCounts { matched: sum(counter::MATCHED)?, lost: sum(counter::LOST)?, counted: sum(counter::COUNTED)? })
}

/// A second handle on the kernel counters, for reading them while the event loop holds the
/// object (`tracer serve` publishes them as they grow).
pub(crate) struct CounterReader {
    counters: PerCpuArray<MapData, u64>,
}

impl CounterReader {
    pub(crate) fn open(ebpf: &Ebpf) -> anyhow::Result<Self> {
        let map = ebpf.map("COUNTERS").context("COUNTERS map missing")?;
        let Map::PerCpuArray(data) = map else { anyhow::bail!("COUNTERS is not a per-CPU array") };
        // A duplicate of the fd, not the map opened again by id: BPF_MAP_GET_FD_BY_ID is kept
        // for CAP_SYS_ADMIN, which `serve` should not need for its own map.
        let fd = data.fd().as_fd().try_clone_to_owned().context("duplicating the COUNTERS map's fd")?;
        let data = MapData::from_fd(fd).context("opening the COUNTERS map's duplicate fd")?;
        Ok(Self { counters: PerCpuArray::try_from(Map::PerCpuArray(data))? })
    }

    /// Counts summed over CPUs and over `kinds`.
    pub(crate) fn read(&self, kinds: &[u16]) -> anyhow::Result<KernelCounts> {
        let mut total = KernelCounts::default();
        for kind in kinds {
            let sum = |slot| -> anyhow::Result<u64> { Ok(self.counters.get(&counter::index(*kind, slot), 0)?.iter().sum()) };
            total.matched += sum(counter::MATCHED)?;
            total.lost += sum(counter::LOST)?;
            total.counted += sum(counter::COUNTED)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::kfunc::KFUNC_MARK_CAST_TO_KERN_CTX;

    use super::*;

    /// Globals as a session starts them, before any family sets its own.
    fn globals() -> Globals {
        Globals::new(KernelOffsets::default(), FlowFilter::default(), TunnelPorts::default())
    }

    #[test]
    fn an_unset_marker_is_rewritten_to_r0_eq_0() {
        assert_eq!(globals().kfunc_calls(), [(KFUNC_MARK_CAST_TO_KERN_CTX, None)]);
    }

    #[test]
    fn a_set_kfunc_replaces_the_earlier_setting() {
        let mut globals = globals();
        globals.set_kfunc(KFUNC_MARK_CAST_TO_KERN_CTX, Some(5));
        globals.set_kfunc(KFUNC_MARK_CAST_TO_KERN_CTX, Some(7));
        globals.set_kfunc(0x7fff_0001, None);
        assert_eq!(globals.kfunc_calls(), [(KFUNC_MARK_CAST_TO_KERN_CTX, Some(7)), (0x7fff_0001, None)]);
    }
}
