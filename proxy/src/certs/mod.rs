//! Dev certificates: `attache-proxy certs` creates a local CA and issues workload certificates carrying SPIFFE IDs
//! (X509-SVIDs), for people running sidecars without a control plane.
//!
//! `init` writes `ca.pem` (a self-signed CA whose URI SAN is `spiffe://<trust-domain>`) and `ca-key.pem` (mode 0600);
//! `issue` loads them, checks that the requested SPIFFE ID belongs to the CA's trust domain, and writes `cert.pem`
//! (the leaf: one URI SAN, serverAuth + clientAuth), `key.pem` (mode 0600) and `bundle.pem` (the CA certificate).

use std::fmt;
use std::path::{Path, PathBuf};

mod authority;
mod ca;
#[cfg(test)]
mod tests;

use anyhow::{bail, ensure, Context as _, Result};
use attache_config::model::{SpiffeId, MAX_SPIFFE_ID_LEN};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use x509_parser::time::ASN1Time;

use self::ca::{asn1_time, now, random_serial, serial_and_expiry, uri_san, validate_trust_domain, Ca};
use crate::persist::write_atomically;

pub use self::authority::{bundle_trust_domain, new_csr, Authority, SignedLeaf};

/// File names inside the CA directory and the output directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const LEAF_CERT: &str = "cert.pem";
pub const LEAF_KEY: &str = "key.pem";
pub const BUNDLE: &str = "bundle.pem";

/// Certificates start this long before "now", to tolerate clock skew between hosts.
const BACKDATE_SECS: i64 = 5 * 60;
/// The longest validity accepted, in days (100 years).
const MAX_DAYS: u32 = 36_500;

/// `attache-proxy certs`: a dev CA and workload certificates with SPIFFE IDs.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    pub command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Create a self-signed dev CA for a trust domain: DIR/ca.pem and DIR/ca-key.pem.
    Init {
        /// Directory to write the CA into (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// SPIFFE trust domain, e.g. `example.org`.
        #[arg(long)]
        trust_domain: String,
        /// Validity of the CA certificate, in days.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS)))]
        days: u32,
        /// Overwrite an existing CA.
        #[arg(long)]
        force: bool,
    },
    /// Issue a workload certificate for a SPIFFE ID: OUT/cert.pem, OUT/key.pem and OUT/bundle.pem.
    Issue {
        /// Directory holding ca.pem and ca-key.pem (written by `certs init`).
        #[arg(long)]
        ca_dir: PathBuf,
        /// SPIFFE ID of the workload, e.g. `spiffe://example.org/ns/default/sa/web`.
        #[arg(long)]
        spiffe_id: String,
        /// Directory to write the certificate, key and trust bundle into (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Validity of the certificate, in days (capped at the CA's expiry).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_DAYS)))]
        days: u32,
    },
}

/// Runs a `certs` subcommand and prints what it wrote.
pub fn run(args: CertsArgs) -> Result<()> {
    match args.command {
        CertsCommand::Init { dir, trust_domain, days, force } => {
            print!("{}", init(&dir, &trust_domain, days, force)?);
        }
        CertsCommand::Issue { ca_dir, spiffe_id, out, days } => {
            print!("{}", issue(&ca_dir, &spiffe_id, &out, days)?);
        }
    }
    Ok(())
}

/// What [`init`] wrote.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trust_domain: String,
    /// Colon-separated hex, as `openssl x509 -serial` would show it (lower case).
    pub serial: String,
    pub not_after: ASN1Time,
}

/// What [`issue`] wrote.
#[derive(Debug, Clone)]
pub struct IssuedFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub bundle: PathBuf,
    pub spiffe_id: String,
    /// Colon-separated hex (lower case).
    pub serial: String,
    pub not_after: ASN1Time,
}

impl fmt::Display for CaFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wrote {} (CA certificate for spiffe://{})", self.cert.display(), self.trust_domain)?;
        writeln!(f, "wrote {} (CA private key, mode 0600)", self.key.display())?;
        writeln!(f, "serial: {}", self.serial)?;
        writeln!(f, "not after: {}", self.not_after)
    }
}

impl fmt::Display for IssuedFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "wrote {} (certificate for {})", self.cert.display(), self.spiffe_id)?;
        writeln!(f, "wrote {} (private key, mode 0600)", self.key.display())?;
        writeln!(f, "wrote {} (trust bundle: the CA certificate)", self.bundle.display())?;
        writeln!(f, "serial: {}", self.serial)?;
        writeln!(f, "not after: {}", self.not_after)
    }
}

/// Creates a self-signed dev CA for `trust_domain` in `dir`: `ca.pem` and `ca-key.pem` (mode 0600 on unix). Refuses
/// to overwrite either file unless `force`.
pub fn init(dir: &Path, trust_domain: &str, days: u32, force: bool) -> Result<CaFiles> {
    validate_trust_domain(trust_domain)?;
    ensure!((1..=MAX_DAYS).contains(&days), "--days must be between 1 and {MAX_DAYS}");
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    if !force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                bail!("{} already exists; pass --force to overwrite it", path.display());
            }
        }
    }

    let now = now()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, format!("Attaché dev CA {trust_domain}"));
    params.subject_alt_names = vec![uri_san(&format!("spiffe://{trust_domain}"))?];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = asn1_time(now - BACKDATE_SECS)?.to_datetime();
    params.not_after = asn1_time(now + i64::from(days) * 86_400)?.to_datetime();
    params.serial_number = Some(random_serial());
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = params.self_signed(&key).context("signing the CA certificate")?;
    let (serial, not_after) = serial_and_expiry(cert.der())?;

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomically(&key_path, key.serialize_pem().as_bytes(), true)
        .with_context(|| format!("writing {}", key_path.display()))?;
    write_atomically(&cert_path, cert.pem().as_bytes(), false)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(CaFiles { cert: cert_path, key: key_path, trust_domain: trust_domain.to_owned(), serial, not_after })
}

/// A workload leaf for `id` over `public_key`, signed by `ca`: one URI SAN (the SPIFFE ID), serverAuth and
/// clientAuth, valid from a few minutes ago (clock skew) for `lifetime_secs`, capped at the CA's own expiry.
fn sign_leaf(
    ca: &Ca,
    id: &SpiffeId,
    public_key: &impl rcgen::PublicKeyData,
    lifetime_secs: i64,
) -> Result<rcgen::Certificate> {
    let now = now()?;
    ensure!(now < ca.not_after, "the CA has expired; create a new one");
    // Backdated for clock skew, by at most a tenth of the lifetime (a short-lived certificate renewed at two thirds
    // of its lifetime must not look two thirds old when it is new).
    let not_before = (now - BACKDATE_SECS.min(lifetime_secs / 10)).max(ca.not_before);
    let not_after = now.saturating_add(lifetime_secs).min(ca.not_after);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // The subject is free-form for X509-SVIDs; the workload name (the last path segment) reads well in tools.
    let workload = id.path().rsplit('/').next().unwrap_or_default();
    params.distinguished_name.push(DnType::CommonName, workload.chars().take(64).collect::<String>());
    params.subject_alt_names = vec![uri_san(id.as_str())?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = asn1_time(not_before)?.to_datetime();
    params.not_after = asn1_time(not_after)?.to_datetime();
    params.serial_number = Some(random_serial());
    let issuer = ca.issuer()?;
    params.signed_by(public_key, &issuer, &ca.key).context("signing the workload certificate")
}

/// Issues a workload certificate for `spiffe_id`, signed by the CA in `ca_dir`, into `out`: `cert.pem`, `key.pem`
/// (mode 0600 on unix) and `bundle.pem` (the CA certificate). Existing files there are replaced (re-issuing is how a
/// certificate is renewed). The validity is `days`, capped at the CA's own expiry.
pub fn issue(ca_dir: &Path, spiffe_id: &str, out: &Path, days: u32) -> Result<IssuedFiles> {
    ensure!((1..=MAX_DAYS).contains(&days), "--days must be between 1 and {MAX_DAYS}");
    let ca = Ca::load(ca_dir)?;
    ensure!(spiffe_id.len() <= MAX_SPIFFE_ID_LEN, "SPIFFE ID is longer than {MAX_SPIFFE_ID_LEN} bytes");
    let id = SpiffeId::parse(spiffe_id)
        .map_err(|why| anyhow::anyhow!("{spiffe_id:?} is not a workload SPIFFE ID: {why}"))?;
    ensure!(
        id.trust_domain() == ca.trust_domain,
        "SPIFFE ID {id} is in trust domain {:?}, but the CA in {} is for {:?}",
        id.trust_domain(),
        ca_dir.display(),
        ca.trust_domain
    );

    let now = now()?;
    ensure!(
        now < ca.not_after,
        "the CA in {} has expired; create a new one with `certs init --force`",
        ca_dir.display()
    );
    let key = KeyPair::generate().context("generating the workload key")?;
    let cert = sign_leaf(&ca, &id, &key, i64::from(days) * 86_400)?;
    let (serial, not_after) = serial_and_expiry(cert.der())?;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (cert_path, key_path, bundle_path) = (out.join(LEAF_CERT), out.join(LEAF_KEY), out.join(BUNDLE));
    write_atomically(&key_path, key.serialize_pem().as_bytes(), true)
        .with_context(|| format!("writing {}", key_path.display()))?;
    write_atomically(&cert_path, cert.pem().as_bytes(), false)
        .with_context(|| format!("writing {}", cert_path.display()))?;
    write_atomically(&bundle_path, &ca.pem, false).with_context(|| format!("writing {}", bundle_path.display()))?;
    Ok(IssuedFiles {
        cert: cert_path,
        key: key_path,
        bundle: bundle_path,
        spiffe_id: id.to_string(),
        serial,
        not_after,
    })
}
