//! `keyctl check`: the store's health in one line and a monitoring plugin's exit code (0 ok,
//! 1 warning, 2 critical, 3 unknown), for cron or Nagios-style checks. Reads the store once;
//! names and versions only, never a value.

use serde::Serialize;

use crate::material::Material;
use crate::policy::Policy;
use crate::rotation::schedule::next_due;
use crate::store::{Home, StoreData};

/// How long a rotation may be overdue, or in flight, before it is worth a warning: a scheduler
/// pass or a rotation step takes seconds, a retry a minute.
pub const SLACK_SECONDS: i64 = 3600;

/// A certificate this close to its end is a warning even when its renewal is not due yet.
pub const EXPIRY_WARNING_SECONDS: i64 = 14 * 86_400;

/// A check's verdict, worst first; its number is the exit code monitoring plugins use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing to do.
    Ok = 0,
    /// Something needs a look soon.
    Warning = 1,
    /// Something is broken now.
    Critical = 2,
    /// The store could not be read.
    Unknown = 3,
}

/// One finding.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// `STACK/NAME`, or the store.
    pub subject: String,
    /// What (no value).
    pub what: String,
}

/// What `keyctl check` found.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    /// The worst finding's severity (`Ok` when none).
    pub severity: Severity,
    /// Secrets looked at.
    pub secrets: usize,
    /// Every finding, worst first.
    pub findings: Vec<Finding>,
}

/// Checks `home`'s store at `now`. A store that cannot be read is one `Unknown` finding.
pub fn check(home: &Home, now: i64) -> CheckReport {
    match home.lock_shared().and_then(|lock| lock.load()) {
        Ok(data) => check_data(&data, now),
        Err(e) => CheckReport {
            severity: Severity::Unknown,
            secrets: 0,
            findings: vec![Finding {
                severity: Severity::Unknown,
                subject: home.store_name().display().to_string(),
                what: e.to_string(),
            }],
        },
    }
}

fn check_data(data: &StoreData, now: i64) -> CheckReport {
    let mut findings = Vec::new();
    let mut secrets = 0;
    let days = |s: i64| s.div_euclid(86_400);
    for (stack, record) in &data.stacks {
        let mut found = |severity, subject: String, what: String| {
            findings.push(Finding {
                severity,
                subject,
                what,
            });
        };
        if let Some(owed) = &record.reload_owed {
            found(
                Severity::Warning,
                stack.clone(),
                format!(
                    "the files sink's reload hook is owed ({} attempts)",
                    owed.attempts
                ),
            );
        }
        let policy = Policy::parse(&record.policy_path, record.policy_source.clone()).ok();
        if policy.is_none() {
            found(
                Severity::Warning,
                stack.clone(),
                "its stored policy does not parse: nothing of it is scheduled".into(),
            );
        }
        for (name, secret) in record.secrets.iter().filter(|(_, s)| !s.removed) {
            secrets += 1;
            let subject = format!("{stack}/{name}");
            if let Some(rotation) = &secret.rotation {
                match &rotation.last_error {
                    Some(_) => found(
                        Severity::Critical,
                        subject.clone(),
                        format!(
                            "the rotation to v{} failed at its {} step ({} attempts; `keyctl status` says why)",
                            rotation.pending,
                            format!("{:?}", rotation.step).to_lowercase(),
                            rotation.attempts
                        ),
                    ),
                    None if now - rotation.started > SLACK_SECONDS => found(
                        Severity::Warning,
                        subject.clone(),
                        format!(
                            "the rotation to v{} has been in flight for {} min",
                            rotation.pending,
                            (now - rotation.started) / 60
                        ),
                    ),
                    None => {}
                }
            }
            if let Some(owed) = &secret.rekey {
                found(
                    Severity::Warning,
                    subject.clone(),
                    format!(
                        "the rekey hook for v{} is owed ({} attempts): the previous value is kept",
                        owed.version, owed.attempts
                    ),
                );
            }
            let Some(current) = secret.current() else {
                continue;
            };
            if let Material::Tls(cert) = &current.material {
                let left = cert.not_after - now;
                if left <= 0 {
                    found(
                        Severity::Critical,
                        subject.clone(),
                        format!("its certificate expired {} days ago", days(-left)),
                    );
                } else if left < EXPIRY_WARNING_SECONDS {
                    found(
                        Severity::Warning,
                        subject.clone(),
                        format!("its certificate expires in {} days", days(left)),
                    );
                }
            }
            let spec = policy.as_ref().and_then(|p| p.secret(name));
            if let Some(due) = spec.and_then(|spec| next_due(spec, current))
                && secret.rotation.is_none()
                && now - due > SLACK_SECONDS
            {
                found(
                    Severity::Warning,
                    subject.clone(),
                    format!(
                        "its rotation is overdue by {} h (is keyd running?)",
                        (now - due) / 3600
                    ),
                );
            }
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    CheckReport {
        severity: findings.first().map_or(Severity::Ok, |f| f.severity),
        secrets,
        findings,
    }
}
