//! The `tracing` block: trace-context propagation (always on), sampling of new traces, span export.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Distributed tracing. Trace context (W3C `traceparent`/`tracestate`, B3, `x-request-id`) is always continued and
/// propagated; spans are exported only when an exporter is configured.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSpec {
    /// The `service.name` of this sidecar's spans. Default: `attache-proxy`; under the control plane, the sidecar's
    /// service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// The fraction of new traces that are sampled, from 0.0 to 1.0 (default 1.0). A request that arrives with a
    /// sampling decision keeps it.
    pub sampling: f64,
    /// The header forms written for new traces: `w3c`, `b3` (single header), `b3multi` (default `[w3c]`). A request
    /// that arrives with trace headers is propagated in the forms it came in.
    pub propagation: Vec<PropagationSpec>,
    /// The longest `x-request-id` passed through (default 128); a longer one, or one with other than visible ASCII,
    /// is replaced by a generated ID.
    pub max_request_id_length: u32,
    /// Export spans to an OpenTelemetry collector over OTLP/HTTP (JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<ExporterSpec>,
    /// Export spans to a Zipkin v2 JSON endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ExporterSpec>,
}

/// A trace-context header form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PropagationSpec {
    /// W3C Trace Context: `traceparent` and `tracestate`.
    W3c,
    /// B3 single header: `b3: {trace}-{span}-{sampled}`.
    B3,
    /// B3 multiple headers: `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`, ...
    B3multi,
}

/// Where and how spans are sent. Spans are batched; the queue is bounded, and spans that do not fit, or whose
/// batch fails to send, are dropped and counted (`attache_trace_spans_dropped_total`). Export never slows requests.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExporterSpec {
    /// `http://host:port/path`. Without a path: `/v1/traces` (OTLP) or `/api/v2/spans` (Zipkin).
    pub endpoint: String,
    /// Most spans per request to the collector (default 512).
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    /// Spans waiting to be sent; beyond it new spans are dropped (default 2048).
    #[serde(default = "default_queue")]
    pub queue: u32,
    /// A batch is sent when full or after this long (default `1s`).
    #[serde(default = "default_flush_interval")]
    pub flush_interval: String,
    /// One export request may take this long, connecting included (default `5s`).
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

impl Default for TracingSpec {
    fn default() -> Self {
        Self {
            service_name: None,
            sampling: 1.0,
            propagation: vec![PropagationSpec::W3c],
            max_request_id_length: 128,
            otlp: None,
            zipkin: None,
        }
    }
}

impl Eq for TracingSpec {}

fn default_max_batch() -> u32 {
    512
}

fn default_queue() -> u32 {
    2048
}

fn default_flush_interval() -> String {
    "1s".to_owned()
}

fn default_timeout() -> String {
    "5s".to_owned()
}
