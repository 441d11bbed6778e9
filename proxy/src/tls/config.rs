//! rustls configurations for inbound (server) and outbound (client) mTLS between sidecars, and the per-listener and
//! per-backend handles that rebuild them, once, whenever their credentials are reloaded.

use std::sync::{Arc, Mutex, PoisonError};

use attache_config::model::{SpiffeId, TlsMode, TlsVersion};
use rustls::client::VerifierBuilderError;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};

use super::credentials::{Credentials, NoCredentials};
use super::material::TlsMaterial;
use super::verify::{SpiffeClientVerifier, SpiffeServerVerifier};

/// ALPN protocols.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Whether inbound connections must present a client certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientAuth {
    /// Strict mTLS: a client certificate chaining to the trust bundle is required.
    Required,
    /// Permissive: a client certificate is verified if presented, but may be absent.
    Optional,
}

/// Allowed TLS protocol versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsVersions {
    #[default]
    Tls13,
    Tls12And13,
}

/// What an outbound connection will speak, which decides the ALPN it offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    Http1,
    Http2,
    /// Opaque TCP: no ALPN.
    None,
}

/// Why a rustls configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    NoCredentials(#[from] NoCredentials),
    #[error("trust bundle cannot be used")]
    TrustBundle(#[source] rustls::Error),
    #[error("client certificate verifier cannot be built")]
    ClientVerifier(#[source] VerifierBuilderError),
    #[error("TLS configuration is invalid")]
    Rustls(#[source] rustls::Error),
}

/// An inbound listener's TLS: its credentials and mode, and the server config built from them.
#[derive(Debug)]
pub struct ServerTls {
    creds: Credentials,
    client_auth: ClientAuth,
    versions: TlsVersions,
    built: Mutex<Option<(u64, Arc<ServerConfig>)>>,
}

/// A backend's mTLS origination: our credentials, the identity the backend must prove, and the client configs
/// built from them (one per ALPN).
#[derive(Debug)]
pub struct ClientTls {
    creds: Credentials,
    expected: SpiffeId,
    versions: TlsVersions,
    built: Mutex<Vec<(Alpn, u64, Arc<ClientConfig>)>>,
}

static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
static TLS12_AND_13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

impl ServerTls {
    /// `None` for `mode: disabled`.
    pub fn new(creds: Credentials, mode: TlsMode, min_version: TlsVersion) -> Option<Self> {
        let client_auth = match mode {
            TlsMode::Strict => ClientAuth::Required,
            TlsMode::Permissive => ClientAuth::Optional,
            TlsMode::Disabled => return None,
        };
        Some(Self { creds, client_auth, versions: min_version.into(), built: Mutex::default() })
    }

    /// Whether a plaintext connection is turned away (strict) or served as unauthenticated (permissive).
    pub fn requires_tls(&self) -> bool {
        self.client_auth == ClientAuth::Required
    }

    /// The config for a new handshake, from the current credentials.
    pub fn config(&self) -> Result<Arc<ServerConfig>, ConfigError> {
        let loaded = self.creds.current()?;
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((generation, config)) = built.as_ref() {
            if *generation == loaded.generation {
                return Ok(config.clone());
            }
        }
        let config = server_config(&loaded.material, self.client_auth, self.versions)?;
        *built = Some((loaded.generation, config.clone()));
        Ok(config)
    }
}

impl ClientTls {
    pub fn new(creds: Credentials, expected: SpiffeId, min_version: TlsVersion) -> Self {
        Self { creds, expected, versions: min_version.into(), built: Mutex::default() }
    }

    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }

    /// The config for a new connection speaking `alpn`, from the current credentials.
    pub fn config(&self, alpn: Alpn) -> Result<Arc<ClientConfig>, ConfigError> {
        let loaded = self.creds.current()?;
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, config)) = built.iter().find(|(a, g, _)| *a == alpn && *g == loaded.generation) {
            return Ok(config.clone());
        }
        let config = client_config(&loaded.material, self.expected.clone(), self.versions, alpn)?;
        built.retain(|(a, g, _)| *a != alpn && *g == loaded.generation);
        built.push((alpn, loaded.generation, config.clone()));
        Ok(config)
    }
}

/// Inbound: present our certificate and verify client certificates against the trust bundle; a client
/// certificate must carry exactly one SPIFFE ID. After the handshake, read the peer's identity with
/// [`peer_identity`](super::identity::peer_identity)`(conn.peer_certificates())`.
pub fn server_config(
    material: &TlsMaterial,
    client_auth: ClientAuth,
    versions: TlsVersions,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = provider();
    let roots = Arc::new(material.root_store().map_err(ConfigError::TrustBundle)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    let verifier = match client_auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(ConfigError::ClientVerifier)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions.versions())
        .map_err(ConfigError::Rustls)?
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(verifier)))
        .with_single_cert(material.certs.clone(), material.key.clone_key())
        .map_err(ConfigError::Rustls)?;
    // h2 first: a client that offers both gets multiplexing.
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

/// Outbound: present our certificate and require the server to be `expected`.
pub fn client_config(
    material: &TlsMaterial,
    expected: SpiffeId,
    versions: TlsVersions,
    alpn: Alpn,
) -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = provider();
    let roots = Arc::new(material.root_store().map_err(ConfigError::TrustBundle)?);
    let verifier = SpiffeServerVerifier::new(roots, expected, provider.signature_verification_algorithms);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions.versions())
        .map_err(ConfigError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(material.certs.clone(), material.key.clone_key())
        .map_err(ConfigError::Rustls)?;
    config.alpn_protocols = alpn.protocols();
    Ok(Arc::new(config))
}

/// Enrolment: no certificate of our own yet, but the server must chain to `bundle_pem` and be `expected`.
pub fn enrolment_config(bundle_pem: &[u8], expected: SpiffeId, alpn: Alpn) -> Result<Arc<ClientConfig>, ConfigError> {
    use rustls_pki_types::pem::PemObject as _;
    let provider = provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(bundle_pem) {
        let cert = cert.map_err(|e| ConfigError::TrustBundle(rustls::Error::General(e.to_string())))?;
        roots.add(cert).map_err(ConfigError::TrustBundle)?;
    }
    let verifier = SpiffeServerVerifier::new(Arc::new(roots), expected, provider.signature_verification_algorithms);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(TlsVersions::Tls13.versions())
        .map_err(ConfigError::Rustls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.protocols();
    Ok(Arc::new(config))
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Self::Http1 => vec![ALPN_HTTP1.to_vec()],
            Self::Http2 => vec![ALPN_H2.to_vec()],
            Self::None => Vec::new(),
        }
    }
}

impl TlsVersions {
    pub fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            Self::Tls13 => TLS13_ONLY,
            Self::Tls12And13 => TLS12_AND_13,
        }
    }
}

impl From<TlsVersion> for TlsVersions {
    fn from(min: TlsVersion) -> Self {
        match min {
            TlsVersion::Tls13 => Self::Tls13,
            TlsVersion::Tls12 => Self::Tls12And13,
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
