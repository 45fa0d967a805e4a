//! Fuzz target: `keyd::fuzzing::api_request` (the harness, shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyd::fuzzing::api_request(data));
