//! What keyctl prints: summaries for people (tables, next steps) and `--json` for scripts.
//! Nothing here ever receives a secret value; fingerprints are public. Each function appends
//! to a buffer that the caller writes to stdout once.

use keyd::ops::query::{History, ListedSecret, Versions};
use keyd::store::Home;
use serde_json::json;
use std::path::Path;

/// `writeln!` into the output buffer (a `String` cannot fail to take text).
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// `text` then spaces up to `width` characters (as `{:width$}` pads).
fn pad_right(out: &mut String, text: &str, width: usize) {
    out.push_str(text);
    pad_left(out, width, text.chars().count());
}

/// The spaces that right-align a text of `len` characters in `width` (as `{:>width$}`).
fn pad_left(out: &mut String, width: usize, len: usize) {
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len)));
}

fn timestamp(unix: i64) -> String {
    keyd::clock::format_time(unix)
}

/// `--json` output: the value, pretty-printed, on its own lines.
fn json<T: serde::Serialize + ?Sized>(out: &mut String, value: &T) {
    say!(
        out,
        "{}",
        serde_json::to_string_pretty(value).expect("keyctl's output values serialise")
    );
}

mod setup;

pub use setup::{Given, apply, import};

pub fn init(out: &mut String, home: &Home, created: bool) {
    if created {
        say!(out, "Created keyd home {}", home.dir().display());
        if home.is_passphrase() {
            say!(
                out,
                "  store encrypted with your passphrase (age scrypt); {} only marks it: without the passphrase the store cannot be opened",
                home.identity_path().display()
            );
        } else {
            say!(
                out,
                "  identity {} (mode 0600): back it up; without it the store cannot be opened",
                home.identity_path().display()
            );
        }
        say!(
            out,
            "  store    {} (age-encrypted)",
            home.store_path().display()
        );
    } else {
        say!(
            out,
            "keyd home {} is already initialised; nothing changed",
            home.dir().display()
        );
    }
}

/// The flags a run was given that a command suggested under "Next steps" must repeat, so that
/// pasted into a shell it acts on the same home, store and delivery directory.
pub fn list(out: &mut String, listed: &[ListedSecret], as_json: bool) {
    if as_json {
        let items: Vec<_> = listed
            .iter()
            .map(|s| {
                json!({
                    "stack": s.stack,
                    "name": s.name,
                    "kind": s.kind,
                    "version": s.version,
                    "created": s.created.map(timestamp),
                    "versions": s.versions,
                    "outputs": s.outputs,
                    "fingerprint": s.fingerprint,
                })
            })
            .collect();
        json(out, &items);
        return;
    }
    if listed.is_empty() {
        say!(
            out,
            "The store is empty: `keyctl quickstart --policy FILE` fills it."
        );
        return;
    }
    let width = listed
        .iter()
        .map(|s| s.stack.len() + s.name.len() + 1)
        .max()
        .unwrap_or(4);
    say!(
        out,
        "{:width$}  {:8}  {:>4}  {:20}  ALSO DELIVERED AS",
        "STACK/NAME",
        "KIND",
        "VER",
        "CREATED"
    );
    for s in listed {
        say!(
            out,
            "{:width$}  {:8}  {:>4}  {:20}  {}",
            format!("{}/{}", s.stack, s.name),
            s.kind.as_str(),
            s.version.map_or("-".into(), |n| format!("v{n}")),
            s.created.map_or("-".into(), timestamp),
            s.outputs
                .iter()
                .skip(1)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

pub fn history(out: &mut String, history: &History, as_json: bool) {
    let History {
        stack,
        name,
        versions: Versions { kind, versions },
    } = history;
    if as_json {
        let versions: Vec<_> = versions
            .iter()
            .map(|v| {
                json!({
                    "version": v.version,
                    "label": v.label,
                    "created": v.created,
                    "promoted": v.promoted,
                    "retired": v.retired,
                    "fingerprint": v.fingerprint,
                })
            })
            .collect();
        let doc = json!({ "stack": stack, "name": name, "kind": kind, "versions": versions });
        json(out, &doc);
        return;
    }
    say!(out, "{stack}/{name} ({kind})");
    // Keys and certificates have a fingerprint; text values none (see `apply_table`).
    let fingerprints = versions.iter().any(|v| v.fingerprint.is_some());
    let line = format!(
        "  {:>4}  {:9}  {:20}  {:20}  {:20}",
        "VER", "LABEL", "CREATED", "PROMOTED", "RETIRED"
    );
    if fingerprints {
        say!(out, "{line}  FINGERPRINT");
    } else {
        say!(out, "{}", line.trim_end());
    }
    for v in versions {
        let line = format!(
            "  {:>4}  {:9}  {:20}  {:20}  {:20}  {}",
            format!("v{}", v.version),
            v.label.map_or("-".into(), |l| l.to_string()),
            v.created,
            v.promoted.as_deref().unwrap_or("-"),
            v.retired.as_deref().unwrap_or("-"),
            v.fingerprint.as_deref().unwrap_or_default()
        );
        say!(out, "{}", line.trim_end());
    }
}

/// A rotate or retire: what happened to each secret and where values went, and `through`,
/// the socket of the keyd that did it (none when keyctl did it on the store itself).
pub fn rotation(
    out: &mut String,
    report: &keyd::rotation::RotationReport,
    through: Option<&Path>,
    as_json: bool,
) {
    use keyd::rotation::OutcomeKind;
    if as_json {
        /// The report with `through_keyd`: the daemon's socket, or null.
        #[derive(serde::Serialize)]
        struct Through<'a> {
            #[serde(flatten)]
            report: &'a keyd::rotation::RotationReport,
            through_keyd: Option<&'a Path>,
        }
        json(
            out,
            &Through {
                report,
                through_keyd: through,
            },
        );
        return;
    }
    for o in &report.outcomes {
        let what = match o.result {
            OutcomeKind::Rotated => format!("rotated v{} -> v{}", o.from_version, o.to_version),
            OutcomeKind::Resumed => format!(
                "finished an interrupted rotation: v{} -> v{}",
                o.from_version, o.to_version
            ),
            OutcomeKind::AlreadyRotated => {
                format!("already rotated by another process (now v{})", o.to_version)
            }
            OutcomeKind::Waiting => format!(
                "v{} delivered, waiting (publish_ahead) before promote",
                o.to_version
            ),
            OutcomeKind::Failed => format!(
                "rotation to v{} stopped at step {}: {}",
                o.to_version,
                o.step.map_or("-".into(), |s| s.to_string()),
                o.message.as_deref().unwrap_or("")
            ),
            OutcomeKind::Retired => format!(
                "overlap ended, v{} alone is delivered ({})",
                o.to_version,
                o.message.as_deref().unwrap_or("")
            ),
            OutcomeKind::RekeyFailed => format!(
                "v{} is in place, but its rekey hook failed ({}): the previous version stays delivered until the hook succeeds",
                o.to_version,
                o.message.as_deref().unwrap_or("")
            ),
            OutcomeKind::NothingToRetire => {
                format!("nothing to retire (v{} alone is delivered)", o.to_version)
            }
        };
        say!(out, "{}/{} ({}): {what}", o.stack, o.name, o.kind);
    }
    for d in &report.deliveries {
        say!(
            out,
            "Delivered to {} {}: {}",
            d.sink,
            d.location.display(),
            d.written.join(", ")
        );
    }
    if let Some(socket) = through {
        say!(out, "(through keyd at {})", socket.display());
    }
}

pub fn status(out: &mut String, status: &[keyd::rotation::schedule::SecretStatus], as_json: bool) {
    if as_json {
        json(out, status);
        return;
    }
    let width = status
        .iter()
        .map(|s| s.stack.len() + s.name.len() + 1)
        .max()
        .unwrap_or(4)
        .max(10);
    say!(
        out,
        "{:width$}  {:8}  {:>4}  {:>6}  {:20}  {:20}  IN FLIGHT / LAST ERROR",
        "STACK/NAME",
        "KIND",
        "VER",
        "AGE",
        "NEXT ROTATION",
        "OVERLAP ENDS"
    );
    for s in status {
        let age = s.age_seconds.map_or("-".into(), |a| {
            if a >= 86_400 {
                format!("{}d", a / 86_400)
            } else if a >= 3600 {
                format!("{}h", a / 3600)
            } else {
                format!("{}m", a / 60)
            }
        });
        let flight = s.rotation.as_ref().map_or(String::new(), |r| {
            let mut t = format!("v{} at {}", r.pending, r.step);
            if let Some(e) = &r.last_error {
                t.push_str(&format!(" (failed {}x: {e})", r.attempts));
            }
            t
        });
        let flight = match &s.reload_owed {
            None => flight,
            Some(r) => {
                let t = format!(
                    "reload hook owed (failed {}x: {}; retry {})",
                    r.attempts,
                    r.last_error,
                    keyd::clock::format_time(r.retry_at)
                );
                if flight.is_empty() {
                    t
                } else {
                    format!("{flight}; {t}")
                }
            }
        };
        let flight = match &s.rekey {
            None => flight,
            Some(r) => {
                let mut t = format!("rekey to v{} owed", r.version);
                if let Some(e) = &r.last_error {
                    t.push_str(&format!(" (failed {}x: {e}", r.attempts));
                    if let Some(at) = r.retry_at {
                        t.push_str(&format!("; retry {}", keyd::clock::format_time(at)));
                    }
                    t.push(')');
                }
                if flight.is_empty() {
                    t
                } else {
                    format!("{flight}; {t}")
                }
            }
        };
        say!(
            out,
            "{:width$}  {:8}  {:>4}  {:>6}  {:20}  {:20}  {}",
            format!("{}/{}", s.stack, s.name),
            s.kind.as_str(),
            s.version.map_or("-".into(), |v| format!("v{v}")),
            age,
            s.next_rotation.as_deref().unwrap_or("-"),
            s.retire_at.as_deref().unwrap_or("-"),
            flight
        );
    }
}

pub fn recipients(out: &mut String, list: &[keyd::ops::RecipientEntry], as_json: bool) {
    if as_json {
        json(out, list);
        return;
    }
    for r in list {
        if r.own {
            say!(out, "{}  (this home's identity)", r.recipient);
        } else {
            say!(out, "{}", r.recipient);
        }
    }
}

pub fn recipient_change(
    out: &mut String,
    change: &keyd::ops::RecipientChange,
    added: bool,
    as_json: bool,
) {
    if as_json {
        json(out, change);
        return;
    }
    match (added, change.changed) {
        (true, true) => say!(
            out,
            "Added {}: the store is now encrypted to {} recipients; each one's identity alone opens it.",
            change.recipient,
            change.recipients.len()
        ),
        (true, false) => say!(
            out,
            "{} is already a recipient; nothing changed.",
            change.recipient
        ),
        (false, _) => {
            say!(
                out,
                "Removed {}: the store was re-encrypted to the {} remaining recipients.",
                change.recipient,
                change.recipients.len()
            );
            say!(
                out,
                "Its holder could read these {} secrets until now, and any copy of the store or a backup made before stays readable to them:",
                change.readable.len()
            );
            for name in &change.readable {
                say!(out, "  {name}");
            }
            say!(
                out,
                "Rotate them: keyctl rotate --all (literals and templates follow their inputs)."
            );
        }
    }
}

pub fn backup(out: &mut String, report: &keyd::ops::BackupReport, as_json: bool) {
    if as_json {
        json(out, report);
        return;
    }
    say!(
        out,
        "Wrote {} (mode 0600): store generation {}, {} secrets, encrypted to {} recipients. The identity is not in it: keep identity.txt backed up separately.",
        report.path.display(),
        report.generation,
        report.secrets,
        report.recipients.len()
    );
}

pub fn restore(out: &mut String, report: &keyd::ops::RestoreReport, as_json: bool) {
    if as_json {
        json(out, report);
        return;
    }
    let d = &report.diff;
    say!(
        out,
        "Backup {}: generation {} (the store in place: {})",
        report.path.display(),
        d.backup_generation,
        if d.store_in_place {
            format!("generation {}", d.current_generation)
        } else {
            "none".to_owned()
        }
    );
    say!(
        out,
        "  {}",
        match report.author {
            keyd::store::BackupAuthor::ThisIdentity =>
                "made with this home's identity (its MAC checks)",
            keyd::store::BackupAuthor::ThisPassphrase => "made with this home's passphrase",
            keyd::store::BackupAuthor::Unverified =>
                "NOT shown to be made with this home's identity (accepted with --accept-foreign-backup)",
        }
    );
    say!(out, "  {} secrets the same (version and values)", d.same);
    for (title, list) in [
        ("only in the backup", &d.only_in_backup),
        (
            "only in the store in place (dropped by the restore)",
            &d.only_in_store,
        ),
        (
            "different current version (store in place -> backup)",
            &d.changed,
        ),
        (
            "a different value at the same version (store in place -> backup)",
            &d.value_differs,
        ),
    ] {
        if !list.is_empty() {
            say!(out, "  {title}:");
            for item in list {
                say!(out, "    {item}");
            }
        }
    }
    for change in keyd::ops::Change::ALL {
        let list = d.of(change);
        if list.is_empty() {
            continue;
        }
        if report.unaccepted.contains(&change) {
            say!(
                out,
                "  {change} change (a restore needs --accept-{change}):"
            );
        } else {
            say!(out, "  {change} change:");
        }
        for item in list {
            say!(out, "    {item}");
        }
    }
    if report.written {
        say!(
            out,
            "Restored: the backup is now the store. `keyctl apply` (or the daemon) delivers its values."
        );
    } else if report.unaccepted.is_empty() {
        say!(out, "Nothing written (--dry-run).");
    } else {
        let flags: Vec<String> = report
            .unaccepted
            .iter()
            .map(|c| format!("--accept-{c}"))
            .collect();
        say!(
            out,
            "Nothing written (--dry-run). A restore would be refused without {}.",
            flags.join(" ")
        );
    }
}

pub fn store_info(out: &mut String, info: &keyd::ops::StoreInfo, as_json: bool) {
    if as_json {
        json(out, info);
        return;
    }
    say!(out, "store:      {}", info.location);
    say!(out, "backend:    {}", info.backend);
    match (&info.generation, &info.error) {
        (_, Some(e)) => say!(out, "answers:    no ({e})"),
        (Some(g), None) => {
            say!(out, "generation: {g}");
            say!(out, "answers:    yes");
        }
        (None, None) => {
            say!(out, "generation: none (empty)");
            say!(out, "answers:    yes");
        }
    }
}

pub fn store_copy(out: &mut String, report: &keyd::ops::CopyReport, as_json: bool) {
    if as_json {
        json(out, report);
        return;
    }
    say!(
        out,
        "Copied {} to {}: {} stacks, {} secrets, as generation {}. {} is unchanged; use --store {} (or KEYD_STORE) from now on.",
        report.from,
        report.to,
        report.stacks,
        report.secrets,
        report.generation,
        report.from,
        report.to
    );
}

pub fn swarm_env(out: &mut String, names: &[keyd::ops::query::SwarmName], as_json: bool) {
    if as_json {
        json(out, names);
        return;
    }
    for n in names {
        say!(out, "{}={}", n.variable, n.name);
    }
}

/// `keyctl check`: `KEYD OK: …` and, after a colon, the findings, worst first (one line, as
/// monitoring plugins print), or the report as JSON.
pub fn check(out: &mut String, report: &keyd::ops::check::CheckReport, as_json: bool) {
    use keyd::ops::check::Severity;
    if as_json {
        json(out, report);
        return;
    }
    let word = match report.severity {
        Severity::Ok => "OK",
        Severity::Warning => "WARNING",
        Severity::Critical => "CRITICAL",
        Severity::Unknown => "UNKNOWN",
    };
    let findings: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{}: {}", f.subject, f.what))
        .collect();
    if findings.is_empty() {
        say!(out, "KEYD {word}: {} secrets, nothing owed", report.secrets);
    } else {
        say!(
            out,
            "KEYD {word}: {} secrets, {} findings: {}",
            report.secrets,
            findings.len(),
            findings.join("; ")
        );
    }
}
