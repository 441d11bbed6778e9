//! Workload identity: the SPIFFE ID an X.509 certificate carries in its one URI SAN.

pub use attache_config::model::{InvalidSpiffeId, SpiffeId};
use x509_parser::extensions::GeneralName;

/// Why a certificate carries no usable identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("peer presented no certificate")]
    NoCertificate,
    #[error("certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("certificate has no URI SAN")]
    NoUriSan,
    #[error("certificate has {count} URI SANs, expected exactly one")]
    MultipleUriSans { count: usize },
    #[error("certificate URI SAN is not a workload SPIFFE ID")]
    InvalidId(#[source] InvalidSpiffeId),
}

/// The SPIFFE identity of a DER certificate: its one and only URI SAN.
pub fn identity_of(cert_der: &[u8]) -> Result<SpiffeId, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let san = cert.subject_alternative_name().map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let mut uris = san.into_iter().flat_map(|ext| ext.value.general_names.iter()).filter_map(|name| match name {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let uri = uris.next().ok_or(IdentityError::NoUriSan)?;
    let others = uris.count();
    if others > 0 {
        return Err(IdentityError::MultipleUriSans { count: others + 1 });
    }
    SpiffeId::parse(uri).map_err(IdentityError::InvalidId)
}

/// The identity of a TLS peer from its presented chain (end-entity first), e.g. `conn.peer_certificates()` after an
/// inbound handshake.
pub fn peer_identity(certs: Option<&[rustls_pki_types::CertificateDer<'_>]>) -> Result<SpiffeId, IdentityError> {
    let end_entity = certs.and_then(|c| c.first()).ok_or(IdentityError::NoCertificate)?;
    identity_of(end_entity.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::Ca;

    #[test]
    fn identity_of_single_uri_san() {
        let ca = Ca::new("ca");
        let leaf = ca.leaf(&["spiffe://example.org/web"]);
        let id = identity_of(leaf.cert_der.as_ref()).unwrap();
        assert_eq!(id.as_str(), "spiffe://example.org/web");
    }

    #[test]
    fn identity_of_rejects_none_several_or_invalid() {
        let ca = Ca::new("ca");
        let none = ca.leaf(&[]);
        assert_eq!(identity_of(none.cert_der.as_ref()), Err(IdentityError::NoUriSan));
        let two = ca.leaf(&["spiffe://example.org/a", "spiffe://example.org/b"]);
        assert_eq!(identity_of(two.cert_der.as_ref()), Err(IdentityError::MultipleUriSans { count: 2 }));
        let bad = ca.leaf(&["https://example.org/a"]);
        assert_eq!(identity_of(bad.cert_der.as_ref()), Err(IdentityError::InvalidId(InvalidSpiffeId::WrongScheme)));
        let domain_only = ca.leaf(&["spiffe://example.org"]);
        assert_eq!(identity_of(domain_only.cert_der.as_ref()), Err(IdentityError::InvalidId(InvalidSpiffeId::NoPath)));
        assert!(matches!(identity_of(b"not a certificate"), Err(IdentityError::BadCertificate(_))));
        assert_eq!(peer_identity(None), Err(IdentityError::NoCertificate));
    }
}
