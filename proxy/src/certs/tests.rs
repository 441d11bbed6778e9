//! `certs init` and `certs issue` end to end on temporary directories.

use super::*;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use std::sync::atomic::{AtomicU64, Ordering};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer as _, X509Certificate};

const ID: &str = "spiffe://example.org/ns/default/sa/web";

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "attache-certs-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().unwrap().expect("a subjectAltName");
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_then_issue() {
    let tmp = TempDir::new();
    let (ca_dir, out) = (tmp.0.join("ca"), tmp.0.join("web"));
    let ca = init(&ca_dir, "example.org", 365, false).unwrap();
    assert_eq!(ca.cert, ca_dir.join("ca.pem"));
    assert!(ca.to_string().contains("ca-key.pem"));
    let issued = issue(&ca_dir, ID, &out, 30).unwrap();
    assert_eq!(issued.spiffe_id, ID);
    assert!(issued.to_string().contains(&issued.serial));

    // The CA.
    let ca_der = der(&ca_dir.join("ca.pem"));
    let (_, ca_cert) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca_cert.is_ca());
    let ku = ca_cert.key_usage().unwrap().expect("key usage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert_eq!(uri_sans(&ca_cert), ["spiffe://example.org"]);
    assert_eq!(ca_cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), "Attaché dev CA example.org");

    // The leaf.
    let leaf_der = der(&out.join("cert.pem"));
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert_eq!(uri_sans(&leaf), [ID]);
    let eku = leaf.extended_key_usage().unwrap().expect("extended key usage").value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.is_ca());
    assert_eq!(leaf.issuer(), ca_cert.subject());
    assert_eq!(leaf.raw_serial_as_string(), issued.serial);
    assert_eq!(leaf.validity().not_after, issued.not_after);
    assert!(leaf.validity().not_after <= ca_cert.validity().not_after);
    let days = (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp()) / 86_400;
    assert_eq!(days, 30, "30 days plus the 5-minute backdate");
    // The leaf chains to the CA for both TLS roles (as rustls will check it).
    let anchors = [webpki::anchor_from_trusted_cert(&ca_der).unwrap()];
    let end_entity = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
    let now = rustls_pki_types::UnixTime::now();
    for usage in [webpki::KeyUsage::server_auth(), webpki::KeyUsage::client_auth()] {
        end_entity
            .verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, &[], now, usage, None, None)
            .expect("the leaf chains to the CA");
    }
    let aki = leaf.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    let ski = ca_cert.extensions().iter().find_map(|e| match e.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    });
    assert!(ski.is_some());
    assert_eq!(aki, ski, "the leaf's AKI names the CA's SKI");

    // The key matches the leaf, and the bundle is the CA.
    let key = KeyPair::from_pem(&std::fs::read_to_string(out.join("key.pem")).unwrap()).unwrap();
    assert_eq!(key.public_key_der(), leaf.public_key().raw);
    assert_eq!(der(&out.join("bundle.pem")), ca_der);

    #[cfg(unix)]
    {
        assert_eq!(mode(&ca_dir.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&out.join("key.pem")), 0o600);
    }
}

#[test]
fn leaf_validity_is_capped_at_the_ca() {
    let tmp = TempDir::new();
    init(&tmp.0, "example.org", 2, false).unwrap();
    let issued = issue(&tmp.0, ID, &tmp.0.join("out"), 90).unwrap();
    let ca_der = der(&tmp.0.join("ca.pem"));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(issued.not_after, ca.validity().not_after);
}

#[test]
fn refuses_a_foreign_trust_domain_and_bad_ids() {
    let tmp = TempDir::new();
    init(&tmp.0, "example.org", 30, false).unwrap();
    let out = tmp.0.join("out");
    let err = issue(&tmp.0, "spiffe://other.org/ns/default/sa/web", &out, 30).unwrap_err();
    assert!(format!("{err:#}").contains("trust domain"), "{err:#}");
    for bad in [
        "https://example.org/ns/default/sa/web",
        "spiffe://example.org",
        "spiffe://example.org/",
        "spiffe://example.org/ns//web",
        "spiffe://example.org/ns/../web",
        "spiffe://Example.org/web",
        "spiffe://example.org:443/web",
        "spiffe://example.org/web?x=1",
    ] {
        assert!(issue(&tmp.0, bad, &out, 30).is_err(), "{bad} was accepted");
    }
    assert!(!out.join("cert.pem").exists(), "nothing is written for a refused ID");
}

#[test]
fn init_refuses_to_overwrite_unless_forced() {
    let tmp = TempDir::new();
    init(&tmp.0, "example.org", 30, false).unwrap();
    let before = std::fs::read(tmp.0.join("ca.pem")).unwrap();
    let err = init(&tmp.0, "example.org", 30, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err:#}");
    assert_eq!(std::fs::read(tmp.0.join("ca.pem")).unwrap(), before);
    // Only the key left behind still counts as an existing CA.
    std::fs::remove_file(tmp.0.join("ca.pem")).unwrap();
    assert!(init(&tmp.0, "example.org", 30, false).is_err());
    init(&tmp.0, "example.org", 30, true).unwrap();
    assert_ne!(std::fs::read(tmp.0.join("ca.pem")).unwrap(), before);
    #[cfg(unix)]
    assert_eq!(mode(&tmp.0.join("ca-key.pem")), 0o600);
}

#[test]
fn issue_needs_a_matching_ca_key() {
    let (a, b) = (TempDir::new(), TempDir::new());
    init(&a.0, "example.org", 30, false).unwrap();
    init(&b.0, "example.org", 30, false).unwrap();
    std::fs::copy(b.0.join("ca-key.pem"), a.0.join("ca-key.pem")).unwrap();
    let err = issue(&a.0, ID, &a.0.join("out"), 30).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err:#}");
    let err = issue(&a.0.join("missing"), ID, &a.0.join("out"), 30).unwrap_err();
    assert!(format!("{err:#}").contains("certs init"), "{err:#}");
}

#[test]
fn trust_domain_validation() {
    assert!(validate_trust_domain("example.org").is_ok());
    assert!(validate_trust_domain("prod-1.example_org").is_ok());
    for bad in ["", "Example.org", "spiffe://example.org", "example.org/x", "example.org:8443", "ex ample"] {
        assert!(validate_trust_domain(bad).is_err(), "{bad:?} was accepted");
    }
}
