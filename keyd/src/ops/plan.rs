//! `keyctl plan rotate|retire SELECTOR`: what the operation would do, worked out from the
//! store and its stored policies without doing any of it (no lock taken for writing, nothing
//! written, no hook run, no target or sink touched; the Docker engine is only asked which
//! services use a secret, when a stack has a Swarm sink).

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::rotate::select;
use crate::error::Error;
use crate::material::template::references;
use crate::policy::{
    KindSpec, LoginStrategy, Policy, RedisMode, ReloadHook, SecretTarget, SinkSpec,
};
use crate::store::{Home, Label, SecretRecord, StackRecord};

/// The operation planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `keyctl rotate`.
    Rotate,
    /// `keyctl retire`.
    Retire,
}

/// What the operation would do to the secrets a selector names.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The operation.
    pub operation: Operation,
    /// One entry per secret selected.
    pub secrets: Vec<SecretPlan>,
}

/// What would happen to one secret (and to the values made from it).
#[derive(Debug, Serialize)]
pub struct SecretPlan {
    /// The stack.
    pub stack: String,
    /// The secret.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// `rotate` (a new version), `resume` (a rotation in flight is finished with the value
    /// already chosen), `retire`, or `nothing` (nothing to retire).
    pub action: String,
    /// Current version now.
    pub from_version: u64,
    /// The version consumers get (rotate), or the one left delivered (retire).
    pub to_version: u64,
    /// Versions retire stops delivering (retire), or that a later retire would (rotate).
    pub retires: Vec<u64>,
    /// Every output whose value changes, this secret's and those of templates made from it.
    pub outputs: Vec<String>,
    /// Templates re-rendered because they name one of those outputs.
    pub templates: Vec<String>,
    /// Files written, by directory.
    pub files: Vec<Written>,
    /// Env files rewritten, with the variables that change in each.
    pub env_files: Vec<Written>,
    /// Swarm secrets created (rotate) or removed once no service uses them (retire).
    pub swarm_secrets: Vec<String>,
    /// Swarm services updated to the new secrets (rotate): from the engine, when it answers.
    pub services: Vec<String>,
    /// Plugin-backed services whose tasks are restarted to read the new value.
    pub plugin_services: Vec<String>,
    /// The target whose login changes, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetPlan>,
    /// Hooks run: a files sink's reload hook, the secret's rekey hook.
    pub hooks: Vec<String>,
    /// What could not be worked out (the engine did not answer, a stored policy does not
    /// parse): the plan is incomplete there.
    pub unknown: Vec<String>,
}

/// Where outputs are written.
#[derive(Debug, Serialize)]
pub struct Written {
    /// The directory or env file.
    pub location: PathBuf,
    /// The output names written there.
    pub names: Vec<String>,
}

/// A target's part in the plan.
#[derive(Debug, Serialize)]
pub struct TargetPlan {
    /// The target's name in the policy.
    pub name: String,
    /// `postgres`, `mysql`, `redis`.
    pub r#type: String,
    /// `single`, `alternating`, `acl`, `requirepass`.
    pub strategy: String,
    /// The login(s) whose password is set (rotate) or whose old password stops working
    /// (retire).
    pub logins: Vec<String>,
}

/// Every service by name, with the names of the Swarm secrets it uses.
type ServiceSecrets = Vec<(String, BTreeSet<String>)>;

/// How long the engine may take to say which services use a secret.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(5);

/// Plans `operation` on every secret `selector` names (as `keyctl rotate` selects them).
pub fn plan(home: &Home, operation: Operation, selector: &str) -> Result<Plan, Error> {
    let data = home.lock_shared()?.load_for(selector)?;
    let selected = select(&data, selector)?;
    let mut services: Option<Result<ServiceSecrets, String>> = None;
    let mut secrets = Vec::new();
    for (stack_name, name) in selected {
        let stack = &data.stacks[&stack_name];
        let record = &stack.secrets[&name];
        let policy = Policy::parse(&stack.policy_path, stack.policy_source.clone());
        let mut plan = secret_plan(
            operation,
            &stack_name,
            &name,
            stack,
            record,
            policy.as_ref().ok(),
        );
        if let Err(e) = &policy {
            plan.unknown.push(format!(
                "the stored policy does not parse ({}): templates, targets and hooks are not shown",
                e.to_string().lines().next().unwrap_or_default()
            ));
        }
        if operation == Operation::Rotate && !plan.swarm_secrets.is_empty() {
            let uses = services.get_or_insert_with(services_by_secret);
            match uses {
                Ok(uses) => {
                    let current = swarm_names_of(stack, &plan.outputs);
                    plan.services = uses
                        .iter()
                        .filter(|(_, secrets)| !secrets.is_disjoint(&current))
                        .map(|(service, _)| service.clone())
                        .collect();
                }
                Err(e) => plan
                    .unknown
                    .push(format!("which services use these secrets: {e}")),
            }
        }
        secrets.push(plan);
    }
    Ok(Plan { operation, secrets })
}

fn secret_plan(
    operation: Operation,
    stack_name: &str,
    name: &str,
    stack: &StackRecord,
    record: &SecretRecord,
    policy: Option<&Policy>,
) -> SecretPlan {
    let current = record.current().map_or(0, |v| v.number);
    let spec = policy.and_then(|p| p.secret(name));
    let (action, to_version, retires) = match operation {
        Operation::Rotate => match &record.rotation {
            Some(r) => ("resume", r.pending, vec![current]),
            None => ("rotate", record.next_number(), vec![current]),
        },
        Operation::Retire => {
            let retiring: Vec<u64> = record
                .versions
                .iter()
                .filter(|v| v.number != current && v.retired.is_none())
                .filter(|v| v.label != Some(Label::Pending))
                .map(|v| v.number)
                .collect();
            let action = if retiring.is_empty() || record.rotation.is_some() {
                "nothing"
            } else {
                "retire"
            };
            (action, current, retiring)
        }
    };
    let mut plan = SecretPlan {
        stack: stack_name.to_owned(),
        name: name.to_owned(),
        kind: record.kind.as_str().to_owned(),
        action: action.to_owned(),
        from_version: current,
        to_version,
        retires: retires.into_iter().filter(|&v| v > 0).collect(),
        outputs: Vec::new(),
        templates: Vec::new(),
        files: Vec::new(),
        env_files: Vec::new(),
        swarm_secrets: Vec::new(),
        services: Vec::new(),
        plugin_services: Vec::new(),
        target: None,
        hooks: Vec::new(),
        unknown: Vec::new(),
    };
    if action == "nothing" {
        return plan;
    }
    let own: Vec<String> = record.outputs.iter().map(|o| o.name.clone()).collect();
    let (templates, template_outputs) =
        policy.map_or_else(Default::default, |p| dependents(p, stack, &own));
    plan.templates = templates;
    plan.outputs = own.iter().chain(&template_outputs).cloned().collect();
    for sink in stack.sinks.iter() {
        match sink {
            SinkSpec::Files(f) => {
                plan.files.push(Written {
                    location: f.dir.clone(),
                    names: plan.outputs.clone(),
                });
                if let Some(hook) = &f.reload {
                    plan.hooks.push(match hook {
                        ReloadHook::Signal { signal, pid_file } => {
                            format!("reload: {signal:?} to the pid in {}", pid_file.display())
                        }
                        ReloadHook::Command { argv, .. } => format!("reload: {}", argv[0]),
                    });
                }
            }
            SinkSpec::EnvFile(e) => {
                let names: Vec<String> = plan
                    .outputs
                    .iter()
                    .filter(|n| e.includes(n) && crate::policy::EnvFileSpec::is_variable_name(n))
                    .cloned()
                    .collect();
                if !names.is_empty() {
                    plan.env_files.push(Written {
                        location: e.path.clone(),
                        names,
                    });
                }
            }
            SinkSpec::Swarm(s) => {
                if operation == Operation::Rotate {
                    let next = |secret: &str| {
                        stack
                            .secrets
                            .get(secret)
                            .map_or(1, SecretRecord::next_number)
                    };
                    plan.swarm_secrets
                        .extend(own.iter().map(|o| format!("{}{o}_v{to_version}", s.prefix)));
                    for t in &plan.templates {
                        let outputs = stack.secrets.get(t).map_or_else(Vec::new, |r| {
                            r.outputs.iter().map(|o| o.name.clone()).collect()
                        });
                        plan.swarm_secrets.extend(
                            outputs
                                .iter()
                                .map(|o| format!("{}{o}_v{}", s.prefix, next(t))),
                        );
                    }
                } else {
                    for v in &plan.retires {
                        plan.swarm_secrets.extend(own.iter().map(|o| {
                            if *v == 1 {
                                format!("{}{o}", s.prefix)
                            } else {
                                format!("{}{o}_v{v}", s.prefix)
                            }
                        }));
                    }
                }
            }
            SinkSpec::Plugin(p) => {
                if operation == Operation::Rotate {
                    plan.plugin_services.push(format!(
                        "services of stack {} that use {}",
                        p.namespace.as_deref().unwrap_or(&p.stack),
                        plan.outputs.join(", ")
                    ));
                }
            }
        }
    }
    if let Some(spec) = spec {
        plan.target = spec.target.as_ref().map(|t| target_plan(t, operation));
        if operation == Operation::Rotate
            && let Some(rekey) = &spec.rekey
        {
            plan.hooks.push(format!("rekey: {}", rekey.argv[0]));
        }
    }
    plan
}

/// The templates of `policy` that name one of `outputs`, directly or through another
/// template, and their outputs.
fn dependents(
    policy: &Policy,
    stack: &StackRecord,
    outputs: &[String],
) -> (Vec<String>, Vec<String>) {
    let mut changed: HashSet<String> = outputs.iter().cloned().collect();
    let mut templates = Vec::new();
    let mut template_outputs = Vec::new();
    // Each round adds the templates naming what changed so far; a template is added once.
    loop {
        let before = templates.len();
        for s in &policy.secrets {
            let KindSpec::Template { pieces, .. } = &s.kind else {
                continue;
            };
            if templates.contains(&s.name) || !references(pieces).any(|r| changed.contains(r)) {
                continue;
            }
            templates.push(s.name.clone());
            let names: Vec<String> = stack
                .secrets
                .get(&s.name)
                .map(|r| r.outputs.iter().map(|o| o.name.clone()).collect())
                .unwrap_or_else(|| vec![s.name.clone()]);
            for n in names {
                changed.insert(n.clone());
                template_outputs.push(n);
            }
        }
        if templates.len() == before {
            return (templates, template_outputs);
        }
    }
}

fn target_plan(target: &SecretTarget, operation: Operation) -> TargetPlan {
    let strategy = |s: &LoginStrategy| match s {
        LoginStrategy::Single => "single",
        LoginStrategy::Alternating => "alternating",
    };
    let logins = |user: &str, s: &LoginStrategy| match s {
        LoginStrategy::Single => vec![user.to_owned()],
        // The login not in use gets the new password; retire ends the other's.
        LoginStrategy::Alternating => vec![format!(
            "{user} or {user}_b (the one not in use {})",
            if operation == Operation::Rotate {
                "gets the new password"
            } else {
                "is locked out"
            }
        )],
    };
    match target {
        SecretTarget::Postgres {
            target,
            role,
            strategy: s,
            ..
        } => TargetPlan {
            name: target.clone(),
            r#type: "postgres".into(),
            strategy: strategy(s).into(),
            logins: logins(role, s),
        },
        SecretTarget::Mysql {
            target,
            user,
            hosts,
            strategy: s,
            ..
        } => TargetPlan {
            name: target.clone(),
            r#type: "mysql".into(),
            strategy: strategy(s).into(),
            logins: logins(user, s)
                .into_iter()
                .map(|l| format!("{l} at {}", hosts.join(", ")))
                .collect(),
        },
        SecretTarget::Rabbitmq {
            target,
            user,
            vhost,
            strategy: s,
            ..
        } => TargetPlan {
            name: target.clone(),
            r#type: "rabbitmq".into(),
            strategy: strategy(s).into(),
            logins: logins(user, s)
                .into_iter()
                .map(|l| format!("{l} on vhost {vhost}"))
                .collect(),
        },
        SecretTarget::Redis {
            target, user, mode, ..
        } => TargetPlan {
            name: target.clone(),
            r#type: "redis".into(),
            strategy: match mode {
                RedisMode::Acl => "acl",
                RedisMode::Requirepass => "requirepass",
            }
            .into(),
            logins: vec![user.clone()],
        },
    }
}

/// The Swarm secret names the stack's ledger records for `outputs`.
fn swarm_names_of(stack: &StackRecord, outputs: &[String]) -> BTreeSet<String> {
    outputs
        .iter()
        .filter_map(|o| stack.swarm.outputs.get(o))
        .map(|o| o.current.clone())
        .collect()
}

/// Every service and the secret names it uses, from the engine.
fn services_by_secret() -> Result<ServiceSecrets, String> {
    let engine = crate::docker::Engine::connect(ENGINE_TIMEOUT).map_err(|e| e.to_string())?;
    let services = engine.services().map_err(|e| e.to_string())?;
    Ok(services
        .iter()
        .map(|s| {
            let names = s
                .spec
                .as_ref()
                .and_then(|spec| spec.task_template.as_ref())
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.secrets.as_ref())
                .map(|secrets| {
                    secrets
                        .iter()
                        .filter_map(|r| r.secret_name.clone())
                        .collect()
                })
                .unwrap_or_default();
            (crate::docker::service_name(s), names)
        })
        .collect())
}
