//! Sinks deliver values to consumers: one file per secret in a directory, or a compose env file.
//! Each sink is configured by the policy (`crate::policy::Sinks`) and implements [`Sink`].

mod envfile;
mod files;

use std::path::PathBuf;

use crate::secret::SecretString;

/// One named value to deliver.
pub struct Delivery {
    /// The output name (file name, variable name).
    pub name: String,
    /// The value.
    pub value: SecretString,
}

/// What a sink did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryReport {
    /// What the sink is (`files`, `envfile`).
    pub sink: String,
    /// Where it delivered.
    pub location: PathBuf,
    /// Outputs whose content or mode changed.
    pub written: Vec<String>,
    /// Outputs already up to date.
    pub unchanged: Vec<String>,
}

/// Why a delivery was refused or failed. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A value cannot be represented safely in this sink.
    #[error("{sink} {}: cannot deliver {name:?}: {reason}", location.display())]
    Unsafe {
        /// The sink.
        sink: &'static str,
        /// Where.
        location: PathBuf,
        /// The output.
        name: String,
        /// Why (no value bytes).
        reason: String,
    },
    /// The operating system refused.
    #[error("{sink} {}: {source}", path.display())]
    Io {
        /// The sink.
        sink: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A place values are delivered to.
///
/// An implementor must:
/// - refuse, in `check`, every value it could not deliver exactly, before anything is written,
///   so that a refused delivery leaves nothing half done;
/// - in `deliver`, replace each output atomically (a consumer reads the old value or the new
///   one, never a mix or an empty file), leave outputs whose content is already right
///   untouched (no rewrite, so re-running changes nothing), and make the result durable before
///   returning;
/// - never write a value anywhere but its destination: not to logs, errors or argv.
pub trait Sink {
    /// Refuses values this sink cannot deliver.
    fn check(&self, deliveries: &[Delivery]) -> Result<(), SinkError>;
    /// Delivers every value.
    fn deliver(&self, deliveries: &[Delivery]) -> Result<DeliveryReport, SinkError>;
}

/// Runs a files sink's reload hook after a delivery changed something. The command gets no
/// secret: not in argv, not in its environment (keyd's own environment holds none).
pub fn run_reload_hook(hook: &crate::policy::ReloadHook) -> Result<(), SinkError> {
    use crate::policy::{ReloadHook, Signal};
    let fail = |path: &std::path::Path, source: std::io::Error| SinkError::Io {
        sink: "files reload",
        path: path.to_owned(),
        source,
    };
    match hook {
        ReloadHook::Signal { signal, pid_file } => {
            let text = std::fs::read_to_string(pid_file).map_err(|e| fail(pid_file, e))?;
            let pid = text
                .trim()
                .parse::<i32>()
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .ok_or_else(|| {
                    fail(
                        pid_file,
                        std::io::Error::other("does not hold a process id"),
                    )
                })?;
            let sig = match signal {
                Signal::Hup => rustix::process::Signal::HUP,
                Signal::Usr1 => rustix::process::Signal::USR1,
                Signal::Usr2 => rustix::process::Signal::USR2,
                Signal::Int => rustix::process::Signal::INT,
                Signal::Term => rustix::process::Signal::TERM,
            };
            rustix::process::kill_process(pid, sig).map_err(|e| fail(pid_file, e.into()))
        }
        ReloadHook::Command { argv } => {
            let program = std::path::Path::new(&argv[0]);
            let status = std::process::Command::new(program)
                .args(&argv[1..])
                .stdin(std::process::Stdio::null())
                .status()
                .map_err(|e| fail(program, e))?;
            if status.success() {
                Ok(())
            } else {
                Err(fail(
                    program,
                    std::io::Error::other(format!("reload command exited with {status}")),
                ))
            }
        }
    }
}

/// Compares two values without an early exit on the first differing byte.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
