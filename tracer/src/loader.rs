//! Loading the embedded kernel object with this kernel's offsets and the user's filters.

use std::os::fd::AsFd as _;

use anyhow::Context as _;
use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
};
use tracer_common::{event::counter, filter::FlowFilter, flow::TunnelPorts, offsets::KernelOffsets};

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
}

impl Globals {
    pub(crate) fn new(offsets: KernelOffsets, filter: FlowFilter, tunnel_ports: TunnelPorts) -> Self {
        Self { offsets, filter, tunnel_ports, ring_wake_bytes: 0, families: Vec::new() }
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
    loader.map_max_entries("EVENTS", ring_buffer_bytes).load(OBJECT).context("creating the BPF maps of tracer's kernel object")
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
