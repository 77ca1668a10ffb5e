//! `tracer::fuzzing::mtu_record` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::mtu_record(data));
