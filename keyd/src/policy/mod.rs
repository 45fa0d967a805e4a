//! Policies: one TOML file per stack declaring its secrets and where they are delivered.
//! This module owns the validated model; `parse` turns text into it, reporting every problem
//! with file, line and column.

pub mod duration;
mod parse;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::material::password::Alphabet;
use crate::material::template::Piece;
use crate::material::tls::TlsSpec;
use crate::material::token::Encoding;

/// A validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Where it was read from.
    pub path: PathBuf,
    /// The text as read (recorded in the store as "last applied").
    pub source: String,
    /// The stack's name (`[stack] name`).
    pub stack: String,
    /// Free text.
    pub description: Option<String>,
    /// Where values are delivered.
    pub sinks: Sinks,
    /// The secrets, in the order the policy declares them.
    pub secrets: Vec<SecretSpec>,
    /// Outside systems that must accept new values (`[targets.NAME]`).
    pub targets: Vec<TargetSpec>,
}

/// `[targets.NAME]`: a PostgreSQL server or Redis keyd logs into as an admin.
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
}

/// What a target is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// A PostgreSQL server.
    Postgres,
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
        strategy: PgStrategy,
        /// Companion output carrying the login in use (`alternating`).
        user_secret: Option<String>,
        /// The group role both logins belong to (`alternating`; default `<role>_group`).
        group: String,
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

/// PostgreSQL password strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PgStrategy {
    /// One role; its password is replaced (a documented window for new connections).
    Single,
    /// Two login roles used in turn; no window.
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
            SecretTarget::Postgres { target, .. } | SecretTarget::Redis { target, .. } => target,
        }
    }
}

/// The kinds of secret, as named in policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Random characters.
    Password,
    /// Random bytes, encoded.
    Token,
    /// A Fernet key.
    Fernet,
    /// An RSA signing pair.
    Rsa,
    /// A self-signed certificate and key.
    Tls,
    /// A fixed value.
    Literal,
    /// Rendered from other values.
    Template,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 7] = [
        Kind::Password,
        Kind::Token,
        Kind::Fernet,
        Kind::Rsa,
        Kind::Tls,
        Kind::Literal,
        Kind::Template,
    ];

    /// The policy name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Password => "password",
            Kind::Token => "token",
            Kind::Fernet => "fernet",
            Kind::Rsa => "rsa",
            Kind::Tls => "tls",
            Kind::Literal => "literal",
            Kind::Template => "template",
        }
    }

    /// Whether values are random (made once, changed only by rotation) rather than derived from
    /// the policy (literal, template), which follow the policy's text.
    pub fn is_random(self) -> bool {
        !matches!(self, Kind::Literal | Kind::Template)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared secret.
#[derive(Clone, Debug)]
pub struct SecretSpec {
    /// Its name: the file name under the files sink, the variable name in an env file.
    pub name: String,
    /// How values are made.
    pub kind: KindSpec,
    /// Rotation interval.
    pub rotate: Option<Duration>,
    /// How long the previous value stays valid after a rotation.
    pub grace: Option<Duration>,
    /// Free text.
    pub description: Option<String>,
    /// The outside system that must accept its values.
    pub target: Option<SecretTarget>,
    /// Line of its table in the policy (for messages).
    pub line: usize,
}

/// How a fernet secret is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FernetDelivery {
    /// `new,old,…` (Airflow, MultiFernet): the first encrypts, all decrypt.
    List,
    /// The newest key alone.
    Primary,
}

/// Kind-specific parameters, validated.
#[derive(Clone, Debug)]
pub enum KindSpec {
    /// `kind = "password"`.
    Password {
        /// Characters.
        length: usize,
        /// Drawn from.
        alphabet: Alphabet,
    },
    /// `kind = "token"`.
    Token {
        /// Random bytes.
        bytes: usize,
        /// Written as.
        encoding: Encoding,
    },
    /// `kind = "fernet"`.
    Fernet {
        /// Keys held in the delivered list during overlap.
        keep: usize,
        /// List or primary.
        deliver: FernetDelivery,
    },
    /// `kind = "rsa"`.
    Rsa {
        /// Modulus size.
        bits: usize,
        /// Name under which the public PEM is delivered.
        public: Option<String>,
        /// Name under which the JWKS is delivered.
        jwks: Option<String>,
        /// How long a new key is published (in the JWKS) before it signs.
        publish_ahead: Option<Duration>,
    },
    /// `kind = "tls"`.
    Tls {
        /// Name under which the private key is delivered.
        key: String,
        /// Certificate contents.
        spec: TlsSpec,
    },
    /// `kind = "literal"`.
    Literal {
        /// The value (not secret: it is in the policy).
        value: String,
    },
    /// `kind = "template"`.
    Template {
        /// The template text.
        text: String,
        /// Its parsed form.
        pieces: Vec<Piece>,
    },
}

impl KindSpec {
    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            KindSpec::Password { .. } => Kind::Password,
            KindSpec::Token { .. } => Kind::Token,
            KindSpec::Fernet { .. } => Kind::Fernet,
            KindSpec::Rsa { .. } => Kind::Rsa,
            KindSpec::Tls { .. } => Kind::Tls,
            KindSpec::Literal { .. } => Kind::Literal,
            KindSpec::Template { .. } => Kind::Template,
        }
    }
}

/// Which part of a secret's material an output carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The value itself (private key PEM for rsa, certificate PEM for tls).
    Main,
    /// An rsa secret's public key PEM.
    PublicPem,
    /// An rsa secret's JWKS.
    Jwks,
    /// A tls secret's private key PEM.
    TlsKey,
    /// The login a password belongs to (PostgreSQL `alternating` strategy).
    Login,
}

/// One delivered name: a secret's own name or a companion (`public`, `jwks`, `key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The delivered name.
    pub name: String,
    /// The secret it comes from.
    pub secret: String,
    /// Which part.
    pub part: Part,
}

impl SecretSpec {
    /// Every name this secret is delivered under, its own first.
    pub fn outputs(&self) -> Vec<Output> {
        let mut out = vec![Output {
            name: self.name.clone(),
            secret: self.name.clone(),
            part: Part::Main,
        }];
        let mut companion = |name: &String, part| {
            out.push(Output {
                name: name.clone(),
                secret: self.name.clone(),
                part,
            })
        };
        match &self.kind {
            KindSpec::Rsa { public, jwks, .. } => {
                if let Some(p) = public {
                    companion(p, Part::PublicPem);
                }
                if let Some(j) = jwks {
                    companion(j, Part::Jwks);
                }
            }
            KindSpec::Tls { key, .. } => companion(key, Part::TlsKey),
            _ => {}
        }
        if let Some(SecretTarget::Postgres {
            user_secret: Some(user),
            ..
        }) = &self.target
        {
            companion(user, Part::Login);
        }
        out
    }
}

impl Policy {
    /// Reads and validates the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let source = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, source)
    }

    /// Validates policy text; `path` is used in messages and to resolve relative sink paths.
    pub fn parse(path: &Path, source: String) -> Result<Policy, PolicyError> {
        parse::parse(path, source)
    }

    /// Every output of every secret, in policy order.
    pub fn outputs(&self) -> Vec<Output> {
        self.secrets.iter().flat_map(SecretSpec::outputs).collect()
    }

    /// The secret named `name`.
    pub fn secret(&self, name: &str) -> Option<&SecretSpec> {
        self.secrets.iter().find(|s| s.name == name)
    }

    /// The target named `name`.
    pub fn target(&self, name: &str) -> Option<&TargetSpec> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// Where a stack's values go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sinks {
    /// One file per output in a directory.
    pub files: Option<FilesSink>,
    /// A `.env` file for `docker compose --env-file`.
    pub envfile: Option<EnvFileSink>,
}

/// `[sinks.files]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesSink {
    /// The directory (default `/run/secrets`).
    pub dir: PathBuf,
    /// Mode of delivered files (default 0400).
    pub mode: u32,
    /// Mode of the directory when keyd creates it (default 0755).
    pub dir_mode: u32,
    /// Owner of delivered files.
    pub uid: Option<u32>,
    /// Group of delivered files.
    pub gid: Option<u32>,
    /// What to do after a delivery changed a file, so consumers re-read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadHook>,
}

/// A reload hook of the files sink: `reload = { signal = "HUP", pid_file = "/run/app.pid" }`
/// or `reload = { command = ["nginx", "-s", "reload"] }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadHook {
    /// Send a signal to the process whose pid is in a file.
    Signal {
        /// HUP, USR1, USR2, INT or TERM.
        signal: String,
        /// The pid file.
        pid_file: PathBuf,
    },
    /// Run a command (no shell, no secret in its argv or environment).
    Command {
        /// Program and arguments.
        argv: Vec<String>,
    },
}

impl FilesSink {
    /// The default directory.
    pub const DEFAULT_DIR: &'static str = "/run/secrets";

    /// A sink with default settings delivering into `dir`.
    pub fn in_dir(dir: PathBuf) -> Self {
        FilesSink {
            dir,
            mode: 0o400,
            dir_mode: 0o755,
            uid: None,
            gid: None,
            reload: None,
        }
    }
}

/// `[sinks.envfile]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFileSink {
    /// The file.
    pub path: PathBuf,
    /// Its mode (default 0600).
    pub mode: u32,
    /// Outputs written (default: all).
    pub include: Option<Vec<String>>,
}

/// One problem in a policy, with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What was wrong and what was expected.
    pub message: String,
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid policy.
    #[error("{}", format_problems(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

fn format_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}
