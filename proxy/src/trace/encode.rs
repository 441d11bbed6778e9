//! Span batches as collectors take them: OTLP/HTTP JSON (`ExportTraceServiceRequest`) and Zipkin v2 JSON.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Map, Value as Json};

use super::span::{unix_nanos, SpanKind, SpanRecord, Value};

/// OTLP JSON: one resource per service name; IDs are hex, times are decimal strings of nanoseconds.
pub fn otlp(spans: &[Arc<SpanRecord>]) -> Vec<u8> {
    let mut by_service: BTreeMap<&str, Vec<Json>> = BTreeMap::new();
    for span in spans {
        by_service.entry(&span.service).or_default().push(otlp_span(span));
    }
    let resource_spans: Vec<Json> = by_service
        .into_iter()
        .map(|(service, spans)| {
            json!({
                "resource": { "attributes": [ { "key": "service.name", "value": { "stringValue": service } } ] },
                "scopeSpans": [ {
                    "scope": { "name": "attache-proxy", "version": env!("CARGO_PKG_VERSION") },
                    "spans": spans,
                } ],
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "resourceSpans": resource_spans })).unwrap_or_default()
}

fn otlp_span(span: &SpanRecord) -> Json {
    let attributes: Vec<Json> = span
        .attributes
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::Str(s) => json!({ "stringValue": s }),
                Value::Int(i) => json!({ "intValue": i.to_string() }),
            };
            json!({ "key": key, "value": value })
        })
        .collect();
    let mut out = json!({
        "traceId": span.trace_id.to_string(),
        "spanId": span.span_id.to_string(),
        "name": span.name,
        // SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3.
        "kind": match span.kind { SpanKind::Server => 2, SpanKind::Client => 3 },
        "startTimeUnixNano": unix_nanos(span.start).to_string(),
        "endTimeUnixNano": unix_nanos(span.end).to_string(),
        "attributes": attributes,
        // STATUS_CODE_ERROR = 2, STATUS_CODE_UNSET = 0.
        "status": match &span.error {
            Some(why) => json!({ "code": 2, "message": why }),
            None => json!({ "code": 0 }),
        },
    });
    if let (Some(parent), Some(obj)) = (span.parent, out.as_object_mut()) {
        obj.insert("parentSpanId".to_owned(), Json::String(parent.to_string()));
    }
    out
}

/// Zipkin v2 JSON: a list of spans; times in microseconds; attributes become string tags, a failure the `error` tag.
pub fn zipkin(spans: &[Arc<SpanRecord>]) -> Vec<u8> {
    let list: Vec<Json> = spans.iter().map(|s| zipkin_span(s)).collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

fn zipkin_span(span: &SpanRecord) -> Json {
    let mut tags = Map::new();
    for (key, value) in &span.attributes {
        let text = match value {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
        };
        tags.insert((*key).to_owned(), Json::String(text));
    }
    if let Some(why) = &span.error {
        tags.insert("error".to_owned(), Json::String(why.clone()));
    }
    let start = unix_nanos(span.start) / 1000;
    let duration = (unix_nanos(span.end) / 1000).saturating_sub(start).max(1);
    let trace_id =
        if span.short_trace_id { format!("{:016x}", span.trace_id.0 as u64) } else { span.trace_id.to_string() };
    let mut out = json!({
        "traceId": trace_id,
        "id": span.span_id.to_string(),
        "name": span.name.to_ascii_lowercase(),
        "kind": match span.kind { SpanKind::Server => "SERVER", SpanKind::Client => "CLIENT" },
        "timestamp": u64::try_from(start).unwrap_or(u64::MAX),
        "duration": u64::try_from(duration).unwrap_or(u64::MAX),
        "localEndpoint": { "serviceName": span.service.as_ref() },
        "tags": tags,
    });
    if let (Some(parent), Some(obj)) = (span.parent, out.as_object_mut()) {
        obj.insert("parentId".to_owned(), Json::String(parent.to_string()));
    }
    out
}
