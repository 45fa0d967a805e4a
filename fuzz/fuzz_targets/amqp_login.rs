//! Fuzz target: `keyd::fuzzing::amqp_login` (the harness, shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyd::fuzzing::amqp_login(data));
