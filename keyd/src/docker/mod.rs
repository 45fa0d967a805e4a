//! The Docker Engine API as keyd uses it: swarm secrets (create, find, delete), swarm configs
//! (the swarm store's generations: create-if-absent, read back, delete), services (list,
//! repoint, wait for a rolling update), and the swarm itself (is this node a manager,
//! `--init-swarm`). Blocking calls over `bollard`, each driven on a small runtime of its own
//! and bounded by a timeout, so a hung engine fails one delivery instead of stalling keyd.
//!
//! The engine is found the way the `docker` command finds it: `DOCKER_HOST` (a `unix://` path
//! or `tcp://` without TLS), else `/var/run/docker.sock`. The engine's API version is checked
//! beside the first call (keyd needs 1.41, Docker 20.10, or newer).

mod api_version;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use api_version::{check_api_version, ping_api_version};
use bollard::Docker;
use bollard::models::{
    Config, ConfigSpec, LocalNodeState, Secret, SecretSpec, Service, ServiceSpec,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, SwarmInitRequest,
};
use bollard::query_parameters::{
    ListConfigsOptions, ListSecretsOptions, ListServicesOptions, UpdateServiceOptions,
};

/// The oldest Engine API keyd speaks (Docker 20.10).
pub const MIN_API: (usize, usize) = (1, 41);

/// A failure talking to the engine. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// No engine answered.
    #[error(
        "cannot reach the Docker engine at {host}: {message} (is dockerd running, and may this user open its socket? DOCKER_HOST names another engine)"
    )]
    Unreachable {
        /// `DOCKER_HOST` or the default socket.
        host: String,
        /// What the connection attempt said.
        message: String,
    },
    /// The engine is older than keyd needs.
    #[error("the Docker engine speaks API {found}; keyd needs {}.{} (Docker 20.10) or newer", MIN_API.0, MIN_API.1)]
    TooOld {
        /// The engine's API version.
        found: String,
    },
    /// This node is not a swarm manager.
    #[error(
        "this Docker engine is not a swarm manager (swarm state: {state}): run `docker swarm init` (or `docker swarm init --advertise-addr ADDR` on a host with several addresses), or pass --init-swarm"
    )]
    NotManager {
        /// The node's swarm state.
        state: String,
    },
    /// The engine refused a call.
    #[error("Docker engine: {what}: {message}")]
    Api {
        /// What keyd asked for.
        what: String,
        /// The engine's answer (HTTP status and message).
        message: String,
        /// The HTTP status, when there was one.
        status: Option<u16>,
    },
    /// A call did not finish in time.
    #[error("Docker engine: {what}: no answer within {} s", .limit.as_secs())]
    Timeout {
        /// What keyd asked for.
        what: String,
        /// The limit.
        limit: Duration,
    },
    /// A service's rolling update failed or was rolled back.
    #[error("service {service}: the update onto the new secret {state}: {message}")]
    UpdateFailed {
        /// The service's name.
        service: String,
        /// The update's final state (`rolled back`, `paused`, ...).
        state: String,
        /// The engine's message for it.
        message: String,
    },
}

/// A swarm secret as listed (no data: the engine never gives it back).
#[derive(Clone, Debug)]
pub struct SecretInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// The secret-provider plugin that holds its value, if any.
    pub driver: Option<String>,
}

impl From<Secret> for SecretInfo {
    fn from(s: Secret) -> Self {
        let spec = s.spec.unwrap_or_default();
        SecretInfo {
            id: s.id.unwrap_or_default(),
            name: spec.name.unwrap_or_default(),
            labels: spec.labels.unwrap_or_default(),
            driver: spec.driver.map(|d| d.name),
        }
    }
}

/// A swarm config as the engine gives it back: unlike a secret's, its data is readable.
#[derive(Clone, Debug)]
pub struct ConfigInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its data (the engine returns it base64-encoded; decoded here).
    pub data: Vec<u8>,
}

/// The largest config the engine accepts: swarmkit's `MaxConfigSize` (manager/controlapi)
/// refuses data of 1,024,000 bytes or more ("config data must be larger than 0 and less than
/// 1024000 bytes", checked against Docker 20.10).
pub const MAX_CONFIG_BYTES: usize = 1_024_000 - 1;

impl TryFrom<Config> for ConfigInfo {
    type Error = String;
    fn try_from(c: Config) -> Result<Self, String> {
        use base64::Engine as _;
        let spec = c.spec.unwrap_or_default();
        let name = spec.name.unwrap_or_default();
        let data = base64::engine::general_purpose::STANDARD
            .decode(spec.data.unwrap_or_default())
            .map_err(|e| format!("config {name}: its data is not base64: {e}"))?;
        Ok(ConfigInfo {
            id: c.id.unwrap_or_default(),
            name,
            labels: spec.labels.unwrap_or_default(),
            data,
        })
    }
}

/// What deleting a secret found.
#[derive(Debug, PartialEq, Eq)]
pub enum Deleted {
    /// It is gone now.
    Gone,
    /// A service still uses it; it stays.
    InUse,
}

/// A connection to one engine.
pub struct Engine {
    docker: Docker,
    runtime: tokio::runtime::Runtime,
    host: String,
    timeout: Duration,
    /// The unix socket whose engine's API version is still to be checked (with the first
    /// call, [`Engine::run`]).
    unchecked: std::sync::Mutex<Option<String>>,
}

impl Engine {
    /// Connects to the engine `DOCKER_HOST` names (else the default socket); each later call
    /// may take up to `timeout`. On a unix socket the engine's API version is checked beside
    /// the first call ([`Engine::call`]), not before it.
    pub fn connect(timeout: Duration) -> Result<Engine, DockerError> {
        Engine::connect_checked(timeout, false)
    }

    /// Another connection to this engine, for a thread of its own beside this one; its API
    /// version was checked already.
    pub fn another(&self) -> Result<Engine, DockerError> {
        Engine::connect_checked(self.timeout, true)
    }

    fn connect_checked(timeout: Duration, checked: bool) -> Result<Engine, DockerError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
        Engine::connect_to(host, timeout, checked)
    }

    fn connect_to(host: String, timeout: Duration, checked: bool) -> Result<Engine, DockerError> {
        let unreachable = |message: String| DockerError::Unreachable {
            host: host.clone(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unreachable(format!("cannot start an I/O runtime: {e}")))?;
        let secs = timeout.as_secs().max(1);
        let local = host
            .strip_prefix("unix://")
            .or_else(|| host.starts_with('/').then_some(host.as_str()))
            .map(str::to_owned);
        if let Some(path) = local {
            // bollard 0.21 sends each request's path without a version prefix (its URI joins
            // an absolute path over `/vX.Y`; `requests_name_no_api_version` holds it to that),
            // so the engine answers in its own version and the client's is never sent. What
            // is left of negotiating is the check that the engine is new enough, which its
            // `/_ping` answer tells; `/version` (what bollard negotiates with) asks containerd
            // and runc for theirs and takes ~8 ms.
            let version = bollard::ClientVersion {
                major_version: MIN_API.0,
                minor_version: MIN_API.1,
            };
            let docker = Docker::connect_with_unix(&host, secs, &version)
                .map(|d| d.with_timeout(timeout))
                .map_err(|e| unreachable(e.to_string()))?;
            return Ok(Engine {
                docker,
                runtime,
                host,
                timeout,
                unchecked: std::sync::Mutex::new((!checked).then_some(path)),
            });
        }
        let docker = runtime.block_on(async {
            let docker = Docker::connect_with_defaults()
                .map_err(|e| unreachable(e.to_string()))?
                .with_timeout(timeout);
            match tokio::time::timeout(timeout, docker.negotiate_version()).await {
                Ok(Ok(d)) => Ok(d),
                Ok(Err(e)) => Err(unreachable(e.to_string())),
                Err(_) => Err(unreachable(format!("no answer within {secs} s"))),
            }
        })?;
        check_api_version(docker.client_version())?;
        Ok(Engine {
            docker,
            runtime,
            host,
            timeout,
            unchecked: std::sync::Mutex::new(None),
        })
    }

    /// The engine's address (`DOCKER_HOST` or the default socket).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Runs one call, bounded by the timeout.
    fn call<T>(
        &self,
        what: impl Fn() -> String,
        f: impl Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<T, DockerError> {
        match self.run(f) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(api_error(what(), e)),
            Err(None) => Err(DockerError::Timeout {
                what: what(),
                limit: self.timeout,
            }),
            Err(Some(e)) => Err(e),
        }
    }

    /// Runs `f`, bounded by the timeout (`Err(None)` when it ran out). The first run on a
    /// unix socket also asks the engine's `/_ping` for its API version, both requests in
    /// flight at once, and fails as [`Engine::connect`] would have when the engine cannot be
    /// reached or is too old.
    fn run<F: Future>(&self, f: F) -> Result<F::Output, Option<DockerError>> {
        let limit = self.timeout;
        let unchecked = self
            .unchecked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(path) = unchecked else {
            return self
                .runtime
                .block_on(async move { tokio::time::timeout(limit, f).await })
                .map_err(|_| None);
        };
        let both = async { tokio::join!(ping_api_version(&path), f) };
        let (version, output) = self
            .runtime
            .block_on(async move { tokio::time::timeout(limit, both).await })
            .map_err(|_| {
                Some(DockerError::Unreachable {
                    host: self.host.clone(),
                    message: format!("no answer within {} s", limit.as_secs().max(1)),
                })
            })?;
        let version = version.map_err(|message| DockerError::Unreachable {
            host: self.host.clone(),
            message,
        })?;
        check_api_version(version)?;
        Ok(output)
    }

    /// Fails unless this node is a swarm manager.
    pub fn require_manager(&self) -> Result<(), DockerError> {
        let info = self.call(|| "reading the swarm state".into(), self.docker.info())?;
        let swarm = info.swarm.unwrap_or_default();
        let state = swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY);
        if state == LocalNodeState::ACTIVE && swarm.control_available == Some(true) {
            return Ok(());
        }
        let state = match state {
            LocalNodeState::ACTIVE => "a worker, not a manager".to_owned(),
            LocalNodeState::EMPTY => "unknown".to_owned(),
            other => other.to_string(),
        };
        Err(DockerError::NotManager { state })
    }

    /// Initialises a swarm on this node (`docker swarm init`), advertising `advertise` when
    /// given; does nothing when the node already is a manager.
    pub fn init_swarm(&self, advertise: Option<&str>) -> Result<(), DockerError> {
        if self.require_manager().is_ok() {
            return Ok(());
        }
        let request = SwarmInitRequest {
            listen_addr: Some("0.0.0.0:2377".into()),
            advertise_addr: advertise.map(str::to_owned),
            ..Default::default()
        };
        self.call(
            || "initialising a swarm (docker swarm init)".into(),
            self.docker.init_swarm(request),
        )?;
        self.require_manager()
    }

    /// Every secret carrying label `key=value`.
    pub fn secrets_labelled(&self, key: &str, value: &str) -> Result<Vec<SecretInfo>, DockerError> {
        let options = ListSecretsOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{key}={value}")],
            )])),
        };
        let list = self.call(
            || format!("listing secrets labelled {key}={value}"),
            self.docker.list_secrets(Some(options)),
        )?;
        Ok(list.into_iter().map(SecretInfo::from).collect())
    }

    /// The secret named exactly `name`, if there is one.
    pub fn secret_named(&self, name: &str) -> Result<Option<SecretInfo>, DockerError> {
        let options = ListSecretsOptions {
            filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
        };
        let list = self.call(
            || format!("looking up secret {name}"),
            self.docker.list_secrets(Some(options)),
        )?;
        // The engine's name filter matches prefixes too.
        Ok(list
            .into_iter()
            .map(SecretInfo::from)
            .find(|s| s.name == name))
    }

    /// Creates secret `name` holding `data`, with `labels`; `Ok(None)` when a secret of that
    /// name exists already.
    pub fn create_secret(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        data: &[u8],
    ) -> Result<Option<String>, DockerError> {
        use base64::Engine as _;
        // The engine takes the data base64-encoded in the JSON body; bollard's request buffer
        // is not zeroized (it lives for the duration of one call).
        let spec = SecretSpec {
            name: Some(name.to_owned()),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        match self.call(
            || format!("creating secret {name}"),
            self.docker.create_secret(spec),
        ) {
            Ok(id) => Ok(Some(id.id)),
            Err(DockerError::Api {
                status: Some(409), ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes secret `id` (named `name` in messages); a secret already gone is no error, and
    /// one a service still uses is left in place.
    pub fn delete_secret(&self, id: &str, name: &str) -> Result<Deleted, DockerError> {
        match self.call(
            || format!("removing secret {name}"),
            self.docker.delete_secret(id),
        ) {
            Ok(())
            | Err(DockerError::Api {
                status: Some(404), ..
            }) => Ok(Deleted::Gone),
            Err(DockerError::Api {
                status: Some(400 | 409),
                message,
                ..
            }) if message.contains("in use") => Ok(Deleted::InUse),
            Err(e) => Err(e),
        }
    }

    /// Every config carrying label `key=value`, with its data.
    pub fn configs_labelled(&self, key: &str, value: &str) -> Result<Vec<ConfigInfo>, DockerError> {
        self.configs_with_labels(&[&format!("{key}={value}")])
    }

    /// Every config matching all of `labels` (each `key=value`, or `key` for any value), with
    /// its data.
    pub fn configs_with_labels(&self, labels: &[&str]) -> Result<Vec<ConfigInfo>, DockerError> {
        let what = || format!("listing configs labelled {}", labels.join(", "));
        let options = ListConfigsOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
            )])),
        };
        let list = self.call(what, self.docker.list_configs(Some(options)))?;
        list.into_iter()
            .map(|c| {
                ConfigInfo::try_from(c).map_err(|message| DockerError::Api {
                    what: what(),
                    message,
                    status: None,
                })
            })
            .collect()
    }

    /// The config named exactly `name`, with its data, if there is one.
    pub fn config_named(&self, name: &str) -> Result<Option<ConfigInfo>, DockerError> {
        let found = self.call(
            || format!("reading config {name}"),
            self.docker.inspect_config(name),
        );
        named_config(name, found)
    }

    /// [`Engine::config_named`] of `a` and of `b`, both requests in flight at once (a look-up
    /// costs a round trip to the swarm's store, not bandwidth).
    pub fn configs_named(
        &self,
        a: &str,
        b: &str,
    ) -> Result<(Option<ConfigInfo>, Option<ConfigInfo>), DockerError> {
        let both =
            async { tokio::join!(self.docker.inspect_config(a), self.docker.inspect_config(b)) };
        let (found_a, found_b) = self.run(both).map_err(|e| {
            e.unwrap_or_else(|| DockerError::Timeout {
                what: format!("reading configs {a} and {b}"),
                limit: self.timeout,
            })
        })?;
        Ok((
            named_config(
                a,
                found_a.map_err(|e| api_error(format!("reading config {a}"), e)),
            )?,
            named_config(
                b,
                found_b.map_err(|e| api_error(format!("reading config {b}"), e)),
            )?,
        ))
    }

    /// Creates config `name` holding `data` (at most [`MAX_CONFIG_BYTES`]), with `labels`;
    /// `Ok(None)` when a config of that name exists already. The engine creates a name once:
    /// of two callers creating the same name, exactly one gets `Some`.
    pub fn create_config(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        data: &[u8],
    ) -> Result<Option<String>, DockerError> {
        use base64::Engine as _;
        let spec = ConfigSpec {
            name: Some(name.to_owned()),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        match self.call(
            || format!("creating config {name}"),
            self.docker.create_config(spec),
        ) {
            Ok(id) => Ok(Some(id.id)),
            Err(DockerError::Api {
                status: Some(409), ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes config `id_or_name`; one already gone is no error.
    pub fn delete_config(&self, id_or_name: &str) -> Result<(), DockerError> {
        match self.call(
            || format!("removing config {id_or_name}"),
            self.docker.delete_config(id_or_name),
        ) {
            Ok(())
            | Err(DockerError::Api {
                status: Some(404), ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every secret.
    pub fn secrets(&self) -> Result<Vec<SecretInfo>, DockerError> {
        let list = self.call(
            || "listing secrets".into(),
            self.docker.list_secrets(None::<ListSecretsOptions>),
        )?;
        Ok(list.into_iter().map(SecretInfo::from).collect())
    }

    /// Every service.
    pub fn services(&self) -> Result<Vec<Service>, DockerError> {
        self.call(
            || "listing services".into(),
            self.docker.list_services(None::<ListServicesOptions>),
        )
    }

    /// Updates `service` to `spec` (rolling, new task started before the old one stops, rolled
    /// back when it fails), at the version it was read at. Returns what identifies the update
    /// status the service had before, for [`Engine::wait_updated`].
    pub fn update_service(
        &self,
        service: &Service,
        mut spec: ServiceSpec,
    ) -> Result<Option<String>, DockerError> {
        let before = service
            .update_status
            .as_ref()
            .and_then(|s| s.started_at.clone());
        let name = service_name(service);
        let update = spec
            .update_config
            .get_or_insert_with(ServiceSpecUpdateConfig::default);
        update.order = Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST);
        update.failure_action = Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK);
        let version = service
            .version
            .as_ref()
            .and_then(|v| v.index)
            .unwrap_or_default();
        let options = UpdateServiceOptions {
            version: i32::try_from(version).unwrap_or(i32::MAX),
            ..Default::default()
        };
        let id = service.id.clone().unwrap_or_default();
        self.call(
            || format!("updating service {name}"),
            self.docker.update_service(&id, spec, options, None),
        )?;
        Ok(before)
    }

    /// Waits until the rolling update of service `id` has completed; fails with the engine's
    /// message when it pauses or rolls back, or when `limit` passes. `before` is what
    /// [`Engine::update_service`] returned: until the engine starts the new update, the service
    /// still shows the status of the one before.
    pub fn wait_updated(
        &self,
        id: &str,
        name: &str,
        before: Option<&str>,
        limit: Duration,
        progress: &mut dyn FnMut(&str, Duration),
    ) -> Result<(), DockerError> {
        let started = Instant::now();
        loop {
            let service = self.call(
                || format!("reading service {name}"),
                self.docker.inspect_service(id, None),
            )?;
            let status = service.update_status.unwrap_or_default();
            let fresh = status.started_at.as_deref() != before || before.is_none();
            let message = status.message.unwrap_or_default();
            use ServiceUpdateStatusStateEnum as S;
            match status.state.filter(|_| fresh) {
                Some(S::COMPLETED) => return Ok(()),
                Some(state @ (S::PAUSED | S::ROLLBACK_PAUSED | S::ROLLBACK_COMPLETED)) => {
                    let state = match state {
                        S::PAUSED => "paused",
                        S::ROLLBACK_PAUSED => "was rolled back, then paused",
                        _ => "was rolled back",
                    };
                    return Err(DockerError::UpdateFailed {
                        service: name.to_owned(),
                        state: state.to_owned(),
                        message,
                    });
                }
                // No update status yet (not started), updating, rolling back.
                Some(S::ROLLBACK_STARTED) => progress("rolling back", started.elapsed()),
                Some(S::UPDATING) => progress("updating", started.elapsed()),
                _ => progress("waiting for the update to start", started.elapsed()),
            }
            if started.elapsed() > limit {
                return Err(DockerError::Timeout {
                    what: format!("waiting for service {name} to roll onto the new secret"),
                    limit,
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Engine {
    /// Rolls every service for which `change` edits the spec (returns true) onto the edited
    /// spec ([`Engine::update_service`]), all updates started before the first is waited for
    /// (each up to `limit`); prints one line per service, prefixed with `who`. Returns the
    /// services updated, and every failure.
    pub fn roll(
        &self,
        who: &str,
        limit: Duration,
        mut change: impl FnMut(&mut ServiceSpec) -> bool,
    ) -> Result<(Vec<String>, Vec<DockerError>), DockerError> {
        let mut updating = Vec::new();
        let mut failures = Vec::new();
        for service in self.services()? {
            let Some(mut spec) = service.spec.clone() else {
                continue;
            };
            if !change(&mut spec) {
                continue;
            }
            let name = service_name(&service);
            match self.update_service(&service, spec) {
                Ok(before) => {
                    crate::log::info(format_args!(
                        "{who}: service {name}: rolling onto the new value"
                    ));
                    updating.push((service.id.clone().unwrap_or_default(), name, before));
                }
                Err(e) => failures.push(e),
            }
        }
        // On a terminal, one line per service that counts the seconds; otherwise (logs) one
        // line when the update starts and one when it ends.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let mut done = Vec::new();
        for (id, name, before) in updating {
            let mut progress = |state: &str, elapsed: Duration| {
                if terminal {
                    eprint!(
                        "\r\x1b[Kkeyd: {who}: service {name}: {state} ({} s)",
                        elapsed.as_secs()
                    );
                }
            };
            let waited = self.wait_updated(&id, &name, before.as_deref(), limit, &mut progress);
            if terminal {
                eprint!("\r\x1b[K");
            }
            match waited {
                Ok(()) => {
                    crate::log::info(format_args!("{who}: service {name}: updated"));
                    done.push(name);
                }
                Err(e) => failures.push(e),
            }
        }
        Ok((done, failures))
    }
}

/// A service's name (its id when it has none).
pub fn service_name(service: &Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.name.clone())
        .or_else(|| service.id.clone())
        .unwrap_or_default()
}

/// What an inspection of config `name` found: `None` when the engine has no such config.
fn named_config(
    name: &str,
    found: Result<Config, DockerError>,
) -> Result<Option<ConfigInfo>, DockerError> {
    match found {
        Ok(config) => ConfigInfo::try_from(config)
            .map(|c| (c.name == name).then_some(c))
            .map_err(|message| DockerError::Api {
                what: format!("reading config {name}"),
                message,
                status: None,
            }),
        Err(DockerError::Api {
            status: Some(404), ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn api_error(what: String, e: bollard::errors::Error) -> DockerError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Api {
            what,
            message: format!("{status_code}: {}", message.trim()),
            status: Some(status_code),
        },
        E::RequestTimeoutError => DockerError::Api {
            what,
            message: "the request timed out".into(),
            status: None,
        },
        other => DockerError::Api {
            what,
            message: other.to_string(),
            status: None,
        },
    }
}
