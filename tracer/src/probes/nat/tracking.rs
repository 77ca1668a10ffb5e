//! NAT's run-time state: connections waiting for their first reply (marked `no_reply` when
//! overdue), and connection ends from conntrack's destroy events for the connections reported.

use std::collections::HashMap;

use super::ctnetlink::EndWatch;
use crate::{
    events::{Detail, Event},
    probes::nat::detail::NatState,
};

/// A reported connection: its namespace, protocol and original tuple.
type ConnKey = (u32, Option<u8>, String, String);

/// Connection ends from conntrack's destroy events, for the connections this run reported.
pub(crate) struct Ends {
    watch: EndWatch,
    /// The last event of each reported connection, the template of its end.
    last: HashMap<ConnKey, Event>,
    reported: u64,
    /// Connections dropped from `last` unended to keep it bounded (see [`MAX_AWAITING_END`]).
    forgotten: u64,
}

/// Reported connections kept for their end. Entries older than the subscription never report
/// one, so without a bound the map would grow for as long as tracer runs.
const MAX_AWAITING_END: usize = 65_536;

/// Forgets the older half of `last` (by the time each connection was last reported); returns how
/// many. Run when the map is full, so its cost is spread over the next half of inserts.
fn forget_older_half(last: &mut HashMap<ConnKey, Event>) -> usize {
    let mut times: Vec<i128> = last.values().map(|e| e.ts_unix_ns).collect();
    let mid = times.len() / 2;
    let (_, cutoff, _) = times.select_nth_unstable(mid);
    let cutoff = *cutoff;
    let before = last.len();
    last.retain(|_, e| e.ts_unix_ns > cutoff);
    before - last.len()
}

impl Ends {
    pub(crate) fn start() -> Self {
        Ends { watch: EndWatch::start(), last: HashMap::new(), reported: 0, forgotten: 0 }
    }

    pub(crate) fn saw(&mut self, event: &Event) {
        let (Detail::Nat(nat), Some(netns)) = (&event.detail, event.netns) else { return };
        let (Some(src), Some(dst)) = (&nat.orig_src, &nat.orig_dst) else { return };
        self.watch.ensure(netns);
        if self.last.len() >= MAX_AWAITING_END {
            self.forgotten += forget_older_half(&mut self.last) as u64;
        }
        self.last.insert((netns, event.flow.l4_proto, src.clone(), dst.clone()), event.clone());
    }

    /// At stop, on stderr: how many ends were shown, and what could not be.
    pub(crate) fn report(&self) {
        if self.reported > 0 {
            eprintln!("tracer: nat: {} connections ended (closed, timed_out or destroyed)", self.reported);
        }
        if self.forgotten > 0 {
            log::warn!(
                "{} connections were forgotten before they ended (more than {MAX_AWAITING_END} awaiting an end): their ends are not shown",
                self.forgotten
            );
        }
        if self.watch.overruns() > 0 {
            log::warn!("{} batches of conntrack destroy events overran the socket buffer: some connection ends were missed", self.watch.overruns());
        }
    }

    /// Ends received since the last tick, as nat events stamped `now` (in time order).
    pub(crate) fn ended(&mut self, now: i128) -> Vec<Event> {
        let mut out = Vec::new();
        for (netns, d) in self.watch.drain() {
            let (Some(src), Some(dst)) = (d.orig.src_endpoint(), d.orig.dst_endpoint()) else { continue };
            let Some(mut e) = self.last.remove(&(netns, d.orig.l4_proto, src, dst)) else { continue };
            e.ts_unix_ns = now;
            if let Detail::Nat(nat) = &mut e.detail {
                nat.state = d.ending(nat.reply_seen);
            }
            out.push(e);
        }
        self.reported += out.len() as u64;
        out
    }
}

/// Connections waiting for their first reply, by conntrack entry and original tuple: the
/// kernel may place a new connection in the entry of one that is still waiting here (freed by
/// its deletion or its timeout before tracer's), and each is marked on its own.
pub(crate) struct NoReply {
    timeout_ns: i128,
    waiting: HashMap<WaitKey, Event>,
}

/// A connection waiting for its reply: its entry's address and its original source and
/// destination.
type WaitKey = (u64, Option<String>, Option<String>);

impl NoReply {
    pub(crate) fn new(timeout_ns: i128) -> Self {
        Self { timeout_ns, waiting: HashMap::new() }
    }

    pub(crate) fn saw(&mut self, event: &Event) {
        let Detail::Nat(nat) = &event.detail else { return };
        let key = (nat.conn, nat.orig_src.clone(), nat.orig_dst.clone());
        if nat.reply_seen {
            self.waiting.remove(&key);
        } else {
            self.waiting.entry(key).or_insert_with(|| event.clone());
        }
    }

    /// The connections whose reply is overdue at `now`, as `no_reply` events (once each).
    pub(crate) fn expired(&mut self, now: i128) -> Vec<Event> {
        let overdue: Vec<WaitKey> = self.waiting.iter().filter(|(_, e)| now - e.ts_unix_ns >= self.timeout_ns).map(|(key, _)| key.clone()).collect();
        let mut out: Vec<Event> = overdue
            .into_iter()
            .filter_map(|key| self.waiting.remove(&key))
            .map(|mut e| {
                // Stamped when the timeout was noticed, so the stream stays in time order.
                e.ts_unix_ns = now;
                if let Detail::Nat(nat) = &mut e.detail {
                    nat.state = NatState::NoReply;
                }
                e
            })
            .collect();
        out.sort_by_key(|e| e.ts_unix_ns);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::nat::detail::{NatDetail, NatKind};

    #[test]
    fn forgetting_keeps_the_newer_half() {
        let mut last: HashMap<ConnKey, Event> = HashMap::new();
        for i in 0..10i128 {
            last.insert((1, Some(6), format!("10.0.0.1:{i}"), "10.96.0.1:80".into()), nat(i as u64, i, false));
        }
        assert_eq!(forget_older_half(&mut last), 6, "the median and everything older go");
        let mut kept: Vec<i128> = last.values().map(|e| e.ts_unix_ns).collect();
        kept.sort_unstable();
        assert_eq!(kept, [6, 7, 8, 9]);
    }

    fn nat(conn: u64, ts: i128, reply_seen: bool) -> Event {
        Event::bare(
            ts,
            Detail::Nat(NatDetail {
                nat: NatKind::Dnat,
                orig_src: None,
                orig_dst: None,
                orig_dst_addr: None,
                reply_src: None,
                reply_dst: None,
                reply_seen,
                assured: false,
                state: if reply_seen { NatState::Reply } else { NatState::New },
                backend: None,
                backend_ip: None,
                backend_pod: None,
                service: None,
                conn,
            }),
        )
    }

    /// `nat` for the connection from `src` (to one Service address).
    fn nat_from(conn: u64, src: &str, ts: i128, reply_seen: bool) -> Event {
        let mut e = nat(conn, ts, reply_seen);
        if let Detail::Nat(d) = &mut e.detail {
            d.orig_src = Some(src.into());
            d.orig_dst = Some("10.96.0.10:53".into());
        }
        e
    }

    #[test]
    fn a_new_connection_in_a_waiting_connections_entry_is_marked_no_reply_on_its_own() {
        let mut n = NoReply::new(1000);
        n.saw(&nat_from(7, "10.0.0.1:40001", 0, false));
        // The kernel freed entry 7 early (a deletion) and gave it to the next connection.
        n.saw(&nat_from(7, "10.0.0.1:40002", 600, false));
        let first = n.expired(1000);
        let srcs = |out: &[Event]| -> Vec<Option<String>> {
            out.iter().map(|e| if let Detail::Nat(d) = &e.detail { d.orig_src.clone() } else { None }).collect()
        };
        assert_eq!(srcs(&first), [Some("10.0.0.1:40001".to_string())], "the first connection, at its own timeout");
        let second = n.expired(1600);
        assert_eq!(srcs(&second), [Some("10.0.0.1:40002".to_string())], "the second, at its own");
        // A reply to the one connection leaves the other waiting.
        n.saw(&nat_from(8, "10.0.0.2:1", 0, false));
        n.saw(&nat_from(8, "10.0.0.2:2", 100, false));
        n.saw(&nat_from(8, "10.0.0.2:2", 200, true));
        assert_eq!(srcs(&n.expired(5000)), [Some("10.0.0.2:1".to_string())]);
    }

    #[test]
    fn only_connections_without_a_reply_expire_once() {
        let mut n = NoReply::new(1000);
        n.saw(&nat(1, 0, false));
        n.saw(&nat(2, 0, false));
        n.saw(&nat(2, 500, true));
        assert!(n.expired(999).is_empty());
        let out = n.expired(1000);
        assert_eq!(out.len(), 1);
        let Detail::Nat(d) = &out[0].detail else { panic!("kind") };
        assert_eq!((d.conn, d.state.as_str(), out[0].ts_unix_ns), (1, "no_reply", 1000));
        n.saw(&nat(3, 0, false));
        assert_eq!(n.expired(2500)[0].ts_unix_ns, 2500, "stamped when noticed");
        assert!(n.expired(5000).is_empty());
    }
}
