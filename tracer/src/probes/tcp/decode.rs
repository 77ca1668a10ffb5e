//! Raw [`TcpEvent`] bytes to a typed [`Event`].

use tracer_common::{
    event::kind,
    tcp::{SYNS_UNKNOWN, TcpEvent, direction},
};

use crate::{
    events::{Clock, Detail, Event, Flow},
    probes::tcp::detail::{ResetDirection, TcpDetail, tcp_state_name},
};

pub(crate) struct Decoder {
    pub clock: Clock,
}

impl Decoder {
    /// Decodes one record of kind RETRANSMIT, RESET or CONNECT_FAIL; None for other kinds or
    /// short records.
    pub(crate) fn decode(&self, record_kind: u16, bytes: &[u8]) -> Option<Event> {
        if bytes.len() < size_of::<TcpEvent>() {
            return None;
        }
        // SAFETY: length checked; TcpEvent is plain integers.
        let raw: TcpEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        self.decode_raw(record_kind, &raw)
    }

    pub(crate) fn decode_raw(&self, record_kind: u16, raw: &TcpEvent) -> Option<Event> {
        let detail = TcpDetail {
            state: tcp_state_name(raw.state),
            count: raw.count,
            direction: match raw.direction {
                direction::SENT => Some(ResetDirection::Sent),
                direction::RECEIVED => Some(ResetDirection::Received),
                _ => None,
            },
            duration_ms: (raw.duration_ns > 0).then(|| raw.duration_ns as f64 / 1e6),
            syns_sent: (record_kind == kind::CONNECT_FAIL && raw.count != SYNS_UNKNOWN).then_some(raw.count),
        };
        let detail = match record_kind {
            kind::RETRANSMIT => Detail::Retransmit(detail),
            kind::RESET => Detail::Reset(detail),
            kind::CONNECT_FAIL => Detail::ConnectFail(detail),
            _ => return None,
        };
        Some(Event {
            ts_unix_ns: self.clock.to_unix_ns(raw.header.ts_ns),
            flow: Flow::from_raw(&raw.flow),
            netns: (raw.netns != 0).then_some(raw.netns),
            ifindex: None,
            ifname: None,
            src_pod: None,
            dst_pod: None,
            netns_pod: None,
            node: None,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::{
        event::EventHeader,
        flow::{FAMILY_IPV4, IPPROTO_TCP, RawFlow},
    };

    use super::*;

    fn raw(state: u8) -> TcpEvent {
        let mut flow = RawFlow { family: FAMILY_IPV4, l4_proto: IPPROTO_TCP, sport: 40000, dport: 80, ..RawFlow::default() };
        flow.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        flow.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        TcpEvent { header: EventHeader::default(), flow, netns: 7, count: 3, state, ..TcpEvent::default() }
    }

    #[test]
    fn retransmit_in_syn_sent() {
        let d = Decoder { clock: Clock::new() };
        let e = d.decode_raw(kind::RETRANSMIT, &raw(2)).unwrap();
        assert_eq!(e.detail.kind(), "retransmit");
        assert_eq!(e.flow.src_endpoint().as_deref(), Some("10.0.0.1:40000"));
        let Detail::Retransmit(t) = e.detail else { panic!("kind") };
        assert_eq!((t.state, t.count), (Some("SYN_SENT"), 3));
    }

    #[test]
    fn reset_direction_and_connect_fail_duration() {
        let d = Decoder { clock: Clock::new() };
        let mut r = raw(1);
        r.direction = direction::RECEIVED;
        let Detail::Reset(t) = d.decode_raw(kind::RESET, &r).unwrap().detail else { panic!("kind") };
        assert_eq!(t.direction.map(ResetDirection::as_str), Some("received"));
        let mut c = raw(2);
        c.duration_ns = 3_000_000_000;
        let Detail::ConnectFail(t) = d.decode_raw(kind::CONNECT_FAIL, &c).unwrap().detail else { panic!("kind") };
        assert_eq!(t.duration_ms, Some(3000.0));
        assert!(d.decode_raw(kind::DROP, &c).is_none());
    }
}
