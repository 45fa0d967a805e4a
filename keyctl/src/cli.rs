//! Command definitions and dispatch. Each command calls the library and hands the result to
//! `output`; failures become a message, a hint and a documented exit code.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{CommandFactory as _, Parser, Subcommand};
use keyd::clock::{Clock as _, SystemClock};
use keyd::material::{self, password::Alphabet, tls, token::Encoding};
use keyd::ops::actor;
use keyd::policy::{Policy, PolicyError};
use keyd::sinks::SinkError;
use keyd::store::{Home, InitOutcome, SecretRecord, StoreError};
use keyd::wire::{ErrorAnswer, RetireRequest, RotateRequest};
use keyd::{ApplyOptions, Error};

use crate::output;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (I/O, delivery, generation)
  2  bad command line
  3  invalid policy (every problem is printed as FILE:LINE:COLUMN: message)
  4  the store cannot be opened (not initialised, identity missing or wrong, store damaged)
  5  no such secret or version";

/// keyctl: generate, store and deliver the key material of container stacks.
#[derive(Parser, Debug)]
#[command(
    name = "keyctl",
    bin_name = "keyctl",
    version,
    about = "Generate, store and deliver the key material of container stacks",
    long_about = "Generate, store and deliver the key material of container stacks.\n\n\
        A policy (TOML) declares a stack's secrets; `keyctl quickstart` creates every value, keeps \
        it in an age-encrypted store under the keyd home, and delivers one file per secret.\n\n\
        Start here:\n  keyctl quickstart --policy policies/flowkit.toml --out ./secrets",
    after_help = EXIT_CODES
)]
pub struct Args {
    /// The keyd home (identity.txt, store.age). Default: $XDG_DATA_HOME/keyd or ~/.local/share/keyd
    #[arg(long, global = true, env = "KEYD_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// The daemon's API socket: rotate, retire and status go through a running keyd.
    /// Default: <home>/keyd.sock
    #[arg(long, global = true, env = "KEYD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the home: an age X25519 identity (identity.txt, 0600) and an empty encrypted store
    ///
    /// With --passphrase the store is encrypted with a passphrase instead (age's scrypt mode),
    /// for a person's laptop: no key file to lose or leak. The passphrase is asked on the
    /// terminal (twice), or read from the file named by KEYD_PASSPHRASE_FILE (mode 0600), for
    /// scripts and for keyd, which refuses to start on a passphrase store without it. Every
    /// command that opens the store asks for it again.
    #[command(after_help = EXIT_CODES)]
    Init {
        /// Encrypt the store with a passphrase instead of an identity file
        #[arg(long)]
        passphrase: bool,
    },
    /// Initialise if needed, create the secrets of a policy that do not exist yet, deliver them
    ///
    /// Idempotent: a second run changes no value, rewrites no file and says so.
    #[command(after_help = EXIT_CODES)]
    Quickstart(ApplyArgs),
    /// Reconcile a policy with the store: add new secrets, re-derive literals and templates,
    /// deliver. Existing random values are never regenerated (use rotation for that)
    #[command(after_help = EXIT_CODES)]
    Apply(ApplyArgs),
    /// List stored secrets (names, kinds, versions; never values)
    #[command(after_help = EXIT_CODES)]
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Print a value on stdout, exactly as delivered (no newline added)
    #[command(after_help = EXIT_CODES)]
    Show {
        /// NAME, or STACK/NAME when several stacks have it; companion names
        /// (e.g. PUBLIC_JWT_SIGNING_KEY) work too
        name: String,
        /// Print this version's own value instead of what is delivered now
        #[arg(long, value_name = "N")]
        version: Option<u64>,
    },
    /// Every version of a secret: number, label, timestamps, fingerprint (never values)
    #[command(after_help = EXIT_CODES)]
    History {
        /// NAME or STACK/NAME
        name: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Rotate now: a secret by name, or every secret of a kind (`keyctl rotate fernet`)
    ///
    /// Runs create → set → test → deliver → promote with overlap: fernet lists are delivered as
    /// new,old and a JWKS holds both keys until `keyctl retire` or the grace period ends. A
    /// rotation left in flight by a stopped process is finished instead of starting another.
    /// Prints versions and where values went, never values.
    #[command(after_help = EXIT_CODES)]
    Rotate {
        /// NAME, STACK/NAME, a kind (password, token, fernet, rsa, tls) or STACK/KIND
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        selector: Option<String>,
        /// Every secret of every stack (each kind in turn): after a recipient was removed, or a
        /// copy of the store leaked
        #[arg(long)]
        all: bool,
        /// Rotate a fernet list even when the new key pushes out one that was never retired
        /// (anything still encrypted with that key can no longer be decrypted)
        #[arg(long)]
        force: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// End the overlap now: stop delivering the previous version (fernet lists, JWKS)
    #[command(after_help = EXIT_CODES)]
    Retire {
        /// NAME or STACK/NAME
        name: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Per secret: current version, age, next rotation, overlap, rotation in flight, last error
    #[command(after_help = EXIT_CODES)]
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Print a docker-compose service block that runs keyd as a sidecar for a policy
    ///
    /// keyd applies the policy at start, delivers its files into a tmpfs volume that consumers
    /// mount as a directory (so they see rotations), and is healthy once every value is there.
    /// The policy needs a [sinks.files] table (its dir is where the volume is mounted).
    #[command(after_help = EXIT_CODES)]
    Compose {
        /// The stack's policy (TOML)
        #[arg(long, value_name = "FILE")]
        policy: PathBuf,
        /// The keyd image (docker/build-image.sh builds keyd:local)
        #[arg(long, default_value = "keyd:local")]
        image: String,
    },
    /// Adopt the values a stack already has (files, a .env, a compose file) as version 1
    ///
    /// The policy decides each secret's kind; values are matched to its output names (and
    /// their env-var forms: cert-flowkit.pem -> CERT_FLOWKIT_PEM). Every value is checked
    /// before anything is written: Fernet keys (32 bytes), RSA private keys (PKCS#1 or PKCS#8
    /// PEM; an imported public key or JWKS must be its public half), certificates with their
    /// keys, literals and templates as the policy derives them. Passwords and tokens that do not
    /// match the policy's length or alphabet are kept with a warning: the next rotation fixes
    /// them. One refused value refuses the whole import. Values are kept byte for byte and
    /// never printed. Afterwards `keyctl apply` delivers them and creates what the source did
    /// not have.
    ///
    /// Examples:
    ///   keyctl import --policy policies/flowkit.toml ./secrets --dry-run
    ///   keyctl import --policy policies/cornflow.toml .env
    ///   keyctl import --policy policies/airflow-celery.toml docker-compose.yml
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    Import(ImportArgs),
    /// Who can open the store: age X25519 keys and SSH (ssh-ed25519, ssh-rsa) public keys
    ///
    /// The store is encrypted to this home's identity and to every recipient listed here, so
    /// each holder's identity alone opens it (a second operator, a recovery key kept offline).
    /// The list is kept inside the encrypted store.
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Write the store (every secret, version and rotation state; not the identity) to FILE,
    /// encrypted to the store's recipients
    ///
    /// Written atomically with mode 0600. Restore it with `keyctl restore FILE` on a home whose
    /// identity (or any recipient's) opens it.
    #[command(after_help = EXIT_CODES)]
    Backup {
        /// Where to write the backup
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Put a backup back as the store, after checking it opens and is consistent
    ///
    /// Prints what differs from the store in place (names and versions, never values). A backup
    /// older than the newest store this home has written is refused unless --accept-rollback.
    /// The home's identity.txt must be in place first (it is not in the backup).
    #[command(after_help = EXIT_CODES)]
    Restore {
        /// The backup (from `keyctl backup`)
        file: PathBuf,
        /// Restore although the backup is older than the newest store written in this home
        #[arg(long)]
        accept_rollback: bool,
        /// Check and show the differences; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Make a one-off value on stdout, touching no store
    #[command(subcommand)]
    Gen(Gen),
    /// Print a shell completion script on stdout
    ///
    /// bash: keyctl completions bash > /etc/bash_completion.d/keyctl
    /// zsh:  keyctl completions zsh > "${fpath[1]}/_keyctl"
    /// fish: keyctl completions fish > ~/.config/fish/completions/keyctl.fish
    #[command(verbatim_doc_comment)]
    Completions {
        /// bash, zsh or fish
        shell: CompletionShell,
    },
    /// Print the manual page (roff) on stdout: keyctl man | man -l -
    Man,
    /// Policy tools
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(clap::Args, Debug)]
struct ApplyArgs {
    /// The stack's policy (TOML)
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Deliver files into DIR instead of the policy's [sinks.files] dir (recorded in the store)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Machine-readable summary on stdout
    #[arg(long)]
    json: bool,
    /// Start over: make a new store although this home had one that is gone, and replace
    /// outputs that exist but that the store does not know. Every such value is lost
    #[arg(long)]
    reinit: bool,
    /// Use the store in place although it is older than the last one written in this home
    /// (an old copy put back on purpose)
    #[arg(long)]
    accept_rollback: bool,
    /// Also deliver every output as a Docker Swarm secret, swapped into the services that use
    /// it on rotation (the policy's [sinks.swarm], or its defaults; current names go to
    /// STACK.swarm.env beside the policy). Needs a swarm manager: see --init-swarm
    #[arg(long)]
    swarm: bool,
    /// With --swarm: run `docker swarm init` first when this node is not in a swarm
    #[arg(long)]
    init_swarm: bool,
}

#[derive(clap::Args, Debug)]
struct ImportArgs {
    /// The stack's policy (TOML): it decides each secret's kind
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// A directory of one file per secret, a .env file, or a compose file (*.yml, *.yaml)
    source: PathBuf,
    /// Read SOURCE as this kind instead of guessing from its name
    #[arg(long, value_name = "KIND")]
    from: Option<SourceArg>,
    /// Deliver files into DIR on the next apply instead of the policy's [sinks.files] dir
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the mapping (source -> secret, kind, verdict) and write nothing
    #[arg(long)]
    dry_run: bool,
    /// Import over secrets the store already holds (the imported value becomes their next
    /// version; older versions are kept)
    #[arg(long)]
    replace: bool,
    /// Machine-readable output
    #[arg(long)]
    json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum SourceArg {
    /// A directory of one file per secret
    Dir,
    /// A .env file (compose syntax)
    Env,
    /// A compose file's top-level secrets: with file: entries
    Compose,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand, Debug)]
enum RecipientsCommand {
    /// Encrypt the store to one more recipient as well (it is re-encrypted now)
    ///
    /// RECIPIENT is an age X25519 public key (age1…, from `age-keygen -y` or another home's
    /// identity.txt) or an SSH public key line (ssh-ed25519 AAAA… or ssh-rsa AAAA…). Its
    /// identity (the AGE-SECRET-KEY-1 line, or the unencrypted SSH private key) put in a home's
    /// identity.txt opens the store.
    #[command(after_help = EXIT_CODES)]
    Add {
        /// The public key
        recipient: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Every recipient the store is encrypted to, this home's own first
    #[command(after_help = EXIT_CODES)]
    List {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Stop encrypting the store to a recipient (it is re-encrypted now)
    ///
    /// Copies written before stay readable to the removed holder, who could read every secret:
    /// they are listed, and `keyctl rotate --all` replaces them.
    #[command(after_help = EXIT_CODES)]
    Remove {
        /// The public key, as listed
        recipient: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Gen {
    /// A Fernet key (URL-safe base64 of 32 random bytes)
    Fernet,
    /// A random password
    Password {
        /// Characters
        #[arg(long, default_value_t = 24)]
        length: usize,
        /// alphanumeric, ascii-printable, hex, or a literal set of characters
        #[arg(long, default_value = "alphanumeric")]
        alphabet: String,
    },
    /// Random bytes, encoded
    Token {
        /// Random bytes
        #[arg(long, default_value_t = 32)]
        bytes: usize,
        /// hex, base64 or base64url
        #[arg(long, default_value = "hex")]
        encoding: String,
    },
    /// An RSA key pair: the PKCS#8 private key on stdout
    Rsa {
        /// 2048, 3072 or 4096
        #[arg(long, default_value_t = 4096)]
        bits: usize,
        /// Also write the SPKI public key PEM to FILE
        #[arg(long, value_name = "FILE")]
        public_out: Option<PathBuf>,
        /// Also write the public JWK (kid = RFC 7638 thumbprint) to FILE
        #[arg(long, value_name = "FILE")]
        jwk_out: Option<PathBuf>,
    },
    /// A self-signed certificate on stdout (and its key: on stdout after it, or in --key-out)
    Tls {
        /// Subject common name
        #[arg(long)]
        cn: String,
        /// Subject alternative name (repeatable; default: the CN)
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
        /// Validity in days
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// ecdsa-p256 or rsa
        #[arg(long, default_value = "ecdsa-p256")]
        key_type: String,
        /// RSA key size (with --key-type rsa)
        #[arg(long, default_value_t = 4096)]
        bits: usize,
        /// Write the private key to FILE (mode 0600) instead of stdout
        #[arg(long, value_name = "FILE")]
        key_out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Validate a policy; print every problem with FILE:LINE:COLUMN
    #[command(after_help = EXIT_CODES)]
    Check {
        /// The policy
        file: PathBuf,
    },
}

/// A failed command: what failed, what to do, and the exit code.
pub struct Failure {
    pub message: String,
    pub hint: Option<String>,
    pub code: u8,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>, hint: Option<String>) -> Self {
        Failure {
            message: message.into(),
            hint,
            code,
        }
    }

    fn usage(message: impl Into<String>) -> Self {
        Failure::new(2, message, None)
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
            Error::Store(s) => (4, Some(store_hint(s))),
            Error::Source(_) => (
                1,
                Some("fix the source at the line named, or choose another with --from dir|env|compose".into()),
            ),
            Error::Recipient(_) => (
                1,
                Some("`keyctl recipients list` shows the store's recipients".into()),
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
            Error::KindChanged { name, .. } => (
                1,
                Some(format!(
                    "keyd never replaces a value silently: give the new secret another name, or restore the old kind of {name}"
                )),
            ),
            Error::Sink(SinkError::WorldWritable { path, .. }) => (
                1,
                Some(format!(
                    "run `chmod o-w {}`, or deliver to a directory only keyd and its consumers can write to ([sinks.files] dir, or --out)",
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
        StoreError::Corrupt { .. } | StoreError::NewerFormat { .. } => {
            "restore store.age from a backup; keyd has not modified the file".into()
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
        StoreError::RolledBack { .. } => {
            "restore the newest store.age; if the older one was put back on purpose, run the command again with --accept-rollback".into()
        }
    }
}

fn home(args_home: Option<PathBuf>) -> Result<Home, Failure> {
    args_home
        .or_else(Home::default_dir)
        .map(Home::new)
        .ok_or_else(|| {
            Failure::usage("no keyd home: set --home DIR or KEYD_HOME (HOME is not set either)")
        })
}

/// Runs one command.
pub fn run(args: Args) -> Result<(), Failure> {
    match args.command {
        Command::Init { passphrase } => {
            let home = home(args.home)?;
            let outcome = if passphrase {
                home.init_passphrase()?
            } else {
                home.init()?
            };
            let mut out = String::new();
            output::init(&mut out, &home, outcome == InitOutcome::Created);
            write_stdout(out.as_bytes())
        }
        Command::Quickstart(a) => apply(home(args.home)?, a, true),
        Command::Apply(a) => apply(home(args.home)?, a, false),
        Command::List { json } => {
            let home = home(args.home)?;
            let data = home.lock_shared()?.load()?;
            let mut out = String::new();
            output::list(&mut out, &data, json);
            write_stdout(out.as_bytes())
        }
        Command::Show { name, version } => {
            let home = home(args.home)?;
            // Only this secret's versions are decoded (at 10,000 secrets, most of a load).
            let data = home.lock_shared()?.load_for(&name)?;
            let (_, _, record, out) = data.find_output(&name).map_err(Error::from)?;
            let value = match version {
                None => record.delivered(out.part).map(|(_, v)| v),
                Some(n) => {
                    let v = record.version(n).ok_or(Error::NoSuchVersion {
                        name: name.clone(),
                        version: n,
                    })?;
                    SecretRecord::version_value(v, out.part)
                }
            }
            .ok_or_else(|| Failure::new(5, format!("{name} has no current value"), None))?;
            write_stdout(value.expose().as_bytes())
        }
        Command::History { name, json } => {
            let home = home(args.home)?;
            let data = home.lock_shared()?.load_for(&name)?;
            let (stack, secret, record, _) = data.find_output(&name).map_err(Error::from)?;
            let mut out = String::new();
            output::history(&mut out, stack, secret, record, json);
            write_stdout(out.as_bytes())
        }
        Command::Rotate {
            selector: None,
            force,
            json,
            ..
        } => rotate_all(home(args.home)?, args.socket.as_deref(), force, json),
        Command::Rotate {
            selector: Some(selector),
            force,
            json,
            ..
        } => {
            let body = serde_json::to_value(RotateRequest {
                selector: selector.clone(),
                force,
            })
            .expect("a request serialises");
            rotation_command(
                home(args.home)?,
                args.socket.as_deref(),
                "/v1/rotate",
                &body,
                json,
                |home| keyd::ops::rotate(home, &selector, force, &SystemClock, &actor("keyctl")),
            )
        }
        Command::Retire { name, json } => {
            let body = serde_json::to_value(RetireRequest { name: name.clone() })
                .expect("a request serialises");
            rotation_command(
                home(args.home)?,
                args.socket.as_deref(),
                "/v1/retire",
                &body,
                json,
                |home| keyd::ops::retire(home, &name, &SystemClock, &actor("keyctl")),
            )
        }
        Command::Status { json } => {
            let home = home(args.home)?;
            let status = match via_daemon(&home, args.socket.as_deref(), "GET", "/v1/status", None)?
            {
                Some(status) => status,
                None => {
                    let data = home.lock_shared()?.load()?;
                    keyd::rotation::schedule::status(&data, SystemClock.now())
                }
            };
            let mut out = String::new();
            output::status(&mut out, &status, json);
            write_stdout(out.as_bytes())
        }
        Command::Gen(g) => generate(g),
        Command::Compose { policy, image } => {
            let policy = Policy::load(&policy).map_err(Error::from)?;
            let block = crate::compose::block(&policy, &image).ok_or_else(|| {
                Failure::new(
                    2,
                    format!(
                        "{} has no [sinks.files]: a compose sidecar delivers files",
                        policy.path.display()
                    ),
                    Some("add [sinks.files] with dir = \"/run/secrets\"".into()),
                )
            })?;
            write_stdout(block.as_bytes())
        }
        Command::Import(a) => import(home(args.home)?, a),
        Command::Recipients(c) => recipients(home(args.home)?, c),
        Command::Backup { out, json } => {
            let report = keyd::ops::backup(&home(args.home)?, &out)?;
            let mut text = String::new();
            output::backup(&mut text, &report, json);
            write_stdout(text.as_bytes())
        }
        Command::Restore {
            file,
            accept_rollback,
            dry_run,
            json,
        } => {
            let home = home(args.home)?;
            let report = keyd::ops::restore(&home, &file, accept_rollback, dry_run).map_err(|e| {
                let mut failure = Failure::from(e);
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
        Command::Completions { shell } => {
            let shell = match shell {
                CompletionShell::Bash => clap_complete::Shell::Bash,
                CompletionShell::Zsh => clap_complete::Shell::Zsh,
                CompletionShell::Fish => clap_complete::Shell::Fish,
            };
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Args::command(), "keyctl", &mut script);
            write_stdout(&script)
        }
        Command::Man => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Args::command())
                .render(&mut page)
                .map_err(|e| {
                    Failure::new(1, format!("cannot render the manual page: {e}"), None)
                })?;
            write_stdout(&page)
        }
        Command::Policy(PolicyCommand::Check { file }) => {
            let policy = Policy::load(&file).map_err(Error::from)?;
            let outputs = policy.outputs().len();
            let text = format!(
                "{}: ok: stack {:?}, {} secrets delivered under {} names\n",
                file.display(),
                policy.stack,
                policy.secrets.len(),
                outputs
            );
            write_stdout(text.as_bytes())
        }
    }
}

/// Sends a request to the daemon when one answers on the socket; `None` when none runs, so
/// the caller does the same work on the store under its lock.
fn via_daemon<T: serde::de::DeserializeOwned>(
    home: &Home,
    socket: Option<&Path>,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Option<T>, Failure> {
    let socket = socket.map_or_else(|| home.dir().join("keyd.sock"), Path::to_owned);
    let Some(mut stream) = keyd::daemon::client::connect(&socket) else {
        return Ok(None);
    };
    let (status, response) = keyd::daemon::client::call(&mut stream, &socket, method, path, body)
        .map_err(|e| Failure::new(1, e.to_string(), None))?;
    if status != 200 {
        let message = serde_json::from_slice::<ErrorAnswer>(&response)
            .ok()
            .map(|a| a.error)
            .unwrap_or_else(|| format!("HTTP {status}"));
        let code = match status {
            403 => 4,
            404 => 5,
            _ => 1,
        };
        return Err(Failure::new(code, format!("keyd: {message}"), None));
    }
    serde_json::from_slice(&response).map(Some).map_err(|e| {
        Failure::new(
            1,
            format!("keyd answered something keyctl cannot read: {e}"),
            None,
        )
    })
}

/// Rotate or retire: through the daemon when one answers, else `local` on the store under
/// its lock; the same report is printed either way.
fn rotation_command(
    home: Home,
    socket: Option<&Path>,
    path: &str,
    body: &serde_json::Value,
    json: bool,
    local: impl FnOnce(&Home) -> Result<keyd::rotation::RotationReport, Error>,
) -> Result<(), Failure> {
    let report = match via_daemon(&home, socket, "POST", path, Some(body))? {
        Some(report) => report,
        None => local(&home)?,
    };
    let mut out = String::new();
    output::rotation(&mut out, &report, json);
    write_stdout(out.as_bytes())?;
    rotation_exit(&report)
}

/// A rotation whose step failed exits 1 after printing its report: it stays in flight and is
/// retried (by the daemon, or the next `keyctl rotate`).
fn rotation_exit(report: &keyd::rotation::RotationReport) -> Result<(), Failure> {
    use keyd::rotation::OutcomeKind;
    let names = |kind: OutcomeKind| -> Vec<&str> {
        let found = report.outcomes.iter().filter(|o| o.result == kind);
        found.map(|o| o.name.as_str()).collect()
    };
    let (failed, rekey) = (names(OutcomeKind::Failed), names(OutcomeKind::RekeyFailed));
    if failed.is_empty() && !rekey.is_empty() {
        return Err(Failure::new(
            1,
            format!("rekey hook failed for {}", rekey.join(", ")),
            Some("the new values are in place and the previous ones stay delivered; fix the hook, then `keyctl retire` runs it again first (the daemon retries with backoff)".into()),
        ));
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        1,
        format!("rotation failed for {}", failed.join(", ")),
        Some("the current values still work; `keyctl status` shows the error, and the next `keyctl rotate` or the daemon retries".into()),
    ))
}

/// `keyctl rotate --all`: each kind of random secret in turn, through the daemon when one runs.
fn rotate_all(home: Home, socket: Option<&Path>, force: bool, json: bool) -> Result<(), Failure> {
    let data = home.lock_shared()?.load()?;
    let kinds: Vec<keyd::policy::Kind> = keyd::policy::Kind::ALL
        .into_iter()
        .filter(|k| k.is_random())
        .filter(|k| {
            data.stacks
                .values()
                .any(|s| s.secrets.values().any(|r| r.kind == *k && !r.removed))
        })
        .collect();
    drop(data);
    let mut combined = keyd::rotation::RotationReport::default();
    for kind in kinds {
        let selector = kind.as_str().to_owned();
        let body = serde_json::to_value(RotateRequest {
            selector: selector.clone(),
            force,
        })
        .expect("a request serialises");
        let report = match via_daemon(&home, socket, "POST", "/v1/rotate", Some(&body))? {
            Some(report) => report,
            None => keyd::ops::rotate(&home, &selector, force, &SystemClock, &actor("keyctl"))?,
        };
        let keyd::rotation::RotationReport {
            mut outcomes,
            mut deliveries,
        } = report;
        combined.outcomes.append(&mut outcomes);
        combined.deliveries.append(&mut deliveries);
    }
    let mut out = String::new();
    output::rotation(&mut out, &combined, json);
    write_stdout(out.as_bytes())?;
    rotation_exit(&combined)
}

fn import(home: Home, a: ImportArgs) -> Result<(), Failure> {
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
    output::import(&mut out, &report, &a.policy, a.json);
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

fn recipients(home: Home, command: RecipientsCommand) -> Result<(), Failure> {
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

fn apply(home: Home, a: ApplyArgs, first_run: bool) -> Result<(), Failure> {
    if a.reinit {
        Policy::load(&a.policy).map_err(Error::from)?;
        eprintln!(
            "keyctl: warning: --reinit: secrets the store does not hold are generated anew and replace what is delivered"
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
    output::apply(&mut out, &report, first_run, a.json);
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

/// Writes to stdout; a reader that closed the pipe early (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
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

/// Writes a file that must not exist yet, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        let hint = (e.kind() == std::io::ErrorKind::AlreadyExists).then(|| {
            "keyctl gen never overwrites a file: remove it or choose another path".to_owned()
        });
        Failure::new(1, format!("{}: {e}", path.display()), hint)
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(fail)
}

fn line(value: &str) -> Result<(), Failure> {
    let mut text = String::with_capacity(value.len() + 1);
    text.push_str(value);
    text.push('\n');
    let result = write_stdout(text.as_bytes());
    keyd::secret::SecretString::new(text); // zeroized on drop
    result
}

fn generate(g: Gen) -> Result<(), Failure> {
    match g {
        Gen::Fernet => line(material::fernet::generate().expose_secret()),
        Gen::Password { length, alphabet } => {
            let alphabet = Alphabet::parse(&alphabet).map_err(Failure::usage)?;
            if length == 0 {
                return Err(Failure::usage("--length must be at least 1"));
            }
            if length < material::password::MIN_LENGTH {
                eprintln!(
                    "keyctl: warning: {length} characters is weak (policies require at least {} unless allow_weak = true)",
                    material::password::MIN_LENGTH
                );
            }
            line(material::password::generate(length, &alphabet).expose_secret())
        }
        Gen::Token { bytes, encoding } => {
            let encoding = Encoding::parse(&encoding).ok_or_else(|| {
                Failure::usage(format!(
                    "unknown encoding {encoding:?} (expected one of {})",
                    Encoding::NAMES
                ))
            })?;
            if bytes == 0 {
                return Err(Failure::usage("--bytes must be at least 1"));
            }
            line(material::token::generate(bytes, encoding).expose_secret())
        }
        Gen::Rsa {
            bits,
            public_out,
            jwk_out,
        } => {
            // Two attempts on two cores, the first to finish kept (see material::race).
            let raced =
                material::race::race(&[bits], material::race::cores(), material::rsa::generate);
            let pair = raced
                .into_iter()
                .next()
                .expect("one job, one result")
                .map_err(|e| Failure::usage(e.to_string()))?;
            if let Some(path) = public_out {
                write_new(&path, pair.public_pem.as_bytes(), 0o644)?;
            }
            if let Some(path) = jwk_out {
                let jwk = serde_json::to_string_pretty(&pair.jwk).expect("a JWK serialises") + "\n";
                write_new(&path, jwk.as_bytes(), 0o644)?;
            }
            write_stdout(pair.private_pem.expose_secret().as_bytes())
        }
        Gen::Tls {
            cn,
            sans,
            days,
            key_type,
            bits,
            key_out,
        } => {
            let key_type = match key_type.as_str() {
                "ecdsa-p256" => tls::KeyType::EcdsaP256,
                "rsa" => tls::KeyType::Rsa(bits),
                other => {
                    return Err(Failure::usage(format!(
                        "unknown key type {other:?} (expected ecdsa-p256 or rsa)"
                    )));
                }
            };
            if !(1..=tls::MAX_DAYS).contains(&days) {
                return Err(Failure::usage(format!(
                    "--days must be 1 to {}",
                    tls::MAX_DAYS
                )));
            }
            let spec = tls::TlsSpec {
                sans: if sans.is_empty() {
                    vec![cn.clone()]
                } else {
                    sans
                },
                cn,
                days,
                key_type,
            };
            let cert = tls::generate(&spec).map_err(|e| Failure::new(1, e.to_string(), None))?;
            match key_out {
                Some(path) => {
                    write_new(&path, cert.key_pem.expose_secret().as_bytes(), 0o600)?;
                    write_stdout(cert.cert_pem.as_bytes())
                }
                None => {
                    write_stdout(cert.cert_pem.as_bytes())?;
                    write_stdout(cert.key_pem.expose_secret().as_bytes())
                }
            }
        }
    }
}
