//! Policies: one TOML file per stack declaring its secrets and where they are delivered.
//! This module owns the validated model; `parse` turns text into it, reporting every problem
//! with file, line and column.

pub mod chars;
pub mod duration;
mod parse;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::material::password::Alphabet;
use crate::material::template::Piece;
use crate::material::tls::TlsSpec;
use crate::material::token::Encoding;
use crate::material::{Material, MaterialError};

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
    /// Position of each secret in `secrets`, by name: lookups stay O(1) at 10,000 secrets.
    index: HashMap<String, usize>,
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
    /// A command that re-encrypts data with the new value, run after a rotation; retire
    /// waits until it succeeded.
    pub rekey: Option<RekeyHook>,
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

/// `rekey = { command = ["airflow", "rotate-fernet-key"], timeout = "10m" }`: run after a
/// rotation of the secret with the stack's delivered values in its environment (never in
/// argv); the previous version is retired only once it exited 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RekeyHook {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// How long it may run before it is killed (default 10 minutes).
    pub timeout: Duration,
}

impl RekeyHook {
    /// The timeout when the policy sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
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
    /// Makes a new value for a random kind (literals and templates are derived instead: see
    /// the derive module).
    pub fn generate(&self) -> Result<Material, MaterialError> {
        let text = |value| Ok(Material::Text { value });
        match self {
            KindSpec::Password { length, alphabet } => {
                text(crate::material::password::generate(*length, alphabet))
            }
            KindSpec::Token { bytes, encoding } => {
                text(crate::material::token::generate(*bytes, *encoding))
            }
            KindSpec::Fernet { .. } => text(crate::material::fernet::generate()),
            KindSpec::Rsa { bits, .. } => Ok(Material::Rsa(crate::material::rsa::generate(*bits)?)),
            KindSpec::Tls { spec, .. } => Ok(Material::Tls(crate::material::tls::generate(spec)?)),
            KindSpec::Literal { .. } | KindSpec::Template { .. } => {
                unreachable!("literals and templates are derived, not generated")
            }
        }
    }

    /// Whether generating takes long enough (RSA prime search) to give it a thread of its own.
    pub fn is_slow(&self) -> bool {
        matches!(self, KindSpec::Rsa { .. })
            || matches!(self, KindSpec::Tls { spec, .. } if matches!(spec.key_type, crate::material::tls::KeyType::Rsa(_)))
    }

    /// The generation parameters as text: stored with each version so a changed policy can be
    /// noticed (and reported) without regenerating anything.
    pub fn params_text(&self) -> String {
        let mut text = String::new();
        self.write_params(&mut text);
        text
    }

    /// Appends [`KindSpec::params_text`] to `out` (a caller comparing many reuses one buffer).
    pub fn write_params(&self, out: &mut String) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = match self {
            KindSpec::Password { length, alphabet } => {
                write!(out, "length={length} alphabet={alphabet}")
            }
            KindSpec::Token { bytes, encoding } => write!(out, "bytes={bytes} encoding={encoding}"),
            KindSpec::Fernet { .. } | KindSpec::Literal { .. } => Ok(()),
            KindSpec::Rsa { bits, .. } => write!(out, "bits={bits}"),
            KindSpec::Tls { spec, .. } => write!(
                out,
                "cn={} sans={} days={} key_type={:?}",
                spec.cn,
                spec.sans.join(","),
                spec.days,
                spec.key_type
            ),
            KindSpec::Template { text, .. } => {
                out.push_str(text);
                Ok(())
            }
        };
    }

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
        self.output_parts()
            .map(|(name, part)| Output {
                name: name.to_owned(),
                secret: self.name.clone(),
                part,
            })
            .collect()
    }

    /// [`SecretSpec::outputs`] borrowed: each name and the part it carries, its own first,
    /// with nothing allocated (policies of 10,000 secrets ask this many times).
    pub fn output_parts(&self) -> impl Iterator<Item = (&str, Part)> {
        let mut companions: [Option<(&str, Part)>; 3] = [None; 3];
        match &self.kind {
            KindSpec::Rsa { public, jwks, .. } => {
                companions[0] = public.as_deref().map(|p| (p, Part::PublicPem));
                companions[1] = jwks.as_deref().map(|j| (j, Part::Jwks));
            }
            KindSpec::Tls { key, .. } => companions[0] = Some((key.as_str(), Part::TlsKey)),
            _ => {}
        }
        if let Some(SecretTarget::Postgres {
            user_secret: Some(user),
            ..
        }) = &self.target
        {
            companions[2] = Some((user.as_str(), Part::Login));
        }
        std::iter::once((self.name.as_str(), Part::Main)).chain(companions.into_iter().flatten())
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
        self.index.get(name).map(|&i| &self.secrets[i])
    }

    /// Where the secret named `name` is in `secrets`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The target named `name`.
    pub fn target(&self, name: &str) -> Option<&TargetSpec> {
        self.targets.iter().find(|t| t.name == name)
    }
}

/// One `[sinks.*]` table as the parser read it: settings, not behaviour. The sinks that act on
/// them are the sink types of the sinks module, built from these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SinkSpec {
    /// `[sinks.files]`: one file per output in a directory.
    Files(FilesSpec),
    /// `[sinks.envfile]`: a `.env` file for `docker compose --env-file`.
    EnvFile(EnvFileSpec),
    /// `[sinks.swarm]`: Docker Swarm secrets, one per output and value, swapped into the
    /// services that use them.
    Swarm(SwarmSpec),
    /// `[sinks.plugin]`: the outputs are served by keyd's Docker secret-provider plugin; a
    /// change restarts the tasks of the services using them, so they ask the plugin again.
    Plugin(PluginSpec),
}

impl SinkSpec {
    /// The sink's name in policies (`files`, `envfile`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            SinkSpec::Files(_) => "files",
            SinkSpec::EnvFile(_) => "envfile",
            SinkSpec::Swarm(_) => "swarm",
            SinkSpec::Plugin(_) => "plugin",
        }
    }
}

/// Where a stack's values go: at most one sink of each kind, in a fixed order (files first).
/// Stored as `{"files": …, "envfile": …}`, the shape stores have always had.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SinksRecord", into = "SinksRecord")]
pub struct Sinks(Vec<SinkSpec>);

/// The stored shape of [`Sinks`].
#[derive(Clone, Default, Serialize, Deserialize)]
struct SinksRecord {
    files: Option<FilesSpec>,
    envfile: Option<EnvFileSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    swarm: Option<SwarmSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plugin: Option<PluginSpec>,
}

impl From<SinksRecord> for Sinks {
    fn from(r: SinksRecord) -> Self {
        let mut sinks = Sinks::default();
        if let Some(f) = r.files {
            sinks.set(SinkSpec::Files(f));
        }
        if let Some(e) = r.envfile {
            sinks.set(SinkSpec::EnvFile(e));
        }
        if let Some(s) = r.swarm {
            sinks.set(SinkSpec::Swarm(s));
        }
        if let Some(p) = r.plugin {
            sinks.set(SinkSpec::Plugin(p));
        }
        sinks
    }
}

impl From<Sinks> for SinksRecord {
    fn from(s: Sinks) -> Self {
        let mut r = SinksRecord::default();
        for spec in s.0 {
            match spec {
                SinkSpec::Files(f) => r.files = Some(f),
                SinkSpec::EnvFile(e) => r.envfile = Some(e),
                SinkSpec::Swarm(s) => r.swarm = Some(s),
                SinkSpec::Plugin(p) => r.plugin = Some(p),
            }
        }
        r
    }
}

impl Sinks {
    /// Every sink, files first.
    pub fn iter(&self) -> std::slice::Iter<'_, SinkSpec> {
        self.0.iter()
    }

    /// Whether values go nowhere but the store.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `spec`, replacing a sink of the same kind.
    pub fn set(&mut self, spec: SinkSpec) {
        let rank = |s: &SinkSpec| match s {
            SinkSpec::Files(_) => 0,
            SinkSpec::EnvFile(_) => 1,
            SinkSpec::Swarm(_) => 2,
            SinkSpec::Plugin(_) => 3,
        };
        self.0.retain(|s| rank(s) != rank(&spec));
        self.0.push(spec);
        self.0.sort_by_key(rank);
    }

    /// The files sink's settings.
    pub fn files(&self) -> Option<&FilesSpec> {
        self.0.iter().find_map(|s| match s {
            SinkSpec::Files(f) => Some(f),
            _ => None,
        })
    }

    /// The envfile sink's settings.
    pub fn envfile(&self) -> Option<&EnvFileSpec> {
        self.0.iter().find_map(|s| match s {
            SinkSpec::EnvFile(e) => Some(e),
            _ => None,
        })
    }

    /// The Swarm sink's settings.
    pub fn swarm(&self) -> Option<&SwarmSpec> {
        self.0.iter().find_map(|s| match s {
            SinkSpec::Swarm(s) => Some(s),
            _ => None,
        })
    }

    /// The plugin sink's settings.
    pub fn plugin(&self) -> Option<&PluginSpec> {
        self.0.iter().find_map(|s| match s {
            SinkSpec::Plugin(p) => Some(p),
            _ => None,
        })
    }
}

/// `[sinks.plugin]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginSpec {
    /// The stack, from the policy's `[stack] name`.
    pub stack: String,
    /// The plugin's name as Docker knows it: the socket's name for `keyd --docker-plugin`
    /// (`keyd` for /run/docker/plugins/keyd.sock), `NAME:TAG` for a managed plugin.
    pub driver: String,
    /// How long the services using a value may take to restart their tasks.
    pub update_timeout: Duration,
    /// How long one call to the Docker engine may take.
    pub timeout: Duration,
}

impl PluginSpec {
    /// Default settings for `stack`.
    pub fn for_stack(stack: &str) -> Self {
        PluginSpec {
            stack: stack.to_owned(),
            driver: "keyd".into(),
            update_timeout: SwarmSpec::DEFAULT_UPDATE_TIMEOUT,
            timeout: SwarmSpec::DEFAULT_TIMEOUT,
        }
    }
}

/// `[sinks.swarm]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmSpec {
    /// The stack (label `keyd.stack`), from the policy's `[stack] name`.
    pub stack: String,
    /// Put before every output's name to make its Swarm secret's name (default: nothing).
    #[serde(default)]
    pub prefix: String,
    /// An env file naming the current Swarm secret of every output
    /// (`KEYD_SWARM_<OUTPUT>=<name>`), for `docker stack deploy` (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names_env: Option<PathBuf>,
    /// How long the services using a secret may take to roll onto a new version.
    pub update_timeout: Duration,
    /// How long one call to the Docker engine may take.
    pub timeout: Duration,
}

impl SwarmSpec {
    /// The default `update_timeout`.
    pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(300);
    /// The default `timeout`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The longest base name (prefix and output): room is left for `_v<version>_<n>`
    /// within Swarm's 64 characters.
    pub const MAX_NAME: usize = 48;

    /// Default settings for `stack`.
    pub fn for_stack(stack: &str) -> Self {
        SwarmSpec {
            stack: stack.to_owned(),
            prefix: String::new(),
            names_env: None,
            update_timeout: Self::DEFAULT_UPDATE_TIMEOUT,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Whether `name` is a valid Swarm object name: letters and digits at both ends, letters,
    /// digits, `-`, `_` and `.` between.
    pub fn is_valid_name(name: &str) -> bool {
        let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        ok_end(name.chars().next())
            && ok_end(name.chars().last())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    /// Why output `output` cannot be a Swarm secret under this prefix, if it cannot: the name
    /// must be valid in Swarm and leave room for `_v<version>` within 64 characters.
    pub fn name_problem(&self, output: &str) -> Option<String> {
        let name = format!("{}{output}", self.prefix);
        if !Self::is_valid_name(&name) {
            Some(format!(
                "[sinks.swarm] cannot name a secret {name:?}: Swarm names start and end with a letter or digit and hold only letters, digits, '-', '_' and '.'"
            ))
        } else if name.len() > Self::MAX_NAME {
            Some(format!(
                "[sinks.swarm] cannot name a secret {name:?}: it is {} characters long, and Swarm allows 64 including the `_v<version>` keyd adds to later versions (at most {} here)",
                name.len(),
                Self::MAX_NAME
            ))
        } else {
            None
        }
    }

    /// The variable that names output `name`'s current secret in `names_env`.
    pub fn variable(name: &str) -> String {
        let mut v = String::from("KEYD_SWARM_");
        v.extend(name.chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        }));
        v
    }
}

/// `[sinks.files]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesSpec {
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

/// A signal a reload hook may send, parsed once from the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Signal {
    /// SIGHUP.
    Hup,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
    /// SIGINT.
    Int,
    /// SIGTERM.
    Term,
}

impl Signal {
    /// Every signal a hook may send, in documentation order.
    pub const ALL: [Signal; 5] = [
        Signal::Hup,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Int,
        Signal::Term,
    ];

    /// The name policies use (`HUP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Hup => "HUP",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Int => "INT",
            Signal::Term => "TERM",
        }
    }

    /// The signal named `name` (`HUP`, …).
    pub fn parse(name: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A reload hook of the files sink: `reload = { signal = "HUP", pid_file = "/run/app.pid" }`
/// or `reload = { command = ["nginx", "-s", "reload"] }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadHook {
    /// Send a signal to the process whose pid is in a file.
    Signal {
        /// The signal.
        signal: Signal,
        /// The pid file.
        pid_file: PathBuf,
    },
    /// Run a command (no shell, no secret in its argv or environment).
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// How long it may run before it is killed (`timeout`, default
        /// [`ReloadHook::DEFAULT_TIMEOUT`]).
        #[serde(default = "ReloadHook::default_timeout")]
        timeout: Duration,
    },
}

impl ReloadHook {
    /// The timeout of a reload command whose policy sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    fn default_timeout() -> Duration {
        Self::DEFAULT_TIMEOUT
    }
}

impl FilesSpec {
    /// The default directory.
    pub const DEFAULT_DIR: &'static str = "/run/secrets";

    /// Default settings delivering into `dir`.
    pub fn in_dir(dir: PathBuf) -> Self {
        FilesSpec {
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
pub struct EnvFileSpec {
    /// The file.
    pub path: PathBuf,
    /// Its mode (default 0600).
    pub mode: u32,
    /// Outputs written (default: all).
    pub include: Option<Vec<String>>,
}

impl EnvFileSpec {
    /// Whether output `name` goes into the file.
    pub fn includes(&self, name: &str) -> bool {
        self.include
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == name))
    }

    /// Whether `name` can be a variable of the file: `[A-Za-z_][A-Za-z0-9_]*`.
    pub fn is_variable_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// Whether a value holding `c` can be written so that compose reads it back unchanged
    /// (compose v1's python-dotenv and v2's own parser agree on it): single-quoted, anything
    /// printable but `'`, `\` (python-dotenv unescapes `\\` and `\'` even in single quotes,
    /// so a value ending in `\` runs into the next line) and `$` (python-dotenv expands
    /// `${NAME}` even in single quotes).
    pub fn carries(c: char) -> bool {
        !c.is_control() && !matches!(c, '\'' | '\\' | '$')
    }

    /// Whether `c` means nothing to either parser outside quotes, so a value made only of such
    /// characters is written as is.
    pub fn plain(c: char) -> bool {
        c.is_ascii_alphanumeric() || "_-.,:/+=@%^~".contains(c)
    }
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
    /// A valid policy that cannot be used as asked (`--swarm` with names Swarm refuses).
    #[error("{}: {message}", path.display())]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        message: String,
    },
}

fn format_problems(path: &Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message))
        .collect::<Vec<_>>()
        .join("\n")
}
