//! `tracer::fuzzing::job_log` under libFuzzer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::job_log(data));
