//! Raw [`DropEvent`] bytes to a typed [`Event`].

use tracer_common::drop::{CT_PRESENT, DropEvent};

use super::CtLayout;
use crate::{
    events::{Clock, Detail, Event, Flow, ifname},
    kernel::{drop_reasons::DropReasons, kallsyms::LazyKallsyms},
    probes::drops::detail::{DropDetail, PacketCt},
};

/// What decoding needs from the kernel layer, loaded once.
pub(crate) struct Decoder {
    pub reasons: Option<DropReasons>,
    pub kallsyms: LazyKallsyms,
    pub clock: Clock,
    /// None: the program did not read conntrack entries.
    pub ct: Option<CtLayout>,
}

impl Decoder {
    /// Decodes one record; None when the bytes are too short to be a [`DropEvent`].
    pub(crate) fn decode(&self, bytes: &[u8]) -> Option<Event> {
        if bytes.len() < size_of::<DropEvent>() {
            return None;
        }
        // SAFETY: length checked; DropEvent is plain integers (any bit pattern is valid), and
        // read_unaligned does not need the ring buffer's alignment.
        let raw: DropEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(self.decode_raw(&raw))
    }

    pub(crate) fn decode_raw(&self, raw: &DropEvent) -> Event {
        let reason = match &self.reasons {
            Some(r) => r.name(raw.reason),
            None => "NOT_SPECIFIED".to_string(),
        };
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
            detail: Detail::Drop(DropDetail {
                reason,
                reason_code: raw.reason,
                location: self.kallsyms.symbolize(raw.location),
                len: raw.len,
                packet_ct: self.packet_ct(raw),
                conntrack: None,
            }),
        }
    }

    fn packet_ct(&self, raw: &DropEvent) -> PacketCt {
        let Some(layout) = self.ct else { return PacketCt::Unread };
        // The program reads the entry of netfilter drops only (of every drop without reasons).
        let netfilter = self.reasons.as_ref().and_then(|r| r.value("NETFILTER_DROP"));
        if netfilter.is_some_and(|v| v != raw.reason) {
            return PacketCt::Unread;
        }
        if raw.ct & CT_PRESENT == 0 {
            PacketCt::Absent
        } else if raw.ct & layout.confirmed != 0 {
            PacketCt::Confirmed
        } else {
            PacketCt::Unconfirmed
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::flow::{FAMILY_IPV4, IPPROTO_UDP, RawFlow};

    use super::*;
    use crate::kernel::kallsyms::Kallsyms;

    fn decoder() -> Decoder {
        Decoder {
            reasons: Some(DropReasons::from_pairs([("SKB_DROP_REASON_NETFILTER_DROP".to_string(), 12)])),
            kallsyms: Kallsyms::parse("ffffffff81a00000 t nf_hook_slow\n").into(),
            clock: Clock::new(),
            ct: Some(CtLayout { confirmed: 1 << 3 }),
        }
    }

    fn sample() -> DropEvent {
        let mut flow = RawFlow { family: FAMILY_IPV4, l4_proto: IPPROTO_UDP, sport: 4000, dport: 5353, ..RawFlow::default() };
        flow.saddr[..4].copy_from_slice(&[10, 1, 0, 1]);
        flow.daddr[..4].copy_from_slice(&[10, 1, 0, 2]);
        let mut ifname = [0u8; 16];
        ifname[..4].copy_from_slice(b"veth");
        DropEvent { location: 0xffffffff81a0009c, reason: 12, len: 42, netns: 4026532000, ifindex: 7, ifname, flow, ..DropEvent::default() }
    }

    #[test]
    fn decodes_all_fields() {
        let raw = sample();
        // SAFETY: DropEvent is plain data; viewing it as bytes is what the ring buffer does.
        let bytes = unsafe { std::slice::from_raw_parts((&raw as *const DropEvent).cast::<u8>(), size_of::<DropEvent>()) };
        let e = decoder().decode(bytes).expect("decodes");
        let Detail::Drop(d) = &e.detail else { panic!("a drop decodes to a drop detail") };
        assert_eq!(d.reason, "NETFILTER_DROP");
        assert_eq!(d.location, "nf_hook_slow+0x9c");
        assert_eq!(d.len, 42);
        assert_eq!(e.flow.src_endpoint().as_deref(), Some("10.1.0.1:4000"));
        assert_eq!(e.ifname.as_deref(), Some("veth"));
        assert_eq!(e.netns, Some(4026532000));
    }

    #[test]
    fn the_packet_conntrack_entry_is_read_for_netfilter_drops_only() {
        let d = decoder();
        let ct_of = |reason: u32, ct: u32| {
            let Detail::Drop(drop) = d.decode_raw(&DropEvent { reason, ct, ..sample() }).detail else { unreachable!() };
            drop.packet_ct
        };
        assert_eq!(ct_of(12, 0), PacketCt::Absent);
        assert_eq!(ct_of(12, CT_PRESENT | 1 << 3), PacketCt::Confirmed);
        assert_eq!(ct_of(12, CT_PRESENT | 1 << 1), PacketCt::Unconfirmed);
        assert_eq!(ct_of(3, 0), PacketCt::Unread, "not a netfilter drop: the program did not look");
        let no_layout = Decoder { ct: None, ..decoder() };
        let Detail::Drop(drop) = no_layout.decode_raw(&sample()).detail else { unreachable!() };
        assert_eq!(drop.packet_ct, PacketCt::Unread);
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(decoder().decode(&[0u8; 10]).is_none());
    }

    #[test]
    fn missing_device_and_netns_are_none() {
        let mut raw = sample();
        raw.ifname = [0; 16];
        raw.ifindex = 0;
        raw.netns = 0;
        let e = decoder().decode_raw(&raw);
        assert_eq!((e.ifname, e.ifindex, e.netns), (None, None, None));
    }
}
