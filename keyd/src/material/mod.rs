//! Generators, one module per kind of key material. Each takes its validated spec from the
//! policy and returns a [`Material`]: the value(s) to store and deliver, in zeroizing types.

pub mod adopt;
pub mod fernet;
pub mod password;
pub mod race;
pub mod rsa;
pub mod template;
pub mod tls;
pub mod token;

use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

/// Why key material could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    /// RSA generation failed.
    #[error(transparent)]
    Rsa(#[from] rsa::RsaError),
    /// Certificate generation failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// One generated value of a secret, with every part that gets delivered. Not `Clone`: a copy
/// is [`Material::duplicate`].
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Material {
    /// A single text value: password, token, Fernet key, literal, rendered template.
    Text {
        /// The value.
        #[serde(with = "crate::secret::stored")]
        value: SecretString,
    },
    /// An RSA signing key pair.
    Rsa(rsa::RsaKeyPair),
    /// A self-signed certificate and its private key.
    Tls(tls::TlsCertificate),
}

impl Material {
    /// An explicit copy (the secret parts through [`SecretString::duplicate`]).
    pub fn duplicate(&self) -> Material {
        match self {
            Material::Text { value } => Material::Text {
                value: value.duplicate(),
            },
            Material::Rsa(pair) => Material::Rsa(pair.duplicate()),
            Material::Tls(cert) => Material::Tls(cert.duplicate()),
        }
    }

    /// A short public identifier of the key, shown in summaries: the JWK thumbprint of an RSA key,
    /// the SHA-256 fingerprint of a certificate. Text values have none: a hash of a password
    /// would let anyone holding the summary test guesses offline.
    pub fn fingerprint(&self) -> Option<String> {
        match self {
            Material::Text { .. } => None,
            Material::Rsa(pair) => Some(format!("kid {}", pair.kid)),
            Material::Tls(cert) => Some(format!("sha256 {}", cert.fingerprint)),
        }
    }
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Material::Text { .. } => f.write_str("Material::Text([redacted])"),
            Material::Rsa(pair) => pair.fmt(f),
            Material::Tls(cert) => cert.fmt(f),
        }
    }
}

/// Standard base64 with padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// URL-safe base64 without padding (JOSE).
pub(crate) fn b64url_nopad(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// PEM armour with 64-character lines, as OpenSSL writes it.
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let body = b64(der);
    let mut out = String::with_capacity(body.len() + body.len() / 64 + 64);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    crate::secret::wipe(body.into_bytes());
    out
}
