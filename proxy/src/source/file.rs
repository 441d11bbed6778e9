//! The file source: watches the config file's directory (so a Kubernetes ConfigMap's symlink swap is seen),
//! debounces, validates, and publishes a new snapshot only when the content changed and is valid. An invalid edit
//! is logged, counted and shown at `/config`; the last good snapshot keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attache_config::{ConfigError, FieldError, Snapshot};
use notify::Watcher;
use tokio::sync::{mpsc, watch};

use super::ConfigStatus;
use crate::metrics::{ConfigMetrics, ResultLabels};

/// Quiet time after the last file event before reloading: editors write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A directory that never goes quiet still gets its reload after this long.
const MAX_DEBOUNCE: Duration = Duration::from_millis(500);
/// Also re-check this often, in case an event was missed (network filesystems, some editors).
const RECHECK: Duration = Duration::from_secs(5);

/// Reads and validates a config file, and checks that this proxy can serve everything it asks for.
pub fn load(path: &Path) -> Result<Snapshot, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        errors: vec![FieldError::new("", format!("cannot read {}: {e}", path.display()))],
    })?;
    let snapshot = attache_config::load_str(&text)?;
    supported(&snapshot)?;
    Ok(snapshot)
}

/// mTLS and authorization are valid configuration but not served by this build yet: refuse them rather than run a
/// plaintext listener where strict mTLS was asked for.
fn supported(snapshot: &Snapshot) -> Result<(), ConfigError> {
    const WHY: &str = concat!(
        "is not supported by this attache-proxy yet (mTLS and authorization are being built); ",
        "refusing rather than serving without it"
    );
    let mut errors = Vec::new();
    let source = &snapshot.source;
    for (i, l) in source.listeners.iter().enumerate() {
        if l.tls.is_some() {
            errors.push(FieldError::new(format!("listeners[{i}].tls"), format!("`tls` {WHY}")));
        }
        if l.authorization.is_some() {
            errors.push(FieldError::new(format!("listeners[{i}].authorization"), format!("`authorization` {WHY}")));
        }
    }
    for (i, b) in source.backends.iter().enumerate() {
        if b.tls.is_some() {
            errors.push(FieldError::new(format!("backends[{i}].tls"), format!("`tls` {WHY}")));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigError { errors })
    }
}

/// Follows `path` and publishes every valid change. Returns the snapshot channel; the watch lives as long as the
/// returned task.
pub fn watch(
    path: PathBuf,
    initial: Snapshot,
    status: ConfigStatus,
    metrics: ConfigMetrics,
) -> anyhow::Result<(watch::Receiver<Arc<Snapshot>>, tokio::task::JoinHandle<()>)> {
    let mut initial = initial;
    initial.version = initial.version.max(1);
    status.applied(&initial);
    metrics.version.set(initial.version as i64);
    metrics.last_reload_timestamp.set(super::unix_now() as i64);
    let (tx, rx) = watch::channel(Arc::new(initial));
    let (events_tx, mut events) = mpsc::channel::<()>(1);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            // Full means a reload is already pending; it will read the latest content.
            let _ = events_tx.try_send(());
        }
    })?;
    watcher.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        let _watcher = watcher;
        loop {
            tokio::select! {
                ev = events.recv() => if ev.is_none() { return },
                () = tokio::time::sleep(RECHECK) => {}
            }
            // Debounce: wait until the directory has been quiet for a moment, but never longer than MAX_DEBOUNCE.
            let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
            loop {
                let quiet_until = (tokio::time::Instant::now() + DEBOUNCE).min(give_up);
                match tokio::time::timeout_at(quiet_until, events.recv()).await {
                    Ok(Some(())) if tokio::time::Instant::now() < give_up => {}
                    _ => break,
                }
            }
            reload(&path, &tx, &status, &metrics);
        }
    });
    Ok((rx, task))
}

fn reload(path: &Path, tx: &watch::Sender<Arc<Snapshot>>, status: &ConfigStatus, metrics: &ConfigMetrics) {
    let current = tx.borrow().clone();
    let count = |result| metrics.reloads.get_or_create(&ResultLabels { result }).inc();
    match load(path) {
        Ok(snapshot) if snapshot.hash == current.hash => {}
        Ok(mut snapshot) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_authorization_are_refused_until_they_are_served() {
        let yaml = "\
listeners:
  - name: in
    address: 127.0.0.1:0
    direction: inbound
    app: 127.0.0.1:8080
    tls: { cert: c.pem, key: k.pem, trust_bundle: b.pem }
    authorization: { allow_unauthenticated: true }
backends:
  - name: web
    endpoints: [127.0.0.1:8080]
    tls: { identity: spiffe://example.org/web, cert: c.pem, key: k.pem, trust_bundle: b.pem }
";
        let snapshot = attache_config::load_str(yaml).expect("valid configuration");
        let err = supported(&snapshot).expect_err("refused");
        let paths: Vec<_> = err.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["listeners[0].tls", "listeners[0].authorization", "backends[0].tls"]);
    }
}
