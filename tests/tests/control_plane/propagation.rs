//! An edit of the config directory reaches every sidecar: 50 sidecars of one service ACK the new version, and all
//! of them route by it.

use attache_tests::wait::secs;
use attache_tests::{mesh, TempDir};

use super::{alone, api_mesh, routed, routing, served_version};

const SIDECARS: usize = 50;

#[tokio::test(flavor = "multi_thread")]
async fn fifty_sidecars_ack_an_edit_within_seconds() {
    let _alone = alone().await;
    let (v1, v2, cp) = api_mesh().await;
    let state = TempDir::new("attache-web");
    let web = mesh::sidecars(&cp, "web", SIDECARS, state.path()).await;
    let first = cp.version().await;
    cp.await_acked(SIDECARS, first, secs(10)).await;
    assert_eq!(routed(&web[0], "api").await, "api-v1");

    // The edit: `api` now goes to api-v2. Timed from the write to the last ACK the status API shows.
    let written = tokio::time::Instant::now();
    cp.write("routing.yaml", &routing(v1.addr(), v2.addr(), "api-v2"));
    let status = cp.await_acked(SIDECARS, first + 1, secs(20)).await;
    let elapsed = written.elapsed();
    eprintln!("{SIDECARS} sidecars ACKed version {} {elapsed:?} after the file write", first + 1);
    assert!(elapsed < secs(10), "{SIDECARS} sidecars took {elapsed:?} to ACK the edit");
    assert!(status.mesh.errors.is_empty(), "{:?}", status.mesh.errors);

    // What was ACKed is what runs: every sidecar serves the new version and routes by it.
    for sidecar in &web {
        assert_eq!(served_version(sidecar).await, first + 1);
        assert_eq!(routed(sidecar, "api").await, "api-v2");
    }
    assert_eq!(v2.requests(), SIDECARS);

    // The control plane counted one ACK per sidecar and version, no NACK, and timed every ACK.
    let metrics = cp.metrics().await;
    let acks = metrics.sum("attache_control_plane_answers_total", &[("result", "ack")]);
    assert_eq!(acks, 2.0 * SIDECARS as f64, "{metrics}");
    assert_eq!(metrics.sum("attache_control_plane_answers_total", &[("result", "nack")]), 0.0, "{metrics}");
    let timed = metrics.value("attache_control_plane_publish_to_ack_seconds_count", &[]);
    assert_eq!(timed, Some(2.0 * SIDECARS as f64), "{metrics}");
    assert_eq!(metrics.value("attache_control_plane_connected_sidecars", &[]), Some(SIDECARS as f64), "{metrics}");
    assert_eq!(metrics.value("attache_control_plane_mesh_version", &[]), Some((first + 1) as f64), "{metrics}");
}
