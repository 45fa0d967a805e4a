//! The Docker secret-provider plugin's view of the store: which stack a requesting service may
//! read (its `com.docker.stack.namespace`, mapped by [`StackMap`]), which keyd output a
//! driver-backed Swarm secret stands for (the Swarm secret's name and labels), and its value
//! now. Pure (store data in, answer out), so the plugin socket (`daemon::plugin`) and the
//! plugin sink's rotation step (which bumps `ForceUpdate` of the services using such a secret,
//! through [`StackMap::stack_for`] and [`serves`]) apply exactly the same rules.
//!
//! The stack comes from the service, never from the secret: the Swarm secret's labels are set
//! by whoever creates the secret, so they only choose among the values of the service's own
//! stack. A service outside every stack (no namespace label) is served only the one stack
//! `--plugin-allow-unstacked` names, if any. A name is never looked up in another stack.
//!
//! Labels on the Swarm secret (`docker secret create --driver keyd --label …`):
//!
//! | label | meaning |
//! |---|---|
//! | `keyd.secret` | the output to serve, `NAME` or `STACK/NAME`; default: the Swarm secret's own name. `NAME` is an output's delivered name (the file name the files sink writes), so one output of a multi-output secret is chosen by its own name (`JWT_KEY`, `PUBLIC_JWT_KEY`, `JWT_JWKS`). A `STACK` other than the service's is refused |
//! | `keyd.stack` | the stack, when `keyd.secret` names none; naming two different stacks is an error, naming one other than the service's is refused |
//! | `keyd.reuse` | `false`: Docker must ask again for every task (`DoNotReuse`); `true` (default) lets it reuse the value |

use std::collections::BTreeMap;

use crate::secret::Value;
use crate::store::StoreData;

/// The label naming the keyd output.
pub const SECRET_LABEL: &str = "keyd.secret";
/// The label naming the stack.
pub const STACK_LABEL: &str = "keyd.stack";
/// The label that turns reuse off.
pub const REUSE_LABEL: &str = "keyd.reuse";
/// The service label `docker stack deploy` puts on every service of a stack: its namespace.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// Which keyd stack a requesting service may read: the stack mapped to its
/// `com.docker.stack.namespace` (`keyd --plugin-stack STACK[=NAMESPACE]`), or for a service in
/// no stack the one `--plugin-allow-unstacked` names. Each namespace maps to one stack and each
/// stack to one namespace, so a service never has two stacks to choose from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StackMap {
    /// Namespace to stack.
    namespaces: BTreeMap<String, String>,
    /// The stack served to services in no stack.
    unstacked: Option<String>,
}

/// Why `--plugin-stack` and `--plugin-allow-unstacked` do not make a [`StackMap`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StackMapError {
    /// Not `STACK` or `STACK=NAMESPACE`.
    #[error(
        "--plugin-stack {0:?}: expected STACK or STACK=NAMESPACE (neither empty, no '/' or whitespace)"
    )]
    Malformed(String),
    /// `--plugin-allow-unstacked` names no stack.
    #[error("--plugin-allow-unstacked {0:?}: expected a stack name (no '/' or whitespace)")]
    MalformedUnstacked(String),
    /// A stack given twice.
    #[error("--plugin-stack: stack {0:?} is given twice; a stack is served to one namespace")]
    StackTwice(String),
    /// A namespace given to two stacks.
    #[error(
        "--plugin-stack: namespace {namespace:?} is given to stacks {first:?} and {second:?}; a namespace is served one stack"
    )]
    NamespaceTwice {
        /// The namespace.
        namespace: String,
        /// The stack it was given first.
        first: String,
        /// The stack it was given next.
        second: String,
    },
    /// Nothing to serve.
    #[error(
        "--docker-plugin serves no stack: give --plugin-stack STACK[=NAMESPACE] or --plugin-allow-unstacked STACK"
    )]
    Empty,
}

/// Whether `name` can be a stack or namespace name here: not empty, no `/` (it separates the
/// stack in `keyd.secret`), no `=` (it separates the namespace), no whitespace or control.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '/' || c == '=' || c.is_whitespace() || c.is_control())
}

impl StackMap {
    /// Reads one `--plugin-stack` value: `STACK` (served to the namespace `STACK`) or
    /// `STACK=NAMESPACE`. Returns the stack and the namespace.
    pub fn parse_stack_arg(arg: &str) -> Result<(String, String), StackMapError> {
        let (stack, namespace) = arg.split_once('=').unwrap_or((arg, arg));
        if plain_name(stack) && plain_name(namespace) {
            Ok((stack.to_owned(), namespace.to_owned()))
        } else {
            Err(StackMapError::Malformed(arg.to_owned()))
        }
    }

    /// The map of `keyd --plugin-stack` (`(stack, namespace)` pairs) and
    /// `--plugin-allow-unstacked`. Refuses a stack or a namespace given twice, and a map that
    /// serves nothing.
    pub fn new(
        stacks: impl IntoIterator<Item = (String, String)>,
        unstacked: Option<String>,
    ) -> Result<Self, StackMapError> {
        let mut namespaces: BTreeMap<String, String> = BTreeMap::new();
        for (stack, namespace) in stacks {
            if namespaces.values().any(|s| *s == stack) {
                return Err(StackMapError::StackTwice(stack));
            }
            if let Some(first) = namespaces.get(&namespace) {
                return Err(StackMapError::NamespaceTwice {
                    namespace,
                    first: first.clone(),
                    second: stack,
                });
            }
            namespaces.insert(namespace, stack);
        }
        if let Some(stack) = &unstacked
            && !plain_name(stack)
        {
            return Err(StackMapError::MalformedUnstacked(stack.clone()));
        }
        if namespaces.is_empty() && unstacked.is_none() {
            return Err(StackMapError::Empty);
        }
        Ok(StackMap {
            namespaces,
            unstacked,
        })
    }

    /// The map a policy's `[sinks.plugin]` states for its own stack: `stack` served to
    /// `namespace`, and to services in no stack when `unstacked`. It must agree with the
    /// plugin's flags (docs/plugin.md); the sink uses it to pick the services to restart.
    pub fn for_stack(stack: &str, namespace: &str, unstacked: bool) -> Self {
        StackMap {
            namespaces: BTreeMap::from([(namespace.to_owned(), stack.to_owned())]),
            unstacked: unstacked.then(|| stack.to_owned()),
        }
    }

    /// The stack a service whose `com.docker.stack.namespace` is `namespace` may read (`None`
    /// or empty: the service is in no stack).
    pub fn stack_for(&self, namespace: Option<&str>) -> Result<&str, PluginError> {
        match namespace.filter(|n| !n.is_empty()) {
            Some(namespace) => self
                .namespaces
                .get(namespace)
                .map(String::as_str)
                .ok_or_else(|| PluginError::NamespaceNotServed {
                    namespace: namespace.to_owned(),
                }),
            None => self.unstacked.as_deref().ok_or(PluginError::Unstacked),
        }
    }

    /// The namespace `labels` give a service (`None`: in no stack).
    pub fn namespace_of<'l>(
        labels: impl IntoIterator<Item = (&'l String, &'l String)>,
    ) -> Option<&'l str> {
        labels
            .into_iter()
            .find(|(k, _)| *k == NAMESPACE_LABEL)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

impl std::fmt::Display for StackMap {
    /// For keyd's start-up line: `stacka (namespace stacka), stackb (namespace prod_b);
    /// services in no stack: stacka`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (namespace, stack) in &self.namespaces {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{stack} (namespace {namespace})")?;
        }
        match &self.unstacked {
            Some(stack) if first => write!(f, "services in no stack: {stack}"),
            Some(stack) => write!(f, "; services in no stack: {stack}"),
            None => Ok(()),
        }
    }
}

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
    /// The service is in no stack, and no stack is served to such services.
    #[error(
        "the service is in no stack (no {NAMESPACE_LABEL} label); keyd serves such a service only the stack named by keyd --plugin-allow-unstacked STACK"
    )]
    Unstacked,
    /// The service's namespace is mapped to no stack.
    #[error(
        "the service's stack namespace {namespace:?} is not served by this keyd (see keyd --plugin-stack STACK=NAMESPACE)"
    )]
    NamespaceNotServed {
        /// The namespace.
        namespace: String,
    },
    /// The labels name a stack that is not the service's.
    #[error(
        "the Swarm secret names stack {named:?}, but the service ({service}) is served stack {own:?} only"
    )]
    OtherStack {
        /// The stack the labels name.
        named: String,
        /// The service's stack.
        own: String,
        /// The service's namespace, or that it has none.
        service: String,
    },
    /// The service's stack has no output of that name.
    #[error("no secret named {name:?} in stack {stack:?}")]
    NotFound {
        /// The name.
        name: String,
        /// The service's stack.
        stack: String,
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

/// The value `wanted` stands for in `data`, for a service whose namespace is `namespace`:
/// looked up only in the stack `map` gives that service.
pub fn resolve(
    data: &StoreData,
    map: &StackMap,
    namespace: Option<&str>,
    wanted: &SecretRef,
) -> Result<Served, PluginError> {
    let stack = map.stack_for(namespace)?;
    if let Some(named) = &wanted.stack
        && named != stack
    {
        return Err(PluginError::OtherStack {
            named: named.clone(),
            own: stack.to_owned(),
            service: namespace
                .filter(|n| !n.is_empty())
                .map_or_else(|| "in no stack".to_owned(), |n| format!("namespace {n:?}")),
        });
    }
    let not_found = || PluginError::NotFound {
        name: wanted.name.clone(),
        stack: stack.to_owned(),
    };
    let record = data.stacks.get(stack).ok_or_else(not_found)?;
    // The policy's cross-checks keep delivered names unique within a stack.
    let (secret, output) = record
        .secrets
        .values()
        .filter(|s| !s.removed)
        .find_map(|s| {
            s.outputs
                .iter()
                .find(|o| o.name == wanted.name)
                .map(|o| (s, o))
        })
        .ok_or_else(not_found)?;
    let (version, value) = secret
        .delivered(output.part)
        .ok_or_else(|| PluginError::NoValue {
            stack: stack.to_owned(),
            name: wanted.name.clone(),
        })?;
    Ok(Served {
        stack: stack.to_owned(),
        name: wanted.name.clone(),
        version,
        value,
        reuse: wanted.reuse,
    })
}

/// Whether the driver-backed Swarm secret `swarm_name` with `labels` stands for output `name`
/// of `stack`, for a service that may read `stack` ([`StackMap::stack_for`]). The plugin sink's
/// deliver step calls this for every Swarm secret whose driver is keyd's plugin, after
/// `stack`'s output `name` changed: the services of `stack` using a secret it returns true for
/// need their `ForceUpdate` bumped, so that new tasks ask the plugin again and get the new
/// value. A secret whose labels cannot be read, or that names another stack, is not served.
pub fn serves(
    swarm_name: &str,
    labels: &BTreeMap<String, String>,
    stack: &str,
    name: &str,
) -> bool {
    let Ok(wanted) = SecretRef::from_labels(swarm_name, labels) else {
        return false;
    };
    wanted.name == name && wanted.stack.as_deref().is_none_or(|s| s == stack)
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
        let pinned = labels(&[("keyd.secret", "app/DB_PASSWORD")]);
        assert!(serves("x", &pinned, "app", "DB_PASSWORD"));
        assert!(!serves("x", &pinned, "app", "OTHER"));
        assert!(!serves("x", &pinned, "other", "DB_PASSWORD"));
        assert!(serves("DB_PASSWORD", &labels(&[]), "app", "DB_PASSWORD"));
        let broken = labels(&[("keyd.reuse", "maybe")]);
        assert!(!serves("DB_PASSWORD", &broken, "app", "DB_PASSWORD"));
    }

    #[test]
    fn a_service_reads_the_stack_of_its_namespace_and_no_other() {
        let map = StackMap::new(
            [
                StackMap::parse_stack_arg("a").unwrap(),
                StackMap::parse_stack_arg("b=prod_b").unwrap(),
            ],
            None,
        )
        .unwrap();
        assert_eq!(map.stack_for(Some("a")), Ok("a"));
        assert_eq!(map.stack_for(Some("prod_b")), Ok("b"));
        assert_eq!(
            map.stack_for(Some("b")),
            Err(PluginError::NamespaceNotServed {
                namespace: "b".into()
            })
        );
        assert_eq!(map.stack_for(None), Err(PluginError::Unstacked));
        assert_eq!(map.stack_for(Some("")), Err(PluginError::Unstacked));
        assert_eq!(map.to_string(), "a (namespace a), b (namespace prod_b)");
        let unstacked = StackMap::new([], Some("a".into())).unwrap();
        assert_eq!(unstacked.stack_for(None), Ok("a"));
        assert!(unstacked.stack_for(Some("a")).is_err());
        assert_eq!(unstacked.to_string(), "services in no stack: a");
        let from_policy = StackMap::for_stack("app", "prod", true);
        assert_eq!(from_policy.stack_for(Some("prod")), Ok("app"));
        assert_eq!(from_policy.stack_for(None), Ok("app"));
        assert!(from_policy.stack_for(Some("app")).is_err());
        let service = labels(&[("com.docker.stack.namespace", "prod"), ("x", "y")]);
        assert_eq!(StackMap::namespace_of(&service), Some("prod"));
        assert_eq!(StackMap::namespace_of(&labels(&[("x", "y")])), None);
    }

    #[test]
    fn a_stack_or_namespace_given_twice_or_malformed_is_refused() {
        let pair = |s: &str, n: &str| (s.to_owned(), n.to_owned());
        assert_eq!(
            StackMap::new([pair("a", "x"), pair("b", "x")], None),
            Err(StackMapError::NamespaceTwice {
                namespace: "x".into(),
                first: "a".into(),
                second: "b".into()
            })
        );
        assert_eq!(
            StackMap::new([pair("a", "a"), pair("a", "y")], None),
            Err(StackMapError::StackTwice("a".into()))
        );
        assert_eq!(StackMap::new([], None), Err(StackMapError::Empty));
        assert!(StackMap::new([], Some("a/b".into())).is_err());
        for bad in ["", "=", "a=", "=a", "a/b", "a=b=c", "a b"] {
            assert_eq!(
                StackMap::parse_stack_arg(bad),
                Err(StackMapError::Malformed(bad.into())),
                "{bad:?}"
            );
        }
    }
}
