//! The engine's API version: read from its `/_ping` answer (the `Api-Version` header), and
//! checked against the oldest keyd speaks ([`MIN_API`]).

use super::{DockerError, MIN_API};

/// The API version the engine at unix socket `path` speaks, from the `Api-Version` header of
/// its `/_ping` answer (how the docker command negotiates, too).
pub(super) async fn ping_api_version(path: &str) -> Result<bollard::ClientVersion, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    // The answer is a few headers and "OK"; more than 64 KiB is not an engine.
    let mut answer = Vec::new();
    (&mut stream)
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    let headers = text.split("\r\n\r\n").next().unwrap_or_default();
    let version = headers
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("api-version"))
        .map(|(_, v)| v.trim())
        .ok_or_else(|| {
            format!(
                "its /_ping answer names no API version (status line: {:?})",
                headers.lines().next().unwrap_or_default()
            )
        })?;
    parse_api_version(version).ok_or_else(|| format!("unreadable API version {version:?}"))
}

/// `"1.41"` as a client version.
fn parse_api_version(v: &str) -> Option<bollard::ClientVersion> {
    let (major, minor) = v.split_once('.')?;
    Some(bollard::ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// Fails unless the engine speaks [`MIN_API`] or newer.
pub(super) fn check_api_version(version: bollard::ClientVersion) -> Result<(), DockerError> {
    let found = (version.major_version, version.minor_version);
    if found < MIN_API {
        return Err(DockerError::TooOld {
            found: format!("{}.{}", found.0, found.1),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{DockerError, Engine};
    use super::*;
    use std::time::Duration;

    /// Serves one canned `/_ping` answer on a fresh socket and returns what was negotiated.
    fn ping_answer(answer: &'static str) -> Result<bollard::ClientVersion, String> {
        let dir = crate::scratch::Scratch::new();
        let path = dir.path().join("engine.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 512];
            let n = conn.read(&mut request).unwrap();
            assert!(request[..n].starts_with(b"GET /_ping HTTP/1.1\r\n"));
            conn.write_all(answer.as_bytes()).unwrap();
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let found = runtime.block_on(ping_api_version(path.to_str().unwrap()));
        server.join().unwrap();
        found
    }

    #[test]
    fn the_api_version_comes_from_the_ping_header() {
        let v = ping_answer("HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK")
            .unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
    }

    #[test]
    fn a_ping_answer_without_a_version_is_refused() {
        let e = ping_answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").unwrap_err();
        assert!(e.contains("names no API version"), "{e}");
        assert!(e.contains("404"), "{e}");
    }

    /// A stand-in engine on a fresh socket answering `/_ping` with API version `api` and
    /// every other request with 404; returns the socket's path and, once `connections`
    /// connections were served, the request lines it saw.
    fn fake_engine(
        api: &'static str,
        connections: usize,
    ) -> (
        crate::scratch::Scratch,
        String,
        std::thread::JoinHandle<Vec<String>>,
    ) {
        let dir = crate::scratch::Scratch::new();
        let path = dir.path().join("engine.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let mut seen = Vec::new();
            for _ in 0..connections {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0, "the client closed before its request ended");
                    request.extend_from_slice(&buf[..n]);
                }
                let line = String::from_utf8_lossy(&request);
                let line = line.lines().next().unwrap_or_default().to_owned();
                let (status, body) = if line.starts_with("GET /_ping ") {
                    ("200 OK", "OK")
                } else {
                    ("404 Not Found", r#"{"message":"no such config"}"#)
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nApi-Version: {api}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(answer.as_bytes()).unwrap();
                seen.push(line);
            }
            seen
        });
        let host = format!("unix://{}", path.to_str().unwrap());
        (dir, host, server)
    }

    #[test]
    fn requests_name_no_api_version_and_the_first_is_checked_beside_a_ping() {
        let (_dir, host, server) = fake_engine("1.41", 3);
        let engine = Engine::connect_to(host, Duration::from_secs(5), false).unwrap();
        assert!(engine.config_named("a").unwrap().is_none());
        assert!(engine.config_named("b").unwrap().is_none());
        let mut seen = server.join().unwrap();
        seen.sort();
        // One ping, with the first call only; the engine answers in its own API version, so
        // a client version in the path (which an engine newer than it may refuse) is never
        // sent.
        assert_eq!(
            seen,
            [
                "GET /_ping HTTP/1.1",
                "GET /configs/a HTTP/1.1",
                "GET /configs/b HTTP/1.1"
            ]
        );
    }

    #[test]
    fn an_engine_older_than_the_api_keyd_needs_is_refused_at_the_first_call() {
        let (_dir, host, server) = fake_engine("1.40", 2);
        let engine = Engine::connect_to(host, Duration::from_secs(5), false).unwrap();
        let e = engine.config_named("a").unwrap_err();
        assert!(
            matches!(&e, DockerError::TooOld { found } if found == "1.40"),
            "{e}"
        );
        server.join().unwrap();
    }
}
