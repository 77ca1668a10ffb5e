//! `tracer::fuzzing::nftables` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::nftables(data));
