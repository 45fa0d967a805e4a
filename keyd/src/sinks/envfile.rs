//! The envfile sink: a `.env` file for `docker compose --env-file`, for consumers that only
//! read environment variables. Only values that survive compose's env-file parsing unchanged
//! are written; anything else is refused before the file is touched.

use std::fs;
use std::os::unix::fs::MetadataExt as _;

use zeroize::Zeroizing;

use super::{Delivery, DeliveryReport, Pass, Sink, SinkError, digest, ledger_says_current, stamp};
use crate::policy::EnvFileSpec;
use crate::regular_file::{Owner, open_regular, read_at_most};
use crate::secret::same_bytes;
use crate::store::SinkRecords;

const SINK: &str = "envfile";
const LEDGER_KEY: &str = "envfile";

/// Writes a compose env file, as `[sinks.envfile]` says.
#[derive(Debug)]
pub struct EnvFileSink {
    spec: EnvFileSpec,
}

impl EnvFileSink {
    /// The sink `spec` describes.
    pub fn new(spec: EnvFileSpec) -> Self {
        EnvFileSink { spec }
    }

    fn selected<'d>(&self, deliveries: &'d [Delivery]) -> impl Iterator<Item = &'d Delivery> {
        deliveries
            .iter()
            .filter(move |d| self.spec.includes(&d.name))
    }

    fn unsafe_value(&self, name: &str, reason: &str) -> SinkError {
        SinkError::Unsafe {
            sink: SINK,
            location: self.spec.path.clone(),
            name: name.to_owned(),
            reason: format!(
                "{reason}; leave it out with [sinks.envfile] include = [...] and deliver it as a file"
            ),
        }
    }

    /// The line `NAME=value\n` as the env file holds it, or why it cannot be written: the name
    /// must be a variable name ([`EnvFileSpec::is_variable_name`]); a value made only of
    /// [`EnvFileSpec::plain`] characters is written as is, one whose characters all pass
    /// [`EnvFileSpec::carries`] in single quotes, and any other is refused. The property tests
    /// and the `envfile_round_trip` fuzz target read every accepted line back with
    /// python-dotenv's rules and check the value comes back unchanged.
    pub fn render_line(name: &str, value: &str) -> Result<Zeroizing<String>, &'static str> {
        if !EnvFileSpec::is_variable_name(name) {
            return Err("the name is not an environment variable name");
        }
        let plain = value.chars().all(EnvFileSpec::plain);
        if !plain && !value.chars().all(EnvFileSpec::carries) {
            return Err(
                "the value holds a single quote, a backslash, a $, a newline or a control character, which compose would not read back unchanged from an env file",
            );
        }
        let mut line = Zeroizing::new(String::with_capacity(name.len() + value.len() + 4));
        line.push_str(name);
        line.push('=');
        if plain {
            line.push_str(value);
        } else {
            // Single quotes: no escapes, and no $ to interpolate inside (see carries).
            line.push('\'');
            line.push_str(value);
            line.push('\'');
        }
        line.push('\n');
        Ok(line)
    }

    /// Whether the file at the path is a regular file of the configured mode holding exactly
    /// `text`. Runs under the store lock, so it must not block and must not read without
    /// bound: a symlink there is not followed and a FIFO not waited on (both are replaced),
    /// and no more than `text`'s length is read.
    fn holds(&self, text: &[u8]) -> bool {
        let Ok((file, meta)) = open_regular(&self.spec.path, Owner::Any) else {
            return false;
        };
        meta.mode() & 0o7777 == self.spec.mode
            && meta.len() == text.len() as u64
            && read_at_most(file, text.len() as u64).is_ok_and(|e| same_bytes(&e, text))
    }

    fn render(&self, deliveries: &[Delivery]) -> Result<Zeroizing<String>, SinkError> {
        let mut out = Zeroizing::new(String::from(
            "# Written by keyd (keyctl apply). Do not edit: the next apply or rotation rewrites it.\n",
        ));
        for d in self.selected(deliveries) {
            let line = Self::render_line(&d.name, d.value.expose())
                .map_err(|reason| self.unsafe_value(&d.name, reason))?;
            out.push_str(&line);
        }
        Ok(out)
    }
}

impl Sink for EnvFileSink {
    fn kind(&self) -> &'static str {
        SINK
    }

    fn check(&self, deliveries: &[Delivery]) -> Result<(), SinkError> {
        self.render(deliveries).map(drop)
    }

    /// The file holds every output, so every pass renders all of them.
    fn deliver(
        &self,
        deliveries: &[Delivery],
        _pass: Pass<'_>,
        records: &mut SinkRecords<'_>,
    ) -> Result<DeliveryReport, SinkError> {
        let ledger = &mut *records.ledger;
        let spec = &self.spec;
        let text = self.render(deliveries)?;
        let names: Vec<String> = self.selected(deliveries).map(|d| d.name.clone()).collect();
        let mut report = DeliveryReport {
            sink: SINK.into(),
            location: spec.path.clone(),
            ..Default::default()
        };
        let digest = digest(text.as_bytes());
        if ledger_says_current(&spec.path, ledger.get(LEDGER_KEY), &digest) {
            report.unchanged = names;
            return Ok(report);
        }
        if self.holds(text.as_bytes()) {
            report.unchanged = names;
        } else {
            if let Some(dir) = spec.path.parent() {
                fs::create_dir_all(dir).map_err(|source| SinkError::Io {
                    sink: SINK,
                    path: dir.to_owned(),
                    source,
                })?;
            }
            crate::store::write_atomic(&spec.path, text.as_bytes(), spec.mode).map_err(|e| {
                SinkError::Io {
                    sink: SINK,
                    path: spec.path.clone(),
                    source: std::io::Error::other(e.to_string()),
                }
            })?;
            report.written = names;
        }
        if let Ok(meta) = fs::symlink_metadata(&spec.path) {
            ledger.insert(LEDGER_KEY.into(), stamp(&meta, digest));
        }
        Ok(report)
    }
}
