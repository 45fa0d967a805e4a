//! `rsa`: an RSA signing key pair for RS256 JWTs. Private key as PKCS#8 PEM, public key as SPKI
//! PEM, and a JWK whose `kid` is the RFC 7638 thumbprint, so every verifier can name the key.
//! Keys are made by aws-lc-rs (about 3x faster than `openssl genrsa` for 4096 bits).

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

/// Key sizes accepted in policies.
pub const SIZES: [usize; 3] = [2048, 3072, 4096];
/// The default key size.
pub const DEFAULT_BITS: usize = 4096;

/// A generated RSA key pair with its public forms.
#[derive(Serialize, Deserialize)]
pub struct RsaKeyPair {
    /// PKCS#8 private key, PEM.
    #[serde(with = "crate::secret::stored")]
    pub private_pem: SecretString,
    /// SubjectPublicKeyInfo public key, PEM.
    pub public_pem: String,
    /// The public key as a JWK (`kty`, `n`, `e`, `alg`, `use`, `kid`).
    pub jwk: Jwk,
    /// RFC 7638 thumbprint of the public key (base64url SHA-256), also the JWK's `kid`.
    pub kid: String,
}

impl RsaKeyPair {
    /// An explicit copy (the private key through [`SecretString::duplicate`]).
    pub fn duplicate(&self) -> RsaKeyPair {
        RsaKeyPair {
            private_pem: self.private_pem.duplicate(),
            public_pem: self.public_pem.clone(),
            jwk: self.jwk.clone(),
            kid: self.kid.clone(),
        }
    }
}

impl std::fmt::Debug for RsaKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RsaKeyPair")
            .field("kid", &self.kid)
            .field("private_pem", &"[redacted]")
            .finish()
    }
}

/// A public RSA JSON Web Key (RFC 7517) for RS256 signatures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `RSA`.
    pub kty: String,
    /// Modulus, base64url without padding.
    pub n: String,
    /// Public exponent, base64url without padding.
    pub e: String,
    /// Always `RS256`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// The RFC 7638 thumbprint.
    pub kid: String,
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RsaError {
    /// `bits` is not one of 2048, 3072, 4096.
    #[error("unsupported RSA key size {0} (expected 2048, 3072 or 4096)")]
    UnsupportedSize(usize),
    /// The crypto library refused (not expected on a working system).
    #[error("RSA key generation failed in aws-lc")]
    Generation,
}

/// Generates a key pair of `bits` bits.
pub fn generate(bits: usize) -> Result<RsaKeyPair, RsaError> {
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        other => return Err(RsaError::UnsupportedSize(other)),
    };
    let pair = KeyPair::generate(size).map_err(|_| RsaError::Generation)?;
    let private_der: Pkcs8V1Der<'static> = pair.as_der().map_err(|_| RsaError::Generation)?;
    let private_pem = SecretString::new(super::pem("PRIVATE KEY", private_der.as_ref()));
    drop(private_der);
    let public = pair.public_key();
    let spki: PublicKeyX509Der<'static> = public.as_der().map_err(|_| RsaError::Generation)?;
    let public_pem = super::pem("PUBLIC KEY", spki.as_ref());
    let n = super::b64url_nopad(public.modulus().big_endian_without_leading_zero());
    let e = super::b64url_nopad(public.exponent().big_endian_without_leading_zero());
    let kid = thumbprint(&n, &e);
    let jwk = Jwk {
        kty: "RSA".into(),
        n,
        e,
        alg: "RS256".into(),
        use_: "sig".into(),
        kid: kid.clone(),
    };
    Ok(RsaKeyPair {
        private_pem,
        public_pem,
        jwk,
        kid,
    })
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace.
pub fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    super::b64url_nopad(digest.as_ref())
}

/// A JWKS document (`{"keys":[…]}`) holding `keys`, newest first.
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a Jwk>) -> String {
    let keys: Vec<&Jwk> = keys.into_iter().collect();
    serde_json::to_string_pretty(&serde_json::json!({ "keys": keys }))
        .expect("a JWK always serialises")
        + "\n"
}

/// Proves a key pair works: the private key signs (RS256), the public key verifies, and the
/// JWK and `kid` describe that public key.
pub fn prove(pair: &RsaKeyPair) -> Result<(), String> {
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, UnparsedPublicKey};
    let der = zeroize::Zeroizing::new(
        pem_body(pair.private_pem.expose_secret()).ok_or("the private key is not PEM")?,
    );
    let key =
        KeyPair::from_pkcs8(&der).map_err(|e| format!("the private key does not parse: {e}"))?;
    let message = b"keyd rotation test";
    let mut signature = vec![0u8; key.public_modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        message,
        &mut signature,
    )
    .map_err(|_| "the private key cannot sign")?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
        .verify(message, &signature)
        .map_err(|_| "the signature does not verify")?;
    let n = super::b64url_nopad(key.public_key().modulus().big_endian_without_leading_zero());
    if n != pair.jwk.n || thumbprint(&pair.jwk.n, &pair.jwk.e) != pair.kid {
        return Err("the JWK does not describe the private key".into());
    }
    Ok(())
}

/// The DER inside a PEM block.
pub(crate) fn pem_body(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .ok();
    crate::secret::wipe(body.into_bytes());
    der
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generates_a_2048_bit_pair_with_matching_jwk() {
        let pair = generate(2048).unwrap();
        assert!(
            pair.private_pem
                .expose_secret()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        assert!(pair.public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(pair.jwk.e, "AQAB");
        assert_eq!(pair.jwk.kid, pair.kid);
        assert_eq!(pair.kid, thumbprint(&pair.jwk.n, &pair.jwk.e));
        // 2048-bit modulus = 256 bytes = 342 base64url characters without padding.
        assert_eq!(pair.jwk.n.len(), 342);
        assert!(matches!(
            generate(1024),
            Err(RsaError::UnsupportedSize(1024))
        ));
    }
}
