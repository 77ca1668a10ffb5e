//! The tunnel facts of [`MachineFacts`]: kernel::tunnels read from a thread moved into the
//! namespace (a netlink socket answers for the namespace it was opened in). Apart from
//! facts.rs so the two grow without touching each other.

use std::net::IpAddr;

use super::facts::MachineFacts;
use crate::kernel::tunnels::{self, RouteTo, TunnelFacts};

impl MachineFacts<'_> {
    /// Tunnel devices, VXLAN FDB, tunnel neighbours and addresses of namespace `netns`; None
    /// when it cannot be entered or read (then the rules say less, never guess).
    pub(super) fn read_tunnels(&mut self, netns: u32) -> Option<TunnelFacts> {
        self.namespaces.run_in(netns, tunnels::read).ok()
    }

    /// `ip route get dst` in namespace `netns`.
    pub(super) fn read_route(&mut self, netns: u32, dst: IpAddr) -> Option<RouteTo> {
        self.namespaces.run_in(netns, move || tunnels::route_get(dst)).ok()
    }
}
