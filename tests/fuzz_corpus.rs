//! Every input in `fuzz/corpus/<target>/`, run through the same harness as the cargo fuzz
//! target of that name (`keyd::fuzzing`), on stable and without libFuzzer: what the fuzzer
//! once found stays covered by every `cargo test`. A harness panics when a parser breaks a
//! promise; this test reports which file did it.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    files
}

fn replay(target: &str, harness: fn(&[u8])) {
    let mut failed = Vec::new();
    for path in corpus(target) {
        let input = std::fs::read(&path).expect("a corpus file reads");
        if std::panic::catch_unwind(|| harness(&input)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target} failed on: {}",
        failed.join(", ")
    );
}

#[test]
fn policy_parse_corpus() {
    replay("policy_parse", keyd::fuzzing::policy_parse);
}

#[test]
fn resp_reply_corpus() {
    replay("resp_reply", keyd::fuzzing::resp_reply);
}

#[test]
fn api_request_corpus() {
    replay("api_request", keyd::fuzzing::api_request);
}

#[test]
fn envfile_round_trip_corpus() {
    replay("envfile_round_trip", keyd::fuzzing::envfile_round_trip);
}

#[test]
fn mysql_answer_corpus() {
    replay("mysql_answer", keyd::fuzzing::mysql_answer);
}

#[test]
fn amqp_login_corpus() {
    replay("amqp_login", keyd::fuzzing::amqp_login);
}

#[test]
fn rabbitmq_answer_corpus() {
    replay("rabbitmq_answer", keyd::fuzzing::rabbitmq_answer);
}
