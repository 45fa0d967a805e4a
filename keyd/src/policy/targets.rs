//! The outside systems a policy names: `[targets.NAME]` (a PostgreSQL, MySQL or Redis server
//! keyd logs into as an admin, a RabbitMQ broker's management API, or a PgBouncer in front of PostgreSQL) and a secret's `target = { … }` (the login or user its values become).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[targets.NAME]`: a PostgreSQL, MySQL or Redis server keyd logs into as an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    /// Its name in the policy.
    pub name: String,
    /// Its kind and kind-specific settings.
    pub kind: TargetKind,
    /// The admin connection URL, without a password.
    pub url: String,
    /// Where the admin password comes from.
    pub password: AdminPassword,
    /// How long one connection, login or command may take before keyd gives up
    /// (`timeout`, default [`TargetSpec::DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Whether passwords may go to the target in a form anyone on the path (or the server's
    /// operator) could replay: PostgreSQL cleartext or MD5 password authentication, Redis
    /// `AUTH` over plain TCP to a host other than loopback (`allow_insecure_auth`, default
    /// false).
    pub allow_insecure_auth: bool,
}

impl TargetSpec {
    /// The timeout of a target whose policy sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
}

/// What a target is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A PostgreSQL server.
    Postgres {
        /// The `pgbouncer` target whose `auth_file` receives every role this target sets.
        pgbouncer: Option<String>,
    },
    /// A PgBouncer whose `auth_file` holds the verifiers of the roles of the PostgreSQL
    /// targets that name it; its `url` is the admin console (`RELOAD`) and, with another
    /// database, where a login is tested through the pooler.
    Pgbouncer {
        /// The `auth_file` PgBouncer reads (`userlist.txt`).
        auth_file: PathBuf,
    },
    /// A MySQL or MariaDB server.
    Mysql,
    /// A RabbitMQ broker: `url` is its management API (HTTP), `amqp` where logins are tested.
    Rabbitmq {
        /// The AMQP 0-9-1 address (`amqp://HOST:PORT/`, `amqps://…?ca=PATH`) new passwords are
        /// tested at.
        amqp: String,
    },
    /// A Redis server.
    Redis {
        /// The admin user keyd logs in as (`default` for requirepass servers).
        user: String,
        /// Replicas whose `masterauth` follows a requirepass change.
        replicas: Vec<String>,
    },
}

/// Where a target's admin password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminPassword {
    /// No password (trust or peer authentication).
    None,
    /// The current value of a secret of this stack (which may itself be rotated).
    Secret(String),
    /// A file (e.g. a mounted Docker secret).
    File(PathBuf),
}

/// A secret's `target = { … }`: how its values reach a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretTarget {
    /// A PostgreSQL login role.
    Postgres {
        /// The target's name.
        target: String,
        /// The role (for `alternating`, the first of the two logins and the group's base name).
        role: String,
        /// How the password changes.
        strategy: LoginStrategy,
        /// Companion output carrying the login in use (`alternating`).
        user_secret: Option<String>,
        /// The group role both logins belong to (`alternating`; default `<role>_group`).
        group: String,
    },
    /// A MySQL or MariaDB account, at each of its hosts.
    Mysql {
        /// The target's name.
        target: String,
        /// The user name (for `alternating`, the first of the two logins).
        user: String,
        /// The host part of each account (`'user'@'host'`; default `["%"]`).
        hosts: Vec<String>,
        /// How the password changes.
        strategy: LoginStrategy,
        /// Companion output carrying the login in use (`alternating`).
        user_secret: Option<String>,
    },
    /// A RabbitMQ user.
    Rabbitmq {
        /// The target's name.
        target: String,
        /// The user name (for `alternating`, the first of the two logins).
        user: String,
        /// The virtual host whose permissions the second login copies and logins are tested
        /// on (default `/`).
        vhost: String,
        /// How the password changes.
        strategy: LoginStrategy,
        /// Companion output carrying the login in use (`alternating`).
        user_secret: Option<String>,
    },
    /// A Redis user.
    Redis {
        /// The target's name.
        target: String,
        /// The ACL user (`default` with `mode = "requirepass"`).
        user: String,
        /// ACL rules given to the user when keyd creates it.
        acl: String,
        /// ACL or requirepass.
        mode: RedisMode,
    },
}

/// How a login's password changes (PostgreSQL, MySQL and RabbitMQ targets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoginStrategy {
    /// One login; its password is replaced (a documented window for new connections).
    Single,
    /// Two logins used in turn; no window.
    Alternating,
}

/// Redis password modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// `ACL SETUSER`: old and new passwords both work during the overlap.
    Acl,
    /// `CONFIG SET requirepass`: a hard cut-over, for servers without ACLs.
    Requirepass,
}

impl SecretTarget {
    /// The target's name.
    pub fn target(&self) -> &str {
        match self {
            SecretTarget::Postgres { target, .. }
            | SecretTarget::Mysql { target, .. }
            | SecretTarget::Rabbitmq { target, .. }
            | SecretTarget::Redis { target, .. } => target,
        }
    }

    /// The companion output that carries the login in use (`user_secret`), if any.
    pub fn user_secret(&self) -> Option<&str> {
        match self {
            SecretTarget::Postgres { user_secret, .. }
            | SecretTarget::Mysql { user_secret, .. }
            | SecretTarget::Rabbitmq { user_secret, .. } => user_secret.as_deref(),
            SecretTarget::Redis { .. } => None,
        }
    }
}
