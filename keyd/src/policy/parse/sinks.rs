//! Sinks: the `[sinks.files]`, `[sinks.envfile]` and `[sinks.swarm]` tables, their paths (relative ones
//! resolved against the policy's directory) and modes, and the files sink's reload hook.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::fields::{Entry, Fields};
use super::problems::Checker;
use crate::policy::{
    EnvFileSpec, FilesSpec, PluginSpec, ReloadHook, Signal, SinkSpec, Sinks, SwarmSpec,
};

/// Checks `[sinks.*]`; relative paths are resolved against `base`, the policy's directory.
pub(super) fn check_sinks(c: &mut Checker, base: &Path, table: &DeTable<'_>) -> Sinks {
    let f = Fields::new("[sinks]", table);
    f.only(
        c,
        &["files", "envfile", "swarm", "plugin"],
        "files, envfile, swarm or plugin",
    );
    let mut sinks = Sinks::default();
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        let joined = if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        };
        std::path::absolute(&joined).unwrap_or(joined)
    };
    if let Some(e) = f.get("files") {
        match e.value.get_ref() {
            DeValue::Table(t) => {
                let s = Fields::new("[sinks.files]", t);
                s.only(
                    c,
                    &["dir", "mode", "dir_mode", "uid", "gid", "reload"],
                    "dir, mode, dir_mode, uid, gid or reload",
                );
                let dir = s
                    .path(c, "dir")
                    .map_or(PathBuf::from(FilesSpec::DEFAULT_DIR), |(d, _)| resolve(&d));
                let mut sink = FilesSpec::in_dir(dir);
                sink.mode = s.mode(c, "mode", 0o400);
                sink.dir_mode = s.mode(c, "dir_mode", 0o755);
                sink.uid = s
                    .get("uid")
                    .map(|_| s.int_in(c, "uid", 0..=i64::from(u32::MAX - 1), 0).0 as u32);
                sink.gid = s
                    .get("gid")
                    .map(|_| s.int_in(c, "gid", 0..=i64::from(u32::MAX - 1), 0).0 as u32);
                if let Some(e) = s.get("reload") {
                    sink.reload = check_reload(c, base, e);
                }
                sinks.set(SinkSpec::Files(sink));
            }
            _ => f.wrong_type(c, e, "a table ([sinks.files])"),
        }
    }
    if let Some(e) = f.get("envfile") {
        match e.value.get_ref() {
            DeValue::Table(t) => {
                let s = Fields::new("[sinks.envfile]", t);
                s.only(c, &["path", "mode", "include"], "path, mode or include");
                match s.path(c, "path") {
                    Some((p, _)) => sinks.set(SinkSpec::EnvFile(EnvFileSpec {
                        path: resolve(&p),
                        mode: s.mode(c, "mode", 0o600),
                        include: s.str_list(c, "include").map(|(l, _)| l),
                    })),
                    None if s.get("path").is_none() => c.err(
                        e.key_at,
                        "[sinks.envfile] has no `path` (expected path = \".env\")",
                    ),
                    None => {}
                }
            }
            _ => f.wrong_type(c, e, "a table ([sinks.envfile])"),
        }
    }
    if let Some(e) = f.get("swarm") {
        match e.value.get_ref() {
            DeValue::Table(t) => {
                let s = Fields::new("[sinks.swarm]", t);
                s.only(
                    c,
                    &["prefix", "names_env", "update_timeout", "timeout"],
                    "prefix, names_env, update_timeout or timeout",
                );
                // The stack is filled in once [stack] is read.
                let mut sink = SwarmSpec::for_stack("");
                if let Some((prefix, at)) = s.str(c, "prefix") {
                    if !prefix.is_empty() && !SwarmSpec::is_valid_name(&format!("{prefix}x")) {
                        c.err(at, format!("[sinks.swarm] prefix {prefix:?} is not valid in a Swarm secret name (expected letters, digits, '-', '_' or '.', starting with a letter or digit)"));
                    }
                    sink.prefix = prefix;
                }
                sink.names_env = s.path(c, "names_env").map(|(p, _)| resolve(&p));
                if let Some((d, _)) = s.duration(c, "update_timeout") {
                    sink.update_timeout = d;
                }
                if let Some((d, _)) = s.duration(c, "timeout") {
                    sink.timeout = d;
                }
                sinks.set(SinkSpec::Swarm(sink));
            }
            _ => f.wrong_type(c, e, "a table ([sinks.swarm])"),
        }
    }
    if let Some(e) = f.get("plugin") {
        match e.value.get_ref() {
            DeValue::Table(t) => {
                let s = Fields::new("[sinks.plugin]", t);
                s.only(
                    c,
                    &[
                        "driver",
                        "update_timeout",
                        "timeout",
                        "namespace",
                        "unstacked",
                    ],
                    "driver, update_timeout, timeout, namespace or unstacked",
                );
                // The stack is filled in once [stack] is read.
                let mut sink = PluginSpec::for_stack("");
                if let Some((driver, at)) = s.str(c, "driver") {
                    if driver.is_empty() || driver.chars().any(|ch| ch.is_whitespace() || ch == '/')
                    {
                        c.err(at, format!("[sinks.plugin] driver {driver:?} is not a plugin name (expected the name of keyd's plugin socket, e.g. \"keyd\", or NAME:TAG of a managed plugin)"));
                    }
                    sink.driver = driver;
                }
                if let Some((d, _)) = s.duration(c, "update_timeout") {
                    sink.update_timeout = d;
                }
                if let Some((d, _)) = s.duration(c, "timeout") {
                    sink.timeout = d;
                }
                if let Some((namespace, at)) = s.str(c, "namespace") {
                    if namespace.is_empty()
                        || namespace.chars().any(|ch| {
                            ch.is_whitespace() || ch.is_control() || ch == '/' || ch == '='
                        })
                    {
                        c.err(at, format!("[sinks.plugin] namespace {namespace:?} is not a Docker stack namespace (expected the name given to `docker stack deploy`, as in keyd --plugin-stack STACK=NAMESPACE)"));
                    }
                    sink.namespace = Some(namespace);
                }
                if let Some(unstacked) = s.bool(c, "unstacked") {
                    sink.unstacked = unstacked;
                }
                sinks.set(SinkSpec::Plugin(sink));
            }
            _ => f.wrong_type(c, e, "a table ([sinks.plugin])"),
        }
    }
    sinks
}

const RELOAD_EXPECTED: &str = "reload = { signal = \"HUP\", pid_file = \"/run/app.pid\" } or reload = { command = [\"prog\", \"arg\"], timeout = \"10s\" }";

/// Checks the files sink's `reload` (entry `e`).
fn check_reload(c: &mut Checker, base: &Path, e: &Entry<'_, '_>) -> Option<ReloadHook> {
    let DeValue::Table(t) = e.value.get_ref() else {
        c.err(
            e.value.span().start,
            format!("`reload` must be a table ({RELOAD_EXPECTED})"),
        );
        return None;
    };
    let f = Fields::new("`reload` of [sinks.files]", t);
    f.only(
        c,
        &["signal", "pid_file", "command", "timeout"],
        "signal and pid_file, or command and timeout",
    );
    let timeout = f.duration(c, "timeout");
    let (signal, pid_file, command) = (
        f.str(c, "signal"),
        f.path(c, "pid_file"),
        f.str_list(c, "command"),
    );
    if pid_file.is_none() && f.get("pid_file").is_some() {
        // A pid_file that is no path is reported as such, not as a missing one.
        return None;
    }
    match (signal, pid_file, command) {
        (Some((signal, s_at)), Some((pid_file, _)), None) => {
            let Some(signal) = Signal::parse(&signal) else {
                let names: Vec<&str> = Signal::ALL.iter().map(|s| s.as_str()).collect();
                c.err(
                    s_at,
                    format!(
                        "unknown signal {signal:?} (expected one of {})",
                        names.join(", ")
                    ),
                );
                return None;
            };
            let p = Path::new(&pid_file);
            let pid_file = if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            };
            if let Some((_, at)) = timeout {
                c.err(at, "`timeout` applies to a reload command, not to a signal");
            }
            Some(ReloadHook::Signal { signal, pid_file })
        }
        (None, None, Some((argv, _))) if !argv.is_empty() => Some(ReloadHook::Command {
            argv,
            timeout: timeout.map_or(ReloadHook::DEFAULT_TIMEOUT, |(t, _)| t),
        }),
        _ => {
            c.err(e.value.span().start, format!("`reload` needs either signal and pid_file, or a non-empty command ({RELOAD_EXPECTED})"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err_text, policy};
    use super::*;
    use crate::policy::Policy;

    /// `[sinks.files]` (line 3) with `body` from line 4 on, then secret A.
    fn files(body: &str) -> String {
        format!("[stack]\nname = \"s\"\n[sinks.files]\n{body}[secrets.A]\nkind = \"fernet\"\n")
    }

    /// `[sinks.envfile]` (line 3, `envfile` at column 8) with `body` from line 4 on, then
    /// secret A.
    fn envfile(body: &str) -> String {
        format!("[stack]\nname = \"s\"\n[sinks.envfile]\n{body}[secrets.A]\nkind = \"fernet\"\n")
    }

    const EXPECTED_RELOAD: &str = "(reload = { signal = \"HUP\", pid_file = \"/run/app.pid\" } or reload = { command = [\"prog\", \"arg\"], timeout = \"10s\" })";

    #[test]
    fn files_and_envfile_values() {
        let src = r#"[stack]
name = "s"
[sinks.files]
dir = "out/secrets"
mode = "0440"
dir_mode = 0o750
uid = 1000
gid = 0
reload = { signal = "HUP", pid_file = "run/app.pid" }
[sinks.envfile]
path = "/srv/app/.env"
include = ["A"]
[secrets.A]
kind = "fernet"
"#;
        // Relative paths are relative to the policy's directory.
        let p = Policy::parse(Path::new("/srv/stack/p.toml"), src.to_string()).unwrap();
        assert_eq!(
            p.sinks.files(),
            Some(&FilesSpec {
                dir: PathBuf::from("/srv/stack/out/secrets"),
                mode: 0o440,
                dir_mode: 0o750,
                uid: Some(1000),
                gid: Some(0),
                reload: Some(ReloadHook::Signal {
                    signal: Signal::Hup,
                    pid_file: PathBuf::from("/srv/stack/run/app.pid"),
                }),
            })
        );
        assert_eq!(
            p.sinks.envfile(),
            Some(&EnvFileSpec {
                path: PathBuf::from("/srv/app/.env"),
                mode: 0o600,
                include: Some(vec!["A".into()]),
            })
        );
        let kinds: Vec<&str> = p.sinks.iter().map(SinkSpec::kind_name).collect();
        assert_eq!(kinds, ["files", "envfile"]);

        // A policy in the current directory: the directory is made absolute, the pid file not.
        let p = policy(src);
        let files = p.sinks.files().unwrap();
        assert_eq!(
            files.dir,
            std::env::current_dir().unwrap().join("out/secrets")
        );
        assert_eq!(
            files.reload,
            Some(ReloadHook::Signal {
                signal: Signal::Hup,
                pid_file: PathBuf::from("./run/app.pid"),
            })
        );
    }

    #[test]
    fn defaults_and_reload_command() {
        let p = policy(&files(
            "reload = { command = [\"nginx\", \"-s\", \"reload\"] }\n",
        ));
        let mut expected = FilesSpec::in_dir(PathBuf::from(FilesSpec::DEFAULT_DIR));
        expected.reload = Some(ReloadHook::Command {
            argv: vec!["nginx".into(), "-s".into(), "reload".into()],
            timeout: ReloadHook::DEFAULT_TIMEOUT,
        });
        assert_eq!(p.sinks.files(), Some(&expected));
        assert_eq!((expected.mode, expected.dir_mode), (0o400, 0o755));
        let p = policy(&files(
            "reload = { command = [\"nginx\", \"-s\", \"reload\"], timeout = \"1m\" }\n",
        ));
        assert!(matches!(
            p.sinks.files().unwrap().reload,
            Some(ReloadHook::Command { timeout, .. }) if timeout == std::time::Duration::from_secs(60)
        ));
        assert_eq!(
            err_text(&files(
                "reload = { signal = \"HUP\", pid_file = \"/a.pid\", timeout = \"1s\" }\n"
            )),
            "p.toml:4:59: `timeout` applies to a reload command, not to a signal"
        );
        assert_eq!(
            err_text(&files("reload = { command = [\"x\"], timeout = \"1\" }\n")),
            "p.toml:4:39: `timeout` in `reload` of [sinks.files]: bad duration \"1\": 1 has no unit (expected a whole number followed by s, m, h, d or w, e.g. \"90d\" or \"1d12h\")"
        );
        assert!(p.sinks.envfile().is_none());

        let p = policy(&envfile("path = \"/e/.env\"\nmode = \"0640\"\n"));
        assert_eq!(
            p.sinks.envfile(),
            Some(&EnvFileSpec {
                path: PathBuf::from("/e/.env"),
                mode: 0o640,
                include: None,
            })
        );
        assert!(p.sinks.files().is_none());
    }

    /// `[sinks.swarm]` (line 3) with `body` from line 4 on, then secret `secret` (line after).
    fn swarm(body: &str, secret: &str) -> String {
        format!(
            "[stack]\nname = \"s\"\n[sinks.swarm]\n{body}[secrets.{secret}]\nkind = \"fernet\"\n"
        )
    }

    #[test]
    fn swarm_settings_defaults_and_the_stack_name() {
        let p = policy(&swarm("", "A"));
        let s = p.sinks.swarm().expect("a swarm sink");
        assert_eq!(s, &SwarmSpec::for_stack("s"));
        let p = policy(&swarm(
            "prefix = \"s_\"\nnames_env = \"n.env\"\nupdate_timeout = \"90s\"\ntimeout = \"5s\"\n",
            "A",
        ));
        let s = p.sinks.swarm().unwrap();
        assert_eq!(s.prefix, "s_");
        assert!(s.names_env.as_ref().unwrap().ends_with("n.env"));
        assert_eq!(s.update_timeout, std::time::Duration::from_secs(90));
        assert_eq!(s.timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn swarm_names_must_be_valid_and_leave_room_for_versions() {
        assert_eq!(
            err_text(&swarm("prefix = \"-x\"\nbucket = 1\n", "A")),
            "p.toml:4:10: [sinks.swarm] prefix \"-x\" is not valid in a Swarm secret name (expected letters, digits, '-', '_' or '.', starting with a letter or digit)\n\
             p.toml:5:1: unknown field `bucket` in [sinks.swarm] (expected prefix, names_env, update_timeout or timeout)\n\
             p.toml:6:10: [sinks.swarm] cannot name a secret \"-xA\": Swarm names start and end with a letter or digit and hold only letters, digits, '-', '_' and '.'"
        );
        let long = "A".repeat(49);
        assert_eq!(
            err_text(&swarm("", &long)),
            format!(
                "p.toml:4:10: [sinks.swarm] cannot name a secret \"{long}\": it is 49 characters long, and Swarm allows 64 including the `_v<version>` keyd adds to later versions (at most 48 here)"
            )
        );
        assert_eq!(
            err_text(&swarm("", "A_")),
            "p.toml:4:10: [sinks.swarm] cannot name a secret \"A_\": Swarm names start and end with a letter or digit and hold only letters, digits, '-', '_' and '.'"
        );
    }

    #[test]
    fn plugin_settings_and_a_driver_that_is_no_plugin_name() {
        let src = |body: &str| {
            format!("[stack]\nname = \"s\"\n[sinks.plugin]\n{body}[secrets.A]\nkind = \"fernet\"\n")
        };
        let p = policy(&src(""));
        assert_eq!(p.sinks.plugin(), Some(&PluginSpec::for_stack("s")));
        let p = policy(&src(
            "driver = \"keyd-prod:1.2\"\nupdate_timeout = \"1m\"\n",
        ));
        assert_eq!(p.sinks.plugin().unwrap().driver, "keyd-prod:1.2");
        assert_eq!(
            err_text(&src("driver = \"/run/docker/plugins/keyd.sock\"\n")),
            "p.toml:4:10: [sinks.plugin] driver \"/run/docker/plugins/keyd.sock\" is not a plugin name (expected the name of keyd's plugin socket, e.g. \"keyd\", or NAME:TAG of a managed plugin)"
        );
    }

    #[test]
    fn plugin_namespace_defaults_to_the_stack_and_unstacked_is_opt_in() {
        let src = |body: &str| {
            format!("[stack]\nname = \"s\"\n[sinks.plugin]\n{body}[secrets.A]\nkind = \"fernet\"\n")
        };
        let p = policy(&src(""));
        let plugin = p.sinks.plugin().unwrap();
        assert_eq!((plugin.namespace(), plugin.unstacked), ("s", false));
        let p = policy(&src("namespace = \"prod_s\"\nunstacked = true\n"));
        let plugin = p.sinks.plugin().unwrap();
        assert_eq!((plugin.namespace(), plugin.unstacked), ("prod_s", true));
        assert_eq!(
            err_text(&src("namespace = \"a b\"\n")),
            "p.toml:4:13: [sinks.plugin] namespace \"a b\" is not a Docker stack namespace (expected the name given to `docker stack deploy`, as in keyd --plugin-stack STACK=NAMESPACE)"
        );
    }

    #[test]
    fn sinks_table_shape() {
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[sinks]\nfiles = \"/run/secrets\"\n[sinks.s3]\nbucket = \"b\"\n[secrets.A]\nkind = \"fernet\"\n"
            ),
            "p.toml:4:9: `files` in [sinks] must be a table ([sinks.files]) (found string)\n\
             p.toml:5:8: unknown field `s3` in [sinks] (expected files, envfile, swarm or plugin)"
        );
        assert_eq!(
            err_text(&files("directory = \"/x\"\ndir = 5\n")),
            "p.toml:4:1: unknown field `directory` in [sinks.files] (expected dir, mode, dir_mode, uid, gid or reload)\n\
             p.toml:5:7: `dir` in [sinks.files] must be a string (found integer)"
        );
    }

    #[test]
    fn files_modes_and_owners() {
        assert_eq!(
            err_text(&files("mode = \"0664\"\ndir_mode = 0o775\n")),
            "p.toml:4:8: `mode` 0664 lets group or others write secrets (expected a mode without write bits for them, e.g. \"0400\")\n\
             p.toml:5:12: `dir_mode` 0775 lets group or others write secrets (expected a mode without write bits for them, e.g. \"0400\")"
        );
        assert_eq!(
            err_text(&files("mode = 400\ndir_mode = \"rwx\"\n")),
            "p.toml:4:8: `mode` in [sinks.files] must be an octal mode like \"0400\" or 0o400\n\
             p.toml:5:12: `dir_mode` in [sinks.files] must be an octal mode like \"0400\" or 0o400"
        );
        assert_eq!(
            err_text(&files("mode = \"01400\"\n")),
            "p.toml:4:8: `mode` in [sinks.files] must be an octal mode like \"0400\" or 0o400"
        );
        assert_eq!(
            err_text(&files("uid = -1\ngid = \"0\"\n")),
            "p.toml:4:7: `uid` = -1 in [sinks.files] is out of range (expected 0 to 4294967294)\n\
             p.toml:5:7: `gid` in [sinks.files] must be an integer (found string)"
        );
    }

    #[test]
    fn envfile_path_mode_and_include() {
        assert_eq!(
            err_text(&envfile("mode = \"0600\"\n")),
            "p.toml:3:8: [sinks.envfile] has no `path` (expected path = \".env\")"
        );
        assert_eq!(
            err_text(&envfile(
                "path = \".env\"\nmode = \"0660\"\ninclude = \"A\"\n"
            )),
            "p.toml:5:8: `mode` 0660 lets group or others write secrets (expected a mode without write bits for them, e.g. \"0400\")\n\
             p.toml:6:11: `include` in [sinks.envfile] must be a list of strings (found string)"
        );
        // Unknown names are reported at the first [sinks.*] header.
        assert_eq!(
            err_text(&envfile(
                "path = \".env\"\ninclude = [\"A\", \"B\", \"C\"]\n"
            )),
            "p.toml:3:2: [sinks.envfile] include names \"B\", which this policy does not declare\n\
             p.toml:3:2: [sinks.envfile] include names \"C\", which this policy does not declare"
        );
        assert_eq!(
            err_text(&envfile("path = 1\nowner = \"me\"\n")),
            "p.toml:4:8: `path` in [sinks.envfile] must be a string (found integer)\n\
             p.toml:5:1: unknown field `owner` in [sinks.envfile] (expected path, mode or include)"
        );
    }

    #[test]
    fn a_control_character_in_a_path_is_refused_not_pasted_into_compose_yaml() {
        // The issue's exploit: a newline in `dir` became YAML keys in `keyctl compose`.
        assert_eq!(
            err_text(&files(
                "dir = \"/run/secrets\\n    privileged: true\\n    pid: host\"\n"
            )),
            "p.toml:4:7: `dir` in [sinks.files] holds the control character '\\n' (expected a path without newlines, tabs or other control characters)"
        );
        assert_eq!(
            err_text(&files(
                "reload = { signal = \"HUP\", pid_file = \"/run/a\\t.pid\" }\n"
            )),
            "p.toml:4:39: `pid_file` in `reload` of [sinks.files] holds the control character '\\t' (expected a path without newlines, tabs or other control characters)"
        );
        assert_eq!(
            err_text(&envfile("path = \".env\\u0000x\"\n")),
            "p.toml:4:8: `path` in [sinks.envfile] holds the control character '\\0' (expected a path without newlines, tabs or other control characters)"
        );
        assert_eq!(
            err_text(&swarm("names_env = \"n\\r.env\"\n", "A")),
            "p.toml:4:13: `names_env` in [sinks.swarm] holds the control character '\\r' (expected a path without newlines, tabs or other control characters)"
        );
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[targets.db]\ntype = \"redis\"\nurl = \"redis://db\"\npassword_file = \"/p\\u007f\"\n[secrets.A]\nkind = \"fernet\"\n"
            ),
            "p.toml:6:17: `password_file` in target \"db\" holds the control character '\\u{7f}' (expected a path without newlines, tabs or other control characters)"
        );
        // Other characters, however odd for YAML or compose, are a path's own business.
        let p = policy(&files("dir = \"/run/a: b #c ${X} 'q' \\\"d\\\" [e]\"\n"));
        assert_eq!(
            p.sinks.files().unwrap().dir,
            PathBuf::from("/run/a: b #c ${X} 'q' \"d\" [e]")
        );
    }

    #[test]
    fn reload_hook_problems() {
        assert_eq!(
            err_text(&files("reload = \"HUP\"\n")),
            format!("p.toml:4:10: `reload` must be a table {EXPECTED_RELOAD}")
        );
        assert_eq!(
            err_text(&files(
                "reload = { signal = \"KILL\", pid_file = \"/run/a.pid\" }\n"
            )),
            "p.toml:4:21: unknown signal \"KILL\" (expected one of HUP, USR1, USR2, INT, TERM)"
        );
        let needs = format!(
            "`reload` needs either signal and pid_file, or a non-empty command {EXPECTED_RELOAD}"
        );
        for reload in [
            "{ signal = \"HUP\" }",
            "{ command = [] }",
            "{ signal = \"HUP\", pid_file = \"/run/a.pid\", command = [\"x\"] }",
            "{}",
        ] {
            assert_eq!(
                err_text(&files(&format!("reload = {reload}\n"))),
                format!("p.toml:4:10: {needs}")
            );
        }
        assert_eq!(
            err_text(&files(
                "reload = { command = [\"nginx\", 1], user = \"root\" }\n"
            )),
            "p.toml:4:32: `command` in `reload` of [sinks.files] must list strings (found integer)\n\
             p.toml:4:36: unknown field `user` in `reload` of [sinks.files] (expected signal and pid_file, or command and timeout)"
        );
    }
}
