//! tracer's kernel programs live in the `tracer` binary target of this crate (src/main.rs), which
//! tracer/build.rs compiles for the BPF target with aya-build. This library target is empty: it
//! exists so that tracer can name this crate as a build dependency and be rebuilt when it changes.
#![no_std]

// The dependencies are the binary target's.
use aya_ebpf as _;
use tracer_common as _;
