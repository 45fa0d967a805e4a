//! A blocking client for the local API, for keyctl (and tests and benchmarks): one request per
//! call over the daemon's Unix socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Why a call failed before an HTTP answer arrived.
#[derive(Debug, thiserror::Error)]
#[error("keyd at {socket}: {message}")]
pub struct ClientError {
    /// The socket.
    pub socket: String,
    /// What failed.
    pub message: String,
}

/// Connects to a daemon if one answers on `socket`.
pub fn connect(socket: &Path) -> Option<UnixStream> {
    let stream = UnixStream::connect(socket).ok()?;
    // Rotations generating RSA keys can take seconds; a dead daemon should not hang keyctl.
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .ok()?;
    Some(stream)
}

/// Sends `method path` with an optional JSON body; returns the status and body.
pub fn call(
    stream: &mut UnixStream,
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
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: keyd\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body))
        .map_err(|e| fail(format!("cannot send: {e}")))?;
    let mut reader = BufReader::new(&*stream);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .map_err(|e| fail(format!("no answer: {e}")))?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| fail(format!("malformed status line {:?}", status_line.trim())))?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| fail(e.to_string()))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value
                .trim()
                .parse()
                .map_err(|_| fail("bad Content-Length".into()))?;
        }
    }
    let mut response = vec![0u8; length];
    reader
        .read_exact(&mut response)
        .map_err(|e| fail(format!("short body: {e}")))?;
    Ok((status, response))
}
