//! TLS material: this workload's certificate chain, private key and the mesh trust bundle.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::identity::{identity_of, IdentityError, SpiffeId};

/// Validated TLS material. Building a rustls config from it cannot fail on its content.
pub struct TlsMaterial {
    /// Our certificate chain, end-entity first.
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The trust bundle: every CA whose workloads we accept (old and new during a rotation).
    pub roots: Vec<CertificateDer<'static>>,
    /// Our identity: the SPIFFE ID of `certs[0]`.
    pub identity: SpiffeId,
    /// `notBefore` and `notAfter` of our end-entity certificate, in unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Which input a PEM error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PemSource {
    Certificate,
    Key,
    TrustBundle,
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("cannot read {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} PEM is truncated or invalid")]
    InvalidPem {
        what: PemSource,
        #[source]
        source: pem::Error,
    },
    #[error("no certificate found in the certificate PEM")]
    NoCertificate,
    #[error("no private key found in the key PEM")]
    NoKey,
    #[error("no CA certificate found in the trust bundle")]
    NoTrustAnchors,
    #[error("trust bundle holds a CA certificate that cannot be used")]
    BadTrustAnchor(#[source] rustls::Error),
    #[error("private key is invalid or of an unsupported type")]
    BadKey(#[source] rustls::Error),
    #[error("private key does not match the certificate")]
    KeyMismatch,
    #[error("certificate has no usable identity")]
    NoIdentity(#[source] IdentityError),
    #[error("certificate expired at {not_after} (unix seconds)")]
    Expired { not_after: i64 },
    #[error("certificate is not valid before {not_before} (unix seconds)")]
    NotYetValid { not_before: i64 },
}

impl TlsMaterial {
    /// Reads and validates PEM files: certificate chain, private key and trust bundle.
    pub fn load(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
        bundle_path: impl AsRef<Path>,
    ) -> Result<Self, MaterialError> {
        let cert = read(cert_path.as_ref())?;
        let key = read(key_path.as_ref())?;
        let bundle = read(bundle_path.as_ref())?;
        Self::from_pem(&cert, &key, &bundle)
    }

    /// Validates PEM contents, checking validity against the system clock.
    pub fn from_pem(cert: &[u8], key: &[u8], bundle: &[u8]) -> Result<Self, MaterialError> {
        Self::from_pem_at(cert, key, bundle, UnixTime::now())
    }

    /// Validates PEM contents, checking validity as of `now`.
    pub fn from_pem_at(cert: &[u8], key: &[u8], bundle: &[u8], now: UnixTime) -> Result<Self, MaterialError> {
        let certs = parse_certs(cert, PemSource::Certificate)?;
        let Some(leaf) = certs.first() else {
            return Err(MaterialError::NoCertificate);
        };
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
            pem::Error::NoItemsFound => MaterialError::NoKey,
            source => MaterialError::InvalidPem { what: PemSource::Key, source },
        })?;
        let roots = parse_certs(bundle, PemSource::TrustBundle)?;
        if roots.is_empty() {
            return Err(MaterialError::NoTrustAnchors);
        }
        root_store(&roots).map_err(MaterialError::BadTrustAnchor)?;

        let identity = identity_of(leaf.as_ref()).map_err(MaterialError::NoIdentity)?;
        let (not_before, not_after) = validity(leaf).map_err(MaterialError::NoIdentity)?;
        check_key(&certs, &key)?;
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        if now > not_after {
            return Err(MaterialError::Expired { not_after });
        }
        if now < not_before {
            return Err(MaterialError::NotYetValid { not_before });
        }

        Ok(Self { certs, key, roots, identity, not_before, not_after })
    }

    /// The trust bundle as a rustls root store.
    pub fn root_store(&self) -> Result<RootCertStore, rustls::Error> {
        root_store(&self.roots)
    }
}

impl MaterialError {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreadable { .. } => "unreadable",
            Self::InvalidPem { .. } => "invalid-pem",
            Self::NoCertificate => "no-certificate",
            Self::NoKey => "no-key",
            Self::NoTrustAnchors | Self::BadTrustAnchor(_) => "bad-trust-bundle",
            Self::BadKey(_) => "bad-key",
            Self::KeyMismatch => "key-mismatch",
            Self::NoIdentity(_) => "no-identity",
            Self::Expired { .. } => "expired",
            Self::NotYetValid { .. } => "not-yet-valid",
        }
    }
}

impl fmt::Display for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Certificate => "certificate",
            Self::Key => "private key",
            Self::TrustBundle => "trust bundle",
        })
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("TlsMaterial")
            .field("identity", &self.identity)
            .field("chain_len", &self.certs.len())
            .field("roots", &self.roots.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, MaterialError> {
    std::fs::read(path).map_err(|source| MaterialError::Unreadable { path: path.to_owned(), source })
}

fn parse_certs(pem: &[u8], what: PemSource) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| MaterialError::InvalidPem { what, source })
}

pub(super) fn root_store(roots: &[CertificateDer<'_>]) -> Result<RootCertStore, rustls::Error> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone().into_owned())?;
    }
    Ok(store)
}

/// `(notBefore, notAfter)` of a certificate, in unix seconds.
fn validity(cert: &CertificateDer<'_>) -> Result<(i64, i64), IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| IdentityError::BadCertificate(e.to_string()))?;
    let validity = cert.validity();
    Ok((validity.not_before.timestamp(), validity.not_after.timestamp()))
}

/// Checks that `key` is a supported key type and that it belongs to `certs[0]`.
fn check_key(certs: &[CertificateDer<'static>], key: &PrivateKeyDer<'static>) -> Result<(), MaterialError> {
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider.key_provider.load_private_key(key.clone_key()).map_err(MaterialError::BadKey)?;
    match CertifiedKey::new(certs.to_vec(), signing_key).keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => Err(MaterialError::KeyMismatch),
        // The ring provider always exposes the public key, so `Unknown` is not expected; a
        // mismatch would still fail the handshake.
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(()),
        Err(e) => Err(MaterialError::BadKey(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::{unix, Ca};

    fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("attache-tls-{tag}-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn loads_valid_material_from_files() {
        let ca = Ca::new("ca");
        let leaf = ca.leaf(&["spiffe://example.org/web"]);
        let dir = tempdir("ok");
        let m = TlsMaterial::load(
            write(&dir, "cert.pem", &leaf.cert_pem),
            write(&dir, "key.pem", &leaf.key_pem),
            write(&dir, "bundle.pem", &ca.pem()),
        )
        .unwrap();
        assert_eq!(m.identity.as_str(), "spiffe://example.org/web");
        assert_eq!(m.certs.len(), 1);
        assert_eq!(m.roots.len(), 1);
        assert_eq!(m.not_after, unix((2099, 1, 1)).as_secs() as i64);
        assert!(!format!("{m:?}").contains("PRIVATE"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unreadable_file() {
        let dir = tempdir("missing");
        let err = TlsMaterial::load(dir.join("a"), dir.join("b"), dir.join("c")).unwrap_err();
        assert!(matches!(err, MaterialError::Unreadable { .. }), "{err:?}");
        assert_eq!(err.reason(), "unreadable");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn truncated_pem() {
        let ca = Ca::new("ca");
        let leaf = ca.leaf(&["spiffe://example.org/web"]);
        let cut = &leaf.cert_pem[..leaf.cert_pem.len() / 2];
        let err = TlsMaterial::from_pem(cut.as_bytes(), leaf.key_pem.as_bytes(), ca.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, MaterialError::InvalidPem { what: PemSource::Certificate, .. }), "{err:?}");
        let cut = &leaf.key_pem[..leaf.key_pem.len() - 30];
        let err = TlsMaterial::from_pem(leaf.cert_pem.as_bytes(), cut.as_bytes(), ca.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, MaterialError::InvalidPem { what: PemSource::Key, .. }), "{err:?}");
        assert_eq!(err.reason(), "invalid-pem");
    }

    #[test]
    fn missing_items() {
        let ca = Ca::new("ca");
        let leaf = ca.leaf(&["spiffe://example.org/web"]);
        let (cert, key, bundle) = (leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), ca.pem());
        let err = TlsMaterial::from_pem(b"", key, bundle.as_bytes()).unwrap_err();
        assert!(matches!(err, MaterialError::NoCertificate), "{err:?}");
        let err = TlsMaterial::from_pem(cert, cert, bundle.as_bytes()).unwrap_err();
        assert!(matches!(err, MaterialError::NoKey), "{err:?}");
        let err = TlsMaterial::from_pem(cert, key, b"").unwrap_err();
        assert!(matches!(err, MaterialError::NoTrustAnchors), "{err:?}");
    }

    #[test]
    fn key_mismatch() {
        let ca = Ca::new("ca");
        let a = ca.leaf(&["spiffe://example.org/a"]);
        let b = ca.leaf(&["spiffe://example.org/b"]);
        let err = TlsMaterial::from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), ca.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, MaterialError::KeyMismatch), "{err:?}");
        assert_eq!(err.reason(), "key-mismatch");
    }

    #[test]
    fn expired_and_not_yet_valid() {
        let ca = Ca::new("ca");
        let old = ca.leaf_valid(&["spiffe://example.org/web"], (2020, 1, 1), (2021, 1, 1));
        let err =
            TlsMaterial::from_pem(old.cert_pem.as_bytes(), old.key_pem.as_bytes(), ca.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, MaterialError::Expired { .. }), "{err:?}");
        assert_eq!(err.reason(), "expired");

        let future = ca.leaf_valid(&["spiffe://example.org/web"], (2098, 1, 1), (2099, 1, 1));
        let err = TlsMaterial::from_pem(future.cert_pem.as_bytes(), future.key_pem.as_bytes(), ca.pem().as_bytes())
            .unwrap_err();
        assert!(matches!(err, MaterialError::NotYetValid { .. }), "{err:?}");
        assert_eq!(err.reason(), "not-yet-valid");
    }

    #[test]
    fn certificate_without_identity() {
        let ca = Ca::new("ca");
        let leaf = ca.leaf(&[]);
        let err =
            TlsMaterial::from_pem(leaf.cert_pem.as_bytes(), leaf.key_pem.as_bytes(), ca.pem().as_bytes()).unwrap_err();
        assert!(matches!(err, MaterialError::NoIdentity(IdentityError::NoUriSan)), "{err:?}");
    }
}
