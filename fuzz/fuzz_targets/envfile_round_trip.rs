//! Fuzz target: `keyd::fuzzing::envfile_round_trip` (the harness, shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyd::fuzzing::envfile_round_trip(data));
