//! The PostgreSQL target. Passwords are set as SCRAM-SHA-256 verifiers computed here
//! (`ALTER ROLE … PASSWORD 'SCRAM-SHA-256$…'`): the server stores what it is given, and the
//! plaintext never reaches it, its logs or `pg_stat_statements`.
//!
//! `single`: one role; between set and a client's reload, a client holding the old password
//! cannot open a new connection (existing connections survive). `alternating`: two login roles
//! (`role` and `role_b`, members of a group role that owns the privileges); each rotation sets
//! the password of the login not in use and delivers both its name and password, so there is
//! no window; retire clears the old login's password.
//!
//! Every call to the server (connect with its login, each statement) is bounded by the
//! target's `timeout`: keyd drives the asynchronous client on a runtime of its own and gives up
//! when the time is out, so a server that accepts and never answers fails the step instead of
//! holding the store lock forever. Admin sessions also set `statement_timeout`, so the server
//! abandons a statement keyd stopped waiting for.

use std::future::Future;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use super::{Credential, Target, TargetError};
use crate::policy::PgStrategy;
use crate::policy::duration;
use crate::secret::SecretString;

/// A PostgreSQL role whose password keyd rotates.
pub struct PostgresTarget {
    /// The target's name in the policy.
    pub name: String,
    /// The admin connection (with its password, if any).
    pub admin: Config,
    /// The role (the first login of the alternating strategy).
    pub role: String,
    /// Single or alternating.
    pub strategy: PgStrategy,
    /// The group role of the alternating strategy.
    pub group: String,
    /// How long connecting (with its login) or one statement may take.
    pub timeout: Duration,
}

/// Quotes an identifier (names were checked by the policy; quoting is belt and braces).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why a call to the server failed.
enum PgFailure {
    /// No answer within the target's timeout.
    TimedOut,
    /// No runtime to drive the client could be made.
    Runtime(std::io::Error),
    /// The driver's error (refused, a server error, a broken connection).
    Driver(tokio_postgres::Error),
}

impl PgFailure {
    fn code(&self) -> Option<&SqlState> {
        match self {
            PgFailure::TimedOut | PgFailure::Runtime(_) => None,
            PgFailure::Driver(e) => e.code(),
        }
    }
}

/// One connection: the client and the runtime that drives it. Dropping it closes the
/// connection (the driver sends Terminate, waited for at most the timeout).
struct Session {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    connection: Option<tokio::task::JoinHandle<()>>,
    timeout: Duration,
}

impl Session {
    /// Runs one call to the server, for at most the timeout.
    fn call<T>(
        &self,
        call: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, PgFailure> {
        self.runtime
            .block_on(async { tokio::time::timeout(self.timeout, call).await })
            .map_err(|_| PgFailure::TimedOut)?
            .map_err(PgFailure::Driver)
    }

    fn client(&self) -> &Client {
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

impl PostgresTarget {
    /// A target from the admin URL (no password in it) and the admin password, whose calls
    /// each take at most `timeout`.
    pub fn new(
        name: &str,
        url: &str,
        admin_password: Option<&SecretString>,
        role: &str,
        strategy: PgStrategy,
        group: &str,
        timeout: Duration,
    ) -> Result<Self, TargetError> {
        let mut admin: Config = url.parse().map_err(|e| TargetError {
            target: name.to_owned(),
            message: format!("bad url: {e}"),
        })?;
        admin.connect_timeout(timeout);
        if let Some(p) = admin_password {
            admin.password(p.expose_secret());
        }
        Ok(PostgresTarget {
            name: name.to_owned(),
            admin,
            role: role.to_owned(),
            strategy,
            group: group.to_owned(),
            timeout,
        })
    }

    fn fail(&self, message: impl Into<String>) -> TargetError {
        TargetError {
            target: self.name.clone(),
            message: message.into(),
        }
    }

    /// Describes a failure without any query text (which could hold a verifier).
    fn describe(&self, failure: &PgFailure) -> String {
        let e = match failure {
            PgFailure::TimedOut => {
                return format!(
                    "no answer, timed out after {}",
                    duration::format(self.timeout)
                );
            }
            PgFailure::Runtime(e) => return format!("cannot start a client runtime: {e}"),
            PgFailure::Driver(e) => e,
        };
        match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            // The cause ("Connection refused") sits in the error's source.
            None => match std::error::Error::source(e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        }
    }

    /// Connects and logs in as `config` says, within the timeout.
    fn connect(&self, config: &Config) -> Result<Session, PgFailure> {
        // A runtime per session, as the blocking `postgres` crate does: callers are
        // synchronous (the daemon runs them on its blocking pool).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PgFailure::Runtime)?;
        let (client, connection) = runtime
            .block_on(async { tokio::time::timeout(self.timeout, config.connect(NoTls)).await })
            .map_err(|_| PgFailure::TimedOut)?
            .map_err(PgFailure::Driver)?;
        // Driven whenever the session waits for an answer; its own error reaches the caller
        // through the client's next call.
        let connection = runtime.spawn(async move {
            let _ = connection.await;
        });
        Ok(Session {
            runtime,
            client: Some(client),
            connection: Some(connection),
            timeout: self.timeout,
        })
    }

    fn admin(&self) -> Result<Session, TargetError> {
        let session = self
            .connect(&self.admin)
            .map_err(|e| self.fail(format!("admin connection failed: {}", self.describe(&e))))?;
        // The server gives up too when keyd stops waiting (e.g. ALTER ROLE behind a lock).
        let millis = self.timeout.as_millis();
        session
            .call(
                session
                    .client()
                    .batch_execute(&format!("SET statement_timeout = {millis}")),
            )
            .map_err(|e| {
                self.fail(format!(
                    "SET statement_timeout failed: {}",
                    self.describe(&e)
                ))
            })?;
        Ok(session)
    }

    fn login_of<'a>(&'a self, credential: &Credential<'a>) -> &'a str {
        credential.login.unwrap_or(&self.role)
    }

    /// Opens a new session as `credential`: `Ok(false)` when the password is refused.
    fn try_login(&self, credential: &Credential<'_>) -> Result<bool, TargetError> {
        let mut config = self.admin.clone();
        config
            .user(self.login_of(credential))
            .password(credential.password.expose_secret());
        match self.connect(&config) {
            Ok(session) => session
                .call(session.client().simple_query("SELECT 1"))
                .map(|_| true)
                .map_err(|e| self.fail(format!("SELECT 1 failed: {}", self.describe(&e)))),
            Err(e) if matches!(e.code(), Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION) => {
                Ok(false)
            }
            Err(e) => Err(self.fail(format!("login failed: {}", self.describe(&e)))),
        }
    }

    fn role_exists(&self, session: &Session, role: &str) -> Result<bool, TargetError> {
        session
            .call(
                session
                    .client()
                    .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role]),
            )
            .map(|r| r.is_some())
            .map_err(|e| self.fail(format!("cannot read pg_roles: {}", self.describe(&e))))
    }

    fn execute(&self, session: &Session, what: &str, sql: &str) -> Result<(), TargetError> {
        session
            .call(session.client().batch_execute(sql))
            .map_err(|e| self.fail(format!("{what} failed: {}", self.describe(&e))))
    }
}

impl Target for PostgresTarget {
    fn next_login(&self, current: Option<&str>) -> Option<String> {
        match self.strategy {
            PgStrategy::Single => Some(self.role.clone()),
            PgStrategy::Alternating if current == Some(self.role.as_str()) => {
                Some(format!("{}_b", self.role))
            }
            PgStrategy::Alternating => Some(self.role.clone()),
        }
    }

    fn accepts(&self, credential: &Credential<'_>) -> Result<bool, TargetError> {
        self.try_login(credential)
    }

    fn set(
        &self,
        pending: &Credential<'_>,
        _current: Option<&Credential<'_>>,
    ) -> Result<(), TargetError> {
        let login = self.login_of(pending);
        // Computed here: the server receives a verifier, never the password.
        let verifier =
            postgres_protocol::password::scram_sha_256(pending.password.expose_secret().as_bytes());
        debug_assert!(!verifier.contains('\''));
        let session = self.admin()?;
        let alternating = self.strategy == PgStrategy::Alternating;
        if alternating && !self.role_exists(&session, &self.group)? {
            self.execute(
                &session,
                "CREATE ROLE (group)",
                &format!("CREATE ROLE {} NOLOGIN", ident(&self.group)),
            )?;
        }
        if self.role_exists(&session, login)? {
            self.execute(
                &session,
                "ALTER ROLE",
                &format!(
                    "ALTER ROLE {} WITH LOGIN PASSWORD '{verifier}'",
                    ident(login)
                ),
            )?;
        } else {
            self.execute(
                &session,
                "CREATE ROLE",
                &format!("CREATE ROLE {} LOGIN PASSWORD '{verifier}'", ident(login)),
            )?;
        }
        if alternating {
            self.execute(
                &session,
                "GRANT",
                &format!("GRANT {} TO {}", ident(&self.group), ident(login)),
            )?;
        }
        Ok(())
    }

    fn test(&self, pending: &Credential<'_>) -> Result<(), TargetError> {
        if self.try_login(pending)? {
            Ok(())
        } else {
            Err(self.fail(format!(
                "a new login as {:?} with the new password was refused",
                self.login_of(pending)
            )))
        }
    }

    fn retire(&self, old: &Credential<'_>, current: &Credential<'_>) -> Result<(), TargetError> {
        let (old_login, current_login) = (self.login_of(old), self.login_of(current));
        if self.strategy == PgStrategy::Single || old_login == current_login {
            return Ok(()); // the old password stopped working when the new one was set
        }
        let session = self.admin()?;
        if self.role_exists(&session, old_login)? {
            self.execute(
                &session,
                "ALTER ROLE",
                &format!("ALTER ROLE {} PASSWORD NULL", ident(old_login)),
            )?;
        }
        Ok(())
    }
}
