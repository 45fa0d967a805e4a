//! A minimal HTTP/1.1 for the local API: one request at a time per connection, keep-alive,
//! `Content-Length` bodies only, bounded sizes. Enough for keyctl, curl and Docker's plugin
//! client over a Unix socket, and small enough to read in one sitting.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted.
pub const MAX_BODY: usize = 64 * 1024;

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The body.
    pub body: Vec<u8>,
    /// Whether the client asked to close after this request.
    pub close: bool,
}

/// A response: status and a JSON body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
}

impl Response {
    /// 200 with a JSON value.
    pub fn json(value: &impl serde::Serialize) -> Self {
        Self {
            status: 200,
            body: serde_json::to_vec(value).expect("API values serialise"),
        }
    }

    /// An error with a message (`{"error": "..."}`); messages never carry values.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            body: serde_json::to_vec(&crate::wire::ErrorAnswer {
                error: message.into(),
            })
            .expect("serialises"),
        }
    }
}

/// Why reading a request stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection between requests.
    Closed,
    /// The request is malformed or too large; answer with this and close.
    Bad(Response),
}

/// Reads one request.
pub async fn read_request<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
) -> Result<Request, ReadError> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader
            .read_until(b'\n', &mut head)
            .await
            .map_err(|_| ReadError::Closed)?;
        if n == 0 {
            return Err(if head.is_empty() {
                ReadError::Closed
            } else {
                ReadError::Bad(Response::error(
                    400,
                    "the request ended before its headers did",
                ))
            });
        }
        if head.len() > MAX_HEAD {
            return Err(ReadError::Bad(Response::error(
                431,
                "request headers too large",
            )));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = std::str::from_utf8(&head)
        .map_err(|_| ReadError::Bad(Response::error(400, "request head is not UTF-8")))?;
    let mut lines = text.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(Response::error(
            400,
            "malformed request line (expected METHOD PATH HTTP/1.1)",
        )));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(ReadError::Bad(Response::error(
            400,
            "malformed request line (expected METHOD PATH HTTP/1.1)",
        )));
    }
    let mut length = 0usize;
    let mut close = version == "HTTP/1.0";
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(Response::error(
                400,
                "malformed header line",
            )));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value
                    .parse()
                    .map_err(|_| ReadError::Bad(Response::error(400, "bad Content-Length")))?;
            }
            "transfer-encoding" => {
                return Err(ReadError::Bad(Response::error(
                    501,
                    "chunked bodies are not supported; send Content-Length",
                )));
            }
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    if length > MAX_BODY {
        return Err(ReadError::Bad(Response::error(
            413,
            format!("body larger than {MAX_BODY} bytes"),
        )));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.map_err(|_| {
        ReadError::Bad(Response::error(
            400,
            "the body is shorter than Content-Length",
        ))
    })?;
    Ok(Request {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or(target).to_owned(),
        body,
        close,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// Writes a response.
pub async fn write_response<W: AsyncWrite + Unpin>(
    writer: &mut W,
    response: &Response,
    close: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        response.status,
        reason(response.status),
        response.body.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    writer.write_all(head.as_bytes()).await?;
    writer.write_all(&response.body).await?;
    writer.flush().await
}
