//! Tracing: how trace context is propagated and where spans are exported.

use std::sync::Arc;
use std::time::Duration;

/// Trace-context handling and span export for one sidecar.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracing {
    pub service_name: Arc<str>,
    /// The fraction of new traces that are sampled (0.0 to 1.0).
    pub sampling: f64,
    /// The header forms written for a new trace.
    pub propagation: Propagation,
    pub max_request_id_length: usize,
    pub exporters: Vec<Exporter>,
}

/// Which header forms to write (at least one is set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Propagation {
    pub w3c: bool,
    pub b3: bool,
    pub b3multi: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExporterKind {
    Otlp,
    Zipkin,
}

/// One span exporter: an HTTP endpoint, and how spans are batched for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Exporter {
    pub kind: ExporterKind,
    /// `host:port`.
    pub authority: String,
    /// The request path, starting with `/`.
    pub path: String,
    pub max_batch: usize,
    pub queue: usize,
    pub flush_interval: Duration,
    pub timeout: Duration,
}

impl Eq for Tracing {}

impl Default for Tracing {
    fn default() -> Self {
        Self {
            service_name: Arc::from("attache-proxy"),
            sampling: 1.0,
            propagation: Propagation { w3c: true, b3: false, b3multi: false },
            max_request_id_length: 128,
            exporters: Vec::new(),
        }
    }
}

impl ExporterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Otlp => "otlp",
            Self::Zipkin => "zipkin",
        }
    }

    /// The collector's usual path for this protocol.
    pub fn default_path(self) -> &'static str {
        match self {
            Self::Otlp => "/v1/traces",
            Self::Zipkin => "/api/v2/spans",
        }
    }
}
