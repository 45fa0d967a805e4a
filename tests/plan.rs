//! `keyctl plan rotate|retire`: what it says the operation will do is what the operation then
//! does (the same outputs written to the same files and env file, the same versions retired),
//! and planning changes nothing.

use std::collections::BTreeSet;
use std::path::Path;

use keyd_tests::{TempDir, keyctl, ok, quickstart, snapshot};
use serde_json::Value;

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON on stdout")
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// Every output a report's deliveries wrote through the sink `kind`, and where.
fn written(report: &Value, kind: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut outputs = BTreeSet::new();
    let mut places = BTreeSet::new();
    for d in report["deliveries"].as_array().unwrap() {
        if d["sink"] == kind && !d["written"].as_array().unwrap().is_empty() {
            outputs.extend(names(&d["written"]));
            places.insert(d["location"].as_str().unwrap().to_owned());
        }
    }
    (outputs, places)
}

/// What a plan says one secret's operation writes through `files` or `env_files`.
fn planned(plan: &Value, field: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut outputs = BTreeSet::new();
    let mut places = BTreeSet::new();
    for s in plan["secrets"].as_array().unwrap() {
        for w in s[field].as_array().unwrap() {
            outputs.extend(names(&w["names"]));
            places.insert(w["location"].as_str().unwrap().to_owned());
        }
    }
    (outputs, places)
}

fn policy(path: &Path, out: &Path, env: &Path) {
    std::fs::write(
        path,
        format!(
            r#"[stack]
name = "planned"

[sinks.files]
dir = "{}"

[sinks.envfile]
path = "{}"

[secrets.DB_PASSWORD]
kind = "password"
rekey = {{ command = ["true"] }}

[secrets.DB_URL]
kind = "template"
template = "postgres://app:{{DB_PASSWORD|url}}@db/app"

[secrets.DB_URL_RO]
kind = "template"
template = "{{DB_URL}}?options=readonly"

[secrets.SESSION_KEY]
kind = "token"
"#,
            out.display(),
            env.display()
        ),
    )
    .unwrap();
}

#[test]
fn a_plan_names_what_the_rotation_and_the_retire_then_do_and_changes_nothing() {
    let tmp = TempDir::new("plan");
    let (home, out, env, policy_file) = (
        tmp.join("home"),
        tmp.join("out"),
        tmp.join("app.env"),
        tmp.join("p.toml"),
    );
    policy(&policy_file, &out, &env);
    quickstart(&home, &policy_file, &out);
    let store = std::fs::read(home.join("store.age")).unwrap();
    let files = snapshot(&out);
    let env_before = std::fs::read(&env).unwrap();

    let plan = json(&ok(keyctl(&home).args([
        "plan",
        "rotate",
        "DB_PASSWORD",
        "--json",
    ])));
    let human =
        String::from_utf8(ok(keyctl(&home).args(["plan", "rotate", "DB_PASSWORD"]))).unwrap();
    // Planning wrote nothing, ran nothing.
    assert_eq!(std::fs::read(home.join("store.age")).unwrap(), store);
    assert_eq!(snapshot(&out), files);
    assert_eq!(std::fs::read(&env).unwrap(), env_before);

    let secret = &plan["secrets"][0];
    assert_eq!(secret["action"], "rotate");
    assert_eq!(
        (
            secret["from_version"].as_u64(),
            secret["to_version"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // The template made from a template is re-rendered too; the unrelated token is not.
    assert_eq!(
        names(&secret["templates"]),
        BTreeSet::from(["DB_URL".into(), "DB_URL_RO".into()])
    );
    assert_eq!(
        names(&secret["hooks"]),
        BTreeSet::from(["rekey: true".to_owned()])
    );
    assert!(human.contains("rotate v1 -> v2"), "{human}");
    assert!(human.contains("DB_URL_RO"), "{human}");

    let rotated = json(&ok(keyctl(&home).args([
        "rotate",
        "DB_PASSWORD",
        "--force",
        "--json",
    ])));
    assert_eq!(
        written(&rotated, "files"),
        planned(&plan, "files"),
        "the plan {plan:#} and the rotation {rotated:#} differ"
    );
    // The env file is rewritten whole: the variables whose lines changed are the plan's.
    let (env_planned, env_places) = planned(&plan, "env_files");
    assert_eq!(written(&rotated, "envfile").1, env_places);
    let env_after = std::fs::read_to_string(&env).unwrap();
    let before = String::from_utf8(env_before).unwrap();
    let changed: BTreeSet<String> = env_after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_owned()))
        .collect();
    assert_eq!(changed, env_planned);

    let plan = json(&ok(keyctl(&home).args([
        "plan",
        "retire",
        "DB_PASSWORD",
        "--json",
    ])));
    let secret = &plan["secrets"][0];
    assert_eq!(secret["action"], "retire");
    assert_eq!(secret["retires"], serde_json::json!([1]));
    let retired = json(&ok(keyctl(&home).args(["retire", "DB_PASSWORD", "--json"])));
    let outcome = &retired["outcomes"][0];
    assert_eq!(outcome["result"], "retired", "{retired:#}");
    // Once retired, there is nothing left to plan.
    let plan = json(&ok(keyctl(&home).args([
        "plan",
        "retire",
        "DB_PASSWORD",
        "--json",
    ])));
    assert_eq!(plan["secrets"][0]["action"], "nothing");
}
