//! Checks `[notify]`: its webhooks (https://, or http:// to this machine only), the signing
//! key's file and the events sent.

use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::fields::Fields;
use super::problems::{Checker, closest};
use crate::policy::{EventKind, NotifySpec, Webhook};

const EVENTS: &str = "rotated, retired, failed, rekey_owed, expiring or reload_failed";

/// Checks the `[notify]` table at `table_at`; a relative `secret_file` is resolved against
/// `base`, the policy's directory.
pub(super) fn check_notify(
    c: &mut Checker,
    base: &Path,
    table_at: usize,
    table: &DeTable<'_>,
) -> Option<NotifySpec> {
    let f = Fields::new("[notify]", table);
    f.only(
        c,
        &["webhook", "secret_file", "events"],
        "webhook, secret_file or events",
    );

    let mut webhooks = Vec::new();
    match f.get("webhook") {
        None => c.err(
            table_at,
            "[notify] has no `webhook` (expected webhook = \"https://…\" or a list of them)",
        ),
        Some(e) => {
            let urls: Vec<(String, usize)> = match e.value.get_ref() {
                DeValue::String(s) => vec![(s.to_string(), e.value.span().start)],
                DeValue::Array(items) => items
                    .iter()
                    .filter_map(|item| match item.get_ref() {
                        DeValue::String(s) => Some((s.to_string(), item.span().start)),
                        other => {
                            c.err(
                                item.span().start,
                                format!(
                                    "`webhook` in [notify] must list URLs as strings (found {})",
                                    other.type_str()
                                ),
                            );
                            None
                        }
                    })
                    .collect(),
                _ => {
                    f.wrong_type(c, e, "a URL string or a list of them");
                    Vec::new()
                }
            };
            if matches!(e.value.get_ref(), DeValue::Array(items) if items.is_empty()) {
                c.err(
                    e.value.span().start,
                    "`webhook` in [notify] lists no URL (expected at least one, or no [notify])",
                );
            }
            for (url, at) in urls {
                match Webhook::parse(&url) {
                    Ok(w) if webhooks.contains(&w) => c.err(
                        at,
                        format!("webhook {url:?} is listed twice in [notify] (expected each receiver once)"),
                    ),
                    Ok(w) => webhooks.push(w),
                    Err(why) => c.err(
                        at,
                        format!(
                            "webhook {url:?} {why} (expected https://HOST[:PORT]/PATH, or http:// only to 127.0.0.1, ::1 or localhost)"
                        ),
                    ),
                }
            }
        }
    }

    let secret_file = match f.path(c, "secret_file") {
        Some((path, at)) if path.is_empty() => {
            c.err(at, "`secret_file` in [notify] is empty (expected the path of a file holding the HMAC key)");
            None
        }
        Some((path, _)) => {
            let p = Path::new(&path);
            let joined = if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            };
            Some(std::path::absolute(&joined).unwrap_or(joined))
        }
        None if f.get("secret_file").is_none() => {
            c.err(
                table_at,
                "[notify] has no `secret_file` (expected secret_file = \"/path/to/key\": every event is signed with the HMAC-SHA256 key it holds)",
            );
            None
        }
        None => None,
    };

    let events = match f.str_list(c, "events") {
        None => EventKind::ALL.to_vec(),
        Some((names, at)) => {
            let mut events = Vec::new();
            for name in &names {
                match EventKind::parse(name) {
                    Some(kind) if !events.contains(&kind) => events.push(kind),
                    Some(_) => {}
                    None => {
                        let guess = closest(name, EventKind::ALL.map(EventKind::as_str))
                            .map_or_else(String::new, |g| format!(": did you mean `{g}`?"));
                        c.err(
                            at,
                            format!("unknown event {name:?} in [notify] events{guess} (expected {EVENTS})"),
                        );
                    }
                }
            }
            if names.is_empty() {
                c.err(
                    at,
                    format!("`events` in [notify] lists none (expected some of {EVENTS}, or leave it out for all)"),
                );
            }
            events
        }
    };

    Some(NotifySpec {
        webhooks,
        secret_file: secret_file?,
        events,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::testing::{err_text, policy};
    use crate::policy::EventKind;

    const HEAD: &str = "[stack]\nname = \"s\"\n[secrets.A]\nkind = \"fernet\"\n";

    #[test]
    fn notify_with_defaults_and_lists() {
        let p = policy(&format!(
            "{HEAD}[notify]\nwebhook = \"https://hooks.example.com/keyd\"\nsecret_file = \"keys/hook.key\"\n"
        ));
        let n = p.notify.unwrap();
        assert_eq!(n.webhooks.len(), 1);
        assert_eq!(n.webhooks[0].host, "hooks.example.com");
        assert_eq!(n.events, EventKind::ALL.to_vec());
        assert!(n.secret_file.is_absolute());
        assert!(n.secret_file.ends_with("keys/hook.key"));

        let p = policy(&format!(
            "{HEAD}[notify]\nwebhook = [\"https://a.example/x\", \"http://127.0.0.1:9000/y\"]\nsecret_file = \"/k\"\nevents = [\"failed\", \"rekey_owed\"]\n"
        ));
        let n = p.notify.unwrap();
        assert_eq!(n.webhooks.len(), 2);
        assert!(!n.webhooks[1].tls);
        assert_eq!(n.secret_file, PathBuf::from("/k"));
        assert_eq!(n.events, [EventKind::Failed, EventKind::RekeyOwed]);
        assert!(n.wants(EventKind::Failed) && !n.wants(EventKind::Rotated));
        assert!(policy(HEAD).notify.is_none());
    }

    #[test]
    fn bad_notify_tables_are_refused_where_they_are_written() {
        assert_eq!(
            err_text(&format!(
                "{HEAD}[notify]\nwebhok = \"https://a.example/\"\nsecret_file = \"/k\"\n"
            )),
            "p.toml:5:2: [notify] has no `webhook` (expected webhook = \"https://…\" or a list of them)\n\
             p.toml:6:1: unknown field `webhok` in [notify]: did you mean `webhook`? (expected webhook, secret_file or events)"
        );
        assert_eq!(
            err_text(&format!(
                "{HEAD}[notify]\nwebhook = \"http://hooks.example.com/x\"\nsecret_file = \"/k\"\n"
            )),
            "p.toml:6:11: webhook \"http://hooks.example.com/x\" is plain http:// to a host that is not this machine: events would cross the network unencrypted (expected https://HOST[:PORT]/PATH, or http:// only to 127.0.0.1, ::1 or localhost)"
        );
        assert_eq!(
            err_text(&format!(
                "{HEAD}[notify]\nwebhook = [\"https://a.example/\", 3]\n"
            )),
            "p.toml:5:2: [notify] has no `secret_file` (expected secret_file = \"/path/to/key\": every event is signed with the HMAC-SHA256 key it holds)\n\
             p.toml:6:34: `webhook` in [notify] must list URLs as strings (found integer)"
        );
        assert_eq!(
            err_text(&format!(
                "{HEAD}[notify]\nwebhook = \"https://a.example/\"\nsecret_file = \"/k\"\nevents = [\"rotate\", \"bogus\"]\n"
            )),
            "p.toml:8:10: unknown event \"rotate\" in [notify] events: did you mean `rotated`? (expected rotated, retired, failed, rekey_owed, expiring or reload_failed)\n\
             p.toml:8:10: unknown event \"bogus\" in [notify] events (expected rotated, retired, failed, rekey_owed, expiring or reload_failed)"
        );
        assert_eq!(
            err_text(&format!("notify = \"https://a.example/\"\n{HEAD}")),
            "p.toml:1:10: `notify` in the policy must be a table ([notify] with webhook and secret_file) (found string)"
        );
    }
}
