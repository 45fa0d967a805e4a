//! `token`: random bytes, encoded as hex, base64 or base64url (session keys, Flask `SECRET_KEY`).

use base64::Engine as _;

use crate::secret::{SecretBytes, SecretString};

/// Default size in bytes.
pub const DEFAULT_BYTES: usize = 32;
/// Fewest bytes accepted without `allow_weak = true`.
pub const MIN_BYTES: usize = 16;

/// How token bytes are written out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Lowercase hexadecimal: safe anywhere.
    Hex,
    /// Standard base64 with padding (`+ / =`).
    Base64,
    /// URL-safe base64 with padding (`- _ =`).
    Base64url,
}

impl Encoding {
    /// Names accepted in policies and on the command line.
    pub const NAMES: &'static str = "hex, base64, base64url";

    /// Parses an encoding name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "hex" => Some(Self::Hex),
            "base64" => Some(Self::Base64),
            "base64url" => Some(Self::Base64url),
            _ => None,
        }
    }

    /// Encodes `bytes`.
    pub fn encode(self, bytes: &[u8]) -> String {
        match self {
            Self::Hex => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                let mut s = String::with_capacity(bytes.len() * 2);
                for b in bytes {
                    s.push(DIGITS[(b >> 4) as usize] as char);
                    s.push(DIGITS[(b & 15) as usize] as char);
                }
                s
            }
            Self::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
            Self::Base64url => base64::engine::general_purpose::URL_SAFE.encode(bytes),
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
            Self::Base64url => "base64url",
        })
    }
}

/// `bytes` random bytes, encoded.
pub fn generate(bytes: usize, encoding: Encoding) -> SecretString {
    let raw = SecretBytes::random(bytes);
    SecretString::new(encoding.encode(raw.expose_secret()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_have_the_expected_shape() {
        let hex = generate(32, Encoding::Hex);
        assert_eq!(hex.len(), 64);
        assert!(hex.expose_secret().bytes().all(|b| b.is_ascii_hexdigit()));
        let b64 = generate(64, Encoding::Base64);
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(b64.expose_secret())
                .unwrap()
                .len(),
            64
        );
        let url = generate(33, Encoding::Base64url);
        assert!(!url.expose_secret().contains(['+', '/']));
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE
                .decode(url.expose_secret())
                .unwrap()
                .len(),
            33
        );
    }

    #[test]
    fn tokens_differ() {
        assert_ne!(
            generate(16, Encoding::Hex).expose_secret(),
            generate(16, Encoding::Hex).expose_secret()
        );
    }
}
