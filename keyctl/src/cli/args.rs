//! The command line's definitions (clap): every command, argument and help text, and the
//! exit-code table shown in `--help`. What a command does is in the sibling modules.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub(super) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (I/O, delivery, generation)
  2  bad command line
  3  invalid policy (every problem is printed as FILE:LINE:COLUMN: message)
  4  the store cannot be opened (not initialised, identity missing or wrong, store damaged)
  5  no such secret or version
With --json, a failure is one JSON object on stderr: level, message, hint, exit_code";

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
    pub(super) home: Option<PathBuf>,

    /// The daemon's API socket: rotate, retire and status go through a running keyd.
    /// Default: <home>/keyd.sock
    #[arg(long, global = true, env = "KEYD_SOCKET", value_name = "PATH")]
    pub(super) socket: Option<PathBuf>,

    /// Where the store is: `file` (the home's store.age) or `swarm:NAME` (kept in the swarm's
    /// Raft log as Swarm configs, shared by every manager; the identity stays in the home).
    /// See docs/swarm.md
    #[arg(
        long,
        global = true,
        env = "KEYD_STORE",
        value_name = "file|swarm:NAME",
        default_value = "file"
    )]
    pub(super) store: keyd::store::StoreLocation,

    #[command(subcommand)]
    pub(super) command: Command,
}

/// The commands that open no home, store or daemon: `--home`, `--socket` and `--store` are
/// accepted there (they are global, and may come from the environment) but not shown in their
/// help, where they would only mislead.
const WITHOUT_A_HOME: [&str; 5] = ["gen", "compose", "completions", "man", "policy"];

/// keyctl's command line: [`Args`]'s, with the global options hidden in the help of
/// [`WITHOUT_A_HOME`]. What parses, `--help`, completions and the manual page all use it.
pub fn command() -> clap::Command {
    let command = <Args as clap::CommandFactory>::command();
    // A subcommand that has an argument of a global's id keeps its own: clap propagates the
    // global to it no further. These copies differ only in being hidden.
    let hidden: Vec<clap::Arg> = command
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.clone().hide(true))
        .collect();
    WITHOUT_A_HOME.into_iter().fold(command, |command, name| {
        command.mut_subcommand(name, |sub| sub.args(hidden.clone()))
    })
}

impl Args {
    /// Parses the process's arguments with [`command`].
    pub fn parse_command_line() -> Result<Args, clap::Error> {
        use clap::FromArgMatches as _;
        let mut command = command();
        let matches = command.try_get_matches_from_mut(std::env::args_os())?;
        Args::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
    }

    /// Whether the command asked for `--json`: then its failure and warnings are JSON objects
    /// on stderr as well, and stdout holds nothing but its JSON document.
    pub fn json(&self) -> bool {
        match &self.command {
            Command::Quickstart(a) | Command::Apply(a) => a.json,
            Command::Import(a) => a.json,
            Command::List { json }
            | Command::History { json, .. }
            | Command::Rotate { json, .. }
            | Command::Retire { json, .. }
            | Command::Status { json }
            | Command::Check { json }
            | Command::Backup { json, .. }
            | Command::Restore { json, .. }
            | Command::Store(StoreCommand::Info { json } | StoreCommand::Copy { json, .. })
            | Command::Swarm(SwarmCommand::Env { json, .. })
            | Command::Plan(PlanCommand::Rotate { json, .. } | PlanCommand::Retire { json, .. })
            | Command::Recipients(
                RecipientsCommand::Add { json, .. }
                | RecipientsCommand::List { json }
                | RecipientsCommand::Remove { json, .. },
            ) => *json,
            Command::Init { .. }
            | Command::Show { .. }
            | Command::Compose { .. }
            | Command::Gen(_)
            | Command::Completions { .. }
            | Command::Man
            | Command::Policy(_) => false,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(super) enum Command {
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
    /// Print a value on stdout, exactly as delivered (a newline is added only on a terminal)
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
        /// Do not ask. On a terminal, keyctl asks before it rotates a whole kind, `--all`, or a
        /// password with no target (keyd cannot set its new value on the server that checks it)
        #[arg(long, short = 'y')]
        yes: bool,
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
    /// One line on the store's health, with a monitoring plugin's exit code, for cron or a
    /// Nagios-style check: 0 ok, 1 warning, 2 critical, 3 unknown
    ///
    /// Critical: a rotation that failed, an expired certificate, a keyd socket that does not
    /// answer. Warning: a rekey or reload hook owed, a rotation overdue or long in flight, a
    /// certificate within 14 days of its end, a stored policy that no longer parses. Unknown:
    /// the store cannot be read. Names and versions only, never a value.
    Check {
        /// Machine-readable output (every finding)
        #[arg(long)]
        json: bool,
    },
    /// Show what `keyctl rotate` or `keyctl retire` would do, doing none of it
    ///
    /// Per secret: the versions, every output that changes (its own and those of templates made
    /// from it), files and env files written, Swarm secrets created (and the services using
    /// them, when the Docker engine answers) or removed, plugin services restarted, the target's
    /// login and strategy, and the hooks run. Nothing is written, run or sent.
    #[command(subcommand)]
    Plan(PlanCommand),
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
    /// Put a backup back as the store, after checking who made it and that it is consistent
    ///
    /// A backup must carry the MAC of this home's identity (every `keyctl backup` writes one):
    /// one made by another identity, or by a keyd from before backups carried a MAC, is refused
    /// before anything is shown unless --accept-foreign-backup. Prints what differs from the
    /// store in place (names, versions and settings, never values): values are compared, not
    /// only version numbers. A change of recipients, policy, sinks, hooks or targets is refused
    /// unless accepted by its own flag. A backup older than the newest store this home has
    /// written is refused unless --accept-rollback. The home's identity.txt must be in place
    /// first (it is not in the backup).
    #[command(after_help = EXIT_CODES)]
    Restore {
        /// The backup (from `keyctl backup`)
        file: PathBuf,
        /// Restore although the backup is older than the newest store written in this home
        #[arg(long)]
        accept_rollback: bool,
        /// Open a backup that this home's identity did not make (another recipient's home, or
        /// a keyd from before backups carried a MAC): check its --dry-run first
        #[arg(long)]
        accept_foreign_backup: bool,
        /// Accept the backup's recipients (who can open every store written after it)
        #[arg(long)]
        accept_recipients: bool,
        /// Accept the backup's policy texts, and stacks it adds or drops
        #[arg(long)]
        accept_policy: bool,
        /// Accept the backup's sinks (where values are delivered)
        #[arg(long)]
        accept_sinks: bool,
        /// Accept the backup's reload and rekey hooks (what keyd runs or signals)
        #[arg(long)]
        accept_hooks: bool,
        /// Accept the backup's targets (whose passwords keyd changes)
        #[arg(long)]
        accept_targets: bool,
        /// Check and show the differences; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Where the store is (`info`), and moving it between backends (`copy`)
    #[command(subcommand)]
    Store(StoreCommand),
    /// Swarm helpers: `keyctl swarm env` prints the current secret names for `docker stack deploy`
    #[command(subcommand)]
    Swarm(SwarmCommand),
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

#[derive(Subcommand, Debug)]
pub(super) enum StoreCommand {
    /// The store's backend, its newest generation and whether it answers (decrypts nothing)
    #[command(after_help = EXIT_CODES)]
    Info {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Copy the store (the one --store names) to another backend, e.g. from the file store to
    /// the swarm's: `keyctl store copy --to swarm:NAME`
    ///
    /// The same identity opens both; the source is left as it is. A destination that already
    /// holds a store is refused unless --force, which replaces it. Then run keyd and keyctl
    /// with --store (or KEYD_STORE) naming the destination.
    #[command(after_help = EXIT_CODES)]
    Copy {
        /// The destination: `file` (the home's store.age) or `swarm:NAME`
        #[arg(long, value_name = "file|swarm:NAME")]
        to: keyd::store::StoreLocation,
        /// Replace a store already at the destination
        #[arg(long)]
        force: bool,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum SwarmCommand {
    /// Print `KEYD_SWARM_<OUTPUT>=<current secret>` for every output the swarm sink published,
    /// read from the store: `env $(keyctl swarm env) docker stack deploy -c app.yml app` from
    /// any host holding the identity (with --store swarm:NAME, no file to copy around)
    #[command(after_help = EXIT_CODES)]
    Env {
        /// Only this stack
        #[arg(long, value_name = "STACK")]
        stack: Option<String>,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub(super) struct ApplyArgs {
    /// The stack's policy (TOML)
    #[arg(long, value_name = "FILE")]
    pub(super) policy: PathBuf,
    /// Deliver files into DIR instead of the policy's [sinks.files] dir (recorded in the store)
    #[arg(long, value_name = "DIR")]
    pub(super) out: Option<PathBuf>,
    /// Machine-readable summary on stdout
    #[arg(long)]
    pub(super) json: bool,
    /// Start over: make a new store although this home had one that is gone, and replace
    /// outputs that exist but that the store does not know. Every such value is lost
    #[arg(long)]
    pub(super) reinit: bool,
    /// Use the store in place although it is older than the last one written in this home
    /// (an old copy put back on purpose)
    #[arg(long)]
    pub(super) accept_rollback: bool,
    /// Also deliver every output as a Docker Swarm secret, swapped into the services that use
    /// it on rotation (the policy's [sinks.swarm], or its defaults; current names go to
    /// STACK.swarm.env beside the policy). Needs a swarm manager: see --init-swarm
    #[arg(long)]
    pub(super) swarm: bool,
    /// With --swarm: run `docker swarm init` first when this node is not in a swarm
    #[arg(long)]
    pub(super) init_swarm: bool,
}

impl ApplyArgs {
    /// The flags that next steps repeat: the home and store given, and this command's own.
    pub(super) fn given(
        &self,
        home: Option<&std::path::Path>,
        store: &keyd::store::StoreLocation,
    ) -> crate::output::Given {
        let swarm = self.swarm || self.init_swarm;
        crate::output::Given::new(home, store, &self.policy, self.out.as_deref(), swarm)
    }
}

#[derive(clap::Args, Debug)]
pub(super) struct ImportArgs {
    /// The stack's policy (TOML): it decides each secret's kind
    #[arg(long, value_name = "FILE")]
    pub(super) policy: PathBuf,
    /// A directory of one file per secret, a .env file, or a compose file (*.yml, *.yaml)
    pub(super) source: PathBuf,
    /// Read SOURCE as this kind instead of guessing from its name
    #[arg(long, value_name = "KIND")]
    pub(super) from: Option<SourceArg>,
    /// Deliver files into DIR on the next apply instead of the policy's [sinks.files] dir
    #[arg(long, value_name = "DIR")]
    pub(super) out: Option<PathBuf>,
    /// Print the mapping (source -> secret, kind, verdict) and write nothing
    #[arg(long)]
    pub(super) dry_run: bool,
    /// Import over secrets the store already holds (the imported value becomes their next
    /// version; older versions are kept)
    #[arg(long)]
    pub(super) replace: bool,
    /// Machine-readable output
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(super) enum SourceArg {
    /// A directory of one file per secret
    Dir,
    /// A .env file (compose syntax)
    Env,
    /// A compose file's top-level secrets: with file: entries
    Compose,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(super) enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Subcommand, Debug)]
pub(super) enum RecipientsCommand {
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
pub(super) enum Gen {
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
pub(super) enum PlanCommand {
    /// What `keyctl rotate SELECTOR` would do
    Rotate {
        /// NAME, STACK/NAME, a kind (password, token, fernet, rsa, tls) or STACK/KIND
        selector: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// What `keyctl retire NAME` would do
    Retire {
        /// NAME or STACK/NAME
        selector: String,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum PolicyCommand {
    /// Validate a policy; print every problem with FILE:LINE:COLUMN
    #[command(after_help = EXIT_CODES)]
    Check {
        /// The policy
        file: PathBuf,
    },
}
