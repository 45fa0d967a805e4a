//! The local API's routes: status, list, versions, rotate, retire and JWKS, as JSON. Secret
//! values are never served: the JWKS is public data, everything else is names and versions.

use std::sync::Arc;

use serde::Deserialize;

use super::State;
use super::http::{Request, Response};
use crate::rotation;
use crate::store::{Label, SecretRecord};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    selector: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetireBody {
    name: String,
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], expected: &str) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        Response::error(
            400,
            format!("malformed JSON body ({e}); expected {expected}"),
        )
    })
}

fn failure(e: crate::Error) -> Response {
    let status = match &e {
        crate::Error::Lookup(_) | crate::Error::NoSuchVersion { .. } => 404,
        crate::Error::NotRotatable { .. } => 409,
        _ => 500,
    };
    Response::error(status, e.to_string())
}

/// Answers one request from a caller with uid `uid`.
pub async fn handle(state: &Arc<State>, request: &Request, uid: u32) -> Response {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    let actor = format!("keyd api uid={uid}");
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["v1", "health"]) => Response::json(&serde_json::json!({
            "ok": true,
            "version": env!("CARGO_PKG_VERSION"),
        })),
        ("GET", ["v1", "status"]) => match state.home.peek() {
            Ok(data) => Response::json(&rotation::schedule::status(&data, state.clock.now())),
            Err(e) => failure(e.into()),
        },
        ("GET", ["v1", "secrets"]) => match state.home.peek() {
            Ok(data) => {
                let list: Vec<_> = data
                    .stacks
                    .iter()
                    .flat_map(|(stack, rec)| {
                        rec.secrets.iter().filter(|(_, s)| !s.removed).map(move |(name, s)| {
                            serde_json::json!({
                                "stack": stack,
                                "name": name,
                                "kind": s.kind,
                                "version": s.current().map(|v| v.number),
                                "outputs": s.outputs.iter().map(|o| &o.name).collect::<Vec<_>>(),
                            })
                        })
                    })
                    .collect();
                Response::json(&list)
            }
            Err(e) => failure(e.into()),
        },
        ("GET", ["v1", "secrets", stack, name, "versions"]) => match state.home.peek() {
            Ok(data) => match data.find_output(&format!("{stack}/{name}")) {
                Ok((_, _, record, _)) => Response::json(&versions(record)),
                Err(e) => failure(e.into()),
            },
            Err(e) => failure(e.into()),
        },
        ("GET", ["v1", "jwks", stack, name]) => match state.home.peek() {
            Ok(data) => match data.find_output(&format!("{stack}/{name}")) {
                Ok((_, _, record, _)) if record.kind == crate::policy::Kind::Rsa => {
                    let jwks = record
                        .delivered(crate::policy::Part::Jwks)
                        .expect("an rsa secret has a JWKS");
                    Response {
                        status: 200,
                        body: jwks.expose_secret().as_bytes().to_vec(),
                    }
                }
                Ok(_) => Response::error(404, format!("{stack}/{name} is not an rsa secret")),
                Err(e) => failure(e.into()),
            },
            Err(e) => failure(e.into()),
        },
        ("POST", ["v1", "rotate"]) => {
            let body: RotateBody = match parse(&request.body, r#"{"selector": "NAME or KIND"}"#) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let result = state
                .exclusive(move |home, clock| rotation::rotate(home, &body.selector, clock, &actor))
                .await;
            match result {
                Ok(report) => {
                    state.wake.notify_one();
                    Response::json(&report)
                }
                Err(e) => failure(e),
            }
        }
        ("POST", ["v1", "retire"]) => {
            let body: RetireBody = match parse(&request.body, r#"{"name": "NAME"}"#) {
                Ok(b) => b,
                Err(r) => return r,
            };
            match state
                .exclusive(move |home, clock| rotation::retire(home, &body.name, clock, &actor))
                .await
            {
                Ok(report) => Response::json(&report),
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

fn versions(record: &SecretRecord) -> serde_json::Value {
    let versions: Vec<_> = record
        .versions
        .iter()
        .map(|v| {
            serde_json::json!({
                "version": v.number,
                "label": v.label,
                "created": crate::store::format_time(v.created),
                "promoted": v.promoted.map(crate::store::format_time),
                "retired": v.retired.map(crate::store::format_time),
                "fingerprint": v.material.fingerprint(),
                "current": v.label == Some(Label::Current),
            })
        })
        .collect();
    serde_json::json!({ "kind": record.kind, "versions": versions })
}
