//! The commands that touch no store: `gen` (one-off values), `compose` (a sidecar block for
//! a policy), `completions`, `man` and `policy check`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use keyd::Error;
use keyd::material::{self, password::Alphabet, tls, token::Encoding};
use keyd::policy::Policy;

use super::args::{CompletionShell, Gen, command};
use super::{Failure, write_stdout};

/// `keyctl compose --policy FILE`.
pub(super) fn compose(policy: &Path, image: &str) -> Result<(), Failure> {
    let policy = Policy::load(policy).map_err(Error::from)?;
    let block = crate::compose::block(&policy, image).ok_or_else(|| {
        Failure::new(
            2,
            format!(
                "{} has no [sinks.files]: a compose sidecar delivers files",
                policy.path.display()
            ),
            Some("add [sinks.files] with dir = \"/run/secrets\"".into()),
        )
    })?;
    write_stdout(block.as_bytes())
}

/// `keyctl completions SHELL`.
pub(super) fn completions(shell: CompletionShell) -> Result<(), Failure> {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command(), "keyctl", &mut script);
    write_stdout(&script)
}

/// `keyctl man`: one self-contained page. clap_mangen's own subcommands section refers to a
/// page per command (keyctl-init(1), …) that nothing installs, so the page lists every command
/// with what it does here instead, and says where each one's options are.
pub(super) fn man() -> Result<(), Failure> {
    let man = clap_mangen::Man::new(command());
    let mut page = Vec::new();
    let rendered = (|| -> std::io::Result<()> {
        man.render_title(&mut page)?;
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        page.extend_from_slice(b".SH COMMANDS\n");
        let mut top = command();
        top.build();
        commands_in_man(&mut page, &top);
        page.extend_from_slice(
            b".PP\n\\fBkeyctl\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR shows a command's options.\n",
        );
        // The exit-code table as a table: clap_mangen would fill it into one paragraph.
        page.extend_from_slice(b".SH \"EXIT STATUS\"\n.nf\n");
        for line in super::args::EXIT_CODES.lines().skip(1) {
            page.extend_from_slice(format!("{}\n", roff_text(line)).as_bytes());
        }
        page.extend_from_slice(
            b".fi\n.SH \"SEE ALSO\"\n\\fBkeyd\\fR(1) (\\fBkeyd \\-\\-man\\fR), the daemon; the docs/ directory of the source.\n",
        );
        man.render_version_section(&mut page)
    })();
    rendered.map_err(|e| Failure::new(1, format!("cannot render the manual page: {e}"), None))?;
    write_stdout(&page)
}

/// One `.TP` entry per command under `parent` (built, so each knows its full name), leaves
/// only: `keyctl gen fernet`, not `keyctl gen`.
fn commands_in_man(page: &mut Vec<u8>, parent: &clap::Command) {
    for sub in parent.get_subcommands().filter(|s| s.get_name() != "help") {
        if sub.has_subcommands() {
            commands_in_man(page, sub);
            continue;
        }
        let name = sub.get_bin_name().unwrap_or(sub.get_name());
        let about = sub.get_about().map(ToString::to_string).unwrap_or_default();
        page.extend_from_slice(
            format!(".TP\n\\fB{}\\fR\n{}\n", roff_text(name), roff_text(&about)).as_bytes(),
        );
    }
}

/// `text` as roff reads it back: backslashes and hyphens escaped, and a line that would start
/// with a control character (`.` or `'`) guarded.
fn roff_text(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// `keyctl policy check FILE`.
pub(super) fn policy_check(file: &Path) -> Result<(), Failure> {
    let policy = Policy::load(file).map_err(|e| {
        let mut failure = Failure::from(Error::from(e));
        // The general hint names this very command: here, say to run it again.
        if failure.hint.is_some() && failure.code == 3 {
            failure.hint = Some("fix the lines above, then run this check again".into());
        }
        failure
    })?;
    let outputs = policy.outputs().len();
    let text = format!(
        "{}: ok: stack {:?}, {} secrets delivered under {} names\n",
        file.display(),
        policy.stack,
        policy.secrets.len(),
        outputs
    );
    write_stdout(text.as_bytes())
}

/// Writes a file that must not exist yet, with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let fail = |e: std::io::Error| {
        let hint = (e.kind() == std::io::ErrorKind::AlreadyExists).then(|| {
            "keyctl gen never overwrites a file: remove it or choose another path".to_owned()
        });
        Failure::new(1, format!("{}: {e}", path.display()), hint)
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(fail)
}

fn line(value: &str) -> Result<(), Failure> {
    let mut text = String::with_capacity(value.len() + 1);
    text.push_str(value);
    text.push('\n');
    let result = write_stdout(text.as_bytes());
    keyd::secret::SecretString::new(text); // zeroized on drop
    result
}

pub(super) fn generate(g: Gen) -> Result<(), Failure> {
    match g {
        Gen::Fernet => line(material::fernet::generate().expose_secret()),
        Gen::Password { length, alphabet } => {
            let alphabet = Alphabet::parse(&alphabet).map_err(Failure::usage)?;
            if length == 0 {
                return Err(Failure::usage("--length must be at least 1"));
            }
            if length < material::password::MIN_LENGTH {
                super::warn(
                    false,
                    &format!(
                        "{length} characters is weak (policies require at least {} unless allow_weak = true)",
                        material::password::MIN_LENGTH
                    ),
                );
            }
            line(material::password::generate(length, &alphabet).expose_secret())
        }
        Gen::Token { bytes, encoding } => {
            let encoding = Encoding::parse(&encoding).ok_or_else(|| {
                Failure::usage(format!(
                    "unknown encoding {encoding:?} (expected one of {})",
                    Encoding::NAMES
                ))
            })?;
            if bytes == 0 {
                return Err(Failure::usage("--bytes must be at least 1"));
            }
            line(material::token::generate(bytes, encoding).expose_secret())
        }
        Gen::Rsa {
            bits,
            public_out,
            jwk_out,
        } => {
            // Two attempts on two cores, the first to finish kept (see material::race).
            let raced =
                material::race::race(&[bits], material::race::cores(), material::rsa::generate);
            let pair = raced
                .into_iter()
                .next()
                .expect("one job, one result")
                .map_err(|e| Failure::usage(e.to_string()))?;
            if let Some(path) = public_out {
                write_new(&path, pair.public_pem.as_bytes(), 0o644)?;
            }
            if let Some(path) = jwk_out {
                let jwk = serde_json::to_string_pretty(&pair.jwk).expect("a JWK serialises") + "\n";
                write_new(&path, jwk.as_bytes(), 0o644)?;
            }
            write_stdout(pair.private_pem.expose_secret().as_bytes())
        }
        Gen::Tls {
            cn,
            sans,
            days,
            key_type,
            bits,
            key_out,
        } => {
            let key_type = match key_type.as_str() {
                "ecdsa-p256" => tls::KeyType::EcdsaP256,
                "rsa" => tls::KeyType::Rsa(bits),
                other => {
                    return Err(Failure::usage(format!(
                        "unknown key type {other:?} (expected ecdsa-p256 or rsa)"
                    )));
                }
            };
            if !(1..=tls::MAX_DAYS).contains(&days) {
                return Err(Failure::usage(format!(
                    "--days must be 1 to {}",
                    tls::MAX_DAYS
                )));
            }
            let spec = tls::TlsSpec {
                sans: if sans.is_empty() {
                    vec![cn.clone()]
                } else {
                    sans
                },
                cn,
                days,
                key_type,
            };
            let cert = tls::generate(&spec).map_err(|e| Failure::new(1, e.to_string(), None))?;
            match key_out {
                Some(path) => {
                    write_new(&path, cert.key_pem.expose_secret().as_bytes(), 0o600)?;
                    write_stdout(cert.cert_pem.as_bytes())
                }
                None => {
                    write_stdout(cert.cert_pem.as_bytes())?;
                    write_stdout(cert.key_pem.expose_secret().as_bytes())
                }
            }
        }
    }
}
