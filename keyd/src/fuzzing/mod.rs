//! Harnesses for the fuzz targets in `fuzz/` and for the workspace test that replays their
//! corpora (`tests/fuzz_corpus.rs`): each function takes arbitrary bytes, feeds them to one
//! parser that reads untrusted input, and panics only when that parser breaks a promise. The
//! fuzz targets are one-line wrappers, so `cargo fuzz` and a plain `cargo test` run the same
//! code. This module exists for fuzzing and tests; nothing else in keyd calls it.

pub mod dotenv;

use std::future::Future;
use std::path::Path;

use crate::daemon::http::{MAX_BODY, Peer, Request, Response, Routes, serve_bytes};
use crate::policy::{EnvFileSpec, Policy};
use crate::sinks::EnvFileSink;
use crate::targets::amqp::{self, LoginOutcome};
use crate::targets::mysql_wire::{self, MAX_COLUMNS, MAX_ROWS};
use crate::targets::rabbitmq;
use crate::targets::rabbitmq_http::MAX_ANSWER;
use crate::targets::resp::{MAX_ARRAY, MAX_BULK, MAX_DEPTH, MAX_REPLY_BYTES, Reply, read_reply};

/// The policy parser on `data` as text (bytes that are not UTF-8 are skipped: policies are
/// read as UTF-8 before parsing). Any text gives a policy or an error, never a panic; the
/// error's message is formatted too.
pub fn policy_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse(Path::new("policies/fuzz.toml"), text.to_owned()) {
        Ok(policy) => drop(policy.outputs()),
        Err(e) => drop(e.to_string()),
    }
}

/// The Redis client's reply parser on `data` as a server's bytes, within the client's reply
/// budget. Any bytes give a reply inside the parser's limits or an error, never a panic.
pub fn resp_reply(data: &[u8]) {
    use std::io::Read;
    let mut budget = data.take(MAX_REPLY_BYTES);
    if let Ok(reply) = read_reply(&mut budget) {
        check_reply(&reply, 0);
    }
}

fn check_reply(reply: &Reply, depth: usize) {
    assert!(depth <= MAX_DEPTH, "a reply nested {depth} deep");
    match reply {
        Reply::Bulk(Some(bytes)) => assert!(bytes.len() <= MAX_BULK),
        Reply::Array(Some(items)) => {
            assert!(items.len() <= MAX_ARRAY);
            for item in items {
                check_reply(item, depth + 1);
            }
        }
        _ => {}
    }
}

/// The MySQL client's parsers on `data` as a server's greeting packet and then its answer to
/// a query. Any bytes give rows within the client's limits or an error, never a panic.
pub fn mysql_answer(data: &[u8]) {
    if let Ok(rows) = mysql_wire::parse_server_bytes(data) {
        assert!(rows.len() <= MAX_ROWS);
        for row in &rows {
            assert!(!row.is_empty() && row.len() <= MAX_COLUMNS);
        }
    }
}

/// The AMQP 0-9-1 client's login on `data` as everything the server sent. Any bytes give an
/// outcome or an error, never a panic; a refusal's reason is the reply code and at most a
/// short string's 255 bytes (each at most 3 bytes once lossily decoded).
pub fn amqp_login(data: &[u8]) {
    if let Ok(LoginOutcome::Refused(reason)) = amqp::login_over_bytes(data) {
        assert!(
            reason.len() <= 6 + 255 * 3,
            "a reason of {} bytes",
            reason.len()
        );
    }
}

/// The RabbitMQ management API reader on `data[1..]` as the server's answer, arriving in reads
/// of a size `data[0]` picks, then its body read as an error's reason, a user's tags and
/// permissions. Any bytes give an answer within the reader's limit or an error, never a panic;
/// permissions are always the three patterns.
pub fn rabbitmq_answer(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let chunk = (usize::from(first) + 1) * 32;
    if let Ok(answer) = rabbitmq::read_answer_bytes(rest, chunk) {
        assert!(answer.body_len <= MAX_ANSWER && answer.body_len <= rest.len());
        assert!(answer.reason.len() <= answer.body_len);
        if let Some((_tags, patterns)) = answer.user {
            let patterns = patterns.as_object().expect("an object");
            assert_eq!(patterns.len(), 3);
        }
    }
}

thread_local! {
    /// The API server is asynchronous: driven on one current-thread runtime per thread, built
    /// once, since the fuzzer calls the harness millions of times.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime without drivers builds");
}

/// Routes that check what the server hands a router: a path starting with `/`, without its
/// query, and a body within the limit.
struct CheckedRoutes;

impl Routes for CheckedRoutes {
    fn answer(&self, request: Request, _peer: Peer) -> impl Future<Output = Response> + Send {
        assert!(request.path.starts_with('/') && !request.path.contains('?'));
        assert!(request.body.len() <= MAX_BODY);
        std::future::ready(Response::bytes(200, b"{}".to_vec()))
    }

    fn is_cheap(&self, _method: &str, _path: &str) -> bool {
        true
    }
}

/// The daemon's HTTP server (hyper with keyd's limits) on `data` as what a client sent on one
/// connection. Any bytes give requests the routes accept (path starting with `/`, no query,
/// body within the limit) and answers with a valid status, or the end of the connection,
/// never a panic.
pub fn api_request(data: &[u8]) {
    let statuses = RUNTIME
        .with(|runtime| runtime.block_on(serve_bytes(data, std::sync::Arc::new(CheckedRoutes))));
    for status in statuses {
        assert!((200..600).contains(&status));
    }
}

/// The envfile sink's quoting on `data` as `NAME=value` (or a value alone, under the name
/// `VALUE`, when there is no `=`). The sink writes the line only when the name is a variable
/// name and every character of the value is one it [`EnvFileSpec::carries`]; a line it writes
/// reads back, with python-dotenv's rules ([`dotenv::parse`]), as exactly that name and value,
/// between the lines around it.
pub fn envfile_round_trip(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, value) = text.split_once('=').unwrap_or(("VALUE", text));
    let writable = EnvFileSpec::is_variable_name(name) && value.chars().all(EnvFileSpec::carries);
    match EnvFileSink::render_line(name, value) {
        Ok(line) => {
            assert!(writable, "{name}={value:?} written as {:?}", &*line);
            assert_eq!(
                read_back(&line),
                Ok(Some(value.to_owned())),
                "{:?} read back differently",
                &*line
            );
        }
        Err(reason) => assert!(!writable, "{name}={value:?} refused: {reason}"),
    }
}

/// The value python-dotenv reads for the variable `line` sets (`None` when the file it sits in
/// does not read back as that variable between its neighbours), or why the file does not
/// parse. Its neighbours are chosen to show what a quoting mistake does: a quoted line after it
/// (a value ending in a backslash would run into it) and a variable before it that `${…}`
/// could name.
pub fn read_back(line: &str) -> Result<Option<String>, String> {
    let file = format!("# Written by keyd\nBEFORE=before\n{line}NEXT='after it'\n");
    let mut bindings = dotenv::parse(&file)?;
    let next = bindings.pop();
    let this = bindings.pop();
    let name = line.split_once('=').map(|(name, _)| name);
    let expected_around = bindings == [("BEFORE".to_owned(), Some("before".to_owned()))]
        && next == Some(("NEXT".to_owned(), Some("after it".to_owned())));
    Ok(match this {
        Some((n, value)) if expected_around && Some(n.as_str()) == name => value,
        _ => None,
    })
}
