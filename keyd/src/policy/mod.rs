//! Policies: one TOML file per stack declaring its secrets and where they are delivered.
//! This module owns the validated model; `parse` turns text into it, reporting every problem
//! with file, line and column.

pub mod chars;
pub mod duration;
mod notify;
mod outputs;
mod parse;
mod secrets;
mod sinks;
mod targets;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use self::notify::{EventKind, NotifySpec, Webhook};
pub use self::outputs::{Output, Part};
pub use self::secrets::{FernetDelivery, Kind, KindSpec, RekeyHook, SecretSpec};
pub use self::sinks::{
    EnvFileSpec, FilesSpec, PluginSpec, ReloadHook, Signal, SinkSpec, Sinks, SwarmSpec,
};
pub use self::targets::{
    AdminPassword, LoginStrategy, RedisMode, SecretTarget, TargetKind, TargetSpec,
};

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
    /// Webhooks told about this stack's rotations (`[notify]`).
    pub notify: Option<NotifySpec>,
    /// Position of each secret in `secrets`, by name, so a lookup costs the same however many
    /// secrets the policy declares.
    index: HashMap<String, usize>,
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
