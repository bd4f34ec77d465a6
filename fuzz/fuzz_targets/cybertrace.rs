//! Fuzz target: see `tracer::fuzzing::cybertrace`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::cybertrace(data));
