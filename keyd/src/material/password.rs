//! `password`: random characters from an alphabet, each chosen uniformly (rejection sampling,
//! no modulo bias).

use crate::secret::{SecretBytes, SecretString};

/// Default length when a policy gives none.
pub const DEFAULT_LENGTH: usize = 24;
/// Shortest length accepted without `allow_weak = true`.
pub const MIN_LENGTH: usize = 12;

/// The characters a password is drawn from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Alphabet {
    /// `A-Z a-z 0-9`: safe in URLs, compose files and shells.
    Alphanumeric,
    /// Every printable ASCII character but space: strongest per character, but `$ @ : / # ' "`
    /// break compose interpolation, URLs and shell quoting.
    AsciiPrintable,
    /// `0-9 a-f`.
    Hex,
    /// A literal set of distinct printable ASCII characters.
    Custom(String),
}

impl Alphabet {
    /// Names accepted in policies and on the command line.
    pub const NAMES: &'static str = "alphanumeric, ascii-printable, hex, or a literal set of distinct printable ASCII characters";

    /// Parses a named alphabet or a literal character set.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "alphanumeric" => return Ok(Self::Alphanumeric),
            "ascii-printable" => return Ok(Self::AsciiPrintable),
            "hex" => return Ok(Self::Hex),
            _ => {}
        }
        if let Some(bad) = text.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "alphabet {text:?} contains {bad:?}: a literal set takes printable ASCII characters without spaces (or one of alphanumeric, ascii-printable, hex)"
            ));
        }
        let mut seen = [false; 128];
        for c in text.bytes() {
            if std::mem::replace(&mut seen[c as usize], true) {
                return Err(format!(
                    "alphabet {text:?} repeats {:?}: a literal set lists each character once (or did you mean one of alphanumeric, ascii-printable, hex?)",
                    c as char
                ));
            }
        }
        if text.len() < 2 {
            return Err(format!(
                "alphabet {text:?} has fewer than 2 characters (expected {})",
                Self::NAMES
            ));
        }
        Ok(Self::Custom(text.to_owned()))
    }

    /// The characters, in a fixed order.
    pub fn chars(&self) -> Vec<u8> {
        match self {
            Self::Alphanumeric => (b'A'..=b'Z')
                .chain(b'a'..=b'z')
                .chain(b'0'..=b'9')
                .collect(),
            Self::AsciiPrintable => (b'!'..=b'~').collect(),
            Self::Hex => (b'0'..=b'9').chain(b'a'..=b'f').collect(),
            Self::Custom(set) => set.as_bytes().to_vec(),
        }
    }

    /// Bits of entropy per character.
    pub fn bits_per_char(&self) -> f64 {
        log2(self.chars().len())
    }
}

/// log2(n), without the C maths library: this is the only function of it keyd needs, and
/// linking it maps about 0.5 MiB more into every keyd process. The integer part is exact; each
/// squaring of the mantissa (in [1, 2)) gives one bit of the fraction.
fn log2(n: usize) -> f64 {
    if n == 0 {
        return f64::NEG_INFINITY;
    }
    let whole = n.ilog2();
    let mut mantissa = n as f64 / (1u64 << whole) as f64;
    let (mut bits, mut weight) = (f64::from(whole), 0.5);
    for _ in 0..f64::MANTISSA_DIGITS {
        mantissa *= mantissa;
        if mantissa >= 2.0 {
            mantissa /= 2.0;
            bits += weight;
        }
        weight /= 2.0;
    }
    bits
}

impl std::fmt::Display for Alphabet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Alphanumeric => f.write_str("alphanumeric"),
            Self::AsciiPrintable => f.write_str("ascii-printable"),
            Self::Hex => f.write_str("hex"),
            Self::Custom(set) => write!(f, "{set:?}"),
        }
    }
}

/// A random password of `length` characters drawn uniformly from `alphabet`.
pub fn generate(length: usize, alphabet: &Alphabet) -> SecretString {
    let chars = alphabet.chars();
    let n = chars.len();
    debug_assert!((2..=256).contains(&n));
    // Bytes at or above `limit` would make low indices more likely; they are drawn again.
    let limit = 256 - (256 % n);
    let mut out = String::with_capacity(length);
    while out.len() < length {
        let batch = SecretBytes::random((length - out.len()) * 2 + 8);
        for &b in batch.expose_secret() {
            if (b as usize) < limit {
                out.push(chars[b as usize % n] as char);
                if out.len() == length {
                    break;
                }
            }
        }
    }
    SecretString::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_without_libm_agrees_with_std_to_the_last_bits() {
        for n in 1..=4096usize {
            let (ours, std) = (log2(n), (n as f64).log2());
            assert!(
                (ours - std).abs() <= 4.0 * f64::EPSILON * std.max(1.0),
                "{n}: {ours} {std}"
            );
        }
        assert_eq!(log2(64), 6.0);
        assert_eq!(Alphabet::Hex.bits_per_char(), 4.0);
    }

    #[test]
    fn length_and_alphabet_are_respected() {
        for alphabet in [
            Alphabet::Alphanumeric,
            Alphabet::AsciiPrintable,
            Alphabet::Hex,
        ] {
            let allowed = alphabet.chars();
            for length in [12, 24, 64] {
                let p = generate(length, &alphabet);
                assert_eq!(p.len(), length);
                assert!(
                    p.expose_secret().bytes().all(|b| allowed.contains(&b)),
                    "{alphabet}"
                );
            }
        }
    }

    #[test]
    fn characters_are_uniform_within_chi_square_bounds() {
        // 62 symbols, 62_000 draws: expected 1000 each. The chi-square statistic with 61 degrees
        // of freedom exceeds 120 with probability about 1e-5; a modulo bias of 256 % 62 = 8
        // over-weights 8 symbols by 25% and pushes it far past that.
        let alphabet = Alphabet::Alphanumeric;
        let chars = alphabet.chars();
        let mut counts = [0u32; 62];
        for _ in 0..1000 {
            for b in generate(62, &alphabet).expose_secret().bytes() {
                counts[chars.iter().position(|&c| c == b).unwrap()] += 1;
            }
        }
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - 1000.0).powi(2) / 1000.0)
            .sum();
        assert!(chi2 < 120.0, "chi-square {chi2}");
    }

    #[test]
    fn values_do_not_repeat() {
        let a = generate(24, &Alphabet::Alphanumeric);
        let b = generate(24, &Alphabet::Alphanumeric);
        assert_ne!(a.expose_secret(), b.expose_secret());
    }

    #[test]
    fn literal_sets_are_checked() {
        assert_eq!(
            Alphabet::parse("abc").unwrap(),
            Alphabet::Custom("abc".into())
        );
        assert!(
            Alphabet::parse("alphanumerc")
                .unwrap_err()
                .contains("repeats")
        );
        assert!(Alphabet::parse("a b").unwrap_err().contains("printable"));
        assert!(Alphabet::parse("a").unwrap_err().contains("fewer than 2"));
    }
}
