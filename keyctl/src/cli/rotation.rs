//! The commands that rotate: `rotate` (a secret, a kind, or `--all`) and `retire`, sent to
//! the daemon when one answers on its socket, else run here on the store under its lock; the
//! same report is printed either way, and a failed step exits 1.

use std::path::{Path, PathBuf};

use keyd::Error;
use keyd::clock::SystemClock;
use keyd::ops::actor;
use keyd::ops::query::{self, Read};
use keyd::policy::Kind;
use keyd::store::Home;
use keyd::wire::{ErrorAnswer, RetireRequest, RotateRequest};

use super::{Failure, write_stdout};
use crate::output;

/// `keyctl rotate SELECTOR`.
pub(super) fn rotate(
    home: Home,
    socket: Option<&Path>,
    selector: String,
    force: bool,
    yes: bool,
    json: bool,
) -> Result<(), Failure> {
    if !yes && on_terminal() {
        confirm(&keyd::ops::rotate_cautions(&home, &selector)?)?;
    }
    let body = serde_json::to_value(RotateRequest {
        selector: selector.clone(),
        force,
    })
    .expect("a request serialises");
    rotation_command(home, socket, "/v1/rotate", &body, json, |home| {
        keyd::ops::rotate(home, &selector, force, &SystemClock, &actor("keyctl"))
    })
}

/// `keyctl retire NAME`.
pub(super) fn retire(
    home: Home,
    socket: Option<&Path>,
    name: String,
    json: bool,
) -> Result<(), Failure> {
    let body =
        serde_json::to_value(RetireRequest { name: name.clone() }).expect("a request serialises");
    rotation_command(home, socket, "/v1/retire", &body, json, |home| {
        keyd::ops::retire(home, &name, &SystemClock, &actor("keyctl"))
    })
}

/// Whether a person is at the keyboard: stdin and stderr are both terminals. Scripts, cron
/// and pipes are never asked.
fn on_terminal() -> bool {
    use std::io::IsTerminal as _;
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Shows `cautions` on stderr and asks to go on; anything but `y` or `yes` declines, and a
/// declined rotation changes nothing (exit 1). No cautions: nothing is asked.
fn confirm(cautions: &[String]) -> Result<(), Failure> {
    if cautions.is_empty() {
        return Ok(());
    }
    use std::io::{BufRead as _, Write as _};
    let mut err = std::io::stderr().lock();
    for caution in cautions {
        let _ = writeln!(err, "keyctl: {caution}");
    }
    let _ = write!(err, "Rotate? [y/N] ");
    let _ = err.flush();
    drop(err);
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Failure::new(
            1,
            "not rotated: not confirmed",
            Some("nothing changed; pass --yes to rotate without being asked".to_owned()),
        )),
    }
}

/// The daemon's API socket: `--socket`, else the home's `keyd.sock`.
pub(super) fn socket_path(home: &Home, socket: Option<&Path>) -> PathBuf {
    socket.map_or_else(|| home.dir().join("keyd.sock"), Path::to_owned)
}

/// Sends a request to the daemon when one answers on the socket; `None` when none runs, so
/// the caller does the same work on the store under its lock.
pub(super) fn via_daemon<T: serde::de::DeserializeOwned>(
    home: &Home,
    socket: Option<&Path>,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<Option<T>, Failure> {
    let socket = socket_path(home, socket);
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
    let (report, through) = match via_daemon(&home, socket, "POST", path, Some(body))? {
        Some(report) => (report, Some(socket_path(&home, socket))),
        None => (local(&home)?, None),
    };
    let mut out = String::new();
    output::rotation(&mut out, &report, through.as_deref(), json);
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
pub(super) fn rotate_all(
    home: Home,
    socket: Option<&Path>,
    force: bool,
    yes: bool,
    json: bool,
) -> Result<(), Failure> {
    let listed = query::list(&home, Read::Locked)?;
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| k.is_random())
        .filter(|k| listed.iter().any(|s| s.kind == *k && !s.removed))
        .collect();
    drop(listed);
    if !yes && on_terminal() {
        let mut cautions = Vec::new();
        for kind in &kinds {
            cautions.extend(keyd::ops::rotate_cautions(&home, kind.as_str())?);
        }
        confirm(&cautions)?;
    }
    let mut combined = keyd::rotation::RotationReport::default();
    let mut through = None;
    for kind in kinds {
        let selector = kind.as_str().to_owned();
        let body = serde_json::to_value(RotateRequest {
            selector: selector.clone(),
            force,
        })
        .expect("a request serialises");
        let report = match via_daemon(&home, socket, "POST", "/v1/rotate", Some(&body))? {
            Some(report) => {
                through = Some(socket_path(&home, socket));
                report
            }
            None => keyd::ops::rotate(&home, &selector, force, &SystemClock, &actor("keyctl"))?,
        };
        let keyd::rotation::RotationReport {
            mut outcomes,
            deliveries,
            unscheduled: _,
        } = report;
        combined.outcomes.append(&mut outcomes);
        for d in deliveries {
            combined.add_delivery(d);
        }
    }
    let mut out = String::new();
    output::rotation(&mut out, &combined, through.as_deref(), json);
    write_stdout(out.as_bytes())?;
    rotation_exit(&combined)
}
