//! One declared secret (`[secrets.NAME]`): its kind, how values of that kind are made, its
//! schedule and rekey hook.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::targets::SecretTarget;
use crate::material::password::Alphabet;
use crate::material::template::Piece;
use crate::material::tls::TlsSpec;
use crate::material::token::Encoding;
use crate::material::{Material, MaterialError};

/// The kinds of secret, as named in policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Random characters.
    Password,
    /// Random bytes, encoded.
    Token,
    /// A Fernet key.
    Fernet,
    /// An RSA signing pair.
    Rsa,
    /// A self-signed certificate and key.
    Tls,
    /// A fixed value.
    Literal,
    /// Rendered from other values.
    Template,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 7] = [
        Kind::Password,
        Kind::Token,
        Kind::Fernet,
        Kind::Rsa,
        Kind::Tls,
        Kind::Literal,
        Kind::Template,
    ];

    /// The policy name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Password => "password",
            Kind::Token => "token",
            Kind::Fernet => "fernet",
            Kind::Rsa => "rsa",
            Kind::Tls => "tls",
            Kind::Literal => "literal",
            Kind::Template => "template",
        }
    }

    /// Whether values are random (made once, changed only by rotation) rather than derived from
    /// the policy (literal, template), which follow the policy's text.
    pub fn is_random(self) -> bool {
        !matches!(self, Kind::Literal | Kind::Template)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declared secret.
#[derive(Clone, Debug)]
pub struct SecretSpec {
    /// Its name: the file name under the files sink, the variable name in an env file.
    pub name: String,
    /// How values are made.
    pub kind: KindSpec,
    /// Rotation interval.
    pub rotate: Option<Duration>,
    /// A command that re-encrypts data with the new value, run after a rotation; retire
    /// waits until it succeeded.
    pub rekey: Option<RekeyHook>,
    /// How long the previous value stays valid after a rotation.
    pub grace: Option<Duration>,
    /// Free text.
    pub description: Option<String>,
    /// The outside system that must accept its values.
    pub target: Option<SecretTarget>,
    /// A password nothing outside keyd checks (`standalone = true`): it may rotate on a
    /// schedule without a `target`, since no server has to be told of the new value.
    pub standalone: bool,
    /// Line of its table in the policy (for messages).
    pub line: usize,
}

/// How a fernet secret is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FernetDelivery {
    /// `new,old,…` (Airflow, MultiFernet): the first encrypts, all decrypt.
    List,
    /// The newest key alone.
    Primary,
}

/// `rekey = { command = ["airflow", "rotate-fernet-key"], timeout = "10m" }`: run after a
/// rotation of the secret with the stack's delivered values in its environment (never in
/// argv); the previous version is retired only once it exited 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RekeyHook {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// How long it may run before it is killed (default 10 minutes).
    pub timeout: Duration,
}

impl RekeyHook {
    /// The timeout when the policy sets none.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
}

/// Kind-specific parameters, validated.
#[derive(Clone, Debug)]
pub enum KindSpec {
    /// `kind = "password"`.
    Password {
        /// Characters.
        length: usize,
        /// Drawn from.
        alphabet: Alphabet,
    },
    /// `kind = "token"`.
    Token {
        /// Random bytes.
        bytes: usize,
        /// Written as.
        encoding: Encoding,
    },
    /// `kind = "fernet"`.
    Fernet {
        /// Keys held in the delivered list during overlap.
        keep: usize,
        /// List or primary.
        deliver: FernetDelivery,
    },
    /// `kind = "rsa"`.
    Rsa {
        /// Modulus size.
        bits: usize,
        /// Name under which the public PEM is delivered.
        public: Option<String>,
        /// Name under which the JWKS is delivered.
        jwks: Option<String>,
        /// How long a new key is published (in the JWKS) before it signs.
        publish_ahead: Option<Duration>,
    },
    /// `kind = "tls"`.
    Tls {
        /// Name under which the private key is delivered.
        key: String,
        /// Certificate contents.
        spec: TlsSpec,
        /// How long before the certificate expires the scheduler renews it (`renew_before`,
        /// default a third of `days`; shorter than `days`).
        renew_before: Duration,
    },
    /// `kind = "literal"`.
    Literal {
        /// The value (not secret: it is in the policy).
        value: String,
    },
    /// `kind = "template"`.
    Template {
        /// The template text.
        text: String,
        /// Its parsed form.
        pieces: Vec<Piece>,
    },
}

impl KindSpec {
    /// Makes a new value for a random kind (literals and templates are derived instead: see
    /// the derive module).
    pub fn generate(&self) -> Result<Material, MaterialError> {
        let text = |value| Ok(Material::Text { value });
        match self {
            KindSpec::Password { length, alphabet } => {
                text(crate::material::password::generate(*length, alphabet))
            }
            KindSpec::Token { bytes, encoding } => {
                text(crate::material::token::generate(*bytes, *encoding))
            }
            KindSpec::Fernet { .. } => text(crate::material::fernet::generate()),
            KindSpec::Rsa { bits, .. } => Ok(Material::Rsa(crate::material::rsa::generate(*bits)?)),
            KindSpec::Tls { spec, .. } => Ok(Material::Tls(crate::material::tls::generate(spec)?)),
            KindSpec::Literal { .. } | KindSpec::Template { .. } => {
                unreachable!("literals and templates are derived, not generated")
            }
        }
    }

    /// Whether generating takes long enough (RSA prime search) to give it a thread of its own.
    pub fn is_slow(&self) -> bool {
        matches!(self, KindSpec::Rsa { .. })
            || matches!(self, KindSpec::Tls { spec, .. } if matches!(spec.key_type, crate::material::tls::KeyType::Rsa(_)))
    }

    /// The generation parameters as text: stored with each version so a changed policy can be
    /// noticed (and reported) without regenerating anything.
    pub fn params_text(&self) -> String {
        let mut text = String::new();
        self.write_params(&mut text);
        text
    }

    /// Appends [`KindSpec::params_text`] to `out` (a caller comparing many reuses one buffer).
    pub fn write_params(&self, out: &mut String) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = match self {
            KindSpec::Password { length, alphabet } => {
                write!(out, "length={length} alphabet={alphabet}")
            }
            KindSpec::Token { bytes, encoding } => write!(out, "bytes={bytes} encoding={encoding}"),
            KindSpec::Fernet { .. } | KindSpec::Literal { .. } => Ok(()),
            KindSpec::Rsa { bits, .. } => write!(out, "bits={bits}"),
            KindSpec::Tls { spec, .. } => write!(
                out,
                "cn={} sans={} days={} key_type={:?}",
                spec.cn,
                spec.sans.join(","),
                spec.days,
                spec.key_type
            ),
            KindSpec::Template { text, .. } => {
                out.push_str(text);
                Ok(())
            }
        };
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        match self {
            KindSpec::Password { .. } => Kind::Password,
            KindSpec::Token { .. } => Kind::Token,
            KindSpec::Fernet { .. } => Kind::Fernet,
            KindSpec::Rsa { .. } => Kind::Rsa,
            KindSpec::Tls { .. } => Kind::Tls,
            KindSpec::Literal { .. } => Kind::Literal,
            KindSpec::Template { .. } => Kind::Template,
        }
    }
}
