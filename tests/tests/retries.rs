//! Retries: failed attempts are tried again on another endpoint when it is safe (nothing sent, or an idempotent or
//! opted-in request whose body was kept), within a per-route budget, and counted by reason.

use std::net::SocketAddr;
use std::sync::Arc;

use attache_tests::{
    client, eventually,
    faults::{self, Load, Upstream},
    proxy::{self, TestProxy},
    server,
    wait::secs,
    with_timeout, Metrics,
};
use bytes::Bytes;
use tokio::time::Instant;

/// Service `svc`, route `default` with `retry: <retry>` to backend `web` at `endpoints`, whose keys are extended
/// by `backend_extra` (e.g. `circuit_breaker: { enabled: false }`).
fn config(endpoints: &[SocketAddr], retry: &str, backend_extra: &str) -> String {
    let eps: Vec<_> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ connect_timeout: 500ms }}\nlisteners:\n  - {{ name: outbound, \
         address: \"127.0.0.1:0\", direction: outbound }}\nservices:\n  - name: svc\n    hosts: [svc]\n    routes:\n      \
         - {{ name: default, retry: {retry}, backends: [{{ name: web }}] }}\nbackends:\n  - {{ name: web, endpoints: \
         [{}] {backend_extra} }}\n",
        eps.join(", ")
    )
}

fn retries(metrics: &Metrics, reason: &str) -> f64 {
    metrics.sum("attache_retries_total", &[("service", "svc"), ("route", "default"), ("reason", reason)])
}

fn route_counter(metrics: &Metrics, name: &str) -> f64 {
    metrics.sum(name, &[("service", "svc"), ("route", "default")])
}

/// Sends `total` GETs from 4 concurrent clients (so every endpoint gets some); returns every status.
async fn concurrent_gets(proxy: &TestProxy, total: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let addr = proxy.outbound();
            tokio::spawn(async move {
                let c = client::http1(addr);
                let mut out = Vec::new();
                for _ in 0..total / 4 {
                    out.push(c.get("svc", "/").await.unwrap().status.as_u16());
                }
                out
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.extend(with_timeout(secs(30), "a client", t).await.unwrap());
    }
    out
}

async fn one_of_three_failing(bad: Upstream, reason: &str) {
    let a = faults::healthy().name("a").run().await;
    let b = faults::healthy().name("b").run().await;
    let retry = "{ attempts: 3, on: [connect-failure, gateway-error] }";
    let proxy = proxy::new().config(config(&faults::addrs(&[&a, &bad, &b]), retry, "")).run().await;
    let endpoint = bad.addr().to_string();
    let ejected = |m: &Metrics| m.value("attache_breaker_state", &[("backend", "web"), ("endpoint", &endpoint)]);

    // The balancer sends little to an endpoint that keeps failing (a failure costs it a slow estimate), so how
    // many requests it takes to see the 5 failures that eject it varies: send batches until it is ejected.
    let mut statuses = Vec::new();
    let mut metrics = proxy.metrics().await;
    while ejected(&metrics) != Some(1.0) && statuses.len() < 3000 {
        statuses.extend(concurrent_gets(&proxy, 100).await);
        metrics = proxy.metrics().await;
    }
    let total = statuses.len();
    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "{} of {total} failed: {failed:?}", failed.len());
    assert_eq!(a.requests() + b.requests(), total);
    assert_eq!(ejected(&metrics), Some(1.0), "the failing endpoint is ejected after {total} requests:\n{metrics}");
    let retried = retries(&metrics, reason);
    assert!(retried >= 5.0, "5 failures eject it, each retried: {retried}\n{metrics}");
    if reason == "status" {
        assert_eq!(retried as usize, bad.requests(), "every attempt on it was retried elsewhere");
    }
    assert_eq!(route_counter(&metrics, "attache_request_attempts_total"), total as f64 + retried, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_endpoint_of_three_answering_503_is_invisible_to_clients() {
    one_of_three_failing(faults::always(503).name("bad").run().await, "status").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_endpoint_of_three_refusing_connections_is_invisible_to_clients() {
    one_of_three_failing(faults::refusing().run().await, "connect-failure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_budget_bounds_attempts_when_everything_fails() {
    let x = faults::always(503).name("x").run().await;
    let y = faults::always(503).name("y").run().await;
    let retry = "{ attempts: 3, on: [gateway-error], backoff: { base: 1ms, max: 2ms }, budget: { ratio: 0.2, \
                 min_per_second: 10 } }";
    let no_breaker = ", circuit_breaker: { enabled: false }";
    let proxy = proxy::new().config(config(&faults::addrs(&[&x, &y]), retry, no_breaker)).run().await;

    let started = Instant::now();
    let load = Load::get(proxy.outbound(), "svc", "/", 4);
    eventually(secs(10), || async { started.elapsed() >= secs(3) }).await;
    let statuses = load.stop().await;
    let elapsed = started.elapsed().as_secs_f64();
    let n = statuses.len() as f64;
    assert!(statuses.iter().all(|s| *s == 503));
    let attempts = (x.requests() + y.requests()) as f64;
    // Retries add at most ratio x N plus the floor of 10/s, whose pool starts with one second's worth.
    let bound = 1.2 * n + 10.0 * (elapsed + 1.0);
    assert!(attempts <= bound, "{attempts} attempts for {n} requests in {elapsed:.2}s; bound {bound:.0}");
    assert!(attempts - n >= 0.2 * n * 0.9, "the ratio is usable: {} retries for {n} requests", attempts - n);
    let metrics = proxy.metrics().await;
    assert!(route_counter(&metrics, "attache_retry_budget_exhausted_total") > 0.0, "{metrics}");
    assert_eq!(route_counter(&metrics, "attache_request_attempts_total"), attempts, "{metrics}");
}

#[tokio::test]
async fn a_post_is_retried_only_when_the_route_allows_it() {
    for (opt_in, attempts, status) in [("false", 1, 503), ("true", 2, 200)] {
        let up = faults::fail_then_recover(1, 503).run().await;
        let retry = format!("{{ attempts: 3, on: [gateway-error], retry_non_idempotent: {opt_in} }}");
        let proxy = proxy::new().config(config(&[up.addr()], &retry, "")).run().await;
        let rsp = client::http1(proxy.outbound()).post("svc", "/", "order #1").await.unwrap();
        assert_eq!(rsp.status, status, "retry_non_idempotent: {opt_in}: {}", rsp.text());
        assert_eq!(up.requests(), attempts, "retry_non_idempotent: {opt_in}");
        // A GET is retried either way.
        let up = faults::fail_then_recover(1, 503).run().await;
        let proxy = proxy::new().config(config(&[up.addr()], &retry, "")).run().await;
        assert_eq!(client::http1(proxy.outbound()).get("svc", "/").await.unwrap().status, 200);
        assert_eq!(up.requests(), 2);
    }
}

#[tokio::test]
async fn bodies_are_replayed_byte_for_byte_unless_too_large() {
    let retry = "{ attempts: 3, on: [gateway-error], retry_non_idempotent: true }";
    let body = |n: usize| Bytes::from((0..n).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());

    let up = faults::fail_then_recover(1, 503).run().await;
    let proxy = proxy::new().config(config(&[up.addr()], retry, "")).run().await;
    let small = body(10 * 1024);
    let rsp = client::http1(proxy.outbound()).post("svc", "/", small.clone()).await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let bodies = up.bodies();
    assert_eq!(bodies.len(), 2);
    assert!(
        bodies.iter().all(|b| *b == small),
        "attempt bodies: {:?}",
        bodies.iter().map(Bytes::len).collect::<Vec<_>>()
    );
    let metrics = proxy.metrics().await;
    assert_eq!(retries(&metrics, "status"), 1.0, "{metrics}");

    let up = faults::fail_then_recover(1, 503).run().await;
    let proxy = proxy::new().config(config(&[up.addr()], retry, "")).run().await;
    let large = body(100 * 1024);
    let rsp = client::http1(proxy.outbound()).post("svc", "/", large.clone()).await.unwrap();
    assert_eq!(rsp.status, 503, "a 100 KiB body (over max_body_bytes 64 KiB) is streamed once");
    assert_eq!(up.bodies(), [large], "streamed through intact");
    let metrics = proxy.metrics().await;
    assert_eq!(route_counter(&metrics, "attache_retry_body_too_large_total"), 1.0, "{metrics}");
    assert_eq!(retries(&metrics, "status"), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_attempt_is_abandoned_and_retried_elsewhere() {
    let stuck = faults::hanging().name("stuck").run().await;
    let good = faults::healthy().name("good").run().await;
    let retry = "{ attempts: 2, on: [timeout], per_try_timeout: 200ms }";
    let proxy = proxy::new().config(config(&faults::addrs(&[&stuck, &good]), retry, "")).run().await;

    // Concurrent clients, so the balancer sends some attempts to the hanging endpoint.
    let load = Load::get(proxy.outbound(), "svc", "/", 4);
    eventually(secs(10), || async { stuck.requests() >= 1 && load.statuses().len() >= 50 }).await;
    let statuses = load.stop().await;
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>());
    assert_eq!(good.requests(), statuses.len(), "every request ended on the healthy endpoint");
    let metrics = proxy.metrics().await;
    assert_eq!(retries(&metrics, "timeout") as usize, stuck.requests(), "{metrics}");
    assert_eq!(route_counter(&metrics, "attache_request_attempts_total") as usize, statuses.len() + stuck.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_unavailable_in_trailers_is_retried_on_a_healthy_endpoint() {
    let down = server::http2().name("down").route_prefix("/", server::trailers(14, "going away")).run().await;
    let up = server::http2().name("up").route_prefix("/", server::trailers(0, "")).run().await;
    let retry = "{ attempts: 3, on: [gateway-error], grpc_status: [unavailable] }";
    let proxy = proxy::new().config(config(&[down.addr(), up.addr()], retry, ", protocol: http2")).run().await;
    let c = Arc::new(client::http2(proxy.outbound()));

    // Concurrent calls until one has met the failing endpoint.
    let mut calls = 0;
    while down.requests() == 0 {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move { c.grpc_unary("svc", "/pkg.Svc/Call", format!("call {i}").as_bytes()).await })
            })
            .collect();
        for t in tasks {
            let rsp = with_timeout(secs(10), "a gRPC call", t).await.unwrap().unwrap();
            assert_eq!(rsp.status, 200);
            assert_eq!(rsp.trailer("grpc-status"), Some("0"), "{:?} {:?}", rsp.headers, rsp.trailers);
            assert_eq!(rsp.header("x-server-name"), Some("up"));
            calls += 1;
        }
        assert!(calls < 400, "no call reached the failing endpoint");
    }
    assert_eq!(up.requests(), calls);
    let metrics = proxy.metrics().await;
    assert_eq!(retries(&metrics, "grpc-status") as usize, down.requests(), "{metrics}");
}

#[tokio::test]
async fn nothing_is_retried_once_response_headers_have_been_sent() {
    let broken = faults::reset_mid_response().name("broken").run().await;
    let retry = "{ attempts: 3, on: [connect-failure, reset, gateway-error] }";
    let proxy = proxy::new().config(config(&[broken.addr()], retry, ", protocol: http1")).run().await;
    let result = client::http1(proxy.outbound()).get("svc", "/").await;
    match result {
        Ok(rsp) => panic!("a body cut off upstream must not look complete: {} {:?}", rsp.status, rsp.body),
        Err(e) => assert!(format!("{e:#}").contains("body"), "{e:#}"),
    }
    assert_eq!(broken.requests(), 1, "the response had begun: no retry");
    let metrics = proxy.metrics().await;
    assert_eq!(route_counter(&metrics, "attache_retries_total"), 0.0, "{metrics}");
}

#[tokio::test]
async fn a_grpc_response_reset_mid_body_still_fails_for_the_client() {
    let broken = faults::reset_mid_response().name("broken").run().await;
    let retry = "{ attempts: 3, on: [gateway-error], grpc_status: [unavailable] }";
    let proxy = proxy::new().config(config(&[broken.addr()], retry, ", protocol: http2")).run().await;
    let result = client::http2(proxy.outbound()).grpc_unary("svc", "/pkg.Svc/Call", b"hello").await;
    if let Ok(rsp) = result {
        panic!(
            "a stream reset upstream reached the client as a complete response: {} body {:?} trailers {:?}",
            rsp.status, rsp.body, rsp.trailers
        );
    }
    assert_eq!(broken.requests(), 1, "the response had begun: no retry");
}
