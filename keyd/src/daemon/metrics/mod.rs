//! `keyd --metrics ADDR`: `GET /metrics` in Prometheus' text format (0.0.4), served on a TCP
//! listener by the daemon's one HTTP server (`http.rs`, with the API's limits). Read-only and
//! without values: names, kinds, versions, times and counts, for the secrets `keyctl list`
//! shows. A TCP peer has no uid, so no peer rule applies: bind it to loopback or a private
//! network (docs/metrics.md).
//!
//! A scrape reads the store's facts ([`facts`], cached per store version, computed on the
//! blocking pool), the daemon's [`counters`], and the last target probe; it renders on the
//! blocking pool too, so a scrape of 10,000 secrets never holds up the runtime thread.

pub mod counters;
pub mod facts;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;

use self::counters::{BUCKETS, Counters, PLUGIN_RESULTS, RESULTS, STEPS, Snapshot};
use self::facts::{Facts, FactsCache};
use super::State;
use super::http::{Peer, Request, Response, Routes};

/// The content type of Prometheus' text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often each target is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// How long a probe's connect (and the host name's resolution) may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the daemon keeps for `/metrics`: its counters, the facts of the last store version
/// scraped, and the last probe of each target. Part of [`State`]; the counters are updated
/// whether or not `--metrics` is given (an atomic add each).
#[derive(Default)]
pub struct Metrics {
    /// What the daemon counts.
    pub counters: Counters,
    facts: FactsCache,
    targets: std::sync::Mutex<Vec<TargetUp>>,
}

/// One target's last probe.
#[derive(Clone, Debug)]
struct TargetUp {
    stack: String,
    target: String,
    up: bool,
}

/// The metrics listener's one route.
pub(super) struct MetricsRoutes(pub Arc<State>);

impl Routes for MetricsRoutes {
    fn answer(&self, request: Request, _peer: Peer) -> impl Future<Output = Response> + Send {
        let state = self.0.clone();
        async move {
            match (request.method.as_str(), request.path.as_str()) {
                ("GET", "/metrics") => scrape(&state).await,
                (_, "/metrics") => text(405, format!("{} is not allowed", request.method)),
                _ => text(
                    404,
                    "keyd serves /metrics here and nothing else\n".to_owned(),
                ),
            }
        }
    }

    fn is_cheap(&self, _method: &str, _path: &str) -> bool {
        false
    }
}

fn text(status: u16, body: String) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: Bytes::from(body),
    }
}

async fn scrape(state: &Arc<State>) -> Response {
    let facts = match state.read(State::metric_facts).await {
        Ok(facts) => facts,
        Err(e) => return text(500, format!("keyd: cannot read the store: {e}\n")),
    };
    let counters = state.metrics.counters.snapshot();
    let targets = state
        .metrics
        .targets
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let now = state.clock.now();
    let rendered =
        tokio::task::spawn_blocking(move || render(&facts, &counters, &targets, now)).await;
    match rendered {
        Ok(body) => Response {
            status: 200,
            content_type: CONTENT_TYPE,
            body: Bytes::from(body),
        },
        Err(_) => text(500, "keyd: rendering the metrics failed\n".to_owned()),
    }
}

/// Probes every target the policies name, now and every [`PROBE_INTERVAL`], each on the
/// blocking pool within [`PROBE_TIMEOUT`] (and a runtime timeout beyond it, should a probe
/// outlast its own), and keeps the results for the next scrapes.
pub(super) async fn probe_targets(state: Arc<State>) {
    loop {
        match state.read(State::metric_facts).await {
            Ok(facts) => {
                let mut probes = Vec::new();
                for stack in &facts.stacks {
                    for (target, address) in &stack.targets {
                        let Some((host, port)) = address.clone() else {
                            continue;
                        };
                        let probe = tokio::task::spawn_blocking(move || {
                            crate::targets::probe::reachable(&host, port, PROBE_TIMEOUT)
                        });
                        probes.push((stack.stack.clone(), target.clone(), probe));
                    }
                }
                let mut results = Vec::new();
                for (stack, target, probe) in probes {
                    let up = tokio::time::timeout(PROBE_TIMEOUT + Duration::from_secs(1), probe)
                        .await
                        .is_ok_and(|joined| joined.unwrap_or(false));
                    results.push(TargetUp { stack, target, up });
                }
                *state
                    .metrics
                    .targets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = results;
            }
            Err(e) => crate::log::warn(format_args!(
                "metrics: cannot read the store to probe targets: {e}"
            )),
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Appends `value` escaped for a label: backslash, double quote and line feed, as the text
/// format asks.
fn push_escaped(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample: `name{labels} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(label);
            out.push_str("=\"");
            push_escaped(out, value);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A per-secret gauge's value for a secret at a time; none when the secret has no such value.
type SecretValue = fn(&facts::SecretFacts, i64) -> Option<i64>;

/// The whole exposition: facts of the store, counters, target probes, at `now`.
fn render(facts: &Facts, counters: &Snapshot, targets: &[TargetUp], now: i64) -> String {
    let mut out = String::with_capacity(256 + facts.secrets.len() * 600);
    family(
        &mut out,
        "keyd_build_info",
        "gauge",
        "The keyd build serving these metrics (always 1).",
    );
    sample(
        &mut out,
        "keyd_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    family(
        &mut out,
        "keyd_store_generation",
        "gauge",
        "The generation of the store these facts were read from.",
    );
    sample(&mut out, "keyd_store_generation", &[], facts.generation);

    // One family at a time over every secret (the format wants a family's samples together).
    let per_secret: [(&str, &str, SecretValue); 7] = [
        (
            "keyd_secret_version",
            "The secret's current version.",
            |s, _| s.version.and_then(|v| i64::try_from(v).ok()),
        ),
        (
            "keyd_secret_age_seconds",
            "Seconds since the current version was made current.",
            |s, now| s.since.map(|t| now - t),
        ),
        (
            "keyd_secret_next_rotation_timestamp_seconds",
            "When the next scheduled rotation is due (Unix time); only for secrets the policy rotates.",
            |s, _| s.next_rotation,
        ),
        (
            "keyd_certificate_expiry_timestamp_seconds",
            "When the current certificate of a tls secret expires (Unix time).",
            |s, _| s.not_after,
        ),
        (
            "keyd_rotation_failed",
            "1 while a rotation of the secret has failed at a step and waits to be retried, else 0.",
            |s, _| Some(i64::from(s.failed_step.is_some())),
        ),
        (
            "keyd_rekey_owed",
            "1 while the secret's rekey hook has not succeeded (its previous version is kept), else 0.",
            |s, _| Some(i64::from(s.rekey_owed)),
        ),
        (
            "keyd_rotation_failed_step_info",
            "The step a failed rotation stopped at (1 for that step; only while one has failed).",
            |s, _| s.failed_step.map(|_| 1),
        ),
    ];
    for (name, help, value_of) in per_secret {
        family(&mut out, name, "gauge", help);
        for s in &facts.secrets {
            let Some(value) = value_of(s, now) else {
                continue;
            };
            let labels = [
                ("stack", s.stack.as_str()),
                ("name", s.name.as_str()),
                ("kind", s.kind.as_str()),
                ("step", s.failed_step.map_or("", counters::step_label)),
            ];
            // Only the failed step's family is labelled by step.
            let labelled = if name == "keyd_rotation_failed_step_info" {
                &labels[..]
            } else {
                &labels[..3]
            };
            sample(&mut out, name, labelled, value);
        }
    }

    family(
        &mut out,
        "keyd_reload_owed",
        "gauge",
        "1 while the stack's files sink reload hook has failed and is owed, else 0.",
    );
    for stack in &facts.stacks {
        sample(
            &mut out,
            "keyd_reload_owed",
            &[("stack", &stack.stack)],
            i64::from(stack.reload_owed),
        );
    }
    family(
        &mut out,
        "keyd_target_up",
        "gauge",
        "1 when the target's host accepted a TCP connection at the last probe (every 30 s), else 0.",
    );
    for t in targets {
        sample(
            &mut out,
            "keyd_target_up",
            &[("stack", &t.stack), ("target", &t.target)],
            i64::from(t.up),
        );
    }

    family(
        &mut out,
        "keyd_rotations_total",
        "counter",
        "Rotation and retire outcomes since keyd started, by result.",
    );
    for ((_, result), count) in RESULTS.iter().zip(counters.rotations) {
        sample(
            &mut out,
            "keyd_rotations_total",
            &[("result", result)],
            count,
        );
    }
    family(
        &mut out,
        "keyd_rotation_step_failures_total",
        "counter",
        "Failed rotation steps since keyd started, by step (rekey: the rekey hook).",
    );
    for (step, count) in STEPS.iter().zip(counters.step_failures) {
        sample(
            &mut out,
            "keyd_rotation_step_failures_total",
            &[("step", step)],
            count,
        );
    }
    family(
        &mut out,
        "keyd_plugin_requests_total",
        "counter",
        "GetSecret requests to the Docker secret-provider plugin since keyd started, by result.",
    );
    for (result, count) in PLUGIN_RESULTS.iter().zip(counters.plugin_requests) {
        sample(
            &mut out,
            "keyd_plugin_requests_total",
            &[("result", result)],
            count,
        );
    }
    let histogram = "keyd_plugin_get_secret_duration_seconds";
    family(
        &mut out,
        histogram,
        "histogram",
        "Time to answer a GetSecret request, store read included.",
    );
    let bucket = format!("{histogram}_bucket");
    for (bound, count) in BUCKETS.iter().zip(counters.get_secret_cumulative) {
        sample(&mut out, &bucket, &[("le", &bound.to_string())], count);
    }
    let total = counters.get_secret_cumulative[BUCKETS.len()];
    sample(&mut out, &bucket, &[("le", "+Inf")], total);
    sample(
        &mut out,
        &format!("{histogram}_sum"),
        &[],
        counters.get_secret_seconds,
    );
    sample(&mut out, &format!("{histogram}_count"), &[], total);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_asks() {
        let mut out = String::new();
        sample(&mut out, "m", &[("name", "a\"b\\c\nd")], 1);
        assert_eq!(out, "m{name=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn an_empty_store_renders_every_family_once() {
        let out = render(&Facts::default(), &Snapshot::default(), &[], 0);
        for name in [
            "keyd_secret_version",
            "keyd_rotations_total",
            "keyd_target_up",
            "keyd_build_info",
        ] {
            assert_eq!(out.matches(&format!("# TYPE {name} ")).count(), 1, "{name}");
        }
        assert!(out.contains("keyd_plugin_get_secret_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
    }
}
