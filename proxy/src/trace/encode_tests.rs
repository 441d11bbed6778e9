//! The encoder writes exactly what the `serde_json::Value` encoder it replaced built: that encoder is kept here as
//! the reference, and every batch is compared as parsed JSON.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value as Json};

use super::super::context::{SpanId, TraceId};
use super::super::span::{unix_nanos, SpanKind, SpanRecord, Value};
use super::{otlp, zipkin};

fn span(service: &str, kind: SpanKind, parent: Option<u64>, error: Option<&str>) -> SpanRecord {
    let start = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_764_633_600_123_456_789);
    let mut s = SpanRecord {
        service: Arc::from(service),
        trace_id: TraceId(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
        span_id: SpanId(0x00f0_67aa_0ba9_02b7),
        parent: parent.map(SpanId),
        name: "GET Reviews \"quoted\" \u{e9}".to_owned(),
        kind,
        start,
        end: start + Duration::from_micros(1234),
        attributes: Vec::new(),
        error: error.map(str::to_owned),
        short_trace_id: false,
    };
    s.str("http.request.method", "GET");
    s.str("url.path", "/a\"b\\c\n\u{1}\u{1F600}");
    s.int("http.response.status_code", 503);
    s.int("negative", -7);
    s.str("url.path", "/later-value-wins");
    s
}

fn batch() -> Vec<Arc<SpanRecord>> {
    let mut short = span("b", SpanKind::Client, Some(1), None);
    short.short_trace_id = true;
    short.trace_id = TraceId(0xdead_beef_0000_0001);
    let mut bare = span("a", SpanKind::Server, None, None);
    bare.attributes.clear();
    vec![
        Arc::new(span("b", SpanKind::Server, None, Some("HTTP 503"))),
        Arc::new(span("a", SpanKind::Client, Some(0xabc), None)),
        Arc::new(short),
        Arc::new(bare),
        Arc::new(span("\"odd\" service", SpanKind::Server, Some(2), Some("reset: \"x\"\n"))),
    ]
}

fn parsed(bytes: &[u8]) -> Json {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn otlp_is_what_the_value_encoder_built() {
    for spans in [batch(), Vec::new(), batch()[..1].to_vec()] {
        assert_eq!(parsed(&otlp(&spans)), parsed(&otlp_reference(&spans)));
    }
}

#[test]
fn zipkin_is_what_the_value_encoder_built() {
    for spans in [batch(), Vec::new(), batch()[..1].to_vec()] {
        assert_eq!(parsed(&zipkin(&spans)), parsed(&zipkin_reference(&spans)));
    }
}

#[test]
fn a_zipkin_tag_keeps_the_last_value_of_its_key() {
    let spans = vec![Arc::new(span("a", SpanKind::Server, None, None))];
    let json = parsed(&zipkin(&spans));
    assert_eq!(json[0]["tags"]["url.path"], "/later-value-wins");
    assert_eq!(json[0]["tags"]["http.response.status_code"], "503");
}

/// OTLP JSON: one resource per service name; IDs are hex, times are decimal strings of nanoseconds.
fn otlp_reference(spans: &[Arc<SpanRecord>]) -> Vec<u8> {
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
fn zipkin_reference(spans: &[Arc<SpanRecord>]) -> Vec<u8> {
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
