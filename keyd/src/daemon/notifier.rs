//! The daemon's webhooks: [`record`] turns what a pass, rotate or retire did into events for
//! each stack's `[notify]` receivers and appends them to the outbox (on the blocking pool,
//! right after the operation, before the next one starts); [`run`] sends what the outbox holds
//! in the background, retrying with backoff. Sending never holds the store's turn, so a
//! receiver that is down or slow never delays a rotation. On start every waiting event is due
//! at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::notify::{Event, EventKind, Outbox, OutboxEntry, send};
use crate::policy::{NotifySpec, Policy};
use crate::rotation::{OutcomeKind, RotationReport};
use crate::store::Home;

/// Serialises every read-modify-write of the outbox file in this process.
static OUTBOX: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn event_of(result: OutcomeKind) -> Option<EventKind> {
    match result {
        OutcomeKind::Rotated | OutcomeKind::Resumed => Some(EventKind::Rotated),
        OutcomeKind::Retired => Some(EventKind::Retired),
        OutcomeKind::Failed => Some(EventKind::Failed),
        OutcomeKind::RekeyFailed => Some(EventKind::RekeyOwed),
        OutcomeKind::AlreadyRotated | OutcomeKind::Waiting | OutcomeKind::NothingToRetire => None,
    }
}

/// Appends the events of `report` to the outbox of `home`, for the stacks whose stored policy
/// has a `[notify]` wanting them; returns how many entries were added. Reads the store only
/// when the report holds an event. Blocks. Errors are logged, never returned: a rotation that
/// happened is not undone by a notification that cannot be recorded.
pub fn record(home: &Home, report: &RotationReport, now: i64) -> usize {
    let acted: Vec<_> = report
        .outcomes
        .iter()
        .filter_map(|o| event_of(o.result).map(|kind| (o, kind)))
        .collect();
    if acted.is_empty() {
        return 0;
    }
    let Some(data) = read_store(home) else {
        return 0;
    };
    let mut specs: HashMap<&str, Option<NotifySpec>> = HashMap::new();
    let mut entries = Vec::new();
    for (o, kind) in acted {
        let spec = specs
            .entry(o.stack.as_str())
            .or_insert_with(|| notify_spec(data.stacks.get(&o.stack)?));
        let Some(spec) = spec else { continue };
        let mut events = Vec::new();
        if spec.wants(kind) {
            let message = match (kind, &o.message) {
                (_, Some(m)) => m.clone(),
                (EventKind::Rotated, None) => format!("v{} -> v{}", o.from_version, o.to_version),
                _ => o.result.as_words().to_owned(),
            };
            events.push(Event::new(
                kind,
                &o.stack,
                &o.name,
                o.to_version,
                now,
                &message,
            ));
        }
        // A reload hook that failed after this secret's files were written.
        if matches!(kind, EventKind::Rotated | EventKind::Retired)
            && spec.wants(EventKind::ReloadFailed)
            && let Some(owed) = data
                .stacks
                .get(&o.stack)
                .and_then(|s| s.reload_owed.as_ref())
        {
            events.push(Event::new(
                EventKind::ReloadFailed,
                &o.stack,
                &o.name,
                o.to_version,
                now,
                &owed.last_error,
            ));
        }
        for event in events {
            entries.extend(addressed(spec, &event, now));
        }
    }
    enqueue(home, entries, now)
}

/// The certificates (versions already announced in this process) an `expiring` event was
/// recorded for: one event per certificate version and process, however many passes see it.
static EXPIRING_SENT: std::sync::Mutex<Vec<(String, String, u64)>> =
    std::sync::Mutex::new(Vec::new());

/// Appends an `expiring` event for each current certificate that ends within
/// [`ops::check::EXPIRY_WARNING_SECONDS`] (the window `keyctl check` warns in and the alert
/// rule fires in), for stacks whose `[notify]` wants it; once per certificate version in
/// this process. The daemon renews a certificate inside its `renew_before`, so this is sent
/// for one whose renewal is not due yet, failed, or cannot happen. Reads the store. Blocks.
pub fn record_expiring(home: &Home, now: i64) -> usize {
    let Some(data) = read_store(home) else {
        return 0;
    };
    let mut entries = Vec::new();
    let mut sent = EXPIRING_SENT.lock().unwrap_or_else(|e| e.into_inner());
    for (stack, record) in &data.stacks {
        let Some(spec) = notify_spec(record).filter(|spec| spec.wants(EventKind::Expiring)) else {
            continue;
        };
        for (name, secret) in &record.secrets {
            let Some(current) = secret.current() else {
                continue;
            };
            let crate::material::Material::Tls(cert) = &current.material else {
                continue;
            };
            let left = cert.not_after - now;
            if left >= crate::ops::check::EXPIRY_WARNING_SECONDS {
                continue;
            }
            let key = (stack.clone(), name.clone(), current.number);
            if sent.contains(&key) {
                continue;
            }
            sent.push(key);
            let message = match left {
                ..=0 => format!("its certificate expired {} ago", span(-left)),
                _ => format!("its certificate expires in {}", span(left)),
            };
            let event = Event::new(
                EventKind::Expiring,
                stack,
                name,
                current.number,
                now,
                &message,
            );
            entries.extend(addressed(&spec, &event, now));
        }
    }
    drop(sent);
    enqueue(home, entries, now)
}

/// The store, for the stacks' `[notify]`; a store that cannot be read is logged (the
/// operation that happened is not undone by a notification that cannot be recorded).
fn read_store(home: &Home) -> Option<crate::store::StoreData> {
    home.peek()
        .map_err(|e| {
            crate::log::error(format_args!(
                "notify: cannot read the store for [notify]: {e}"
            ))
        })
        .ok()
}

/// A stack's `[notify]`, from its stored policy (none when that no longer parses).
fn notify_spec(record: &crate::store::StackRecord) -> Option<NotifySpec> {
    Policy::parse(&record.policy_path, record.policy_source.clone())
        .ok()?
        .notify
}

/// `event` addressed to each of `spec`'s webhooks.
fn addressed<'a>(
    spec: &'a NotifySpec,
    event: &'a Event,
    now: i64,
) -> impl Iterator<Item = OutboxEntry> + 'a {
    spec.webhooks.iter().map(move |webhook| {
        OutboxEntry::new(
            webhook.clone(),
            spec.secret_file.clone(),
            event.clone(),
            now,
        )
    })
}

/// A span in whole days (rounded), or hours under two days.
fn span(seconds: i64) -> String {
    if seconds >= 2 * 86_400 {
        format!("{} days", (seconds + 43_200) / 86_400)
    } else {
        format!("{} h", seconds / 3600)
    }
}

/// Appends `entries` to the outbox; returns how many.
fn enqueue(home: &Home, entries: Vec<OutboxEntry>, now: i64) -> usize {
    let added = entries.len();
    if added > 0 {
        update(home, now, |outbox| {
            let dropped = outbox.add(entries, now);
            if dropped > 0 {
                crate::log::warn(format_args!(
                    "notify: dropped {dropped} undelivered event(s), too old or beyond the outbox's bound"
                ));
            }
        });
    }
    added
}

/// Opens the outbox, changes it with `change` and saves it, under [`OUTBOX`]. Blocks.
fn update<T>(home: &Home, now: i64, change: impl FnOnce(&mut Outbox) -> T) -> Option<T> {
    let _turn = OUTBOX.lock().unwrap_or_else(|e| e.into_inner());
    let mut outbox = Outbox::open(home.dir()).unwrap_or_else(|e| {
        crate::log::warn(format_args!("notify: {e}; starting an empty outbox"));
        Outbox::empty(home.dir())
    });
    let dropped = outbox.prune(now);
    let out = change(&mut outbox);
    match outbox.save() {
        Ok(()) => Some(out),
        Err(e) if dropped > 0 || !outbox.entries().is_empty() => {
            crate::log::error(format_args!("notify: {e}"));
            None
        }
        Err(_) => Some(out),
    }
}

/// Sends the outbox until the task is dropped: every entry at once on start, then each when
/// it is due or when `wake` says events were added. One delivery at a time, each bounded by
/// [`send::TIMEOUT`].
pub async fn run(home: Home, clock: Arc<dyn crate::clock::Clock>, wake: Arc<tokio::sync::Notify>) {
    let start = clock.now();
    let due = {
        let home = home.clone();
        tokio::task::spawn_blocking(move || {
            update(&home, start, |outbox| {
                outbox.all_due(start);
                outbox.next_due()
            })
            .flatten()
        })
        .await
        .ok()
        .flatten()
    };
    let mut next = due;
    loop {
        if let Some(at) = next {
            let wait = (at - clock.now()).clamp(0, 3600) as u64;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(wait)) => {}
                () = wake.notified() => {}
            }
        } else {
            wake.notified().await;
        }
        next = send_due(&home, &*clock).await;
    }
}

/// Sends every entry due now; returns when the next is due.
async fn send_due(home: &Home, clock: &dyn crate::clock::Clock) -> Option<i64> {
    let now = clock.now();
    let h = home.clone();
    let due = tokio::task::spawn_blocking(move || {
        let _turn = OUTBOX.lock().unwrap_or_else(|e| e.into_inner());
        Outbox::open(h.dir())
            .map(|o| o.due(now))
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default();
    let mut results = Vec::new();
    for entry in due {
        let signing = entry.clone();
        let signed = tokio::task::spawn_blocking(move || send::sign(&signing))
            .await
            .unwrap_or_else(|_| Err("signing panicked".into()));
        let result = match signed {
            Ok(signed) => send::post(&entry.webhook, signed, send::TIMEOUT).await,
            Err(e) => Err(e),
        };
        match &result {
            Ok(()) => crate::log::info(format_args!(
                "notify: {} {}/{} v{} delivered to {}",
                entry.event.event.as_str(),
                entry.event.stack,
                entry.event.name,
                entry.event.version,
                entry.webhook.origin()
            )),
            Err(e) => crate::log::warn(format_args!(
                "notify: {} {}/{} v{} not delivered (attempt {}): {}",
                entry.event.event.as_str(),
                entry.event.stack,
                entry.event.name,
                entry.event.version,
                entry.attempts + 1,
                e.escape_debug()
            )),
        }
        results.push((entry, result));
    }
    let h = home.clone();
    let done = clock.now();
    tokio::task::spawn_blocking(move || {
        update(&h, done, |outbox| {
            for (entry, result) in &results {
                match result {
                    Ok(()) => outbox.delivered(entry),
                    Err(e) => outbox.failed(entry, done, e),
                }
            }
            outbox.next_due()
        })
        .flatten()
    })
    .await
    .ok()
    .flatten()
}
