//! The tests of `kinds.rs`: each kind's fields, defaults and errors.

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
    let s = secret("kind = \"tls\"\nkey = \"K\"\ncn = \"db\"\ndays = 30\nrenew_before = \"10d\"\n");
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
