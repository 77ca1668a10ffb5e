//! `tracer::fuzzing::drop_record` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::drop_record(data));
