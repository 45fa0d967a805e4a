//! `keyd`, the daemon: parses arguments and calls into the `keyd` library. Exit codes: 0 done,
//! 1 failure, 2 bad arguments, 4 the store cannot be opened, 6 a socket cannot be served.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keyd::clock::SystemClock;
use keyd::store::Home;

/// keyd: rotates and delivers a stack's secrets on schedule, and serves the local API.
#[derive(Parser, Debug)]
#[command(
    name = "keyd",
    bin_name = "keyd",
    version,
    about = "Generates, stores, rotates and delivers key material for container stacks",
    // Either flag gives the plugin something to serve; both may be given.
    group(clap::ArgGroup::new("plugin_served").multiple(true)),
    after_help = "Exit codes: 0 stopped cleanly, 1 failure, 2 bad arguments, 4 the store cannot be opened, 6 a socket cannot be served (another keyd answers on it, a file is in the way, or the --metrics address cannot be bound)"
)]
struct Args {
    /// The keyd home (identity.txt, store.age). Default: $XDG_DATA_HOME/keyd or ~/.local/share/keyd
    #[arg(long, env = "KEYD_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// Where the store is: `file` (the home's store.age) or `swarm:NAME` (Swarm configs in the
    /// swarm's Raft log, shared by every manager; the scheduler runs on one keyd at a time,
    /// by a lease). See docs/swarm.md
    #[arg(
        long,
        env = "KEYD_STORE",
        value_name = "file|swarm:NAME",
        default_value = "file"
    )]
    store: keyd::store::StoreLocation,
    /// The API socket. Default: <home>/keyd.sock
    #[arg(long, env = "KEYD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Mode of the socket file (octal)
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    socket_mode: u32,
    /// Also allow this uid to use the API (repeatable; the daemon's uid and root always may)
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uids: Vec<u32>,
    /// Finish rotations in flight, re-deliver, do whatever is due, then exit (for cron, timers)
    #[arg(long, conflicts_with = "docker_plugin")]
    once: bool,
    /// Apply this policy at start, as `keyctl quickstart --policy FILE` does (the home is made
    /// when it has none; values that exist are kept): a container needs no separate init step
    #[arg(long = "apply", value_name = "FILE")]
    apply: Vec<PathBuf>,
    /// Ask the keyd serving the socket whether it is healthy, then exit 0 (yes) or 1 (no
    /// answer, or not healthy): a container healthcheck for an image without a shell
    #[arg(long)]
    health: bool,
    /// How log lines on stderr look: `text` (keyd: message) or `json` (one object a line:
    /// time, level, msg, and for a secret's work stack, secret, version, step, outcome, by,
    /// error; never a value), for log collectors
    #[arg(
        long,
        env = "KEYD_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT",
        default_value = "text"
    )]
    log_format: keyd::log::Format,
    /// Print keyd's manual page (roff) on stdout: keyd --man | man -l -
    #[arg(long)]
    man: bool,
    /// Also serve Docker's secret-provider plugin protocol on this socket, so that
    /// `docker secret create --driver keyd NAME` takes NAME's value from keyd when a task
    /// starts (the engine knows the plugin by the file name without `.sock`). Needs
    /// --plugin-stack or --plugin-allow-unstacked. See docs/plugin.md
    #[arg(
        long,
        value_name = "PATH",
        num_args = 0..=1,
        default_missing_value = "/run/docker/plugins/keyd.sock",
        requires = "plugin_served"
    )]
    docker_plugin: Option<PathBuf>,
    /// Serve STACK's values to the services of the Docker stack NAMESPACE (their
    /// com.docker.stack.namespace label; default: STACK), and to no other (repeatable; one
    /// namespace per stack). A Swarm secret's labels choose only among the service's own
    /// stack's values
    #[arg(
        long = "plugin-stack",
        value_name = "STACK[=NAMESPACE]",
        value_parser = parse_plugin_stack,
        requires = "docker_plugin",
        group = "plugin_served"
    )]
    plugin_stacks: Vec<(String, String)>,
    /// Serve STACK's values to services in no Docker stack (no com.docker.stack.namespace
    /// label, e.g. made by `docker service create`); without it such services get nothing
    #[arg(
        long = "plugin-allow-unstacked",
        value_name = "STACK",
        requires = "docker_plugin",
        group = "plugin_served"
    )]
    plugin_allow_unstacked: Option<String>,
    /// Also allow this uid on the plugin socket (repeatable; root, the engine, always may): a
    /// rootless engine's uid. The plugin socket is 0600, owned by keyd's uid, whatever
    /// --socket-mode says
    #[arg(
        long = "plugin-allow-uid",
        value_name = "UID",
        requires = "docker_plugin"
    )]
    plugin_allow_uids: Vec<u32>,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (e.g. 127.0.0.1:9477): names,
    /// versions, times and counts, never a value. TCP has no peer check: bind it to loopback
    /// or a private network. Off by default. See docs/metrics.md
    #[arg(long, value_name = "IP:PORT", conflicts_with = "once")]
    metrics: Option<std::net::SocketAddr>,
}

fn parse_plugin_stack(s: &str) -> Result<(String, String), String> {
    keyd::sinks::plugin::StackMap::parse_stack_arg(s).map_err(|e| e.to_string())
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 0600"))
}

/// `--health`: GET /v1/health on `socket`.
fn health(socket: &std::path::Path) -> ExitCode {
    let Some(mut stream) = keyd::daemon::client::connect(socket) else {
        eprintln!("keyd: no keyd answers on {}", socket.display());
        return ExitCode::FAILURE;
    };
    match keyd::daemon::client::call(&mut stream, socket, "GET", "/v1/health", None) {
        Ok((200, _)) => ExitCode::SUCCESS,
        Ok((status, _)) => {
            eprintln!("keyd: {} answered {status}", socket.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("keyd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `keyd --man`: the manual page, made from the same definitions as `--help`.
fn man() -> ExitCode {
    use clap::CommandFactory as _;
    let mut page = Vec::new();
    if clap_mangen::Man::new(Args::command())
        .render(&mut page)
        .is_err()
    {
        return ExitCode::from(1);
    }
    use std::io::Write as _;
    match std::io::stdout().write_all(&page) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyd: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    // Before anything holds a secret; reported once the log's format is known.
    let core_dumps = keyd::secret::forbid_core_dumps();
    let args = Args::parse();
    keyd::log::set_format(args.log_format);
    if let Err(e) = core_dumps {
        keyd::log::warn(format_args!(
            "cannot turn off core dumps ({e}): a crash could write secrets to disk"
        ));
    }
    if args.man {
        return man();
    }
    let Some(dir) = args.home.or_else(Home::default_dir) else {
        keyd::log::error(format_args!("no home: set --home or KEYD_HOME"));
        return ExitCode::from(2);
    };
    let socket = args.socket.unwrap_or_else(|| dir.join("keyd.sock"));
    let home = keyd::ops::home_at(&dir, &args.store);
    if args.health {
        return health(&socket);
    }
    // The plugin's stacks are checked before anything runs: a bad map is a bad argument.
    let plugin = args.docker_plugin.map(|socket| {
        keyd::sinks::plugin::StackMap::new(args.plugin_stacks, args.plugin_allow_unstacked).map(
            |stacks| keyd::daemon::PluginConfig {
                socket,
                allow_uids: args.plugin_allow_uids,
                stacks,
            },
        )
    });
    let plugin = match plugin.transpose() {
        Ok(plugin) => plugin,
        Err(e) => {
            keyd::log::error(format_args!("{e}"));
            return ExitCode::from(2);
        }
    };
    for path in &args.apply {
        let applied = keyd::policy::Policy::load(path)
            .map_err(keyd::Error::from)
            .and_then(|policy| {
                let options = keyd::ApplyOptions {
                    init: true,
                    ..Default::default()
                };
                keyd::apply(&home, &policy, &options)
            });
        match applied {
            Ok(report) => keyd::log::info(format_args!(
                "applied {} ({} secrets)",
                path.display(),
                report.secrets.len()
            )),
            Err(e) => {
                keyd::log::error(format_args!("cannot apply {}: {e}", path.display()));
                return ExitCode::FAILURE;
            }
        }
    }
    let result = if args.once {
        keyd::daemon::start_up(&home, &SystemClock, "keyd once")
            .map(|(report, _)| keyd::daemon::log_report(&report, "keyd once"))
    } else {
        keyd::daemon::run_daemon(keyd::daemon::Config {
            socket,
            home,
            socket_mode: args.socket_mode,
            allow_uids: args.allow_uids,
            plugin,
            metrics: args.metrics,
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            keyd::log::error(format_args!("{e}"));
            ExitCode::from(match e {
                keyd::Error::Store(_) => 4,
                keyd::Error::Socket { .. } | keyd::Error::Listen { .. } => 6,
                _ => 1,
            })
        }
    }
}
