//! Test-time PKI: CAs and SPIFFE leaf certificates generated with rcgen (no keys in the repo).

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::material::TlsMaterial;

/// A (year, month, day) date.
pub type Ymd = (i32, u8, u8);

/// Default validity of generated certificates: wide enough to cover any test run.
pub const VALID_FROM: Ymd = (2020, 1, 1);
pub const VALID_UNTIL: Ymd = (2099, 1, 1);

/// A certificate authority that can issue leaf certificates.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// A generated leaf certificate and its key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = date_time_ymd(VALID_FROM.0, VALID_FROM.1, VALID_FROM.2);
        params.not_after = date_time_ymd(VALID_UNTIL.0, VALID_UNTIL.1, VALID_UNTIL.2);
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf valid for the whole test period with the given URI SANs.
    pub fn leaf(&self, uris: &[&str]) -> Leaf {
        self.leaf_valid(uris, VALID_FROM, VALID_UNTIL)
    }

    /// A leaf with the given URI SANs and validity window.
    pub fn leaf_valid(&self, uris: &[&str], not_before: Ymd, not_after: Ymd) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "workload");
        params.subject_alt_names = uris.iter().map(|u| SanType::URI((*u).try_into().unwrap())).collect();
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), cert_der: cert.der().clone() }
    }
}

impl Leaf {
    /// Loads this leaf as TLS material trusting `bundle_pem`.
    pub fn material(&self, bundle_pem: &str) -> TlsMaterial {
        TlsMaterial::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes(), bundle_pem.as_bytes()).unwrap()
    }

    /// Loads this leaf as TLS material as if the clock read `now` (for certificates that are
    /// not valid today).
    pub fn material_at(&self, bundle_pem: &str, now: Ymd) -> TlsMaterial {
        TlsMaterial::from_pem_at(self.cert_pem.as_bytes(), self.key_pem.as_bytes(), bundle_pem.as_bytes(), unix(now))
            .unwrap()
    }
}

/// `now` as a `UnixTime`.
pub fn unix(now: Ymd) -> UnixTime {
    let secs = date_time_ymd(now.0, now.1, now.2).unix_timestamp();
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs.try_into().unwrap()))
}
