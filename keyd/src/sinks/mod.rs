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
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryReport {
    /// What the sink is (`files`, `envfile`).
    pub sink: &'static str,
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

/// Compares two values without an early exit on the first differing byte.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
