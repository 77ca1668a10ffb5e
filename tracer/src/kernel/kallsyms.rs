//! Kernel addresses to `symbol+0xoff`, from /proc/kallsyms.

use std::{
    io,
    path::Path,
    sync::{Mutex, OnceLock, PoisonError},
    thread::JoinHandle,
};

/// Sorted text symbols of the running kernel and its modules.
#[derive(Debug, Default)]
pub(crate) struct Kallsyms {
    /// (address, name), sorted by address.
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads /proc/kallsyms. Addresses read as zero when kptr_restrict hides them from this
    /// process; the table is then empty and locations print as raw addresses.
    pub(crate) fn load() -> io::Result<Self> {
        Self::from_file(Path::new("/proc/kallsyms"))
    }

    pub(crate) fn from_file(path: &Path) -> io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    pub(crate) fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                // Only code: data symbols would swallow addresses that fall between functions.
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W")).then(|| (addr, name.to_string()))
            })
            .collect();
        symbols.sort_unstable_by_key(|(addr, _)| *addr);
        Self { symbols }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// `name+0xoff` for `addr`, or `0xADDR` when no symbol covers it.
    pub(crate) fn symbolize(&self, addr: u64) -> String {
        if addr == 0 {
            return "0x0".into();
        }
        match self.symbols.partition_point(|(a, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let (start, name) = &self.symbols[i - 1];
                format!("{name}+{:#x}", addr - start)
            }
        }
    }
}

/// A [`Kallsyms`] read on a thread and taken when first needed: reading and parsing
/// /proc/kallsyms (~120,000 lines, ~60 ms of CPU) is not on the way to `attached`, which only
/// needs the programs attached; a drop recorded meanwhile waits in the ring buffer.
pub(crate) struct LazyKallsyms {
    table: OnceLock<Kallsyms>,
    reader: Mutex<Option<JoinHandle<io::Result<Kallsyms>>>>,
    /// Warn when the table is empty (kptr_restrict): the command is `drops` itself.
    alone: bool,
}

impl LazyKallsyms {
    /// Starts reading /proc/kallsyms on a thread.
    pub(crate) fn spawn(alone: bool) -> Self {
        Self { table: OnceLock::new(), reader: Mutex::new(Some(std::thread::spawn(Kallsyms::load))), alone }
    }

    /// The table, waiting for the reader the first time; warns (once) when it could not be read
    /// or shows no addresses.
    pub(crate) fn get(&self) -> &Kallsyms {
        self.table.get_or_init(|| {
            let reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner).take();
            let table = match reader.map(JoinHandle::join) {
                Some(Ok(Ok(table))) => table,
                Some(Ok(Err(err))) => {
                    log::warn!("cannot read /proc/kallsyms ({err}); drop locations will be raw addresses");
                    return Kallsyms::default();
                }
                Some(Err(_)) => {
                    log::warn!("the /proc/kallsyms reader panicked; drop locations will be raw addresses");
                    return Kallsyms::default();
                }
                None => Kallsyms::default(),
            };
            if self.alone && table.is_empty() {
                log::warn!("/proc/kallsyms shows no addresses (kptr_restrict?); locations will be raw addresses");
            }
            table
        })
    }

    /// [`Kallsyms::symbolize`] with the table.
    pub(crate) fn symbolize(&self, addr: u64) -> String {
        self.get().symbolize(addr)
    }
}

impl From<Kallsyms> for LazyKallsyms {
    fn from(table: Kallsyms) -> Self {
        Self { table: OnceLock::from(table), reader: Mutex::new(None), alone: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81a00000 t nf_hook_slow
ffffffff81a00100 T ip_rcv
ffffffff82000000 D some_data
ffffffffc0000000 t nf_ct_thing\t[nf_conntrack]
0000000000000000 A fixed_percpu_data
";

    #[test]
    fn symbolizes_inside_functions() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.symbolize(0xffffffff81a0009c), "nf_hook_slow+0x9c");
        assert_eq!(k.symbolize(0xffffffff81a00100), "ip_rcv+0x0");
        assert_eq!(k.symbolize(0xffffffffc0000010), "nf_ct_thing+0x10");
    }

    #[test]
    fn data_symbols_do_not_capture_addresses() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.symbolize(0xffffffff82000010), "ip_rcv+0x5fff10");
    }

    #[test]
    fn unknown_addresses_stay_raw() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.symbolize(0x1000), "0x1000");
        assert_eq!(k.symbolize(0), "0x0");
        assert!(Kallsyms::parse("").is_empty());
    }

    #[test]
    fn lazy_table_is_the_table() {
        let lazy = LazyKallsyms::from(Kallsyms::parse(SAMPLE));
        assert_eq!(lazy.symbolize(0xffffffff81a0009c), "nf_hook_slow+0x9c");
        let running = LazyKallsyms::spawn(false);
        assert_eq!(running.get().is_empty(), Kallsyms::load().expect("/proc/kallsyms").is_empty());
    }

    #[test]
    fn running_kernel_knows_kfree_skb() {
        let k = Kallsyms::load().expect("/proc/kallsyms");
        if k.is_empty() {
            eprintln!("SKIPPED: kallsyms addresses are hidden (kptr_restrict) on {}", super::super::release());
            return;
        }
        let line = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let addr = line
            .lines()
            .find(|l| l.ends_with(" sk_skb_reason_drop") || l.ends_with(" kfree_skb_reason") || l.ends_with(" kfree_skb"))
            .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
            .expect("a kfree_skb symbol");
        assert!(k.symbolize(addr + 4).ends_with("+0x4"));
    }
}
