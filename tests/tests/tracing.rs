//! Distributed tracing end to end: client -> sidecar A (outbound) -> sidecar B (inbound) -> app, with a fake
//! collector receiving both sidecars' spans.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use attache_tests::collector::{CollectedSpan, Collector};
use attache_tests::proxy::{self, TestProxy};
use attache_tests::{client, server, TestResponse};
use http::Response;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

struct Mesh {
    app: server::Server,
    a: TestProxy,
    _b: TestProxy,
}

/// `exporter` is `otlp` or `zipkin`; `tracing` lines are added to both sidecars' `tracing` block.
async fn mesh(exporter: &str, endpoint: &str, tracing: &str) -> Mesh {
    let app = server::http1().name("app").route("/hello", server::echo()).run().await;
    let export = format!("  {exporter}: {{ endpoint: \"{endpoint}\", flush_interval: 50ms }}\n{tracing}");
    let b = proxy::new()
        .config(format!(
            "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: inbound, address: \"127.0.0.1:0\", direction: inbound, app: \"{}\" }}\ntracing:\n  service_name: b\n{export}",
            app.addr()
        ))
        .run()
        .await;
    let a = proxy::new().config(outbound_config(&b.inbound().to_string(), &export)).run().await;
    Mesh { app, a, _b: b }
}

fn outbound_config(endpoint: &str, export: &str) -> String {
    format!(
        r#"admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound }}
services:
  - name: api
    hosts: [api]
    routes:
      - name: default
        backends: [{{ name: b }}]
backends:
  - {{ name: b, endpoints: ["{endpoint}"] }}
tracing:
  service_name: a
{export}"#
    )
}

async fn curl(a: &TestProxy, headers: &[(&str, &str)]) -> TestResponse {
    let mut c = client::curl().url(format!("http://{}/hello", a.outbound())).header("host", "api");
    for (k, v) in headers {
        c = c.header(k, v);
    }
    c.run().await.unwrap_or_else(|e| panic!("curl: {e:#}"))
}

fn header(app: &server::Server, name: &str) -> String {
    let headers = app.last_headers();
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn one<'a>(spans: &'a [CollectedSpan], service: &str, kind: &str) -> &'a CollectedSpan {
    let found: Vec<&CollectedSpan> = spans.iter().filter(|s| s.service == service && s.kind == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} span of {service} expected in {spans:#?}");
    found[0]
}

fn attr<'a>(span: &'a CollectedSpan, key: &str) -> &'a str {
    span.attributes.get(key).map_or("", String::as_str)
}

/// The hop spans of A (server, then its attempt) and B (server), linked parent to child, for `trace`.
fn check_chain(spans: &[CollectedSpan], caller: Option<&str>) -> (String, String, String) {
    let a_hop = one(spans, "a", "SERVER");
    let a_try = one(spans, "a", "CLIENT");
    let b_hop = one(spans, "b", "SERVER");
    assert_eq!(a_hop.parent.as_deref(), caller, "A's hop continues the caller's span");
    assert_eq!(a_try.parent.as_deref(), Some(a_hop.span_id.as_str()), "the attempt is a child of A's hop");
    assert_eq!(b_hop.parent.as_deref(), Some(a_try.span_id.as_str()), "B's hop is a child of A's attempt");
    for s in [a_hop, a_try, b_hop] {
        assert_eq!(attr(s, "http.response.status_code"), "200", "{s:#?}");
        assert_eq!(attr(s, "http.request.method"), "GET");
        assert!(!s.error);
    }
    assert_eq!(attr(a_hop, "http.route"), "default");
    assert_eq!(attr(a_hop, "peer.service"), "api");
    assert_eq!(attr(a_try, "attache.attempt"), "1");
    assert_eq!(attr(b_hop, "attache.direction"), "inbound");
    (a_hop.span_id.clone(), a_try.span_id.clone(), b_hop.span_id.clone())
}

#[tokio::test]
async fn one_trace_crosses_both_sidecars_with_linked_spans_and_exemplars() {
    let collector = Collector::start().await;
    let m = mesh("otlp", &collector.otlp_endpoint(), "").await;
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let rsp = curl(&m.a, &[("traceparent", &traceparent), ("tracestate", "vendor=opaque")]).await;
    assert_eq!(rsp.status, 200);

    let spans = collector.trace(TRACE, 3).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let (_, _, b_hop) = check_chain(&spans, Some(CALLER_SPAN));
    // The app sees the trace, with B's hop as its parent, and the caller's tracestate.
    assert_eq!(header(&m.app, "traceparent"), format!("00-{TRACE}-{b_hop}-01"));
    assert_eq!(header(&m.app, "tracestate"), "vendor=opaque");
    // A request ID was made up by A and kept by B.
    let request_id = header(&m.app, "x-request-id");
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
    assert!(spans.iter().filter(|s| s.kind == "SERVER").all(|s| attr(s, "attache.request_id") == request_id));

    // A's latency histogram links to the trace.
    let metrics = client::http1(m.a.admin()).get("admin", "/metrics").await.unwrap_or_else(|e| panic!("{e:#}"));
    let text = metrics.text();
    let exemplar = text.lines().find(|l| {
        l.starts_with("attache_request_duration_seconds_bucket") && l.contains(&format!("trace_id=\"{TRACE}\""))
    });
    assert!(exemplar.is_some(), "no exemplar for the trace in:\n{text}");
}

#[tokio::test]
async fn b3_in_is_b3_out_and_zipkin_gets_the_spans() {
    let collector = Collector::start().await;
    let m = mesh("zipkin", &collector.zipkin_endpoint(), "").await;
    let rsp = curl(&m.a, &[("x-b3-traceid", TRACE), ("x-b3-spanid", CALLER_SPAN), ("x-b3-sampled", "1")]).await;
    assert_eq!(rsp.status, 200);

    let spans = collector.trace(TRACE, 3).await;
    assert!(spans.iter().all(|s| s.protocol == "zipkin"));
    let (_, a_try, b_hop) = check_chain(&spans, Some(CALLER_SPAN));
    assert_eq!(header(&m.app, "x-b3-traceid"), TRACE);
    assert_eq!(header(&m.app, "x-b3-spanid"), b_hop);
    assert_eq!(header(&m.app, "x-b3-parentspanid"), a_try);
    assert_eq!(header(&m.app, "x-b3-sampled"), "1");
    assert_eq!(header(&m.app, "traceparent"), "", "propagated only in the form it came in");
}

#[tokio::test]
async fn the_b3_single_header_comes_out_as_it_went_in() {
    let collector = Collector::start().await;
    let m = mesh("otlp", &collector.otlp_endpoint(), "").await;
    let rsp = curl(&m.a, &[("b3", &format!("{TRACE}-{CALLER_SPAN}-1"))]).await;
    assert_eq!(rsp.status, 200);
    let spans = collector.trace(TRACE, 3).await;
    let (_, a_try, b_hop) = check_chain(&spans, Some(CALLER_SPAN));
    assert_eq!(header(&m.app, "b3"), format!("{TRACE}-{b_hop}-1-{a_try}"));
}

#[tokio::test]
async fn an_invalid_traceparent_is_replaced_by_a_new_trace() {
    let collector = Collector::start().await;
    let m = mesh("otlp", &collector.otlp_endpoint(), "").await;
    let invalid = format!("00-{}-{CALLER_SPAN}-01", TRACE.to_uppercase());
    let rsp = curl(&m.a, &[("traceparent", &invalid), ("tracestate", "vendor=x")]).await;
    assert_eq!(rsp.status, 200);

    let seen = header(&m.app, "traceparent");
    assert_ne!(seen, invalid);
    let fields: Vec<&str> = seen.split('-').collect();
    assert_eq!(fields.len(), 4, "{seen}");
    let trace = fields[1];
    assert!(trace.len() == 32 && trace != TRACE.to_lowercase() && trace.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(header(&m.app, "tracestate"), "", "a tracestate without a valid traceparent is not forwarded");
    let spans = collector.trace(trace, 3).await;
    check_chain(&spans, None);
}

#[tokio::test]
async fn sampling_applies_to_new_traces_and_a_caller_decision_is_kept() {
    let collector = Collector::start().await;
    let m = mesh("otlp", &collector.otlp_endpoint(), "  sampling: 0.0\n").await;
    assert_eq!(curl(&m.a, &[]).await.status, 200);
    let unsampled = header(&m.app, "traceparent");
    assert!(unsampled.ends_with("-00"), "a new trace is not sampled at ratio 0: {unsampled}");

    let rsp = curl(&m.a, &[("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01"))]).await;
    assert_eq!(rsp.status, 200);
    assert!(header(&m.app, "traceparent").ends_with("-01"));
    collector.trace(TRACE, 3).await;
    let unsampled_trace = unsampled.split('-').nth(1).unwrap_or_default();
    assert!(collector.spans().iter().all(|s| s.trace_id != unsampled_trace), "unsampled spans are not exported");
}

#[tokio::test]
async fn with_the_collector_down_requests_are_unaffected_and_drops_counted() {
    let dead = proxy::free_port().unwrap_or_else(|e| panic!("{e:#}"));
    let m = mesh("otlp", &format!("http://{dead}/v1/traces"), "").await;
    let c = client::http1(m.a.outbound());
    for _ in 0..20 {
        let rsp = c.get("api", "/hello").await.unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(rsp.status, 200);
    }
    let dropped = attache_tests::eventually(std::time::Duration::from_secs(10), || async {
        let metrics = m.a.metrics().await;
        let n = metrics.sum("attache_trace_spans_dropped_total", &[("exporter", "otlp"), ("reason", "export_failed")]);
        (n >= 1.0).then_some(n)
    })
    .await;
    assert!(dropped >= 1.0);
    assert_eq!(m.a.metrics().await.sum("attache_trace_spans_exported_total", &[]), 0.0);
}

#[tokio::test]
async fn retries_are_sibling_attempt_spans_of_one_request() {
    let collector = Collector::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let flaky = server::http1()
        .name("flaky")
        .route("/hello", move |_req| {
            let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                let mut rsp = Response::new(attache_tests::empty());
                if first {
                    *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                }
                rsp
            }
        })
        .run()
        .await;
    let retry = "        retry: { attempts: 3, on: [gateway-error], backoff: { base: 1ms, max: 2ms } }\n";
    let export = format!("  otlp: {{ endpoint: \"{}\", flush_interval: 50ms }}\n", collector.otlp_endpoint());
    let config = outbound_config(&flaky.addr().to_string(), &export)
        .replace("        backends: [{ name: b }]\n", &format!("        backends: [{{ name: b }}]\n{retry}"));
    let a = proxy::new().config(config).run().await;
    let rsp = curl(&a, &[("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01"))]).await;
    assert_eq!(rsp.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let spans = collector.trace(TRACE, 3).await;
    let hop = one(&spans, "a", "SERVER");
    let mut attempts: Vec<&CollectedSpan> = spans.iter().filter(|s| s.kind == "CLIENT").collect();
    attempts.sort_by_key(|s| attr(s, "attache.attempt").to_owned());
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert!(attempts.iter().all(|s| s.parent.as_deref() == Some(hop.span_id.as_str())));
    assert_eq!((attr(attempts[0], "http.response.status_code"), attempts[0].error), ("503", true));
    assert_eq!((attr(attempts[1], "http.response.status_code"), attempts[1].error), ("200", false));
    assert_eq!(attr(attempts[1], "http.request.resend_count"), "1");
    assert_eq!(attr(hop, "http.request.resend_count"), "1");
    assert_eq!(attr(hop, "http.response.status_code"), "200");
}

/// The real binary with JSON logs: the access line and the error log of a failed request carry its trace.
#[tokio::test]
async fn access_and_error_logs_carry_the_trace_and_span_ids() {
    use tokio::io::AsyncReadExt as _;

    let (admin, outbound) = (
        proxy::free_port().unwrap_or_else(|e| panic!("{e:#}")),
        proxy::free_port().unwrap_or_else(|e| panic!("{e:#}")),
    );
    let dead = proxy::free_port().unwrap_or_else(|e| panic!("{e:#}"));
    let dir = attache_tests::TempDir::new("tracing-logs");
    let file = dir.path().join("proxy.yaml");
    let yaml = format!(
        "admin: {{ address: \"{admin}\" }}\nlisteners:\n  - {{ name: outbound, address: \"{outbound}\", direction: outbound }}\nservices:\n  - name: api\n    hosts: [api]\n    routes:\n      - name: default\n        backends: [{{ name: gone }}]\nbackends:\n  - {{ name: gone, endpoints: [\"{dead}\"] }}\n"
    );
    std::fs::write(&file, yaml).unwrap_or_else(|e| panic!("{e}"));
    let mut child = tokio::process::Command::new(proxy::binary().unwrap_or_else(|e| panic!("{e:#}")))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    attache_tests::eventually(std::time::Duration::from_secs(20), || async {
        client::http1(admin).get("admin", "/ready").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    let rsp = client::curl()
        .url(format!("http://{outbound}/hello"))
        .header("host", "api")
        .header("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .run()
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(rsp.status, 503, "the backend is down");
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().unwrap_or_default().to_string()]).status();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let read = tokio::time::timeout(std::time::Duration::from_secs(10), pipe.read_to_string(&mut stderr)).await;
        assert!(read.is_ok(), "the proxy did not exit");
    }
    let lines: Vec<serde_json::Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let access =
        lines.iter().find(|l| l["target"] == "attache::access").unwrap_or_else(|| panic!("no access line:\n{stderr}"));
    assert_eq!(access["trace_id"], TRACE);
    assert_eq!(access["status"], 503);
    let span_id = access["span_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(span_id.len(), 16);
    assert_ne!(span_id, CALLER_SPAN, "the hop has its own span");
    assert_eq!(access["request_id"].as_str().map(str::len), Some(36));
    let error = lines
        .iter()
        .find(|l| l["level"] == "WARN" && l["message"] == "request failed")
        .unwrap_or_else(|| panic!("no error log:\n{stderr}"));
    assert_eq!(error["span"]["trace_id"], TRACE, "{error}");
    assert_eq!(error["span"]["span_id"], span_id.as_str(), "{error}");
}

#[tokio::test]
async fn spans_still_queued_are_sent_on_shutdown() {
    let collector = Collector::start().await;
    let app = server::http1().name("app").route("/hello", server::echo()).run().await;
    // A flush interval no test waits for: only shutdown sends the batch.
    let export = format!("  otlp: {{ endpoint: \"{}\", flush_interval: 10m }}\n", collector.otlp_endpoint());
    let a = proxy::new().config(outbound_config(&app.addr().to_string(), &export)).run().await;
    let rsp = curl(&a, &[("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01"))]).await;
    assert_eq!(rsp.status, 200);
    assert!(collector.spans().is_empty(), "nothing is sent before the batch is due");
    assert!(a.shutdown(std::time::Duration::from_secs(5)).await);
    let spans = collector.trace(TRACE, 2).await;
    assert_eq!(spans.len(), 2, "the hop and its attempt: {spans:#?}");
}
