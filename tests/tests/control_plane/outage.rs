//! The control plane is not in the request path: with it stopped, sidecars serve on with what they run and
//! reconnect (with backoff) when it returns; a sidecar restarted meanwhile boots from its saved last good copy; a
//! control plane restarted on a broken directory serves its own last good version.

use attache_tests::proxy::TestProxy;
use attache_tests::wait::secs;
use attache_tests::{eventually, mesh, proxy, TempDir};

use super::{among_others, api_mesh, routed, routing, served_version, sidecar};

/// The sidecar's `attache_control_plane_connected` gauge (1 while its stream is open).
async fn connected(sidecar: &TestProxy) -> Option<f64> {
    sidecar.metrics().await.value("attache_control_plane_connected", &[])
}

/// Its failed attempts to open a stream.
async fn failed_connects(sidecar: &TestProxy) -> f64 {
    sidecar.metrics().await.sum("attache_control_plane_connects_total", &[("result", "failed")])
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_serve_on_while_the_control_plane_is_down_and_reconnect_when_it_returns() {
    let _shared = among_others().await;
    const N: usize = 5;
    let (v1, v2, mut cp) = api_mesh().await;
    let state = TempDir::new("attache-web");
    let web = mesh::sidecars(&cp, "web", N, state.path()).await;
    let before = cp.version().await;
    cp.await_acked(N, before, secs(10)).await;

    cp.stop().await;
    // Every sidecar notices, and tries (and fails) to reconnect.
    for sidecar in &web {
        eventually(secs(5), || async { connected(sidecar).await == Some(0.0) }).await;
        eventually(secs(5), || async { failed_connects(sidecar).await >= 1.0 }).await;
    }
    // Meanwhile every request still succeeds, routed by the version they run.
    let mut ok = 0;
    for i in 0..300 {
        let sidecar = &web[i % N];
        assert_eq!(routed(sidecar, "api").await, "api-v1", "request {i} through {}", sidecar.outbound());
        ok += 1;
    }
    assert_eq!((ok, v1.requests()), (300, 300));

    // An edit made while it was down is published when it starts, and reaches every sidecar once reconnected
    // (their backoff is at most a few seconds after so short an outage; the bound allows for 15 s).
    cp.write("routing.yaml", &routing(v1.addr(), v2.addr(), "api-v2"));
    let restarted = tokio::time::Instant::now();
    cp.start().await;
    assert_eq!(cp.version().await, before + 1);
    cp.await_acked(N, before + 1, secs(20)).await;
    eprintln!("{N} sidecars reconnected and ACKed {:?} after the control plane started", restarted.elapsed());
    for sidecar in &web {
        assert_eq!(routed(sidecar, "api").await, "api-v2");
        assert_eq!(connected(sidecar).await, Some(1.0));
        let metrics = sidecar.metrics().await;
        assert_eq!(metrics.sum("attache_control_plane_connects_total", &[("result", "ok")]), 2.0, "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_restarted_while_the_control_plane_is_down_serves_its_saved_copy() {
    let _shared = among_others().await;
    let (v1, v2, mut cp) = api_mesh().await;
    let state = TempDir::new("attache-web-0");
    let web = proxy::new().follow(cp.addr(), "web", "web-0", state.path()).run().await;
    let first = cp.version().await;
    cp.await_acked(1, first, secs(10)).await;
    // The latest version differs from the first, so serving it shows the copy is the latest.
    cp.write("routing.yaml", &routing(v1.addr(), v2.addr(), "api-v2"));
    cp.await_acked(1, first + 1, secs(10)).await;
    assert_eq!(routed(&web, "api").await, "api-v2");

    cp.stop().await;
    assert!(web.shutdown(secs(5)).await, "the old sidecar did not drain");

    // With no control plane to answer, the new sidecar boots from what the old one saved.
    let web = proxy::new().follow(cp.addr(), "web", "web-0", state.path()).run().await;
    assert_eq!(served_version(&web).await, first + 1);
    for _ in 0..50 {
        assert_eq!(routed(&web, "api").await, "api-v2");
    }
    let metrics = web.metrics().await;
    assert_eq!(metrics.value("attache_control_plane_connected", &[]), Some(0.0), "{metrics}");
    assert_eq!(metrics.value("attache_config_version", &[]), Some((first + 1) as f64), "{metrics}");

    // When the control plane returns, the sidecar connects and ACKs the version it already runs.
    cp.start().await;
    let status = cp.await_acked(1, first + 1, secs(20)).await;
    assert_eq!(sidecar(&status, "web-0").pushed_version, first + 1);
    assert_eq!(routed(&web, "api").await, "api-v2");
    assert_eq!(v1.requests(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_plane_restarted_on_a_broken_directory_serves_the_last_good_version() {
    let _shared = among_others().await;
    let (v1, v2, mut cp) = api_mesh().await;
    let state = TempDir::new("attache-web");
    let web = mesh::sidecars(&cp, "web", 2, state.path()).await;
    let first = cp.version().await;
    cp.await_acked(2, first, secs(10)).await;
    cp.write("routing.yaml", &routing(v1.addr(), v2.addr(), "api-v2"));
    let good = first + 1;
    cp.await_acked(2, good, secs(10)).await;

    // Broken while it was down: it starts anyway, says why the directory is not served, and serves the last good.
    cp.stop().await;
    cp.write("routing.yaml", &routing(v1.addr(), v2.addr(), "api-v3"));
    cp.start().await;
    let status = cp.status().await;
    assert_eq!(status.mesh.version, good, "{status:#?}");
    assert_eq!(status.mesh.errors.len(), 1, "{status:#?}");
    assert!(status.mesh.errors[0].starts_with("routing.yaml: services[0].routes[0].backends[0].name"), "{status:#?}");

    // The sidecars reconnect to the version they run; one that never ran anything gets it too.
    cp.await_acked(2, good, secs(20)).await;
    let newcomer = proxy::new().follow(cp.addr(), "web", "web-2", state.path().join("web-2")).run().await;
    cp.await_acked(3, good, secs(10)).await;
    for sidecar in web.iter().chain([&newcomer]) {
        assert_eq!(served_version(sidecar).await, good);
        assert_eq!(routed(sidecar, "api").await, "api-v2");
    }
    let metrics = cp.metrics().await;
    assert_eq!(metrics.value("attache_control_plane_mesh_valid", &[]), Some(0.0), "{metrics}");
}
