//! Rate limits: a route's (or an inbound listener's) token bucket admits `burst` at once then `requests_per_second`,
//! per key; the rest get 429 with `Retry-After` and `RateLimit-*`, or wait briefly in a bounded queue.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attache_tests::{
    client, faults, proxy,
    proxy::TestProxy,
    wait::{millis, secs},
    with_timeout, Metrics, TestResponse,
};
use http::Method;
use tokio::time::Instant;

/// Service `svc` with route `default` to `upstream`, rate limited by `rate_limit` (a YAML flow mapping).
fn config(upstream: SocketAddr, rate_limit: &str) -> String {
    attache_tests::yaml::one_backend("svc", &[upstream]).route(&format!("rate_limit: {rate_limit}")).build()
}

/// What a flood saw.
struct Flood {
    /// From sending the first request to receiving the last response.
    elapsed: Duration,
    statuses: Vec<u16>,
    /// Some 429, to look at its headers.
    limited: Option<TestResponse>,
}

impl Flood {
    fn count(&self, status: u16) -> usize {
        self.statuses.iter().filter(|s| **s == status).count()
    }
}

/// `workers` clients send GETs back to back for `duration`.
async fn flood(addr: SocketAddr, workers: usize, duration: Duration) -> Flood {
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let limited = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (statuses, limited) = (statuses.clone(), limited.clone());
            tokio::spawn(async move {
                let c = client::http1(addr);
                while Instant::now() < deadline {
                    let rsp = c.get("svc", "/").await.unwrap();
                    statuses.lock().unwrap().push(rsp.status.as_u16());
                    if rsp.status == 429 {
                        limited.lock().unwrap().get_or_insert(rsp);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        with_timeout(duration + secs(10), "a flood client", t).await.unwrap();
    }
    let elapsed = started.elapsed();
    let statuses = statuses.lock().unwrap().clone();
    let limited = limited.lock().unwrap().take();
    Flood { elapsed, statuses, limited }
}

fn decisions(metrics: &Metrics, direction: &str, service: &str, route: &str, decision: &str) -> f64 {
    let labels = [("direction", direction), ("service", service), ("route", route), ("decision", decision)];
    metrics.value("attache_rate_limit_decisions_total", &labels).unwrap_or(0.0)
}

/// Asserts the flood admitted `burst + rate * elapsed` within `tolerance` (a fraction) and that the metrics agree.
async fn assert_rate(proxy: &TestProxy, flood: &Flood, rate: f64, burst: f64, tolerance: f64) {
    let admitted = flood.count(200) as f64;
    let expected = burst + rate * flood.elapsed.as_secs_f64();
    let error = (admitted - expected).abs() / expected;
    assert!(
        error <= tolerance,
        "admitted {admitted} in {:?}, expected {expected:.1} (off by {:.1}%)",
        flood.elapsed,
        error * 100.0
    );
    assert_eq!(flood.count(200) + flood.count(429), flood.statuses.len(), "only 200s and 429s");
    assert!(flood.count(429) > 0, "the flood was never limited");
    let metrics = proxy.metrics().await;
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "allowed"), admitted, "{metrics}");
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "limited") as usize, flood.count(429), "{metrics}");
}

fn header_u64(rsp: &TestResponse, name: &str) -> u64 {
    let v = rsp.header(name).unwrap_or_else(|| panic!("no {name} in {:?}", rsp.headers));
    v.parse().unwrap_or_else(|_| panic!("{name}: {v:?} is not an integer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn global_limit_admits_burst_plus_rate_and_answers_429_with_headers() {
    let upstream = faults::healthy().run().await;
    let rl = "{ requests_per_second: 20, burst: 20, key: global }";
    let proxy = proxy::new().config(config(upstream.addr(), rl)).run().await;

    let flood = flood(proxy.outbound(), 4, secs(3)).await;
    assert_rate(&proxy, &flood, 20.0, 20.0, 0.05).await;
    assert_eq!(upstream.requests(), flood.count(200), "limited requests never reach the upstream");

    let limited = flood.limited.as_ref().unwrap();
    assert_eq!(limited.header("x-attache-error"), Some("rate-limited"));
    assert!(header_u64(limited, "retry-after") >= 1);
    assert_eq!(header_u64(limited, "ratelimit-limit"), 20);
    assert_eq!(header_u64(limited, "ratelimit-remaining"), 0);
    let reset = header_u64(limited, "ratelimit-reset");
    assert!((1..=1).contains(&reset), "a full bucket of 20 at 20/s refills within 1s, reset {reset}");
}

/// The acceptance number: the configured rate within 5% over 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admits_the_configured_rate_within_five_percent_over_ten_seconds() {
    let upstream = faults::healthy().run().await;
    let rl = "{ requests_per_second: 50, burst: 50 }";
    let proxy = proxy::new().config(config(upstream.addr(), rl)).run().await;
    let flood = flood(proxy.outbound(), 4, secs(10)).await;
    assert_rate(&proxy, &flood, 50.0, 50.0, 0.05).await;
}

#[tokio::test]
async fn header_keyed_buckets_are_independent() {
    let upstream = faults::healthy().run().await;
    let rl = "{ requests_per_second: 1, burst: 3, key: \"header:x-user\" }";
    let proxy = proxy::new().config(config(upstream.addr(), rl)).run().await;
    let c = client::http1(proxy.outbound());
    let send = |user: Option<&'static str>| {
        let mut req = c.builder(Method::GET, "svc", "/");
        if let Some(user) = user {
            req = req.header("x-user", user);
        }
        c.request(req.body(attache_tests::empty()).unwrap())
    };
    let mut alice = Vec::new();
    for _ in 0..5 {
        alice.push(send(Some("alice")).await.unwrap().status.as_u16());
    }
    assert_eq!(alice, [200, 200, 200, 429, 429]);
    for _ in 0..3 {
        assert_eq!(send(Some("bob")).await.unwrap().status, 200, "bob has his own bucket");
    }
    for _ in 0..3 {
        assert_eq!(send(None).await.unwrap().status, 200, "no header: a bucket of its own");
    }
    assert_eq!(send(Some("bob")).await.unwrap().status, 429);
    let metrics = proxy.metrics().await;
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "allowed"), 9.0, "{metrics}");
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "limited"), 3.0, "{metrics}");
}

/// Sends `n` GETs at once on their own connections; returns (status, time taken) sorted by time.
async fn burst(addr: SocketAddr, n: usize) -> Vec<(u16, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let started = Instant::now();
                let rsp = client::http1(addr).get("svc", "/").await.unwrap();
                (rsp.status.as_u16(), started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(with_timeout(secs(10), "a burst request", t).await.unwrap());
    }
    out.sort_by_key(|(_, took)| *took);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_slightly_over_the_limit_waits_in_the_queue_and_succeeds() {
    let upstream = faults::healthy().run().await;
    let rl = "{ requests_per_second: 10, burst: 5, queue: { max_wait: 500ms, max_depth: 5 } }";
    let proxy = proxy::new().config(config(upstream.addr(), rl)).run().await;

    let results = burst(proxy.outbound(), 8).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    // Five pass at once; the other three wait for the next tokens, 100ms apart.
    for (k, (_, took)) in results[5..].iter().enumerate() {
        let earliest = millis(100 * (k as u64 + 1)) - millis(40);
        assert!(*took >= earliest, "queued request {} took {took:?}: {results:?}", k + 1);
    }
    assert!(results[..5].iter().all(|(_, t)| *t < millis(100)), "{results:?}");
    let metrics = proxy.metrics().await;
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "allowed"), 5.0, "{metrics}");
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "queued"), 3.0, "{metrics}");
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "limited"), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_at_once() {
    let upstream = faults::healthy().run().await;
    let rl = "{ requests_per_second: 10, burst: 5, queue: { max_wait: 2s, max_depth: 2 } }";
    let proxy = proxy::new().config(config(upstream.addr(), rl)).run().await;

    let results = burst(proxy.outbound(), 10).await;
    let statuses: Vec<u16> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 7, "5 at once + 2 queued: {results:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3, "{results:?}");
    assert!(results.iter().filter(|(s, _)| *s == 429).all(|(_, t)| *t < millis(100)), "{results:?}");
    let metrics = proxy.metrics().await;
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "queued"), 2.0, "{metrics}");
    assert_eq!(decisions(&metrics, "outbound", "svc", "default", "limited"), 3.0, "{metrics}");
}

#[tokio::test]
async fn inbound_listener_limits_each_client_ip() {
    let app = faults::healthy().name("app").run().await;
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: inbound, address: \"127.0.0.1:0\", direction: \
         inbound, app: \"{}\", rate_limit: {{ requests_per_second: 1, burst: 5, key: client-ip }} }}\n",
        app.addr()
    );
    let proxy = proxy::new().config(yaml).run().await;
    let c = client::http1(proxy.inbound());
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(c.get("app", "/").await.unwrap().status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);

    // Another client address (the whole of 127/8 is loopback) has its own bucket.
    let other = client::curl()
        .url(format!("http://{}/", proxy.inbound()))
        .arg("--interface")
        .arg("127.0.0.2")
        .run()
        .await
        .unwrap();
    assert_eq!(other.status, 200, "{}", other.text());
    assert_eq!(app.requests(), 6);
    let metrics = proxy.metrics().await;
    assert_eq!(decisions(&metrics, "inbound", "inbound", "app", "allowed"), 6.0, "{metrics}");
    assert_eq!(decisions(&metrics, "inbound", "inbound", "app", "limited"), 3.0, "{metrics}");
}
