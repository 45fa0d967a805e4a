//! The Docker secret-provider plugin's view of the store: which keyd output a driver-backed
//! Swarm secret stands for, read from the Swarm secret's name and labels, and its value now.
//! Pure (store data in, answer out), so the plugin socket (`daemon::plugin`) and the Swarm
//! sink's rotation step (which bumps `ForceUpdate` of the services using such a secret, through
//! [`serves`]) apply exactly the same rules.
//!
//! Labels on the Swarm secret (`docker secret create --driver keyd --label …`):
//!
//! | label | meaning |
//! |---|---|
//! | `keyd.secret` | the output to serve, `NAME` or `STACK/NAME`; default: the Swarm secret's own name. `NAME` is an output's delivered name (the file name the files sink writes), so one output of a multi-output secret is chosen by its own name (`JWT_KEY`, `PUBLIC_JWT_KEY`, `JWT_JWKS`) |
//! | `keyd.stack` | the stack, when `keyd.secret` names none; naming two different stacks is an error |
//! | `keyd.reuse` | `false`: Docker must ask again for every task (`DoNotReuse`); `true` (default) lets it reuse the value |
//!
//! With no stack named, the name must be found in exactly one of the stacks the plugin serves.
//! A stack the plugin does not serve (`keyd --plugin-stack`) is refused even when named.

use std::collections::BTreeMap;

use crate::secret::Value;
use crate::store::StoreData;

/// The label naming the keyd output.
pub const SECRET_LABEL: &str = "keyd.secret";
/// The label naming the stack.
pub const STACK_LABEL: &str = "keyd.stack";
/// The label that turns reuse off.
pub const REUSE_LABEL: &str = "keyd.reuse";

/// Which keyd output a Swarm secret stands for, from its name and labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The stack, when the labels name one.
    pub stack: Option<String>,
    /// The output's delivered name.
    pub name: String,
    /// Whether Docker may reuse the value for other tasks.
    pub reuse: bool,
}

/// Why a request is not served. Messages name secrets, stacks and labels, never values; they
/// reach the task's error in `docker service ps`.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// Neither the name nor `keyd.secret` gave a name.
    #[error("the Swarm secret has no name and no {SECRET_LABEL} label")]
    NoName,
    /// A label's value is malformed.
    #[error("label {label}={value:?}: {expected}")]
    BadLabel {
        /// The label.
        label: &'static str,
        /// Its value.
        value: String,
        /// What it should be.
        expected: &'static str,
    },
    /// The labels name two stacks.
    #[error("{SECRET_LABEL} names stack {secret:?} but {STACK_LABEL} names {stack:?}")]
    TwoStacks {
        /// The stack in `keyd.secret`.
        secret: String,
        /// The stack in `keyd.stack`.
        stack: String,
    },
    /// The stack is not one the plugin serves.
    #[error("stack {stack:?} is not served to Docker by this keyd (served: {}; see keyd --plugin-stack)", served.join(", "))]
    StackNotServed {
        /// The stack asked for.
        stack: String,
        /// The stacks served.
        served: Vec<String>,
    },
    /// No served stack has the name.
    #[error("no secret named {name:?} in the stacks keyd serves to Docker ({})", served.join(", "))]
    NotFound {
        /// The name.
        name: String,
        /// The stacks looked in.
        served: Vec<String>,
    },
    /// Several served stacks have the name.
    #[error("{name:?} exists in stacks {}; add the label {STACK_LABEL}=STACK or {SECRET_LABEL}=STACK/{name}", stacks.join(", "))]
    Ambiguous {
        /// The name.
        name: String,
        /// The stacks that have it.
        stacks: Vec<String>,
    },
    /// The store could not be read.
    #[error("cannot read keyd's store: {0}")]
    Store(String),
    /// The secret has no value yet (a first version waiting for its target).
    #[error("{stack}/{name} has no value yet")]
    NoValue {
        /// The stack.
        stack: String,
        /// The name.
        name: String,
    },
}

impl SecretRef {
    /// Reads the labels of the Swarm secret `swarm_name`.
    pub fn from_labels(
        swarm_name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Self, PluginError> {
        let named = labels
            .get(SECRET_LABEL)
            .map_or(swarm_name, String::as_str)
            .trim();
        let (secret_stack, name) = match named.split_once('/') {
            Some((stack, name)) => (Some(stack), name),
            None => (None, named),
        };
        if name.is_empty() && !labels.contains_key(SECRET_LABEL) {
            return Err(PluginError::NoName);
        }
        if name.is_empty() || name.contains('/') || secret_stack.is_some_and(str::is_empty) {
            return Err(PluginError::BadLabel {
                label: SECRET_LABEL,
                value: named.to_owned(),
                expected: "expected NAME or STACK/NAME",
            });
        }
        let label_stack = labels.get(STACK_LABEL).map(|s| s.trim());
        if label_stack.is_some_and(str::is_empty) {
            return Err(PluginError::BadLabel {
                label: STACK_LABEL,
                value: String::new(),
                expected: "expected a stack name",
            });
        }
        let stack = match (secret_stack, label_stack) {
            (Some(a), Some(b)) if a != b => {
                return Err(PluginError::TwoStacks {
                    secret: a.to_owned(),
                    stack: b.to_owned(),
                });
            }
            (a, b) => a.or(b).map(str::to_owned),
        };
        let reuse = match labels.get(REUSE_LABEL).map(|s| s.trim()) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(PluginError::BadLabel {
                    label: REUSE_LABEL,
                    value: other.to_owned(),
                    expected: "expected true or false",
                });
            }
        };
        Ok(SecretRef {
            stack,
            name: name.to_owned(),
            reuse,
        })
    }
}

/// What the plugin hands Docker for one request.
#[derive(Debug)]
pub struct Served {
    /// The stack.
    pub stack: String,
    /// The output's name.
    pub name: String,
    /// The newest version the value carries.
    pub version: u64,
    /// The value, exactly as the files sink delivers this output.
    pub value: Value,
    /// Whether Docker may reuse it.
    pub reuse: bool,
}

/// The value `wanted` stands for in `data`, looked up only in the stacks `served`.
pub fn resolve(
    data: &StoreData,
    served: &[String],
    wanted: &SecretRef,
) -> Result<Served, PluginError> {
    let stacks: Vec<&String> = match &wanted.stack {
        Some(stack) if served.contains(stack) => vec![stack],
        Some(stack) => {
            return Err(PluginError::StackNotServed {
                stack: stack.clone(),
                served: served.to_vec(),
            });
        }
        None => served.iter().collect(),
    };
    let mut found = Vec::new();
    for stack in stacks {
        let Some(record) = data.stacks.get(stack) else {
            continue;
        };
        for secret in record.secrets.values().filter(|s| !s.removed) {
            if let Some(output) = secret.outputs.iter().find(|o| o.name == wanted.name) {
                found.push((stack, secret, output));
            }
        }
    }
    let (stack, secret, output) = match found.len() {
        0 => {
            return Err(PluginError::NotFound {
                name: wanted.name.clone(),
                served: served.to_vec(),
            });
        }
        1 => found.remove(0),
        _ => {
            return Err(PluginError::Ambiguous {
                name: wanted.name.clone(),
                stacks: found.iter().map(|f| f.0.clone()).collect(),
            });
        }
    };
    let (version, value) = secret
        .delivered(output.part)
        .ok_or_else(|| PluginError::NoValue {
            stack: stack.clone(),
            name: wanted.name.clone(),
        })?;
    Ok(Served {
        stack: stack.clone(),
        name: wanted.name.clone(),
        version,
        value,
        reuse: wanted.reuse,
    })
}

/// Whether the driver-backed Swarm secret `swarm_name` with `labels` is served from output
/// `name` of `stack`, for a plugin serving the stacks `served`. The Swarm sink's deliver step
/// calls this for every Swarm secret whose driver is keyd's plugin, after `stack`'s output
/// `name` changed: the services using a secret it returns true for need their `ForceUpdate`
/// bumped, so that new tasks ask the plugin again and get the new value. A secret whose labels
/// cannot be read is not served by anything, so it is false.
pub fn serves(
    swarm_name: &str,
    labels: &BTreeMap<String, String>,
    served: &[String],
    stack: &str,
    name: &str,
) -> bool {
    let Ok(wanted) = SecretRef::from_labels(swarm_name, labels) else {
        return false;
    };
    wanted.name == name
        && served.iter().any(|s| s == stack)
        && wanted.stack.as_deref().is_none_or(|s| s == stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_swarm_name_is_the_default_and_labels_override_it() {
        let r = SecretRef::from_labels("DB_PASSWORD", &labels(&[])).unwrap();
        assert_eq!(
            (r.stack, r.name.as_str(), r.reuse),
            (None, "DB_PASSWORD", true)
        );
        let r = SecretRef::from_labels(
            "x",
            &labels(&[("keyd.secret", "app/DB_PASSWORD"), ("keyd.reuse", "false")]),
        )
        .unwrap();
        assert_eq!(r.stack.as_deref(), Some("app"));
        assert_eq!(r.name, "DB_PASSWORD");
        assert!(!r.reuse);
        let r = SecretRef::from_labels(
            "x",
            &labels(&[("keyd.secret", "DB_PASSWORD"), ("keyd.stack", "app")]),
        )
        .unwrap();
        assert_eq!(r.stack.as_deref(), Some("app"));
    }

    #[test]
    fn malformed_labels_are_refused_with_what_was_expected() {
        for (pairs, message) in [
            (
                vec![("keyd.secret", "a/b/c")],
                "expected NAME or STACK/NAME",
            ),
            (
                vec![("keyd.secret", "/NAME")],
                "expected NAME or STACK/NAME",
            ),
            (vec![("keyd.secret", "")], "expected NAME or STACK/NAME"),
            (vec![("keyd.reuse", "no")], "expected true or false"),
            (vec![("keyd.stack", "")], "expected a stack name"),
            (
                vec![("keyd.secret", "a/N"), ("keyd.stack", "b")],
                "names stack \"a\" but keyd.stack names \"b\"",
            ),
        ] {
            let e = SecretRef::from_labels("x", &labels(&pairs)).unwrap_err();
            assert!(e.to_string().contains(message), "{pairs:?}: {e}");
        }
        assert_eq!(
            SecretRef::from_labels("", &labels(&[])).unwrap_err(),
            PluginError::NoName
        );
    }

    #[test]
    fn serves_matches_the_output_and_stack_a_rotation_changed() {
        let served = vec!["app".to_owned()];
        let pinned = labels(&[("keyd.secret", "app/DB_PASSWORD")]);
        assert!(serves("x", &pinned, &served, "app", "DB_PASSWORD"));
        assert!(!serves("x", &pinned, &served, "app", "OTHER"));
        assert!(!serves("x", &pinned, &served, "other", "DB_PASSWORD"));
        assert!(serves(
            "DB_PASSWORD",
            &labels(&[]),
            &served,
            "app",
            "DB_PASSWORD"
        ));
        assert!(!serves(
            "DB_PASSWORD",
            &labels(&[]),
            &[],
            "app",
            "DB_PASSWORD"
        ));
        let broken = labels(&[("keyd.reuse", "maybe")]);
        assert!(!serves(
            "DB_PASSWORD",
            &broken,
            &served,
            "app",
            "DB_PASSWORD"
        ));
    }
}
