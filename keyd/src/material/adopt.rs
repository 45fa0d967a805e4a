//! `adopt`: existing values (made by a script, openssl, Python) turned into [`Material`] and
//! checked against their kind before `keyctl import` keeps them: Fernet keys, RSA private keys
//! (PKCS#1 or PKCS#8 PEM) with their public half derived and compared to an imported one,
//! certificates with the key that must match them, passwords and tokens against the policy's
//! length and alphabet. Values are kept byte for byte as they were (a trailing newline
//! included), so consumers see exactly what they saw before. Messages never quote a value.

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use zeroize::Zeroizing;

use super::password::Alphabet;
use super::rsa::{Jwk, RsaKeyPair, thumbprint};
use super::tls::TlsCertificate;
use super::token::Encoding;
use crate::secret::SecretString;

/// A kept value that does not match what the policy would make now: it works, and the next
/// rotation replaces it with one that does.
pub type Warning = String;

/// One PEM block: its label and its DER (zeroized on drop).
type PemBlock = (String, Zeroizing<Vec<u8>>);

/// The PEM blocks of `text`: label and DER, in order. Text outside blocks is ignored.
fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, String> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let mut body = Zeroizing::new(String::new());
        let mut ended = false;
        for line in lines.by_ref() {
            if line.starts_with("-----END ") {
                ended = true;
                break;
            }
            if line.contains(':') {
                // RFC 1421 headers (Proc-Type, DEK-Info): an encrypted legacy key.
                return Err(format!(
                    "the {label} PEM block is encrypted; decrypt it first (openssl pkey -in FILE -out FILE)"
                ));
            }
            body.push_str(line);
        }
        if !ended {
            return Err(format!("the {label} PEM block has no END line"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| format!("the {label} PEM block is not valid base64"))?;
        blocks.push((label.to_owned(), Zeroizing::new(der)));
    }
    Ok(blocks)
}

/// A Fernet key: URL-safe base64 of exactly 32 bytes (surrounding whitespace allowed, as
/// consumers strip it).
pub fn fernet(value: &SecretString) -> Result<(), String> {
    super::fernet::FernetKey::parse(value.expose_secret())
        .map(drop)
        .map_err(|_| {
            let trimmed = value.expose_secret().trim();
            let decoded = base64::engine::general_purpose::URL_SAFE
                .decode(trimmed)
                .map(|d| Zeroizing::new(d).len());
            match decoded {
                Ok(n) => format!(
                    "not a Fernet key: it decodes to {n} bytes (expected URL-safe base64 of 32 bytes, 44 characters)"
                ),
                Err(_) => format!(
                    "not a Fernet key: {} characters that are not URL-safe base64 (expected URL-safe base64 of 32 bytes, 44 characters)",
                    trimmed.len()
                ),
            }
        })
}

/// A password against the policy's length and alphabet: a mismatch is a warning.
pub fn password(value: &SecretString, length: usize, alphabet: &Alphabet) -> Vec<Warning> {
    let text = value.expose_secret().trim_end_matches(['\n', '\r']);
    let mut warnings = Vec::new();
    let chars = text.chars().count();
    if chars < length {
        warnings.push(format!(
            "{chars} characters where the policy makes {length}"
        ));
    }
    let allowed = alphabet.chars();
    let outside = text
        .chars()
        .filter(|c| !c.is_ascii() || !allowed.contains(&(*c as u8)))
        .count();
    if outside > 0 {
        warnings.push(format!(
            "{outside} characters outside the policy's alphabet ({alphabet})"
        ));
    }
    if text.len() != value.len() {
        warnings.push("ends with a newline (kept: consumers see the value as before)".into());
    }
    warnings
}

/// A token against the policy's size and encoding (whitespace inside, as `openssl rand -base64`
/// wraps its output, is allowed): a mismatch is a warning.
pub fn token(value: &SecretString, bytes: usize, encoding: Encoding) -> Vec<Warning> {
    let compact: Zeroizing<String> = Zeroizing::new(
        value
            .expose_secret()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect(),
    );
    let decoded = match encoding {
        Encoding::Hex => (compact.len().is_multiple_of(2)
            && compact.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(compact.len() / 2),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .ok()
            .map(|d| Zeroizing::new(d).len()),
        Encoding::Base64url => base64::engine::general_purpose::URL_SAFE
            .decode(compact.as_bytes())
            .ok()
            .map(|d| Zeroizing::new(d).len()),
    };
    match decoded {
        None => vec![format!("not {encoding} text (the policy makes {encoding})")],
        Some(n) if n < bytes => vec![format!("{n} bytes where the policy makes {bytes}")],
        Some(_) => Vec::new(),
    }
}

/// An RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY` PEM), kept as it is,
/// with its public key, JWK and `kid` derived. A key of another size than `bits` is a warning.
pub fn rsa(value: &SecretString, bits: usize) -> Result<(RsaKeyPair, Vec<Warning>), String> {
    let blocks = pem_blocks(value.expose_secret())?;
    let Some((label, der)) = blocks.first() else {
        return Err("not PEM (expected an RSA private key: PKCS#8 \"BEGIN PRIVATE KEY\" or PKCS#1 \"BEGIN RSA PRIVATE KEY\")".into());
    };
    let key = match label.as_str() {
        "PRIVATE KEY" => KeyPair::from_pkcs8(der),
        "RSA PRIVATE KEY" => KeyPair::from_der(der),
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {
            return Err(format!(
                "holds a public key (\"BEGIN {label}\") where the private key belongs (expected PKCS#8 \"BEGIN PRIVATE KEY\" or PKCS#1 \"BEGIN RSA PRIVATE KEY\")"
            ));
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err("the private key is encrypted; decrypt it first (openssl pkey -in FILE -out FILE)".into());
        }
        other => {
            return Err(format!(
                "holds \"BEGIN {other}\" (expected an RSA private key: \"BEGIN PRIVATE KEY\" or \"BEGIN RSA PRIVATE KEY\")"
            ));
        }
    }
    .map_err(|_| "the RSA private key does not parse (not RSA, or damaged)".to_owned())?;
    let public = key.public_key();
    let spki: PublicKeyX509Der<'static> = public
        .as_der()
        .map_err(|_| "the public key cannot be encoded".to_owned())?;
    let n = super::b64url_nopad(public.modulus().big_endian_without_leading_zero());
    let e = super::b64url_nopad(public.exponent().big_endian_without_leading_zero());
    let kid = thumbprint(&n, &e);
    let found_bits = key.public_modulus_len() * 8;
    let mut warnings = Vec::new();
    if found_bits != bits {
        warnings.push(format!(
            "{found_bits}-bit key where the policy makes {bits} bits"
        ));
    }
    let pair = RsaKeyPair {
        private_pem: value.duplicate(),
        public_pem: super::pem("PUBLIC KEY", spki.as_ref()),
        jwk: Jwk {
            kty: "RSA".into(),
            n,
            e,
            alg: "RS256".into(),
            use_: "sig".into(),
            kid: kid.clone(),
        },
        kid,
    };
    Ok((pair, warnings))
}

/// Checks an imported public key (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY` PEM) against the
/// one derived from the private key; on a match the imported text is kept as the delivered
/// public PEM (byte for byte).
pub fn rsa_public(pair: &mut RsaKeyPair, public_text: &str) -> Result<(), String> {
    let blocks = pem_blocks(public_text)?;
    let Some((label, der)) = blocks.first() else {
        return Err("not PEM (expected the public key: \"BEGIN PUBLIC KEY\")".into());
    };
    let derived = super::rsa::pem_body(&pair.public_pem).unwrap_or_default();
    let same = match label.as_str() {
        "PUBLIC KEY" => der.as_slice() == derived.as_slice(),
        // PKCS#1 RSAPublicKey: the BIT STRING inside the SPKI ends with it.
        "RSA PUBLIC KEY" => derived.ends_with(der),
        "PRIVATE KEY" | "RSA PRIVATE KEY" => {
            return Err(
                "holds a private key where the public key belongs (expected \"BEGIN PUBLIC KEY\")"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "holds \"BEGIN {other}\" (expected \"BEGIN PUBLIC KEY\")"
            ));
        }
    };
    if !same {
        return Err(format!(
            "is not the public half of the imported private key (kid {})",
            pair.kid
        ));
    }
    pair.public_pem = public_text.to_owned();
    Ok(())
}

/// Checks an imported JWKS: it must hold the key's JWK (same modulus and exponent).
pub fn rsa_jwks(pair: &RsaKeyPair, jwks_text: &str) -> Result<(), String> {
    let doc: serde_json::Value =
        serde_json::from_str(jwks_text).map_err(|e| format!("not JSON ({e})"))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("not a JWKS (expected {\"keys\": [...]})")?;
    let holds = keys.iter().any(|k| {
        k.get("n").and_then(|n| n.as_str()) == Some(pair.jwk.n.as_str())
            && k.get("e").and_then(|e| e.as_str()) == Some(pair.jwk.e.as_str())
    });
    if holds {
        Ok(())
    } else {
        Err(format!(
            "does not hold the imported private key's public key (kid {})",
            pair.kid
        ))
    }
}

/// A certificate (PEM) and its private key (PKCS#8 PEM): the key must be the certificate's.
pub fn tls(cert_text: &str, key: &SecretString) -> Result<TlsCertificate, String> {
    let blocks = pem_blocks(cert_text)?;
    let Some((_, der)) = blocks.iter().find(|(l, _)| l == "CERTIFICATE") else {
        let found = blocks
            .first()
            .map_or("no PEM block".to_owned(), |(l, _)| format!("\"BEGIN {l}\""));
        return Err(format!(
            "the certificate file holds {found} (expected \"BEGIN CERTIFICATE\")"
        ));
    };
    let key_blocks = pem_blocks(key.expose_secret())?;
    match key_blocks.first().map(|(l, _)| l.as_str()) {
        Some("PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY") => {}
        Some(other) => {
            return Err(format!(
                "the key file holds \"BEGIN {other}\" (expected the certificate's private key, \"BEGIN PRIVATE KEY\")"
            ));
        }
        None => return Err("the key file is not PEM (expected \"BEGIN PRIVATE KEY\")".into()),
    }
    let cert = TlsCertificate {
        cert_pem: cert_text.to_owned(),
        key_pem: key.duplicate(),
        fingerprint: fingerprint(der),
        not_after: not_after(der).ok_or("the certificate's validity does not parse")?,
    };
    super::tls::prove(&cert).map_err(|e| format!("certificate and key do not match: {e}"))?;
    Ok(cert)
}

fn fingerprint(der: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// One DER element at the start of `der`: tag, contents, rest (definite lengths of at most
/// four bytes; `None` for anything else or a truncated element).
pub(crate) fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The certificate's notAfter, Unix seconds: Certificate → tbsCertificate → (version), serial,
/// signature, issuer, validity → notAfter (UTCTime or GeneralizedTime).
fn not_after(der: &[u8]) -> Option<i64> {
    let (_, cert, _) = der_element(der)?;
    let (_, tbs, _) = der_element(cert)?;
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] version
    }
    for _ in 0..3 {
        rest = der_element(rest)?.2; // serial, signature, issuer
    }
    let (_, validity, _) = der_element(rest)?;
    let (_, _, after_not_before) = der_element(validity)?;
    let (tag, time, _) = der_element(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        0x18 => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<u8> { rest.get(i..i + 2)?.parse().ok() };
    let month = time::Month::try_from(field(0)?).ok()?;
    let date = time::Date::from_calendar_date(year, month, field(2)?).ok()?;
    let at = date
        .with_hms(field(4)?, field(6)?, field(8)?)
        .ok()?
        .assume_utc();
    Some(at.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_adopted_with_its_expiry() {
        let spec = super::super::tls::TlsSpec {
            cn: "flow.api".into(),
            sans: vec!["localhost".into()],
            days: 30,
            key_type: super::super::tls::KeyType::EcdsaP256,
        };
        let made = super::super::tls::generate(&spec).unwrap();
        let adopted = tls(&made.cert_pem, &made.key_pem).unwrap();
        assert_eq!(adopted.not_after, made.not_after);
        assert_eq!(adopted.fingerprint, made.fingerprint);
        let other = super::super::tls::generate(&spec).unwrap();
        let err = tls(&made.cert_pem, &other.key_pem).unwrap_err();
        assert!(err.contains("do not match"), "{err}");
    }

    #[test]
    fn a_public_key_is_refused_where_the_private_key_belongs() {
        let pair = super::super::rsa::generate(2048).unwrap();
        let err = rsa(&SecretString::new(pair.public_pem.clone()), 2048).unwrap_err();
        assert!(err.contains("public key"), "{err}");
        let (mut adopted, warnings) = rsa(&pair.private_pem, 4096).unwrap();
        assert_eq!(adopted.kid, pair.kid);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        rsa_public(&mut adopted, &pair.public_pem).unwrap();
        rsa_jwks(&adopted, &super::super::rsa::jwks([&pair.jwk])).unwrap();
        let other = super::super::rsa::generate(2048).unwrap();
        let err = rsa_public(&mut adopted, &other.public_pem).unwrap_err();
        assert!(err.contains("not the public half"), "{err}");
        let err = rsa_jwks(&adopted, &super::super::rsa::jwks([&other.jwk])).unwrap_err();
        assert!(err.contains("does not hold"), "{err}");
    }

    #[test]
    fn short_fernet_keys_are_refused() {
        let err = fernet(&SecretString::new("c2hvcnQ=".into())).unwrap_err();
        assert!(err.contains("5 bytes"), "{err}");
        fernet(&SecretString::new(format!(
            "{}\n",
            super::super::fernet::generate().expose_secret()
        )))
        .unwrap();
    }
}
