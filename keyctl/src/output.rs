//! What keyctl prints: summaries for people (tables, next steps) and `--json` for scripts.
//! Nothing here ever receives a secret value; fingerprints are public. Each function appends
//! to a buffer that the caller writes to stdout once.

use keyd::ApplyReport;
use keyd::derive::Change;
use keyd::ops::query::{History, ListedSecret, Versions};
use keyd::store::{Home, StoreLocation};
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
pub struct Given {
    /// `--home DIR` and `--store swarm:NAME`, as given, before the command.
    globals: Vec<String>,
    /// The arguments of the `apply` that delivers as this run did: `--policy FILE` and, when
    /// given, `--out DIR` and `--swarm`.
    apply: Vec<String>,
}

impl Given {
    /// The flags of a run on `home` (when given) and `store`, of `policy` delivered to `out`
    /// (when given) and to Swarm (`swarm`).
    pub fn new(
        home: Option<&Path>,
        store: &StoreLocation,
        policy: &Path,
        out: Option<&Path>,
        swarm: bool,
    ) -> Given {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let mut globals = Vec::new();
        if let Some(home) = home {
            globals.extend(["--home".to_owned(), path(home)]);
        }
        if *store != StoreLocation::File {
            globals.extend(["--store".to_owned(), store.to_string()]);
        }
        let mut apply = vec!["apply".to_owned(), "--policy".to_owned(), path(policy)];
        if let Some(out) = out {
            apply.extend(["--out".to_owned(), path(out)]);
        }
        if swarm {
            apply.push("--swarm".to_owned());
        }
        Given { globals, apply }
    }

    /// `keyctl`, the global flags, then `args`: each word quoted for a POSIX shell where it
    /// needs to be.
    fn keyctl<'a>(&'a self, args: impl IntoIterator<Item = &'a str>) -> String {
        let mut line = String::from("keyctl");
        for word in self.globals.iter().map(String::as_str).chain(args) {
            line.push(' ');
            line.push_str(&shell_word(word));
        }
        line
    }

    /// The `apply` that delivers again as this run did.
    fn apply(&self) -> String {
        self.keyctl(self.apply.iter().map(String::as_str))
    }
}

/// `word` as one word of a POSIX shell: as it is when it holds only characters no shell
/// treats specially, else in single quotes (a `'` in it written as `'\''`).
fn shell_word(word: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.into()
    } else {
        format!("'{}'", word.replace('\'', "'\\''")).into()
    }
}

/// "Next steps" that are commands: what each does, then the command on a line of its own (a
/// home's path can make it long, and it is pasted whole).
fn next_steps(out: &mut String, steps: &[(&str, String)]) {
    for (what, command) in steps {
        say!(out, "  - {what}:\n      {command}");
    }
}

pub fn apply(
    out: &mut String,
    report: &ApplyReport,
    first_run: bool,
    as_json: bool,
    given: &Given,
) {
    if as_json {
        json(out, report);
        return;
    }
    if report.initialised {
        say!(
            out,
            "Created keyd home {} (identity.txt, store.age)",
            report.home.display()
        );
    }
    let count = |c: Change| report.secrets.iter().filter(|s| s.change == c).count();
    let (created, updated, unchanged) = (
        count(Change::Created),
        count(Change::Updated),
        count(Change::Unchanged),
    );
    say!(
        out,
        "Stack {}: {} secrets: {created} created, {updated} updated, {unchanged} unchanged",
        report.stack,
        report.secrets.len()
    );
    // A run that changed nothing says only that: the table would repeat the last one.
    let changed = report.changed_values()
        || report.deliveries.iter().any(|d| !d.written.is_empty())
        || !report.failed.is_empty();
    if changed {
        apply_table(out, report);
        for d in &report.deliveries {
            say!(
                out,
                "Delivered to {} {}: {} written, {} unchanged",
                d.sink,
                d.location.display(),
                d.written.len(),
                d.unchanged.len()
            );
        }
    }
    apply_targets(out, report);
    if !changed {
        say!(
            out,
            "No value changed: every secret already existed and every delivered file was up to date."
        );
    }
    for note in &report.notes {
        say!(out, "note: {note}");
    }
    if first_run && report.changed_values() {
        say!(out, "\nNext steps:");
        // Swarm services get their values from Swarm (at /run/secrets in each task): nothing
        // to mount, but a stack file must name the current secrets.
        if report.deliveries.iter().any(|d| d.sink == "swarm") {
            say!(
                out,
                "  - Declare each secret in your stack file as `external: true` with `name: ${{KEYD_SWARM_<OUTPUT>}}`; Swarm puts it at /run/secrets in each task. Deploy with the current names:\n      env $({}) docker stack deploy -c STACK_FILE {}",
                given.keyctl(["swarm", "env", "--stack", &report.stack]),
                report.stack
            );
        } else if let Some(d) = report.deliveries.iter().find(|d| d.sink == "files") {
            say!(
                out,
                "  - Mount {} into your services at /run/secrets (mount the directory, not single files).",
                d.location.display()
            );
        }
        next_steps(
            out,
            &[
                (
                    "What is stored (names, versions; never values)",
                    given.keyctl(["list"]),
                ),
                (
                    "One value on stdout, exactly as delivered",
                    given.keyctl(["show", "NAME"]),
                ),
                ("After editing the policy, add what is new", given.apply()),
            ],
        );
        say!(
            out,
            "  - Back up {}: the store cannot be opened without it.",
            report.home.join("identity.txt").display()
        );
        say!(
            out,
            "  - Re-run this command any time: it only adds what is missing."
        );
    }
}

/// The apply summary's table: one line per secret.
fn apply_table(out: &mut String, report: &ApplyReport) {
    let width = report
        .secrets
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    // Only keys and certificates have a fingerprint: a hash of a text value would let anyone
    // holding the summary test guesses offline. The header says so when there are any.
    let last = if report.secrets.iter().any(|s| s.fingerprint.is_some()) {
        "ALSO DELIVERED AS / FINGERPRINT (keys and certificates only)"
    } else {
        "ALSO DELIVERED AS"
    };
    say!(
        out,
        "  {:width$}  {:8}  {:>4}  {:9}  {last}",
        "NAME",
        "KIND",
        "VER",
        "CHANGE"
    );
    // One line per secret, padded by hand: at 10,000 secrets the formatting machinery's
    // padding took longer than the rest of this report.
    for s in &report.secrets {
        let change = match s.change {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        };
        out.push_str("  ");
        pad_right(out, &s.name, width);
        out.push_str("  ");
        pad_right(out, s.kind.as_str(), 8);
        out.push_str("  ");
        let version = s.version.to_string();
        pad_left(out, 4, 1 + version.len());
        out.push('v');
        out.push_str(&version);
        out.push_str("  ");
        pad_right(out, change, 9);
        out.push_str("  ");
        let mut first = true;
        for extra in s
            .outputs
            .iter()
            .skip(1)
            .map(|o| ("+", o.as_str()))
            .chain(s.fingerprint.as_deref().map(|f| ("", f)))
        {
            if !first {
                out.push_str("  ");
            }
            first = false;
            out.push_str(extra.0);
            out.push_str(extra.1);
        }
        if first {
            out.truncate(out.trim_end_matches(' ').len());
        }
        out.push('\n');
    }
}

/// Per target: what an apply set there (and tested), what failed, what was already there.
fn apply_targets(out: &mut String, report: &ApplyReport) {
    let mut targets: Vec<&str> = Vec::new();
    for t in report.secrets.iter().filter_map(|s| s.target.as_deref()) {
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    for t in targets {
        let of: Vec<_> = report
            .secrets
            .iter()
            .filter(|s| s.target.as_deref() == Some(t))
            .collect();
        let failed: Vec<&str> = of
            .iter()
            .filter(|s| report.failed.contains(&s.name))
            .map(|s| s.name.as_str())
            .collect();
        let set: Vec<&str> = of
            .iter()
            .filter(|s| s.change != Change::Unchanged && !failed.contains(&s.name.as_str()))
            .map(|s| s.name.as_str())
            .collect();
        let unchanged = of.len() - failed.len() - set.len();
        let list = |names: &[&str]| {
            if names.is_empty() {
                String::new()
            } else {
                format!(" ({})", names.join(", "))
            }
        };
        say!(
            out,
            "Target {t}: {} set and tested{}, {} failed{}, {unchanged} unchanged",
            set.len(),
            list(&set),
            failed.len(),
            list(&failed)
        );
    }
}

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

pub fn import(out: &mut String, report: &keyd::ops::ImportReport, as_json: bool, given: &Given) {
    use keyd::ops::Verdict;
    if as_json {
        json(out, report);
        return;
    }
    let width = report
        .secrets
        .iter()
        .map(|e| e.secret.len())
        .max()
        .unwrap_or(6)
        .max(6);
    say!(
        out,
        "{} {} for stack {} ({} {}):",
        if report.dry_run {
            "Dry run: import"
        } else {
            "Import"
        },
        report.source.display(),
        report.stack,
        report.secrets.len(),
        "secrets in the policy"
    );
    say!(
        out,
        "  {:width$}  {:8}  {:8}  SOURCE",
        "SECRET",
        "KIND",
        "VERDICT"
    );
    for e in &report.secrets {
        let verdict = match e.verdict {
            Verdict::Ok => "ok",
            Verdict::Warning => "warning",
            Verdict::Matches => "matches",
            Verdict::Refused => "REFUSED",
            Verdict::Missing => "missing",
        };
        let sources = if e.sources.is_empty() {
            "-".to_owned()
        } else {
            e.sources.join(", ")
        };
        say!(
            out,
            "  {:width$}  {:8}  {:8}  {}",
            e.secret,
            e.kind.as_str(),
            verdict,
            sources
        );
        if !matches!(e.verdict, Verdict::Missing) {
            for m in e.messages.iter().chain(&e.warnings) {
                say!(out, "  {:width$}    {m}", "");
            }
        }
    }
    if !report.unmapped.is_empty() {
        say!(
            out,
            "Not in the policy (left alone): {}",
            report.unmapped.join(", ")
        );
    }
    let missing = report
        .secrets
        .iter()
        .filter(|e| e.verdict == Verdict::Missing)
        .count();
    let refused = report.refused().count();
    if report.written {
        say!(
            out,
            "Imported {} secrets as their current version (store written once; the audit log records it, without values).",
            report.imported()
        );
        say!(out, "\nNext steps:");
        let deliver = if missing > 0 {
            format!("Deliver them and create the {missing} the source did not have")
        } else {
            "Deliver them".to_owned()
        };
        next_steps(
            out,
            &[
                (&deliver, given.apply()),
                ("When each is rotated next", given.keyctl(["status"])),
            ],
        );
    } else if report.dry_run {
        say!(
            out,
            "Nothing written (--dry-run): {} to import, {refused} refused, {missing} missing.",
            report.imported()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_steps_after_a_swarm_delivery_say_how_to_deploy_not_what_to_mount() {
        let delivery = |sink: &str, location: &str| keyd::sinks::DeliveryReport {
            sink: sink.into(),
            location: location.into(),
            written: vec!["DB_PASSWORD".into()],
            unchanged: Vec::new(),
        };
        let report = ApplyReport {
            stack: "shop".into(),
            home: "h".into(),
            initialised: true,
            secrets: vec![keyd::ops::SecretSummary {
                name: "DB_PASSWORD".into(),
                kind: keyd::policy::Kind::Password,
                version: 1,
                change: Change::Created,
                outputs: vec!["DB_PASSWORD".into()],
                fingerprint: None,
                target: None,
            }],
            deliveries: vec![delivery("files", "/srv/out"), delivery("swarm", "swarm")],
            store_written: true,
            notes: Vec::new(),
            failed: Vec::new(),
        };
        let given = Given::new(
            Some(Path::new("h")),
            &StoreLocation::File,
            Path::new("p.toml"),
            None,
            true,
        );
        let mut out = String::new();
        apply(&mut out, &report, true, false, &given);
        assert!(!out.contains("Mount"), "{out}");
        assert!(
            out.contains("env $(keyctl --home h swarm env --stack shop) docker stack deploy"),
            "{out}"
        );
    }

    #[test]
    fn next_steps_repeat_the_store_and_quote_what_a_shell_would_split() {
        let given = Given::new(
            Some(Path::new("it's here")),
            &StoreLocation::Swarm("prod".into()),
            Path::new("p.toml"),
            Some(Path::new("out dir")),
            true,
        );
        assert_eq!(
            given.keyctl(["list"]),
            r"keyctl --home 'it'\''s here' --store swarm:prod list"
        );
        assert_eq!(
            given.apply(),
            r"keyctl --home 'it'\''s here' --store swarm:prod apply --policy p.toml --out 'out dir' --swarm"
        );
        let plain = Given::new(None, &StoreLocation::File, Path::new("p.toml"), None, false);
        assert_eq!(plain.apply(), "keyctl apply --policy p.toml");
    }
}
