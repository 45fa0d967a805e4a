//! The RabbitMQ target. Passwords are set through the management API (`PUT /api/users/USER`)
//! as hashes computed here in RabbitMQ's own scheme (`rabbit_password_hashing_sha256`: a
//! 4-byte random salt, then base64 of the salt and SHA-256 of the salt and the password), so
//! the plaintext never reaches the API, its access log or the definitions export. Logins are
//! proven with a real AMQP 0-9-1 connection to the target's `amqp` address (the management
//! API's `authenticate` endpoint would not prove that the broker's listener takes it).
//!
//! `single`: one user; from set until a client reloads, a client holding the old password
//! cannot open a new connection (open ones survive: RabbitMQ checks a password only at
//! login). `alternating`: two users, `user` and `user_b`; each rotation gives the one not in
//! use the tags and the permissions on `vhost` of the one in use, then the new password, so
//! there is no window; retire removes the old user's password (`password_hash: ""`: no
//! password login works), and the next set gives it a new one.
//!
//! Every user keyd writes keeps its tags (read first). A user keyd creates gets its
//! permissions on `vhost` from the other login when there is one, else `.*` for configure,
//! write and read (a user without permissions cannot open the vhost, so no login could be
//! proven). Set is safe to repeat: a new user is created without a password, given its
//! permissions, and only then its password, so once the new password logs in the set is
//! complete. Every call is bounded by the target's `timeout`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::amqp::{self, LoginOutcome};
use super::rabbitmq_http::{Management, ManagementUrl, segment};
use super::socket::{self, Conn};
use super::tls::{self, TlsMode};
use super::{Credential, Target, TargetError};
use crate::policy::{LoginStrategy, duration};
use crate::secret::SecretString;

/// The hashing algorithm keyd's hashes are in.
const HASHING_ALGORITHM: &str = "rabbit_password_hashing_sha256";

/// `password`'s hash in RabbitMQ's `rabbit_password_hashing_sha256` scheme with `salt`:
/// base64(salt ‖ SHA-256(salt ‖ UTF-8 password)).
pub fn password_hash_with(salt: [u8; 4], password: &SecretString) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&salt);
    ctx.update(password.expose_secret().as_bytes());
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(ctx.finish().as_ref());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `password`'s hash with a fresh random salt.
pub fn password_hash(password: &SecretString) -> String {
    let mut salt = [0u8; 4];
    crate::secret::fill_random(&mut salt);
    password_hash_with(salt, password)
}

/// Where AMQP logins are tested: `amqp://HOST:PORT/` or `amqps://HOST:PORT/?ca=PATH`.
#[derive(Debug, PartialEq, Eq)]
struct AmqpAddress {
    host: String,
    port: u16,
    tls: bool,
    ca: Option<String>,
}

impl AmqpAddress {
    fn parse(url: &str) -> Result<AmqpAddress, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("amqps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("amqp://") {
            (false, rest)
        } else {
            return Err("it does not start with amqp:// or amqps://".into());
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = rest.split('/').next().unwrap_or(rest);
        if authority.contains('@') {
            return Err(
                "it names a user (expected amqp://HOST:PORT/; the login is the secret's)".into(),
            );
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse().map_err(|_| format!("bad port {port:?}"))?,
            ),
            _ => (authority, if tls { 5671 } else { 5672 }),
        };
        if host.is_empty() {
            return Err("it names no host (expected amqp://HOST:PORT/)".into());
        }
        let mut ca = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ca", v)) if tls => ca = Some(super::percent_decode(v)),
                _ => {
                    return Err(format!(
                        "unknown parameter {pair:?} (expected ca=PATH, with amqps://)"
                    ));
                }
            }
        }
        Ok(AmqpAddress {
            host: host.to_owned(),
            port,
            tls,
            ca,
        })
    }
}

/// The host and port a rabbitmq target's management URL connects to (for `probe`).
pub(super) fn host_and_port(url: &str) -> Option<(String, u16)> {
    ManagementUrl::parse(url).ok().map(|u| (u.host, u.port))
}

/// A RabbitMQ user (two with `alternating`) whose password keyd rotates.
pub struct RabbitmqTarget {
    name: String,
    api: Management,
    amqp: AmqpAddress,
    amqp_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    user: String,
    vhost: String,
    strategy: LoginStrategy,
    timeout: Duration,
}

/// A user as the management API shows it: its tags, joined by commas.
struct User {
    tags: String,
}

impl RabbitmqTarget {
    /// The target `name` with its management `url` (no password in it), the admin password,
    /// the AMQP address logins are tested at, and the secret's user and vhost.
    #[allow(clippy::too_many_arguments)] // the policy's fields, each named at the one caller
    pub fn new(
        name: &str,
        url: &str,
        admin_password: Option<SecretString>,
        amqp: &str,
        user: &str,
        vhost: &str,
        strategy: LoginStrategy,
        timeout: Duration,
        allow_insecure_auth: bool,
    ) -> Result<Self, TargetError> {
        let fail = |message: String| TargetError {
            target: name.to_owned(),
            message,
        };
        let parsed = ManagementUrl::parse(url).map_err(|e| fail(format!("bad url: {e}")))?;
        let address = AmqpAddress::parse(amqp).map_err(|e| fail(format!("bad amqp: {e}")))?;
        if !allow_insecure_auth {
            for (plain, host, what) in [
                (!parsed.tls, &parsed.host, "http:// to the management API"),
                (!address.tls, &address.host, "amqp:// for the login test"),
            ] {
                if plain && !tls::is_loopback(host) {
                    return Err(fail(format!(
                        "{what} at {host}, another host: the admin password and the new password would cross the network in the clear; use https:// and amqps://, or set allow_insecure_auth = true on the target to allow it"
                    )));
                }
            }
        }
        let password = admin_password.unwrap_or_else(|| SecretString::new(String::new()));
        let api = Management::new(parsed, &password).map_err(fail)?;
        let amqp_tls = if address.tls {
            let mode = if address.ca.is_some() {
                TlsMode::VerifyCa
            } else {
                TlsMode::VerifyFull
            };
            Some(
                tls::client_config(mode, address.ca.as_deref().map(std::path::Path::new))
                    .map_err(fail)?,
            )
        } else {
            None
        };
        Ok(RabbitmqTarget {
            name: name.to_owned(),
            api,
            amqp: address,
            amqp_tls,
            user: user.to_owned(),
            vhost: vhost.to_owned(),
            strategy,
            timeout,
        })
    }

    fn fail(&self, message: impl Into<String>) -> TargetError {
        TargetError {
            target: self.name.clone(),
            message: message.into(),
        }
    }

    /// Describes an I/O failure: a timeout as such, a TLS failure as TLS's.
    fn describe(&self, e: &std::io::Error) -> String {
        if e.kind() == std::io::ErrorKind::TimedOut {
            format!(
                "no answer, timed out after {}",
                duration::format(self.timeout)
            )
        } else if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            tls::describe(e)
        } else {
            e.to_string()
        }
    }

    /// One management API call; the answer's status must be one of `ok` (404 is returned as
    /// `None` when `ok` has it).
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Result<Option<Value>, TargetError> {
        let body = body.map(|b| zeroize::Zeroizing::new(b.to_string().into_bytes()));
        let what = format!("{method} {path}");
        let answer = self
            .api
            .call(
                method,
                path,
                body.as_ref().map(|b| b.as_slice()),
                Instant::now() + self.timeout,
            )
            .map_err(|e| self.fail(format!("management API {what}: {}", self.describe(&e))))?;
        if !ok.contains(&answer.status) {
            let reason = error_reason(&answer.body);
            let hint = match answer.status {
                401 => " (the admin user or password is wrong)",
                403 => " (the admin user lacks the administrator tag)",
                _ => "",
            };
            return Err(self.fail(format!(
                "management API {what} answered HTTP {}{hint}{}",
                answer.status,
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            )));
        }
        if answer.status == 404 || answer.body.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&answer.body)
            .map(Some)
            .map_err(|_| self.fail(format!("management API {what}: the answer is not JSON")))
    }

    /// The user `login`, or `None` when there is none.
    fn user(&self, login: &str) -> Result<Option<User>, TargetError> {
        let Some(v) = self.call(
            "GET",
            &format!("/api/users/{}", segment(login)),
            None,
            &[200, 404],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(User { tags: tags_of(&v) }))
    }

    /// Writes user `login` with `tags` and `hash` (`""`: no password).
    fn put_user(&self, login: &str, tags: &str, hash: &str) -> Result<(), TargetError> {
        let body = json!({
            "password_hash": hash,
            "hashing_algorithm": HASHING_ALGORITHM,
            "tags": tags,
        });
        self.call(
            "PUT",
            &format!("/api/users/{}", segment(login)),
            Some(&body),
            &[200, 201, 204],
        )
        .map(drop)
    }

    fn permissions_path(&self, login: &str) -> String {
        format!(
            "/api/permissions/{}/{}",
            segment(&self.vhost),
            segment(login)
        )
    }

    /// `login`'s configure, write and read patterns on the vhost, if it has any.
    fn permissions(&self, login: &str) -> Result<Option<Value>, TargetError> {
        Ok(self
            .call("GET", &self.permissions_path(login), None, &[200, 404])?
            .map(|v| patterns_of(&v)))
    }

    /// Logs in over AMQP as `login` with `password` on the vhost.
    fn try_login(&self, login: &str, password: &SecretString) -> Result<LoginOutcome, TargetError> {
        let deadline = Instant::now() + self.timeout;
        let attempt = || -> std::io::Result<LoginOutcome> {
            let socket = socket::connect(&self.amqp.host, self.amqp.port, deadline)?;
            let conn = match &self.amqp_tls {
                Some(config) => socket::start_tls(socket, config.clone(), &self.amqp.host)?,
                None => Conn::Plain(socket),
            };
            amqp::login(conn, &self.vhost, login, password)
        };
        attempt().map_err(|e| {
            self.fail(format!(
                "AMQP login at {}:{}: {}",
                self.amqp.host,
                self.amqp.port,
                self.describe(&e)
            ))
        })
    }

    /// The login a credential is for: its own, or the one user of `single`.
    fn login_of<'c>(&'c self, credential: &Credential<'c>) -> &'c str {
        credential.login.unwrap_or(&self.user)
    }
}

/// The `reason` of an error answer's JSON body, or `""`. The API's error bodies name the
/// reason, never a request's password or hash.
fn error_reason(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// A user's tags, comma-separated: a list from RabbitMQ 3.9 on, a comma-separated string
/// before.
fn tags_of(user: &Value) -> String {
    match user.get("tags") {
        Some(Value::Array(tags)) => tags
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::String(tags)) => tags.clone(),
        _ => String::new(),
    }
}

/// The configure, write and read patterns of a permissions answer (`""` for one missing).
fn patterns_of(permissions: &Value) -> Value {
    json!({
        "configure": permissions.get("configure").cloned().unwrap_or(json!("")),
        "write": permissions.get("write").cloned().unwrap_or(json!("")),
        "read": permissions.get("read").cloned().unwrap_or(json!("")),
    })
}

/// What the fuzzing harness reads from a management API answer.
pub(crate) struct ReadAnswer {
    /// The length of the body.
    pub body_len: usize,
    /// The body as an error answer's reason.
    pub reason: String,
    /// The body, when it is JSON, as a user's tags and as permissions.
    pub user: Option<(String, Value)>,
}

/// The fuzzing harness's view of the management API reader: `bytes` as a server's answer,
/// arriving `chunk` bytes per read, then its body read as the target reads it. Any bytes give
/// an answer or an error.
pub(crate) fn read_answer_bytes(bytes: &[u8], chunk: usize) -> std::io::Result<ReadAnswer> {
    /// A server's answer, a few bytes per read, as a socket hands them out.
    struct Chunks<'a>(&'a [u8], usize);
    impl std::io::Read for Chunks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1.max(1)).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let answer = super::rabbitmq_http::read_answer(&mut Chunks(bytes, chunk))?;
    let user = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .map(|v| (tags_of(&v), patterns_of(&v)));
    Ok(ReadAnswer {
        body_len: answer.body.len(),
        reason: error_reason(&answer.body),
        user,
    })
}

impl Target for RabbitmqTarget {
    fn next_login(&self, current: Option<&str>) -> Option<String> {
        super::next_login(self.strategy, &self.user, current)
    }

    fn accepts(&self, credential: &Credential<'_>) -> Result<bool, TargetError> {
        Ok(
            self.try_login(self.login_of(credential), credential.password)?
                == LoginOutcome::Accepted,
        )
    }

    fn set(
        &self,
        pending: &Credential<'_>,
        current: Option<&Credential<'_>>,
    ) -> Result<(), TargetError> {
        let login = self.login_of(pending);
        // The login in use, when it is another user: the one whose tags and permissions the
        // pending one takes.
        let model = current
            .map(|c| self.login_of(c))
            .filter(|c| *c != login)
            .map(|c| self.user(c).map(|u| u.map(|u| (c, u))))
            .transpose()?
            .flatten();
        let existing = self.user(login)?;
        let tags = match (&model, &existing) {
            (Some((_, m)), _) => m.tags.clone(),
            (None, Some(e)) => e.tags.clone(),
            (None, None) => String::new(),
        };
        if existing.is_none() {
            self.put_user(login, &tags, "")?;
        }
        let permissions = match &model {
            Some((other, _)) => self.permissions(other)?,
            None => None,
        };
        let permissions = match permissions {
            Some(p) => Some(p),
            None if self.permissions(login)?.is_none() => {
                Some(json!({ "configure": ".*", "write": ".*", "read": ".*" }))
            }
            None => None,
        };
        if let Some(p) = permissions {
            self.call(
                "PUT",
                &self.permissions_path(login),
                Some(&p),
                &[200, 201, 204],
            )?;
        }
        self.put_user(login, &tags, &password_hash(pending.password))
    }

    fn test(&self, pending: &Credential<'_>) -> Result<(), TargetError> {
        let login = self.login_of(pending);
        match self.try_login(login, pending.password)? {
            LoginOutcome::Accepted => Ok(()),
            LoginOutcome::Refused(reason) => Err(self.fail(format!(
                "a new AMQP login as {login:?} on vhost {:?} with the new password was refused: {reason}",
                self.vhost
            ))),
        }
    }

    fn retire(&self, old: &Credential<'_>, current: &Credential<'_>) -> Result<(), TargetError> {
        let (old, current) = (self.login_of(old), self.login_of(current));
        if old == current {
            // `single`: the one user's password was replaced; nothing else to end.
            return Ok(());
        }
        match self.user(old)? {
            Some(user) => self.put_user(old, &user.tags, ""),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_rabbitmqs_sha256_scheme() {
        // The hash RabbitMQ 3.10 stored for its user guest (password "guest").
        let salt = [0x42, 0x6b, 0x9d, 0xe8];
        assert_eq!(
            password_hash_with(salt, &SecretString::new("guest".into())),
            "Qmud6P+KthkSq5wwbTDlEk5uOelLfE6azehmIpfVA5leCm7a"
        );
        let a = password_hash(&SecretString::new("x".into()));
        let b = password_hash(&SecretString::new("x".into()));
        assert_ne!(a, b, "a fresh salt each time");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(a)
                .unwrap()
                .len(),
            36
        );
    }

    #[test]
    fn amqp_addresses() {
        assert_eq!(
            AmqpAddress::parse("amqp://rabbit:5673/").unwrap(),
            AmqpAddress {
                host: "rabbit".into(),
                port: 5673,
                tls: false,
                ca: None
            }
        );
        let a = AmqpAddress::parse("amqps://rabbit?ca=/etc/ca.pem").unwrap();
        assert_eq!(
            (a.port, a.tls, a.ca.as_deref()),
            (5671, true, Some("/etc/ca.pem"))
        );
        assert!(AmqpAddress::parse("amqp://u@rabbit/").is_err());
        assert!(AmqpAddress::parse("amqp://rabbit/?ca=/x").is_err());
        assert!(AmqpAddress::parse("http://rabbit/").is_err());
    }

    #[test]
    fn plaintext_to_another_host_needs_allow_insecure_auth() {
        let new = |url: &str, amqp: &str, allow: bool| {
            RabbitmqTarget::new(
                "broker",
                url,
                None,
                amqp,
                "celery",
                "/",
                LoginStrategy::Single,
                Duration::from_secs(1),
                allow,
            )
            .map(drop)
            .map_err(|e| e.to_string())
        };
        assert!(
            new(
                "http://admin@127.0.0.1:15672",
                "amqp://localhost:5672/",
                false
            )
            .is_ok()
        );
        let e = new("http://admin@rabbit:15672", "amqp://127.0.0.1/", false).unwrap_err();
        assert!(
            e.starts_with("target broker: http:// to the management API at rabbit"),
            "{e}"
        );
        assert!(new("http://admin@rabbit:15672", "amqp://rabbit/", true).is_ok());
        let e = new("http://admin@127.0.0.1", "ftp://x/", false).unwrap_err();
        assert!(e.starts_with("target broker: bad amqp:"), "{e}");
    }

    #[test]
    fn the_seed_answers_read_as_the_server_meant_them() {
        let seed = |name: &str| {
            let path = format!(
                "{}/../fuzz/corpus/rabbitmq_answer/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            read_answer_bytes(&bytes[1..], usize::from(bytes[0]) + 1)
        };
        for user in ["user", "user_chunked"] {
            assert_eq!(
                seed(user).unwrap().user.unwrap().0,
                "administrator",
                "{user}"
            );
        }
        let answer = seed("user_tags_as_string").unwrap();
        assert_eq!(answer.user.unwrap().0, "management,monitoring");
        let (_, patterns) = seed("permissions").unwrap().user.unwrap();
        assert_eq!(
            patterns,
            json!({ "configure": ".*", "write": ".*", "read": "^celery\\..*" })
        );
        assert_eq!(seed("not_authorized").unwrap().reason, "Login failed");
        assert_eq!(seed("not_found").unwrap().reason, "Not Found");
        assert_eq!(seed("created").unwrap().body_len, 0);
        assert_eq!(seed("body_to_close").unwrap().body_len, 11);
        assert!(seed("cut_short").is_err());
        assert!(seed("not_http").is_err());
    }
}
