//! The names a secret is delivered under: its own and its companions' (`public`, `jwks`,
//! `key`, `user_secret`), each carrying one part of the secret's material.

use serde::{Deserialize, Serialize};

use super::secrets::{KindSpec, SecretSpec};
use super::targets::SecretTarget;

/// Which part of a secret's material an output carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The value itself (private key PEM for rsa, certificate PEM for tls).
    Main,
    /// An rsa secret's public key PEM.
    PublicPem,
    /// An rsa secret's JWKS.
    Jwks,
    /// A tls secret's private key PEM.
    TlsKey,
    /// The login a password belongs to (PostgreSQL `alternating` strategy).
    Login,
}

/// One delivered name: a secret's own name or a companion (`public`, `jwks`, `key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The delivered name.
    pub name: String,
    /// The secret it comes from.
    pub secret: String,
    /// Which part.
    pub part: Part,
}

impl SecretSpec {
    /// Every name this secret is delivered under, its own first.
    pub fn outputs(&self) -> Vec<Output> {
        self.output_parts()
            .map(|(name, part)| Output {
                name: name.to_owned(),
                secret: self.name.clone(),
                part,
            })
            .collect()
    }

    /// [`SecretSpec::outputs`] borrowed: each name and the part it carries, its own first,
    /// with nothing allocated: passes ask it of every secret, several times each.
    pub fn output_parts(&self) -> impl Iterator<Item = (&str, Part)> {
        let mut companions: [Option<(&str, Part)>; 3] = [None; 3];
        match &self.kind {
            KindSpec::Rsa { public, jwks, .. } => {
                companions[0] = public.as_deref().map(|p| (p, Part::PublicPem));
                companions[1] = jwks.as_deref().map(|j| (j, Part::Jwks));
            }
            KindSpec::Tls { key, .. } => companions[0] = Some((key.as_str(), Part::TlsKey)),
            _ => {}
        }
        if let Some(user) = self.target.as_ref().and_then(SecretTarget::user_secret) {
            companions[2] = Some((user, Part::Login));
        }
        std::iter::once((self.name.as_str(), Part::Main)).chain(companions.into_iter().flatten())
    }
}
