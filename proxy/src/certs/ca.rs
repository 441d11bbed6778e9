//! The dev CA on disk (`ca.pem`, `ca-key.pem`) as an rcgen issuer, and the small helpers issuing needs: serials,
//! times, URI SANs, and files written atomically with private modes.

use std::path::Path;

use anyhow::{bail, ensure, Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, IsCa, KeyIdMethod, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use x509_parser::der_parser::ber::Tag;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509Certificate};
use x509_parser::time::ASN1Time;

use super::{CA_CERT, CA_KEY};

/// Checks a SPIFFE trust domain: non-empty, at most 255 bytes, only `[a-z0-9._-]`.
pub fn validate_trust_domain(td: &str) -> Result<()> {
    attache_config::model::validate_trust_domain(td).map_err(|why| anyhow::anyhow!("trust domain {td:?}: {why}"))
}

/// A CA loaded from `ca.pem` and `ca-key.pem`.
pub(super) struct Ca {
    pub pem: Vec<u8>,
    der: CertificateDer<'static>,
    pub key: KeyPair,
    pub trust_domain: String,
    pub not_before: i64,
    pub not_after: i64,
}

impl Ca {
    pub fn load(dir: &Path) -> Result<Self> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let pem = std::fs::read(&cert_path)
            .with_context(|| format!("reading {} (create a CA with `certs init`)", cert_path.display()))?;
        let der = CertificateDer::from_pem_slice(&pem)
            .with_context(|| format!("{}: no PEM certificate found", cert_path.display()))?;
        let key_pem = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key =
            KeyPair::from_pem(&key_pem).with_context(|| format!("{}: not a usable private key", key_path.display()))?;

        let (_, x509) = X509Certificate::from_der(&der)
            .map_err(|e| anyhow::anyhow!("{}: parsing the certificate: {e}", cert_path.display()))?;
        ensure!(x509.is_ca(), "{}: not a CA certificate (basic constraints CA:FALSE or missing)", cert_path.display());
        ensure!(
            x509.public_key().raw == key.public_key_der().as_slice(),
            "{} does not belong to the certificate in {}",
            key_path.display(),
            cert_path.display()
        );
        let trust_domain = ca_trust_domain(&x509).with_context(|| cert_path.display().to_string())?;
        let validity = x509.validity();
        let (not_before, not_after) = (validity.not_before.timestamp(), validity.not_after.timestamp());
        Ok(Self { pem, der, key, trust_domain, not_before, not_after })
    }

    /// An rcgen certificate standing in for the CA as issuer: same subject name (attribute by attribute, same string
    /// types) and the CA's own subject key identifier, so leaves chain to the certificate on disk.
    pub fn issuer(&self) -> Result<rcgen::Certificate> {
        let (_, x509) =
            X509Certificate::from_der(&self.der).map_err(|e| anyhow::anyhow!("parsing the CA certificate: {e}"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        for rdn in x509.subject().iter() {
            for attr in rdn.iter() {
                let oid: Vec<u64> = attr
                    .attr_type()
                    .iter()
                    .context("the CA subject has an attribute type that is not a valid OID")?
                    .collect();
                let value = attr.attr_value();
                let text = || {
                    std::str::from_utf8(value.data).map(str::to_owned).context("the CA subject has a non-UTF-8 value")
                };
                let value = match value.header.tag() {
                    Tag::Utf8String => DnValue::Utf8String(text()?),
                    Tag::PrintableString => DnValue::PrintableString(text()?.try_into()?),
                    Tag::Ia5String => DnValue::Ia5String(text()?.try_into()?),
                    tag => bail!("the CA subject uses a string type this tool cannot reproduce ({tag})"),
                };
                params.distinguished_name.push(DnType::from_oid(&oid), value);
            }
        }
        let ski = x509.extensions().iter().find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        });
        if let Some(ski) = ski {
            params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        }
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.self_signed(&self.key).context("preparing the CA as issuer")
    }
}

/// The trust domain of a CA: its `spiffe://<trust-domain>` URI SAN.
pub(super) fn ca_trust_domain(cert: &X509Certificate<'_>) -> Result<String> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| anyhow::anyhow!("parsing subjectAltName: {e}"))?
        .context("the CA has no subjectAltName; expected a URI SAN spiffe://<trust-domain>")?;
    let mut domains = san.value.general_names.iter().filter_map(|name| match name {
        GeneralName::URI(uri) => uri.strip_prefix("spiffe://"),
        _ => None,
    });
    let Some(td) = domains.next() else {
        bail!("the CA has no URI SAN spiffe://<trust-domain>");
    };
    ensure!(domains.next().is_none(), "the CA has more than one spiffe:// URI SAN");
    let td = td.strip_suffix('/').unwrap_or(td);
    validate_trust_domain(td)?;
    Ok(td.to_owned())
}

pub(super) fn uri_san(uri: &str) -> Result<SanType> {
    Ok(SanType::URI(uri.try_into().with_context(|| format!("{uri:?} is not a valid URI SAN"))?))
}

/// 16 random bytes, positive and without a leading zero byte, so the DER integer is exactly what is printed.
pub(super) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

pub(super) fn serial_and_expiry(der: &[u8]) -> Result<(String, ASN1Time)> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| anyhow::anyhow!("parsing the new certificate: {e}"))?;
    Ok((cert.raw_serial_as_string(), cert.validity().not_after))
}

/// Seconds since the Unix epoch.
pub(super) fn now() -> Result<i64> {
    let elapsed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).context("the clock is before 1970")?;
    i64::try_from(elapsed.as_secs()).context("the clock is out of range")
}

/// A Unix timestamp as a certificate time (`.to_datetime()` gives rcgen's type).
pub(super) fn asn1_time(unix: i64) -> Result<ASN1Time> {
    ASN1Time::from_timestamp(unix).map_err(|e| anyhow::anyhow!("time {unix} is out of range: {e}"))
}
