//! `[notify]`: where keyd sends signed webhook events about a stack's secrets, with which key
//! they are signed, and which events are sent. Data only: `notify` builds the sender from it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[notify]`: webhooks told about rotations, retirements and failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotifySpec {
    /// Every receiver (`webhook`, one URL or a list), each sent every event.
    pub webhooks: Vec<Webhook>,
    /// The file holding the HMAC-SHA256 key events are signed with (`secret_file`; read when
    /// an event is sent, so a replaced key takes effect without an apply).
    pub secret_file: PathBuf,
    /// The events sent (`events`, default [`EventKind::ALL`]).
    pub events: Vec<EventKind>,
}

impl NotifySpec {
    /// Whether events of `kind` are sent.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }
}

/// One receiver's URL, split once by the parser: `https://HOST[:PORT]/PATH`, or `http://` to a
/// loopback address.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// `https` (verified TLS) or `http` (loopback only).
    pub tls: bool,
    /// The host as written (a name, an IPv4 address or a bracketed IPv6 address).
    pub host: String,
    /// The port (443 or 80 when the URL names none).
    pub port: u16,
    /// The path and query, at least `/`.
    pub path: String,
}

impl Webhook {
    /// The URL as written in the policy (reassembled). Its path may be a credential (many
    /// receivers put a token there): logs show [`Webhook::origin`] instead.
    pub fn url(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    /// `scheme://host:port`, with no path: what logs and errors name.
    pub fn origin(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }

    /// The host without IPv6 brackets, as a resolver or TLS name takes it.
    pub fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Whether the host is this machine (`localhost`, 127.0.0.0/8, `::1`).
    pub fn is_loopback(&self) -> bool {
        let host = self.bare_host();
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Splits `url`; `Err` says what is wrong with it (without repeating it).
    pub fn parse(url: &str) -> Result<Webhook, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err("is not an https:// URL".into());
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err("holds a user or password: put credentials in secret_file's signature, not in the URL".into());
        }
        if path.contains('#') || url.chars().any(|c| c.is_control() || c == ' ') {
            return Err("holds a fragment, a space or a control character".into());
        }
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                let port = authority[i + 1..]
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or("has a port that is not a number from 1 to 65535")?;
                (&authority[..i], port)
            }
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let bracketed = host.starts_with('[') && host.ends_with(']');
        let valid_host = if bracketed {
            host[1..host.len() - 1]
                .parse::<std::net::Ipv6Addr>()
                .is_ok()
        } else {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        };
        if !valid_host {
            return Err("has no valid host".into());
        }
        let webhook = Webhook {
            tls,
            host: host.to_owned(),
            port,
            path,
        };
        if !tls && !webhook.is_loopback() {
            return Err(
                "is plain http:// to a host that is not this machine: events would cross the network unencrypted".into(),
            );
        }
        Ok(webhook)
    }
}

/// Only the origin: the path may be a credential.
impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Webhook({}/…)", self.origin())
    }
}

/// What an event tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new version was made and promoted.
    Rotated,
    /// The previous version was retired (the overlap ended).
    Retired,
    /// A rotation or retire step failed; keyd retries it.
    Failed,
    /// The re-key hook failed: the previous version stays until it succeeds.
    RekeyOwed,
    /// A certificate is inside its `renew_before` window.
    Expiring,
    /// A reload hook failed after new files were written.
    ReloadFailed,
}

impl EventKind {
    /// Every event, the default of `events`.
    pub const ALL: [EventKind; 6] = [
        EventKind::Rotated,
        EventKind::Retired,
        EventKind::Failed,
        EventKind::RekeyOwed,
        EventKind::Expiring,
        EventKind::ReloadFailed,
    ];

    /// The name in policies and event bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Rotated => "rotated",
            EventKind::Retired => "retired",
            EventKind::Failed => "failed",
            EventKind::RekeyOwed => "rekey_owed",
            EventKind::Expiring => "expiring",
            EventKind::ReloadFailed => "reload_failed",
        }
    }

    /// The event named `name`.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_origin_and_path() {
        let w = Webhook::parse("https://hooks.example.com/keyd?x=1").unwrap();
        assert_eq!(
            (w.tls, w.host.as_str(), w.port),
            (true, "hooks.example.com", 443)
        );
        assert_eq!(w.path, "/keyd?x=1");
        assert_eq!(w.url(), "https://hooks.example.com:443/keyd?x=1");
        let w = Webhook::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!((w.port, w.path.as_str()), (9000, "/"));
        let w = Webhook::parse("http://[::1]:8080/h").unwrap();
        assert_eq!((w.bare_host(), w.port), ("::1", 8080));
        assert!(Webhook::parse("http://localhost/x").is_ok());
        assert!(format!("{w:?}").contains("[::1]:8080") && !format!("{w:?}").contains("/h"));
    }

    #[test]
    fn bad_urls_are_refused() {
        for url in [
            "ftp://x/",
            "hooks.example.com/x",
            "http://example.com/x",
            "http://10.0.0.1/x",
            "https://user:pw@example.com/",
            "https://:443/",
            "https://example.com:0/",
            "https://example.com:99999/",
            "https://exa mple.com/",
            "https://example.com/#frag",
        ] {
            assert!(Webhook::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn event_names_round_trip() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.as_str())
            );
        }
    }
}
