//! Structs shared by tracer's kernel programs and its loader.
//!
//! Everything here is `#[repr(C)]`, has explicit padding and a compile-time size check, because
//! the kernel side writes these bytes and the user side reads them: the layout is the protocol.
//! This crate has no serde and knows nothing about Kubernetes or JSON (see ARCHITECTURE.md).
//!
//! One module per probe family; [`event`] holds the header every ring-buffer record starts with,
//! [`flow`] the parsed packet addresses, [`filter`] the kernel-side flow filter and [`offsets`] the
//! kernel struct offsets that the loader reads from BTF and hands to the programs. [`kfunc`] holds
//! the marker ids the programs call in place of kernel functions, which the loader rewrites.
#![no_std]

/// Implements `aya::Pod` for the loader side, so these structs can be copied into globals and maps.
#[cfg(feature = "user")]
macro_rules! user_pod {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: every type listed is #[repr(C)], made of integers and arrays of integers,
            // with explicit padding fields, so any bit pattern is valid and there are no holes.
            unsafe impl aya::Pod for $t {}
        )*
    };
}

pub mod drop;
pub mod event;
pub mod filter;
pub mod flow;
pub mod kfunc;
pub mod mtu;
pub mod nat;
pub mod offsets;
pub mod tcp;

/// The probe families, by one id each: the registry every side shares. The loader plans,
/// attaches and decodes per family (`tracer/src/probes/`), the kernel programs write records of
/// the family's kinds, and `cargo xtask vm-test` runs each family's test binary.
///
/// This module is the registry a new family is added to: its id, name, command and record kinds.
/// (It is written here, in lib.rs, next to the module list, so that a family is two files of
/// this crate: its own module and this one.)
pub mod family {
    /// Record kinds. The values are part of the kernel/user protocol.
    pub mod kind {
        /// [`crate::drop::DropEvent`]: skb:kfree_skb (kernel >= 5.10; reasons from 5.17).
        pub const DROP: u16 = 1;
        /// [`crate::tcp::TcpEvent`]: a retransmitted segment or SYN-ACK.
        pub const RETRANSMIT: u16 = 2;
        /// [`crate::tcp::TcpEvent`]: a reset sent or received.
        pub const RESET: u16 = 3;
        /// [`crate::tcp::TcpEvent`]: a connect that gave up (SYN_SENT -> CLOSE).
        pub const CONNECT_FAIL: u16 = 4;
        /// [`crate::nat::NatEvent`]: a NATed connection first seen or changed state.
        pub const NAT: u16 = 5;
        /// [`crate::mtu::MtuEvent`]: a frag-needed / packet-too-big or an oversize packet.
        pub const MTU: u16 = 6;
    }

    /// One probe family. Adding a variant makes every exhaustive `match` on it (names, kinds, the
    /// loader's registry and capability needs) fail to compile until the family is filled in.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum FamilyId {
        /// Packet drops with the kernel's reason (skb:kfree_skb).
        Drops,
        /// TCP retransmits, resets and failed connects.
        Tcp,
        /// Conntrack NAT rewrites and connections that got no reply.
        Nat,
        /// MTU failures: frag-needed / packet-too-big sent, received, dropped; oversize packets.
        Mtu,
    }

    impl FamilyId {
        /// Every family, in the order sessions plan them and summaries print.
        pub const ALL: [FamilyId; 4] = [FamilyId::Drops, FamilyId::Tcp, FamilyId::Nat, FamilyId::Mtu];

        /// The family's name in `watch`'s summaries, `check` and `diagnose`'s probe list.
        pub const fn name(self) -> &'static str {
            match self {
                FamilyId::Drops => "drops",
                FamilyId::Tcp => "tcp",
                FamilyId::Nat => "nat",
                FamilyId::Mtu => "mtu",
            }
        }

        /// The command that runs this family alone (and the name of its integration test binary).
        pub const fn command(self) -> &'static str {
            match self {
                FamilyId::Drops => "drops",
                FamilyId::Tcp => "retrans",
                FamilyId::Nat => "nat",
                FamilyId::Mtu => "mtu",
            }
        }

        /// The ring-buffer record kinds the family's programs write.
        pub const fn kinds(self) -> &'static [u16] {
            match self {
                FamilyId::Drops => &[kind::DROP],
                FamilyId::Tcp => &[kind::RETRANSMIT, kind::RESET, kind::CONNECT_FAIL],
                FamilyId::Nat => &[kind::NAT],
                FamilyId::Mtu => &[kind::MTU],
            }
        }

        /// The family whose programs write records of `kind`.
        pub fn of_kind(kind: u16) -> Option<FamilyId> {
            Self::ALL.into_iter().find(|f| f.kinds().contains(&kind))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn every_kind_belongs_to_exactly_one_family() {
            // A kind two families claim would send one's records to the other's decoder; a kind
            // past the counter map would count nothing.
            for kind in FamilyId::ALL.iter().flat_map(|f| f.kinds()) {
                let owners = FamilyId::ALL.iter().filter(|f| f.kinds().contains(kind)).count();
                assert_eq!(owners, 1, "record kind {kind}");
                assert!(*kind > 0 && u32::from(*kind) < crate::event::counter::MAP_ENTRIES / crate::event::counter::PER_KIND, "record kind {kind}");
            }
            assert_eq!(FamilyId::of_kind(kind::RESET), Some(FamilyId::Tcp));
            assert_eq!(FamilyId::of_kind(0), None);
        }
    }
}
