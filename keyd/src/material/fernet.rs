//! `fernet`: 32 random bytes, URL-safe base64 with padding, as Python's `Fernet.generate_key()`
//! makes them; plus the Fernet token format itself (spec 0x80), so a rotation can prove that a
//! key list encrypts with its first key and decrypts with every key (MultiFernet's rule).

use aws_lc_rs::cipher::{
    AES_128, DecryptionContext, EncryptionContext, PaddedBlockDecryptingKey,
    PaddedBlockEncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use base64::Engine as _;
use zeroize::Zeroizing;

use crate::secret::{SecretBytes, SecretString};

const VERSION: u8 = 0x80;
const HEADER_LEN: usize = 1 + 8 + 16; // version, timestamp, IV
const TAG_LEN: usize = 32;

/// Why a Fernet key or token was refused. Never carries key or plaintext bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FernetError {
    /// The key is not URL-safe base64 of exactly 32 bytes.
    #[error("not a Fernet key (expected URL-safe base64 of 32 bytes, 44 characters)")]
    BadKey,
    /// The token is malformed, or no key in the list authenticates it.
    #[error("the token is malformed or was not made with any of the given keys")]
    InvalidToken,
}

/// A new Fernet key: 32 random bytes (16 signing + 16 encryption), URL-safe base64, 44 chars.
pub fn generate() -> SecretString {
    let raw = SecretBytes::random(32);
    SecretString::new(base64::engine::general_purpose::URL_SAFE.encode(raw.expose_secret()))
}

/// A decoded Fernet key.
pub struct FernetKey {
    signing: Zeroizing<[u8; 16]>,
    encryption: Zeroizing<[u8; 16]>,
}

impl std::fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FernetKey([redacted])")
    }
}

impl FernetKey {
    /// Decodes one key (whitespace around it is ignored, as consumers strip it).
    pub fn parse(text: &str) -> Result<Self, FernetError> {
        let raw = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE
                .decode(text.trim())
                .map_err(|_| FernetError::BadKey)?,
        );
        if raw.len() != 32 {
            return Err(FernetError::BadKey);
        }
        let mut signing = Zeroizing::new([0u8; 16]);
        let mut encryption = Zeroizing::new([0u8; 16]);
        signing.copy_from_slice(&raw[..16]);
        encryption.copy_from_slice(&raw[16..]);
        Ok(Self {
            signing,
            encryption,
        })
    }

    /// Decodes a comma-separated list `new,old,…` as Airflow and MultiFernet read it.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, FernetError> {
        text.split(',').map(Self::parse).collect()
    }

    /// Encrypts `plaintext` into a Fernet token stamped with `timestamp` (Unix seconds).
    pub fn encrypt(&self, plaintext: &[u8], timestamp: u64) -> String {
        let mut iv = [0u8; 16];
        crate::secret::fill_random(&mut iv);
        let key = UnboundCipherKey::new(&AES_128, &self.encryption[..])
            .and_then(PaddedBlockEncryptingKey::cbc_pkcs7)
            .expect("a 16-byte AES-128 key is always accepted");
        let mut body = plaintext.to_vec();
        key.less_safe_encrypt(&mut body, EncryptionContext::Iv128(FixedLength::from(iv)))
            .expect("AES-CBC encryption with a fresh IV cannot fail");
        let mut token = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        token.push(VERSION);
        token.extend_from_slice(&timestamp.to_be_bytes());
        token.extend_from_slice(&iv);
        token.extend_from_slice(&body);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.signing[..]),
            &token,
        );
        token.extend_from_slice(tag.as_ref());
        base64::engine::general_purpose::URL_SAFE.encode(token)
    }

    /// Authenticates and decrypts a token (no time-to-live check).
    pub fn decrypt(&self, token: &str) -> Result<Zeroizing<Vec<u8>>, FernetError> {
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(token.trim())
            .map_err(|_| FernetError::InvalidToken)?;
        if raw.len() < HEADER_LEN + 16 + TAG_LEN || raw[0] != VERSION {
            return Err(FernetError::InvalidToken);
        }
        let (signed, tag) = raw.split_at(raw.len() - TAG_LEN);
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, &self.signing[..]),
            signed,
            tag,
        )
        .map_err(|_| FernetError::InvalidToken)?;
        let iv: [u8; 16] = signed[9..HEADER_LEN].try_into().expect("16 bytes");
        let mut body = Zeroizing::new(signed[HEADER_LEN..].to_vec());
        let key = UnboundCipherKey::new(&AES_128, &self.encryption[..])
            .and_then(PaddedBlockDecryptingKey::cbc_pkcs7)
            .expect("a 16-byte AES-128 key is always accepted");
        let len = key
            .decrypt(&mut body, DecryptionContext::Iv128(FixedLength::from(iv)))
            .map_err(|_| FernetError::InvalidToken)?
            .len();
        body.truncate(len);
        Ok(body)
    }
}

/// Decrypts with the first key of `keys` that authenticates the token (MultiFernet).
pub fn decrypt_with_any(
    keys: &[FernetKey],
    token: &str,
) -> Result<Zeroizing<Vec<u8>>, FernetError> {
    keys.iter()
        .find_map(|k| k.decrypt(token).ok())
        .ok_or(FernetError::InvalidToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_44_chars_of_urlsafe_base64_of_32_bytes() {
        let key = generate();
        assert_eq!(key.len(), 44);
        assert!(key.expose_secret().ends_with('='));
        assert!(FernetKey::parse(key.expose_secret()).is_ok());
    }

    #[test]
    fn round_trip_and_list_semantics() {
        let old = FernetKey::parse(generate().expose_secret()).unwrap();
        let new = FernetKey::parse(generate().expose_secret()).unwrap();
        let token = old.encrypt(b"connection password", 1_700_000_000);
        assert_eq!(&old.decrypt(&token).unwrap()[..], b"connection password");
        assert_eq!(new.decrypt(&token), Err(FernetError::InvalidToken));
        let list = [new, old];
        assert_eq!(
            &decrypt_with_any(&list, &token).unwrap()[..],
            b"connection password"
        );
    }

    #[test]
    fn a_tampered_token_is_refused() {
        let key = FernetKey::parse(generate().expose_secret()).unwrap();
        let token = key.encrypt(b"x", 1);
        let mut raw = base64::engine::general_purpose::URL_SAFE
            .decode(&token)
            .unwrap();
        raw[30] ^= 1;
        let bad = base64::engine::general_purpose::URL_SAFE.encode(raw);
        assert_eq!(key.decrypt(&bad), Err(FernetError::InvalidToken));
    }

    #[test]
    fn a_known_vector_from_the_fernet_spec_decrypts() {
        // github.com/fernet/spec generate.json
        let key = FernetKey::parse("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=").unwrap();
        let token = "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";
        assert_eq!(&key.decrypt(token).unwrap()[..], b"hello");
    }
}
