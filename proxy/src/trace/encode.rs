//! Span batches as collectors take them: OTLP/HTTP JSON (`ExportTraceServiceRequest`) and Zipkin v2 JSON, written
//! straight into the body buffer (no intermediate JSON tree: a `serde_json::Value` per span cost several times the
//! encoding itself). Strings are escaped by serde_json.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use super::span::{unix_nanos, SpanKind, SpanRecord, Value};

/// Roughly what one encoded span takes, to size the buffer once.
const SPAN_BYTES: usize = 768;

/// OTLP JSON: one resource per service name; IDs are hex, times are decimal strings of nanoseconds.
pub fn otlp(spans: &[Arc<SpanRecord>]) -> Vec<u8> {
    let mut by_service: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
    for span in spans {
        by_service.entry(&span.service).or_default().push(span);
    }
    let mut out = Vec::with_capacity(64 + spans.len() * SPAN_BYTES);
    out.extend_from_slice(b"{\"resourceSpans\":[");
    for (i, (service, spans)) in by_service.into_iter().enumerate() {
        comma(&mut out, i);
        out.extend_from_slice(b"{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{\"stringValue\":");
        string(&mut out, service);
        out.extend_from_slice(b"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"attache-proxy\",\"version\":\"");
        out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
        out.extend_from_slice(b"\"},\"spans\":[");
        for (j, span) in spans.into_iter().enumerate() {
            comma(&mut out, j);
            otlp_span(&mut out, span);
        }
        out.extend_from_slice(b"]}]}");
    }
    out.extend_from_slice(b"]}");
    out
}

fn otlp_span(out: &mut Vec<u8>, span: &SpanRecord) {
    let _ = write!(out, "{{\"traceId\":\"{}\",\"spanId\":\"{}\"", span.trace_id, span.span_id);
    if let Some(parent) = span.parent {
        let _ = write!(out, ",\"parentSpanId\":\"{parent}\"");
    }
    out.extend_from_slice(b",\"name\":");
    string(out, &span.name);
    // SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3.
    let kind = match span.kind {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    };
    let _ = write!(
        out,
        ",\"kind\":{kind},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"attributes\":[",
        unix_nanos(span.start),
        unix_nanos(span.end)
    );
    for (i, (key, value)) in span.attributes.iter().enumerate() {
        comma(out, i);
        out.extend_from_slice(b"{\"key\":");
        string(out, key);
        match value {
            Value::Str(s) => {
                out.extend_from_slice(b",\"value\":{\"stringValue\":");
                string(out, s);
                out.extend_from_slice(b"}}");
            }
            // OTLP JSON carries 64-bit integers as strings.
            Value::Int(n) => drop(write!(out, ",\"value\":{{\"intValue\":\"{n}\"}}}}")),
        }
    }
    // STATUS_CODE_ERROR = 2, STATUS_CODE_UNSET = 0.
    match &span.error {
        Some(why) => {
            out.extend_from_slice(b"],\"status\":{\"code\":2,\"message\":");
            string(out, why);
            out.extend_from_slice(b"}}");
        }
        None => out.extend_from_slice(b"],\"status\":{\"code\":0}}"),
    }
}

/// Zipkin v2 JSON: a list of spans; times in microseconds; attributes become string tags, a failure the `error` tag.
pub fn zipkin(spans: &[Arc<SpanRecord>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + spans.len() * SPAN_BYTES);
    out.push(b'[');
    for (i, span) in spans.iter().enumerate() {
        comma(&mut out, i);
        zipkin_span(&mut out, span);
    }
    out.push(b']');
    out
}

fn zipkin_span(out: &mut Vec<u8>, span: &SpanRecord) {
    if span.short_trace_id {
        let _ = write!(out, "{{\"traceId\":\"{:016x}\"", span.trace_id.0 as u64);
    } else {
        let _ = write!(out, "{{\"traceId\":\"{}\"", span.trace_id);
    }
    let _ = write!(out, ",\"id\":\"{}\"", span.span_id);
    if let Some(parent) = span.parent {
        let _ = write!(out, ",\"parentId\":\"{parent}\"");
    }
    out.extend_from_slice(b",\"name\":");
    string(out, &span.name.to_ascii_lowercase());
    let kind = match span.kind {
        SpanKind::Server => "SERVER",
        SpanKind::Client => "CLIENT",
    };
    let start = unix_nanos(span.start) / 1000;
    let duration = (unix_nanos(span.end) / 1000).saturating_sub(start).max(1);
    let (start, duration) = (u64::try_from(start).unwrap_or(u64::MAX), u64::try_from(duration).unwrap_or(u64::MAX));
    let _ = write!(out, ",\"kind\":\"{kind}\",\"timestamp\":{start},\"duration\":{duration}");
    out.extend_from_slice(b",\"localEndpoint\":{\"serviceName\":");
    string(out, &span.service);
    out.extend_from_slice(b"},\"tags\":{");
    // Tags are a JSON object: a later value of a key wins, as it did when they were collected into a map.
    let mut tags: BTreeMap<&str, TagValue<'_>> =
        span.attributes.iter().map(|(key, value)| (*key, TagValue::Attribute(value))).collect();
    if let Some(why) = &span.error {
        tags.insert("error", TagValue::Text(why));
    }
    for (i, (key, value)) in tags.into_iter().enumerate() {
        comma(out, i);
        string(out, key);
        out.push(b':');
        match value {
            TagValue::Attribute(Value::Str(s)) => string(out, s),
            TagValue::Text(s) => string(out, s),
            TagValue::Attribute(Value::Int(n)) => drop(write!(out, "\"{n}\"")),
        }
    }
    out.extend_from_slice(b"}}");
}

enum TagValue<'a> {
    Attribute(&'a Value),
    Text(&'a str),
}

fn comma(out: &mut Vec<u8>, index: usize) {
    if index > 0 {
        out.push(b',');
    }
}

/// A JSON string, escaped. Writing into a `Vec` cannot fail.
fn string(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
