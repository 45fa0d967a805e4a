//! `keyctl plan rotate|retire SELECTOR`: what the operation would do (`keyd::ops::plan`), as a
//! block per secret or as JSON.

use std::fmt::Write as _;

use keyd::ops::plan::{Operation, Plan, SecretPlan};
use keyd::store::Home;

use super::{Failure, write_stdout};

pub(super) fn plan(
    home: Home,
    operation: Operation,
    selector: &str,
    json: bool,
) -> Result<(), Failure> {
    let plan = keyd::ops::plan::plan(&home, operation, selector)?;
    let out = if json {
        let mut text = serde_json::to_string_pretty(&plan).expect("a plan serialises");
        text.push('\n');
        text
    } else {
        render(&plan)
    };
    write_stdout(out.as_bytes())
}

fn render(plan: &Plan) -> String {
    let mut out = String::new();
    for s in &plan.secrets {
        secret(&mut out, plan.operation, s);
    }
    let _ = writeln!(out, "Nothing was changed: this is a plan.");
    out
}

fn secret(out: &mut String, operation: Operation, s: &SecretPlan) {
    let head = format!("{}/{} ({})", s.stack, s.name, s.kind);
    let what = match s.action.as_str() {
        "rotate" => format!("rotate v{} -> v{}", s.from_version, s.to_version),
        "resume" => format!(
            "finish the rotation in flight v{} -> v{} (its value is already chosen)",
            s.from_version, s.to_version
        ),
        "retire" => format!(
            "retire {}; v{} alone stays delivered",
            versions(&s.retires),
            s.to_version
        ),
        _ => format!("nothing to retire (v{} alone is delivered)", s.from_version),
    };
    let _ = writeln!(out, "{head}: {what}");
    if s.action == "nothing" {
        return;
    }
    let line = |out: &mut String, label: &str, items: &[String]| {
        if !items.is_empty() {
            let _ = writeln!(out, "  {label:<16}{}", items.join(", "));
        }
    };
    line(out, "outputs", &s.outputs);
    line(out, "templates", &s.templates);
    for f in &s.files {
        line(
            out,
            &format!("files {}", f.location.display()),
            &[f.names.join(", ")],
        );
    }
    for e in &s.env_files {
        line(
            out,
            &format!("env file {}", e.location.display()),
            &[e.names.join(", ")],
        );
    }
    let swarm = match operation {
        Operation::Rotate => "swarm: create",
        Operation::Retire => "swarm: remove",
    };
    line(out, swarm, &s.swarm_secrets);
    line(out, "services rolled", &s.services);
    line(out, "plugin restarts", &s.plugin_services);
    if let Some(t) = &s.target {
        line(
            out,
            "target",
            &[format!(
                "{} ({}, {}): {}",
                t.name,
                t.r#type,
                t.strategy,
                t.logins.join(", ")
            )],
        );
    }
    line(out, "hooks", &s.hooks);
    if operation == Operation::Rotate {
        line(
            out,
            "retire later",
            &[format!(
                "{} (at the end of the overlap, or `keyctl retire {}`)",
                versions(&s.retires),
                s.name
            )],
        );
    }
    for u in &s.unknown {
        line(out, "not known", std::slice::from_ref(u));
    }
}

fn versions(numbers: &[u64]) -> String {
    if numbers.is_empty() {
        return "nothing".into();
    }
    numbers
        .iter()
        .map(|n| format!("v{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
