//! The keyd daemon: loads the store, finishes any rotation in flight and re-delivers, then
//! schedules rotations and retirements and serves the local API on a Unix socket. One process,
//! a current-thread runtime. Store work runs on the blocking pool: operations that take the
//! store lock one at a time (`State::exclusive`), the API's and the plugin's reads beside
//! them (`State::read`).
//!
//! Callers are authorised twice: by the socket's file mode (0600 by default) and by the peer's
//! uid from SO_PEERCRED (the daemon's own uid, root, and `--allow-uid`s), read on accept
//! before anything the peer sent is parsed (`http.rs`: one hyper server for every socket,
//! with bounded heads and bodies, timeouts and a connection limit). `keyd --metrics ADDR`
//! adds a TCP listener for Prometheus (`metrics/`), served by the same server; it has no
//! peer rule (TCP peers have no uid) and serves only `/metrics`, which holds no value.

mod api;
pub mod client;
pub mod http;
pub mod metrics;
mod notifier;
pub mod plugin;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::{Mutex, Notify, Semaphore};

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::ops;
use crate::rotation::{Outcome, OutcomeKind, RotationReport};
use crate::sinks::plugin::StackMap;
use crate::store::{Home, StoreData};

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The keyd home, with its store (`--store`).
    pub home: Home,
    /// The API socket.
    pub socket: PathBuf,
    /// Mode of the socket file.
    pub socket_mode: u32,
    /// Uids allowed besides the daemon's own and root.
    pub allow_uids: Vec<u32>,
    /// The Docker secret-provider plugin socket, when keyd serves one.
    pub plugin: Option<PluginConfig>,
    /// Where `/metrics` is served over TCP (`--metrics`), when it is.
    pub metrics: Option<std::net::SocketAddr>,
}

/// The Docker secret-provider plugin socket (`keyd --docker-plugin`).
#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// The socket (`/run/docker/plugins/keyd.sock`: the engine knows the plugin by the file
    /// name without `.sock`).
    pub socket: PathBuf,
    /// Uids allowed besides root (the engine).
    pub allow_uids: Vec<u32>,
    /// Which stack each requesting service may read (`--plugin-stack`,
    /// `--plugin-allow-unstacked`).
    pub stacks: StackMap,
}

/// State shared by the API and the scheduler. A cheap `Arc` handle: `work` is a mutex that
/// serialises every operation that takes the store lock (so the API's reads never wait behind
/// a long rotation: they read without the lock, by rename-safe `peek`), and `wake` tells the
/// scheduler to re-plan (after an API rotation, or SIGHUP).
pub struct State {
    /// The home.
    pub home: Home,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    work: Mutex<()>,
    /// Wakes the scheduler.
    pub wake: Notify,
    /// Wakes the notifier: events were added to the outbox.
    notify_wake: Arc<Notify>,
    allowed: Vec<u32>,
    status: std::sync::Mutex<Option<CachedStatus>>,
    view: std::sync::Mutex<Option<(StoreKey, Arc<StoreData>)>>,
    reads: Semaphore,
    /// Whether this keyd runs the scheduler: always on a file store; on a remote store, while
    /// it holds the store's lease ([`lease_keeper`]).
    scheduling: std::sync::atomic::AtomicBool,
    /// Set when this keyd takes the lease over: its next pass is the start-up work.
    resume: std::sync::atomic::AtomicBool,
    /// Counters, cached facts and target probes for `/metrics`.
    pub metrics: metrics::Metrics,
}

/// How long the scheduler's lease on a remote store lasts unless renewed; it is renewed every
/// third of that. A keyd that stops renewing (killed, cut off) is replaced by another within
/// this time.
pub const LEASE_TTL: Duration = Duration::from_secs(15);

/// Store reads ([`State::read`]) running at once. Each holds a whole decrypted store in
/// memory and is bound by the CPU, so more than the cores keyd expects gains nothing.
pub const CONCURRENT_READS: usize = 2;

/// One version of the store ([`Home::store_version`]): for the file store its inode, size,
/// time and the generation recorded beside it (every write renames a new file in place and
/// records its generation); for a remote store its newest generation.
type StoreKey = String;

/// `/v1/status` as computed from one version of the store file, and when.
struct CachedStatus {
    store: StoreKey,
    at: i64,
    status: Vec<crate::rotation::schedule::SecretStatus>,
}

impl State {
    /// State for `home` with `clock`, allowing the daemon's uid, root and `allow_uids`.
    pub fn new(home: Home, clock: Arc<dyn Clock>, allow_uids: &[u32]) -> Arc<Self> {
        let home_is_local = home.remote().is_none();
        let mut allowed = vec![0, rustix::process::geteuid().as_raw()];
        allowed.extend_from_slice(allow_uids);
        Arc::new(State {
            home,
            clock,
            work: Mutex::new(()),
            wake: Notify::new(),
            notify_wake: Arc::new(Notify::new()),
            allowed,
            status: std::sync::Mutex::new(None),
            view: std::sync::Mutex::new(None),
            reads: Semaphore::new(CONCURRENT_READS),
            scheduling: std::sync::atomic::AtomicBool::new(home_is_local),
            resume: std::sync::atomic::AtomicBool::new(false),
            metrics: metrics::Metrics::default(),
        })
    }

    fn store_key(&self) -> Result<StoreKey, crate::store::StoreError> {
        self.home.store_version()
    }

    /// The store as it is now, for the plugin's reads: read with `peek` (no lock, so never
    /// behind a rotation) and decrypted once per version of the store file, not once per
    /// request (decrypting is most of a request's time). The view holds values in zeroizing
    /// types and is dropped, so zeroized, when the store changes. Blocks: run it through
    /// [`State::read`].
    pub fn view(&self) -> Result<Arc<StoreData>, crate::store::StoreError> {
        let mut cache = self.view.lock().unwrap_or_else(|e| e.into_inner());
        let key = match self.store_key() {
            Ok(key) => key,
            // A remote store's engine briefly away: the last view read is the newest this
            // keyd knows, and serving it beats failing every task start meanwhile.
            Err(e @ crate::store::StoreError::Remote { .. }) => {
                return cache.as_ref().map(|(_, data)| data.clone()).ok_or(e);
            }
            Err(e) => return Err(e),
        };
        if let Some((_, data)) = cache.as_ref().filter(|(k, _)| *k == key) {
            return Ok(data.clone());
        }
        // Keyed by what was seen before reading: a write in between makes the next call read
        // again, never serve an older view.
        let data = Arc::new(self.home.peek()?);
        *cache = Some((key, data.clone()));
        Ok(data)
    }

    /// The status of every secret, from a view cached until the store changes (every write
    /// renames a new file in place and records its generation beside it, so the file's inode,
    /// size and time and the generation tell): a status call does not decrypt the store or
    /// parse policies again. Ages are moved on to now. Blocks: run it through [`State::read`].
    pub fn status(&self) -> Result<Vec<crate::rotation::schedule::SecretStatus>, Error> {
        let key = self.store_key()?;
        let now = self.clock.now();
        let mut cache = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref().filter(|c| c.store == key) {
            let mut status = c.status.clone();
            for s in &mut status {
                s.age_seconds = s.age_seconds.map(|a| a + (now - c.at));
            }
            return Ok(status);
        }
        let status = ops::query::status(&self.home, ops::query::Read::Unlocked, now)?;
        *cache = Some(CachedStatus {
            store: key,
            at: now,
            status: status.clone(),
        });
        Ok(status)
    }

    /// Runs a read of the store (`f`, given this state) on the blocking pool, at most
    /// [`CONCURRENT_READS`] at a time: decrypting and parsing the store blocks, and on the
    /// runtime's one thread it would hold up every connection and the scheduler. Reads take no
    /// turn from [`State::exclusive`]: they never wait behind a rotation. The caller's wait is
    /// bounded as any request's is: a connection still waiting when shutdown's grace ends is
    /// dropped, and the read's result with it.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&State) -> Result<T, Error> + Send + 'static,
    {
        // Never closed, so `acquire` never fails.
        let _permit = self.reads.acquire().await.ok();
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .unwrap_or(Err(Error::Panicked {
                operation: "a store read",
            }))
    }

    /// Runs an operation that rotates or retires (`f`) through [`State::exclusive`], then,
    /// in the same turn, appends the events of its report to the notify outbox and wakes the
    /// notifier (which sends them outside any turn).
    pub async fn exclusive_notified<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Home, &dyn Clock) -> Result<T, Error> + Send + 'static,
        T: AsRef<RotationReport>,
    {
        let result = self
            .exclusive(move |home, clock| {
                let out = f(home, clock)?;
                notifier::record(home, out.as_ref(), clock.now());
                Ok(out)
            })
            .await;
        self.notify_wake.notify_one();
        result
    }

    /// Runs a store operation on the blocking pool, one at a time.
    pub async fn exclusive<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Home, &dyn Clock) -> Result<T, Error> + Send + 'static,
    {
        let _turn = self.work.lock().await;
        let (home, clock) = (self.home.clone(), self.clock.clone());
        // A panic is contained per secret below this; one anywhere else fails this operation
        // only, so neither the scheduler nor an API connection dies with it.
        tokio::task::spawn_blocking(move || f(&home, &*clock))
            .await
            .unwrap_or(Err(Error::Panicked {
                operation: "a store operation",
            }))
    }
}

/// Logs what a pass, or a rotate or retire asked through the API, did: one line per secret
/// acted on, with stack, name, versions and `by` (the scheduler, or the API caller's uid);
/// never a value.
pub fn log_report(report: &RotationReport, by: &str) {
    for stack in &report.unscheduled {
        let mut fields = serde_json::Map::new();
        fields.insert("stack".into(), stack.as_str().into());
        crate::log::line(
            crate::log::Level::Warning,
            format_args!(
                "not scheduling {}: its stored policy does not parse; run `keyctl apply --policy FILE` with a policy that does",
                stack.escape_debug()
            ),
            fields,
        );
    }
    for o in &report.outcomes {
        let versions = if o.from_version == o.to_version {
            format!("at v{}", o.to_version)
        } else {
            format!("v{} -> v{}", o.from_version, o.to_version)
        };
        let level = match o.result {
            OutcomeKind::Failed | OutcomeKind::RekeyFailed => crate::log::Level::Error,
            _ => crate::log::Level::Info,
        };
        crate::log::line(
            level,
            format_args!(
                "{}/{}: {} {versions}{} ({by})",
                o.stack,
                o.name,
                o.result.as_words(),
                // Messages may quote a server's words: escaped, so they cannot forge log lines.
                o.message
                    .as_deref()
                    .map(|m| format!(": {}", m.escape_debug()))
                    .unwrap_or_default()
            ),
            outcome_fields(o, by),
        );
    }
}

/// An outcome's fields in a JSON log line: the audit log's names, never a value.
fn outcome_fields(o: &Outcome, by: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = serde_json::Map::new();
    fields.insert("stack".into(), o.stack.as_str().into());
    fields.insert("secret".into(), o.name.as_str().into());
    fields.insert("kind".into(), o.kind.to_string().into());
    fields.insert("from_version".into(), o.from_version.into());
    fields.insert("version".into(), o.to_version.into());
    if let Ok(outcome) = serde_json::to_value(o.result) {
        fields.insert("outcome".into(), outcome);
    }
    if let Some(step) = o.step {
        fields.insert("step".into(), step.to_string().into());
    }
    fields.insert("by".into(), by.into());
    if let Some(message) = &o.message {
        fields.insert("error".into(), message.as_str().into());
    }
    fields
}

/// Start-up work: re-deliver every stack (a process stopped between persisting and delivering
/// leaves files behind the store), then resume and run whatever is due.
pub fn start_up(
    home: &Home,
    clock: &dyn Clock,
    by: &str,
) -> Result<(RotationReport, Option<i64>), Error> {
    // The daemon never waits on a terminal for a passphrase.
    home.require_unattended()?;
    ops::deliver_all(home, clock, by)?;
    ops::run_due(home, clock, by)
}

/// Start-up work for a daemon that goes on to serve: as [`start_up`], but a delivery that
/// fails (a reload hook that fails, a directory keyd cannot write) is logged and left to the
/// scheduler, which runs owed reload hooks again with backoff. Refusing to start would only
/// restart keyd's container in a loop, serving nothing. A store that cannot be opened still
/// stops it.
fn start_up_serving(
    home: &Home,
    clock: &dyn Clock,
    by: &str,
) -> Result<(RotationReport, Option<i64>), Error> {
    home.require_unattended()?;
    if let Err(e) = ops::deliver_all(home, clock, by) {
        if matches!(e, Error::Store(_)) {
            return Err(e);
        }
        crate::log::error(format_args!(
            "start-up delivery failed: {e}; serving, and trying again on schedule"
        ));
    }
    ops::run_due(home, clock, by)
}

/// Binds the API socket: refuses when another daemon answers on it, replaces a stale file.
pub fn bind(config: &Config) -> Result<UnixListener, Error> {
    bind_socket(&config.socket, config.socket_mode, "--socket")
}

/// Binds the metrics listener (`--metrics`). A failure (the port taken, an address this host
/// does not have, a port below 1024 without the right to bind it) is an [`Error::Listen`].
pub fn bind_metrics(address: std::net::SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let fail = |source| Error::Listen {
        option: "--metrics",
        address,
        source,
    };
    let listener = std::net::TcpListener::bind(address).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    tokio::net::TcpListener::from_std(listener).map_err(fail)
}

/// Binds the plugin socket, mode 0600, with the same care as the API socket.
pub fn bind_plugin(plugin: &PluginConfig) -> Result<UnixListener, Error> {
    bind_socket(&plugin.socket, 0o600, "--docker-plugin")
}

fn bind_socket(path: &std::path::Path, mode: u32, option: &str) -> Result<UnixListener, Error> {
    use std::os::unix::fs::FileTypeExt as _;
    let io = |source| Error::Socket {
        path: path.to_owned(),
        source,
    };
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another keyd is already serving this socket",
        )));
    }
    // A stale socket of a stopped keyd is replaced; anything else at the path is left alone.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(io)?;
        }
        Ok(_) => {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "exists and is not a socket: keyd will not remove it (choose another {option})"
                ),
            )));
        }
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Created with its final mode (no window in which a wider mode lets others connect): the
    // umask is narrowed around bind(2). Nothing else creates files while the daemon starts.
    let mask = rustix::fs::Mode::from_bits_truncate(!mode & 0o777);
    let previous = rustix::process::umask(mask);
    let bound = UnixListener::bind(path);
    rustix::process::umask(previous);
    bound.map_err(io)
}

/// Serves the API (and the Docker plugin socket, when given) and runs the scheduler until
/// `shutdown` completes; then lets connections finish the request in progress (bounded by
/// [`http::SHUTDOWN_GRACE`]), waits for the store operation in progress (a safe point between
/// rotation steps) and returns.
pub async fn run(
    state: Arc<State>,
    listener: UnixListener,
    plugin: Option<(UnixListener, PluginConfig)>,
    metrics: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()>,
) {
    let scheduler = tokio::spawn(scheduler(state.clone()));
    let notifier = tokio::spawn(notifier::run(
        state.home.clone(),
        state.clock.clone(),
        state.notify_wake.clone(),
    ));
    let lease = state
        .home
        .remote()
        .is_some()
        .then(|| tokio::spawn(lease_keeper(state.clone(), lease_holder())));
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let api = http::Socket {
        listen: http::Listen::Unix(
            listener,
            http::PeerRule::new(state.allowed.clone(), "--allow-uid"),
        ),
        routes: Arc::new(api::ApiRoutes(state.clone())),
    };
    let mut servers = vec![tokio::spawn(http::serve(api, stopping.clone()))];
    if let Some((listener, config)) = plugin {
        // Root is the engine; keyd's own uid is not allowed unless it is root or listed.
        let mut allowed = vec![0];
        allowed.extend_from_slice(&config.allow_uids);
        let socket = http::Socket {
            listen: http::Listen::Unix(
                listener,
                http::PeerRule::new(allowed, "--plugin-allow-uid"),
            ),
            routes: Arc::new(plugin::PluginRoutes {
                state: state.clone(),
                stacks: Arc::new(config.stacks),
            }),
        };
        servers.push(tokio::spawn(http::serve(socket, stopping.clone())));
    }
    let probes = metrics.map(|listener| {
        let socket = http::Socket {
            listen: http::Listen::Tcp(listener),
            routes: Arc::new(metrics::MetricsRoutes(state.clone())),
        };
        servers.push(tokio::spawn(http::serve(socket, stopping)));
        tokio::spawn(metrics::probe_targets(state.clone()))
    });
    shutdown.await;
    let _ = stop.send(true);
    for server in servers {
        let _ = server.await;
    }
    scheduler.abort();
    if let Some(probes) = probes {
        probes.abort();
    }
    notifier.abort();
    if let Some(lease) = lease {
        lease.abort();
    }
    // Wait for the operation in progress: the store is left between steps, never inside one.
    let _safe_point = state.work.lock().await;
}

/// A scheduler pass's result, whose report the notifier reads.
struct Pass((RotationReport, Option<i64>));

impl AsRef<RotationReport> for Pass {
    fn as_ref(&self) -> &RotationReport {
        &self.0.0
    }
}

async fn scheduler(state: Arc<State>) {
    use std::sync::atomic::Ordering;
    loop {
        if !state.scheduling.load(Ordering::SeqCst) {
            // Another keyd schedules: wait for the lease keeper to say this one does.
            tokio::select! {
                () = tokio::time::sleep(LEASE_TTL / 3) => {}
                () = state.wake.notified() => {}
            }
            continue;
        }
        // A keyd that just took the lease over does the start-up work first: the one before
        // it may have stopped inside a rotation.
        let take_over = state.resume.swap(false, Ordering::SeqCst);
        let by = if take_over {
            "keyd takeover"
        } else {
            "keyd schedule"
        };
        let pass = state
            .exclusive_notified(move |home, clock| {
                let pass = if take_over {
                    start_up(home, clock, by)
                } else {
                    ops::run_due(home, clock, by)
                };
                // After the pass: a certificate it renewed is not announced as expiring.
                notifier::record_expiring(home, clock.now());
                pass.map(Pass)
            })
            .await
            .map(|Pass(pass)| pass);
        let next = match pass {
            Ok((report, next)) => {
                log_report(&report, by);
                state.metrics.counters.count_report(&report);
                next
            }
            Err(e) => {
                crate::log::error(format_args!("scheduled pass failed: {e}"));
                if take_over {
                    state.resume.store(true, Ordering::SeqCst);
                }
                // Another keyd committed first: the pass is done again at once on the newest
                // generation (nothing of the lost commit was done). Anything else waits a minute.
                let lost_race =
                    matches!(e, Error::Store(crate::store::StoreError::Conflict { .. }));
                Some(state.clock.now() + if lost_race { 1 } else { 60 })
            }
        };
        let wait = next.map_or(3600, |t| (t - state.clock.now()).clamp(1, 3600)) as u64;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(wait)) => {}
            () = state.wake.notified() => {}
        }
    }
}

/// Keeps the scheduler's lease on a remote store: takes it when it is free or lapsed, renews
/// it every third of [`LEASE_TTL`], and tells the scheduler whether to run. A keyd that cannot
/// reach the store stops scheduling (another may hold the lease by now) and keeps serving
/// reads.
async fn lease_keeper(state: Arc<State>, holder: String) {
    use std::sync::atomic::Ordering;
    loop {
        let (home, who) = (state.home.clone(), holder.clone());
        let held = tokio::task::spawn_blocking(move || home.hold_scheduler_lease(&who, LEASE_TTL))
            .await
            .unwrap_or(Ok(false))
            .unwrap_or_else(|e| {
                crate::log::error(format_args!("cannot renew the scheduler lease: {e}"));
                false
            });
        let was = state.scheduling.swap(held, Ordering::SeqCst);
        if held && !was {
            crate::log::info(format_args!(
                "holding the scheduler lease ({holder}): scheduling"
            ));
            state.resume.store(true, Ordering::SeqCst);
            state.wake.notify_one();
        } else if was && !held {
            crate::log::info(format_args!(
                "another keyd holds the scheduler lease: serving, not scheduling"
            ));
        }
        tokio::time::sleep(LEASE_TTL / 3).await;
    }
}

/// Who this process is in the scheduler's lease: host name, pid and a random part (a task
/// restarted with the same pid in a new container is another holder).
fn lease_holder() -> String {
    let mut random = [0u8; 4];
    crate::secret::fill_random(&mut random);
    format!(
        "{}-{}-{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_default(),
        std::process::id(),
        crate::secret::hex(&random)
    )
}

/// Runs the daemon with the system clock: start-up work, then serve until SIGTERM or SIGINT;
/// SIGHUP re-reads the store and re-plans. Returns when stopped.
pub fn run_daemon(config: Config) -> Result<(), Error> {
    let home = config.home.clone();
    let listener_config = config.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    // The sockets first: a second keyd started on the same socket stops here, before it does
    // any start-up work on the store.
    let (listener, plugin, metrics) = runtime.block_on(async {
        let listener = bind(&listener_config)?;
        // A keyd that cannot serve everything it was asked to serves nothing: the socket files
        // it made are removed again.
        let remove_bound = |plugin: Option<&PluginConfig>| {
            let _ = std::fs::remove_file(&listener_config.socket);
            if let Some(config) = plugin {
                let _ = std::fs::remove_file(&config.socket);
            }
        };
        let plugin = match &listener_config.plugin {
            Some(config) => match bind_plugin(config) {
                Ok(bound) => Some((bound, config.clone())),
                Err(e) => {
                    remove_bound(None);
                    return Err(e);
                }
            },
            None => None,
        };
        let metrics = match listener_config.metrics.map(bind_metrics).transpose() {
            Ok(metrics) => metrics,
            Err(e) => {
                remove_bound(plugin.as_ref().map(|(_, config)| config));
                return Err(e);
            }
        };
        Ok::<_, Error>((listener, plugin, metrics))
    })?;
    // On a remote store the start-up work is the lease holder's (the scheduler does it when
    // the lease is taken); the store must open all the same.
    let started = if home.remote().is_none() {
        let (report, _) = start_up_serving(&home, &SystemClock, "keyd start")?;
        log_report(&report, "keyd start");
        notifier::record(&home, &report, SystemClock.now());
        notifier::record_expiring(&home, SystemClock.now());
        Some(report)
    } else {
        home.require_unattended()?;
        home.peek()?;
        None
    };
    runtime.block_on(async move {
        let state = State::new(home, Arc::new(SystemClock), &listener_config.allow_uids);
        if let Some(report) = &started {
            state.metrics.counters.count_report(report);
        }
        crate::log::info(format_args!(
            "ready on {}",
            listener_config.socket.display()
        ));
        if let Some(address) = metrics.as_ref().and_then(|m| m.local_addr().ok()) {
            crate::log::info(format_args!("metrics on http://{address}/metrics"));
        }
        if let Some(config) = &listener_config.plugin {
            crate::log::info(format_args!(
                "Docker secret-provider plugin on {} (stacks: {})",
                config.socket.display(),
                config.stacks
            ));
        }
        let signals = {
            let state = state.clone();
            async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::hangup()),
                ) else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = term.recv() => break,
                        _ = int.recv() => break,
                        _ = hup.recv() => {
                            crate::log::info(format_args!(
                                "SIGHUP: re-reading the store and re-planning"
                            ));
                            state.wake.notify_one();
                        }
                    }
                }
                crate::log::info(format_args!("stopping at the next safe point"));
            }
        };
        run(state, listener, plugin, metrics, signals).await;
        let _ = std::fs::remove_file(&listener_config.socket);
        if let Some(config) = &listener_config.plugin {
            let _ = std::fs::remove_file(&config.socket);
        }
        crate::log::info(format_args!("stopped"));
        Ok(())
    })
}
