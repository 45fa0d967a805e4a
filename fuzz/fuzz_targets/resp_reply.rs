//! Fuzz target: `keyd::fuzzing::resp_reply` (the harness, shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyd::fuzzing::resp_reply(data));
