//! Raw [`NatEvent`] bytes to a typed [`Event`].

use std::net::SocketAddr;

use tracer_common::{
    flow::{FAMILY_IPV4, FAMILY_IPV6, RawFlow},
    nat::{NatEvent, NatTuple},
};

use super::StatusBits;
use crate::{
    events::{Clock, Detail, Event, Flow, ifname},
    probes::nat::detail::{NatDetail, NatKind, NatState},
};

const AF_INET: u16 = 2;

pub(crate) struct Decoder {
    pub clock: Clock,
    pub bits: StatusBits,
}

/// A conntrack tuple as a flow (ports from network order).
fn tuple_flow(t: &NatTuple) -> Flow {
    let raw = RawFlow {
        saddr: t.src,
        daddr: t.dst,
        sport: u16::from_be(t.sport_be),
        dport: u16::from_be(t.dport_be),
        family: if t.l3num == AF_INET { FAMILY_IPV4 } else { FAMILY_IPV6 },
        l4_proto: t.protonum,
        ..RawFlow::default()
    };
    Flow::from_raw(&raw)
}

impl Decoder {
    pub(crate) fn decode(&self, bytes: &[u8]) -> Option<Event> {
        if bytes.len() < size_of::<NatEvent>() {
            return None;
        }
        // SAFETY: length checked; NatEvent is plain integers.
        let raw: NatEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(self.decode_raw(&raw))
    }

    pub(crate) fn decode_raw(&self, raw: &NatEvent) -> Event {
        let (orig, reply) = (tuple_flow(&raw.orig), tuple_flow(&raw.reply));
        let (snat, dnat) = (raw.status & self.bits.src_nat != 0, raw.status & self.bits.dst_nat != 0);
        let reply_seen = raw.status & self.bits.seen_reply != 0;
        let assured = raw.status & self.bits.assured != 0;
        Event {
            ts_unix_ns: self.clock.to_unix_ns(raw.header.ts_ns),
            flow: Flow::from_packet(&raw.flow, &raw.tunnel),
            netns: (raw.netns != 0).then_some(raw.netns),
            ifindex: (raw.ifindex != 0).then_some(raw.ifindex),
            ifname: ifname(&raw.ifname),
            src_pod: None,
            dst_pod: None,
            netns_pod: None,
            node: None,
            detail: Detail::Nat(NatDetail {
                nat: match (snat, dnat) {
                    (true, true) => NatKind::Both,
                    (false, true) => NatKind::Dnat,
                    _ => NatKind::Snat,
                },
                // The reply comes from where the connection really went: for DNAT, the backend.
                backend: dnat.then(|| reply.src_endpoint()).flatten(),
                backend_ip: if dnat { reply.src } else { None },
                backend_pod: None,
                service: None,
                orig_src: orig.src_endpoint(),
                orig_dst: orig.dst_endpoint(),
                orig_dst_addr: orig.dst.zip(orig.dport).map(SocketAddr::from),
                reply_src: reply.src_endpoint(),
                reply_dst: reply.dst_endpoint(),
                reply_seen,
                assured,
                state: if assured {
                    NatState::Assured
                } else if reply_seen {
                    NatState::Reply
                } else {
                    NatState::New
                },
                conn: raw.ct,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> NatTuple {
        let mut t = NatTuple { sport_be: sport.to_be(), dport_be: dport.to_be(), l3num: AF_INET, protonum: 6, ..NatTuple::default() };
        t.src[..4].copy_from_slice(&src);
        t.dst[..4].copy_from_slice(&dst);
        t
    }

    #[test]
    fn dnat_names_the_backend_from_the_reply_tuple() {
        let bits = StatusBits { src_nat: 1 << 4, dst_nat: 1 << 5, seen_reply: 1 << 1, assured: 1 << 2 };
        let d = Decoder { clock: Clock::new(), bits };
        let raw = NatEvent {
            orig: tuple([10, 0, 0, 1], 40000, [10, 96, 0, 10], 80),
            reply: tuple([10, 0, 1, 5], 8080, [10, 0, 0, 1], 40000),
            status: (1 << 5) | (1 << 1),
            ..NatEvent::default()
        };
        let Detail::Nat(n) = d.decode_raw(&raw).detail else { panic!("kind") };
        assert_eq!(n.nat.as_str(), "dnat");
        assert_eq!(n.orig_dst.as_deref(), Some("10.96.0.10:80"));
        assert_eq!(n.orig_dst_addr, Some(SocketAddr::from(([10, 96, 0, 10], 80))));
        assert_eq!(n.backend.as_deref(), Some("10.0.1.5:8080"));
        assert!(n.reply_seen && !n.assured);
        assert_eq!(n.state.as_str(), "reply");
    }
}
