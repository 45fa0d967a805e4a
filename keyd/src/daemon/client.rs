//! keyctl's client for the local API (also used by tests and benchmarks): hyper's HTTP/1.1
//! client over the daemon's Unix socket, driven by a small current-thread runtime of its own,
//! so callers stay blocking. Reads `Content-Length` and chunked answers alike; every call is
//! bounded by [`CALL_TIMEOUT`].

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Longest wait for one answer: rotations generating RSA keys can take seconds, but a dead or
/// stuck daemon must not hang keyctl.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read (a status or list of thousands of secrets fits many times over).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// Why a call failed before an HTTP answer arrived.
#[derive(Debug, thiserror::Error)]
#[error("keyd at {socket}: {message}")]
pub struct ClientError {
    /// The socket.
    pub socket: String,
    /// What failed.
    pub message: String,
}

/// A connection to a daemon: its runtime and hyper's request sender (kept alive across calls).
pub struct Connection {
    runtime: tokio::runtime::Runtime,
    sender: SendRequest<Full<Bytes>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

/// Connects to a daemon if one answers on `socket`.
pub fn connect(socket: &Path) -> Option<Connection> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let sender = runtime.block_on(async {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(socket))
            .await
            .ok()?
            .ok()?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        // Driven whenever the runtime runs, that is during each call's block_on.
        tokio::spawn(connection);
        Some(sender)
    })?;
    Some(Connection { runtime, sender })
}

/// Sends `method path` with an optional JSON body; returns the status and body.
pub fn call(
    connection: &mut Connection,
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<(u16, Vec<u8>), ClientError> {
    let fail = |message: String| ClientError {
        socket: socket.display().to_string(),
        message,
    };
    let body = body
        .map(|b| serde_json::to_vec(b).expect("serialises"))
        .unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "keyd")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| fail(format!("cannot build the request: {e}")))?;
    let Connection { runtime, sender } = connection;
    runtime.block_on(async {
        let exchange = async {
            sender
                .ready()
                .await
                .map_err(|e| fail(format!("cannot send: {e}")))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| fail(format!("no answer: {e}")))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| fail(format!("cannot read the answer: {e}")))?;
            Ok((status, body.to_bytes().to_vec()))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| fail(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))?
    })
}
