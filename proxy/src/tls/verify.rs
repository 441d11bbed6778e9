//! Peer certificate verification: chain to the trust bundle, then the SPIFFE identity (exactly the expected one
//! for servers we call; exactly one, of any name, for clients calling us: authorization decides which may pass).

use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::DistinguishedName;
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::identity::{identity_of, IdentityError, SpiffeId};

/// Verifies an upstream sidecar's certificate: it must chain to the trust bundle and carry
/// exactly the expected SPIFFE ID. The TLS server name is not checked (SPIFFE certificates
/// carry no DNS names); the identity check replaces it.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algs: WebPkiSupportedAlgorithms,
}

/// Verifies client certificates with webpki (chain to the trust bundle, clientAuth usage, validity), then
/// requires a usable SPIFFE identity, so a peer without one fails the handshake instead of a later request.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

/// The identity part of a verification failure. Carried in
/// `rustls::Error::InvalidCertificate(CertificateError::Other(..))`; see [`reason`].
#[derive(Debug, thiserror::Error)]
pub enum IdentityMismatch {
    #[error("peer is {presented}, expected {expected}")]
    WrongIdentity { expected: SpiffeId, presented: SpiffeId },
    #[error("peer certificate has no SPIFFE identity")]
    NoIdentity(#[source] IdentityError),
}

impl SpiffeServerVerifier {
    pub fn new(roots: Arc<RootCertStore>, expected: SpiffeId, algs: WebPkiSupportedAlgorithms) -> Self {
        Self { roots, expected, algs }
    }

    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }
}

impl SpiffeClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        Self { inner }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        identity_of(end_entity.as_ref()).map_err(|e| identity_error(IdentityMismatch::NoIdentity(e)))?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // Chain validation is webpki's `EndEntityCert::verify_for_usage` with the serverAuth
        // EKU (required only if the certificate has an EKU extension), with rustls' error
        // mapping so inbound and outbound failures share the same `CertificateError`s.
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(&cert, &self.roots, intermediates, now, self.algs.all)?;
        let presented =
            identity_of(end_entity.as_ref()).map_err(|e| identity_error(IdentityMismatch::NoIdentity(e)))?;
        if presented != self.expected {
            return Err(identity_error(IdentityMismatch::WrongIdentity { expected: self.expected.clone(), presented }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A bounded label for a handshake failure, for metrics: `untrusted`, `expired`,
/// `not-yet-valid`, `wrong-identity`, `no-identity`, `no-certificate`, `bad-certificate`,
/// `revoked`, `bad-key`, `incompatible`, `other`.
pub fn reason(err: &Error) -> &'static str {
    match err {
        Error::InvalidCertificate(cert) => certificate_reason(cert),
        Error::NoCertificatesPresented => "no-certificate",
        Error::InconsistentKeys(_) => "bad-key",
        Error::PeerIncompatible(_) | Error::NoApplicationProtocol => "incompatible",
        _ => "other",
    }
}

/// [`reason`] for the `io::Error` returned by a tokio-rustls handshake; `io` when the handshake
/// failed below TLS (reset, EOF).
pub fn io_reason(err: &io::Error) -> &'static str {
    match err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(tls) => reason(tls),
        None => "io",
    }
}

fn certificate_reason(err: &CertificateError) -> &'static str {
    match err {
        CertificateError::UnknownIssuer => "untrusted",
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "not-yet-valid",
        CertificateError::Revoked => "revoked",
        CertificateError::BadEncoding
        | CertificateError::BadSignature
        | CertificateError::UnhandledCriticalExtension
        | CertificateError::InvalidPurpose
        | CertificateError::InvalidPurposeContext { .. } => "bad-certificate",
        CertificateError::Other(OtherError(e)) => match e.downcast_ref::<IdentityMismatch>() {
            Some(IdentityMismatch::WrongIdentity { .. }) => "wrong-identity",
            Some(IdentityMismatch::NoIdentity(_)) => "no-identity",
            None => "other",
        },
        _ => "other",
    }
}

fn identity_error(err: IdentityMismatch) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(err))))
}
