//! Fuzz target: `keyd::fuzzing::policy_parse` (the harness, shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyd::fuzzing::policy_parse(data));
