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
#[path = "kinds_tests.rs"]
mod tests;
