//! Fault injection: a route's `fault` delays or aborts some requests (all, a share, or those asking for it with a
//! header), marks them with `x-attache-fault`, and counts them.

use std::net::SocketAddr;

use attache_tests::{
    client, faults, proxy,
    wait::{millis, secs},
    Metrics,
};
use http::Method;
use tokio::time::Instant;

/// Service `svc` with route `default` to `upstream`, with `fault: <fault>` and any `extra` route keys.
fn config(upstream: SocketAddr, fault: &str, extra: &str) -> String {
    attache_tests::yaml::one_backend("svc", &[upstream]).route(&format!("fault: {fault}\n{extra}")).build()
}

fn injected(metrics: &Metrics, kind: &str) -> f64 {
    let labels = [("service", "svc"), ("route", "default"), ("kind", kind)];
    metrics.value("attache_faults_injected_total", &labels).unwrap_or(0.0)
}

#[tokio::test]
async fn abort_answers_every_request_without_reaching_the_upstream() {
    let upstream = faults::healthy().run().await;
    let proxy =
        proxy::new().config(config(upstream.addr(), "{ abort: { percent: 100, status: 503 } }", "")).run().await;
    let c = client::http1(proxy.outbound());
    for _ in 0..20 {
        let rsp = c.get("svc", "/").await.unwrap();
        assert_eq!(rsp.status, 503, "{}", rsp.text());
        assert_eq!(rsp.header("x-attache-fault"), Some("abort"));
    }
    assert_eq!(upstream.requests(), 0);
    assert_eq!(upstream.connections(), 0);
    let metrics = proxy.metrics().await;
    assert_eq!(injected(&metrics, "abort"), 20.0, "{metrics}");
    assert_eq!(injected(&metrics, "delay"), 0.0, "{metrics}");
    let five_xx = metrics.sum("attache_requests_total", &[("service", "svc"), ("status_class", "5xx")]);
    assert_eq!(five_xx, 20.0, "aborted requests count as answered 5xx:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_holds_every_request_then_forwards_it() {
    let upstream = faults::healthy().name("up").run().await;
    let fault = "{ delay: { percent: 100, duration: 200ms } }";
    let proxy = proxy::new().config(config(upstream.addr(), fault, "")).run().await;
    let c = client::http1(proxy.outbound());
    for _ in 0..5 {
        let started = Instant::now();
        let rsp = c.get("svc", "/").await.unwrap();
        let took = started.elapsed();
        assert_eq!(rsp.status, 200, "{}", rsp.text());
        assert_eq!(rsp.text(), "up");
        assert_eq!(rsp.header("x-attache-fault"), Some("delay"));
        assert!(took >= millis(200), "answered after {took:?}");
        assert!(took < millis(1000), "answered after {took:?}");
    }
    assert_eq!(upstream.requests(), 5);
    assert_eq!(injected(&proxy.metrics().await, "delay"), 5.0);
}

#[tokio::test]
async fn the_delay_does_not_eat_into_the_route_timeout() {
    let upstream = faults::slow(millis(200)).run().await;
    let fault = "{ delay: { percent: 100, duration: 200ms } }";
    let proxy = proxy::new().config(config(upstream.addr(), fault, "timeout: 300ms")).run().await;
    let started = Instant::now();
    let rsp = client::http1(proxy.outbound()).get("svc", "/").await.unwrap();
    assert_eq!(rsp.status, 200, "{:?} {}", rsp.header("x-attache-error"), rsp.text());
    assert!(started.elapsed() >= millis(400), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_of_the_requests_are_aborted() {
    let upstream = faults::healthy().run().await;
    let proxy = proxy::new().config(config(upstream.addr(), "{ abort: { percent: 50, status: 500 } }", "")).run().await;
    let c = client::http1(proxy.outbound());
    let mut aborted = 0;
    for _ in 0..400 {
        let rsp = c.get("svc", "/").await.unwrap();
        match rsp.status.as_u16() {
            500 => {
                assert_eq!(rsp.header("x-attache-fault"), Some("abort"));
                aborted += 1;
            }
            200 => assert_eq!(rsp.header("x-attache-fault"), None),
            other => panic!("unexpected {other}: {}", rsp.text()),
        }
    }
    // Binomial(400, 0.5): 40%..60% is more than 4 standard deviations either side.
    assert!((160..=240).contains(&aborted), "{aborted} of 400 aborted");
    assert_eq!(upstream.requests(), 400 - aborted);
    assert_eq!(injected(&proxy.metrics().await, "abort"), aborted as f64);
}

#[tokio::test]
async fn header_gated_faults_only_hit_requests_that_ask_for_them() {
    let upstream = faults::healthy().run().await;
    let fault = "{ abort: { percent: 100, status: 503 }, header: { name: x-chaos, exact: \"on\" } }";
    let proxy = proxy::new().config(config(upstream.addr(), fault, "")).run().await;
    let c = client::http1(proxy.outbound());
    let send = |chaos: Option<&'static str>| {
        let mut req = c.builder(Method::GET, "svc", "/");
        if let Some(v) = chaos {
            req = req.header("x-chaos", v);
        }
        c.request(req.body(attache_tests::empty()).unwrap())
    };
    for _ in 0..5 {
        let plain = send(None).await.unwrap();
        assert_eq!((plain.status.as_u16(), plain.header("x-attache-fault")), (200, None));
        let off = send(Some("off")).await.unwrap();
        assert_eq!((off.status.as_u16(), off.header("x-attache-fault")), (200, None));
        let on = send(Some("on")).await.unwrap();
        assert_eq!((on.status.as_u16(), on.header("x-attache-fault")), (503, Some("abort")));
    }
    assert_eq!(upstream.requests(), 10);
    assert_eq!(injected(&proxy.metrics().await, "abort"), 5.0);
}

#[tokio::test]
async fn grpc_abort_is_a_trailers_only_status() {
    let upstream = faults::healthy().run().await;
    let fault = "{ abort: { percent: 100, grpc_status: unavailable } }";
    let proxy = proxy::new().config(config(upstream.addr(), fault, "")).run().await;
    let c = client::http2(proxy.outbound()).timeout(secs(5));
    let rsp = c.grpc_unary("svc", "/pkg.Svc/Call", b"hello").await.unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.header("content-type"), Some("application/grpc"));
    assert_eq!(rsp.header("grpc-status"), Some("14"), "{:?}", rsp.headers);
    assert_eq!(rsp.header("x-attache-fault"), Some("abort"));
    assert!(rsp.body.is_empty(), "trailers-only: no body, got {:?}", rsp.body);
    assert_eq!(upstream.requests(), 0);
    assert_eq!(injected(&proxy.metrics().await, "abort"), 1.0);
}
