//! Fuzz target: see `tracer::fuzzing::feed`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracer::fuzzing::feed(data));
