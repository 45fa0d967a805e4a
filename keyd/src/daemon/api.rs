//! The local API's routes: status, list, versions, rotate, retire and JWKS, as JSON. Secret
//! values are never served: the JWKS is public data, everything else is names and versions.

use std::future::Future;
use std::sync::Arc;

use serde::Deserialize;

use super::State;
use super::http::{Peer, Request, Response, Routes};
use crate::ops::{self, query, query::Read};
use crate::wire::{Health, RetireRequest, RotateRequest, SecretEntry};

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], expected: &str) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        Response::error(
            400,
            format!("malformed JSON body ({e}); expected {expected}"),
        )
    })
}

fn failure(e: crate::error::Error) -> Response {
    use crate::error::Error;
    let status = match &e {
        Error::Lookup(_) | Error::NoSuchVersion { .. } => 404,
        Error::NotRotatable { .. } => 409,
        _ => 500,
    };
    Response::error(status, e.to_string())
}

/// The API socket's routes.
pub(super) struct ApiRoutes(pub Arc<State>);

impl Routes for ApiRoutes {
    fn answer(&self, request: Request, peer: Peer) -> impl Future<Output = Response> + Send {
        let state = self.0.clone();
        async move {
            match peer {
                Peer::Uid(uid) => handle(&state, &request, uid).await,
                // The API is served on its Unix socket only; a caller without a uid is nobody
                // it could authorise.
                Peer::Address(_) => {
                    Response::error(403, "the API is served on its Unix socket only")
                }
            }
        }
    }

    fn is_cheap(&self, method: &str, path: &str) -> bool {
        method == "GET" && path == "/v1/health"
    }
}

/// Answers one request from a caller with uid `uid`.
pub async fn handle(state: &Arc<State>, request: &Request, uid: u32) -> Response {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let actor = format!("keyd api uid={uid}");
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["v1", "health"]) => Response::json(&Health {
            ok: true,
            version: env!("CARGO_PKG_VERSION").into(),
        }),
        ("GET", ["v1", "status"]) => match state.read(State::status).await {
            Ok(status) => Response::json(&status),
            Err(e) => failure(e),
        },
        ("GET", ["v1", "secrets"]) => {
            match state
                .read(|state| query::list(&state.home, Read::Unlocked))
                .await
            {
                Ok(listed) => {
                    let list: Vec<SecretEntry> = listed
                        .into_iter()
                        .filter(|s| !s.removed)
                        .map(SecretEntry::from)
                        .collect();
                    Response::json(&list)
                }
                Err(e) => failure(e),
            }
        }
        ("GET", ["v1", "secrets", stack, name, "versions"]) => {
            let selector = format!("{stack}/{name}");
            match state
                .read(move |state| query::versions(&state.home, Read::Unlocked, &selector))
                .await
            {
                Ok(versions) => Response::json(&versions),
                Err(e) => failure(e),
            }
        }
        ("GET", ["v1", "jwks", stack, name]) => {
            let selector = format!("{stack}/{name}");
            match state
                .read(move |state| query::jwks(&state.home, Read::Unlocked, &selector))
                .await
            {
                // A JWKS is public data.
                Ok(Some(jwks)) => Response::bytes(200, jwks.into_bytes()),
                Ok(None) => Response::error(404, format!("{stack}/{name} is not an rsa secret")),
                Err(e) => failure(e),
            }
        }
        ("POST", ["v1", "rotate"]) => {
            let body: RotateRequest = match parse(&request.body, r#"{"selector": "NAME or KIND"}"#)
            {
                Ok(b) => b,
                Err(r) => return r,
            };
            let by = actor.clone();
            let result = state
                .exclusive_notified(move |home, clock| {
                    ops::rotate(home, &body.selector, body.force, clock, &by)
                })
                .await;
            match result {
                Ok(report) => {
                    super::log_report(&report, &actor);
                    state.metrics.counters.count_report(&report);
                    state.wake.notify_one();
                    Response::json(&report)
                }
                Err(e) => failure(e),
            }
        }
        ("POST", ["v1", "retire"]) => {
            let body: RetireRequest = match parse(&request.body, r#"{"name": "NAME"}"#) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let by = actor.clone();
            match state
                .exclusive_notified(move |home, clock| ops::retire(home, &body.name, clock, &by))
                .await
            {
                Ok(report) => {
                    super::log_report(&report, &actor);
                    state.metrics.counters.count_report(&report);
                    Response::json(&report)
                }
                Err(e) => failure(e),
            }
        }
        (
            _,
            [
                "v1",
                "health" | "status" | "secrets" | "rotate" | "retire" | "jwks",
                ..,
            ],
        ) => Response::error(
            405,
            format!("{} is not allowed on {}", request.method, request.path),
        ),
        _ => Response::error(404, format!("no route {} {}", request.method, request.path)),
    }
}
