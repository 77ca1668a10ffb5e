//! Structs shared by tracer's kernel programs and its loader.
//!
//! Everything here is `#[repr(C)]`, has explicit padding and a compile-time size check, because
//! the kernel side writes these bytes and the user side reads them: the layout is the protocol.
//! This crate has no serde and knows nothing about Kubernetes or JSON (see ARCHITECTURE.md).
//!
//! One module per probe family; [`event`] holds the header every ring-buffer record starts with,
//! [`flow`] the parsed packet addresses, [`filter`] the kernel-side flow filter and [`offsets`] the
//! kernel struct offsets that the loader reads from BTF and hands to the programs.
#![no_std]

pub mod drop;
pub mod event;
pub mod family;
pub mod filter;
pub mod flow;
pub mod mtu;
pub mod nat;
pub mod offsets;
pub mod tcp;

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

#[cfg(feature = "user")]
user_pod!(
    event::EventHeader,
    flow::RawFlow,
    filter::Cidr,
    filter::FlowFilter,
    filter::PodAddrKey,
    offsets::KernelOffsets,
    drop::DropEvent,
    drop::DropConfig,
    drop::StormKey,
    tcp::TcpEvent,
    nat::NatEvent,
    nat::NatConfig,
    nat::NatSeen,
    nat::NatTuple,
    mtu::MtuEvent,
    mtu::MtuConfig,
    tcp::TcpConfig,
    tcp::FlowKey,
    tcp::FlowStats,
);
