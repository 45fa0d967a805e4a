//! Where a stack's values go: the `[sinks.*]` tables as settings (files, envfile, Swarm,
//! plugin), the files sink's reload hook, and the naming rules each sink's consumers impose.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
/// Serialised as `{"files": …, "envfile": …}`, one optional field per kind: the layout the
/// store holds, in which a kind a record lacks reads back as absent.
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
    /// The Docker stack namespace (`com.docker.stack.namespace`) whose services the plugin
    /// serves this stack to, as `keyd --plugin-stack STACK=NAMESPACE` says; `None`: the
    /// stack's own name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Whether the plugin also serves this stack to services in no Docker stack
    /// (`keyd --plugin-allow-unstacked STACK`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unstacked: bool,
}

impl PluginSpec {
    /// Default settings for `stack`.
    pub fn for_stack(stack: &str) -> Self {
        PluginSpec {
            stack: stack.to_owned(),
            driver: "keyd".into(),
            update_timeout: SwarmSpec::DEFAULT_UPDATE_TIMEOUT,
            timeout: SwarmSpec::DEFAULT_TIMEOUT,
            namespace: None,
            unstacked: false,
        }
    }

    /// The namespace whose services read this stack through the plugin.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or(&self.stack)
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
