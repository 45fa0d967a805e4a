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
//! With a PgBouncer in front (`pgbouncer = "pool"`), the same verifier also goes to the pool's
//! `auth_file` (see [`pgbouncer`](super::pgbouncer)), and a password is accepted or tested only
//! when it logs in both directly and through the pooler.
//!
//! Connections, TLS and timeouts are [`pg_client`](super::pg_client)'s. Admin sessions also
//! set `statement_timeout`, so the server abandons a statement keyd stopped waiting for.

use std::time::Duration;

use super::pg_client::{PgClient, Session};
use super::pgbouncer::PgbouncerPool;
use super::{Credential, Target, TargetError};
use crate::policy::LoginStrategy;
use crate::secret::SecretString;

/// A PostgreSQL role whose password keyd rotates.
pub struct PostgresTarget {
    /// The target's name in the policy.
    pub name: String,
    /// The server, as the admin URL names it (with the admin password, if any).
    client: PgClient,
    /// The role (the first login of the alternating strategy).
    pub role: String,
    /// Single or alternating.
    pub strategy: LoginStrategy,
    /// The group role of the alternating strategy.
    pub group: String,
    /// The PgBouncer whose `auth_file` holds this target's roles too.
    pool: Option<PgbouncerPool>,
}

/// Quotes an identifier (names were checked by the policy; quoting is belt and braces).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresTarget {
    /// A target from the admin URL (no password in it) and the admin password, whose calls
    /// each take at most `timeout`.
    #[allow(clippy::too_many_arguments)] // the policy's fields, each named at the one caller
    pub fn new(
        name: &str,
        url: &str,
        admin_password: Option<&SecretString>,
        role: &str,
        strategy: LoginStrategy,
        group: &str,
        timeout: Duration,
        allow_insecure_auth: bool,
    ) -> Result<Self, TargetError> {
        Ok(PostgresTarget {
            name: name.to_owned(),
            client: PgClient::new(name, url, admin_password, timeout, allow_insecure_auth)?,
            role: role.to_owned(),
            strategy,
            group: group.to_owned(),
            pool: None,
        })
    }

    /// This target with `pool`, whose `auth_file` receives every role it sets.
    pub fn with_pgbouncer(mut self, pool: PgbouncerPool) -> Self {
        self.pool = Some(pool);
        self
    }

    fn fail(&self, message: impl Into<String>) -> TargetError {
        self.client.fail(message)
    }

    fn admin(&self) -> Result<Session, TargetError> {
        let session = self.client.admin_session()?;
        // The server gives up too when keyd stops waiting (e.g. ALTER ROLE behind a lock).
        let millis = self.client.timeout.as_millis();
        session
            .call(
                session
                    .client()
                    .batch_execute(&format!("SET statement_timeout = {millis}")),
            )
            .map_err(|e| {
                self.fail(format!(
                    "SET statement_timeout failed: {}",
                    self.client.describe(&e)
                ))
            })?;
        Ok(session)
    }

    fn login_of<'a>(&'a self, credential: &Credential<'a>) -> &'a str {
        credential.login.unwrap_or(&self.role)
    }

    /// Opens a new session as `credential` (directly, then through the pool if there is
    /// one): `Ok(false)` when the password is refused.
    fn try_login(&self, credential: &Credential<'_>) -> Result<bool, TargetError> {
        let login = self.login_of(credential);
        if !self.client.try_login(login, credential.password, None)? {
            return Ok(false);
        }
        match &self.pool {
            Some(pool) => {
                pool.try_login(login, credential.password, self.client.config.get_dbname())
            }
            None => Ok(true),
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
            .map_err(|e| {
                self.fail(format!(
                    "cannot read pg_roles: {}",
                    self.client.describe(&e)
                ))
            })
    }

    fn execute(&self, session: &Session, what: &str, sql: &str) -> Result<(), TargetError> {
        session
            .call(session.client().batch_execute(sql))
            .map_err(|e| self.fail(format!("{what} failed: {}", self.client.describe(&e))))
    }
}

impl Target for PostgresTarget {
    fn next_login(&self, current: Option<&str>) -> Option<String> {
        super::next_login(self.strategy, &self.role, current)
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
        let alternating = self.strategy == LoginStrategy::Alternating;
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
        drop(session);
        // The same verifier (salt and iterations): PgBouncer's SCRAM pass-through logs in to
        // the server with the keys the client proved, which only match an identical one.
        if let Some(pool) = &self.pool {
            pool.set(login, &verifier)?;
        }
        Ok(())
    }

    fn test(&self, pending: &Credential<'_>) -> Result<(), TargetError> {
        let login = self.login_of(pending);
        let accepted = self.client.try_login(login, pending.password, None)?;
        super::new_login_tested(&self.name, login, accepted)?;
        if let Some(pool) = &self.pool {
            let dbname = self.client.config.get_dbname();
            let accepted = pool.try_login(login, pending.password, dbname)?;
            super::new_login_tested(pool.name(), login, accepted)?;
        }
        Ok(())
    }

    fn retire(&self, old: &Credential<'_>, current: &Credential<'_>) -> Result<(), TargetError> {
        let (old_login, current_login) = (self.login_of(old), self.login_of(current));
        if self.strategy == LoginStrategy::Single || old_login == current_login {
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
        drop(session);
        if let Some(pool) = &self.pool {
            pool.remove(old_login)?;
        }
        Ok(())
    }
}
