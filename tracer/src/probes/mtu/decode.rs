//! Raw [`MtuEvent`] bytes to a typed [`Event`]. tc programs cannot tell a device's name or
//! namespace; the table of attached devices fills them in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tracer_common::{
    flow::{FAMILY_IPV4, FAMILY_IPV6},
    mtu::{MtuEvent, event, hook},
};

use crate::{
    events::{Clock, Detail, Event, Flow, ifname},
    kernel::drop_reasons::DropReasons,
    probes::mtu::detail::{MtuDetail, MtuEventKind, MtuHook},
};

/// A device tc programs run on: its ifindex, where it lives, and its MTU at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TcDevice {
    pub ifindex: u32,
    pub name: String,
    pub netns: u32,
    /// Its MTU at start.
    pub mtu: u32,
}

pub(crate) struct Decoder {
    pub clock: Clock,
    pub reasons: Option<DropReasons>,
    pub tc_devices: Vec<TcDevice>,
}

const fn event_kind(event: u8) -> MtuEventKind {
    match event {
        event::FRAG_NEEDED_SENT => MtuEventKind::FragNeededSent,
        event::FRAG_NEEDED_RECEIVED => MtuEventKind::FragNeededReceived,
        event::FRAG_NEEDED_DROPPED => MtuEventKind::FragNeededDropped,
        event::TOO_BIG_DROP => MtuEventKind::TooBigDrop,
        event::OVERSIZE => MtuEventKind::Oversize,
        _ => MtuEventKind::Unknown,
    }
}

const fn mtu_hook(h: u8) -> MtuHook {
    match h {
        hook::ICMP_SEND => MtuHook::IcmpSend,
        hook::TC_INGRESS => MtuHook::TcIngress,
        hook::TC_EGRESS => MtuHook::TcEgress,
        hook::KFREE_SKB => MtuHook::KfreeSkb,
        _ => MtuHook::Unknown,
    }
}

fn addr(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    if bytes.iter().all(|b| *b == 0) {
        return None;
    }
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

impl Decoder {
    pub(crate) fn decode(&self, bytes: &[u8]) -> Option<Event> {
        if bytes.len() < size_of::<MtuEvent>() {
            return None;
        }
        // SAFETY: length checked; MtuEvent is plain integers.
        let raw: MtuEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        Some(self.decode_raw(&raw))
    }

    pub(crate) fn decode_raw(&self, raw: &MtuEvent) -> Event {
        let from_tc = matches!(raw.hook, hook::TC_INGRESS | hook::TC_EGRESS);
        // An ifindex is only unique within a namespace: name the device only when one attached
        // device has it.
        // When devices of several namespaces share it, the MTU bpf_check_mtu read may still
        // tell them apart.
        let unique = |pred: &dyn Fn(&TcDevice) -> bool| {
            let mut m = self.tc_devices.iter().filter(|d| d.ifindex == raw.ifindex && pred(d));
            match (m.next(), m.next()) {
                (Some(d), None) => Some(d),
                _ => None,
            }
        };
        let tc_device = if from_tc { unique(&|_| true).or_else(|| unique(&|d| d.mtu == raw.dev_mtu)) } else { None };
        let family = raw.flow.family;
        let dropped = matches!(raw.event, event::FRAG_NEEDED_DROPPED | event::TOO_BIG_DROP);
        Event {
            ts_unix_ns: self.clock.to_unix_ns(raw.header.ts_ns),
            flow: Flow::from_packet(&raw.flow, &raw.tunnel),
            netns: match tc_device {
                Some(d) => Some(d.netns),
                None => (raw.netns != 0).then_some(raw.netns),
            },
            ifindex: (raw.ifindex != 0).then_some(raw.ifindex),
            ifname: tc_device.map(|d| d.name.clone()).or_else(|| ifname(&raw.ifname)),
            src_pod: None,
            dst_pod: None,
            netns_pod: None,
            node: None,
            detail: Detail::Mtu(MtuDetail {
                event: event_kind(raw.event),
                mtu: (raw.mtu != 0).then_some(raw.mtu),
                len: raw.len,
                dev_mtu: (raw.dev_mtu != 0).then_some(raw.dev_mtu),
                icmp_src: addr(family, &raw.icmp_src),
                icmp_dst: addr(family, &raw.icmp_dst),
                reason: dropped.then(|| match &self.reasons {
                    Some(r) => r.name(raw.reason),
                    None => "NOT_SPECIFIED".to_string(),
                }),
                hook: mtu_hook(raw.hook),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::flow::{IPPROTO_TCP, RawFlow};

    use super::*;

    fn raw(ev: u8, h: u8) -> MtuEvent {
        let mut flow = RawFlow { family: FAMILY_IPV4, l4_proto: IPPROTO_TCP, sport: 40000, dport: 5201, ..RawFlow::default() };
        flow.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        flow.daddr[..4].copy_from_slice(&[10, 0, 1, 1]);
        let mut e = MtuEvent { flow, event: ev, hook: h, len: 1500, mtu: 1400, dev_mtu: 1500, ifindex: 7, reason: 12, ..MtuEvent::default() };
        e.icmp_src[..4].copy_from_slice(&[10, 0, 0, 254]);
        e.icmp_dst[..4].copy_from_slice(&[10, 0, 0, 1]);
        e
    }

    fn decoder(devices: Vec<TcDevice>) -> Decoder {
        let reasons = DropReasons::from_pairs([("SKB_DROP_REASON_NETFILTER_DROP".to_string(), 12)]);
        Decoder { clock: Clock::new(), reasons: Some(reasons), tc_devices: devices }
    }

    #[test]
    fn dropped_error_names_the_original_flow_the_icmp_and_the_reason() {
        let e = decoder(Vec::new()).decode_raw(&raw(event::FRAG_NEEDED_DROPPED, hook::KFREE_SKB));
        assert_eq!(e.flow.src_endpoint().as_deref(), Some("10.0.0.1:40000"));
        let Detail::Mtu(d) = e.detail else { panic!("kind") };
        assert_eq!((d.event.as_str(), d.mtu, d.len), ("frag_needed_dropped", Some(1400), 1500));
        assert_eq!(d.icmp_src, Some("10.0.0.254".parse().unwrap()));
        assert_eq!(d.reason.as_deref(), Some("NETFILTER_DROP"));
    }

    #[test]
    fn tc_events_take_the_device_from_the_attachments_unless_ambiguous() {
        let dev = |netns| TcDevice { ifindex: 7, name: format!("veth{netns}"), netns, mtu: 1500 };
        let e = decoder(vec![dev(1)]).decode_raw(&raw(event::FRAG_NEEDED_RECEIVED, hook::TC_INGRESS));
        assert_eq!((e.ifname.as_deref(), e.netns), (Some("veth1"), Some(1)));
        let Detail::Mtu(d) = e.detail else { panic!("kind") };
        assert_eq!(d.reason, None, "not a drop");
        let e = decoder(vec![dev(1), dev(2)]).decode_raw(&raw(event::OVERSIZE, hook::TC_EGRESS));
        assert_eq!((e.ifname, e.netns), (None, None));
        let mut small = dev(3);
        small.mtu = 1400;
        let mut r = raw(event::OVERSIZE, hook::TC_EGRESS);
        r.dev_mtu = 1400;
        let e = decoder(vec![dev(1), small]).decode_raw(&r);
        assert_eq!(e.ifname.as_deref(), Some("veth3"), "told apart by their MTU");
    }
}
