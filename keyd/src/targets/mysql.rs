//! The MySQL and MariaDB target. Passwords are set as `mysql_native_password` hashes computed
//! here (`ALTER USER … IDENTIFIED WITH mysql_native_password AS '*<SHA1(SHA1(pw))>'`, which
//! MySQL 5.7+ and MariaDB 10.4+ both accept): the plaintext never reaches the server, its
//! general log, its binary log or a replica.
//!
//! Each account exists once per entry of `hosts` (`'user'@'host'`, default `%`) and all of them
//! get the same hash in one statement. `single`: one account; from set until a client reloads,
//! a client holding the old password cannot open a new connection (open ones survive).
//! `alternating`: two accounts, `user` and `user_b`; each rotation gives the one not in use the
//! grants of the one in use (`SHOW GRANTS`, re-granted to it), then the new password, and
//! delivers both its name and password, so there is no window; retire locks the old account
//! (`ACCOUNT LOCK`), and the next set unlocks it with a new password.
//!
//! Set is safe to repeat after a crash: an account is created locked (`CREATE USER IF NOT
//! EXISTS … ACCOUNT LOCK`) and its grants copied before its password is set and it is
//! unlocked, so once the new password logs in (the engine's probe) the set is complete.
//!
//! Connections use TLS as the URL's `ssl-mode` says (`DISABLED`, `REQUIRED`, `VERIFY_CA`,
//! `VERIFY_IDENTITY`, MySQL's names, with `ssl-ca=PATH` as the CA; default `VERIFY_IDENTITY`,
//! or `DISABLED` for a loopback host). Every call (connecting with its login, each statement)
//! is bounded by the target's `timeout`; admin sessions also set `lock_wait_timeout`, so the
//! server gives up a statement stuck behind a lock when keyd does.

use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::mysql_wire::{Login, Session, WireError, native_hash};
use super::tls::{self, TlsMode};
use super::{Credential, Target, TargetError};
use crate::policy::{LoginStrategy, duration};
use crate::secret::SecretString;

/// A MySQL or MariaDB account (one per host) whose password keyd rotates.
pub struct MysqlTarget {
    /// The target's name in the policy.
    pub name: String,
    /// Where the server listens.
    pub host: String,
    /// Its port (3306 unless the URL says otherwise).
    pub port: u16,
    /// The admin user, from the URL.
    pub admin_user: String,
    /// The admin password (empty when there is none).
    pub admin_password: SecretString,
    /// The account's user name (the first login of the alternating strategy).
    pub user: String,
    /// The host part of each account (`'user'@'host'`).
    pub hosts: Vec<String>,
    /// Single or alternating.
    pub strategy: LoginStrategy,
    /// How long connecting (with its login) or one statement may take.
    pub timeout: Duration,
    /// TLS, unless the mode is `DISABLED`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// What a `mysql://user@host:port/?ssl-mode=…&ssl-ca=…` URL says.
#[derive(Debug, PartialEq, Eq)]
struct MysqlUrl {
    user: String,
    host: String,
    port: u16,
    ssl_mode: Option<String>,
    ssl_ca: Option<String>,
}

/// The host and port a `mysql://` admin URL connects to (for `probe`).
pub(super) fn host_and_port(url: &str) -> Option<(String, u16)> {
    MysqlUrl::parse(url).ok().map(|u| (u.host, u.port))
}

impl MysqlUrl {
    fn parse(url: &str) -> Result<MysqlUrl, String> {
        let rest = url
            .strip_prefix("mysql://")
            .ok_or("it does not start with mysql://")?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = rest.split('/').next().unwrap_or(rest);
        let Some((user, host_port)) = authority.rsplit_once('@') else {
            return Err("it names no user (expected mysql://USER@HOST:PORT/)".into());
        };
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (
                host,
                port.parse().map_err(|_| format!("bad port {port:?}"))?,
            ),
            _ => (host_port, 3306),
        };
        if host.is_empty() || user.is_empty() {
            return Err("it names no host or no user (expected mysql://USER@HOST:PORT/)".into());
        }
        let (mut ssl_mode, mut ssl_ca) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("ssl-mode", v)) => ssl_mode = Some(super::percent_decode(v)),
                Some(("ssl-ca", v)) => ssl_ca = Some(super::percent_decode(v)),
                _ => {
                    return Err(format!(
                        "unknown url parameter {pair:?} (expected ssl-mode=… or ssl-ca=PATH)"
                    ));
                }
            }
        }
        Ok(MysqlUrl {
            user: super::percent_decode(user),
            host: host.to_owned(),
            port,
            ssl_mode,
            ssl_ca,
        })
    }
}

/// MySQL's `ssl-mode` names; `PREFERRED` (plaintext when the server has no TLS) is refused.
fn tls_mode(value: &str) -> Option<TlsMode> {
    match value.to_ascii_uppercase().as_str() {
        "DISABLED" => Some(TlsMode::Disable),
        "REQUIRED" => Some(TlsMode::Require),
        "VERIFY_CA" => Some(TlsMode::VerifyCa),
        "VERIFY_IDENTITY" => Some(TlsMode::VerifyFull),
        _ => None,
    }
}

/// `'user'@'host'` (names were checked by the policy; escaping is belt and braces).
fn account(user: &str, host: &str) -> String {
    let quote = |s: &str| s.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{}'@'{}'", quote(user), quote(host))
}

/// A server message without any quoted statement text: a syntax error quotes the statement
/// from where it failed (`… near '…'`), which may hold a password hash.
fn scrub(message: &str) -> &str {
    let cut = [" near '", "'*"]
        .iter()
        .filter_map(|m| message.find(m))
        .min()
        .unwrap_or(message.len());
    &message[..cut]
}

/// Error numbers of a login refused for its password or its account: wrong password (1045),
/// an account without a password (1698), an expired password (1862), a locked account
/// (MariaDB 4151, MySQL 3118).
const LOGIN_REFUSED: [u16; 5] = [1045, 1698, 1862, 3118, 4151];
/// `SHOW GRANTS FOR` an account that does not exist.
const NO_SUCH_GRANT: u16 = 1141;

impl MysqlTarget {
    /// A target from the admin URL (no password in it) and the admin password, for `user` at
    /// each of `hosts`, whose calls each take at most `timeout`.
    #[allow(clippy::too_many_arguments)] // the policy's fields, each named at the one caller
    pub fn new(
        name: &str,
        url: &str,
        admin_password: Option<SecretString>,
        user: &str,
        hosts: &[String],
        strategy: LoginStrategy,
        timeout: Duration,
        allow_insecure_auth: bool,
    ) -> Result<Self, TargetError> {
        let fail = |message: String| TargetError {
            target: name.to_owned(),
            message,
        };
        let parsed = MysqlUrl::parse(url).map_err(|e| fail(format!("bad url: {e}")))?;
        let mode = match parsed.ssl_mode.as_deref() {
            Some(value) => tls_mode(value).ok_or_else(|| {
                fail(format!("bad url: ssl-mode={value:?} (expected DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY)"))
            })?,
            None => match TlsMode::default_for(&parsed.host) {
                TlsMode::Disable if parsed.ssl_ca.is_some() => TlsMode::VerifyCa,
                mode => mode,
            },
        };
        // As libpq does with a CA file: a CA named is a CA used.
        let mode = match mode {
            TlsMode::Require if parsed.ssl_ca.is_some() => TlsMode::VerifyCa,
            mode => mode,
        };
        if mode == TlsMode::Disable && !tls::is_loopback(&parsed.host) && !allow_insecure_auth {
            return Err(fail(format!(
                "ssl-mode=DISABLED to {}, another host: the password hashes keyd sets and the logins it proves would cross the network in the clear; use TLS, or set allow_insecure_auth = true on the target to allow it",
                parsed.host
            )));
        }
        let tls = match mode {
            TlsMode::Disable => None,
            mode => Some(
                tls::client_config(mode, parsed.ssl_ca.as_deref().map(std::path::Path::new))
                    .map_err(fail)?,
            ),
        };
        Ok(MysqlTarget {
            name: name.to_owned(),
            host: parsed.host,
            port: parsed.port,
            admin_user: parsed.user,
            admin_password: admin_password.unwrap_or_else(|| SecretString::new(String::new())),
            user: user.to_owned(),
            hosts: hosts.to_vec(),
            strategy,
            timeout,
            tls,
        })
    }

    fn fail(&self, message: impl Into<String>) -> TargetError {
        TargetError {
            target: self.name.clone(),
            message: message.into(),
        }
    }

    /// Describes a failure without statement text or values.
    fn describe(&self, e: &WireError) -> String {
        match e {
            WireError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => format!(
                "no answer, timed out after {}",
                duration::format(self.timeout)
            ),
            WireError::Io(e) => e.to_string(),
            WireError::Server(s) => format!("{} ({} {})", scrub(&s.message), s.code, s.state),
            WireError::Malformed(m) => format!("malformed answer: {m}"),
            WireError::Refused(m) | WireError::Plugin(m) => m.clone(),
        }
    }

    fn connect(&self, user: &str, password: &SecretString) -> Result<Session, WireError> {
        let login = Login {
            user,
            password,
            tls: self.tls.clone(),
        };
        Session::open(&self.host, self.port, self.timeout, &login)
    }

    fn admin(&self) -> Result<Session, TargetError> {
        let mut session = self
            .connect(&self.admin_user, &self.admin_password)
            .map_err(|e| self.fail(format!("admin connection failed: {}", self.describe(&e))))?;
        // The server gives up too when keyd stops waiting (e.g. ALTER USER behind a lock).
        let seconds = self.timeout.as_secs_f64().ceil().max(1.0);
        self.execute(
            &mut session,
            "SET lock_wait_timeout",
            &format!("SET SESSION lock_wait_timeout = {seconds}"),
        )?;
        Ok(session)
    }

    fn execute(&self, session: &mut Session, what: &str, sql: &str) -> Result<(), TargetError> {
        session
            .execute(sql)
            .map_err(|e| self.fail(format!("{what} failed: {}", self.describe(&e))))
    }

    fn login_of<'a>(&'a self, credential: &Credential<'a>) -> &'a str {
        credential.login.unwrap_or(&self.user)
    }

    /// Opens a new session as `credential`: `Ok(false)` when the server refuses the password
    /// or the account (or the account uses a plugin keyd does not speak, which set replaces).
    fn try_login(&self, credential: &Credential<'_>) -> Result<bool, TargetError> {
        let user = self.login_of(credential);
        match self.connect(user, credential.password) {
            Ok(mut session) => match session.query("SELECT 1") {
                Ok(rows) if rows.len() == 1 => Ok(true),
                Ok(_) => Err(self.fail("SELECT 1 answered other than one row")),
                Err(e) => Err(self.fail(format!("SELECT 1 failed: {}", self.describe(&e)))),
            },
            Err(WireError::Server(s)) if LOGIN_REFUSED.contains(&s.code) => Ok(false),
            Err(WireError::Plugin(_)) => Ok(false),
            Err(e) => Err(self.fail(format!("login failed: {}", self.describe(&e)))),
        }
    }

    /// Gives `to` at `host` exactly the grants `from` has there (none when `from` does not
    /// exist there): every grant of `to` is revoked, then each line of `SHOW GRANTS` for
    /// `from` is granted to `to`.
    fn copy_grants(
        &self,
        session: &mut Session,
        from: &str,
        to: &str,
        host: &str,
    ) -> Result<(), TargetError> {
        let rows = match session.query(&format!("SHOW GRANTS FOR {}", account(from, host))) {
            Ok(rows) => rows,
            Err(WireError::Server(s)) if s.code == NO_SUCH_GRANT => Vec::new(),
            Err(e) => {
                return Err(self.fail(format!("SHOW GRANTS failed: {}", self.describe(&e))));
            }
        };
        self.execute(
            session,
            "REVOKE",
            &format!(
                "REVOKE ALL PRIVILEGES, GRANT OPTION FROM {}",
                account(to, host)
            ),
        )?;
        for (i, row) in rows.iter().enumerate() {
            let Some(Some(line)) = row.first() else {
                continue;
            };
            let statement = regrant(line, from, to, host).map_err(|e| {
                self.fail(format!(
                    "cannot copy line {} of SHOW GRANTS FOR {}: {e}",
                    i + 1,
                    account(from, host)
                ))
            })?;
            if let Some(statement) = statement {
                self.execute(session, "GRANT (copied)", &statement)?;
            }
        }
        Ok(())
    }
}

/// The statement that gives `to@host` what `line` (of `SHOW GRANTS FOR from@host`) gives
/// `from`: the grantee replaced, and whatever follows it (MariaDB's `IDENTIFIED BY PASSWORD`,
/// `REQUIRE`, resource limits: account settings, not grants) dropped except `WITH GRANT
/// OPTION` and `WITH ADMIN OPTION`. `None` for `GRANT USAGE ON *.*`, which grants nothing.
fn regrant(line: &str, from: &str, to: &str, host: &str) -> Result<Option<String>, String> {
    if line.starts_with("GRANT USAGE ON *.* TO ") {
        return Ok(None);
    }
    if !["GRANT ", "REVOKE ", "SET DEFAULT ROLE "]
        .iter()
        .any(|p| line.starts_with(p))
    {
        return Err("not a GRANT, REVOKE or SET DEFAULT ROLE statement".into());
    }
    let grantees = [format!("`{from}`@`{host}`"), format!("'{from}'@'{host}'")];
    let found = [" TO ", " FROM ", " FOR "]
        .iter()
        .flat_map(|keyword| {
            grantees
                .iter()
                .map(move |g| (format!("{keyword}{g}"), keyword.len()))
        })
        .filter_map(|(needle, keyword)| line.find(&needle).map(|at| (at, needle.len(), keyword)))
        .min();
    let Some((at, len, keyword)) = found else {
        return Err("its grantee is not the account".into());
    };
    let tail = &line[at + len..];
    let mut out = format!("{}{}", &line[..at + keyword], account(to, host));
    for option in [" WITH GRANT OPTION", " WITH ADMIN OPTION"] {
        if tail.contains(option) {
            out.push_str(option);
        }
    }
    Ok(Some(out))
}

impl Target for MysqlTarget {
    fn next_login(&self, current: Option<&str>) -> Option<String> {
        super::next_login(self.strategy, &self.user, current)
    }

    fn accepts(&self, credential: &Credential<'_>) -> Result<bool, TargetError> {
        self.try_login(credential)
    }

    fn set(
        &self,
        pending: &Credential<'_>,
        current: Option<&Credential<'_>>,
    ) -> Result<(), TargetError> {
        let login = self.login_of(pending);
        // Computed here: the server receives the hash, never the password.
        let hash = native_hash(pending.password);
        debug_assert!(!hash.contains('\''));
        let mut session = self.admin()?;
        for host in &self.hosts {
            self.execute(
                &mut session,
                "CREATE USER",
                &format!(
                    "CREATE USER IF NOT EXISTS {} ACCOUNT LOCK",
                    account(login, host)
                ),
            )?;
        }
        if let Some(from) = current.map(|c| self.login_of(c))
            && self.strategy == LoginStrategy::Alternating
            && from != login
        {
            for host in &self.hosts {
                self.copy_grants(&mut session, from, login, host)?;
            }
        }
        // One statement for every host: the probe (one login, matching one of them) then
        // proves all of them were set.
        let accounts: Vec<String> = self
            .hosts
            .iter()
            .map(|host| {
                format!(
                    "{} IDENTIFIED WITH mysql_native_password AS '{}'",
                    account(login, host),
                    &*hash
                )
            })
            .collect();
        let statement =
            Zeroizing::new(format!("ALTER USER {} ACCOUNT UNLOCK", accounts.join(", ")));
        drop(Zeroizing::new(accounts));
        self.execute(&mut session, "ALTER USER", &statement)
    }

    fn test(&self, pending: &Credential<'_>) -> Result<(), TargetError> {
        let accepted = self.try_login(pending)?;
        super::new_login_tested(&self.name, self.login_of(pending), accepted)
    }

    fn retire(&self, old: &Credential<'_>, current: &Credential<'_>) -> Result<(), TargetError> {
        let (old_login, current_login) = (self.login_of(old), self.login_of(current));
        if self.strategy == LoginStrategy::Single || old_login == current_login {
            return Ok(()); // the old password stopped working when the new one was set
        }
        let accounts: Vec<String> = self
            .hosts
            .iter()
            .map(|host| account(old_login, host))
            .collect();
        let mut session = self.admin()?;
        self.execute(
            &mut session,
            "ALTER USER … ACCOUNT LOCK",
            &format!("ALTER USER IF EXISTS {} ACCOUNT LOCK", accounts.join(", ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<MysqlTarget, TargetError> {
        MysqlTarget::new(
            "metadb",
            url,
            None,
            "airflow",
            &["%".to_owned()],
            LoginStrategy::Single,
            Duration::from_secs(10),
            false,
        )
    }

    #[test]
    fn mysql_urls() {
        assert_eq!(
            MysqlUrl::parse("mysql://admin@db:3307/?ssl-mode=VERIFY_CA&ssl-ca=%2Fetc%2Fca.pem")
                .unwrap(),
            MysqlUrl {
                user: "admin".into(),
                host: "db".into(),
                port: 3307,
                ssl_mode: Some("VERIFY_CA".into()),
                ssl_ca: Some("/etc/ca.pem".into()),
            }
        );
        assert_eq!(MysqlUrl::parse("mysql://root@[::1]").unwrap().port, 3306);
        assert_eq!(MysqlUrl::parse("mysql://root@[::1]").unwrap().host, "[::1]");
        for (url, error) in [
            ("mysql://db:3306/", "it names no user"),
            ("mysql://a@db:x/", "bad port \"x\""),
            (
                "mysql://a@db/?sslmode=require",
                "unknown url parameter \"sslmode=require\"",
            ),
            ("postgres://a@db/", "it does not start with mysql://"),
        ] {
            let e = MysqlUrl::parse(url).unwrap_err();
            assert!(e.starts_with(error), "{url}: {e}");
        }
    }

    #[test]
    fn tls_is_verified_off_loopback_and_off_on_it_unless_the_url_says_otherwise() {
        assert!(
            target("mysql://admin@127.0.0.1:3306/")
                .unwrap()
                .tls
                .is_none()
        );
        assert!(
            target("mysql://admin@localhost/?ssl-mode=required")
                .unwrap()
                .tls
                .is_some()
        );
        let e = target("mysql://admin@db.example.com/?ssl-ca=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .starts_with("target metadb: cannot read the CA file /nonexistent/ca.pem"),
            "a host other than loopback verifies by default: {e}"
        );
        let e = target("mysql://admin@127.0.0.1/?ssl-mode=PREFERRED")
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "target metadb: bad url: ssl-mode=\"PREFERRED\" (expected DISABLED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY)"
        );
        let e = target("mysql://admin@db.example.com/?ssl-mode=DISABLED")
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("target metadb: ssl-mode=DISABLED to db.example.com, another host: the password hashes keyd sets and the logins it proves would cross the network in the clear"),
            "{e}"
        );
    }

    #[test]
    fn grants_are_copied_to_the_other_login_without_the_password_hash() {
        let copy = |line: &str| regrant(line, "airflow", "airflow_b", "%");
        assert_eq!(
            copy(
                "GRANT USAGE ON *.* TO `airflow`@`%` IDENTIFIED BY PASSWORD '*7C67218EF7410F248763DC99AEDC705367393C4A'"
            ),
            Ok(None)
        );
        assert_eq!(
            copy("GRANT SELECT, INSERT ON *.* TO `airflow`@`%` IDENTIFIED BY PASSWORD '*7C67218EF7410F248763DC99AEDC705367393C4A' WITH GRANT OPTION").unwrap().unwrap(),
            "GRANT SELECT, INSERT ON *.* TO 'airflow_b'@'%' WITH GRANT OPTION"
        );
        assert_eq!(
            copy("GRANT ALL PRIVILEGES ON `airflow`.* TO `airflow`@`%`")
                .unwrap()
                .unwrap(),
            "GRANT ALL PRIVILEGES ON `airflow`.* TO 'airflow_b'@'%'"
        );
        assert_eq!(
            copy("GRANT `app_role` TO `airflow`@`%` WITH ADMIN OPTION")
                .unwrap()
                .unwrap(),
            "GRANT `app_role` TO 'airflow_b'@'%' WITH ADMIN OPTION"
        );
        assert_eq!(
            copy("SET DEFAULT ROLE `app_role` FOR `airflow`@`%`")
                .unwrap()
                .unwrap(),
            "SET DEFAULT ROLE `app_role` FOR 'airflow_b'@'%'"
        );
        assert_eq!(
            copy("REVOKE INSERT ON `mysql`.* FROM `airflow`@`%`")
                .unwrap()
                .unwrap(),
            "REVOKE INSERT ON `mysql`.* FROM 'airflow_b'@'%'"
        );
        assert!(copy("GRANT SELECT ON *.* TO `other`@`%`").is_err());
        assert!(copy("CREATE USER `airflow`@`%`").is_err());
    }

    #[test]
    fn server_messages_lose_the_statement_they_quote() {
        assert_eq!(
            scrub(
                "You have an error in your SQL syntax; check the manual near 'AS '*7C67218EF' ACCOUNT UNLOCK' at line 1"
            ),
            "You have an error in your SQL syntax; check the manual"
        );
        assert_eq!(
            scrub("Operation ALTER USER failed for 'airflow'@'%'"),
            "Operation ALTER USER failed for 'airflow'@'%'"
        );
    }

    #[test]
    fn alternating_flips_between_the_user_and_its_b_login() {
        let mut t = target("mysql://admin@127.0.0.1/").unwrap();
        assert_eq!(t.next_login(None).as_deref(), Some("airflow"));
        assert_eq!(t.next_login(Some("airflow")).as_deref(), Some("airflow"));
        t.strategy = LoginStrategy::Alternating;
        assert_eq!(t.next_login(None).as_deref(), Some("airflow"));
        assert_eq!(t.next_login(Some("airflow")).as_deref(), Some("airflow_b"));
        assert_eq!(t.next_login(Some("airflow_b")).as_deref(), Some("airflow"));
    }
}
