//! Secret and public value types, and the system's randomness. Owns the rule that key material
//! is zeroized when dropped, never shown by `Debug`, never copied, compared or serialised
//! implicitly: reading is `expose_secret()`, copying is `duplicate()`, equality is `ct_eq()`,
//! and the store serialises through [`stored`], so each of them stands out in review. Also
//! keeps a process's memory, where values live while in use, out of core dumps.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// `bytes` as lowercase hex (digests, ids, random keys).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// `bytes` as lowercase hex written into `out` (twice their length, no allocation); returns
/// the text.
pub fn hex_into<'o>(bytes: &[u8], out: &'o mut [u8]) -> &'o str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    std::str::from_utf8(&out[..bytes.len() * 2]).expect("hex digits are ASCII")
}

/// Fills `buf` from the operating system's CSPRNG: the kernel's `getrandom(2)`, which blocks
/// only until the kernel pool is first seeded. Asked directly rather than through aws-lc's
/// generator, whose first use in a process seeds a CPU-jitter source for tens of milliseconds.
///
/// # Panics
/// If the system has no working randomness source: no key material can be made safely then.
pub fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("the system's random number generator failed: {e}"),
        }
    }
}

/// Keeps this process's memory out of core dumps, where a crash would write every value it
/// holds to disk: marks the process not dumpable (`PR_SET_DUMPABLE` 0, which also stops other
/// processes of the same user from attaching with ptrace or reading `/proc/PID/mem`), and sets
/// the soft `RLIMIT_CORE` to 0. The hard limit is left alone: commands keyd runs (reload hooks)
/// start dumpable again at exec and may raise their own limit. Called first thing by `keyd`
/// and `keyctl`.
pub fn forbid_core_dumps() -> std::io::Result<()> {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, getrlimit, setrlimit};
    rustix::process::set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    let hard = getrlimit(Resource::Core).maximum;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: hard,
        },
    )?;
    Ok(())
}

/// A secret text value: a password, token, Fernet key, private key PEM, or a rendered template
/// that contains one. Zeroized on drop; `Debug` prints no byte of it. It is deliberately not
/// `Clone`, `PartialEq` or `Serialize`.
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a value; the caller's `String` is moved, not copied.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The value itself. Every call is a place where key material leaves its wrapper.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// A second copy of the value, itself zeroized on drop. Every copy of key material in keyd
    /// is a call to this function.
    pub fn duplicate(&self) -> SecretString {
        SecretString::new(String::clone(&self.0))
    }

    /// Equality in time that depends only on the lengths, not on where the values differ.
    pub fn ct_eq(&self, other: &SecretString) -> bool {
        same_bytes(self.0.as_bytes(), other.0.as_bytes())
    }

    /// Length in bytes (not secret: policies fix it).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

/// Serialisation of secret values, for the store model only (inside the age-encrypted file):
/// `#[serde(with = "crate::secret::stored")]` on each field that holds one.
pub mod stored {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::SecretString;

    /// Writes the value as a JSON string.
    pub fn serialize<S: Serializer>(value: &SecretString, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(value.expose_secret())
    }

    /// Reads a JSON string into a zeroizing value.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SecretString, D::Error> {
        String::deserialize(d).map(SecretString::new)
    }
}

/// A delivered value: key material, or public data (a public key, a JWKS, a certificate, a
/// login name) that a sink may show in full. Which one is decided where the value is made,
/// so a sink knows what it may log.
pub enum Value {
    /// Key material.
    Secret(SecretString),
    /// Public data.
    Public(String),
}

impl Value {
    /// The bytes to deliver. For [`Value::Secret`] this is an exposure like `expose_secret()`.
    pub fn expose(&self) -> &str {
        match self {
            Value::Secret(s) => s.expose_secret(),
            Value::Public(p) => p,
        }
    }

    /// The value as a secret, whatever it was: for a caller that must treat it as one (an
    /// admin password read from another secret's output).
    pub fn into_secret(self) -> SecretString {
        match self {
            Value::Secret(s) => s,
            Value::Public(p) => SecretString::new(p),
        }
    }

    /// Whether the value is key material.
    pub fn is_secret(&self) -> bool {
        matches!(self, Value::Secret(_))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Secret(_) => f.write_str("Value::Secret([redacted])"),
            Value::Public(p) => write!(f, "Value::Public({} bytes)", p.len()),
        }
    }
}

/// Secret bytes that are not text (raw random bytes before encoding). Zeroized on drop.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Bytes already held in a zeroizing buffer (a key read from a file).
    pub fn from_zeroizing(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }

    /// `len` bytes from the operating system's CSPRNG.
    pub fn random(len: usize) -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        fill_random(&mut bytes);
        Self(bytes)
    }

    /// The bytes themselves.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes([redacted])")
    }
}

/// Compares two byte strings without an early exit on the first differing byte.
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(diff) == 0
}

/// The HMAC-SHA256 under `key` of `value`'s JSON serialisation, written straight into the MAC
/// so no copy of the plaintext is made. The same value always serialises to the same bytes
/// (ordered maps and lists), so the MAC can be checked against a later serialisation.
pub fn hmac_json<T: serde::Serialize + ?Sized>(
    key: &aws_lc_rs::hmac::Key,
    value: &T,
) -> std::io::Result<[u8; 32]> {
    struct Mac(aws_lc_rs::hmac::Context);
    impl std::io::Write for Mac {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut mac = Mac(aws_lc_rs::hmac::Context::with_key(key));
    serde_json::to_writer(&mut mac, value).map_err(std::io::Error::other)?;
    let mut out = [0u8; 32];
    out.copy_from_slice(mac.0.sign().as_ref());
    Ok(out)
}

/// Zeroizes a temporary buffer that held encoded key material (e.g. a DER before PEM encoding).
pub(crate) fn wipe(mut buffer: Vec<u8>) {
    buffer.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn ct_eq_compares_whole_values() {
        let a = SecretString::new("correct horse".into());
        assert!(a.ct_eq(&a.duplicate()));
        assert!(!a.ct_eq(&SecretString::new("correct hors".into())));
        assert!(!a.ct_eq(&SecretString::new("correct horsf".into())));
    }

    #[test]
    fn debug_prints_no_secret_bytes() {
        let s = SecretString::new("hunter2-value".into());
        let v = Value::Secret(s.duplicate());
        for text in [format!("{s:?}"), format!("{v:?}")] {
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn stored_round_trips_through_json() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Holder {
            #[serde(with = "stored")]
            value: SecretString,
        }
        let json = serde_json::to_string(&Holder {
            value: SecretString::new("v\"1".into()),
        })
        .unwrap();
        let back: Holder = serde_json::from_str(&json).unwrap();
        assert_eq!(back.value.expose_secret(), "v\"1");
    }
}
