//! The Docker secret-provider plugin socket's routes (Docker's legacy plugin protocol, served
//! by the same daemon on a socket of its own): `POST /Plugin.Activate` and
//! `POST /SecretProvider.GetSecret`. Nothing else: the API's routes are not here, and the
//! API socket has none of these. Which stack a requesting service may read (its
//! `com.docker.stack.namespace`) and which output of it a Swarm secret stands for (labels) are
//! decided by `sinks::plugin`; values are read with the store's lock-free `peek` (through
//! `State::view`, decrypted once per store version, on the blocking pool), base64-encoded into
//! zeroizing buffers, and never logged.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use base64::Engine as _;
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::State;
use super::http::{Peer, Request, Response, Routes};
use super::metrics::counters::PluginResult;
use crate::sinks::plugin::{PluginError, SecretRef, StackMap, resolve};

/// The content type of Docker's plugin protocol.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// `POST /SecretProvider.GetSecret`, as swarmkit's secret driver sends it
/// (`manager/drivers/secrets.go`, `SecretsProviderRequest`). Every field is optional there
/// (`omitempty`); fields added by later engines are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GetSecretRequest {
    /// The Swarm secret's name.
    #[serde(rename = "SecretName")]
    pub secret_name: String,
    /// The Swarm secret's labels (where keyd's labels are).
    #[serde(rename = "SecretLabels")]
    pub secret_labels: Option<BTreeMap<String, String>>,
    /// The service's id.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// The service's name.
    #[serde(rename = "ServiceName")]
    pub service_name: String,
    /// The service's labels: `com.docker.stack.namespace` decides which stack it may read.
    #[serde(rename = "ServiceLabels")]
    pub service_labels: Option<BTreeMap<String, String>>,
    /// The service's hostname setting.
    #[serde(rename = "ServiceHostname")]
    pub service_hostname: String,
    /// The task's id.
    #[serde(rename = "TaskID")]
    pub task_id: String,
    /// The task's name (`service.slot.id`).
    #[serde(rename = "TaskName")]
    pub task_name: String,
    /// The task's image.
    #[serde(rename = "TaskImage")]
    pub task_image: String,
    /// The node the task runs on.
    #[serde(rename = "NodeID")]
    pub node_id: String,
    /// The service's endpoint spec (not used by keyd).
    #[serde(rename = "ServiceEndpointSpec")]
    pub service_endpoint_spec: Option<serde_json::Value>,
}

/// The answer to `GetSecret`: `Value` is the value's bytes in base64 (Go's `[]byte`), `Err`
/// a message when there is no value (then `Value` is empty).
#[derive(Debug, Serialize)]
struct GetSecretAnswer<'a> {
    #[serde(rename = "Value")]
    value: &'a str,
    #[serde(rename = "Err")]
    err: &'a str,
    #[serde(rename = "DoNotReuse")]
    do_not_reuse: bool,
}

/// The plugin socket's routes: the daemon's state and which stack each service may read.
pub(super) struct PluginRoutes {
    pub state: Arc<State>,
    pub stacks: Arc<StackMap>,
}

impl Routes for PluginRoutes {
    fn answer(&self, request: Request, _peer: Peer) -> impl Future<Output = Response> + Send {
        let (state, stacks) = (self.state.clone(), self.stacks.clone());
        async move {
            match (request.method.as_str(), request.path.as_str()) {
                ("POST", "/Plugin.Activate") => activate(),
                ("POST", "/SecretProvider.GetSecret") => {
                    // Off the runtime's thread: a changed store is decrypted (State::view).
                    let started = std::time::Instant::now();
                    let body = request.body;
                    let answered = state
                        .read(move |state| Ok(answer_get_secret(state, &stacks, &body)))
                        .await;
                    let (response, result) = answered.unwrap_or_else(|e| {
                        (
                            protocol_error(500, format!("keyd: {e}")),
                            PluginResult::Failed,
                        )
                    });
                    state
                        .metrics
                        .counters
                        .count_get_secret(result, started.elapsed());
                    response
                }
                (_, "/Plugin.Activate" | "/SecretProvider.GetSecret") => protocol_error(
                    405,
                    format!("{} is not allowed on {}", request.method, request.path),
                ),
                _ => protocol_error(
                    404,
                    format!(
                        "no route {} {} on keyd's plugin socket",
                        request.method, request.path
                    ),
                ),
            }
        }
    }

    fn is_cheap(&self, method: &str, path: &str) -> bool {
        method == "POST" && path == "/Plugin.Activate"
    }
}

/// `{"Implements": ["secretprovider"]}`.
pub fn activate() -> Response {
    plugin_answer(
        200,
        Bytes::from_static(br#"{"Implements":["secretprovider"]}"#),
    )
}

fn plugin_answer(status: u16, body: Bytes) -> Response {
    Response {
        status,
        content_type: CONTENT_TYPE,
        body,
    }
}

/// A request the protocol cannot carry (bad route, malformed JSON): Docker's plugin client
/// reads `{"Err": "..."}` from a non-200 answer.
fn protocol_error(status: u16, message: String) -> Response {
    #[derive(Serialize)]
    struct ErrAnswer {
        #[serde(rename = "Err")]
        err: String,
    }
    plugin_answer(
        status,
        Bytes::from(serde_json::to_vec(&ErrAnswer { err: message }).expect("serialises")),
    )
}

/// Answers one `GetSecret` body from the store as it is now: a value of the stack `stacks`
/// gives the requesting service, never of another.
/// A refusal is a 200 with `Err` set (the protocol's way: swarmkit fails the task with that
/// message), never an empty value. Blocks (it reads the store): the plugin's routes run it
/// through [`State::read`].
pub fn get_secret(state: &State, stacks: &StackMap, body: &[u8]) -> Response {
    answer_get_secret(state, stacks, body).0
}

/// [`get_secret`], and how the request ended (for the metrics).
fn answer_get_secret(state: &State, stacks: &StackMap, body: &[u8]) -> (Response, PluginResult) {
    let request: GetSecretRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let response = protocol_error(
                400,
                format!("malformed GetSecret body ({e}); expected Docker's SecretsProviderRequest"),
            );
            return (response, PluginResult::Failed);
        }
    };
    let labels = request.secret_labels.clone().unwrap_or_default();
    let namespace = request
        .service_labels
        .as_ref()
        .and_then(StackMap::namespace_of);
    // Caller-given names are escaped: they must not forge log lines.
    let who = format!(
        "task {} of service {} ({})",
        request.task_name.escape_debug(),
        request.service_name.escape_debug(),
        namespace.map_or_else(
            || "in no stack".to_owned(),
            |n| format!("namespace {}", n.escape_debug())
        )
    );
    let served = SecretRef::from_labels(&request.secret_name, &labels).and_then(|wanted| {
        // Refused before the store is read: a service of no served stack costs no decryption.
        stacks.stack_for(namespace)?;
        let data = state
            .view()
            .map_err(|e| PluginError::Store(e.to_string()))?;
        resolve(&data, stacks, namespace, &wanted)
    });
    match served {
        Ok(served) => {
            crate::log::info(format_args!(
                "plugin: served {}/{} v{} as Swarm secret {} to {who}",
                served.stack,
                served.name,
                served.version,
                request.secret_name.escape_debug()
            ));
            let encoded = Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(served.value.expose()),
            );
            let mut body = Zeroizing::new(Vec::with_capacity(encoded.len() + 64));
            serde_json::to_writer(
                &mut *body,
                &GetSecretAnswer {
                    value: &encoded,
                    err: "",
                    do_not_reuse: !served.reuse,
                },
            )
            .expect("serialises");
            (
                plugin_answer(200, Bytes::from_owner(body)),
                PluginResult::Served,
            )
        }
        Err(e) => {
            let message = format!("keyd: {e}");
            crate::log::warn(format_args!(
                "plugin: refused Swarm secret {} to {who}: {}",
                request.secret_name.escape_debug(),
                message.escape_debug()
            ));
            let answer = GetSecretAnswer {
                value: "",
                err: &message,
                do_not_reuse: true,
            };
            let response = plugin_answer(
                200,
                Bytes::from(serde_json::to_vec(&answer).expect("serialises")),
            );
            (response, PluginResult::Refused)
        }
    }
}
