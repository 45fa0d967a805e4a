//! The PostgreSQL connection under tokio-postgres: the TLS hook (rustls, with the
//! `tls-server-end-point` channel binding SCRAM-SHA-256-PLUS needs) and [`AuthGuard`], which
//! reads the server's authentication requests before the client does and refuses cleartext
//! and MD5 password requests unless the target allows them, and, where channel binding is
//! required, any login that would not be SCRAM-SHA-256-PLUS.
//!
//! tokio-postgres answers whatever authentication the server asks for: a cleartext request
//! gets the password, an MD5 request a hash that is as good as the password for that role.
//! It has no setting to refuse them (`channel_binding=require` does, but only over TLS and
//! with an unhelpful message), so the guard sits between the socket (or the TLS session) and
//! the client: it holds back the server's messages until each authentication request is
//! judged, and a refused one never reaches the client, which therefore never answers it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

use super::tls;

/// Which authentication requests a login accepts.
#[derive(Clone, Copy, Debug)]
pub struct AuthPolicy {
    /// Cleartext (3) and MD5 (5) password requests are answered (`allow_insecure_auth`).
    pub allow_insecure: bool,
    /// The server must check a password: a login it lets in without one (trust) is refused,
    /// since it proves nothing about the password (the probe and test logins).
    pub require_password: bool,
    /// The login must be SCRAM-SHA-256-PLUS, bound to the TLS session's certificate: a
    /// server that offers only unbound methods (or none) is refused, and so is a certificate
    /// whose channel binding cannot be computed. Set only for TLS sessions.
    pub require_channel_binding: bool,
}

/// Why the guard stopped a login; carried in the `io::Error` the client sees.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthRefused(pub String);

impl AuthRefused {
    /// The guard's refusal, if `e` or one of its causes is one.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a AuthRefused> {
        let mut cause = Some(e);
        while let Some(e) = cause {
            if let Some(refused) = e.downcast_ref::<AuthRefused>() {
                return Some(refused);
            }
            if let Some(inner) = e
                .downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<AuthRefused>())
            {
                return Some(inner);
            }
            cause = e.source();
        }
        None
    }
}

/// Authentication request codes (the `R` message's first field).
const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;

/// The SASL mechanism that binds SCRAM to the TLS session.
const SCRAM_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";

/// The largest message the guard holds back; authentication requests are a few dozen bytes,
/// so anything longer is passed on for the client to judge.
const MAX_HELD: usize = 64 << 10;

/// A stream whose incoming messages are judged by an [`AuthPolicy`] until authentication is
/// over (AuthenticationOk or an error), then passed through untouched.
pub struct AuthGuard<S> {
    inner: S,
    policy: AuthPolicy,
    /// Incoming bytes not yet judged (an incomplete message).
    held: Vec<u8>,
    /// Judged bytes not yet read by the client.
    ready: Vec<u8>,
    /// The server asked for a password (SASL, or an allowed cleartext or MD5 request).
    challenged: bool,
    /// Authentication is over: bytes pass straight through.
    done: bool,
    /// The channel binding of the TLS session underneath, if any.
    channel_binding: Option<Vec<u8>>,
}

impl<S> AuthGuard<S> {
    /// Guards `inner`.
    pub fn new(inner: S, policy: AuthPolicy) -> Self {
        AuthGuard {
            inner,
            policy,
            held: Vec::new(),
            ready: Vec::new(),
            challenged: false,
            done: false,
            channel_binding: None,
        }
    }

    /// Judges the complete messages in `held`, moving accepted ones to `ready`.
    fn judge(&mut self) -> io::Result<()> {
        while !self.done && self.held.len() >= 5 {
            let len = u32::from_be_bytes([self.held[1], self.held[2], self.held[3], self.held[4]])
                as usize;
            if !(4..=MAX_HELD).contains(&len) {
                self.done = true; // not an authentication request: the client judges it
                break;
            }
            if self.held.len() < 1 + len {
                break;
            }
            let message: Vec<u8> = self.held.drain(..1 + len).collect();
            if message[0] == b'R' && len >= 8 {
                let code = i32::from_be_bytes([message[5], message[6], message[7], message[8]]);
                self.request(code, &message[9..])?;
            } else {
                self.done = true; // an ErrorResponse, or anything else: authentication is over
            }
            self.ready.extend_from_slice(&message);
        }
        if self.done {
            self.ready.append(&mut self.held);
        }
        Ok(())
    }

    /// Judges one authentication request (its code and what follows it).
    fn request(&mut self, code: i32, body: &[u8]) -> io::Result<()> {
        let refuse = |what: &str| {
            Err(io::Error::other(AuthRefused(format!(
                "the server asked for {what} authentication, which would send the password (or its equivalent) for anyone on the path or at the server to take; keyd sent nothing and refused (configure SCRAM-SHA-256 on the server, or set allow_insecure_auth = true on the target to allow it)"
            ))))
        };
        if self.policy.require_channel_binding {
            let unbound = |what: &str| {
                Err(io::Error::other(AuthRefused(format!(
                    "{what}, so the login would not be bound to this TLS session: a man in the middle could relay it to the real server; keyd sent nothing and refused (check that the server is reached directly and has ssl = on; set channel_binding=prefer in the url to allow it)"
                ))))
            };
            match code {
                // Mechanisms: NUL-terminated names, then an empty one.
                AUTH_SASL if !body.split(|&b| b == 0).any(|m| m == SCRAM_PLUS) => {
                    return unbound(
                        "over TLS the server does not offer SCRAM-SHA-256-PLUS (channel binding)",
                    );
                }
                AUTH_CLEARTEXT | AUTH_MD5 => {
                    return unbound(
                        "the server asked for a password method without channel binding",
                    );
                }
                AUTH_OK if !self.challenged => {
                    self.done = true;
                    return unbound(
                        "the server let the login in without authentication, proving nothing about itself",
                    );
                }
                _ => {}
            }
        }
        match code {
            AUTH_CLEARTEXT if !self.policy.allow_insecure => refuse("cleartext password"),
            AUTH_MD5 if !self.policy.allow_insecure => refuse("MD5 password"),
            AUTH_CLEARTEXT | AUTH_MD5 | AUTH_SASL => {
                self.challenged = true;
                Ok(())
            }
            AUTH_OK => {
                self.done = true;
                if self.policy.require_password && !self.challenged {
                    return Err(io::Error::other(AuthRefused(
                        "the server let the login in without checking its password (trust authentication), so the login proves nothing about the password; configure scram-sha-256 for it in pg_hba.conf".into(),
                    )));
                }
                Ok(())
            }
            _ => Ok(()), // SASL continue/final, or a method the client itself refuses
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0; 4096];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of stream: what is held goes to the client, which reports it.
                this.done = true;
                this.ready.append(&mut this.held);
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.held.extend_from_slice(read.filled());
            this.judge()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for AuthGuard<S> {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.channel_binding {
            Some(hash) => ChannelBinding::tls_server_end_point(hash.clone()),
            None => ChannelBinding::none(),
        }
    }
}

/// tokio-postgres's TLS hook: a rustls handshake, then the guarded TLS stream.
pub struct RustlsConnect {
    /// The client configuration (how the certificate is checked).
    pub config: Arc<rustls::ClientConfig>,
    /// The name sent and checked.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// What authentication the login accepts.
    pub policy: AuthPolicy,
}

/// A TLS failure, described (`TLS certificate verification failed: …`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsFailure(pub String);

type Guarded<S> = AuthGuard<tokio_rustls::client::TlsStream<S>>;

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Guarded<S>;
    type Error = TlsFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Guarded<S>, TlsFailure>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config)
                .connect(self.server_name, stream)
                .await
                .map_err(|e| TlsFailure(tls::describe(&e)))?;
            let channel_binding = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| tls::tls_server_end_point(cert));
            if channel_binding.is_none() && self.policy.require_channel_binding {
                return Err(TlsFailure(
                    "the server's certificate is signed with an algorithm that has no tls-server-end-point channel binding (Ed25519, Ed448, or one keyd does not know), so no login can be bound to this TLS session and a man in the middle could relay it; keyd refused before logging in (give the server an ECDSA or RSA certificate, or set channel_binding=prefer in the url to allow it)".into(),
                ));
            }
            let mut guarded = AuthGuard::new(stream, self.policy);
            guarded.channel_binding = channel_binding;
            Ok(guarded)
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    fn request(code: i32) -> Vec<u8> {
        let mut m = vec![b'R', 0, 0, 0, 8];
        m.extend_from_slice(&code.to_be_bytes());
        m
    }

    /// What a client reading through a guard gets from a server that sent `from_server`.
    fn read_through(from_server: Vec<u8>, policy: AuthPolicy) -> io::Result<Vec<u8>> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut guard = AuthGuard::new(&from_server[..], policy);
            let mut out = Vec::new();
            guard.read_to_end(&mut out).await.map(|_| out)
        })
    }

    const STRICT: AuthPolicy = AuthPolicy {
        allow_insecure: false,
        require_password: false,
        require_channel_binding: false,
    };

    /// A SASL request offering `mechanisms`.
    fn sasl(mechanisms: &[&str]) -> Vec<u8> {
        let mut body = AUTH_SASL.to_be_bytes().to_vec();
        for m in mechanisms {
            body.extend_from_slice(m.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut m = vec![b'R'];
        m.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
        m.extend(body);
        m
    }

    #[test]
    fn where_channel_binding_is_required_only_scram_plus_passes() {
        let bound = AuthPolicy {
            require_channel_binding: true,
            ..STRICT
        };
        let offer = sasl(&["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]);
        assert_eq!(read_through(offer.clone(), bound).unwrap(), offer);
        let e = read_through(sasl(&["SCRAM-SHA-256"]), bound).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("over TLS the server does not offer SCRAM-SHA-256-PLUS"),
            "{e}"
        );
        let e = read_through(request(0), bound).unwrap_err();
        assert!(e.to_string().contains("without authentication"), "{e}");
        let lax = AuthPolicy {
            allow_insecure: true,
            ..bound
        };
        let e = read_through(request(3), lax).unwrap_err();
        assert!(e.to_string().contains("channel_binding=prefer"), "{e}");
        let plain = sasl(&["SCRAM-SHA-256"]);
        assert_eq!(read_through(plain.clone(), STRICT).unwrap(), plain);
    }

    #[test]
    fn cleartext_and_md5_requests_never_reach_the_client() {
        for (code, what) in [(3, "cleartext password"), (5, "MD5 password")] {
            let mut stream = request(code);
            if code == 5 {
                stream.extend_from_slice(b"salt");
                stream[4] = 12;
            }
            let e = read_through(stream, STRICT).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("the server asked for {what} authentication")),
                "{e}"
            );
            assert!(AuthRefused::find(&e).is_some());
        }
    }

    #[test]
    fn allowed_requests_and_everything_after_authentication_pass_through() {
        let mut stream = request(3);
        stream.extend(request(0));
        stream.extend_from_slice(b"Z\0\0\0\x05I");
        let policy = AuthPolicy {
            allow_insecure: true,
            require_password: true,
            require_channel_binding: false,
        };
        assert_eq!(read_through(stream.clone(), policy).unwrap(), stream);
    }

    #[test]
    fn a_probe_let_in_without_a_password_is_refused() {
        let policy = AuthPolicy {
            allow_insecure: false,
            require_password: true,
            require_channel_binding: false,
        };
        let e = read_through(request(0), policy).unwrap_err();
        assert!(e.to_string().contains("trust authentication"), "{e}");
        assert_eq!(read_through(request(0), STRICT).unwrap(), request(0));
    }

    #[test]
    fn a_request_split_across_reads_is_judged_whole() {
        // A one-byte-at-a-time reader: the guard must hold back a partial message.
        struct Trickle(Vec<u8>);
        impl AsyncRead for Trickle {
            fn poll_read(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                if !self.0.is_empty() {
                    buf.put_slice(&[self.0.remove(0)]);
                }
                Poll::Ready(Ok(()))
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = runtime
            .block_on(async {
                let mut guard = AuthGuard::new(Trickle(request(3)), STRICT);
                let mut first = [0; 1];
                guard.read(&mut first).await
            })
            .unwrap_err();
        assert!(AuthRefused::find(&e).is_some(), "{e}");
    }
}
