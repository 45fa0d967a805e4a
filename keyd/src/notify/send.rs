//! One delivery of one event to one receiver: the body signed with the key of `secret_file`
//! (`X-Keyd-Signature: sha256=<hex HMAC-SHA256 of the body>`), POSTed over HTTP/1.1 with
//! hyper, over TLS (rustls, verified against the system's CA certificates, as targets are) for
//! `https://`, all within one timeout. A 2xx answer is a delivery; anything else, or no answer,
//! is a failure the caller retries. Redirects are not followed.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::OutboxEntry;
use crate::policy::Webhook;
use crate::regular_file::{Owner, open_regular, read_at_most};
use crate::secret::SecretBytes;

/// How long one delivery may take, from resolving the host to the answer's status line.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-keyd-signature";

/// The largest key file read.
const MAX_KEY: u64 = 4096;

/// A body ready to send and its signature header's value.
pub struct Signed {
    /// The JSON body.
    pub body: Vec<u8>,
    /// `sha256=<hex>`.
    pub signature: String,
}

/// Reads the HMAC key from `path`: the file's bytes without a final newline (`\n` or `\r\n`),
/// so a key written with `echo` signs as the text it holds. The file must be a regular file
/// of keyd's user or root, and not empty. Blocks.
pub fn read_key(path: &Path) -> Result<SecretBytes, String> {
    let at = |e: std::io::Error| format!("secret_file {}: {e}", path.display());
    let (file, _) = open_regular(path, Owner::KeydOrRoot).map_err(at)?;
    let mut bytes = read_at_most(file, MAX_KEY).map_err(at)?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!(
            "secret_file {} is empty (expected the HMAC key)",
            path.display()
        ));
    }
    Ok(SecretBytes::from_zeroizing(bytes))
}

/// `sha256=<hex HMAC-SHA256 of body under key>`.
pub fn signature(key: &SecretBytes, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.expose_secret());
    let tag = aws_lc_rs::hmac::sign(&key, body);
    format!("sha256={}", crate::secret::hex(tag.as_ref()))
}

/// The body of `entry` and its signature, with the key read now (a replaced key file signs
/// the next delivery). Blocks.
pub fn sign(entry: &OutboxEntry) -> Result<Signed, String> {
    let key = read_key(&entry.secret_file)?;
    let body = entry.event.body();
    let signature = signature(&key, &body);
    Ok(Signed { body, signature })
}

/// POSTs `signed` to `webhook` within `timeout`; `Ok` when it answered 2xx. Errors name the
/// receiver by its origin only (its path may be a credential).
pub async fn post(webhook: &Webhook, signed: Signed, timeout: Duration) -> Result<(), String> {
    let origin = webhook.origin();
    match tokio::time::timeout(timeout, exchange(webhook, signed)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("{origin} answered HTTP {status}")),
        Ok(Err(e)) => Err(format!("{origin}: {e}")),
        Err(_) => Err(format!(
            "{origin}: no answer within {} s",
            timeout.as_secs()
        )),
    }
}

async fn exchange(webhook: &Webhook, signed: Signed) -> Result<u16, String> {
    let addrs = tokio::net::lookup_host((webhook.bare_host(), webhook.port))
        .await
        .map_err(|e| format!("cannot resolve the host: {e}"))?;
    let mut last = String::from("the host resolves to no address");
    let mut tcp = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    let tcp = tcp.ok_or(last)?;
    if webhook.tls {
        let name = rustls::pki_types::ServerName::try_from(webhook.bare_host().to_owned())
            .map_err(|e| format!("not a TLS server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(tls_config()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        request(TokioIo::new(tls), webhook, signed).await
    } else {
        request(TokioIo::new(tcp), webhook, signed).await
    }
}

/// The TLS client configuration: verified against the system's CA certificates (read once).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            crate::targets::tls::client_config(crate::targets::tls::TlsMode::VerifyFull, None)
        })
        .clone()
}

async fn request<I>(io: I, webhook: &Webhook, signed: Signed) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(connection);
    let default_port = if webhook.tls { 443 } else { 80 };
    let host = if webhook.port == default_port {
        webhook.host.clone()
    } else {
        format!("{}:{}", webhook.host, webhook.port)
    };
    let request = hyper::Request::post(webhook.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("keyd/", env!("CARGO_PKG_VERSION")),
        )
        .header(SIGNATURE_HEADER, signed.signature)
        .body(Full::new(Bytes::from(signed.body)))
        .map_err(|e| format!("HTTP: {e}"))?;
    let answer = sender.send_request(request).await;
    driver.abort();
    answer
        .map(|response| response.status().as_u16())
        .map_err(|e| format!("HTTP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        let key = SecretBytes::from_zeroizing(zeroize::Zeroizing::new(b"Jefe".to_vec()));
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_key_file_loses_one_final_newline_and_must_not_be_empty() {
        let dir = Scratch::new();
        let path = dir.path().join("k");
        for (text, key) in [
            ("abc\n", "abc"),
            ("abc\r\n", "abc"),
            ("abc", "abc"),
            ("a\n\n", "a\n"),
        ] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(read_key(&path).unwrap().expose_secret(), key.as_bytes());
        }
        std::fs::write(&path, "\n").unwrap();
        assert!(read_key(&path).unwrap_err().contains("is empty"));
        assert!(read_key(&dir.path().join("none")).is_err());
    }
}
