//! The commands that make or change the store: `init`, `quickstart`/`apply`, `import`,
//! `recipients`, and `backup`/`restore`. Each is one call of `keyd::ops`, its report printed,
//! its failures given the hint that fits this command.

use std::path::Path;

use keyd::ops::{RestoreOptions, actor};
use keyd::policy::Policy;
use keyd::store::{Home, InitOutcome};
use keyd::{ApplyOptions, Error};

use super::args::{ApplyArgs, ImportArgs, RecipientsCommand, SourceArg, StoreCommand};
use super::{Failure, write_stdout};
use crate::output::{self, Given};

/// `keyctl init [--passphrase]`.
pub(super) fn init(home: Home, passphrase: bool) -> Result<(), Failure> {
    let outcome = if passphrase {
        home.init_passphrase()?
    } else {
        home.init()?
    };
    let mut out = String::new();
    output::init(&mut out, &home, outcome == InitOutcome::Created);
    write_stdout(out.as_bytes())
}

/// `keyctl backup --out FILE`.
pub(super) fn backup(home: Home, out: &Path, json: bool) -> Result<(), Failure> {
    let report = keyd::ops::backup(&home, out)?;
    let mut text = String::new();
    output::backup(&mut text, &report, json);
    write_stdout(text.as_bytes())
}

/// `keyctl restore FILE`.
pub(super) fn restore(
    home: Home,
    file: &Path,
    options: &RestoreOptions,
    json: bool,
) -> Result<(), Failure> {
    let report = keyd::ops::restore(&home, file, options).map_err(|e| {
        let refused = matches!(e, Error::RestoreRefused { .. });
        let mut failure = Failure::from(e);
        if refused && options.accept_foreign_backup {
            // The dry run the hint suggests must open this backup as the restore did.
            failure.hint = failure.hint.map(|h| {
                h.replacen(
                    "restore --dry-run ",
                    "restore --dry-run --accept-foreign-backup ",
                    1,
                )
            });
        }
        failure.hint = match failure.hint.as_deref() {
            Some(h) if h.starts_with("run `keyctl init`") => Some(format!(
                "put the identity that opens the backup at {} (mode 0600) first: a backup holds no identity",
                home.identity_path().display()
            )),
            Some(h) if h.starts_with("restore the newest store.age") => Some(
                "restore a newer backup; to go back to this one on purpose, add --accept-rollback".into(),
            ),
            _ => failure.hint,
        };
        failure
    })?;
    let mut text = String::new();
    output::restore(&mut text, &report, json);
    write_stdout(text.as_bytes())
}

pub(super) fn import(home: Home, a: ImportArgs, given: &Given) -> Result<(), Failure> {
    let policy = Policy::load(&a.policy).map_err(Error::from)?;
    let options = keyd::ops::ImportOptions {
        source: a.source,
        kind: a.from.map(|f| match f {
            SourceArg::Dir => keyd::sources::SourceKind::Dir,
            SourceArg::Env => keyd::sources::SourceKind::Env,
            SourceArg::Compose => keyd::sources::SourceKind::Compose,
        }),
        out: a.out,
        dry_run: a.dry_run,
        replace: a.replace,
        by: actor("keyctl import"),
    };
    let report = keyd::ops::import(&home, &policy, &options)?;
    let mut out = String::new();
    output::import(&mut out, &report, a.json, given);
    write_stdout(out.as_bytes())?;
    let refused: Vec<&keyd::ops::ImportEntry> = report.refused().collect();
    if !refused.is_empty() {
        let lines: Vec<String> = refused
            .iter()
            .flat_map(|e| e.messages.iter().map(|m| format!("  {m}")))
            .collect();
        return Err(Failure::new(
            1,
            format!(
                "import refused, nothing written: {} of {} secrets cannot be imported:\n{}",
                refused.len(),
                report.secrets.len(),
                lines.join("\n")
            ),
            Some("fix or remove those values in the source (or the policy), then run the import again; --dry-run checks without writing".into()),
        ));
    }
    if report.imported() == 0 && !report.dry_run {
        return Err(Failure::new(
            1,
            format!(
                "nothing to import: no name in {} is an output of the policy",
                report.source.display()
            ),
            Some("the source's names must be the policy's output names (or their env-var forms); --dry-run shows the mapping".into()),
        ));
    }
    Ok(())
}

pub(super) fn recipients(home: Home, command: RecipientsCommand) -> Result<(), Failure> {
    let mut out = String::new();
    match command {
        RecipientsCommand::List { json } => {
            let list = keyd::ops::list_recipients(&home)?;
            output::recipients(&mut out, &list, json);
        }
        RecipientsCommand::Add { recipient, json } => {
            let change = keyd::ops::add_recipient(&home, &recipient)?;
            output::recipient_change(&mut out, &change, true, json);
        }
        RecipientsCommand::Remove { recipient, json } => {
            let change = keyd::ops::remove_recipient(&home, &recipient)?;
            output::recipient_change(&mut out, &change, false, json);
        }
    }
    write_stdout(out.as_bytes())
}

pub(super) fn apply(
    home: Home,
    a: ApplyArgs,
    first_run: bool,
    given: &Given,
) -> Result<(), Failure> {
    if a.reinit {
        Policy::load(&a.policy).map_err(Error::from)?;
        super::warn(
            a.json,
            "--reinit: secrets the store does not hold are generated anew and replace what is delivered",
        );
    }
    let options = ApplyOptions {
        out: a.out,
        init: first_run,
        reinit: a.reinit,
        accept_rollback: a.accept_rollback,
        swarm: a.swarm || a.init_swarm,
        init_swarm: a.init_swarm,
    };
    let report = keyd::ops::apply_file(&home, &a.policy, &options).map_err(|e| {
        let mut failure = Failure::from(e);
        if failure.code == 4
            && !first_run
            && failure
                .hint
                .as_deref()
                .is_some_and(|h| h.starts_with("run `keyctl init`"))
        {
            failure.hint = Some(format!(
                "`keyctl quickstart --policy {}` initialises the home first",
                a.policy.display()
            ));
        }
        failure
    })?;
    let mut out = String::new();
    output::apply(&mut out, &report, first_run, a.json, given);
    write_stdout(out.as_bytes())?;
    if report.failed.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        1,
        format!("a target did not accept {}: not delivered", report.failed.join(", ")),
        Some("`keyctl status` shows the error; fix the target or its admin password, then re-run this command or `keyctl rotate NAME`".into()),
    ))
}

/// `keyctl store info|copy`.
pub(super) fn store(
    dir: Option<std::path::PathBuf>,
    location: &keyd::store::StoreLocation,
    command: StoreCommand,
) -> Result<(), Failure> {
    let from = super::home(dir.clone(), location)?;
    let mut text = String::new();
    match command {
        StoreCommand::Info { json } => {
            output::store_info(&mut text, &keyd::ops::store_info(&from), json)
        }
        StoreCommand::Copy { to, force, json } => {
            if &to == location {
                return Err(Failure::usage(format!(
                    "--to {to} is the store --store names already: nothing to copy"
                )));
            }
            let to = super::home(dir, &to)?;
            let report = keyd::ops::copy_store(&from, &to, force)?;
            output::store_copy(&mut text, &report, json);
        }
    }
    write_stdout(text.as_bytes())
}
