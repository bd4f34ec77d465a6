//! Fuzz target: see `tracer::fuzzing::url`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::url(data));
