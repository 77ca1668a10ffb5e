//! `tracer::fuzzing::tracefs_format` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::tracefs_format(data));
