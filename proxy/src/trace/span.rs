//! A finished span, as exporters see it.

use std::sync::Arc;
use std::time::SystemTime;

use super::context::{SpanId, TraceId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// A request this proxy received.
    Server,
    /// One attempt this proxy made upstream.
    Client,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
}

/// One finished span. Attribute names follow the OpenTelemetry HTTP semantic conventions where one exists.
#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub service: Arc<str>,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, Value)>,
    /// The span failed (status ERROR), with why.
    pub error: Option<String>,
    /// Trace IDs that came as 64-bit B3 are exported so, for Zipkin.
    pub short_trace_id: bool,
}

impl SpanRecord {
    pub fn str(&mut self, key: &'static str, value: impl Into<String>) {
        self.attributes.push((key, Value::Str(value.into())));
    }

    pub fn int(&mut self, key: &'static str, value: i64) {
        self.attributes.push((key, Value::Int(value)));
    }
}

/// Nanoseconds since the Unix epoch (0 for a clock before it).
pub fn unix_nanos(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}
