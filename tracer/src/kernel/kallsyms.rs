//! Kernel addresses to `symbol+0xoff`, from /proc/kallsyms.

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::Path,
    sync::{Mutex, OnceLock, PoisonError},
    thread::JoinHandle,
};

/// Sorted text symbols of the running kernel and its modules.
///
/// Kept compact because it lives as long as tracer does (a DaemonSet's whole run): ~120,000
/// names in one buffer and 16 bytes a symbol (~5 MB on a 6.18 kernel), where a `String` per name
/// cost ~72 bytes a symbol, and the file is read line by line, never whole.
#[derive(Debug, Default)]
pub(crate) struct Kallsyms {
    /// Sorted by address.
    symbols: Vec<Symbol>,
    /// Every name, one after another; a [`Symbol`] says where its own is.
    names: String,
}

/// One symbol: its address and where its name is in [`Kallsyms::names`].
#[derive(Debug, Clone, Copy)]
struct Symbol {
    addr: u64,
    name_start: u32,
    name_len: u32,
}

impl Kallsyms {
    /// Reads /proc/kallsyms. Addresses read as zero when kptr_restrict hides them from this
    /// process; the table is then empty and locations print as raw addresses.
    pub(crate) fn load() -> io::Result<Self> {
        Self::from_file(Path::new("/proc/kallsyms"))
    }

    pub(crate) fn from_file(path: &Path) -> io::Result<Self> {
        Self::read(BufReader::with_capacity(64 * 1024, File::open(path)?))
    }

    /// The table of a kallsyms text (tests and fuzz targets).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn parse(text: &str) -> Self {
        Self::read(text.as_bytes()).expect("reading from memory cannot fail")
    }

    fn read(mut input: impl BufRead) -> io::Result<Self> {
        let mut table = Self::default();
        let mut line = String::new();
        while input.read_line(&mut line)? != 0 {
            table.add(&line);
            line.clear();
        }
        table.symbols.sort_unstable_by_key(|symbol| symbol.addr);
        table.symbols.shrink_to_fit();
        table.names.shrink_to_fit();
        Ok(table)
    }

    /// Adds the symbol of one line (`ADDR TYPE NAME [MODULE]`) when it is code at a known address.
    fn add(&mut self, line: &str) {
        let mut parts = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else { return };
        // Only code: data symbols would swallow addresses that fall between functions.
        if !matches!(kind, "t" | "T" | "w" | "W") {
            return;
        }
        let (Ok(addr), Ok(name_start), Ok(name_len)) = (u64::from_str_radix(addr, 16), u32::try_from(self.names.len()), u32::try_from(name.len()))
        else {
            return;
        };
        if addr == 0 {
            return;
        }
        self.names.push_str(name);
        self.symbols.push(Symbol { addr, name_start, name_len });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// `name+0xoff` for `addr`, or `0xADDR` when no symbol covers it.
    pub(crate) fn symbolize(&self, addr: u64) -> String {
        if addr == 0 {
            return "0x0".into();
        }
        match self.symbols.partition_point(|symbol| symbol.addr <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let symbol = self.symbols[i - 1];
                let start = symbol.name_start as usize;
                format!("{}+{:#x}", &self.names[start..start + symbol.name_len as usize], addr - symbol.addr)
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
    fn symbols_listed_out_of_address_order_are_found() {
        // Modules' symbols follow the kernel's in /proc/kallsyms, at lower or higher addresses.
        let k = Kallsyms::parse("ffffffffc0000000 t nf_ct_thing\t[nf_conntrack]\nffffffff81a00000 t nf_hook_slow\nffffffff81000000 T _stext\n");
        assert_eq!(k.symbolize(0xffffffff81a00010), "nf_hook_slow+0x10");
        assert_eq!(k.symbolize(0xffffffff81000004), "_stext+0x4");
        assert_eq!(k.symbolize(0xffffffffc0000020), "nf_ct_thing+0x20");
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
