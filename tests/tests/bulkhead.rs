//! Bulkheads: a backend takes at most `max_concurrent_requests` at once and lets `max_pending_requests` wait for a
//! slot; anything beyond is answered 503 `overloaded` at once, without reaching the upstream.

use std::net::SocketAddr;
use std::time::Duration;

use attache_tests::{
    client, faults,
    proxy::{self, TestProxy},
    wait::{millis, secs},
    with_timeout, TestResponse,
};
use tokio::time::Instant;

const DELAY: Duration = millis(600);

fn config(endpoint: SocketAddr, max_concurrent: u32, max_pending: u32) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: outbound, address: \"127.0.0.1:0\", direction: \
         outbound }}\nservices:\n  - name: svc\n    hosts: [svc]\n    routes:\n      - {{ name: default, backends: [{{ \
         name: web }}] }}\nbackends:\n  - {{ name: web, endpoints: [\"{endpoint}\"], max_concurrent_requests: \
         {max_concurrent}, max_pending_requests: {max_pending} }}\n"
    )
}

/// Sends `n` GETs at once, each on its own connection; returns each response with how long it took.
async fn burst(proxy: &TestProxy, n: usize) -> Vec<(TestResponse, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let addr = proxy.outbound();
            tokio::spawn(async move {
                let started = Instant::now();
                let rsp = client::http1(addr).get("svc", "/").await.unwrap();
                (rsp, started.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(with_timeout(secs(10), "a burst request", t).await.unwrap());
    }
    out
}

fn fast_failures(metrics: &attache_tests::Metrics) -> Option<f64> {
    metrics.value("attache_backend_fast_failures_total", &[("backend", "web"), ("reason", "overloaded")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_in_flight_one_waiting_the_rest_shed_fast() {
    let upstream = faults::slow(DELAY).name("slow").run().await;
    let proxy = proxy::new().config(config(upstream.addr(), 2, 1)).run().await;

    let results = burst(&proxy, 5).await;
    let ok: Vec<_> = results.iter().filter(|(r, _)| r.status == 200).collect();
    let shed: Vec<_> = results.iter().filter(|(r, _)| r.status == 503).collect();
    assert_eq!((ok.len(), shed.len()), (3, 2), "{:?}", results.iter().map(|(r, t)| (r.status, *t)).collect::<Vec<_>>());
    for (rsp, took) in &shed {
        assert_eq!(rsp.header("x-attache-error"), Some("overloaded"), "{}", rsp.text());
        assert!(*took < millis(300), "shed after {took:?}; the upstream takes {DELAY:?}");
    }
    // The waiting one went upstream only when a slot freed: after a whole upstream round trip.
    let mut took: Vec<Duration> = ok.iter().map(|(_, t)| *t).collect();
    took.sort();
    assert!(took[2] >= DELAY * 2, "the queued request took only {:?}", took[2]);
    assert_eq!(upstream.requests(), 3, "shed requests never reach the upstream");
    let arrivals = upstream.arrivals();
    assert!(arrivals[2] - arrivals[0] >= DELAY - millis(50), "at most two at once upstream: {arrivals:?}");

    let metrics = proxy.metrics().await;
    assert_eq!(fast_failures(&metrics), Some(2.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_pending_sheds_at_once_and_slots_free_when_responses_end() {
    let upstream = faults::slow(DELAY).name("slow").run().await;
    let proxy = proxy::new().config(config(upstream.addr(), 2, 0)).run().await;

    let results = burst(&proxy, 4).await;
    let mut statuses: Vec<u16> = results.iter().map(|(r, _)| r.status.as_u16()).collect();
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503]);
    assert_eq!(upstream.requests(), 2);

    // Both slots are free again: two more at once both pass.
    let again = burst(&proxy, 2).await;
    assert!(
        again.iter().all(|(r, _)| r.status == 200),
        "{:?}",
        again.iter().map(|(r, _)| r.status).collect::<Vec<_>>()
    );
    let metrics = proxy.metrics().await;
    assert_eq!(fast_failures(&metrics), Some(2.0), "{metrics}");
    let served = metrics.sum("attache_requests_total", &[("backend", "web"), ("status_class", "2xx")]);
    assert_eq!(served, 4.0, "{metrics}");
}
