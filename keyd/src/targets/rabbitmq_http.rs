//! RabbitMQ's management API as keyd calls it: one HTTP/1.1 request per connection
//! (`Connection: close`) over a blocking socket whose reads and writes share one deadline,
//! TLS for `https://` (verified against the system's CA certificates, or the `ca=PATH` of the
//! URL), the admin's basic authentication, JSON bodies. The answer's body is read to its
//! `Content-Length`, through chunked encoding, or to the end of the connection, at most 4 MiB.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use zeroize::Zeroizing;

use super::socket::{self, Conn};
use super::tls::{self, TlsMode};
use crate::secret::SecretString;

/// The largest answer read.
pub(crate) const MAX_ANSWER: usize = 4 << 20;

/// What a management URL (`http://admin@rabbit:15672`, `https://admin@rabbit:15671/?ca=PATH`)
/// says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ManagementUrl {
    /// The admin user.
    pub user: String,
    /// The host.
    pub host: String,
    /// The port (15672, 15671 for https, unless given).
    pub port: u16,
    /// Whether it is `https://`.
    pub tls: bool,
    /// A path the API is under (`/rabbitmq` behind a proxy), without its final `/`.
    pub prefix: String,
    /// The CA certificate file of `?ca=PATH`.
    pub ca: Option<String>,
}

impl ManagementUrl {
    pub(crate) fn parse(url: &str) -> Result<ManagementUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("it does not start with http:// or https://".into());
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let Some((user, host_port)) = authority.rsplit_once('@') else {
            return Err("it names no admin user (expected http://USER@HOST:PORT)".into());
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse().map_err(|_| format!("bad port {port:?}"))?,
            ),
            _ => (host_port, if tls { 15671 } else { 15672 }),
        };
        if host.is_empty() || user.is_empty() {
            return Err("it names no host or no user (expected http://USER@HOST:PORT)".into());
        }
        let mut ca = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ca", v)) if tls => ca = Some(super::percent_decode(v)),
                _ => {
                    return Err(format!(
                        "unknown url parameter {pair:?} (expected ca=PATH, with https://)"
                    ));
                }
            }
        }
        let prefix = path.trim_end_matches('/');
        Ok(ManagementUrl {
            user: super::percent_decode(user),
            host: host.to_owned(),
            port,
            tls,
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("/{prefix}")
            },
            ca,
        })
    }
}

/// `text` as one path segment: every byte but letters, digits and `-._~` percent-encoded
/// (a vhost `/` is `%2F`).
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP answer: status and body.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A management API client.
pub(crate) struct Management {
    pub url: ManagementUrl,
    /// `Basic …` of the admin's user and password.
    authorization: Zeroizing<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Management {
    pub(crate) fn new(url: ManagementUrl, password: &SecretString) -> Result<Self, String> {
        let tls = if url.tls {
            let mode = if url.ca.is_some() {
                TlsMode::VerifyCa
            } else {
                TlsMode::VerifyFull
            };
            Some(tls::client_config(
                mode,
                url.ca.as_deref().map(std::path::Path::new),
            )?)
        } else {
            None
        };
        let pair = Zeroizing::new(format!("{}:{}", url.user, password.expose_secret()));
        let authorization = Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
        ));
        Ok(Management {
            url,
            authorization,
            tls,
        })
    }

    /// Sends `method path` (under the URL's prefix) with `body` (JSON) and reads the answer,
    /// all before `deadline`.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> std::io::Result<Answer> {
        let socket = socket::connect(&self.url.host, self.url.port, deadline)?;
        let mut conn = match &self.tls {
            Some(config) => socket::start_tls(socket, config.clone(), &self.url.host)?,
            None => Conn::Plain(socket),
        };
        let host = if self.url.host.contains(':') && !self.url.host.starts_with('[') {
            format!("[{}]:{}", self.url.host, self.url.port)
        } else {
            format!("{}:{}", self.url.host, self.url.port)
        };
        let mut request = Zeroizing::new(format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: {}\r\nUser-Agent: keyd/{}\r\nAccept: application/json\r\nConnection: close\r\n",
            self.url.prefix,
            self.authorization.as_str(),
            env!("CARGO_PKG_VERSION"),
        )
        .into_bytes());
        match body {
            Some(body) => {
                request.extend_from_slice(
                    format!(
                        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                request.extend_from_slice(body);
            }
            None => request.extend_from_slice(b"\r\n"),
        }
        conn.write_all(&request)?;
        conn.flush()?;
        read_answer(&mut conn)
    }
}

/// Reads an answer from `conn`: to the end of its body as its head delimits it, or to the end
/// of the connection, at most [`MAX_ANSWER`] bytes.
pub(crate) fn read_answer(conn: &mut impl Read) -> std::io::Result<Answer> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            // A TLS peer that closes without close_notify: the body is delimited anyway.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        if raw.len() > MAX_ANSWER {
            return Err(invalid("an answer larger than 4 MiB"));
        }
        if complete(&raw) {
            break;
        }
    }
    parse_answer(&raw)
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the management API sent {what}"),
    )
}

/// The largest head read.
const MAX_HEAD: usize = 64 << 10;

/// The end of the head (after its blank line), if read within its first 64 KiB.
fn head_end(raw: &[u8]) -> Option<usize> {
    raw[..raw.len().min(MAX_HEAD)]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// The value of header `name` in `head`.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether `raw` holds a whole answer (by `Content-Length` or a final chunk), so keyd need
/// not wait for the server to close.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = head_end(raw) else {
        return false;
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    if let Some(len) = header(&head, "content-length").and_then(|l| l.parse::<usize>().ok()) {
        // `end + len` could overflow for a length near usize::MAX; `end <= raw.len()`.
        return raw.len() - end >= len;
    }
    // A chunked body ends with its last chunk's blank line: decode only then, not per read.
    header(&head, "transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        && raw.ends_with(b"\r\n\r\n")
        && dechunk(&raw[end..]).is_some()
}

/// A chunked body decoded; `None` until its last chunk is read.
fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

fn parse_answer(raw: &[u8]) -> std::io::Result<Answer> {
    let end = head_end(raw).ok_or_else(|| invalid("no complete HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| head.starts_with("HTTP/1."))
        .ok_or_else(|| invalid("no HTTP status line"))?;
    let rest = &raw[end..];
    let body = if let Some(len) =
        header(&head, "content-length").and_then(|l| l.parse::<usize>().ok())
    {
        rest.get(..len)
            .ok_or_else(|| invalid("a body shorter than its Content-Length"))?
            .to_vec()
    } else if header(&head, "transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest).ok_or_else(|| invalid("a chunked body cut short"))?
    } else {
        rest.to_vec()
    };
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_urls() {
        assert_eq!(
            ManagementUrl::parse("http://admin@rabbit:15672").unwrap(),
            ManagementUrl {
                user: "admin".into(),
                host: "rabbit".into(),
                port: 15672,
                tls: false,
                prefix: String::new(),
                ca: None,
            }
        );
        let u = ManagementUrl::parse("https://ad%40min@rabbit/mq/?ca=/etc/ca.pem").unwrap();
        assert_eq!(
            (
                u.user.as_str(),
                u.port,
                u.tls,
                u.prefix.as_str(),
                u.ca.as_deref()
            ),
            ("ad@min", 15671, true, "/mq", Some("/etc/ca.pem"))
        );
        assert!(ManagementUrl::parse("http://rabbit:15672").is_err());
        assert!(ManagementUrl::parse("http://a@rabbit/?ca=/x").is_err());
        assert!(ManagementUrl::parse("amqp://a@rabbit").is_err());
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("celery_b"), "celery_b");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn answers_by_length_chunks_or_close() {
        let by_length = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert!(complete(by_length));
        assert_eq!(parse_answer(by_length).unwrap().body, b"{}");
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert!(complete(chunked));
        let answer = parse_answer(chunked).unwrap();
        assert_eq!(
            (answer.status, answer.body.as_slice()),
            (404, &b"abcde"[..])
        );
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab"
        ));
        let to_close = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_answer(to_close).unwrap().status, 204);
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
    }

    #[test]
    fn a_content_length_near_usize_max_is_an_error_not_an_overflow() {
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{{}}",
            usize::MAX
        );
        assert!(!complete(answer.as_bytes()));
        assert_eq!(
            parse_answer(answer.as_bytes()).err().unwrap().to_string(),
            "the management API sent a body shorter than its Content-Length"
        );
    }
}
