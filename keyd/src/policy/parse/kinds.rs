//! One `[secrets.NAME]` table: its name, its kind and the kind's fields (password, token,
//! fernet, rsa, tls, literal, template), the common fields (rotate, grace, description,
//! target) and the companion names some kinds deliver under (`public`, `jwks`, `key`).

use toml::de::{DeTable, DeValue};

use super::fields::{Entry, Fields, check_name};
use super::problems::{Checker, LineIndex, offset_in_string};
use super::targets::{check_schedule_reaches_server, check_secret_target};
use crate::material::password::{self, Alphabet};
use crate::material::rsa;
use crate::material::template;
use crate::material::tls::{self, KeyType, TlsSpec};
use crate::material::token::{self, Encoding};
use crate::policy::duration;
use crate::policy::{FernetDelivery, KindSpec, RekeyHook, SecretSpec, TargetSpec};

const KINDS: &str = "password, token, fernet, rsa, tls, literal, template";
const COMMON_FIELDS: [&str; 5] = ["kind", "description", "rotate", "grace", "rekey"];

/// A checked secret and where its parts are written, for the checks across secrets.
pub(super) struct Draft {
    pub(super) spec: SecretSpec,
    pub(super) at: usize,
    pub(super) template_at: usize,
    /// Where each companion name (`public`, `jwks`, `key`) is written.
    pub(super) companions_at: Vec<(String, &'static str, usize)>,
}

/// Checks `[secrets.NAME]` (`at` is where NAME is written); `None` when it cannot be used.
pub(super) fn check_secret(
    c: &mut Checker,
    lines: &LineIndex<'_>,
    name: &str,
    at: usize,
    table: &DeTable<'_>,
    targets: &[TargetSpec],
) -> Option<Draft> {
    // What messages call it: `secret "NAME"` (a valid name needs no escaping, and this runs
    // once per secret).
    let name_checked = check_name(name);
    let what = if name_checked.is_ok() {
        ["secret \"", name, "\""].concat()
    } else {
        format!("secret {name:?}")
    };
    let f = Fields::new(what, table);
    if let Err(message) = name_checked {
        c.err(at, message);
    }
    let Some((kind, kind_at)) = f.str(c, "kind") else {
        if f.get("kind").is_none() {
            c.err(
                at,
                format!("secret {name:?} has no `kind` (expected one of {KINDS})"),
            );
        }
        return None;
    };
    let specific: &[&str] = match kind.as_str() {
        "password" => &["length", "alphabet", "allow_weak", "target", "standalone"],
        "token" => &["bytes", "encoding", "allow_weak"],
        "fernet" => &["keep", "deliver"],
        "rsa" => &["bits", "public", "jwks", "publish_ahead"],
        "tls" => &[
            "key",
            "cn",
            "sans",
            "days",
            "key_type",
            "bits",
            "renew_before",
        ],
        "literal" => &["value"],
        "template" => &["template"],
        _ => {
            c.err(
                kind_at,
                format!("unknown kind {kind:?} (expected one of {KINDS})"),
            );
            return None;
        }
    };
    f.only_with(c, &[&COMMON_FIELDS, specific], || {
        let allowed: Vec<&str> = COMMON_FIELDS.iter().chain(specific).copied().collect();
        format!("for kind {kind:?}: {}", allowed.join(", "))
    });
    let rotate = f.duration(c, "rotate");
    let grace = f.duration(c, "grace");
    if let (Some((r, _)), Some((g, g_at))) = (rotate, grace)
        && g >= r
    {
        c.err(g_at, format!("grace {} is not shorter than rotate {} (expected the overlap to end before the next rotation)", duration::format(g), duration::format(r)));
    }
    let description = f.str(c, "description").map(|(d, _)| d);
    let rekey = f.get("rekey").and_then(|e| check_rekey(c, name, e));
    let target = f
        .get("target")
        .and_then(|e| check_secret_target(c, name, e, targets));
    let standalone = kind == "password" && check_schedule_reaches_server(c, &f, name, rotate);
    let mut companions_at = Vec::new();
    let mut companion = |c: &mut Checker, key: &'static str| -> Option<String> {
        let (n, n_at) = f.str(c, key)?;
        if let Err(message) = check_name(&n) {
            c.err(n_at, format!("`{key}`: {message}"));
        }
        companions_at.push((n.clone(), key, n_at));
        Some(n)
    };
    let mut template_at = 0;
    let spec = match kind.as_str() {
        "password" => {
            let allow_weak = f.bool(c, "allow_weak").unwrap_or(false);
            let (length, len_at) = f.int_in(c, "length", 1..=4096, password::DEFAULT_LENGTH as i64);
            let alphabet = match f.str(c, "alphabet") {
                Some((a, a_at)) => Alphabet::parse(&a).unwrap_or_else(|m| {
                    c.err(a_at, m);
                    Alphabet::Alphanumeric
                }),
                None => Alphabet::Alphanumeric,
            };
            let length = length as usize;
            if !allow_weak {
                let bits = length as f64 * alphabet.bits_per_char();
                if length < password::MIN_LENGTH {
                    c.err(len_at.max(at), format!("password length {length} is weak (expected at least {}, or allow_weak = true)", password::MIN_LENGTH));
                } else if bits < 64.0 {
                    c.err(len_at.max(at), format!("{length} characters of alphabet {alphabet} give about {bits:.0} bits (expected at least 64, or allow_weak = true)"));
                }
            }
            KindSpec::Password { length, alphabet }
        }
        "token" => {
            let allow_weak = f.bool(c, "allow_weak").unwrap_or(false);
            let (bytes, bytes_at) = f.int_in(c, "bytes", 1..=4096, token::DEFAULT_BYTES as i64);
            if !allow_weak && (bytes as usize) < token::MIN_BYTES {
                c.err(bytes_at.max(at), format!("token of {bytes} bytes is weak (expected at least {}, or allow_weak = true)", token::MIN_BYTES));
            }
            let encoding = match f.str(c, "encoding") {
                Some((e, e_at)) => Encoding::parse(&e).unwrap_or_else(|| {
                    c.err(
                        e_at,
                        format!(
                            "unknown encoding {e:?} (expected one of {})",
                            Encoding::NAMES
                        ),
                    );
                    Encoding::Hex
                }),
                None => Encoding::Hex,
            };
            KindSpec::Token {
                bytes: bytes as usize,
                encoding,
            }
        }
        "fernet" => {
            let (keep, _) = f.int_in(c, "keep", 1..=16, 2);
            let deliver = match f.str(c, "deliver") {
                Some((d, _)) if d == "list" => FernetDelivery::List,
                Some((d, _)) if d == "primary" => FernetDelivery::Primary,
                Some((d, d_at)) => {
                    c.err(
                        d_at,
                        format!("unknown deliver {d:?} (expected \"list\" or \"primary\")"),
                    );
                    FernetDelivery::List
                }
                None => FernetDelivery::List,
            };
            KindSpec::Fernet {
                keep: keep as usize,
                deliver,
            }
        }
        "rsa" => KindSpec::Rsa {
            bits: rsa_bits(c, &f),
            public: companion(c, "public"),
            jwks: companion(c, "jwks"),
            publish_ahead: f.duration(c, "publish_ahead").map(|(d, _)| d),
        },
        "tls" => {
            let key = companion(c, "key");
            if f.get("key").is_none() {
                c.err(at, format!("tls secret {name:?} has no `key` (expected key = \"NAME\" for the private key file)"));
            }
            let cn_at = f.get("cn").map_or(at, |e| e.value.span().start);
            let cn = f.str(c, "cn").map(|(cn, _)| cn);
            if f.get("cn").is_none() {
                c.err(
                    at,
                    format!("tls secret {name:?} has no `cn` (expected cn = \"host.example\")"),
                );
            }
            let sans = f.str_list(c, "sans").map(|(s, _)| s);
            // Without `sans`, the certificate's one SAN is the cn: it must be a name too.
            if f.get("sans").is_none()
                && let Some(cn) = &cn
                && cn.parse::<std::net::IpAddr>().is_err()
                && !valid_dns_name(cn)
            {
                c.err(
                    cn_at,
                    format!("cn {cn:?} is the certificate's only SAN (no `sans`), but it is neither a DNS name nor an IP address (expected a host name, or sans = [\"host.example\"])"),
                );
            }
            for (san, san_at) in sans.iter().flatten().zip(std::iter::repeat(
                f.get("sans").map_or(at, |e| e.value.span().start),
            )) {
                if san.parse::<std::net::IpAddr>().is_err() && !valid_dns_name(san) {
                    c.err(
                        san_at,
                        format!("SAN {san:?} is neither a DNS name nor an IP address"),
                    );
                }
            }
            let (days, _) = f.int_in(
                c,
                "days",
                1..=i64::from(tls::MAX_DAYS),
                i64::from(tls::DEFAULT_DAYS),
            );
            let key_type = match f.str(c, "key_type") {
                Some((t, _)) if t == "rsa" => KeyType::Rsa(rsa_bits(c, &f)),
                Some((t, _)) if t == "ecdsa-p256" => KeyType::EcdsaP256,
                Some((t, t_at)) => {
                    c.err(
                        t_at,
                        format!("unknown key_type {t:?} (expected \"ecdsa-p256\" or \"rsa\")"),
                    );
                    KeyType::EcdsaP256
                }
                None => KeyType::EcdsaP256,
            };
            if key_type == KeyType::EcdsaP256
                && let Some(e) = f.get("bits")
            {
                c.err(e.key_at, "`bits` applies only with key_type = \"rsa\"");
            }
            let cn = cn?;
            let valid_for = std::time::Duration::from_secs(days as u64 * 86_400);
            let renew_before = match f.duration(c, "renew_before") {
                Some((d, d_at)) if d >= valid_for => {
                    c.err(
                        d_at,
                        format!(
                            "renew_before {} is not shorter than the certificate's validity of {days}d (expected less, or every new certificate would be renewed at once)",
                            duration::format(d)
                        ),
                    );
                    d
                }
                Some((d, _)) => d,
                None => valid_for / 3,
            };
            KindSpec::Tls {
                key: key?,
                renew_before,
                spec: TlsSpec {
                    sans: sans.unwrap_or_else(|| vec![cn.clone()]),
                    cn,
                    days: days as u32,
                    key_type,
                },
            }
        }
        "literal" => {
            let Some((value, _)) = f.str(c, "value") else {
                if f.get("value").is_none() {
                    c.err(
                        at,
                        format!(
                            "literal secret {name:?} has no `value` (expected value = \"...\")"
                        ),
                    );
                }
                return None;
            };
            KindSpec::Literal { value }
        }
        "template" => {
            let Some((text, text_at)) = f.str(c, "template") else {
                if f.get("template").is_none() {
                    c.err(at, format!("template secret {name:?} has no `template` (expected template = \"...{{OTHER_SECRET}}...\")"));
                }
                return None;
            };
            template_at = text_at;
            match template::parse(&text) {
                Ok(pieces) => KindSpec::Template { text, pieces },
                Err(e) => {
                    c.err(
                        offset_in_string(lines.src, text_at, e.offset),
                        format!("template of {name:?}: {}", e.message),
                    );
                    return None;
                }
            }
        }
        _ => unreachable!("kinds were matched above"),
    };
    let line = lines.line(at);
    Some(Draft {
        spec: SecretSpec {
            name: name.to_owned(),
            kind: spec,
            rotate: rotate.map(|(d, _)| d),
            rekey,
            grace: grace.map(|(d, _)| d),
            description,
            target,
            standalone,
            line,
        },
        at,
        template_at,
        companions_at,
    })
}

/// Checks a secret's `rekey` (entry `e`): a non-empty command and an optional timeout.
fn check_rekey(c: &mut Checker, name: &str, e: &Entry<'_, '_>) -> Option<RekeyHook> {
    const EXPECTED: &str = "rekey = { command = [\"prog\", \"arg\"], timeout = \"10m\" }";
    let DeValue::Table(t) = e.value.get_ref() else {
        c.err(
            e.value.span().start,
            format!("`rekey` of secret {name:?} must be a table ({EXPECTED})"),
        );
        return None;
    };
    let f = Fields::new(format!("`rekey` of secret {name:?}"), t);
    f.only(c, &["command", "timeout"], "command, timeout");
    let timeout = f.duration(c, "timeout");
    match f.str_list(c, "command") {
        Some((argv, _)) if !argv.is_empty() => Some(RekeyHook {
            argv,
            timeout: timeout.map_or(RekeyHook::DEFAULT_TIMEOUT, |(t, _)| t),
        }),
        _ => {
            c.err(
                e.value.span().start,
                format!("`rekey` of secret {name:?} needs a non-empty command ({EXPECTED})"),
            );
            None
        }
    }
}

fn rsa_bits(c: &mut Checker, f: &Fields<'_, '_>) -> usize {
    match f.int(c, "bits") {
        Some((b, _)) if rsa::SIZES.contains(&(b as usize)) => b as usize,
        Some((b, b_at)) => {
            c.err(
                b_at,
                format!("unsupported RSA key size {b} (expected 2048, 3072 or 4096)"),
            );
            rsa::DEFAULT_BITS
        }
        None => rsa::DEFAULT_BITS,
    }
}

fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    // An all-numeric last label is an IP address written wrong (999.1.1.1), not a name.
    let numeric_tld = name
        .rsplit('.')
        .next()
        .is_some_and(|l| !l.is_empty() && l.chars().all(|ch| ch.is_ascii_digit()));
    !name.is_empty()
        && !numeric_tld
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{err_text, policy};
    use super::*;

    /// A policy whose only secret is `[secrets.A]` (line 3, name at column 10) with `body` from
    /// line 4 on.
    fn one(body: &str) -> String {
        format!("[stack]\nname = \"s\"\n[secrets.A]\n{body}")
    }

    /// Secret A, which must be valid.
    fn secret(body: &str) -> SecretSpec {
        policy(&one(body)).secrets.remove(0)
    }

    #[test]
    fn password_and_token_values() {
        let s = secret(
            "kind = \"password\"\nlength = 40\nalphabet = \"hex\"\nrotate = \"90d\"\ngrace = \"1d\"\ndescription = \"db\"\nstandalone = true\n",
        );
        assert!(matches!(
            s.kind,
            KindSpec::Password {
                length: 40,
                alphabet: Alphabet::Hex
            }
        ));
        assert_eq!(s.rotate, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(s.grace, Some(Duration::from_secs(86_400)));
        assert_eq!(s.description.as_deref(), Some("db"));
        assert_eq!(s.line, 3);
        assert!(s.target.is_none());

        let s = secret("kind = \"password\"\n");
        assert!(matches!(
            s.kind,
            KindSpec::Password {
                length: password::DEFAULT_LENGTH,
                alphabet: Alphabet::Alphanumeric
            }
        ));
        assert_eq!((s.rotate, s.grace), (None, None));

        let s = secret("kind = \"password\"\nlength = 4\nalphabet = \"01\"\nallow_weak = true\n");
        let KindSpec::Password { length, alphabet } = s.kind else {
            panic!("a password");
        };
        assert_eq!((length, alphabet), (4, Alphabet::Custom("01".into())));

        let s = secret("kind = \"token\"\nbytes = 48\nencoding = \"base64url\"\n");
        assert!(matches!(
            s.kind,
            KindSpec::Token {
                bytes: 48,
                encoding: Encoding::Base64url
            }
        ));
        let s = secret("kind = \"token\"\n");
        assert!(matches!(
            s.kind,
            KindSpec::Token {
                bytes: token::DEFAULT_BYTES,
                encoding: Encoding::Hex
            }
        ));
    }

    #[test]
    fn fernet_rsa_literal_and_template_values() {
        let s = secret("kind = \"fernet\"\nkeep = 3\ndeliver = \"primary\"\n");
        assert!(matches!(
            s.kind,
            KindSpec::Fernet {
                keep: 3,
                deliver: FernetDelivery::Primary
            }
        ));
        let s = secret("kind = \"fernet\"\n");
        assert!(matches!(
            s.kind,
            KindSpec::Fernet {
                keep: 2,
                deliver: FernetDelivery::List
            }
        ));

        let s = secret(
            "kind = \"rsa\"\nbits = 3072\npublic = \"A_PUB\"\njwks = \"A_JWKS\"\npublish_ahead = \"2h\"\n",
        );
        let KindSpec::Rsa {
            bits,
            public,
            jwks,
            publish_ahead,
        } = s.kind
        else {
            panic!("rsa");
        };
        assert_eq!(bits, 3072);
        assert_eq!(public.as_deref(), Some("A_PUB"));
        assert_eq!(jwks.as_deref(), Some("A_JWKS"));
        assert_eq!(publish_ahead, Some(Duration::from_secs(7200)));
        let s = secret("kind = \"rsa\"\n");
        assert!(matches!(
            s.kind,
            KindSpec::Rsa {
                bits: rsa::DEFAULT_BITS,
                public: None,
                jwks: None,
                publish_ahead: None
            }
        ));

        let s = secret("kind = \"literal\"\nvalue = \"postgres\"\n");
        assert!(matches!(&s.kind, KindSpec::Literal { value } if value == "postgres"));

        let s = secret("kind = \"template\"\ntemplate = \"plain {{text}}\"\n");
        assert!(matches!(&s.kind, KindSpec::Template { text, pieces }
            if text == "plain {{text}}" && pieces.len() == 1));
    }

    #[test]
    fn tls_values() {
        let s = secret("kind = \"tls\"\nkey = \"A_KEY\"\ncn = \"db.example\"\n");
        let KindSpec::Tls {
            key,
            spec: tls,
            renew_before,
        } = s.kind
        else {
            panic!("tls");
        };
        assert_eq!(key, "A_KEY");
        // A third of the validity by default.
        assert_eq!(renew_before, Duration::from_secs(365 * 86_400 / 3));
        assert_eq!(
            tls,
            TlsSpec {
                cn: "db.example".into(),
                sans: vec!["db.example".into()],
                days: tls::DEFAULT_DAYS,
                key_type: KeyType::EcdsaP256,
            }
        );

        let s = secret(
            "kind = \"tls\"\nkey = \"A_KEY\"\ncn = \"db\"\nsans = [\"db\", \"*.db.example\", \"10.0.0.1\", \"::1\"]\ndays = 30\nkey_type = \"rsa\"\nbits = 2048\n",
        );
        let KindSpec::Tls { spec: tls, .. } = s.kind else {
            panic!("tls");
        };
        assert_eq!(tls.sans, ["db", "*.db.example", "10.0.0.1", "::1"]);
        let s =
            secret("kind = \"tls\"\nkey = \"K\"\ncn = \"db\"\ndays = 30\nrenew_before = \"10d\"\n");
        assert!(matches!(s.kind, KindSpec::Tls { renew_before, .. }
            if renew_before == Duration::from_secs(10 * 86_400)));
        assert_eq!(tls.days, 30);
        assert_eq!(tls.key_type, KeyType::Rsa(2048));
        let s = secret("kind = \"tls\"\nkey = \"K\"\ncn = \"db\"\nkey_type = \"rsa\"\n");
        assert!(matches!(s.kind, KindSpec::Tls { spec, .. }
            if spec.key_type == KeyType::Rsa(rsa::DEFAULT_BITS)));
    }

    #[test]
    fn kind_missing_unknown_or_not_a_string() {
        assert_eq!(
            err_text(&one("description = \"x\"\n")),
            "p.toml:3:10: secret \"A\" has no `kind` (expected one of password, token, fernet, rsa, tls, literal, template)"
        );
        assert_eq!(
            err_text(&one("kind = \"passwd\"\n")),
            "p.toml:4:8: unknown kind \"passwd\" (expected one of password, token, fernet, rsa, tls, literal, template)"
        );
        assert_eq!(
            err_text(&one("kind = 1\n")),
            "p.toml:4:8: `kind` in secret \"A\" must be a string (found integer)"
        );
    }

    #[test]
    fn secret_names() {
        let src = "[stack]\nname = \"s\"\n[secrets.\"a b\"]\nkind = \"fernet\"\n[secrets.\".env\"]\nkind = \"fernet\"\n";
        assert_eq!(
            err_text(src),
            "p.toml:3:10: name \"a b\" contains ' ' (expected letters, digits, '.', '_' or '-')\n\
             p.toml:5:10: name \".env\" must not start with '.'"
        );
        let long = "N".repeat(61);
        assert_eq!(
            err_text(&format!(
                "[stack]\nname = \"s\"\n[secrets.{long}]\nkind = \"fernet\"\n"
            )),
            format!("p.toml:3:10: name \"{long}\" must be 1 to 60 characters long")
        );
        assert_eq!(check_name(&"N".repeat(60)), Ok(()));
        assert_eq!(check_name("a.b-c_D9"), Ok(()));
        assert_eq!(
            check_name(""),
            Err("name \"\" must be 1 to 60 characters long".into())
        );
        assert_eq!(
            check_name("né"),
            Err("name \"né\" contains 'é' (expected letters, digits, '.', '_' or '-')".into())
        );
    }

    #[test]
    fn fields_of_another_kind_and_wrong_types() {
        assert_eq!(
            err_text(&one("kind = \"fernet\"\nlength = 12\n")),
            "p.toml:5:1: unknown field `length` in secret \"A\" (expected for kind \"fernet\": kind, description, rotate, grace, rekey, keep, deliver)"
        );
        assert_eq!(
            err_text(&one(
                "kind = \"password\"\nlength = \"24\"\nallow_weak = \"yes\"\ndescription = 1\n"
            )),
            "p.toml:5:10: `length` in secret \"A\" must be an integer (found string)\n\
             p.toml:6:14: `allow_weak` in secret \"A\" must be true or false (found string)\n\
             p.toml:7:15: `description` in secret \"A\" must be a string (found integer)"
        );
    }

    #[test]
    fn rekey_command_and_timeout() {
        let s = secret(
            "kind = \"fernet\"\nrekey = { command = [\"airflow\", \"rotate-fernet-key\"], timeout = \"5m\" }\n",
        );
        assert_eq!(
            s.rekey,
            Some(RekeyHook {
                argv: vec!["airflow".into(), "rotate-fernet-key".into()],
                timeout: Duration::from_secs(300),
            })
        );
        let s = secret("kind = \"fernet\"\nrekey = { command = [\"x\"] }\n");
        assert_eq!(s.rekey.unwrap().timeout, RekeyHook::DEFAULT_TIMEOUT);
        assert_eq!(
            err_text(&one("kind = \"fernet\"\nrekey = { command = [] }\n")),
            "p.toml:5:9: `rekey` of secret \"A\" needs a non-empty command (rekey = { command = [\"prog\", \"arg\"], timeout = \"10m\" })"
        );
        assert_eq!(
            err_text(&one("kind = \"fernet\"\nrekey = \"airflow\"\n")),
            "p.toml:5:9: `rekey` of secret \"A\" must be a table (rekey = { command = [\"prog\", \"arg\"], timeout = \"10m\" })"
        );
    }

    #[test]
    fn rotate_and_grace() {
        assert_eq!(
            err_text(&one("kind = \"fernet\"\nrotate = \"1d\"\ngrace = \"1d\"\n")),
            "p.toml:6:9: grace 1d is not shorter than rotate 1d (expected the overlap to end before the next rotation)"
        );
        assert_eq!(
            err_text(&one("kind = \"fernet\"\nrotate = \"90x\"\ngrace = \"\"\n")),
            "p.toml:5:10: `rotate` in secret \"A\": bad duration \"90x\": unknown unit 'x' (expected a whole number followed by s, m, h, d or w, e.g. \"90d\" or \"1d12h\")\n\
             p.toml:6:9: `grace` in secret \"A\": empty duration (expected a whole number followed by s, m, h, d or w, e.g. \"90d\" or \"1d12h\")"
        );
    }

    #[test]
    fn password_length_and_alphabet() {
        assert_eq!(
            err_text(&one("kind = \"password\"\nlength = 0\n")),
            "p.toml:5:10: `length` = 0 in secret \"A\" is out of range (expected 1 to 4096)"
        );
        assert_eq!(
            err_text(&one("kind = \"password\"\nlength = 4097\n")),
            "p.toml:5:10: `length` = 4097 in secret \"A\" is out of range (expected 1 to 4096)"
        );
        assert_eq!(
            err_text(&one("kind = \"password\"\nlength = 11\n")),
            "p.toml:5:10: password length 11 is weak (expected at least 12, or allow_weak = true)"
        );
        assert_eq!(
            err_text(&one(
                "kind = \"password\"\nlength = 12\nalphabet = \"hex\"\n"
            )),
            "p.toml:5:10: 12 characters of alphabet hex give about 48 bits (expected at least 64, or allow_weak = true)"
        );
        // No `length`: the default, reported at the secret's name.
        assert_eq!(
            err_text(&one("kind = \"password\"\nalphabet = \"01\"\n")),
            "p.toml:3:10: 24 characters of alphabet \"01\" give about 24 bits (expected at least 64, or allow_weak = true)"
        );
        assert_eq!(
            err_text(&one("kind = \"password\"\nalphabet = \"abca\"\n")),
            "p.toml:5:12: alphabet \"abca\" repeats 'a': a literal set lists each character once (or did you mean one of alphanumeric, ascii-printable, hex?)"
        );
        assert_eq!(
            err_text(&one("kind = \"password\"\nalphabet = \"a b\"\n")),
            "p.toml:5:12: alphabet \"a b\" contains ' ': a literal set takes printable ASCII characters without spaces (or one of alphanumeric, ascii-printable, hex)"
        );
    }

    #[test]
    fn token_bytes_and_encoding() {
        assert_eq!(
            err_text(&one("kind = \"token\"\nbytes = 15\n")),
            "p.toml:5:9: token of 15 bytes is weak (expected at least 16, or allow_weak = true)"
        );
        assert_eq!(
            err_text(&one("kind = \"token\"\nbytes = -1\n")),
            "p.toml:5:9: `bytes` = -1 in secret \"A\" is out of range (expected 1 to 4096)"
        );
        assert_eq!(
            err_text(&one("kind = \"token\"\nencoding = \"base32\"\n")),
            "p.toml:5:12: unknown encoding \"base32\" (expected one of hex, base64, base64url)"
        );
        assert!(matches!(
            secret("kind = \"token\"\nbytes = 8\nallow_weak = true\n").kind,
            KindSpec::Token { bytes: 8, .. }
        ));
    }

    #[test]
    fn fernet_keep_and_deliver() {
        assert_eq!(
            err_text(&one("kind = \"fernet\"\nkeep = 17\ndeliver = \"all\"\n")),
            "p.toml:5:8: `keep` = 17 in secret \"A\" is out of range (expected 1 to 16)\n\
             p.toml:6:11: unknown deliver \"all\" (expected \"list\" or \"primary\")"
        );
    }

    #[test]
    fn rsa_bits_companions_and_publish_ahead() {
        assert_eq!(
            err_text(&one(
                "kind = \"rsa\"\nbits = 1024\npublic = \"a b\"\njwks = \".jwks\"\npublish_ahead = \"1y\"\n"
            )),
            "p.toml:5:8: unsupported RSA key size 1024 (expected 2048, 3072 or 4096)\n\
             p.toml:6:10: `public`: name \"a b\" contains ' ' (expected letters, digits, '.', '_' or '-')\n\
             p.toml:7:8: `jwks`: name \".jwks\" must not start with '.'\n\
             p.toml:8:17: `publish_ahead` in secret \"A\": bad duration \"1y\": unknown unit 'y' (expected a whole number followed by s, m, h, d or w, e.g. \"90d\" or \"1d12h\")"
        );
    }

    #[test]
    fn tls_missing_key_and_cn() {
        assert_eq!(
            err_text(&one("kind = \"tls\"\n")),
            "p.toml:3:10: tls secret \"A\" has no `key` (expected key = \"NAME\" for the private key file)\n\
             p.toml:3:10: tls secret \"A\" has no `cn` (expected cn = \"host.example\")"
        );
    }

    #[test]
    fn tls_names_that_are_neither_dns_names_nor_ip_addresses_are_refused() {
        assert_eq!(
            err_text(&one("kind = \"tls\"\nkey = \"K\"\ncn = \"bad name!\"\n")),
            "p.toml:6:6: cn \"bad name!\" is the certificate's only SAN (no `sans`), but it is neither a DNS name nor an IP address (expected a host name, or sans = [\"host.example\"])"
        );
        assert_eq!(
            err_text(&one(
                "kind = \"tls\"\nkey = \"K\"\ncn = \"x\"\nsans = [\"999.1.1.1\"]\n"
            )),
            "p.toml:7:8: SAN \"999.1.1.1\" is neither a DNS name nor an IP address"
        );
    }

    #[test]
    fn tls_sans_days_key_type_and_bits() {
        assert_eq!(
            err_text(&one(
                "kind = \"tls\"\nkey = \"K\"\ncn = \"db\"\nsans = [\"db\", \"bad name\", \"-x.example\"]\ndays = 36501\n"
            )),
            "p.toml:7:8: SAN \"bad name\" is neither a DNS name nor an IP address\n\
             p.toml:7:8: SAN \"-x.example\" is neither a DNS name nor an IP address\n\
             p.toml:8:8: `days` = 36501 in secret \"A\" is out of range (expected 1 to 36500)"
        );
        assert_eq!(
            err_text(&one(
                "kind = \"tls\"\nkey = \"K\"\ncn = \"db\"\nkey_type = \"ed25519\"\nbits = 2048\n"
            )),
            "p.toml:7:12: unknown key_type \"ed25519\" (expected \"ecdsa-p256\" or \"rsa\")\n\
             p.toml:8:1: `bits` applies only with key_type = \"rsa\""
        );
        assert_eq!(
            err_text(&one(
                "kind = \"tls\"\nkey = \"K\"\ncn = \"db\"\ndays = 1\nrenew_before = \"2d\"\n"
            )),
            "p.toml:8:16: renew_before 2d is not shorter than the certificate's validity of 1d (expected less, or every new certificate would be renewed at once)"
        );
        assert_eq!(
            err_text(&one(
                "kind = \"tls\"\nkey = \"K\"\ncn = \"db\"\nkey_type = \"rsa\"\nbits = 1024\nsans = [1]\n"
            )),
            "p.toml:8:8: unsupported RSA key size 1024 (expected 2048, 3072 or 4096)\n\
             p.toml:9:9: `sans` in secret \"A\" must list strings (found integer)"
        );
    }

    #[test]
    fn literal_and_template_problems() {
        assert_eq!(
            err_text(&one("kind = \"literal\"\n")),
            "p.toml:3:10: literal secret \"A\" has no `value` (expected value = \"...\")"
        );
        assert_eq!(
            err_text(&one("kind = \"literal\"\nvalue = 5\n")),
            "p.toml:5:9: `value` in secret \"A\" must be a string (found integer)"
        );
        assert_eq!(
            err_text(&one("kind = \"template\"\n")),
            "p.toml:3:10: template secret \"A\" has no `template` (expected template = \"...{OTHER_SECRET}...\")"
        );
        // Syntax errors point at the offending brace inside the string.
        assert_eq!(
            err_text(&one("kind = \"template\"\ntemplate = \"ab{c\"\n")),
            "p.toml:5:15: template of \"A\": unclosed '{' (expected {NAME} or {NAME|url}; write '{{' for a literal brace)"
        );
        assert_eq!(
            err_text(&one("kind = \"template\"\ntemplate = \"x}\"\n")),
            "p.toml:5:14: template of \"A\": unmatched '}' (write '}}' for a literal brace)"
        );
        assert_eq!(
            err_text(&one("kind = \"template\"\ntemplate = \"{A|b64}\"\n")),
            "p.toml:5:13: template of \"A\": unknown filter \"b64\" (expected |url)"
        );
    }

    #[test]
    fn dns_names() {
        for ok in [
            "db",
            "db.example",
            "*.example.org",
            "a_b.c-d",
            &"a".repeat(63),
        ] {
            assert!(valid_dns_name(ok), "{ok}");
        }
        for bad in [
            "",
            "*.",
            "a..b",
            "-a",
            "a-",
            "a b",
            "é.example",
            &"a".repeat(64),
        ] {
            assert!(!valid_dns_name(bad), "{bad}");
        }
        let long = vec!["a".repeat(63); 4].join("."); // 255 characters
        assert!(!valid_dns_name(&long));
    }
}
