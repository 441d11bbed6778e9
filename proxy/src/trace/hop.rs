//! One proxy hop of a trace: the span this sidecar adds for a request it received, and (outbound, when spans are
//! exported) one child span per upstream attempt, so retries show as siblings under one logical request. Without
//! export, no attempt span is made: the upstream is told the hop's span.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use attache_config::model::Propagation;
use http::header::{HeaderMap, HeaderValue};

use super::context::{self, Outgoing, SpanId, TraceId};
use super::span::{SpanKind, SpanRecord};
use super::{Active, Tracer};
use crate::metrics::Dir;

/// The trace facts of one request, from its first moment in the proxy.
#[derive(Debug)]
pub struct Hop {
    active: Arc<Active>,
    /// This hop's span, as written upstream (outbound, each attempt writes its own span ID instead).
    pub out: Outgoing,
    /// The caller's span, when the request came with a valid context.
    pub parent: Option<SpanId>,
    pub request_id: HeaderValue,
    pub direction: Dir,
    pub start: SystemTime,
    attempts: AtomicU32,
}

/// One upstream attempt's span, finished by `Attempt::finish`.
#[derive(Debug)]
pub struct Attempt {
    hop: Arc<Hop>,
    span_id: SpanId,
    pub number: u32,
    start: SystemTime,
}

impl Hop {
    /// Continues the request's trace (or starts one), rewrites its trace headers to name this hop's span, and
    /// makes sure it carries an `x-request-id`.
    pub fn start(tracer: &Tracer, direction: Dir, headers: &mut HeaderMap) -> Self {
        let active = tracer.active();
        let settings = &active.settings;
        let incoming = context::extract(headers);
        let sampled = incoming.debug || incoming.sampled.unwrap_or_else(|| sample(settings.sampling));
        let (trace_id, parent) = match incoming.parent {
            Some(p) => (p.trace_id, Some(p.span_id)),
            None => (TraceId::random(), None),
        };
        let forms = if incoming.forms == Propagation::default() { settings.propagation } else { incoming.forms };
        let out = Outgoing {
            trace_id,
            span_id: SpanId::random(),
            parent_span_id: parent,
            sampled,
            debug: incoming.debug,
            forms,
            tracestate: incoming.tracestate,
            short_trace_id: incoming.short_trace_id && parent.is_some(),
        };
        context::inject(headers, &out, true);
        let request_id = super::request_id::ensure(headers, settings.max_request_id_length);
        Self { active, out, parent, request_id, direction, start: SystemTime::now(), attempts: AtomicU32::new(0) }
    }

    pub fn trace_id(&self) -> TraceId {
        self.out.trace_id
    }

    pub fn span_id(&self) -> SpanId {
        self.out.span_id
    }

    /// Whether this trace is sampled and a collector wants its spans.
    pub fn recording(&self) -> bool {
        self.out.sampled && self.active.exporting()
    }

    /// A span of this hop to fill in, when it will be exported.
    pub fn span(&self, name: String) -> Option<SpanRecord> {
        self.recording().then(|| self.record(self.out.span_id, self.parent, name, SpanKind::Server, self.start))
    }

    pub fn submit(&self, span: SpanRecord) {
        self.active.submit(span);
    }

    /// Starts an upstream attempt's child span and writes its context into the attempt's headers.
    pub fn attempt(self: &Arc<Self>, headers: &mut HeaderMap) -> Attempt {
        let number = self.attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let span_id = SpanId::random();
        let out = Outgoing { span_id, parent_span_id: Some(self.out.span_id), ..self.out.clone() };
        // Same forms as the hop wrote: each header is overwritten in place.
        context::inject(headers, &out, false);
        Attempt { hop: self.clone(), span_id, number, start: SystemTime::now() }
    }

    fn record(
        &self,
        span_id: SpanId,
        parent: Option<SpanId>,
        name: String,
        kind: SpanKind,
        start: SystemTime,
    ) -> SpanRecord {
        SpanRecord {
            service: self.active.settings.service_name.clone(),
            trace_id: self.out.trace_id,
            span_id,
            parent,
            name,
            kind,
            start,
            end: SystemTime::now(),
            attributes: Vec::new(),
            error: None,
            short_trace_id: self.out.short_trace_id,
        }
    }
}

impl Attempt {
    /// The attempt's span to fill in, when it will be exported.
    pub fn span(&self, name: String) -> Option<SpanRecord> {
        let hop = &self.hop;
        hop.recording().then(|| hop.record(self.span_id, Some(hop.out.span_id), name, SpanKind::Client, self.start))
    }

    pub fn submit(&self, span: SpanRecord) {
        self.hop.submit(span);
    }
}

fn sample(ratio: f64) -> bool {
    ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
}
