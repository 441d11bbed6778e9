//! Credential rotation: certificates swapped on disk (atomically, as the kubelet does) are used by new handshakes
//! while requests keep flowing, and none fails; a swap to something invalid is rejected, counted, and the old
//! certificate keeps serving.

use attache_tests::faults::Load;
use attache_tests::pki::{Ca, Leaf, VALID_FROM};
use attache_tests::server::{self, MtlsServer};
use attache_tests::wait::secs;
use attache_tests::{client, eventually, Metrics};
use tokio::time::Instant;

use super::{handshakes, mesh_with, reloads, Mesh, API, WEB};

const PROBE: &str = "spiffe://example.org/ns/default/sa/probe";
const OPERATOR: &str = "spiffe://example.org/ns/ops/sa/debug";
const EXPIRY: &str = "attache_tls_certificate_expiry_timestamp_seconds";

/// The mesh, with the client side also calling an mTLS probe (service `probe`) that reports the serial of the
/// certificate the client side dialled with. Pooled connections expire at once, so every request dials (and
/// handshakes) anew: rotations happen between handshakes, not only between connections.
async fn mesh_with_probe() -> (Mesh, MtlsServer) {
    let ca = Ca::new("example.org mesh");
    let probe = server::mtls_probe(&ca.workload(PROBE)).await;
    let addr = probe.addr();
    let mesh =
        mesh_with(ca, "", |c| c.service("probe", PROBE, &[addr]).limits("connect_timeout: 2s, pool_idle_timeout: 1us"))
            .await;
    (mesh, probe)
}

/// The serial of the certificate the server side presents to a new connection, as `openssl s_client` sees it.
async fn server_serial(mesh: &Mesh) -> String {
    let operator = mesh.ca.workload(OPERATOR);
    let hs = client::s_client(mesh.server_side.inbound()).cert(&operator.cert(), &operator.key()).run().await.unwrap();
    assert!(hs.completed, "{}", hs.output);
    hs.server_serial().await.unwrap()
}

/// The serial of the certificate the client side presents on a new connection, as the probe saw it.
async fn client_serial(mesh: &Mesh) -> String {
    let rsp = client::http1(mesh.client_side.outbound()).get("probe", "/").await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    rsp.text()
}

/// Waits until `proxy` has applied `n` credential loads (the first load counts), returning its metrics.
async fn applied(proxy: &attache_tests::proxy::TestProxy, n: f64) -> Metrics {
    eventually(secs(10), || async {
        let m = proxy.metrics().await;
        (reloads(&m, "applied", "none") == n).then_some(m)
    })
    .await
}

/// A leaf for `id` from `ca` expiring on a different day than the ones before it.
fn renewed(ca: &Ca, id: &str) -> Leaf {
    ca.leaf().uri(id).valid(VALID_FROM, (2098, 6, 1)).issue()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_both_sidecars_certificates_under_load_fails_no_request() {
    let (mesh, probe) = mesh_with_probe().await;
    let (old_api, old_web) = (mesh.api.serial(), mesh.web.serial());
    assert_eq!(server_serial(&mesh).await, old_api);
    assert_eq!(client_serial(&mesh).await, old_web);

    let started = Instant::now();
    let load = Load::get(mesh.client_side.outbound(), "api", "/", 4);
    eventually(secs(10), || async { load.statuses().len() >= 50 }).await;

    let new_api = renewed(&mesh.ca, API);
    mesh.api.rotate(&new_api);
    let m = applied(&mesh.server_side, 2.0).await;
    let server_handshakes = handshakes(&m, "inbound", "none");
    let sent = load.statuses().len();
    eventually(secs(10), || async { load.statuses().len() >= sent + 50 }).await;

    let new_web = renewed(&mesh.ca, WEB);
    mesh.web.rotate(&new_web);
    let m = applied(&mesh.client_side, 2.0).await;
    let client_handshakes = handshakes(&m, "outbound", "none");
    let sent = load.statuses().len();
    eventually(secs(10), || async { load.statuses().len() >= sent + 50 && started.elapsed() >= secs(2) }).await;
    let statuses = load.stop().await;

    let failed: Vec<_> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "{} of {} requests failed: {failed:?}", failed.len(), statuses.len());
    assert!(statuses.len() >= 200, "only {} requests were sent", statuses.len());
    assert_eq!(mesh.app.requests(), statuses.len(), "every request reached the app once");

    // Handshakes kept succeeding after each rotation, with the new certificates.
    let server_m = mesh.server_side.metrics().await;
    let client_m = mesh.client_side.metrics().await;
    assert!(handshakes(&server_m, "inbound", "none") >= server_handshakes + 50.0, "{server_m}");
    assert!(handshakes(&client_m, "outbound", "none") >= client_handshakes + 50.0, "{client_m}");
    assert_eq!(handshakes(&server_m, "inbound", "untrusted") + handshakes(&client_m, "outbound", "untrusted"), 0.0);
    assert_eq!(reloads(&server_m, "rejected", ""), 0.0, "an atomic swap is never seen half-written:\n{server_m}");
    assert_eq!(reloads(&client_m, "rejected", ""), 0.0, "{client_m}");

    // New connections see the new serials; the expiry gauges follow.
    assert_eq!(server_serial(&mesh).await, new_api.serial());
    assert_eq!(client_serial(&mesh).await, new_web.serial());
    assert_eq!(probe.clients().last().map(|c| c.uris.clone()), Some(vec![WEB.to_owned()]));
    assert_eq!(server_m.value(EXPIRY, &[("identity", API)]), Some(new_api.not_after() as f64), "{server_m}");
    assert_eq!(client_m.value(EXPIRY, &[("identity", WEB)]), Some(new_web.not_after() as f64), "{client_m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_established_connection_keeps_its_certificate_across_a_rotation() {
    let mesh = super::mesh("").await;
    // h2 from the client to its sidecar, which multiplexes onto one mTLS connection to the server side.
    let client = client::http2(mesh.client_side.outbound());
    assert_eq!(client.get("api", "/before").await.unwrap().status, 200);

    let new_api = renewed(&mesh.ca, API);
    mesh.api.rotate(&new_api);
    applied(&mesh.server_side, 2.0).await;
    for _ in 0..10 {
        let rsp = client.get("api", "/after").await.unwrap();
        assert_eq!(rsp.status, 200, "{}", rsp.text());
    }
    let m = mesh.server_side.metrics().await;
    assert_eq!(handshakes(&m, "inbound", "none"), 1.0, "the established connection carried on: {m}");
    assert_eq!(mesh.app.requests(), 11);
    // A new connection gets the new certificate.
    assert_eq!(server_serial(&mesh).await, new_api.serial());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_rotation_is_rejected_and_the_old_certificate_keeps_serving() {
    let (mesh, _probe) = mesh_with_probe().await;
    let old = mesh.api.leaf();
    let stranger = mesh.ca.issue(API);
    let expired = mesh.ca.leaf().uri(API).valid((2020, 1, 1), (2021, 1, 1)).issue();
    let cases = [
        ("no-key", old.cert_pem.clone(), "garbage\n".to_owned()),
        ("invalid-pem", old.cert_pem.clone(), old.key_pem[..old.key_pem.len() / 2].to_owned()),
        ("key-mismatch", old.cert_pem.clone(), stranger.key_pem.clone()),
        ("expired", expired.cert_pem.clone(), expired.key_pem.clone()),
    ];
    for (reason, cert, key) in &cases {
        mesh.api.install_raw(cert, key);
        eventually(secs(10), || async { reloads(&mesh.server_side.metrics().await, "rejected", reason) == 1.0 }).await;
        // New connections still handshake, with the old certificate.
        let rsp = client::http1(mesh.client_side.outbound()).get("api", "/").await.unwrap();
        assert_eq!(rsp.status, 200, "after a {reason} rotation: {}", rsp.text());
        assert_eq!(server_serial(&mesh).await, old.serial(), "after a {reason} rotation");
    }
    let m = mesh.server_side.metrics().await;
    assert_eq!(reloads(&m, "rejected", ""), cases.len() as f64, "{m}");
    assert_eq!(reloads(&m, "applied", ""), 1.0, "{m}");
    assert_eq!(m.value(EXPIRY, &[("identity", API)]), Some(old.not_after() as f64), "{m}");

    // A good certificate after the bad ones is picked up.
    let good = renewed(&mesh.ca, API);
    mesh.api.rotate(&good);
    applied(&mesh.server_side, 2.0).await;
    assert_eq!(server_serial(&mesh).await, good.serial());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_rotation_on_the_client_side_keeps_its_old_certificate() {
    let (mesh, probe) = mesh_with_probe().await;
    let old = mesh.web.leaf();

    mesh.web.install_raw(&old.cert_pem, "garbage\n");
    eventually(secs(10), || async { reloads(&mesh.client_side.metrics().await, "rejected", "no-key") == 1.0 }).await;
    let rsp = client::http1(mesh.client_side.outbound()).get("api", "/").await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(client_serial(&mesh).await, old.serial());
    assert_eq!(probe.clients().len(), 1);

    let stranger = mesh.ca.issue(WEB);
    mesh.web.install_raw(&stranger.cert_pem, &old.key_pem);
    eventually(secs(10), || async { reloads(&mesh.client_side.metrics().await, "rejected", "key-mismatch") == 1.0 })
        .await;
    assert_eq!(client_serial(&mesh).await, old.serial());
    let rsp = client::http1(mesh.client_side.outbound()).get("api", "/").await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
}

/// A CA rotation: while both sidecars' trust bundles hold the old and the new CA, certificates from either are
/// accepted, so workloads can move to the new CA one by one without a failed request; a third CA stays refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bundle_with_the_old_and_new_ca_accepts_both_during_a_ca_rotation() {
    let (old, new, stranger) = (Ca::new("old mesh CA"), Ca::new("new mesh CA"), Ca::new("stranger CA"));
    let both = format!("{}{}", old.pem(), new.pem());
    let api = attache_tests::pki::Workload::new(old.issue(API), both.clone());
    let web = attache_tests::pki::Workload::new(old.issue(WEB), both);
    let app = server::auto().name("api").route_prefix("/", server::echo()).run().await;
    let server_side = attache_tests::proxy::new().config(super::inbound(&api, app.addr()).build()).run().await;
    // Pooled connections expire at once, so every request handshakes with the current certificates.
    let client_cfg =
        super::outbound(&web).service("api", API, &[server_side.inbound()]).limits("pool_idle_timeout: 1us");
    let client_side = attache_tests::proxy::new().config(client_cfg.build()).run().await;
    let get = || async { client::http1(client_side.outbound()).get("api", "/").await.unwrap().status };
    assert_eq!(get().await, 200, "both on the old CA");

    api.rotate(&new.issue(API));
    applied(&server_side, 2.0).await;
    assert_eq!(get().await, 200, "server on the new CA, client on the old one");
    web.rotate(&new.issue(WEB));
    applied(&client_side, 2.0).await;
    assert_eq!(get().await, 200, "both on the new CA");

    // Callers with certificates of either CA are served; a TLS 1.3 client learns of a refused certificate only
    // after its side of the handshake, so the stranger's refusal is read from the server's count.
    for ca in [&old, &new, &stranger] {
        let caller = ca.workload(OPERATOR);
        client::s_client(server_side.inbound()).cert(&caller.cert(), &caller.key()).run().await.unwrap();
    }
    let m = server_side.metrics().await;
    assert_eq!(handshakes(&m, "inbound", "untrusted"), 1.0, "only the stranger is refused:\n{m}");
}
