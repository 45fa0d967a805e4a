//! keyd's log on stderr. Text by default (`keyd: message`, `keyd: warning: message`), or with
//! `keyd --log-format json` one JSON object a line for log collectors: `time` (RFC 3339 UTC),
//! `level` (`info`, `warning`, `error`), `msg`, and for a secret's work the audit log's fields
//! (`stack`, `secret`, `version`, `step`, `outcome`, `by`, `error`). Nothing logged holds a
//! value: callers pass names, versions and errors that never quote one.

use std::fmt;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};

/// Whether lines are JSON objects (set once at start-up, before any thread logs).
static JSON: AtomicBool = AtomicBool::new(false);

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `keyd: message`, for a person reading a terminal or `docker logs`.
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// A line's severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Work done, state reached.
    Info,
    /// Something an operator should look at; work goes on.
    Warning,
    /// Work that failed.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// Chooses the format for the rest of the process.
pub fn set_format(format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
}

/// Whether lines are JSON objects.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Logs an informational line.
pub fn info(msg: fmt::Arguments<'_>) {
    line(Level::Info, msg, Map::new());
}

/// Logs a warning.
pub fn warn(msg: fmt::Arguments<'_>) {
    line(Level::Warning, msg, Map::new());
}

/// Logs an error.
pub fn error(msg: fmt::Arguments<'_>) {
    line(Level::Error, msg, Map::new());
}

/// Logs one line with `fields` beside the message (in JSON; text shows the message only, which
/// names what the fields hold).
pub fn line(level: Level, msg: fmt::Arguments<'_>, fields: Map<String, Value>) {
    let text = if is_json() {
        json_line(level, &msg.to_string(), fields)
    } else if level == Level::Warning {
        format!("keyd: warning: {msg}\n")
    } else {
        format!("keyd: {msg}\n")
    };
    // One write per line, so lines of concurrent threads never interleave.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Logs a record that is already a JSON object (an audit line) as one line, in JSON only:
/// text logs leave such records to the audit log they come from.
pub fn record(level: Level, msg: &str, fields: Value) {
    if !is_json() {
        return;
    }
    let Value::Object(fields) = fields else {
        return;
    };
    let text = json_line(level, msg, fields);
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `{"time":…,"level":…,"msg":…, fields…}` and a newline. A field named like one of the three
/// first keeps the line's own value.
fn json_line(level: Level, msg: &str, fields: Map<String, Value>) -> String {
    let mut object = Map::with_capacity(fields.len() + 3);
    object.insert("time".into(), Value::String(now_rfc3339()));
    object.insert("level".into(), Value::String(level.as_str().into()));
    object.insert("msg".into(), Value::String(msg.into()));
    for (key, value) in fields {
        object.entry(key).or_insert(value);
    }
    let mut text = Value::Object(object).to_string();
    text.push('\n');
    text
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_one_object_and_its_own_time_level_and_message_win() {
        let mut fields = Map::new();
        fields.insert("stack".into(), "flowkit".into());
        fields.insert("msg".into(), "a field cannot replace the message".into());
        let text = json_line(Level::Warning, "line one\nline two", fields);
        assert!(text.ends_with('\n'));
        assert_eq!(
            text.matches('\n').count(),
            1,
            "a message's newline is escaped: {text}"
        );
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["level"], "warning");
        assert_eq!(value["msg"], "line one\nline two");
        assert_eq!(value["stack"], "flowkit");
        let time = value["time"].as_str().unwrap();
        assert!(time.len() >= 20 && time.ends_with('Z'), "{time}");
    }
}
