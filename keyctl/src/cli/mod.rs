//! Command dispatch, and what every command shares: a failure (message, hint, documented exit
//! code) and writing to stdout. The definitions are in `args`; each command runs in the
//! module of its group: `query` (list, show, history, status), `rotation` (rotate, retire,
//! through the daemon when one runs), `store` (init, quickstart, apply, import, recipients,
//! backup, restore), `tools` (gen, compose, completions, man, policy check: no store).

mod args;
mod plan;
mod query;
mod rotation;
mod store;
mod tools;

use std::io::Write as _;
use std::path::PathBuf;

use keyd::Error;
use keyd::ops::{Change, RestoreOptions};
use keyd::policy::PolicyError;
use keyd::sinks::SinkError;
use keyd::store::{Home, StoreError};

use crate::output::Given;
pub use args::Args;
use args::{Command, PlanCommand, PolicyCommand, SwarmCommand};

/// A failed command: what failed, what to do, and the exit code.
pub struct Failure {
    pub message: String,
    pub hint: Option<String>,
    pub code: u8,
}

impl Failure {
    pub(super) fn new(code: u8, message: impl Into<String>, hint: Option<String>) -> Self {
        Failure {
            message: message.into(),
            hint,
            code,
        }
    }

    /// An exit code with nothing more to say: the command printed its verdict already
    /// (`keyctl check`).
    pub(super) fn silent(code: u8) -> Self {
        Failure::new(code, String::new(), None)
    }

    pub(super) fn usage(message: impl Into<String>) -> Self {
        Failure::new(2, message, None)
    }

    /// Prints the failure on stderr: `keyctl: MESSAGE` and `hint: HINT` for people, or under
    /// `--json` one JSON object on one line (`level`, `message`, `hint`, `exit_code`) that a
    /// script reads as it reads stdout. A silent failure prints nothing.
    pub fn print(&self, json: bool) {
        if self.message.is_empty() {
            return;
        }
        if json {
            eprintln!(
                "{}",
                Diagnostic {
                    level: "error",
                    message: &self.message,
                    hint: self.hint.as_deref(),
                    exit_code: Some(self.code),
                }
            );
            return;
        }
        eprintln!("keyctl: {}", self.message);
        if let Some(hint) = &self.hint {
            eprintln!("hint: {hint}");
        }
    }

    /// A command line clap refused. Under `--json` (seen in the arguments, since they did not
    /// parse) its error becomes a failure printed as JSON; otherwise, and for `--help` and
    /// `--version`, clap prints and exits as it always does.
    pub fn from_clap(e: clap::Error) -> Self {
        use clap::error::ErrorKind;
        let shown = matches!(
            e.kind(),
            ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        let json_asked = std::env::args_os()
            .skip(1)
            .take_while(|a| a != "--")
            .any(|a| a == "--json");
        if shown || !json_asked {
            e.exit();
        }
        // clap's text: `error: MESSAGE`, then paragraphs (a tip, the usage, where to read
        // more), each flattened to one line.
        let text = e.to_string();
        let mut paragraphs = text
            .trim()
            .trim_start_matches("error: ")
            .split("\n\n")
            .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "));
        let message = paragraphs.next().unwrap_or_default();
        let hint: Vec<String> = paragraphs
            .map(|p| p.trim_start_matches("tip: ").to_owned())
            .collect();
        let code = u8::try_from(e.exit_code()).unwrap_or(2);
        Failure::new(code, message, (!hint.is_empty()).then(|| hint.join("; ")))
    }
}

/// A failure or warning as one line of JSON on stderr, its fields in this order; `hint` and
/// `exit_code` are null in a warning.
#[derive(serde::Serialize)]
struct Diagnostic<'a> {
    level: &'static str,
    message: &'a str,
    hint: Option<&'a str>,
    exit_code: Option<u8>,
}

impl std::fmt::Display for Diagnostic<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&line)
    }
}

/// A warning on stderr: `keyctl: warning: MESSAGE`, or under `--json` a JSON object on one
/// line (`level`, `message`), so stdout stays one JSON document and stderr stays readable.
pub fn warn(json: bool, message: &str) {
    if json {
        let warning = Diagnostic {
            level: "warning",
            message,
            hint: None,
            exit_code: None,
        };
        eprintln!("{warning}");
    } else {
        eprintln!("keyctl: warning: {message}");
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        let (code, hint) = match &e {
            Error::Policy(PolicyError::Invalid { path, .. }) => (
                3,
                Some(format!(
                    "fix the lines above, then check with `keyctl policy check {}`",
                    path.display()
                )),
            ),
            Error::Policy(PolicyError::Read { .. }) => (3, None),
            Error::Policy(PolicyError::Unusable { .. }) => (
                3,
                Some("give the policy a [sinks.swarm] table with a shorter `prefix`, or rename the outputs".into()),
            ),
            // Losing a commit race is no damage to the store: a failure like any other.
            Error::Store(s @ StoreError::Conflict { .. }) => (1, Some(store_hint(s))),
            Error::Store(s) => (4, Some(store_hint(s))),
            Error::StoreNotEmpty { .. } => (
                1,
                Some("`keyctl --store DEST store info` shows it; add --force to replace it".into()),
            ),
            Error::Source(_) => (
                1,
                Some("fix the source at the line named, or choose another with --from dir|env|compose".into()),
            ),
            Error::Recipient(_) => (
                1,
                Some("`keyctl recipients list` shows the store's recipients".into()),
            ),
            Error::RestoreRefused { path, changes, .. } => (
                1,
                Some(format!(
                    "the store in place was not modified; `keyctl restore --dry-run {}` shows every change; to make these, add {}",
                    path.display(),
                    changes
                        .iter()
                        .map(|c| format!("--accept-{c}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                )),
            ),
            Error::InconsistentBackup { .. } => (
                4,
                Some("this backup cannot be restored; use another one (the store in place was not modified)".into()),
            ),
            Error::Lookup(_) | Error::NoSuchVersion { .. } => (
                5,
                Some(
                    "`keyctl list` shows stored names; `keyctl history NAME` shows versions".into(),
                ),
            ),
            Error::WouldReplace { .. } => (
                1,
                Some("restore the store that delivered them (or import them); `keyctl quickstart --reinit` replaces them with new values".into()),
            ),
            Error::DeliveryMoved { from, to, .. } => (
                1,
                Some(format!(
                    "pass `--out {}` to keep delivering there, or `--out {}` to move (keyd then removes its files from {})",
                    from.display(),
                    to.display(),
                    from.display()
                )),
            ),
            Error::KindChanged { name, .. } => (
                1,
                Some(format!(
                    "keyd never replaces a value silently: give the new secret another name, or restore the old kind of {name}"
                )),
            ),
            Error::Sink(SinkError::SharedWritable { path, .. }) => (
                1,
                Some(format!(
                    "run `chmod go-w {}`, or deliver to a directory only keyd can write to ([sinks.files] dir, or --out); consumers need only read it",
                    path.display()
                )),
            ),
            _ => (1, None),
        };
        Failure::new(code, message, hint)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Error::from(e).into()
    }
}

fn store_hint(e: &StoreError) -> String {
    match e {
        StoreError::NotInitialised { .. } => {
            "run `keyctl init`, or `keyctl quickstart --policy FILE`; or point --home / KEYD_HOME at an existing home".into()
        }
        StoreError::IdentityMissing { .. } => {
            "restore identity.txt from your backup; keyd will not create a new identity beside an existing store".into()
        }
        StoreError::BadIdentity { .. } | StoreError::WrongIdentity { .. } => {
            "use the identity this store was created with (check --home / KEYD_HOME); the store was not modified".into()
        }
        StoreError::Corrupt { path, .. } if path.starts_with("swarm:") => format!(
            "check the identity (KEYD_IDENTITY_FILE or --home) is the one this store was made with; `docker config ls --filter label=keyd.store={}` lists its generations; nothing was written",
            path.display().to_string().trim_start_matches("swarm:")
        ),
        StoreError::Corrupt { .. } | StoreError::NewerFormat { .. } => {
            "restore store.age from a backup; keyd has not modified the file".into()
        }
        StoreError::Io { path, source }
            if source.kind() == std::io::ErrorKind::NotADirectory =>
        {
            // The home (or a directory keyd keeps in it) is a file: no permission or free
            // space fixes that.
            let file = path.ancestors().find(|a| a.is_file()).unwrap_or(path);
            format!(
                "{} is a file: the keyd home (--home or KEYD_HOME) must be a directory, or a path where one can be made",
                file.display()
            )
        }
        StoreError::Io { .. } => "check the path's permissions and free space".into(),
        StoreError::IdentityExposed { path, .. } => format!(
            "run `chmod 600 {}`; if others could read it, make a new identity and rotate every secret",
            path.display()
        ),
        StoreError::StoreLost { .. } => {
            "restore store.age from a backup; `keyctl quickstart --reinit` starts over with new values for every secret (delivered files are replaced)".into()
        }
        StoreError::PassphraseNeeded { .. } => format!(
            "type the passphrase on a terminal (the same twice for a new store), or set {} to a file (mode 0600) that holds it",
            keyd::store::PASSPHRASE_ENV
        ),
        StoreError::WrongPassphrase { .. } => {
            "check the passphrase (or the file KEYD_PASSPHRASE_FILE names); the store was not modified".into()
        }
        StoreError::IdentityNotOwned { path, euid, .. } => format!(
            "run `chown {euid} {}` if it is yours; if another user could write it, make a new identity and rotate every secret",
            path.display()
        ),
        StoreError::HomeWritable { home, .. } => format!(
            "run `chmod go-w {}` and check that nothing in it was replaced",
            home.display()
        ),
        StoreError::WorkFactorTooHigh { .. } => {
            "keyd did not write this header (it was made by another age tool, or altered); the store was not modified".into()
        }
        StoreError::Remote { .. } => {
            "check that this host is a swarm manager and that DOCKER_HOST names its engine (`docker node ls`); nothing was written".into()
        }
        StoreError::RemoteEmpty { store } => format!(
            "create it with `keyctl --store {store} init` (a new store), or move one there with `keyctl store copy --to {store}`"
        ),
        StoreError::Conflict { .. } => {
            "run the command again: it starts from the newest generation (an interrupted rotation is resumed, never repeated)".into()
        }
        StoreError::ForeignBackup { path, .. } => format!(
            "restore a backup this home made; if you know who made this one (another recipient's home, or a keyd from before backups carried a MAC), check it with `keyctl restore --dry-run --accept-foreign-backup {}` and restore it with --accept-foreign-backup",
            path.display()
        ),
        StoreError::RolledBack { .. } => {
            "restore the newest store.age; if the older one was put back on purpose, run the command again with --accept-rollback".into()
        }
    }
}

pub(super) fn home(
    args_home: Option<PathBuf>,
    store: &keyd::store::StoreLocation,
) -> Result<Home, Failure> {
    args_home
        .or_else(Home::default_dir)
        .map(|dir| keyd::ops::home_at(dir, store))
        .ok_or_else(|| {
            Failure::usage("no keyd home: set --home DIR or KEYD_HOME (HOME is not set either)")
        })
}

/// Runs one command.
pub fn run(args: Args) -> Result<(), Failure> {
    let socket = args.socket.as_deref();
    let store = args.store.clone();
    match args.command {
        Command::Init { passphrase } => store::init(home(args.home, &store)?, passphrase),
        Command::Quickstart(a) => {
            let given = a.given(args.home.as_deref(), &store);
            store::apply(home(args.home, &store)?, a, true, &given)
        }
        Command::Apply(a) => {
            let given = a.given(args.home.as_deref(), &store);
            store::apply(home(args.home, &store)?, a, false, &given)
        }
        Command::List { json } => query::list(home(args.home, &store)?, json),
        Command::Show { name, version } => query::show(home(args.home, &store)?, &name, version),
        Command::History { name, json } => query::history(home(args.home, &store)?, &name, json),
        Command::Rotate {
            selector: None,
            force,
            yes,
            json,
            ..
        } => rotation::rotate_all(home(args.home, &store)?, socket, force, yes, json),
        Command::Rotate {
            selector: Some(selector),
            force,
            yes,
            json,
            ..
        } => rotation::rotate(home(args.home, &store)?, socket, selector, force, yes, json),
        Command::Retire { name, json } => {
            rotation::retire(home(args.home, &store)?, socket, name, json)
        }
        Command::Status { json } => query::status(home(args.home, &store)?, socket, json),
        Command::Plan(PlanCommand::Rotate { selector, json }) => plan::plan(
            home(args.home, &store)?,
            keyd::ops::plan::Operation::Rotate,
            &selector,
            json,
        ),
        Command::Plan(PlanCommand::Retire { selector, json }) => plan::plan(
            home(args.home, &store)?,
            keyd::ops::plan::Operation::Retire,
            &selector,
            json,
        ),
        Command::Check { json } => query::check(home(args.home, &store)?, socket, json),
        Command::Gen(g) => tools::generate(g),
        Command::Compose { policy, image } => tools::compose(&policy, &image),
        Command::Import(a) => {
            let given = Given::new(
                args.home.as_deref(),
                &store,
                &a.policy,
                a.out.as_deref(),
                false,
            );
            store::import(home(args.home, &store)?, a, &given)
        }
        Command::Recipients(c) => store::recipients(home(args.home, &store)?, c),
        Command::Store(c) => store::store(args.home, &store, c),
        Command::Swarm(SwarmCommand::Env { stack, json }) => {
            query::swarm_env(home(args.home, &store)?, stack.as_deref(), json)
        }
        Command::Backup { out, json } => store::backup(home(args.home, &store)?, &out, json),
        Command::Restore {
            file,
            accept_rollback,
            accept_foreign_backup,
            accept_recipients,
            accept_policy,
            accept_sinks,
            accept_hooks,
            accept_targets,
            dry_run,
            json,
        } => {
            let accept = [
                (accept_recipients, Change::Recipients),
                (accept_policy, Change::Policy),
                (accept_sinks, Change::Sinks),
                (accept_hooks, Change::Hooks),
                (accept_targets, Change::Targets),
            ]
            .into_iter()
            .filter_map(|(given, change)| given.then_some(change))
            .collect();
            let options = RestoreOptions {
                accept_rollback,
                accept_foreign_backup,
                accept,
                dry_run,
            };
            store::restore(home(args.home, &store)?, &file, &options, json)
        }
        Command::Completions { shell } => tools::completions(shell),
        Command::Man => tools::man(),
        Command::Policy(PolicyCommand::Check { file }) => tools::policy_check(&file),
    }
}

/// Writes to stdout; a reader that closed the pipe early (`| head`) is not an error.
pub(super) fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
            1,
            format!("cannot write to stdout: {e}"),
            None,
        )),
        _ => Ok(()),
    }
}
