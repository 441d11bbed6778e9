//! Credentials: a workload's certificate, key and trust bundle, loaded from files and kept current. Each distinct
//! set of files is loaded once and watched (on its directories, so Kubernetes Secret symlink swaps are seen); a
//! change that validates replaces the material for new handshakes, while established connections keep theirs. A
//! change that does not validate (unreadable, truncated PEM, key not matching the certificate, expired) is logged
//! and counted, and the previous material stays in use.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex, PoisonError};

use attache_config::model::TlsFiles;
use tokio::sync::watch;

use super::material::{MaterialError, TlsMaterial};
use super::metrics::{CertLabels, ReloadLabels, TlsMetrics};
use crate::fswatch::FsChanges;

/// One set of files' current material. Cheap to clone; the watch ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Credentials {
    files: Arc<TlsFiles>,
    current: watch::Receiver<Option<Arc<Loaded>>>,
}

/// Material as loaded, numbered so that derived rustls configs know when to rebuild.
#[derive(Debug)]
pub struct Loaded {
    pub material: TlsMaterial,
    pub generation: u64,
}

/// Every watched set of files, by files. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    entries: Arc<Mutex<HashMap<TlsFiles, Credentials>>>,
    metrics: TlsMetrics,
}

/// Why there is no material to handshake with.
#[derive(Debug, thiserror::Error)]
#[error("no usable TLS credentials from {}", files.cert.display())]
pub struct NoCredentials {
    pub files: Arc<TlsFiles>,
}

/// The files' contents when last read, to tell a change from a periodic recheck.
#[derive(Default)]
struct Seen {
    started: bool,
    /// `None`: some file could not be read.
    content: Option<u64>,
    generation: u64,
    /// The identity whose expiry series this set of files feeds.
    identity: Option<String>,
}

impl Credentials {
    /// The material for a new handshake.
    pub fn current(&self) -> Result<Arc<Loaded>, NoCredentials> {
        self.current.borrow().clone().ok_or_else(|| NoCredentials { files: self.files.clone() })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

impl CredentialStore {
    pub fn new(metrics: TlsMetrics) -> Self {
        Self { entries: Arc::default(), metrics }
    }

    pub fn metrics(&self) -> &TlsMetrics {
        &self.metrics
    }

    /// The credentials for `files`, loaded and watched from first use. Must be called within a tokio runtime.
    pub fn get(&self, files: &TlsFiles) -> Credentials {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = entries.get(files) {
            return found.clone();
        }
        let files = Arc::new(files.clone());
        let mut seen = Seen::default();
        let first = reload(&files, &mut seen, &self.metrics);
        let (tx, current) = watch::channel(first);
        tokio::spawn(follow(files.clone(), tx, seen, self.metrics.clone()));
        let creds = Credentials { files: files.clone(), current };
        entries.insert((*files).clone(), creds.clone());
        creds
    }

    /// Forgets credentials whose files `keep` rejects; their watch ends once no listener or endpoint uses them.
    pub fn retain(&self, keep: impl Fn(&TlsFiles) -> bool) {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).retain(|files, _| keep(files));
    }

    /// Loads `files` once, without watching: the check a config must pass before it is applied.
    pub fn check(files: &TlsFiles) -> Result<TlsMaterial, MaterialError> {
        TlsMaterial::load(&files.cert, &files.key, &files.trust_bundle)
    }
}

/// Reloads on every change of the files' directories until every [`Credentials`] clone is gone.
async fn follow(files: Arc<TlsFiles>, tx: watch::Sender<Option<Arc<Loaded>>>, mut seen: Seen, metrics: TlsMetrics) {
    let paths = [files.cert.as_path(), files.key.as_path(), files.trust_bundle.as_path()];
    let mut changes = FsChanges::watch_files(paths);
    loop {
        tokio::select! {
            () = tx.closed() => break,
            () = changes.next() => {}
        }
        if let Some(loaded) = reload(&files, &mut seen, &metrics) {
            tx.send_replace(Some(loaded));
        }
    }
    // No listener or backend uses these files any more: neither is their certificate in use.
    if let Some(identity) = seen.identity {
        metrics.expiry.remove(&CertLabels { identity });
    }
}

/// New material when the files changed and validate; `None` when unchanged or invalid (logged and counted once
/// per distinct content). The bytes hashed are the bytes validated, so a file rewritten between two reads cannot
/// leave a rejected read recorded as the current content.
fn reload(files: &TlsFiles, seen: &mut Seen, metrics: &TlsMetrics) -> Option<Arc<Loaded>> {
    let read = read_all(files);
    let content = read.as_ref().ok().map(|(_, hash)| *hash);
    if seen.started && content == seen.content {
        return None;
    }
    let first = !seen.started;
    seen.started = true;
    seen.content = content;
    let loaded = read.and_then(|([cert, key, bundle], _)| TlsMaterial::from_pem(&cert, &key, &bundle));
    match loaded {
        Ok(material) => {
            seen.generation += 1;
            metrics.reloads.get_or_create(&ReloadLabels { result: "applied", reason: "none" }).inc();
            let identity = material.identity.to_string();
            if let Some(previous) = seen.identity.replace(identity.clone()).filter(|p| *p != identity) {
                metrics.expiry.remove(&CertLabels { identity: previous });
            }
            metrics.expiry.get_or_create(&CertLabels { identity }).set(material.not_after);
            tracing::info!(
                identity = %material.identity,
                not_after = material.not_after,
                generation = seen.generation,
                cert = %files.cert.display(),
                "TLS credentials loaded"
            );
            Some(Arc::new(Loaded { material, generation: seen.generation }))
        }
        Err(error) => {
            metrics.reloads.get_or_create(&ReloadLabels { result: "rejected", reason: error.reason() }).inc();
            let error = crate::http::rescue::ErrorChain(&error);
            if first {
                tracing::error!(cert = %files.cert.display(), %error, "TLS credentials cannot be loaded");
            } else {
                tracing::error!(cert = %files.cert.display(), %error, "new TLS credentials rejected; keeping the ones in use");
            }
            None
        }
    }
}

/// The three files' bytes and a hash of them.
fn read_all(files: &TlsFiles) -> Result<([Vec<u8>; 3], u64), MaterialError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| MaterialError::Unreadable { path: path.to_owned(), source })
    };
    let bytes = [read(&files.cert)?, read(&files.key)?, read(&files.trust_bundle)?];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Ok((bytes, h.finish()))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::tls::test_certs::Ca;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Dir {
        let dir = std::env::temp_dir().join(format!("attache-creds-{}-{}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(dir: &Path, cert: &str, key: &str, bundle: &str) -> TlsFiles {
        let files = TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), trust_bundle: dir.join("ca.pem") };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        std::fs::write(&files.trust_bundle, bundle).unwrap();
        files
    }

    fn count(metrics: &TlsMetrics, result: &'static str, reason: &'static str) -> u64 {
        metrics.reloads.get_or_create(&ReloadLabels { result, reason }).get()
    }

    #[test]
    fn a_valid_change_is_a_new_generation_and_an_unchanged_recheck_is_nothing() {
        let (tmp, ca, metrics) = (dir(), Ca::new("ca"), TlsMetrics::default());
        let a = ca.leaf(&["spiffe://example.org/a"]);
        let files = write(&tmp.0, &a.cert_pem, &a.key_pem, &ca.pem());
        let mut seen = Seen::default();
        let first = reload(&files, &mut seen, &metrics).expect("loads");
        assert_eq!((first.generation, first.material.identity.as_str()), (1, "spiffe://example.org/a"));
        assert!(reload(&files, &mut seen, &metrics).is_none(), "unchanged files are not reloaded");

        let b = ca.leaf(&["spiffe://example.org/b"]);
        write(&tmp.0, &b.cert_pem, &b.key_pem, &ca.pem());
        let second = reload(&files, &mut seen, &metrics).expect("reloads");
        assert_eq!((second.generation, second.material.identity.as_str()), (2, "spiffe://example.org/b"));
        assert_eq!(count(&metrics, "applied", "none"), 2);
        let expiry = metrics.expiry.get_or_create(&CertLabels { identity: "spiffe://example.org/b".into() }).get();
        assert_eq!(expiry, second.material.not_after);
    }

    #[test]
    fn a_bad_change_is_rejected_once_and_leaves_the_material_in_use() {
        let (tmp, ca, metrics) = (dir(), Ca::new("ca"), TlsMetrics::default());
        let a = ca.leaf(&["spiffe://example.org/a"]);
        let other = ca.leaf(&["spiffe://example.org/other"]);
        let files = write(&tmp.0, &a.cert_pem, &a.key_pem, &ca.pem());
        let mut seen = Seen::default();
        assert!(reload(&files, &mut seen, &metrics).is_some());

        write(&tmp.0, &a.cert_pem, &other.key_pem, &ca.pem());
        assert!(reload(&files, &mut seen, &metrics).is_none(), "a key of another certificate is refused");
        assert!(reload(&files, &mut seen, &metrics).is_none());
        assert_eq!(count(&metrics, "rejected", "key-mismatch"), 1, "counted once per bad content");

        std::fs::remove_file(&files.key).unwrap();
        assert!(reload(&files, &mut seen, &metrics).is_none());
        assert_eq!(count(&metrics, "rejected", "unreadable"), 1);

        write(&tmp.0, &a.cert_pem, &a.key_pem, &ca.pem());
        assert_eq!(reload(&files, &mut seen, &metrics).expect("fixed").generation, 2);
    }

    #[tokio::test]
    async fn credentials_of_unloadable_files_refuse_to_handshake_and_the_store_shares_one_watch() {
        let (tmp, store) = (dir(), CredentialStore::new(TlsMetrics::default()));
        let files = write(&tmp.0, "not a certificate", "", "");
        let creds = store.get(&files);
        assert!(creds.current().is_err(), "no material, so no handshake (never plaintext)");
        let again = store.get(&files);
        assert!(Arc::ptr_eq(&creds.files, &again.files), "one entry, one watch per set of files");
        store.retain(|_| false);
        assert!(store.entries.lock().unwrap().is_empty());
        assert_eq!(creds.files(), &files);
    }
}
