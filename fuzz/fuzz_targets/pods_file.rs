//! `tracer::fuzzing::pods_file` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::pods_file(data));
