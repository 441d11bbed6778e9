//! Config sources produce the `watch::Receiver<Arc<Snapshot>>` the proxy runs on, and record how the last reload
//! went for the admin `/config` view.

pub mod control;
pub mod enrol;
pub mod file;

use std::sync::{Arc, Mutex};

use attache_config::{ConfigError, ConfigSpec, Snapshot};
use serde::Serialize;

/// Shared, cheap-to-clone record of what is being served and how the last reload went.
#[derive(Clone, Debug, Default)]
pub struct ConfigStatus(Arc<Mutex<StatusView>>);

/// What `/config` shows besides the config itself.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusView {
    pub version: u64,
    pub hash: String,
    pub source: String,
    pub last_reload: Option<ReloadResult>,
    /// The effective configuration being served (defaults filled in).
    #[serde(skip)]
    pub config: Option<Arc<ConfigSpec>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReloadResult {
    /// `applied` or `rejected`.
    pub result: &'static str,
    /// Unix seconds.
    pub at: u64,
    /// Why it was rejected; the served version did not change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl ConfigStatus {
    pub fn new(source: impl Into<String>, serving: &Snapshot) -> Self {
        let view = StatusView {
            version: serving.version,
            hash: format!("{:016x}", serving.hash),
            source: source.into(),
            last_reload: None,
            config: Some(serving.source.clone()),
        };
        Self(Arc::new(Mutex::new(view)))
    }

    /// A status for a source that has served nothing yet.
    pub fn named(source: impl Into<String>) -> Self {
        Self(Arc::new(Mutex::new(StatusView { source: source.into(), ..StatusView::default() })))
    }

    pub fn view(&self) -> StatusView {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn applied(&self, snapshot: &Snapshot) {
        if let Ok(mut v) = self.0.lock() {
            v.version = snapshot.version;
            v.hash = format!("{:016x}", snapshot.hash);
            v.config = Some(snapshot.source.clone());
            v.last_reload = Some(ReloadResult { result: "applied", at: unix_now(), errors: Vec::new() });
        }
    }

    /// The served configuration as JSON.
    pub fn serving_config(&self) -> serde_json::Value {
        let config = self.0.lock().ok().and_then(|v| v.config.clone());
        config.and_then(|c| serde_json::to_value(&*c).ok()).unwrap_or_default()
    }

    pub fn rejected(&self, error: &ConfigError) {
        if let Ok(mut v) = self.0.lock() {
            let errors = error.errors.iter().map(ToString::to_string).collect();
            v.last_reload = Some(ReloadResult { result: "rejected", at: unix_now(), errors });
        }
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
