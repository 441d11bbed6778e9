//! Distributed tracing: trace context continued on every hop, spans exported to collectors, IDs in logs and
//! exemplars. The `Tracer` is long-lived (it survives reloads); its settings and exporters follow the config.

pub mod context;
mod encode;
pub mod export;
pub mod hop;
pub mod request_id;
pub mod span;
mod writer;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use attache_config::model::Tracing;
use tokio::sync::watch;

use self::export::{ExportMetrics, ExporterHandle};
use self::span::SpanRecord;
use crate::dataplane::Dataplane;

pub use self::hop::Hop;

/// The settings and exporters in force, replaced as a whole on reload.
#[derive(Debug, Default)]
pub struct Active {
    pub settings: Tracing,
    exporters: Vec<ExporterHandle>,
}

#[derive(Clone, Debug)]
pub struct Tracer {
    active: Arc<RwLock<Arc<Active>>>,
    metrics: ExportMetrics,
    /// Exporter tasks, so that shutdown can let them send what they hold.
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Tracer {
    pub fn new(metrics: ExportMetrics) -> Self {
        Self { active: Arc::default(), metrics, tasks: Arc::default() }
    }

    pub fn active(&self) -> Arc<Active> {
        self.active.read().map(|a| a.clone()).unwrap_or_default()
    }

    /// Applies `settings`: exporters whose configuration is unchanged keep running with their queue; the others
    /// are started or stopped (a stopped exporter sends what it holds, then ends).
    pub fn apply(&self, settings: &Tracing) {
        let current = self.active();
        if current.settings == *settings {
            return;
        }
        let Ok(mut tasks) = self.tasks.lock() else { return };
        let exporters = settings
            .exporters
            .iter()
            .map(|config| match current.exporters.iter().find(|e| e.config == *config) {
                Some(running) => running.clone(),
                None => ExporterHandle::spawn(config.clone(), self.metrics.clone(), &mut tasks),
            })
            .collect();
        let next = Arc::new(Active { settings: settings.clone(), exporters });
        if let Ok(mut active) = self.active.write() {
            *active = next;
        }
    }

    /// Stops the exporters and waits up to `grace` for them to send the spans they hold (call once requests are
    /// drained: a request still in flight holds its exporters open).
    pub async fn shutdown(&self, grace: Duration) {
        if let Ok(mut active) = self.active.write() {
            *active = Arc::default();
        }
        let tasks = self.tasks.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
        let _ = tokio::time::timeout(grace, futures_util::future::join_all(tasks)).await;
    }

    /// Follows the dataplane: the tracing settings of each new snapshot are applied.
    pub fn follow(&self, mut plane: watch::Receiver<Arc<Dataplane>>) -> tokio::task::JoinHandle<()> {
        self.apply(&plane.borrow_and_update().snapshot.tracing);
        let this = self.clone();
        tokio::spawn(async move {
            while plane.changed().await.is_ok() {
                let tracing = plane.borrow_and_update().snapshot.tracing.clone();
                this.apply(&tracing);
            }
        })
    }
}

impl Active {
    /// Hands a finished span to every exporter.
    pub fn submit(&self, span: SpanRecord) {
        if self.exporters.is_empty() {
            return;
        }
        let span = Arc::new(span);
        for e in &self.exporters {
            e.submit(span.clone());
        }
    }

    pub fn exporting(&self) -> bool {
        !self.exporters.is_empty()
    }
}
