//! A control plane that flaps (stopped and started every second) costs its sidecars nothing that lasts: every
//! reconnect's sockets are closed again, so once they are all back the process holds as many file descriptors as
//! before. Every sidecar and the control plane are in this process, so its descriptors are theirs.

use attache_tests::wait::{millis, secs};
use attache_tests::{mesh, TempDir};

use super::{alone, api_mesh, routed};

const SIDECARS: usize = 10;
/// Stop, wait a second, start, wait a second: 15 cycles are the 30 s of flapping the issue describes.
const CYCLES: usize = 15;
/// Descriptors that may be open after and not before: a socket or watcher still closing, nothing per reconnect
/// (there were `SIDECARS * CYCLES` = 150 of those).
const SLACK: usize = 8;

/// Entries of `/proc/self/fd`.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("reading /proc/self/fd").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_control_plane_leaks_no_file_descriptors() {
    let _alone = alone().await;
    let (_v1, _v2, mut cp) = api_mesh().await;
    let state = TempDir::new("attache-web");
    let web = mesh::sidecars(&cp, "web", SIDECARS, state.path()).await;
    let version = cp.version().await;
    cp.await_acked(SIDECARS, version, secs(10)).await;
    let before = open_fds();

    for _ in 0..CYCLES {
        cp.stop().await;
        tokio::time::sleep(secs(1)).await;
        cp.start().await;
        tokio::time::sleep(secs(1)).await;
    }
    cp.await_acked(SIDECARS, version, secs(20)).await;

    // Closing is asynchronous (aborted tasks, the file watcher's thread): allow it a moment, then compare.
    let deadline = tokio::time::Instant::now() + secs(5);
    let mut after = open_fds();
    while after > before + SLACK && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(millis(50)).await;
        after = open_fds();
    }
    eprintln!("open file descriptors: {before} before {CYCLES} control-plane flaps, {after} after");
    assert!(after <= before + SLACK, "{before} file descriptors before the flapping, {after} after");

    // They really did reconnect, over and over, and serve on.
    let mut reconnects = 0.0;
    for sidecar in &web {
        let metrics = sidecar.metrics().await;
        assert_eq!(metrics.value("attache_control_plane_connected", &[]), Some(1.0), "{metrics}");
        reconnects += metrics.sum("attache_control_plane_connects_total", &[("result", "ok")]) - 1.0;
        assert_eq!(routed(sidecar, "api").await, "api-v1");
    }
    eprintln!("{SIDECARS} sidecars reconnected {reconnects} times in all");
    assert!(reconnects >= SIDECARS as f64, "only {reconnects} reconnects across {SIDECARS} sidecars");
}
