//! The PostgreSQL target. Passwords are set as SCRAM-SHA-256 verifiers computed here
//! (`ALTER ROLE … PASSWORD 'SCRAM-SHA-256$…'`): the server stores what it is given, and the
//! plaintext never reaches it, its logs or `pg_stat_statements`.
//!
//! `single`: one role; between set and a client's reload, a client holding the old password
//! cannot open a new connection (existing connections survive). `alternating`: two login roles
//! (`role` and `role_b`, members of a group role that owns the privileges); each rotation sets
//! the password of the login not in use and delivers both its name and password, so there is
//! no window; retire clears the old login's password.

use postgres::error::SqlState;
use postgres::{Client, Config, NoTls};

use super::{Credential, Target, TargetError};
use crate::policy::PgStrategy;
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
}

/// Quotes an identifier (names were checked by the policy; quoting is belt and braces).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresTarget {
    /// A target from the admin URL (no password in it) and the admin password.
    pub fn new(
        name: &str,
        url: &str,
        admin_password: Option<&SecretString>,
        role: &str,
        strategy: PgStrategy,
        group: &str,
    ) -> Result<Self, TargetError> {
        let mut admin: Config = url.parse().map_err(|e| TargetError {
            target: name.to_owned(),
            message: format!("bad url: {e}"),
        })?;
        admin.connect_timeout(std::time::Duration::from_secs(5));
        if let Some(p) = admin_password {
            admin.password(p.expose_secret());
        }
        Ok(PostgresTarget {
            name: name.to_owned(),
            admin,
            role: role.to_owned(),
            strategy,
            group: group.to_owned(),
        })
    }

    fn fail(&self, message: impl Into<String>) -> TargetError {
        TargetError {
            target: self.name.clone(),
            message: message.into(),
        }
    }

    /// Describes a driver error without any query text (which could hold a verifier).
    fn describe(e: &postgres::Error) -> String {
        match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            // The cause ("Connection refused") sits in the error's source.
            None => match std::error::Error::source(e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        }
    }

    fn admin(&self) -> Result<Client, TargetError> {
        self.admin
            .connect(NoTls)
            .map_err(|e| self.fail(format!("admin connection failed: {}", Self::describe(&e))))
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
        match config.connect(NoTls) {
            Ok(mut client) => client
                .simple_query("SELECT 1")
                .map(|_| true)
                .map_err(|e| self.fail(format!("SELECT 1 failed: {}", Self::describe(&e)))),
            Err(e) if matches!(e.code(), Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION) => {
                Ok(false)
            }
            Err(e) => Err(self.fail(format!("login failed: {}", Self::describe(&e)))),
        }
    }

    fn role_exists(&self, client: &mut Client, role: &str) -> Result<bool, TargetError> {
        client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .map(|r| r.is_some())
            .map_err(|e| self.fail(format!("cannot read pg_roles: {}", Self::describe(&e))))
    }

    fn execute(&self, client: &mut Client, what: &str, sql: &str) -> Result<(), TargetError> {
        client
            .batch_execute(sql)
            .map_err(|e| self.fail(format!("{what} failed: {}", Self::describe(&e))))
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
        let mut client = self.admin()?;
        let alternating = self.strategy == PgStrategy::Alternating;
        if alternating && !self.role_exists(&mut client, &self.group)? {
            self.execute(
                &mut client,
                "CREATE ROLE (group)",
                &format!("CREATE ROLE {} NOLOGIN", ident(&self.group)),
            )?;
        }
        if self.role_exists(&mut client, login)? {
            self.execute(
                &mut client,
                "ALTER ROLE",
                &format!(
                    "ALTER ROLE {} WITH LOGIN PASSWORD '{verifier}'",
                    ident(login)
                ),
            )?;
        } else {
            self.execute(
                &mut client,
                "CREATE ROLE",
                &format!("CREATE ROLE {} LOGIN PASSWORD '{verifier}'", ident(login)),
            )?;
        }
        if alternating {
            self.execute(
                &mut client,
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
        let mut client = self.admin()?;
        if self.role_exists(&mut client, old_login)? {
            self.execute(
                &mut client,
                "ALTER ROLE",
                &format!("ALTER ROLE {} PASSWORD NULL", ident(old_login)),
            )?;
        }
        Ok(())
    }
}
