//! `attache canary set`: a new split is pushed at once (no file edit, no debounce) and observed through the
//! sidecars within a second; it is persisted, so a restarted control plane serves the same split.

use std::net::SocketAddr;

use attache_control_plane::cli;
use attache_tests::proxy::TestProxy;
use attache_tests::server::{self, Server};
use attache_tests::wait::secs;
use attache_tests::{client, eventually, mesh, TempDir};

use super::{among_others, sidecars};

/// Requests measured per split.
const REQUESTS: usize = 400;
/// Allowed distance from the expected count: 5 standard deviations of a fair coin over 400 tosses.
const TOLERANCE: usize = 50;

/// Service `reviews` whose route `default` sends everything to `reviews-v1`; `reviews-v2` is deployed but unused.
fn reviews(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        r#"services:
  - name: reviews
    hosts: [reviews]
    routes:
      - name: default
        backends: [{{ name: reviews-v1 }}]
backends:
  - {{ name: reviews-v1, endpoints: ["{v1}"] }}
  - {{ name: reviews-v2, endpoints: ["{v2}"] }}
"#
    )
}

/// How many of `n` requests, spread over `sidecars`, reached reviews-v2 (all must succeed).
async fn to_v2(sidecars: &[TestProxy], n: usize, v1: &Server, v2: &Server) -> usize {
    let (v1_before, v2_before) = (v1.requests(), v2.requests());
    let clients: Vec<_> = sidecars.iter().map(|s| client::http1(s.outbound())).collect();
    for i in 0..n {
        let rsp = clients[i % clients.len()].get("reviews", "/").await.expect("a request through a sidecar");
        assert_eq!(rsp.status, 200, "request {i}: {}", rsp.text());
    }
    let (one, two) = (v1.requests() - v1_before, v2.requests() - v2_before);
    assert_eq!(one + two, n, "every request reached reviews-v1 or reviews-v2");
    two
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_set_shifts_the_split_at_once_and_it_survives_a_restart() {
    let _shared = among_others().await;
    let v1 = server::http1().name("reviews-v1").route_prefix("/", server::ok("v1")).run().await;
    let v2 = server::http1().name("reviews-v2").route_prefix("/", server::ok("v2")).run().await;
    let mut cp = mesh::control_plane()
        .file("reviews.yaml", reviews(v1.addr(), v2.addr()))
        .file("sidecars.yaml", sidecars(&[("web", &["reviews"])]))
        .run()
        .await;
    let state = TempDir::new("attache-web");
    let web = mesh::sidecars(&cp, "web", 2, state.path()).await;
    let first = cp.version().await;
    cp.await_acked(2, first, secs(10)).await;
    assert_eq!(to_v2(&web, REQUESTS, &v1, &v2).await, 0);

    // 50/50, as an operator types it; within a second every sidecar runs it and sends traffic to v2.
    let api = cp.api();
    let set = tokio::time::Instant::now();
    let out = cli::canary_set(&api, "reviews", &["reviews-v2=50".to_owned(), "reviews-v1=50".to_owned()]).await;
    let split = "reviews route default: reviews-v1=50 (50%), reviews-v2=50 (50%)";
    assert!(out.as_ref().is_ok_and(|text| text.contains(split)), "{out:?}");
    cp.await_acked(2, first + 1, secs(1)).await;
    for sidecar in web.chunks(1) {
        eventually(secs(1), || async { to_v2(sidecar, 10, &v1, &v2).await > 0 }).await;
    }
    let observed = set.elapsed();
    eprintln!("the 50/50 split was ACKed and observed through every sidecar {observed:?} after canary set");
    assert!(observed < secs(1), "the split took {observed:?} to show");
    let two = to_v2(&web, REQUESTS, &v1, &v2).await;
    eprintln!("50/50: {two} of {REQUESTS} requests reached reviews-v2");
    assert!(two.abs_diff(REQUESTS / 2) <= TOLERANCE, "{two} of {REQUESTS} reached reviews-v2 with a 50/50 split");

    // A restarted control plane keeps the override, the version and the split.
    cp.restart().await;
    let text = cli::canary_status(&api, "reviews").await.unwrap();
    assert!(text.contains(split), "{text}");
    assert!(!text.contains("no canary override"), "{text}");
    assert_eq!(cp.version().await, first + 1, "the unchanged mesh was republished after the restart");
    cp.await_acked(2, first + 1, secs(20)).await;
    let two = to_v2(&web, REQUESTS, &v1, &v2).await;
    eprintln!("50/50 after the restart: {two} of {REQUESTS} requests reached reviews-v2");
    assert!(two.abs_diff(REQUESTS / 2) <= TOLERANCE, "{two} of {REQUESTS} reached reviews-v2 after the restart");

    // Rolling back: within a second v2 gets nothing (a run of 20 all to v1 is a 1-in-a-million fluke at 50/50).
    cli::canary_set(&api, "reviews", &["reviews-v1=100".to_owned()]).await.unwrap();
    cp.await_acked(2, first + 2, secs(1)).await;
    for sidecar in web.chunks(1) {
        eventually(secs(1), || async { to_v2(sidecar, 20, &v1, &v2).await == 0 }).await;
    }
    assert_eq!(to_v2(&web, REQUESTS, &v1, &v2).await, 0);
}
