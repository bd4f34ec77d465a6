//! Fuzz target: see `tracer::fuzzing::index`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::index(data));
