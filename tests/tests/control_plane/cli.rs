//! The real `attache` binary: `check DIR` validates a mesh directory as the control plane would (exit 1, every
//! error as file: path (line, column); exit 0 and a summary), `status` prints every sidecar and what it runs.

use attache_tests::wait::secs;
use attache_tests::{mesh, TempDir};

use super::{among_others, api_mesh, position, routing, sidecar, sidecars};

/// A sidecar whose outbound listener address has no port, in block style so the error has an exact position.
const PORTLESS: &str = r#"sidecars:
  - service: web
    admin: { address: "127.0.0.1:0" }
    listeners:
      - name: outbound
        address: 127.0.0.1
        direction: outbound
"#;

fn write(dir: &TempDir, name: &str, yaml: &str) {
    std::fs::write(dir.path().join(name), yaml).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn check_prints_file_path_line_and_column_of_every_error_and_summarises_a_valid_dir() {
    let _shared = among_others().await;
    let dir = TempDir::new("attache-check");
    let shown = dir.path().display().to_string();
    write(&dir, "routing.yaml", &routing("127.0.0.1:8081", "127.0.0.1:8082", "api-v1"));
    write(&dir, "sidecars.yaml", &sidecars(&[("web", &["api"])]));
    let (status, out) = mesh::cli(&["check", &shown], secs(60)).await.unwrap();
    assert_eq!(status.code(), Some(0), "{out}");
    assert_eq!(out, format!("{shown}: ok (2 files, 1 services, 2 backends, 1 sidecars: web)\n"));

    // Two mistakes in two files.
    let broken = routing("127.0.0.1:8081", "127.0.0.1:8082", "api-v3");
    write(&dir, "routing.yaml", &broken);
    write(&dir, "sidecars.yaml", PORTLESS);
    let (status, out) = mesh::cli(&["check", &shown], secs(60)).await.unwrap();
    assert_eq!(status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("{shown}: 2 errors"), "{out}");
    let (line, column) = position(&broken, "name: api-v3");
    let route = format!("  routing.yaml: services[0].routes[0].backends[0].name (line {line}, column {column}): ");
    assert!(lines[1].starts_with(&route) && lines[1].contains("api-v3"), "expected {route:?}:\n{out}");
    let (line, column) = position(PORTLESS, "address: 127.0.0.1");
    let address = format!("  sidecars.yaml: sidecars[0].listeners[0].address (line {line}, column {column}): ");
    assert!(lines[2].starts_with(&address), "expected {address:?}:\n{out}");
    assert_eq!(lines.len(), 3, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_prints_every_sidecar_and_the_version_it_runs() {
    let _shared = among_others().await;
    let (v1, v2, mut cp) = api_mesh().await;
    let state = TempDir::new("attache-web");
    let mut web = mesh::sidecars(&cp, "web", 2, state.path()).await;
    let first = cp.version().await;
    cp.await_acked(2, first, secs(10)).await;
    cp.write("routing.yaml", &routing(v1.addr(), v2.addr(), "api-v2"));
    let version = first + 1;
    let view = cp.await_acked(2, version, secs(10)).await;

    let addr = cp.addr().to_string();
    let (code, out) = mesh::cli(&["status", "--control-plane", &addr], secs(60)).await.unwrap();
    assert_eq!(code.code(), Some(0), "{out}");
    let dir = cp.config_dir().display().to_string();
    assert!(out.starts_with(&format!("mesh {dir}: version {version} (hash ")), "{out}");
    let rows = |out: &str| -> Vec<Vec<String>> {
        out.lines().skip(1).map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
    };
    let table = rows(&out);
    assert_eq!(table[0], ["SERVICE", "INSTANCE", "NAMESPACE", "ADDRESS", "VERSION", "STATE"], "{out}");
    assert_eq!(table.len(), 3, "{out}");
    for (row, instance) in table[1..].iter().zip(["web-0", "web-1"]) {
        let address = &sidecar(&view, instance).address;
        let v = version.to_string();
        assert_eq!(row[..5], ["web", instance, "default", address, &v], "{out}");
        assert_eq!(row[5..].join(" "), "up to date (ACK)", "{out}");
    }

    // A sidecar that went away is still listed, with the version it ran.
    let gone = web.pop().unwrap();
    assert!(gone.shutdown(secs(5)).await);
    cp.await_status("web-1 to show as disconnected", secs(10), |s| {
        s.sidecars.iter().any(|c| c.node.instance == "web-1" && !c.connected)
    })
    .await;
    let (code, out) = mesh::cli(&["status", "--control-plane", &addr], secs(60)).await.unwrap();
    assert_eq!(code.code(), Some(0), "{out}");
    let table = rows(&out);
    assert_eq!(table[2][..5], ["web", "web-1", "default", &sidecar(&view, "web-1").address, &version.to_string()]);
    assert!(table[2][5..].join(" ").starts_with("disconnected (last seen "), "{out}");
    assert_eq!(table[1][5..].join(" "), "up to date (ACK)", "{out}");

    // With the control plane stopped, it says it cannot reach it.
    cp.stop().await;
    let (code, out) = mesh::cli(&["status", "--control-plane", &addr], secs(60)).await.unwrap();
    assert_eq!(code.code(), Some(1), "{out}");
    assert!(out.starts_with("attache: ") && out.contains(&format!("connecting to {addr}")), "{out}");
}

/// BUG (control-plane/src/cli.rs, `request`): every failure of a plaintext call is prefixed with the mTLS hint, so
/// with the control plane simply down `attache status --control-plane ADDR` prints
/// `attache: a control plane started with --ca-dir needs --tls-dir (or ATTACHE_TLS_DIR): connecting to ADDR:
/// Connection refused (os error 111)`. Expected: `attache: connecting to ADDR: Connection refused ...`, the hint
/// only when a plaintext request met an mTLS control plane (the connection was accepted, then closed or reset).
#[tokio::test(flavor = "multi_thread")]
async fn status_with_the_control_plane_down_says_only_that_it_cannot_connect() {
    let _shared = among_others().await;
    let mut cp = mesh::control_plane().file("sidecars.yaml", sidecars(&[("web", &[])])).run().await;
    cp.stop().await;
    let addr = cp.addr().to_string();
    let (code, out) = mesh::cli(&["status", "--control-plane", &addr], secs(60)).await.unwrap();
    assert_eq!(code.code(), Some(1), "{out}");
    assert!(out.starts_with(&format!("attache: connecting to {addr}: ")), "{out}");
    assert!(!out.contains("--tls-dir"), "a refused connection is not a TLS problem: {out}");
}
