//! The PostgreSQL client the PostgreSQL and PgBouncer targets share: a URL read into a
//! [`PgClient`] (hosts, TLS, channel binding), and sessions opened through
//! [`pg_wire`](super::pg_wire)'s guard.
//!
//! Every call to the server (connect with its login, each statement) is bounded by the
//! target's `timeout`: keyd drives the asynchronous client on a runtime of its own and gives up
//! when the time is out, so a server that accepts and never answers fails the step instead of
//! holding the store lock forever.
//!
//! Connections use TLS as the URL's `sslmode` says (`disable`, `require`, `verify-ca`,
//! `verify-full`, with `sslrootcert=PATH` as the CA; default `verify-full`, or `disable` for a
//! loopback host or a Unix socket). As in libpq, `require` with `sslrootcert` is `verify-ca`.
//! keyd opens the socket itself and hands it to tokio-postgres through the guard, which refuses
//! cleartext and MD5 password requests before any password is sent, unless the target sets
//! `allow_insecure_auth`. Probe and test logins must be checked by the server (no trust).
//!
//! Over TLS every login (admin, probe, test) must use SCRAM-SHA-256-PLUS, which binds the
//! exchange to the server's certificate: a man in the middle (which `sslmode=require` lets
//! through) cannot relay it to the real server. The URL's `channel_binding` (libpq's option:
//! `disable`, `prefer`, `require`) says otherwise explicitly; its default is `require` over
//! TLS, or `prefer` when `allow_insecure_auth` already allows logins that cannot bind.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, Host, SslMode};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::TargetError;
use super::pg_wire::{AuthGuard, AuthPolicy, AuthRefused, RustlsConnect};
use super::tls::{self, TlsMode};
use crate::policy::duration;
use crate::secret::SecretString;

/// A PostgreSQL server (or a PgBouncer, which speaks its protocol) as a target's URL names it.
pub(crate) struct PgClient {
    /// The target's name in the policy.
    pub(crate) name: String,
    /// The URL's connection (its user, database, and the admin password, if any).
    pub(crate) config: Config,
    /// How long connecting (with its login) or one statement may take.
    pub(crate) timeout: Duration,
    /// Where the server listens.
    endpoints: Vec<Endpoint>,
    /// TLS, unless the mode is `disable` (or the server is on a Unix socket).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Cleartext and MD5 password authentication are allowed (`allow_insecure_auth`).
    allow_insecure_auth: bool,
    /// Whether logins over TLS must use SCRAM-SHA-256-PLUS (the URL's `channel_binding`).
    channel_binding: ChannelBinding,
}

/// One place the server listens, from the URL.
#[derive(Clone, Debug)]
enum Endpoint {
    /// A host name or address and a port.
    Tcp(String, u16),
    /// A Unix socket directory and a port (the socket is `DIR/.s.PGSQL.PORT`).
    Unix(PathBuf, u16),
}

/// The TLS parameters of a URL's query, which keyd applies itself.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    /// `sslmode` (tokio-postgres knows neither `verify-ca` nor `verify-full`).
    mode: Option<String>,
    /// `sslrootcert` (unknown to tokio-postgres).
    root: Option<String>,
    /// `channel_binding` (tokio-postgres's default, `prefer`, is not keyd's).
    channel_binding: Option<String>,
}

/// Takes the [`TlsParams`] out of a URL's query; returns the rest of the URL and them.
fn split_tls_params(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), params);
    };
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", v)) => params.mode = Some(super::percent_decode(v)),
            Some(("sslrootcert", v)) => params.root = Some(super::percent_decode(v)),
            Some(("channel_binding", v)) => {
                params.channel_binding = Some(super::percent_decode(v));
            }
            _ => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, params)
}

/// Drives a connection on the current runtime; its own error reaches the caller through the
/// client's next call.
fn drive<S, T>(connection: tokio_postgres::Connection<S, T>) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _ = connection.await;
    })
}

/// Why a call to the server failed.
pub(crate) enum PgFailure {
    /// No answer within the target's timeout.
    TimedOut,
    /// No runtime to drive the client could be made.
    Runtime(std::io::Error),
    /// The connection to the server could not be opened.
    Socket(std::io::Error),
    /// The driver's error (refused, a server error, a broken connection).
    Driver(tokio_postgres::Error),
}

impl PgFailure {
    /// Whether the server refused the login's password. PostgreSQL says so with its own
    /// codes; PgBouncer (before 1.21) sends every error of its own as a protocol violation,
    /// and says "password authentication failed" or "SASL authentication failed".
    pub(crate) fn refused(&self) -> bool {
        let PgFailure::Driver(e) = self else {
            return false;
        };
        match e.as_db_error() {
            Some(db) if *db.code() == SqlState::PROTOCOL_VIOLATION => {
                db.message().ends_with("authentication failed")
            }
            Some(db) => {
                *db.code() == SqlState::INVALID_PASSWORD
                    || *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
            }
            None => false,
        }
    }
}

/// One connection: the client and the runtime that drives it. Dropping it closes the
/// connection (the driver sends Terminate, waited for at most the timeout).
pub(crate) struct Session {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    connection: Option<tokio::task::JoinHandle<()>>,
    timeout: Duration,
}

impl Session {
    /// Runs one call to the server, for at most the timeout.
    pub(crate) fn call<T>(
        &self,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgFailure> {
        self.runtime
            .block_on(async { tokio::time::timeout(self.timeout, call).await })
            .map_err(|_| PgFailure::TimedOut)?
            .map_err(PgFailure::Driver)
    }

    pub(crate) fn client(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.client.take());
        if let Some(connection) = self.connection.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(self.timeout, connection).await });
        }
    }
}

impl PgClient {
    /// The server at `url` (no password in it) for target `name`, logging in with
    /// `admin_password`, each call taking at most `timeout`.
    pub(crate) fn new(
        name: &str,
        url: &str,
        admin_password: Option<&SecretString>,
        timeout: Duration,
        allow_insecure_auth: bool,
    ) -> Result<Self, TargetError> {
        let fail = |message: String| TargetError {
            target: name.to_owned(),
            message,
        };
        let (url, params) = split_tls_params(url);
        let (sslmode, sslrootcert) = (params.mode, params.root);
        let mut admin: Config = url.parse().map_err(|e| fail(format!("bad url: {e}")))?;
        admin.connect_timeout(timeout);
        if let Some(p) = admin_password {
            admin.password(p.expose_secret());
        }
        let ports = admin.get_ports();
        let port = |i: usize| match ports {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        };
        let endpoints: Vec<Endpoint> = admin
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| match host {
                Host::Tcp(h) => Endpoint::Tcp(h.clone(), port(i)),
                Host::Unix(dir) => Endpoint::Unix(dir.clone(), port(i)),
            })
            .collect();
        let Some(first) = endpoints.first() else {
            return Err(fail("bad url: it names no host".into()));
        };
        let mode = match sslmode.as_deref() {
            Some(value) => TlsMode::parse(value).ok_or_else(|| {
                fail(format!("bad url: sslmode={value:?} (expected disable, require, verify-ca or verify-full)"))
            })?,
            None => match first {
                Endpoint::Tcp(host, _) if endpoints.len() == 1 => TlsMode::default_for(host),
                Endpoint::Tcp(..) => TlsMode::VerifyFull,
                Endpoint::Unix(..) => TlsMode::Disable,
            },
        };
        // libpq: `require` with a CA file verifies the chain, as `verify-ca` does.
        let mode = match mode {
            TlsMode::Require if sslrootcert.is_some() => TlsMode::VerifyCa,
            mode => mode,
        };
        let channel_binding = match params.channel_binding.as_deref() {
            Some("disable") => ChannelBinding::Disable,
            Some("prefer") => ChannelBinding::Prefer,
            Some("require") => ChannelBinding::Require,
            Some(value) => {
                return Err(fail(format!(
                    "bad url: channel_binding={value:?} (expected disable, prefer or require)"
                )));
            }
            None if allow_insecure_auth => ChannelBinding::Prefer,
            None => ChannelBinding::Require,
        };
        let tls = match mode {
            TlsMode::Disable => None,
            mode => Some(
                tls::client_config(mode, sslrootcert.as_deref().map(std::path::Path::new))
                    .map_err(fail)?,
            ),
        };
        Ok(PgClient {
            name: name.to_owned(),
            config: admin,
            timeout,
            endpoints,
            tls,
            allow_insecure_auth,
            channel_binding,
        })
    }

    pub(crate) fn fail(&self, message: impl Into<String>) -> TargetError {
        TargetError {
            target: self.name.clone(),
            message: message.into(),
        }
    }

    /// Describes a failure without any query text (which could hold a verifier).
    pub(crate) fn describe(&self, failure: &PgFailure) -> String {
        let e = match failure {
            PgFailure::TimedOut => {
                return format!(
                    "no answer, timed out after {}",
                    duration::format(self.timeout)
                );
            }
            PgFailure::Runtime(e) => return format!("cannot start a client runtime: {e}"),
            PgFailure::Socket(e) => return format!("error connecting to server: {e}"),
            PgFailure::Driver(e) => e,
        };
        if let Some(refused) = AuthRefused::find(e) {
            return refused.to_string();
        }
        match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            // The cause ("Connection refused") sits in the error's source.
            None => match std::error::Error::source(e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        }
    }

    /// Connects and logs in as `config` says, within the timeout, accepting the
    /// authentication `policy` allows.
    pub(crate) fn connect(
        &self,
        config: &Config,
        policy: AuthPolicy,
    ) -> Result<Session, PgFailure> {
        // A runtime per session, as the blocking `postgres` crate does: callers are
        // synchronous (the daemon runs them on its blocking pool).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PgFailure::Runtime)?;
        let (client, connection) = runtime
            .block_on(async { tokio::time::timeout(self.timeout, self.open(config, policy)).await })
            .map_err(|_| PgFailure::TimedOut)??;
        Ok(Session {
            runtime,
            client: Some(client),
            connection: Some(connection),
            timeout: self.timeout,
        })
    }

    /// Opens the socket (the URL's hosts in turn), then TLS and the login through the guard;
    /// the connection is driven by a task of the current runtime.
    async fn open(
        &self,
        config: &Config,
        policy: AuthPolicy,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), PgFailure> {
        let mut last = None;
        for endpoint in &self.endpoints {
            let opened = match endpoint {
                Endpoint::Tcp(host, port) => {
                    match tokio::net::TcpStream::connect((host.as_str(), *port)).await {
                        Ok(socket) => {
                            let _ = socket.set_nodelay(true);
                            self.login(config, policy, host, socket).await
                        }
                        Err(e) => Err(PgFailure::Socket(e)),
                    }
                }
                Endpoint::Unix(dir, port) => {
                    match tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                        .await
                    {
                        // No TLS on a Unix socket (as libpq): the guard still judges the login.
                        Ok(socket) => {
                            let mut config = config.clone();
                            config
                                .ssl_mode(SslMode::Disable)
                                .channel_binding(ChannelBinding::Disable);
                            let guarded = AuthGuard::new(socket, policy);
                            config
                                .connect_raw(guarded, NoTls)
                                .await
                                .map(|(client, connection)| (client, drive(connection)))
                                .map_err(PgFailure::Driver)
                        }
                        Err(e) => Err(PgFailure::Socket(e)),
                    }
                }
            };
            match opened {
                Ok(session) => return Ok(session),
                // Only an unreachable host moves on to the next one, as libpq does.
                Err(PgFailure::Socket(e)) => last = Some(PgFailure::Socket(e)),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| PgFailure::Socket(std::io::Error::other("no host"))))
    }

    /// Logs in over `socket` to `host`, with TLS when the target uses it.
    async fn login(
        &self,
        config: &Config,
        policy: AuthPolicy,
        host: &str,
        socket: tokio::net::TcpStream,
    ) -> Result<(Client, tokio::task::JoinHandle<()>), PgFailure> {
        let mut config = config.clone();
        match &self.tls {
            None => {
                config
                    .ssl_mode(SslMode::Disable)
                    .channel_binding(ChannelBinding::Disable);
                let (client, connection) = config
                    .connect_raw(AuthGuard::new(socket, policy), NoTls)
                    .await
                    .map_err(PgFailure::Driver)?;
                Ok((client, drive(connection)))
            }
            Some(tls_config) => {
                // The client refuses a login without channel binding too; the guard refuses
                // first, saying why, before anything is sent.
                config
                    .ssl_mode(SslMode::Require)
                    .channel_binding(self.channel_binding);
                let server_name = tls::server_name(host)
                    .map_err(|e| PgFailure::Socket(std::io::Error::other(e)))?;
                let connector = RustlsConnect {
                    config: tls_config.clone(),
                    server_name,
                    policy: AuthPolicy {
                        require_channel_binding: self.channel_binding == ChannelBinding::Require,
                        ..policy
                    },
                };
                let (client, connection) = config
                    .connect_raw(socket, connector)
                    .await
                    .map_err(PgFailure::Driver)?;
                Ok((client, drive(connection)))
            }
        }
    }

    /// A session as the URL's user with the admin password.
    pub(crate) fn admin_session(&self) -> Result<Session, TargetError> {
        let policy = AuthPolicy {
            allow_insecure: self.allow_insecure_auth,
            require_password: false,
            require_channel_binding: false,
        };
        self.connect(&self.config, policy)
            .map_err(|e| self.fail(format!("admin connection failed: {}", self.describe(&e))))
    }

    /// Opens a new session as `user` with `password` (to `dbname` rather than the URL's
    /// database, when given) and runs `SELECT 1`: `Ok(false)` when the password is refused.
    pub(crate) fn try_login(
        &self,
        user: &str,
        password: &SecretString,
        dbname: Option<&str>,
    ) -> Result<bool, TargetError> {
        let mut config = self.config.clone();
        config.user(user).password(password.expose_secret());
        if let Some(dbname) = dbname {
            config.dbname(dbname);
        }
        // The login must prove the password: checked by the server (no trust), by SCRAM
        // unless the target allows cleartext or MD5, and over TLS with channel binding
        // (unless the url says otherwise; see `login`).
        let policy = AuthPolicy {
            allow_insecure: self.allow_insecure_auth,
            require_password: true,
            require_channel_binding: false,
        };
        match self.connect(&config, policy) {
            Ok(session) => session
                .call(session.client().simple_query("SELECT 1"))
                .map(|_| true)
                .map_err(|e| self.fail(format!("SELECT 1 failed: {}", self.describe(&e)))),
            Err(e) if e.refused() => Ok(false),
            Err(e) => Err(self.fail(format!("login failed: {}", self.describe(&e)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<PgClient, TargetError> {
        PgClient::new("db", url, None, Duration::from_secs(10), false)
    }

    #[test]
    fn sslmode_require_with_sslrootcert_checks_the_certificate_against_it() {
        // As libpq: `require` with a CA file is `verify-ca`, so the file is read (and must be).
        let Err(e) = target(
            "postgres://admin@127.0.0.1/app?sslmode=require&sslrootcert=/nonexistent/ca.pem",
        ) else {
            panic!("sslrootcert was ignored under sslmode=require");
        };
        assert!(
            e.to_string()
                .starts_with("target db: cannot read the CA file /nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn sslmode_and_sslrootcert_come_out_of_the_url() {
        assert_eq!(
            split_tls_params(
                "postgres://a@h/db?sslmode=verify-full&application_name=k&sslrootcert=%2Fetc%2Fca.pem&channel_binding=prefer"
            ),
            (
                "postgres://a@h/db?application_name=k".to_owned(),
                TlsParams {
                    mode: Some("verify-full".to_owned()),
                    root: Some("/etc/ca.pem".to_owned()),
                    channel_binding: Some("prefer".to_owned()),
                }
            )
        );
        let binding = |url: &str| target(url).map(|t| t.channel_binding);
        assert_eq!(
            binding("postgres://admin@127.0.0.1/app?sslmode=require").unwrap(),
            ChannelBinding::Require
        );
        assert_eq!(
            binding("postgres://admin@127.0.0.1/app?sslmode=require&channel_binding=prefer")
                .unwrap(),
            ChannelBinding::Prefer
        );
        let e = binding("postgres://admin@127.0.0.1/app?channel_binding=maybe")
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "target db: bad url: channel_binding=\"maybe\" (expected disable, prefer or require)"
        );
        assert!(
            target("postgres://admin@127.0.0.1:5432/app")
                .unwrap()
                .tls
                .is_none()
        );
        assert!(
            target("postgres://admin@127.0.0.1/app?sslmode=require")
                .unwrap()
                .tls
                .is_some()
        );
        let e = target("postgres://admin@127.0.0.1/app?sslmode=prefer")
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "target db: bad url: sslmode=\"prefer\" (expected disable, require, verify-ca or verify-full)"
        );
        let e = target("postgres://admin@db.example.com/app?sslrootcert=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("target db: cannot read the CA file /nonexistent/ca.pem"),
            "a host other than loopback is verify-full by default: {e}"
        );
    }
}
