//! Test-time PKI: a mesh CA issuing SPIFFE workload certificates with rcgen (no key is ever committed), and a
//! workload's `cert.pem`, `key.pem` and `bundle.pem` laid out the way a Kubernetes Secret volume has them.
//!
//! ```text
//! let mesh = pki::Ca::new("mesh");
//! let web = mesh.workload("spiffe://example.org/ns/default/sa/web");    // files in a temp dir, removed on drop
//! let api = mesh.workload_with(mesh.leaf().uri(API).dns("api.mesh.test").issue());
//! web.rotate(&mesh.issue(WEB));                                          // all three files swap at once
//! assert_eq!(openssl_serial, web.serial());
//! ```
//!
//! A [`Workload`]'s files are symlinks into `..data`, itself a symlink to a versioned directory: a rotation writes a
//! new versioned directory, then renames a new `..data` link over the old one (what the kubelet's atomic writer
//! does), so a reader never sees half-written files or a new certificate with an old key.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub use crate::TempDir;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

/// A (year, month, day) date, midnight UTC.
pub type Ymd = (i32, u8, u8);

/// Default validity of generated certificates: wide enough to cover any test run.
pub const VALID_FROM: Ymd = (2020, 1, 1);
pub const VALID_UNTIL: Ymd = (2099, 1, 1);

/// A certificate authority that issues workload certificates.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// A leaf certificate and its private key, as PEM.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    uris: Vec<String>,
    serial: u64,
    not_after: i64,
}

/// Options of a leaf certificate; see [`Ca::leaf`].
#[must_use]
pub struct LeafBuilder<'a> {
    ca: &'a Ca,
    uris: Vec<String>,
    dns: Vec<String>,
    not_before: Ymd,
    not_after: Ymd,
}

/// A workload's credentials on disk: `cert.pem`, `key.pem` and `bundle.pem` in a temporary directory owned by this
/// value (removed on drop), replaced atomically by [`Workload::rotate`].
pub struct Workload {
    id: String,
    bundle_pem: String,
    dir: TempDir,
    versions: AtomicU64,
    current: Mutex<Leaf>,
}

impl Ca {
    /// A self-signed CA valid from [`VALID_FROM`] to [`VALID_UNTIL`].
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("generating a CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = date_time_ymd(VALID_FROM.0, VALID_FROM.1, VALID_FROM.2);
        params.not_after = date_time_ymd(VALID_UNTIL.0, VALID_UNTIL.1, VALID_UNTIL.2);
        let cert = params.self_signed(&key).expect("self-signing the CA");
        Self { cert, key }
    }

    /// The CA certificate as PEM: a trust bundle.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf whose only SAN is the URI `id` (as SPIFFE workload certificates are), valid for the whole test.
    pub fn issue(&self, id: &str) -> Leaf {
        self.leaf().uri(id).issue()
    }

    /// A leaf to customise: URI and DNS SANs, validity.
    pub fn leaf(&self) -> LeafBuilder<'_> {
        LeafBuilder { ca: self, uris: Vec::new(), dns: Vec::new(), not_before: VALID_FROM, not_after: VALID_UNTIL }
    }

    /// A workload `id` with a fresh leaf from this CA, trusting this CA.
    pub fn workload(&self, id: &str) -> Workload {
        self.workload_with(self.issue(id))
    }

    /// A workload presenting `leaf`, trusting this CA.
    pub fn workload_with(&self, leaf: Leaf) -> Workload {
        Workload::new(leaf, self.pem())
    }
}

impl LeafBuilder<'_> {
    /// Adds a URI SAN (a SPIFFE ID, or anything else to test what is refused).
    pub fn uri(mut self, uri: &str) -> Self {
        self.uris.push(uri.to_owned());
        self
    }

    /// Adds a DNS SAN, e.g. so curl or openssl can verify the proxy's server certificate by name.
    pub fn dns(mut self, name: &str) -> Self {
        self.dns.push(name.to_owned());
        self
    }

    /// Valid from `not_before` to `not_after` (midnight UTC), e.g. in the past to get an expired certificate.
    pub fn valid(mut self, not_before: Ymd, not_after: Ymd) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Signs the leaf with a new key and a serial number unique in this process.
    pub fn issue(self) -> Leaf {
        static SERIALS: AtomicU64 = AtomicU64::new(1);
        // A fixed high byte keeps the DER integer 8 bytes long, so every tool prints it the same way.
        let serial = 0x4a00_0000_0000_0000 | SERIALS.fetch_add(1, Ordering::Relaxed);
        let key = KeyPair::generate().expect("generating a leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "workload");
        params.serial_number = Some(SerialNumber::from(serial));
        let uris = self.uris.iter().map(|u| SanType::URI(u.as_str().try_into().expect("an ASCII URI")));
        let dns = self.dns.iter().map(|d| SanType::DnsName(d.as_str().try_into().expect("an ASCII DNS name")));
        params.subject_alt_names = uris.chain(dns).collect();
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = date_time_ymd(self.not_before.0, self.not_before.1, self.not_before.2);
        params.not_after = date_time_ymd(self.not_after.0, self.not_after.1, self.not_after.2);
        let not_after = params.not_after.unix_timestamp();
        let cert = params.signed_by(&key, &self.ca.cert, &self.ca.key).expect("signing a leaf");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), uris: self.uris, serial, not_after }
    }
}

impl Leaf {
    /// The serial number as upper-case hex without leading zeros (see [`normalize_serial`]).
    pub fn serial(&self) -> String {
        format!("{:X}", self.serial)
    }

    /// `notAfter` in unix seconds, as `attache_tls_certificate_expiry_timestamp_seconds` reports it.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The URI SANs, in order.
    pub fn uris(&self) -> &[String] {
        &self.uris
    }
}

impl Workload {
    /// Writes `leaf` and `bundle_pem` into a new temporary directory.
    pub fn new(leaf: Leaf, bundle_pem: String) -> Self {
        let id = leaf.uris.first().cloned().unwrap_or_default();
        let dir = TempDir::new("attache-pki");
        let workload = Self { id, bundle_pem, dir, versions: AtomicU64::new(0), current: Mutex::new(leaf.clone()) };
        workload.swap(&leaf.cert_pem, &leaf.key_pem);
        for file in ["cert.pem", "key.pem", "bundle.pem"] {
            std::os::unix::fs::symlink(Path::new("..data").join(file), workload.dir.path().join(file))
                .expect("linking a credential file");
        }
        workload
    }

    /// The SPIFFE ID (the first URI SAN) of the leaf this workload started with.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle.pem")
    }

    /// The leaf last installed with [`Workload::rotate`] (or the first one).
    pub fn leaf(&self) -> Leaf {
        self.current.lock().unwrap().clone()
    }

    /// The serial of [`Workload::leaf`].
    pub fn serial(&self) -> String {
        self.leaf().serial()
    }

    /// Replaces certificate and key with `leaf`'s in one atomic swap.
    pub fn rotate(&self, leaf: &Leaf) {
        *self.current.lock().unwrap() = leaf.clone();
        self.swap(&leaf.cert_pem, &leaf.key_pem);
    }

    /// Replaces certificate and key with arbitrary bytes in one atomic swap (to test bad rotations);
    /// [`Workload::leaf`] keeps naming the last good leaf.
    pub fn install_raw(&self, cert_pem: &str, key_pem: &str) {
        self.swap(cert_pem, key_pem);
    }

    /// Writes a new versioned directory, points `..data` at it with a rename, and removes the previous one.
    fn swap(&self, cert_pem: &str, key_pem: &str) {
        let dir = self.dir.path();
        let version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
        let name = format!("..v{version}");
        std::fs::create_dir(dir.join(&name)).expect("creating a credentials version");
        for (file, contents) in [("cert.pem", cert_pem), ("key.pem", key_pem), ("bundle.pem", &self.bundle_pem)] {
            std::fs::write(dir.join(&name).join(file), contents).expect("writing a credential file");
        }
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).expect("linking the new credentials version");
        std::fs::rename(&tmp, dir.join("..data")).expect("swapping the credentials version");
        if version > 1 {
            let _ = std::fs::remove_dir_all(dir.join(format!("..v{}", version - 1)));
        }
    }
}

/// A serial number as printed by any tool (`serial=0A1B`, `0a:1b`, `a1b`) in the form [`Leaf::serial`] uses.
pub fn normalize_serial(text: &str) -> String {
    let hex = text.trim().trim_start_matches("serial=").replace(':', "").to_ascii_uppercase();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_swaps_every_file_at_once_and_cleans_up() {
        let ca = Ca::new("ca");
        let web = ca.workload("spiffe://example.org/ns/default/sa/web");
        let first = std::fs::read_to_string(web.cert()).unwrap();
        assert_eq!(first, web.leaf().cert_pem);
        assert_eq!(std::fs::read_to_string(web.bundle()).unwrap(), ca.pem());

        let next = ca.issue(web.id());
        web.rotate(&next);
        assert_eq!(std::fs::read_to_string(web.cert()).unwrap(), next.cert_pem);
        assert_eq!(std::fs::read_to_string(web.key()).unwrap(), next.key_pem);
        assert_eq!(web.serial(), next.serial());
        assert_ne!(next.serial(), ca.issue(web.id()).serial(), "serials are unique");
        let versions = std::fs::read_dir(web.dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("..v"));
        assert_eq!(versions.count(), 1, "the previous version is removed");

        web.install_raw("garbage", "garbage");
        assert_eq!(std::fs::read_to_string(web.key()).unwrap(), "garbage");
        assert_eq!(web.serial(), next.serial(), "a raw install is not a leaf");
    }

    #[test]
    fn serials_normalize_across_tools() {
        assert_eq!(normalize_serial("serial=4A00000000000001\n"), "4A00000000000001");
        assert_eq!(normalize_serial("4a:00:00:00:00:00:00:01"), "4A00000000000001");
        assert_eq!(normalize_serial("00ff"), "FF");
        assert_eq!(normalize_serial("serial=00"), "0");
    }
}
