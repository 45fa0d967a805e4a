//! `tls`: a self-signed X.509 certificate and its private key (ECDSA P-256 by default, or RSA),
//! with the common name and subject alternative names from the policy.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, RsaKeySize};
use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

/// Default validity in days.
pub const DEFAULT_DAYS: u32 = 365;
/// Longest validity accepted.
pub const MAX_DAYS: u32 = 36_500;

/// The key algorithm of a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: small and fast, accepted by every current TLS stack.
    EcdsaP256,
    /// RSA with SHA-256, of the given size in bits.
    Rsa(usize),
}

/// What a certificate says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSpec {
    /// Subject common name.
    pub cn: String,
    /// Subject alternative names; IP addresses become IP SANs.
    pub sans: Vec<String>,
    /// Validity from now, in days.
    pub days: u32,
    /// Key algorithm.
    pub key_type: KeyType,
}

/// A generated certificate and its key.
#[derive(Serialize, Deserialize)]
pub struct TlsCertificate {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    #[serde(with = "crate::secret::stored")]
    pub key_pem: SecretString,
    /// SHA-256 of the certificate's DER, hex with colons (as `openssl x509 -fingerprint -sha256`).
    pub fingerprint: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

impl TlsCertificate {
    /// An explicit copy (the private key through [`SecretString::duplicate`]).
    pub fn duplicate(&self) -> TlsCertificate {
        TlsCertificate {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.duplicate(),
            fingerprint: self.fingerprint.clone(),
            not_after: self.not_after,
        }
    }
}

impl std::fmt::Debug for TlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCertificate")
            .field("fingerprint", &self.fingerprint)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("certificate generation failed: {0}")]
pub struct TlsError(String);

/// Generates a key and a self-signed certificate valid from now for `spec.days` days.
pub fn generate(spec: &TlsSpec) -> Result<TlsCertificate, TlsError> {
    let key = match spec.key_type {
        KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyType::Rsa(bits) => {
            let size = match bits {
                2048 => RsaKeySize::_2048,
                3072 => RsaKeySize::_3072,
                4096 => RsaKeySize::_4096,
                other => return Err(TlsError(format!("unsupported RSA key size {other}"))),
            };
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
        }
    }
    .map_err(|e| TlsError(e.to_string()))?;
    let mut params =
        CertificateParams::new(spec.sans.clone()).map_err(|e| TlsError(e.to_string()))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, spec.cn.as_str());
    params.distinguished_name = name;
    let now = time::OffsetDateTime::now_utc();
    // A minute of slack for clocks slightly behind ours.
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::days(i64::from(spec.days));
    let mut serial = [0u8; 16];
    crate::secret::fill_random(&mut serial);
    serial[0] &= 0x7f; // positive, as RFC 5280 asks
    params.serial_number = Some(serial.to_vec().into());
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError(e.to_string()))?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.der());
    let fingerprint = digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(TlsCertificate {
        cert_pem: cert.pem(),
        key_pem: SecretString::new(key.serialize_pem()),
        fingerprint,
        not_after: params.not_after.unix_timestamp(),
    })
}

/// Proves a certificate and key belong together: the key parses and its public key is the one
/// inside the certificate.
pub fn prove(cert: &TlsCertificate) -> Result<(), String> {
    let key = KeyPair::from_pem(cert.key_pem.expose_secret())
        .map_err(|e| format!("the key does not parse: {e}"))?;
    let spki = key.public_key_raw();
    let cert_der = super::rsa::pem_body(&cert.cert_pem).ok_or("the certificate is not PEM")?;
    if cert_der.windows(spki.len()).any(|w| w == spki) {
        Ok(())
    } else {
        Err("the certificate is not for this key".into())
    }
}
