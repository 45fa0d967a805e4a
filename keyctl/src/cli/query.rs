//! The commands that read the store: `list`, `show`, `history` and `status`, each one call of
//! `keyd::ops::query` under the store's shared lock (`status` asks a running daemon first).

use std::path::Path;

use keyd::clock::{Clock as _, SystemClock};
use keyd::ops::query::{self, Read};
use keyd::store::Home;

use super::rotation::{socket_path, via_daemon};
use super::{Failure, write_stdout};
use crate::output;

pub(super) fn list(home: Home, json: bool) -> Result<(), Failure> {
    let listed = query::list(&home, Read::Locked)?;
    let mut out = String::new();
    output::list(&mut out, &listed, json);
    write_stdout(out.as_bytes())
}

pub(super) fn show(home: Home, name: &str, version: Option<u64>) -> Result<(), Failure> {
    let value = query::show(&home, Read::Locked, name, version)?
        .ok_or_else(|| Failure::new(5, format!("{name} has no current value"), None))?;
    let value = value.expose().as_bytes();
    write_stdout(value)?;
    // Exactly the delivered bytes, except on a terminal: there a value without a final newline
    // would run into the shell's next prompt.
    if !value.ends_with(b"\n") && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        write_stdout(b"\n")?;
    }
    Ok(())
}

pub(super) fn history(home: Home, name: &str, json: bool) -> Result<(), Failure> {
    let history = query::history(&home, Read::Locked, name)?;
    let mut out = String::new();
    output::history(&mut out, &history, json);
    write_stdout(out.as_bytes())
}

pub(super) fn status(home: Home, socket: Option<&Path>, json: bool) -> Result<(), Failure> {
    let (status, through) = match via_daemon(&home, socket, "GET", "/v1/status", None)? {
        Some(status) => (status, Some(socket_path(&home, socket))),
        None => (query::status(&home, Read::Locked, SystemClock.now())?, None),
    };
    let mut out = String::new();
    // A remote store says where it is and whether it answers first (the file store's status
    // reads as it always has); `keyctl store info --json` gives the same to scripts.
    if !json && home.remote().is_some() {
        output::store_info(&mut out, &keyd::ops::store_info(&home), false);
        out.push('\n');
    }
    output::status(&mut out, &status, json);
    if let Some(socket) = through.filter(|_| !json) {
        out.push_str(&format!("(from keyd at {})\n", socket.display()));
    }
    write_stdout(out.as_bytes())
}

/// `keyctl swarm env [--stack STACK]`.
pub(super) fn swarm_env(home: Home, stack: Option<&str>, json: bool) -> Result<(), Failure> {
    let names = keyd::ops::query::swarm_names(&home, Read::Locked, stack)?;
    let mut out = String::new();
    output::swarm_env(&mut out, &names, json);
    write_stdout(out.as_bytes())
}

/// `keyctl check`: one line, and the exit code a monitoring plugin gives (0 ok, 1 warning,
/// 2 critical, 3 unknown).
pub(super) fn check(home: Home, socket: Option<&Path>, json: bool) -> Result<(), Failure> {
    use keyd::ops::check::{Finding, Severity};
    let mut report = keyd::ops::check::check(&home, SystemClock.now());
    // A keyd configured for this home (its socket is there) that does not answer schedules
    // nothing: as bad as a failed rotation.
    let socket = socket.map_or_else(|| home.dir().join("keyd.sock"), Path::to_owned);
    if socket.exists() && keyd::daemon::client::connect(&socket).is_none() {
        report.findings.insert(
            0,
            Finding {
                severity: Severity::Critical,
                subject: socket.display().to_string(),
                what: "no keyd answers on this socket".into(),
            },
        );
        report.severity = report.severity.max(Severity::Critical);
    }
    let mut out = String::new();
    output::check(&mut out, &report, json);
    write_stdout(out.as_bytes())?;
    match report.severity {
        Severity::Ok => Ok(()),
        severity => Err(Failure::silent(severity as u8)),
    }
}
