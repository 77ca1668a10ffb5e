//! `tracer::fuzzing::tcp_record` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::tcp_record(data));
