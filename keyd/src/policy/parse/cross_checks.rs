//! The checks that need the whole policy, run once every section is read: each output name
//! unique, each template reference known and free of cycles, each name a target or the env
//! file refers to declared, and each output something its sinks can carry (env file values
//! and variable names, Swarm secret names).

use std::collections::{BTreeMap, HashMap, HashSet};

use toml::de::DeTable;

use super::kinds::Draft;
use super::problems::{Checker, closest, offset_in_string, top_level_key_at};
use crate::material::template::Piece;
use crate::policy::chars;
use crate::policy::{AdminPassword, EnvFileSpec, KindSpec, Part, Sinks, SwarmSpec, TargetSpec};

/// Every name a target (`password_secret`) or the env file (`include`) refers to is one this
/// policy delivers.
pub(super) fn check_declared_names(
    c: &mut Checker,
    doc: &DeTable<'_>,
    targets: &[TargetSpec],
    sinks: &Sinks,
    drafts: &[Draft],
) {
    // Every name the policy delivers, when a target or the env file names one.
    let names_needed = targets
        .iter()
        .any(|t| matches!(t.password, AdminPassword::Secret(_)))
        || sinks.envfile().is_some_and(|e| e.include.is_some());
    let declared: HashSet<&str> = if names_needed {
        drafts
            .iter()
            .flat_map(|d| d.spec.output_parts().map(|(name, _)| name))
            .collect()
    } else {
        HashSet::new()
    };
    // An admin password named by a target must be a value this policy delivers.
    for t in targets {
        if let AdminPassword::Secret(name) = &t.password
            && !declared.contains(name.as_str())
        {
            c.err(
                top_level_key_at(doc, "targets"),
                format!(
                    "target {:?}: password_secret {name:?} is not declared in this policy",
                    t.name
                ),
            );
        }
    }
    if let Some(env) = sinks.envfile()
        && let Some(include) = &env.include
    {
        for name in include.iter().filter(|n| !declared.contains(n.as_str())) {
            c.err(
                top_level_key_at(doc, "sinks"),
                format!(
                    "[sinks.envfile] include names {name:?}, which this policy does not declare"
                ),
            );
        }
    }
}

/// Every output's Swarm secret name (prefix and output) is valid in Swarm, with room for the
/// `_v<version>` suffix of later versions.
pub(super) fn check_swarm_names(c: &mut Checker, swarm: &SwarmSpec, drafts: &[Draft]) {
    for d in drafts {
        for (name, _) in d.spec.output_parts() {
            let at = d
                .companions_at
                .iter()
                .find(|(n, _, _)| *n == name)
                .map_or(d.at, |(_, _, at)| *at);
            if let Some(problem) = swarm.name_problem(name) {
                c.err(at, problem);
            }
        }
    }
}

/// Every output the env file receives has a variable name, and can hold only characters the
/// file carries unchanged: found now, not when the first unlucky value is generated.
pub(super) fn check_envfile_values(c: &mut Checker, env: &EnvFileSpec, drafts: &[Draft]) {
    let outputs = chars::outputs_by_name(drafts.iter().map(|d| &d.spec));
    let fix = "leave it out with [sinks.envfile] include = [...] and deliver it as a file";
    for d in drafts {
        for out in d
            .spec
            .outputs()
            .into_iter()
            .filter(|o| env.includes(&o.name))
        {
            let at = d
                .companions_at
                .iter()
                .find(|(n, _, _)| *n == out.name)
                .map_or(d.at, |(_, _, at)| *at);
            if !EnvFileSpec::is_variable_name(&out.name) {
                c.err(at, format!("[sinks.envfile] cannot carry {:?}: it is not an environment variable name (expected letters, digits and '_'); {fix}", out.name));
                continue;
            }
            let bad = chars::possible(&outputs, &out.name)
                .and_then(|set| set.chars().find(|&ch| !EnvFileSpec::carries(ch)));
            if let Some(ch) = bad {
                let what = match ch {
                    '\n' => "a newline".to_owned(),
                    ch if ch.is_control() => format!("the control character {ch:?}"),
                    ch => format!("{ch:?}"),
                };
                let hint = match &d.spec.kind {
                    KindSpec::Password { .. } => {
                        "; choose an alphabet without ' \\ $ (the default alphanumeric is safe), or"
                    }
                    _ => ";",
                };
                c.err(at, format!("{:?} can hold {what}, which [sinks.envfile] cannot carry unchanged (compose would read another value){hint} {fix}", out.name));
            }
        }
    }
}

/// Every output name unique; every template reference known; no template cycles.
pub(super) fn check_names_and_references(c: &mut Checker, src: &str, drafts: &[Draft]) {
    // output -> (draft, line)
    let mut owner: HashMap<&str, (usize, usize)> = HashMap::with_capacity(drafts.len());
    for (i, d) in drafts.iter().enumerate() {
        for (name, part) in d.spec.output_parts() {
            let line = d.spec.line;
            if let Some((j, first_line)) = owner.get(name) {
                let first = &drafts[*j].spec.name;
                let earlier = if first == name {
                    String::new()
                } else {
                    format!(" (by secret {first:?})")
                };
                let (at, this) = match d.companions_at.iter().find(|(n, _, _)| *n == name) {
                    Some((_, key, at)) if part != Part::Main => {
                        (*at, format!(" as the `{key}` of {:?}", d.spec.name))
                    }
                    _ => (d.at, String::new()),
                };
                c.err(at, format!("duplicate name {name:?}{this}: already declared on line {first_line}{earlier} (expected every secret and companion name to be unique in the stack)"));
            } else {
                owner.insert(name, (i, line));
            }
        }
    }
    // Template references, then cycles over secret-to-secret edges.
    let mut edges: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, d) in drafts.iter().enumerate() {
        let KindSpec::Template { pieces, .. } = &d.spec.kind else {
            continue;
        };
        for piece in pieces {
            let Piece::Ref { name, offset, .. } = piece else {
                continue;
            };
            match owner.get(name.as_str()) {
                Some((j, _)) => edges.entry(i).or_default().push(*j),
                None => {
                    let guess = closest(name, owner.keys().copied())
                        .map_or_else(String::new, |n| format!(": did you mean {{{n}}}?"));
                    c.err(
                        offset_in_string(src, d.template_at, *offset),
                        format!("template of {:?} refers to unknown name {{{name}}}{guess} (expected a secret or companion name declared in this policy)", d.spec.name),
                    );
                }
            }
        }
    }
    let mut state = vec![0u8; drafts.len()]; // 0 new, 1 on the path, 2 done
    for start in edges.keys().copied().collect::<Vec<_>>() {
        let mut path = Vec::new();
        if let Some(cycle) = find_cycle(start, &edges, &mut state, &mut path) {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&k| drafts[k].spec.name.as_str())
                .collect();
            let first = cycle[0];
            c.err(drafts[first].template_at.max(drafts[first].at), format!("template cycle: {} (expected templates to refer to values that do not depend on them)", names.join(" -> ")));
            break; // one cycle is enough to act on; the search state is not valid past it
        }
    }
}

fn find_cycle(
    node: usize,
    edges: &BTreeMap<usize, Vec<usize>>,
    state: &mut [u8],
    path: &mut Vec<usize>,
) -> Option<Vec<usize>> {
    match state[node] {
        2 => return None,
        1 => {
            let from = path.iter().position(|&n| n == node).expect("on the path");
            let mut cycle = path[from..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        _ => {}
    }
    state[node] = 1;
    path.push(node);
    for &next in edges.get(&node).map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(cycle) = find_cycle(next, edges, state, path) {
            return Some(cycle);
        }
    }
    path.pop();
    state[node] = 2;
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err_text, policy};
    use crate::material::template::Piece;
    use crate::policy::{KindSpec, Output, Part};

    #[test]
    fn an_escape_then_a_multibyte_character_in_a_template_is_an_error_not_a_panic() {
        let text = err_text(
            "[stack]\nname = \"d\"\n\n[secrets.U]\nkind = \"template\"\ntemplate = \"\\t€{X}\"\n",
        );
        assert_eq!(
            text,
            "p.toml:6:12: template of \"U\" refers to unknown name {X} (expected a secret or companion name declared in this policy)"
        );
    }

    #[test]
    fn an_unknown_name_in_a_multi_line_template_is_reported_on_its_own_line() {
        let text = err_text(
            "[stack]\nname = \"d\"\n\n[secrets.U]\nkind = \"template\"\ntemplate = \"\"\"\npostgres://{X}@db\"\"\"\n",
        );
        assert_eq!(
            text,
            "p.toml:7:12: template of \"U\" refers to unknown name {X} (expected a secret or companion name declared in this policy)"
        );
    }

    #[test]
    fn a_companion_may_not_reuse_a_secret_name() {
        // The secret first: the companion is at fault, at its value.
        assert_eq!(
            err_text(
                r#"[stack]
name = "s"
[secrets.PUB]
kind = "fernet"
[secrets.JWT]
kind = "rsa"
public = "PUB"
"#
            ),
            "p.toml:7:10: duplicate name \"PUB\" as the `public` of \"JWT\": already declared on line 3 (expected every secret and companion name to be unique in the stack)"
        );
        // The companion first: the later secret is at fault, at its name.
        assert_eq!(
            err_text(
                r#"[stack]
name = "s"
[secrets.CERT]
kind = "tls"
key = "CERT_KEY"
cn = "db.example"
[secrets.CERT_KEY]
kind = "fernet"
"#
            ),
            "p.toml:7:10: duplicate name \"CERT_KEY\": already declared on line 3 (by secret \"CERT\") (expected every secret and companion name to be unique in the stack)"
        );
    }

    #[test]
    fn two_companions_with_one_name() {
        assert_eq!(
            err_text(
                r#"[stack]
name = "s"
[secrets.A]
kind = "tls"
key = "SHARED"
cn = "a.example"
[secrets.B]
kind = "rsa"
jwks = "SHARED"
"#
            ),
            "p.toml:9:8: duplicate name \"SHARED\" as the `jwks` of \"B\": already declared on line 3 (by secret \"A\") (expected every secret and companion name to be unique in the stack)"
        );
    }

    #[test]
    fn template_references_resolve_to_secrets_and_companions() {
        let p = policy(
            r#"[stack]
name = "s"
[secrets.JWT]
kind = "rsa"
bits = 2048
public = "JWT_PUB"
[secrets.CONF]
kind = "template"
template = "key={JWT_PUB|url} again={{literal}}"
"#,
        );
        let KindSpec::Template { text, pieces } = &p.secret("CONF").unwrap().kind else {
            panic!("a template");
        };
        assert_eq!(text, "key={JWT_PUB|url} again={{literal}}");
        assert_eq!(
            pieces,
            &[
                Piece::Text("key=".into()),
                Piece::Ref {
                    name: "JWT_PUB".into(),
                    url: true,
                    offset: 4
                },
                Piece::Text(" again={literal}".into()),
            ]
        );
        assert_eq!(
            p.outputs()[1],
            Output {
                name: "JWT_PUB".into(),
                secret: "JWT".into(),
                part: Part::PublicPem
            }
        );
    }

    #[test]
    fn a_misspelt_template_reference_is_answered_with_the_name_it_is_closest_to() {
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets.DB_PASSWORD]\nkind = \"password\"\n[secrets.PUB]\nkind = \"rsa\"\npublic = \"JWT_PUBLIC\"\n[secrets.URL]\nkind = \"template\"\ntemplate = \"{DB_PASWORD|url} {JWT_PUBLC} {ZZZ}\"\n"
            ),
            "p.toml:10:13: template of \"URL\" refers to unknown name {DB_PASWORD}: did you mean {DB_PASSWORD}? (expected a secret or companion name declared in this policy)\n\
             p.toml:10:30: template of \"URL\" refers to unknown name {JWT_PUBLC}: did you mean {JWT_PUBLIC}? (expected a secret or companion name declared in this policy)\n\
             p.toml:10:42: template of \"URL\" refers to unknown name {ZZZ} (expected a secret or companion name declared in this policy)"
        );
    }

    #[test]
    fn unknown_reference_points_inside_the_string() {
        let tail = "(expected a secret or companion name declared in this policy)";
        // Basic string: the column of the `{`.
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets.U]\nkind = \"template\"\ntemplate = \"db://{HOST}/{NAME}\"\n"
            ),
            format!(
                "p.toml:5:18: template of \"U\" refers to unknown name {{HOST}} {tail}\n\
                 p.toml:5:25: template of \"U\" refers to unknown name {{NAME}} {tail}"
            )
        );
        // Literal string and multi-line literal string.
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets.U]\nkind = \"template\"\ntemplate = 'a\\b{X}'\n"
            ),
            format!("p.toml:5:16: template of \"U\" refers to unknown name {{X}} {tail}")
        );
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets.U]\nkind = \"template\"\ntemplate = '''ab{X}'''\n"
            ),
            format!("p.toml:5:17: template of \"U\" refers to unknown name {{X}} {tail}")
        );
        // An escape before it: the source column is not known, so the string's start.
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets.U]\nkind = \"template\"\ntemplate = \"a\\tb{X}\"\n"
            ),
            format!("p.toml:5:12: template of \"U\" refers to unknown name {{X}} {tail}")
        );
    }

    #[test]
    fn template_cycles() {
        let tail = "(expected templates to refer to values that do not depend on them)";
        assert_eq!(
            err_text(
                r#"[stack]
name = "s"
[secrets.A]
kind = "template"
template = "{B}"
[secrets.B]
kind = "template"
template = "{C}"
[secrets.C]
kind = "template"
template = "x{A}"
"#
            ),
            format!("p.toml:5:12: template cycle: A -> B -> C -> A {tail}")
        );
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets.SELF]\nkind = \"template\"\ntemplate = \"{SELF}\"\n"
            ),
            format!("p.toml:5:12: template cycle: SELF -> SELF {tail}")
        );
        // Two templates on one value are not a cycle.
        let p = policy(
            r#"[stack]
name = "s"
[secrets.P]
kind = "password"
[secrets.A]
kind = "template"
template = "{P}"
[secrets.B]
kind = "template"
template = "{A}{P}"
"#,
        );
        assert_eq!(p.secrets.len(), 3);
    }
}
