//! Debounced change notification for a few directories, shared by everything the proxy reads from disk (its config
//! file, TLS credentials). Directories are watched rather than files, so a Kubernetes ConfigMap or Secret's
//! symlink swap and an editor's write-and-rename are seen; a periodic recheck covers events that never come
//! (network filesystems, a directory created after the watch started).
//!
//! Only changes are reported. inotify also reports opens (notify asks for `IN_OPEN`), and a reader's own read of a
//! watched file would then report a change, read again and so on: a config re-read several times a second on an
//! idle sidecar. And a watch of files reports only entries that can change what is read: the files themselves, and
//! Kubernetes' atomic-writer entries (`..data` and its timestamped directories), not a log written beside them.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;

/// Quiet time after the last event before reporting: editors and `kubectl` write in several steps.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A directory that never goes quiet is still reported after this long.
const MAX_DEBOUNCE: Duration = Duration::from_millis(500);
/// Report this often even without events, so a missed event costs at most this long.
const RECHECK: Duration = Duration::from_secs(5);

/// Changes under some directories. Dropping it stops the watch.
pub struct FsChanges {
    /// `None` when no watcher could be made (e.g. the inotify instance limit is reached): rechecks only.
    _watcher: Option<notify::RecommendedWatcher>,
    events: mpsc::Receiver<()>,
    /// Kept so `events` never closes while polling only.
    _tx: mpsc::Sender<()>,
}

impl FsChanges {
    /// Watches the directories holding `files` (each once). Never fails: what cannot be watched is rechecked
    /// every `RECHECK`, with a warning.
    pub fn watch_files<'a>(files: impl IntoIterator<Item = &'a Path>) -> Self {
        let files: Vec<&Path> = files.into_iter().collect();
        let names = files.iter().filter_map(|f| f.file_name()).map(OsString::from).collect();
        Self::watch(files.into_iter().map(parent_dir).collect(), Some(names))
    }

    /// Watches `dirs` themselves (not recursively), every entry in them, like [`FsChanges::watch_files`].
    pub fn watch_dirs(dirs: Vec<PathBuf>) -> Self {
        Self::watch(dirs, None)
    }

    /// `names`: the entries worth a report (`None`: all).
    fn watch(mut dirs: Vec<PathBuf>, names: Option<HashSet<OsString>>) -> Self {
        let (tx, events) = mpsc::channel::<()>(1);
        let notify_tx = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|event| relevant(&event, names.as_ref())) {
                // Full means a report is already pending; whoever reads then sees the latest content.
                let _ = notify_tx.try_send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, "cannot create a file watcher; rechecking files every {RECHECK:?}");
                None
            }
        };
        dirs.sort();
        dirs.dedup();
        for dir in &dirs {
            let Some(w) = watcher.as_mut() else { break };
            if let Err(error) = w.watch(dir, notify::RecursiveMode::NonRecursive) {
                // A directory that does not exist yet is still rechecked periodically.
                tracing::warn!(dir = %dir.display(), %error, "cannot watch directory; rechecking every {RECHECK:?}");
            }
        }
        Self { _watcher: watcher, events, _tx: tx }
    }

    /// Waits until something changed and then went quiet, or `RECHECK` passed.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.events.recv() => {}
            () = tokio::time::sleep(RECHECK) => return,
        }
        let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
        loop {
            let quiet_until = (tokio::time::Instant::now() + DEBOUNCE).min(give_up);
            match tokio::time::timeout_at(quiet_until, self.events.recv()).await {
                Ok(Some(())) if tokio::time::Instant::now() < give_up => {}
                _ => return,
            }
        }
    }
}

/// Whether `event` may have changed what is read: not an access (open, read, close without writing), and for a watch
/// of files one naming a watched file, an atomic-writer entry (`..`-prefixed), or nothing in particular (a rescan).
fn relevant(event: &notify::Event, names: Option<&HashSet<OsString>>) -> bool {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    let Some(names) = names else { return true };
    event.paths.is_empty()
        || event
            .paths
            .iter()
            .any(|p| p.file_name().is_none_or(|n| names.contains(n) || n.to_string_lossy().starts_with("..")))
}

fn parent_dir(file: &Path) -> PathBuf {
    file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf()
}

#[cfg(test)]
#[path = "fswatch_tests.rs"]
mod tests;
