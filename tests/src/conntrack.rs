//! Filling a namespace's conntrack table: the machine-wide `nf_conntrack_max` set low for one
//! test and restored on drop ([`ConntrackMax`]), a server that completes handshakes without
//! accepting ([`BACKLOG_SERVER`]), and a client that holds connections open
//! ([`HOLD_CONNECTIONS`]).

/// net.netfilter.nf_conntrack_max is one value for the whole machine (read-only inside a child
/// namespace), checked against each namespace's own entry count: set low for one test (with
/// the shared lock held), restored on drop, also when the test fails.
pub struct ConntrackMax {
    old: String,
}

pub const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

impl ConntrackMax {
    pub fn set(max: u64) -> ConntrackMax {
        let old = std::fs::read_to_string(CONNTRACK_MAX).unwrap_or_else(|e| panic!("lab: reading {CONNTRACK_MAX}: {e}"));
        std::fs::write(CONNTRACK_MAX, max.to_string()).unwrap_or_else(|e| panic!("lab: writing {CONNTRACK_MAX}: {e}"));
        ConntrackMax { old: old.trim().to_string() }
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(CONNTRACK_MAX, &self.old) {
            eprintln!("!!!!!!!! could not restore {CONNTRACK_MAX} to {}: {e} !!!!!!!!", self.old);
        }
    }
}

/// Listens with a large backlog and never accepts: the kernel completes every handshake, so
/// each connection is an assured conntrack entry that early drop cannot evict.
pub const BACKLOG_SERVER: &str = r#"
import socket, sys, time
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(128)
print("listening", flush=True)
time.sleep(120)
"#;

/// Opens N connections and holds them.
pub const HOLD_CONNECTIONS: &str = r#"
import socket, sys, time
held = []
for _ in range(int(sys.argv[3])):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    held.append(s)
print("connected", flush=True)
time.sleep(120)
"#;
