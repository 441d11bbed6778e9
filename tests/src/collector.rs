//! A fake trace collector: an HTTP server taking OTLP/HTTP JSON (`/v1/traces`) and Zipkin v2 JSON
//! (`/api/v2/spans`) and keeping every span it was sent, in one shape for both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::server::{self, Server};

/// A span as received, whatever the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectedSpan {
    pub protocol: &'static str,
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent: Option<String>,
    pub name: String,
    /// `SERVER` or `CLIENT`.
    pub kind: String,
    pub attributes: HashMap<String, String>,
    pub error: bool,
}

pub struct Collector {
    server: Server,
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
}

impl Collector {
    pub async fn start() -> Self {
        let spans: Arc<Mutex<Vec<CollectedSpan>>> = Arc::default();
        let (otlp, zipkin) = (spans.clone(), spans.clone());
        let server = server::http1()
            .name("collector")
            .route("/v1/traces", move |req| receive(req, otlp.clone(), parse_otlp))
            .route("/api/v2/spans", move |req| receive(req, zipkin.clone(), parse_zipkin))
            .run()
            .await;
        Self { server, spans }
    }

    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.server.addr())
    }

    pub fn zipkin_endpoint(&self) -> String {
        format!("http://{}/api/v2/spans", self.server.addr())
    }

    pub fn spans(&self) -> Vec<CollectedSpan> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The spans of `trace_id` once there are at least `n` (waits up to 10 s).
    pub async fn trace(&self, trace_id: &str, n: usize) -> Vec<CollectedSpan> {
        let of_trace = || self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect::<Vec<_>>();
        crate::eventually(Duration::from_secs(10), || {
            let enough = of_trace().len() >= n;
            async move { enough }
        })
        .await;
        of_trace()
    }
}

async fn receive(
    req: http::Request<hyper::body::Incoming>,
    spans: Arc<Mutex<Vec<CollectedSpan>>>,
    parse: fn(&Value) -> Vec<CollectedSpan>,
) -> Response<crate::Body> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return status(400),
    };
    let Ok(json) = serde_json::from_slice::<Value>(&body) else { return status(400) };
    let parsed = parse(&json);
    if let Ok(mut s) = spans.lock() {
        s.extend(parsed);
    }
    Response::new(crate::full("{}"))
}

fn status(code: u16) -> Response<crate::Body> {
    let mut rsp = Response::new(crate::empty());
    *rsp.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_REQUEST);
    rsp
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_otlp(json: &Value) -> Vec<CollectedSpan> {
    let mut out = Vec::new();
    for rs in json["resourceSpans"].as_array().into_iter().flatten() {
        let attrs = rs["resource"]["attributes"].as_array().cloned().unwrap_or_default();
        let service = attrs.iter().find(|a| a["key"] == "service.name").map(|a| text(&a["value"]["stringValue"]));
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                let attributes = span["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let v = &a["value"];
                        let value =
                            if v["stringValue"].is_null() { text(&v["intValue"]) } else { text(&v["stringValue"]) };
                        (text(&a["key"]), value)
                    })
                    .collect();
                out.push(CollectedSpan {
                    protocol: "otlp",
                    service: service.clone().unwrap_or_default(),
                    trace_id: text(&span["traceId"]),
                    span_id: text(&span["spanId"]),
                    parent: span.get("parentSpanId").map(text).filter(|p| !p.is_empty()),
                    name: text(&span["name"]),
                    kind: match span["kind"].as_i64() {
                        Some(2) => "SERVER".to_owned(),
                        Some(3) => "CLIENT".to_owned(),
                        _ => "OTHER".to_owned(),
                    },
                    attributes,
                    error: span["status"]["code"].as_i64() == Some(2),
                });
            }
        }
    }
    out
}

fn parse_zipkin(json: &Value) -> Vec<CollectedSpan> {
    json.as_array()
        .into_iter()
        .flatten()
        .map(|span| {
            let attributes: HashMap<String, String> =
                span["tags"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), text(v))).collect();
            CollectedSpan {
                protocol: "zipkin",
                service: text(&span["localEndpoint"]["serviceName"]),
                trace_id: text(&span["traceId"]),
                span_id: text(&span["id"]),
                parent: span.get("parentId").map(text),
                name: text(&span["name"]),
                kind: text(&span["kind"]),
                error: attributes.contains_key("error"),
                attributes,
            }
        })
        .collect()
}
