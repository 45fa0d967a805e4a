//! Fuzz target: `keyd::fuzzing::rabbitmq_answer` (the harness, shared with tests/fuzz_corpus.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyd::fuzzing::rabbitmq_answer(data));
