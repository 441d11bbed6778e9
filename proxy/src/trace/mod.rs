//! Distributed tracing: trace context continued on every hop, spans exported to collectors, IDs in logs and
//! exemplars. The `Tracer` is long-lived (it survives reloads); its settings and exporters follow the config.

pub mod context;
mod encode;
pub mod export;
pub mod hop;
pub mod request_id;
pub mod span;

use std::sync::{Arc, RwLock};

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
}

impl Tracer {
    pub fn new(metrics: ExportMetrics) -> Self {
        Self { active: Arc::default(), metrics }
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
        let exporters = settings
            .exporters
            .iter()
            .map(|config| match current.exporters.iter().find(|e| e.config == *config) {
                Some(running) => running.clone(),
                None => ExporterHandle::spawn(config.clone(), self.metrics.clone()),
            })
            .collect();
        let next = Arc::new(Active { settings: settings.clone(), exporters });
        if let Ok(mut active) = self.active.write() {
            *active = next;
        }
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
