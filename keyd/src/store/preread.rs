//! The policy pre-read: the first stack's policy, found in the store's decrypted JSON text
//! before the store itself is parsed, so that work needing it (a rotation) can parse it on a
//! second core meanwhile. It reads the store's JSON layout, which only this module knows.

use std::path::PathBuf;

use super::{LockedStore, StoreData, StoreError};

/// A stack's policy as the store holds it.
pub(crate) struct StoredPolicy {
    /// The stack.
    pub(crate) stack: String,
    /// The file it was applied from.
    pub(crate) path: PathBuf,
    /// Its text.
    pub(crate) source: String,
}

impl LockedStore {
    /// [`LockedStore::load_with`] whose part is the first stack's [`StoredPolicy`] (if the
    /// store has a stack): `beside` is given it on a second thread while this one decrypts and
    /// parses the store.
    pub(crate) fn load_with_first_policy<T: Send>(
        &self,
        beside: impl FnOnce(Option<StoredPolicy>) -> T + Send,
    ) -> Result<(StoreData, T), StoreError> {
        self.load_with(first_policy, beside)
    }
}

/// The name, policy path and policy text of the first stack in a store's JSON text. keyd
/// writes them first in each stack, so reading stops there rather than going through the
/// whole store; in any other order they are still found.
fn first_policy(text: &[u8]) -> Option<StoredPolicy> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};

    type Found = Option<StoredPolicy>;
    const STOP: &str = "found";

    /// The store's top level: `stacks`, the others skipped.
    struct Top<'a>(&'a mut Found);
    /// The stacks: the first one's name.
    struct Stacks<'a>(&'a mut Found);
    /// One stack: its policy path and text, then stop.
    struct Stack<'a>(&'a mut Found, String);

    impl<'de> DeserializeSeed<'de> for Top<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Top<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a keyd store")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "stacks" {
                    map.next_value_seed(Stacks(&mut *self.0))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Stacks<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Stacks<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the stacks of a keyd store")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            if let Some(name) = map.next_key::<String>()? {
                map.next_value_seed(Stack(self.0, name))?;
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Stack<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Stack<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a stack of a keyd store")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let (mut path, mut source) = (None, None);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "policy_path" => path = Some(map.next_value()?),
                    "policy_source" => source = Some(map.next_value()?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if path.is_some() && source.is_some() {
                    *self.0 = path.zip(source).map(|(path, source)| StoredPolicy {
                        stack: self.1,
                        path,
                        source,
                    });
                    // Everything needed is read: the rest of the store is not.
                    return Err(A::Error::custom(STOP));
                }
            }
            Ok(())
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(text);
    // Stops with the STOP error once the first stack's policy is read.
    let _ = Top(&mut found).deserialize(&mut de);
    found
}

#[cfg(test)]
mod tests {
    use super::first_policy;

    #[test]
    fn the_first_stacks_policy_is_read_without_reading_the_rest_of_the_store() {
        // What follows the policy is not JSON: reading on would fail.
        let text = br#"{"format":1,"generation":2,"stacks":{"web":{"policy_path":"p/web.toml","policy_source":"[stack]\nname = \"web\"\n","applied_at":1,"secrets":{ not JSON"#;
        let found = first_policy(text).expect("the policy is found");
        assert_eq!(found.stack, "web");
        assert_eq!(found.path, std::path::Path::new("p/web.toml"));
        assert_eq!(found.source, "[stack]\nname = \"web\"\n");
    }

    #[test]
    fn a_policy_written_after_the_rest_of_its_stack_is_still_found() {
        let text = br#"{"audit_at":3,"stacks":{"a":{"secrets":{"X":{"kind":"password","versions":[]}},"ledger":{},"policy_source":"S","policy_path":"a.toml"},"b":{"policy_path":"b.toml","policy_source":"T"}},"format":1}"#;
        let found = first_policy(text).expect("the policy is found");
        assert_eq!(
            (
                found.stack.as_str(),
                found.path.as_path(),
                found.source.as_str()
            ),
            ("a", std::path::Path::new("a.toml"), "S")
        );
        assert!(first_policy(br#"{"format":1,"stacks":{}}"#).is_none());
        assert!(first_policy(b"not a store").is_none());
    }
}
