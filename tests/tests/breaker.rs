//! Circuit breaking: an endpoint that keeps failing is ejected, probed once per (growing) ejection, and taken back
//! after one successful probe; a backend with nothing left fails fast; a split steers around an ejected backend.

use std::net::SocketAddr;

use attache_tests::{
    client, eventually,
    faults::{self, Load, Upstream},
    proxy::{self, TestProxy},
    wait::{millis, secs},
};
use tokio::time::Instant;

/// How late a probe may come after its ejection ends (traffic pacing, scheduling on a loaded CI machine). The
/// exact backoff is unit-tested with paused time (`proxy/src/backend/breaker.rs`); here the lower bounds are exact
/// and the upper ones only catch a missing cap or a probe that never comes.
const SLACK: u64 = 500;

const BREAKER: &str = "{ consecutive_failures: 3, base_ejection: 300ms, max_ejection: 2s }";

/// Service `svc`, one route split evenly over `backends` (name, endpoints), each with `circuit_breaker: breaker`.
fn config(backends: &[(&str, Vec<SocketAddr>)], breaker: &str) -> String {
    let refs: Vec<_> = backends.iter().map(|(n, _)| format!("{{ name: {n} }}")).collect();
    let mut yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ connect_timeout: 500ms }}\nlisteners:\n  - {{ name: outbound, \
         address: \"127.0.0.1:0\", direction: outbound }}\nservices:\n  - name: svc\n    hosts: [svc]\n    routes:\n      \
         - {{ name: default, backends: [{}] }}\nbackends:\n",
        refs.join(", ")
    );
    for (name, endpoints) in backends {
        let eps: Vec<_> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        yaml += &format!("  - {{ name: {name}, endpoints: [{}], circuit_breaker: {breaker} }}\n", eps.join(", "));
    }
    yaml
}

async fn breaker_state(proxy: &TestProxy, backend: &str, endpoint: &Upstream) -> Option<f64> {
    let endpoint = endpoint.addr().to_string();
    proxy.metrics().await.value("attache_breaker_state", &[("backend", backend), ("endpoint", &endpoint)])
}

/// Sends GETs from a few concurrent clients until `bad` has seen `n` requests.
async fn drive_until_seen(proxy: &TestProxy, bad: &Upstream, n: usize) {
    let load = Load::get(proxy.outbound(), "svc", "/", 4);
    eventually(secs(10), || async { bad.requests() >= n }).await;
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_endpoint_is_ejected_and_probed_once_per_growing_ejection() {
    let good = faults::healthy().name("good").run().await;
    let bad = faults::always(503).name("bad").run().await;
    let proxy = proxy::new().config(config(&[("web", faults::addrs(&[&good, &bad]))], BREAKER)).run().await;

    // Three consecutive failures eject it; without traffic it stays open (no probe is sent).
    drive_until_seen(&proxy, &bad, 3).await;
    eventually(secs(5), || async { breaker_state(&proxy, "web", &bad).await == Some(1.0) }).await;
    let failures = bad.requests();
    let last_failure = *bad.arrivals().last().unwrap();

    // Under load, the only requests it gets are probes, one as each ejection ends; each failed probe doubles the
    // ejection (ceilings 300ms, 600ms, 1.2s, 2s, jittered to [ceiling/2, ceiling]).
    let load = Load::get(proxy.outbound(), "svc", "/", 4);
    eventually(secs(10), || async { bad.requests() >= failures + 4 }).await;
    let statuses = load.stop().await;
    let probes = &bad.arrivals()[failures..];
    assert!(probes[0] - last_failure <= millis(300 + SLACK), "first probe after {:?}", probes[0] - last_failure);
    for (i, ceiling) in [600u64, 1200, 2000].into_iter().enumerate() {
        let gap = probes[i + 1] - probes[i];
        assert!(
            gap >= millis(ceiling / 2),
            "probe {} came {gap:?} after the previous one (ceiling {ceiling}ms)",
            i + 2
        );
        assert!(gap <= millis(ceiling + SLACK), "probe {} came {gap:?} after the previous one", i + 2);
    }
    // Everything else went to the healthy endpoint and succeeded.
    let probes = bad.requests() - failures;
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(failed, probes, "only the probes failed");
    let metrics = proxy.metrics().await;
    let opened = metrics.sum("attache_breaker_transitions_total", &[("backend", "web"), ("state", "open")]);
    assert_eq!(opened as usize, 1 + probes, "the ejection and one per failed probe:\n{metrics}");
    let half_open = metrics.sum("attache_breaker_transitions_total", &[("backend", "web"), ("state", "half-open")]);
    assert_eq!(half_open as usize, probes, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovered_endpoint_is_closed_by_one_probe_and_gets_traffic_again() {
    let good = faults::healthy().name("good").run().await;
    let bad = faults::always(503).name("bad").run().await;
    let proxy = proxy::new().config(config(&[("web", faults::addrs(&[&good, &bad]))], BREAKER)).run().await;
    drive_until_seen(&proxy, &bad, 3).await;
    eventually(secs(5), || async { breaker_state(&proxy, "web", &bad).await == Some(1.0) }).await;
    let transitions = |m: &attache_tests::Metrics, state| {
        m.sum("attache_breaker_transitions_total", &[("backend", "web"), ("state", state)]) as usize
    };
    let probes_before = transitions(&proxy.metrics().await, "half-open");

    bad.recover();
    let recovered_at = Instant::now();
    let load = Load::get(proxy.outbound(), "svc", "/", 4);
    eventually(secs(5), || async { breaker_state(&proxy, "web", &bad).await == Some(0.0) }).await;
    let metrics = proxy.metrics().await;
    assert_eq!(transitions(&metrics, "half-open") - probes_before, 1, "one probe closes it:\n{metrics}");
    assert_eq!(transitions(&metrics, "closed"), 1, "{metrics}");
    let probe = bad.arrivals().into_iter().find(|t| *t >= recovered_at).unwrap();
    assert!(probe - recovered_at <= millis(300 + SLACK), "probed {:?} after recovery", probe - recovered_at);

    // Closed, it takes its share again.
    let since = bad.requests();
    eventually(secs(10), || async { bad.requests() >= since + 20 }).await;
    let statuses = load.stop().await;
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>());
}

#[tokio::test]
async fn every_endpoint_ejected_fails_fast_with_circuit_open() {
    // A failure takes as long as a real round trip, so answering without one is measurably faster.
    let a = faults::always(503).after(millis(300)).name("a").run().await;
    let refused = faults::refusing().run().await;
    let long = "{ consecutive_failures: 3, base_ejection: 10s, max_ejection: 20s }";
    let proxy = proxy::new().config(config(&[("web", faults::addrs(&[&a, &refused]))], long)).run().await;
    let c = client::http1(proxy.outbound());
    // Both fail: three each opens both (the refused one cannot count, so send until the metrics say so).
    let mut sent = 0;
    while breaker_state(&proxy, "web", &a).await != Some(1.0)
        || breaker_state(&proxy, "web", &refused).await != Some(1.0)
    {
        let rsp = c.get("svc", "/").await.unwrap();
        assert_eq!(rsp.status, 503);
        sent += 1;
        assert!(sent <= 6, "6 failures (3 per endpoint) must have opened both breakers");
    }
    assert_eq!(a.requests(), 3);

    for _ in 0..20 {
        let started = Instant::now();
        let rsp = c.get("svc", "/").await.unwrap();
        let took = started.elapsed();
        assert_eq!(rsp.status, 503, "{}", rsp.text());
        assert_eq!(rsp.header("x-attache-error"), Some("circuit-open"));
        assert!(took < millis(250), "circuit-open took {took:?}; an upstream attempt takes 300ms");
    }
    assert_eq!(a.requests(), 3, "an open circuit sends nothing upstream");
    let metrics = proxy.metrics().await;
    let fast = metrics.value("attache_backend_fast_failures_total", &[("backend", "web"), ("reason", "circuit-open")]);
    assert_eq!(fast, Some(20.0), "{metrics}");
}

#[tokio::test]
async fn split_sends_everything_to_the_other_backend_while_one_is_ejected() {
    let bad = faults::always(503).name("bad").run().await;
    let good = faults::healthy().name("good").run().await;
    let long = "{ consecutive_failures: 3, base_ejection: 10s, max_ejection: 20s }";
    let backends = [("broken", vec![bad.addr()]), ("fine", vec![good.addr()])];
    let proxy = proxy::new().config(config(&backends, long)).run().await;
    drive_until_seen(&proxy, &bad, 3).await;
    eventually(secs(5), || async { breaker_state(&proxy, "broken", &bad).await == Some(1.0) }).await;
    let seen = bad.requests();

    let c = client::http1(proxy.outbound());
    let good_before = good.requests();
    for _ in 0..100 {
        let rsp = c.get("svc", "/").await.unwrap();
        assert_eq!(rsp.status, 200, "{:?} {}", rsp.header("x-attache-error"), rsp.text());
        assert_eq!(rsp.header("x-server-name"), Some("good"));
    }
    assert_eq!(bad.requests(), seen, "the ejected backend got nothing");
    assert_eq!(good.requests() - good_before, 100);
    let metrics = proxy.metrics().await;
    let fast = metrics.sum("attache_backend_fast_failures_total", &[("backend", "broken")]);
    assert_eq!(fast, 0.0, "the split steers around it; nothing is failed fast:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_health_checks_take_an_endpoint_out_and_passing_ones_bring_it_back() {
    let good =
        attache_tests::server::http1().name("good").route_prefix("/", attache_tests::server::ok("good")).run().await;
    let sick = faults::fail_then_recover(usize::MAX, 503).name("sick").run().await;
    let yaml = format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound }}
services:
  - name: svc
    hosts: [svc]
    routes:
      - name: default
        backends: [{{ name: web }}]
backends:
  - name: web
    endpoints: ["{}", "{}"]
    circuit_breaker: {{ enabled: false }}
    health_check: {{ path: /healthz, interval: 50ms, timeout: 40ms, healthy_threshold: 2, unhealthy_threshold: 2 }}
"#,
        good.addr(),
        sick.addr()
    );
    let proxy = proxy::new().config(yaml).run().await;
    let sick_ep = sick.addr().to_string();
    eventually(secs(5), || async {
        proxy.metrics().await.value("attache_endpoint_healthy", &[("endpoint", &sick_ep)]) == Some(0.0)
    })
    .await;
    // Out of rotation: client traffic only reaches the healthy endpoint (health checks still probe the sick one).
    let before = sick.requests();
    let client = attache_tests::client::http1(proxy.outbound());
    for _ in 0..50 {
        assert_eq!(client.get("svc", "/").await.unwrap().status, 200);
    }
    let probes_only = sick.requests() - before;
    assert!(probes_only <= 10, "the unhealthy endpoint got {probes_only} requests while 50 were sent");
    sick.recover();
    eventually(secs(5), || async {
        proxy.metrics().await.value("attache_endpoint_healthy", &[("endpoint", &sick_ep)]) == Some(1.0)
    })
    .await;
}
