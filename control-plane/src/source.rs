//! The mesh source: the config directory, read whole, validated with attache-config, and published as a new
//! version only when it is valid and its content changed. An invalid directory is never published: the last good
//! mesh keeps being served and the errors are kept for `attache status`. Canary weights set through the API are
//! applied on top, validated the same way, and persisted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use attache_config::mesh::{load_mesh, Mesh, MeshError, MeshSpec};
use attache_config::wire::{CanaryView, MeshStatus};
use tokio::sync::watch;

use crate::metrics::CpMetrics;
use crate::state::{State, StateFile, Weights};

/// Files larger than this are refused (a bound on what one file can make the control plane hold).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// At most this many files are read from the directory.
pub const MAX_FILES: usize = 1024;
/// The last good mesh, so a restart with a broken directory still serves.
const LAST_GOOD: &str = "last-good.yaml";

/// A version of the mesh, as published.
#[derive(Debug)]
pub struct Published {
    pub version: u64,
    pub mesh: Arc<Mesh>,
    /// When it was published, for the publish-to-ACK histogram.
    pub at: tokio::time::Instant,
}

/// What the control plane serves. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    state_dir: PathBuf,
    state: StateFile,
    published: watch::Sender<Arc<Published>>,
    /// Serialises reloads and weight changes; holds the persisted state.
    current: Mutex<State>,
    /// Why the directory as it is now is not served.
    errors: Mutex<Vec<String>>,
    metrics: CpMetrics,
}

impl Store {
    /// Reads `dir` and publishes it. When it is invalid, the last good mesh saved in `state_dir` is served (or
    /// nothing, on a first start) and the errors are reported.
    pub fn open(dir: &Path, state_dir: &Path, metrics: CpMetrics) -> anyhow::Result<Self> {
        let state = StateFile::new(state_dir)?;
        let saved = state.load()?;
        let last_good = std::fs::read_to_string(state_dir.join(LAST_GOOD)).ok();
        let mesh = last_good
            .and_then(|text| load_mesh(&[(LAST_GOOD.to_owned(), text)], &Weights::new()).ok())
            .unwrap_or_else(empty_mesh);
        let published = Published { version: saved.version, mesh: Arc::new(mesh), at: tokio::time::Instant::now() };
        metrics.version.set(saved.version as i64);
        let store = Self {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                state_dir: state_dir.to_owned(),
                state,
                published: watch::channel(Arc::new(published)).0,
                current: Mutex::new(saved),
                errors: Mutex::default(),
                metrics,
            }),
        };
        // An invalid directory at start is reported (status, metrics); the last good mesh, if saved, is served.
        let _ = store.reload();
        Ok(store)
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.inner.published.subscribe()
    }

    pub fn current(&self) -> Arc<Published> {
        self.inner.published.borrow().clone()
    }

    /// Re-reads the directory; publishes a new version when it is valid and changed. Returns the errors, if any.
    pub fn reload(&self) -> Result<(), MeshError> {
        let mut state = self.inner.current.lock().unwrap_or_else(PoisonError::into_inner);
        let weights = state.weights.clone();
        let result = read_dir(&self.inner.dir).and_then(|files| load_mesh(&files, &weights));
        self.settle(&mut state, result, None)
    }

    /// Sets `service`'s canary weights (backend -> weight), validated with the rest of the mesh, persisted and
    /// published. Invalid weights change nothing.
    pub fn set_weights(&self, service: &str, split: std::collections::BTreeMap<String, i64>) -> Result<(), MeshError> {
        let mut state = self.inner.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut weights = state.weights.clone();
        weights.insert(service.to_owned(), split);
        let files = read_dir(&self.inner.dir)?;
        let mesh = load_mesh(&files, &weights)?;
        self.settle(&mut state, Ok(mesh), Some(weights))
    }

    /// The weights of `service`'s routes as served, and the override in force.
    pub fn canary(&self, service: &str) -> Option<CanaryView> {
        let routes = self.current().mesh.weights(service)?;
        let state = self.inner.current.lock().unwrap_or_else(PoisonError::into_inner);
        Some(CanaryView { service: service.to_owned(), routes, overridden: state.weights.get(service).cloned() })
    }

    pub fn status(&self) -> MeshStatus {
        let current = self.current();
        MeshStatus {
            version: current.version,
            hash: current.mesh.hash,
            source: self.inner.dir.display().to_string(),
            errors: self.inner.errors.lock().unwrap_or_else(PoisonError::into_inner).clone(),
        }
    }

    /// Follows the directory until the returned task is aborted.
    pub fn watch(&self) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        let mut changes = attache_proxy::fswatch::FsChanges::watch_dirs(vec![self.inner.dir.clone()]);
        tokio::spawn(async move {
            loop {
                changes.next().await;
                let _ = store.reload();
            }
        })
    }

    /// Publishes `result` when it is a changed valid mesh (persisting the state), or records its errors.
    fn settle(
        &self,
        state: &mut State,
        result: Result<Mesh, MeshError>,
        weights: Option<Weights>,
    ) -> Result<(), MeshError> {
        let inner = &self.inner;
        let mesh = match result {
            Ok(mesh) => mesh,
            Err(error) => {
                let shown: Vec<String> = error.errors.iter().map(ToString::to_string).collect();
                let mut errors = inner.errors.lock().unwrap_or_else(PoisonError::into_inner);
                if *errors != shown {
                    tracing::error!(dir = %inner.dir.display(), serving = state.version, "mesh not published: {error}");
                    inner.metrics.reloads.get_or_create(&crate::metrics::ResultLabels { result: "rejected" }).inc();
                    *errors = shown;
                }
                inner.metrics.valid.set(0);
                return Err(error);
            }
        };
        inner.errors.lock().unwrap_or_else(PoisonError::into_inner).clear();
        inner.metrics.valid.set(1);
        if let Some(w) = weights {
            state.weights = w;
        }
        let unchanged = mesh.hash == state.hash && state.version > 0;
        if unchanged && inner.published.borrow().mesh.hash == mesh.hash {
            self.save(state, &mesh);
            return Ok(());
        }
        state.version += 1;
        state.hash = mesh.hash;
        self.save(state, &mesh);
        tracing::info!(
            version = state.version,
            hash = format!("{:016x}", mesh.hash),
            sidecars = mesh.sidecars.len(),
            "mesh published"
        );
        inner.metrics.reloads.get_or_create(&crate::metrics::ResultLabels { result: "published" }).inc();
        inner.metrics.version.set(state.version as i64);
        let published = Published { version: state.version, mesh: Arc::new(mesh), at: tokio::time::Instant::now() };
        inner.published.send_replace(Arc::new(published));
        Ok(())
    }

    fn save(&self, state: &State, mesh: &Mesh) {
        if let Err(error) = self.inner.state.save(state) {
            tracing::error!("{error:#}");
        }
        let text = serde_yaml::to_string(&*mesh.spec).unwrap_or_default();
        let path = self.inner.state_dir.join(LAST_GOOD);
        if let Err(error) = attache_proxy::persist::write_atomically(&path, text.as_bytes(), false) {
            tracing::error!(path = %path.display(), %error, "cannot save the last good mesh");
        }
    }
}

/// The `*.yaml` / `*.yml` files of `dir` (not hidden, not in subdirectories), by name.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, MeshError> {
    let whole = |message: String| MeshError {
        errors: vec![attache_config::mesh::MeshFieldError {
            file: String::new(),
            error: attache_config::FieldError::new("", message),
        }],
    };
    let entries = std::fs::read_dir(dir).map_err(|e| whole(format!("cannot read {}: {e}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or(".");
            !name.starts_with('.') && (name.ends_with(".yaml") || name.ends_with(".yml")) && p.is_file()
        })
        .collect();
    paths.sort();
    if paths.len() > MAX_FILES {
        return Err(whole(format!("{} holds {} files; at most {MAX_FILES} are read", dir.display(), paths.len())));
    }
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_FILE_BYTES {
            return Err(whole(format!("{name} is {size} bytes; at most {MAX_FILE_BYTES} are read")));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| whole(format!("cannot read {name}: {e}")))?;
        files.push((name, text));
    }
    Ok(files)
}

fn empty_mesh() -> Mesh {
    Mesh { spec: Arc::new(MeshSpec::default()), sidecars: Default::default(), hash: 0 }
}
