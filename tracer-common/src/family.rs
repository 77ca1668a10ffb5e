//! The probe families, by one id each: the registry every side shares. The loader plans,
//! attaches and decodes per family (`tracer/src/probes/`), the kernel programs write records of
//! the family's kinds, and `cargo xtask vm-test` runs each family's test binary.

use crate::event::kind;

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
        for kind in 1..=6u16 {
            let owners = FamilyId::ALL.iter().filter(|f| f.kinds().contains(&kind)).count();
            assert_eq!(owners, 1, "record kind {kind}");
        }
        assert_eq!(FamilyId::of_kind(kind::RESET), Some(FamilyId::Tcp));
        assert_eq!(FamilyId::of_kind(0), None);
    }
}
