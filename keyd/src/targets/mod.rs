//! Targets: outside systems that must accept a new value before consumers use it (a
//! PostgreSQL role (and its line in a PgBouncer's `auth_file`), a MySQL account, a RabbitMQ
//! user, a Redis ACL user). The rotation state machine drives them through the
//! [`Target`] trait; implementations live in this module, one file each.

pub(crate) mod amqp;
pub mod mysql;
pub(crate) mod mysql_wire;
mod pg_client;
mod pg_wire;
pub mod pgbouncer;
pub mod postgres;
pub mod probe;
pub mod rabbitmq;
pub(crate) mod rabbitmq_http;
pub mod redis;
pub(crate) mod resp;
mod socket;
pub mod tls;

use crate::policy::LoginStrategy;
use crate::secret::SecretString;

/// The login the next version of a PostgreSQL or MySQL target uses, whose first login is
/// `first` and whose current version uses `current`: `first` for `single`; for `alternating`,
/// `first` and `first_b` in turn.
fn next_login(strategy: LoginStrategy, first: &str, current: Option<&str>) -> Option<String> {
    match strategy {
        LoginStrategy::Alternating if current == Some(first) => Some(format!("{first}_b")),
        LoginStrategy::Single | LoginStrategy::Alternating => Some(first.to_owned()),
    }
}

/// The test step's verdict on a new login as `login` to target `target`: `accepted`, or the
/// error saying it was refused.
fn new_login_tested(target: &str, login: &str, accepted: bool) -> Result<(), TargetError> {
    if accepted {
        Ok(())
    } else {
        Err(TargetError {
            target: target.to_owned(),
            message: format!("a new login as {login:?} with the new password was refused"),
        })
    }
}

/// Decodes `%XX` escapes (anything malformed is kept as written).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A login and its password, as a target sees them.
#[derive(Clone, Copy, Debug)]
pub struct Credential<'a> {
    /// The login name, when the target has several (alternating PostgreSQL roles or MySQL
    /// accounts).
    pub login: Option<&'a str>,
    /// The password.
    pub password: &'a SecretString,
}

/// Why a target refused or could not be reached. Messages name the target, never a value.
#[derive(Debug, thiserror::Error)]
#[error("target {target}: {message}")]
pub struct TargetError {
    /// The target's name in the policy.
    pub target: String,
    /// What failed.
    pub message: String,
}

/// An outside system whose credential keyd rotates.
///
/// The state machine calls `accepts` and `set` in the set step, `test` in the test step and
/// `retire` after the grace period, each possibly more than once: a process killed mid-step
/// repeats the step on restart. An implementor must therefore:
/// - make every call idempotent: `set` with a value already set, or `retire` of a value already
///   retired, succeeds and changes nothing;
/// - keep the current value working through `set` and `test`, unless the target cannot hold two
///   values at once (then document the window);
/// - in `test`, open a new session with the pending value, proving what consumers will do;
/// - never send a plaintext value where the target could log it, and never put one in an
///   error message.
pub trait Target {
    /// The login the next version uses, given the current one's (alternating strategies flip
    /// between two; others return their one login or `None`).
    fn next_login(&self, current: Option<&str>) -> Option<String>;
    /// Whether `credential` already works (a crash after `set` changed the target).
    fn accepts(&self, credential: &Credential<'_>) -> Result<bool, TargetError>;
    /// Makes the target accept `pending` (alongside `current` where it can), creating the
    /// login if it does not exist.
    fn set(
        &self,
        pending: &Credential<'_>,
        current: Option<&Credential<'_>>,
    ) -> Result<(), TargetError>;
    /// Proves `pending` works from a new session.
    fn test(&self, pending: &Credential<'_>) -> Result<(), TargetError>;
    /// Stops the target accepting `old`; `current` must keep working.
    fn retire(&self, old: &Credential<'_>, current: &Credential<'_>) -> Result<(), TargetError>;
}
