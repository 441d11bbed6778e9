//! The file source: watches the config file's directory (so a Kubernetes ConfigMap's symlink swap is seen),
//! debounces, validates, and publishes a new snapshot only when the content changed and is valid. An invalid edit
//! is logged, counted and shown at `/config`; the last good snapshot keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use attache_config::{ConfigError, FieldError, Snapshot};
use tokio::sync::watch;

use super::ConfigStatus;
use crate::fswatch::FsChanges;
use crate::metrics::{ConfigMetrics, ResultLabels};

/// Reads and validates a config file, and checks that the TLS files it names can be loaded.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    validated(&read(path)?)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError { errors: vec![FieldError::new("", format!("cannot read {}: {e}", path.display()))] })
}

fn validated(text: &str) -> Result<Snapshot, ConfigError> {
    attache_config::load_str_checked(text, crate::tls::check_snapshot)
}

/// Follows `path` and publishes every valid change. Returns the snapshot channel; the watch lives as long as the
/// returned task.
pub fn watch(
    path: PathBuf,
    initial: Snapshot,
    status: ConfigStatus,
    metrics: ConfigMetrics,
) -> (watch::Receiver<Arc<Snapshot>>, tokio::task::JoinHandle<()>) {
    let mut initial = initial;
    initial.version = initial.version.max(1);
    status.applied(&initial);
    metrics.version.set(initial.version as i64);
    metrics.last_reload_timestamp.set(super::unix_now() as i64);
    let (tx, rx) = watch::channel(Arc::new(initial));
    let mut changes = FsChanges::watch_files([path.as_path()]);
    let task = tokio::spawn(async move {
        loop {
            changes.next().await;
            reload(&path, &tx, &status, &metrics);
        }
    });
    (rx, task)
}

fn reload(path: &Path, tx: &watch::Sender<Arc<Snapshot>>, status: &ConfigStatus, metrics: &ConfigMetrics) {
    let current = tx.borrow().clone();
    let count = |result| metrics.reloads.get_or_create(&ResultLabels { result }).inc();
    let loaded = read(path).and_then(|text| {
        // The text serving, unchanged (what the periodic recheck finds every time): nothing to parse, and its TLS
        // files are not checked again here, since the certificates' own watch owns their changes (a bad certificate
        // never reads as a rejected configuration).
        if attache_config::fnv1a(text.as_bytes()) == current.hash {
            return Ok(None);
        }
        validated(&text).map(Some)
    });
    match loaded {
        Ok(None) => {}
        Ok(Some(mut snapshot)) => {
            snapshot.version = current.version + 1;
            tracing::info!(version = snapshot.version, path = %path.display(), "configuration applied");
            status.applied(&snapshot);
            metrics.version.set(snapshot.version as i64);
            metrics.last_reload_timestamp.set(super::unix_now() as i64);
            count("applied");
            let _ = tx.send(Arc::new(snapshot));
        }
        Err(error) => {
            // Only report a given bad content once, not on every recheck.
            if status.view().last_reload.is_some_and(|r| r.result == "rejected" && r.errors == render(&error)) {
                return;
            }
            tracing::error!(path = %path.display(), serving = current.version, "configuration rejected: {error}");
            status.rejected(&error);
            count("rejected");
        }
    }
}

fn render(error: &ConfigError) -> Vec<String> {
    error.errors.iter().map(ToString::to_string).collect()
}
