//! What the engine asks of targets (PostgreSQL with its PgBouncer, MySQL, RabbitMQ, Redis): the target a secret's values must
//! reach, built with its admin password resolved now, a version as a target's credential, and
//! the retire of old values at the target.

use super::engine::{Engine, SecretKey, cached_policy};
use crate::error::Error;
use crate::material::Material;
use crate::policy::{AdminPassword, SecretTarget, TargetKind, TargetSpec};
use crate::secret::SecretString;
use crate::store::{SecretRecord, StoreData, VersionRecord};
use crate::targets::mysql::MysqlTarget;
use crate::targets::pgbouncer::PgbouncerPool;
use crate::targets::postgres::PostgresTarget;
use crate::targets::rabbitmq::RabbitmqTarget;
use crate::targets::redis::RedisTarget;
use crate::targets::{Credential, Target};

impl Engine<'_> {
    /// Makes the target of `key` (if it has one) stop accepting the versions `which` selects,
    /// keeping version `keep` working.
    pub(super) fn retire_at_target(
        &mut self,
        key: &SecretKey,
        keep: u64,
        which: impl Fn(&VersionRecord) -> bool,
    ) -> Result<(), Error> {
        let Some(target) = self.target_for(key)? else {
            return Ok(());
        };
        let record = self.record(key)?;
        let Some(current) = record.version(keep).and_then(credential) else {
            return Ok(());
        };
        for old in record
            .versions
            .iter()
            .filter(|v| v.number != keep && which(v))
        {
            if let Some(old) = credential(old) {
                target.retire(&old, &current)?;
            }
        }
        Ok(())
    }

    /// The target the values of `key` must reach, with its admin password resolved now (from
    /// the store's current value of `password_secret`, which may itself have been rotated).
    pub(crate) fn target_for(&mut self, key: &SecretKey) -> Result<Option<Box<dyn Target>>, Error> {
        let (stack, name) = (key.stack(), key.name());
        // Disjoint fields: the cached policy and the store are both only read from here on.
        let policy = cached_policy(&mut self.policies, &self.data, stack)?;
        let Some(secret_target) = policy.secret(name).and_then(|s| s.target.clone()) else {
            return Ok(None);
        };
        let spec = policy
            .target(secret_target.target())
            .expect("the policy checked target names");
        let password = admin_password(&self.data, key, spec)?;
        let mut target = build_target(spec, secret_target, password)?;
        if let TargetKind::Postgres {
            pgbouncer: Some(pool),
        } = &spec.kind
        {
            let pool = policy
                .target(pool)
                .expect("the policy checked pgbouncer names");
            let TargetKind::Pgbouncer { auth_file } = &pool.kind else {
                unreachable!("the policy checked that pgbouncer names a pgbouncer target")
            };
            let pool = PgbouncerPool::new(
                &pool.name,
                &pool.url,
                admin_password(&self.data, key, pool)?.as_ref(),
                auth_file,
                pool.timeout,
                pool.allow_insecure_auth,
            )?;
            target = match target {
                BuiltTarget::Postgres(t) => BuiltTarget::Postgres(Box::new(t.with_pgbouncer(pool))),
                other => other,
            };
        }
        Ok(Some(target.boxed()))
    }
}

/// The admin password of target `spec` for the rotation of `key`: from the store's current
/// value of `password_secret`, a file, or none. `None` too when the password is the secret
/// being set for the first time (e.g. a fresh Redis whose requirepass keyd sets).
fn admin_password(
    data: &StoreData,
    key: &SecretKey,
    spec: &TargetSpec,
) -> Result<Option<SecretString>, Error> {
    let (stack, name) = (key.stack(), key.name());
    match &spec.password {
        AdminPassword::None => Ok(None),
        AdminPassword::Secret(output) => {
            let (_, owner, record, out) = data.find_output(&format!("{stack}/{output}"))?;
            let current = record.current().or_else(|| record.delivered_pending());
            if current.is_none() && owner == name {
                return Ok(None);
            }
            Ok(Some(
                current
                    .and_then(|v| SecretRecord::version_value(v, out.part))
                    .map(crate::secret::Value::into_secret)
                    .ok_or_else(|| Error::NotRotatable {
                        name: name.to_owned(),
                        reason: format!(
                            "the admin password {output} of target {} has no value yet",
                            spec.name
                        ),
                    })?,
            ))
        }
        AdminPassword::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| crate::targets::TargetError {
                target: spec.name.clone(),
                message: format!("cannot read password_file {}: {e}", path.display()),
            })?;
            Ok(Some(SecretString::new(text.trim().to_owned())))
        }
    }
}

/// A target as built, before it is boxed: a PostgreSQL target may still get its pool.
enum BuiltTarget {
    Postgres(Box<PostgresTarget>),
    Other(Box<dyn Target>),
}

impl BuiltTarget {
    fn boxed(self) -> Box<dyn Target> {
        match self {
            BuiltTarget::Postgres(t) => t,
            BuiltTarget::Other(t) => t,
        }
    }
}

/// Builds the target `spec` for a secret whose policy asks for `secret_target` there, with a
/// resolved admin password.
fn build_target(
    spec: &TargetSpec,
    secret_target: SecretTarget,
    admin_password: Option<SecretString>,
) -> Result<BuiltTarget, Error> {
    let target: Box<dyn Target> = match (&spec.kind, secret_target) {
        (
            TargetKind::Postgres { .. },
            SecretTarget::Postgres {
                role,
                strategy,
                group,
                ..
            },
        ) => {
            return Ok(BuiltTarget::Postgres(Box::new(PostgresTarget::new(
                &spec.name,
                &spec.url,
                admin_password.as_ref(),
                &role,
                strategy,
                &group,
                spec.timeout,
                spec.allow_insecure_auth,
            )?)));
        }
        (
            TargetKind::Mysql,
            SecretTarget::Mysql {
                user,
                hosts,
                strategy,
                ..
            },
        ) => Box::new(MysqlTarget::new(
            &spec.name,
            &spec.url,
            admin_password,
            &user,
            &hosts,
            strategy,
            spec.timeout,
            spec.allow_insecure_auth,
        )?),
        (
            TargetKind::Rabbitmq { amqp },
            SecretTarget::Rabbitmq {
                user,
                vhost,
                strategy,
                ..
            },
        ) => Box::new(RabbitmqTarget::new(
            &spec.name,
            &spec.url,
            admin_password,
            amqp,
            &user,
            &vhost,
            strategy,
            spec.timeout,
            spec.allow_insecure_auth,
        )?),
        (
            TargetKind::Redis {
                user: admin_user,
                replicas,
            },
            SecretTarget::Redis {
                user, acl, mode, ..
            },
        ) => Box::new(RedisTarget {
            name: spec.name.clone(),
            url: spec.url.clone(),
            admin_user: admin_user.clone(),
            admin_password,
            user,
            acl,
            mode,
            replicas: replicas.clone(),
            timeout: spec.timeout,
            allow_insecure_auth: spec.allow_insecure_auth,
        }),
        _ => {
            unreachable!("the policy checked that a secret's target fields match the target's type")
        }
    };
    Ok(BuiltTarget::Other(target))
}

/// A version's login and password, for a target.
pub(super) fn credential(version: &VersionRecord) -> Option<Credential<'_>> {
    match &version.material {
        Material::Text { value } => Some(Credential {
            login: version.login.as_deref(),
            password: value,
        }),
        _ => None,
    }
}
