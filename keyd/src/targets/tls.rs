//! TLS to targets, with rustls on the aws-lc-rs backend: how much a target's certificate is
//! checked ([`TlsMode`], PostgreSQL's `sslmode` names), the client configuration for each mode,
//! the default (`verify-full`, except for loopback hosts, which stay plain as before), and
//! failures described so that a refused certificate reads as one.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How a connection to a target is protected (PostgreSQL's `sslmode` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS, any certificate (encrypted, but open to an active attacker).
    Require,
    /// TLS, a certificate signed by the CA, whatever name it is for.
    VerifyCa,
    /// TLS, a certificate signed by the CA for the host connected to.
    VerifyFull,
}

impl TlsMode {
    /// Parses an `sslmode` value.
    pub fn parse(value: &str) -> Option<TlsMode> {
        match value {
            "disable" => Some(TlsMode::Disable),
            "require" => Some(TlsMode::Require),
            "verify-ca" => Some(TlsMode::VerifyCa),
            "verify-full" => Some(TlsMode::VerifyFull),
            _ => None,
        }
    }

    /// The mode of a target whose URL names none: plain to a loopback host (the password
    /// never leaves the machine), `verify-full` to any other.
    pub fn default_for(host: &str) -> TlsMode {
        if is_loopback(host) {
            TlsMode::Disable
        } else {
            TlsMode::VerifyFull
        }
    }
}

/// Whether `host` (a name or an address, IPv6 possibly in brackets) is this machine.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The client configuration for `mode` (not `Disable`), trusting the certificates of the PEM
/// file `ca_file`, or the system's CA certificates when there is none.
pub fn client_config(mode: TlsMode, ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        TlsMode::Disable | TlsMode::Require => Arc::new(AnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let roots = Arc::new(roots(ca_file)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("TLS setup failed: {e}"))?;
            if mode == TlsMode::VerifyCa {
                Arc::new(AnyName { webpki })
            } else {
                webpki
            }
        }
    };
    Ok(Arc::new(
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// The trusted CA certificates: those of `ca_file`, else the system's.
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read the CA file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "the CA file {} holds no certificate",
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("the CA file {}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err("no system CA certificates found: name the CA file in the url (PostgreSQL sslrootcert=PATH, Redis ?ca=PATH)".into());
            }
        }
    }
    Ok(roots)
}

/// The server name to send and check, from a URL's host.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| format!("bad TLS server name {host:?}: {e}"))
}

/// Describes a TLS failure: a certificate refused by verification says so.
pub fn describe(e: &std::io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(cause)) => {
            format!("TLS certificate verification failed: {cause:?}")
        }
        Some(other) => format!("TLS handshake failed: {other}"),
        None => format!("TLS handshake failed: {e}"),
    }
}

/// `sslmode=require`: any certificate; the handshake's signatures are still checked, so the
/// channel is bound to the certificate presented (what SCRAM channel binding relies on).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain to a trusted CA is checked, the name is not. The WebPKI
/// verifier checks the chain before the name, so a name error means the chain was good.
#[derive(Debug)]
struct AnyName {
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The `tls-server-end-point` channel binding of a server certificate (RFC 5929): its hash
/// with the hash of its signature algorithm, SHA-256 for MD5 and SHA-1; for RSA-PSS, the hash
/// its parameters name (SHA-1 when they name none), as PostgreSQL and libpq take it. `None`
/// for algorithms without a hash of their own (Ed25519, Ed448) or unknown ones: no login can
/// be bound to such a certificate.
pub fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use aws_lc_rs::digest;
    const SHA256: &[&[u8]] = &[
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b", // sha256WithRSAEncryption
        b"\x2a\x86\x48\xce\x3d\x04\x03\x02",     // ecdsa-with-SHA256
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x05", // sha1WithRSAEncryption
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x04", // md5WithRSAEncryption
        b"\x2a\x86\x48\xce\x3d\x04\x01",         // ecdsa-with-SHA1
        b"\x60\x86\x48\x01\x65\x03\x04\x02\x01", // sha256 (an RSA-PSS hash)
        b"\x2b\x0e\x03\x02\x1a",                 // sha1 (an RSA-PSS hash)
    ];
    const SHA384: &[&[u8]] = &[
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0c",
        b"\x2a\x86\x48\xce\x3d\x04\x03\x03",
        b"\x60\x86\x48\x01\x65\x03\x04\x02\x02",
    ];
    const SHA512: &[&[u8]] = &[
        b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0d",
        b"\x2a\x86\x48\xce\x3d\x04\x03\x04",
        b"\x60\x86\x48\x01\x65\x03\x04\x02\x03",
    ];
    let (mut oid, params) = signature_algorithm(cert)?;
    if oid == RSASSA_PSS {
        oid = pss_hash(params)?;
    }
    let algorithm = if SHA256.contains(&oid) {
        &digest::SHA256
    } else if SHA384.contains(&oid) {
        &digest::SHA384
    } else if SHA512.contains(&oid) {
        &digest::SHA512
    } else {
        return None;
    };
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

/// id-RSASSA-PSS (1.2.840.113549.1.1.10), whose hash is in its parameters.
const RSASSA_PSS: &[u8] = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a";
/// id-sha1, the hash of RSA-PSS parameters that name none.
const SHA1: &[u8] = b"\x2b\x0e\x03\x02\x1a";
const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;

/// Splits one DER element of tag `tag` off `input`: (its contents, what follows).
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = crate::material::adopt::der_element(input)?;
    (t == tag).then_some((contents, rest))
}

/// The OID of a DER certificate's `signatureAlgorithm` and what follows it (the parameters):
/// `Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, … }, … }`.
fn signature_algorithm(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    let (certificate, _) = element(cert, SEQUENCE)?;
    let (_tbs, rest) = element(certificate, SEQUENCE)?;
    let (algorithm, _) = element(rest, SEQUENCE)?;
    element(algorithm, OID)
}

/// The hash OID of RSA-PSS parameters (RFC 4055):
/// `RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, … }`.
fn pss_hash(params: &[u8]) -> Option<&[u8]> {
    let (fields, _) = element(params, SEQUENCE)?;
    match element(fields, 0xa0) {
        Some((hash_algorithm, _)) => {
            let (identifier, _) = element(hash_algorithm, SEQUENCE)?;
            element(identifier, OID).map(|(oid, _)| oid)
        }
        None => Some(SHA1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_default_to_plain_and_others_to_verify_full() {
        for host in ["localhost", "127.0.0.1", "127.3.4.5", "::1", "[::1]"] {
            assert_eq!(TlsMode::default_for(host), TlsMode::Disable, "{host}");
        }
        for host in ["db.example.com", "10.0.0.2", "localhost.example.com", "::2"] {
            assert_eq!(TlsMode::default_for(host), TlsMode::VerifyFull, "{host}");
        }
    }

    #[test]
    fn the_channel_binding_of_an_ecdsa_p256_certificate_is_its_sha256() {
        let cert = crate::material::tls::generate(&crate::material::tls::TlsSpec {
            cn: "localhost".into(),
            sans: vec!["localhost".into()],
            days: 1,
            key_type: crate::material::tls::KeyType::EcdsaP256,
        })
        .unwrap();
        let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
        let binding = tls_server_end_point(&der).unwrap();
        assert_eq!(binding, digest_sha256(&der));
        assert_eq!(tls_server_end_point(b"\x30\x03\x02\x01\x00"), None);
    }

    fn digest_sha256(data: &[u8]) -> Vec<u8> {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
            .as_ref()
            .to_vec()
    }
}
