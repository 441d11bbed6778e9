//! The mesh CA as a service uses it: the control plane signs workload CSRs with the identity it decides (whatever the
//! CSR asks for), and a sidecar makes the key and CSR it sends. The key never leaves the sidecar.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use attache_config::model::SpiffeId;
use rcgen::{CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType, KeyPair};

use super::ca::{now, uri_san, Ca};
use super::{serial_and_expiry, sign_leaf};

/// A loaded CA that signs workload certificates.
pub struct Authority {
    ca: Ca,
}

/// A signed leaf.
#[derive(Clone, Debug)]
pub struct SignedLeaf {
    pub cert_pem: String,
    /// `notBefore` and `notAfter`, unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl Authority {
    /// The CA in `dir` (`ca.pem`, `ca-key.pem`, as `attache ca init` / `attache-proxy certs init` write them).
    pub fn load(dir: &Path) -> Result<Self> {
        Ok(Self { ca: Ca::load(dir)? })
    }

    pub fn trust_domain(&self) -> &str {
        &self.ca.trust_domain
    }

    /// The trust bundle workloads of this CA verify each other with.
    pub fn bundle_pem(&self) -> &[u8] {
        &self.ca.pem
    }

    /// Signs the public key of `csr_pem` for `id`, valid `lifetime`. Only the key is taken from the CSR (after its
    /// self-signature is checked); the identity and everything else are the CA's.
    pub fn sign_csr(&self, csr_pem: &str, id: &SpiffeId, lifetime: Duration) -> Result<SignedLeaf> {
        ensure!(csr_pem.len() <= 16 * 1024, "the CSR is larger than 16 KiB");
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).context("the CSR is not valid")?;
        self.sign(&csr.public_key, id, lifetime)
    }

    /// A key and certificate for `id` made here (for the control plane's own serving identity).
    pub fn issue_with_key(&self, id: &SpiffeId, lifetime: Duration) -> Result<(SignedLeaf, String)> {
        let key = KeyPair::generate().context("generating a key")?;
        Ok((self.sign(&key, id, lifetime)?, key.serialize_pem()))
    }

    fn sign(&self, public_key: &impl rcgen::PublicKeyData, id: &SpiffeId, lifetime: Duration) -> Result<SignedLeaf> {
        ensure!(
            id.trust_domain() == self.ca.trust_domain,
            "{id} is not in this CA's trust domain {}",
            self.ca.trust_domain
        );
        let secs = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX).max(1);
        let cert = sign_leaf(&self.ca, id, public_key, secs)?;
        let (_, not_after) = serial_and_expiry(cert.der())?;
        let not_before = now()? - super::BACKDATE_SECS.min(secs / 10);
        Ok(SignedLeaf {
            cert_pem: cert.pem(),
            not_before: not_before.max(self.ca.not_before),
            not_after: not_after.timestamp(),
        })
    }
}

/// The trust domain of a CA bundle: the `spiffe://<trust-domain>` URI SAN of its first certificate.
pub fn bundle_trust_domain(pem: &[u8]) -> Result<String> {
    use rustls_pki_types::pem::PemObject as _;
    use x509_parser::prelude::FromDer as _;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem).context("no PEM certificate in the bundle")?;
    let (_, cert) = x509_parser::prelude::X509Certificate::from_der(&der)
        .map_err(|e| anyhow::anyhow!("parsing the CA certificate: {e}"))?;
    super::ca::ca_trust_domain(&cert)
}

/// A new key and a CSR for `id`: `(csr_pem, key_pem)`.
pub fn new_csr(id: &SpiffeId) -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating a key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, id.path().rsplit('/').next().unwrap_or("workload"));
    params.subject_alt_names = vec![uri_san(id.as_str())?];
    let csr = params.serialize_request(&key).context("making the CSR")?;
    Ok((csr.pem().context("encoding the CSR")?, key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{identity_of, TlsMaterial};

    #[test]
    fn a_csr_is_signed_with_the_identity_the_ca_decides() {
        let dir =
            std::env::temp_dir().join(format!("attache-authority-{}-{}", std::process::id(), rand::random::<u64>()));
        super::super::init(&dir, "example.org", 30, false).unwrap();
        let ca = Authority::load(&dir).unwrap();
        let asked = SpiffeId::parse("spiffe://example.org/ns/ops/sa/admin").unwrap();
        let (csr, key) = new_csr(&asked).unwrap();
        let given = SpiffeId::parse("spiffe://example.org/ns/default/sa/web").unwrap();
        let leaf = ca.sign_csr(&csr, &given, Duration::from_secs(24 * 3600)).unwrap();
        let material = TlsMaterial::from_pem(leaf.cert_pem.as_bytes(), key.as_bytes(), ca.bundle_pem()).unwrap();
        assert_eq!(material.identity, given, "the CA's identity, not the CSR's");
        assert_eq!(identity_of(material.certs[0].as_ref()).unwrap(), given);
        let lifetime = leaf.not_after - crate::source::unix_now() as i64;
        assert!((24 * 3600 - 5..=24 * 3600 + 5).contains(&lifetime), "{lifetime}");
        let other = SpiffeId::parse("spiffe://other.org/ns/a/sa/b").unwrap();
        assert!(ca.sign_csr(&csr, &other, Duration::from_secs(60)).is_err(), "another trust domain");
        assert!(ca.sign_csr("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", &given, Duration::from_secs(60)).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
