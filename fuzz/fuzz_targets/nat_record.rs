//! `tracer::fuzzing::nat_record` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::nat_record(data));
