//! Webhook notifications: the [`Event`] keyd tells a stack's `[notify]` receivers about (a
//! rotation, a retirement, a failure; names and versions, never a value), the durable
//! [`Outbox`] that keeps events until they are delivered, and [`send`], one signed delivery
//! over HTTP(S). The daemon decides when events happen and runs the sending; nothing here
//! blocks a rotation: events are written to the outbox and sent later, in the background.

pub mod outbox;
pub mod send;

use serde::{Deserialize, Serialize};

pub use self::outbox::{Outbox, OutboxEntry};
pub use crate::policy::EventKind;

/// The longest message an event carries; longer ones are cut at a character boundary.
pub const MAX_MESSAGE: usize = 500;

/// One event, as its JSON body says it: what happened to which secret, when. It holds no value
/// and no digest of one: only names, a version number and a short message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub event: EventKind,
    /// The stack.
    pub stack: String,
    /// The secret.
    pub name: String,
    /// The version concerned (the new current version; the pending one when a rotation failed).
    pub version: u64,
    /// When keyd saw it happen (RFC 3339, UTC).
    pub time: String,
    /// A short description, without values.
    pub message: String,
    /// Unique per event: a receiver may see an event twice (a response lost after it was
    /// received), and this tells it so.
    pub id: String,
}

impl Event {
    /// A new event of `kind` for `stack`/`name` at Unix time `at`, with a fresh `id`.
    pub fn new(
        kind: EventKind,
        stack: &str,
        name: &str,
        version: u64,
        at: i64,
        message: &str,
    ) -> Event {
        let mut random = [0u8; 12];
        crate::secret::fill_random(&mut random);
        let mut message = message.to_owned();
        if message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        Event {
            event: kind,
            stack: stack.to_owned(),
            name: name.to_owned(),
            version,
            time: crate::clock::format_time(at),
            message,
            id: crate::secret::hex(&random),
        }
    }

    /// The body sent: the event as one JSON object. The signature is over exactly these bytes.
    pub fn body(&self) -> Vec<u8> {
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_body_has_the_documented_fields_and_nothing_else() {
        let e = Event::new(
            EventKind::RekeyOwed,
            "app",
            "DB",
            3,
            1_780_000_000,
            "hook failed",
        );
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        let mut keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["event", "id", "message", "name", "stack", "time", "version"]
        );
        assert!(
            String::from_utf8(e.body())
                .unwrap()
                .starts_with("{\"event\":\"rekey_owed\",\"stack\":\"app\"")
        );
        assert_eq!(body["event"], "rekey_owed");
        assert_eq!(body["version"], 3);
        assert_eq!(body["time"], "2026-05-28T20:26:40Z");
        assert_eq!(e.id.len(), 24);
        let long = Event::new(EventKind::Failed, "a", "B", 1, 0, &"é".repeat(400));
        assert!(long.message.len() <= MAX_MESSAGE + '…'.len_utf8());
    }
}
