//! The Swarm sink: each output as a Docker Swarm secret, swapped into the services that use it.
//!
//! Swarm secrets cannot change, so every new value of an output is a new secret: the first
//! takes the plain name stack files expect (`prefix` + output), later ones `NAME_v<version>`
//! (and `NAME_v<version>_<n>` when the value of one version changes, as a fernet list does
//! when its old key is retired). Each carries the labels `keyd.managed=true`, `keyd.stack`,
//! `keyd.secret`, `keyd.output`, `keyd.version`, and `keyd.digest`, a digest of the value keyed
//! with a key in the store (so keyd recognises its own secret after a crash, and nobody can test
//! a guess of the value against the label).
//!
//! A delivery pass, for every output it looks at:
//! 1. publishes the value, unless a secret of this output already holds it;
//! 2. repoints every service that uses an older secret of the output to the current one
//!    (keeping the target file name, uid, gid and mode), as a rolling update that starts the
//!    new task before stopping the old one and rolls back on failure, and waits until each
//!    update completes; a failed update fails the pass with the service's message, and the
//!    service keeps the old secret;
//! 3. removes secrets of the current version that the current one superseded;
//! 4. rewrites `names_env` (`KEYD_SWARM_<OUTPUT>=<current name>`) when a name changed.
//!
//! Every step is idempotent, and the store records what was published, so a pass interrupted
//! anywhere is completed by the next one. `retire` removes the secrets of a retired version
//! once no service uses them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use bollard::models::ServiceSpec;

use super::{Delivery, DeliveryReport, Pass, Sink, SinkError};
use crate::docker::{Deleted, DockerError, Engine, SecretInfo};
use crate::policy::SwarmSpec;
use crate::secret::{SecretBytes, SecretString};
use crate::store::{SinkRecords, SwarmLedger, SwarmSecret};

const SINK: &str = "swarm";

/// The largest secret Swarm stores (500 KiB).
const MAX_SIZE: usize = 500 * 1024;

/// Delivers outputs as Swarm secrets.
pub struct SwarmSink {
    spec: SwarmSpec,
}

impl SwarmSink {
    /// A sink with these settings.
    pub fn new(spec: SwarmSpec) -> Self {
        Self { spec }
    }

    fn location(&self) -> PathBuf {
        PathBuf::from(
            std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unix:///var/run/docker.sock".into()),
        )
    }

    fn engine(&self) -> Result<Engine, SinkError> {
        engine_for(self.spec.timeout).map_err(|e| self.fail(e))
    }

    fn fail(&self, source: DockerError) -> SinkError {
        SinkError::Docker {
            location: self.location(),
            source,
        }
    }

    fn unsafe_(&self, name: &str, reason: String) -> SinkError {
        SinkError::Unsafe {
            sink: SINK,
            location: self.location(),
            name: name.to_owned(),
            reason,
        }
    }

    fn labels(&self, d: &Delivery, digest: &str) -> HashMap<String, String> {
        HashMap::from([
            ("keyd.managed".to_owned(), "true".to_owned()),
            ("keyd.stack".to_owned(), self.spec.stack.clone()),
            ("keyd.secret".to_owned(), d.secret.clone()),
            ("keyd.output".to_owned(), d.name.clone()),
            ("keyd.version".to_owned(), d.version.to_string()),
            ("keyd.digest".to_owned(), digest.to_owned()),
        ])
    }

    /// Whether `info` is the secret keyd made for output `output` of this stack with value
    /// `digest`.
    fn is_ours(&self, info: &SecretInfo, output: &str, digest: Option<&str>) -> bool {
        let label = |k: &str| info.labels.get(k).map(String::as_str);
        label("keyd.managed") == Some("true")
            && label("keyd.stack") == Some(self.spec.stack.as_str())
            && label("keyd.output") == Some(output)
            && digest.is_none_or(|d| label("keyd.digest") == Some(d))
    }

    /// Publishes `d` (whose keyed digest is `digest`) as a new secret; returns its record.
    /// `known` are the secrets of this output the store recorded: a name taken by a secret
    /// with keyd's labels and another value is passed over only when it is one of them.
    fn publish(
        &self,
        engine: &Engine,
        d: &Delivery,
        digest: &str,
        known: &[SwarmSecret],
    ) -> Result<SwarmSecret, SinkError> {
        let first = known.is_empty();
        let base = format!("{}{}", self.spec.prefix, d.name);
        let versioned = format!("{base}_v{}", d.version);
        let candidates = first
            .then(|| base.clone())
            .into_iter()
            .chain(std::iter::once(versioned.clone()))
            .chain((2..100).map(|n| format!("{versioned}_{n}")));
        for name in candidates {
            let labels = self.labels(d, digest);
            if let Some(id) = engine
                .create_secret(&name, labels, d.value.expose().as_bytes())
                .map_err(|e| self.fail(e))?
            {
                return Ok(SwarmSecret {
                    name,
                    id,
                    version: d.version,
                    digest: digest.to_owned(),
                });
            }
            // The name is taken: by this very value (made before a crash), by an older value
            // of this output, or by something keyd does not own.
            let Some(info) = engine.secret_named(&name).map_err(|e| self.fail(e))? else {
                continue; // removed since: try the next name
            };
            if self.is_ours(&info, &d.name, Some(digest)) {
                return Ok(SwarmSecret {
                    name,
                    id: info.id,
                    version: d.version,
                    digest: digest.to_owned(),
                });
            }
            if self.is_ours(&info, &d.name, None) && !known.iter().any(|k| k.id == info.id) {
                return Err(self.unsafe_(
                    &d.name,
                    format!(
                        "the Swarm secret {name} carries keyd's labels for this output, but this store never published it (its keyed digest is not one this store made): another store made it, or its labels were forged. Use the store that made it (`--store swarm:NAME`, or `keyctl restore`), or remove the secret (`docker secret rm {name}`) if it is not yours"
                    ),
                ));
            }
            if !self.is_ours(&info, &d.name, None) {
                let owner = match info.labels.get("keyd.stack") {
                    Some(stack) => format!("keyd made it for stack {stack:?}"),
                    None => "keyd did not make it".to_owned(),
                };
                return Err(self.unsafe_(
                    &d.name,
                    format!(
                        "a Swarm secret named {name} exists and {owner}: remove it (`docker secret rm {name}`) or set a `prefix` in [sinks.swarm]"
                    ),
                ));
            }
        }
        Err(self.unsafe_(
            &d.name,
            format!("every name from {versioned} to {versioned}_99 is taken"),
        ))
    }

    /// Points every service that uses an old secret of the outputs in `moved` (old secret id
    /// -> current secret) at the current one, and waits for the rolling updates.
    fn repoint(
        &self,
        engine: &Engine,
        moved: &HashMap<String, SwarmSecret>,
        failures: &mut Vec<SinkError>,
    ) -> Result<Vec<String>, SinkError> {
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let (done, failed) = engine
            .roll(SINK, self.spec.update_timeout, |spec| {
                repoint_spec(spec, moved)
            })
            .map_err(|e| self.fail(e))?;
        failures.extend(failed.into_iter().map(|e| self.fail(e)));
        Ok(done)
    }

    /// Writes `names_env` when it does not hold the current names.
    fn write_names(&self, ledger: &SwarmLedger) -> Result<(), SinkError> {
        let Some(path) = &self.spec.names_env else {
            return Ok(());
        };
        let mut text = String::from(
            "# The current Swarm secret of each output, written by keyd: use as\n# `name: ${KEYD_SWARM_…}` under `secrets:` in a stack file.\n",
        );
        for (output, o) in &ledger.outputs {
            text.push_str(&format!("{}={}\n", SwarmSpec::variable(output), o.current));
        }
        if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        crate::store::write_atomic(path, text.as_bytes(), 0o644).map_err(|e| SinkError::Io {
            sink: SINK,
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })
    }
}

/// Replaces, in `spec`, every secret reference found in `moved` (by id, or by name) with the
/// current secret, keeping where and how the file appears; whether anything changed.
fn repoint_spec(spec: &mut ServiceSpec, moved: &HashMap<String, SwarmSecret>) -> bool {
    let Some(secrets) = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
        .and_then(|c| c.secrets.as_mut())
    else {
        return false;
    };
    let mut changed = false;
    for reference in secrets.iter_mut() {
        let current = reference.secret_id.as_ref().and_then(|id| moved.get(id));
        if let Some(current) = current
            && reference.secret_id.as_deref() != Some(current.id.as_str())
        {
            reference.secret_id = Some(current.id.clone());
            reference.secret_name = Some(current.name.clone());
            changed = true;
        }
    }
    changed
}

/// A connection to the engine, which must be a swarm manager; each call bounded by `timeout`.
pub(super) fn engine_for(timeout: std::time::Duration) -> Result<Engine, DockerError> {
    let engine = Engine::connect(timeout)?;
    engine.require_manager()?;
    Ok(engine)
}

/// The stack's digest key (made on first use).
pub(super) fn key_of(ledger: &mut SwarmLedger) -> SecretString {
    if ledger.key.is_empty() {
        let key = SecretBytes::random(32);
        ledger.key = SecretString::new(crate::secret::hex(key.expose_secret()));
    }
    ledger.key.duplicate()
}

/// HMAC-SHA256 of `value` keyed with `key`, first 128 bits in hex.
pub(super) fn keyed_digest(key: &SecretString, value: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key.expose_secret().as_bytes()),
        value,
    );
    crate::secret::hex(&tag.as_ref()[..16])
}

impl Sink for SwarmSink {
    fn kind(&self) -> &'static str {
        SINK
    }

    fn check(&self, deliveries: &[Delivery]) -> Result<(), SinkError> {
        for d in deliveries {
            let len = d.value.expose().len();
            if len == 0 {
                return Err(self.unsafe_(&d.name, "Swarm cannot hold an empty secret".into()));
            }
            if len > MAX_SIZE {
                return Err(self.unsafe_(
                    &d.name,
                    format!("it is {len} bytes long, and a Swarm secret holds at most {MAX_SIZE}"),
                ));
            }
        }
        Ok(())
    }

    fn ready(&self) -> Result<(), SinkError> {
        self.engine().map(drop)
    }

    fn deliver(
        &self,
        deliveries: &[Delivery],
        pass: Pass<'_>,
        records: &mut SinkRecords<'_>,
    ) -> Result<DeliveryReport, SinkError> {
        let mut report = DeliveryReport {
            sink: SINK.into(),
            location: self.location(),
            ..Default::default()
        };
        let wanted: Vec<&Delivery> = deliveries
            .iter()
            .filter(|d| pass.includes(&d.name))
            .collect();
        if wanted.is_empty() {
            return Ok(report);
        }
        let engine = self.engine()?;
        let ledger = &mut *records.swarm;
        let key = key_of(ledger);
        let existing: BTreeMap<String, SecretInfo> = engine
            .secrets_labelled("keyd.stack", &self.spec.stack)
            .map_err(|e| self.fail(e))?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();

        let mut failures = Vec::new();
        // 1. Publish.
        let mut moved: HashMap<String, SwarmSecret> = HashMap::new();
        for d in &wanted {
            let digest = keyed_digest(&key, d.value.expose().as_bytes());
            let out = ledger.outputs.entry(d.name.clone()).or_default();
            // Secrets removed by hand are forgotten (and republished if current).
            out.published.retain(|p| existing.contains_key(&p.id));
            let found = out.published.iter().find(|p| p.digest == digest).cloned();
            let current = match found {
                Some(p) if p.name == out.current => {
                    report.unchanged.push(d.name.clone());
                    p
                }
                Some(p) => {
                    report.written.push(d.name.clone());
                    p
                }
                None => match self.publish(&engine, d, &digest, &out.published) {
                    Ok(p) => {
                        report.written.push(d.name.clone());
                        out.published.push(p.clone());
                        p
                    }
                    Err(e) => {
                        failures.push(e);
                        continue;
                    }
                },
            };
            out.current = current.name.clone();
            for old in out.published.iter().filter(|p| p.id != current.id) {
                moved.insert(old.id.clone(), current.clone());
            }
        }
        // 2. Repoint the services that use older secrets.
        let updated = self.repoint(&engine, &moved, &mut failures)?;
        if !updated.is_empty() {
            // Services caught up with secrets an earlier, interrupted pass published.
            let targets: HashSet<&str> = moved.values().map(|c| c.name.as_str()).collect();
            let caught_up: Vec<String> = report
                .unchanged
                .iter()
                .filter(|n| targets.contains(ledger.outputs[*n].current.as_str()))
                .cloned()
                .collect();
            report.unchanged.retain(|n| !caught_up.contains(n));
            report.written.extend(caught_up);
        }
        // 3. Secrets of the current version that the current one superseded.
        if failures.is_empty() {
            for d in &wanted {
                let Some(out) = ledger.outputs.get_mut(&d.name) else {
                    continue;
                };
                let mut kept = Vec::new();
                for p in std::mem::take(&mut out.published) {
                    let superseded = p.name != out.current && p.version == d.version;
                    if superseded
                        && engine
                            .delete_secret(&p.id, &p.name)
                            .map_err(|e| self.fail(e))?
                            == Deleted::Gone
                    {
                        continue;
                    }
                    kept.push(p);
                }
                out.published = kept;
            }
        }
        // 4. The names file.
        if let Err(e) = self.write_names(ledger) {
            failures.push(e);
        }
        match failures.len() {
            0 => Ok(report),
            1 => Err(failures.remove(0)),
            _ => Err(SinkError::Several(failures)),
        }
    }

    fn retire(
        &self,
        name: &str,
        version: u64,
        records: &mut SinkRecords<'_>,
    ) -> Result<(), SinkError> {
        let Some(out) = records.swarm.outputs.get_mut(name) else {
            return Ok(());
        };
        let victims: Vec<SwarmSecret> = out
            .published
            .iter()
            .filter(|p| p.version <= version && p.name != out.current)
            .cloned()
            .collect();
        if victims.is_empty() {
            return Ok(());
        }
        let engine = self.engine()?;
        for p in victims {
            match engine
                .delete_secret(&p.id, &p.name)
                .map_err(|e| self.fail(e))?
            {
                Deleted::Gone => out.published.retain(|q| q.id != p.id),
                Deleted::InUse => crate::log::info(format_args!(
                    "swarm: secret {} (retired version {}) is still used by a service; it is removed at the next retire",
                    p.name, p.version
                )),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{
        TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecFile, TaskSpecContainerSpecSecrets,
    };

    #[test]
    fn repointing_keeps_the_target_file_uid_gid_and_mode_and_leaves_other_secrets() {
        let file = TaskSpecContainerSpecFile {
            name: Some("db_password".into()),
            uid: Some("70".into()),
            gid: Some("70".into()),
            mode: Some(0o400),
        };
        let mut spec = ServiceSpec {
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    secrets: Some(vec![
                        TaskSpecContainerSpecSecrets {
                            file: Some(file.clone()),
                            secret_id: Some("old".into()),
                            secret_name: Some("db_password".into()),
                        },
                        TaskSpecContainerSpecSecrets {
                            file: None,
                            secret_id: Some("other".into()),
                            secret_name: Some("other".into()),
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let current = SwarmSecret {
            name: "db_password_v2".into(),
            id: "new".into(),
            version: 2,
            digest: String::new(),
        };
        let moved = HashMap::from([("old".to_owned(), current)]);
        assert!(repoint_spec(&mut spec, &moved));
        let refs = spec
            .task_template
            .unwrap()
            .container_spec
            .unwrap()
            .secrets
            .unwrap();
        assert_eq!(refs[0].secret_id.as_deref(), Some("new"));
        assert_eq!(refs[0].secret_name.as_deref(), Some("db_password_v2"));
        assert_eq!(refs[0].file, Some(file));
        assert_eq!(refs[1].secret_id.as_deref(), Some("other"));
    }

    #[test]
    fn the_digest_label_depends_on_the_key_so_a_guess_cannot_be_checked_without_it() {
        let value = b"hunter2";
        let a = keyed_digest(&SecretString::new("k1".into()), value);
        let b = keyed_digest(&SecretString::new("k2".into()), value);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }
}
