//! What `quickstart`, `apply` and `import` print: the table of what changed, the targets,
//! and next steps that repeat the flags the user gave.

use super::{json, pad_left, pad_right};
use keyd::ApplyReport;
use keyd::derive::Change;
use keyd::store::StoreLocation;
use std::path::Path;

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
