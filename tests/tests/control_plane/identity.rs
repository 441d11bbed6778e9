//! The control plane as the mesh CA, with its API over mTLS: sidecars enrol with the bootstrap token and follow over
//! mTLS; a certificate is good only for its own service; the admin API needs an admin certificate; certificates are
//! renewed before they expire without the stream being dropped.

use std::time::Duration;

use attache_config::wire::{Node, SidecarStatus};
use attache_control_plane::cli as cp_cli;
use attache_proxy::source::enrol::Enrolment;
use attache_proxy::tls::TlsMaterial;
use attache_tests::mesh::{self, TestControlPlane};
use attache_tests::proxy::{self, TestProxy};
use attache_tests::wait::secs;
use attache_tests::{eventually, with_timeout, TempDir};

use super::{among_others, api_backends, routed, routing, sidecar, sidecars};

const WEB: &str = "spiffe://example.org/ns/default/sa/web";

async fn mtls_mesh(lifetime: Duration, v1: std::net::SocketAddr, v2: std::net::SocketAddr) -> TestControlPlane {
    mesh::control_plane()
        .file("routing.yaml", routing(v1, v2, "api-v1"))
        .file("sidecars.yaml", sidecars(&[("web", &["api"])]))
        .mtls(lifetime)
        .run()
        .await
}

async fn enrolled(cp: &TestControlPlane, instance: &str, state: &TempDir) -> TestProxy {
    let source = cp.enrolled("web", instance, &state.path().join(instance));
    proxy::new().follow_source(source).run().await
}

fn identity(state: &TempDir, instance: &str) -> TlsMaterial {
    let dir = state.path().join(instance).join("identity");
    TlsMaterial::load(dir.join("cert.pem"), dir.join("key.pem"), dir.join("bundle.pem"))
        .expect("the workload certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sidecars_enrol_with_the_bootstrap_token_and_follow_over_mtls() {
    let _shared = among_others().await;
    let (v1, v2) = api_backends().await;
    let cp = mtls_mesh(Duration::from_secs(3600), v1.addr(), v2.addr()).await;
    let state = TempDir::new("attache-cp-identity");
    let web = [enrolled(&cp, "web-0", &state).await, enrolled(&cp, "web-1", &state).await];
    let version = cp.version().await;
    let view = cp.await_acked(2, version, secs(10)).await;
    for (i, proxy) in web.iter().enumerate() {
        let instance = format!("web-{i}");
        assert_eq!(identity(&state, &instance).identity.as_str(), WEB, "the identity the control plane decided");
        assert!(sidecar(&view, &instance).connected);
        assert_eq!(routed(proxy, "api").await, "api-v1");
    }
    // The CLI as the admin, over mTLS.
    let text = cp_cli::status(&cp.api()).await.unwrap();
    assert_eq!(text.matches("up to date (ACK)").count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_token_a_sidecar_gets_no_certificate() {
    let _shared = among_others().await;
    let (v1, v2) = api_backends().await;
    let cp = mtls_mesh(Duration::from_secs(3600), v1.addr(), v2.addr()).await;
    let state = TempDir::new("attache-cp-identity");
    let node = Node { service: "web".into(), instance: "web-0".into(), namespace: "default".into() };
    let enrolment = |token: Option<&str>| Enrolment {
        addrs: vec![cp.addr().to_string()],
        node: node.clone(),
        ca_bundle: cp.pki().bundle(),
        token: token.map(str::to_owned),
        dir: state.path().join("identity"),
    };
    let none = enrolment(None).ensure().await.unwrap_err();
    assert!(format!("{none:#}").contains("no bootstrap token"), "{none:#}");
    let wrong = enrolment(Some("not-the-token-at-all")).ensure().await.unwrap_err();
    assert!(format!("{wrong:#}").contains("403"), "{wrong:#}");
    assert!(!state.path().join("identity/cert.pem").exists(), "nothing was issued");
    let issued = enrolment(Some(&cp.pki().token)).ensure().await.unwrap();
    assert_eq!(issued.identity.as_str(), WEB);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_is_only_good_for_its_own_service() {
    let _shared = among_others().await;
    let (v1, v2) = api_backends().await;
    let cp = mtls_mesh(Duration::from_secs(3600), v1.addr(), v2.addr()).await;
    let state = TempDir::new("attache-cp-identity");
    // A `web` certificate (issued by the CA itself) presented by a sidecar that says it is `payments`.
    let web_cert = cp.pki().issue(WEB, "web-identity");
    let dir = state.path().join("payments-0");
    std::fs::create_dir_all(dir.join("identity")).unwrap();
    for f in ["cert.pem", "key.pem", "bundle.pem"] {
        std::fs::copy(web_cert.join(f), dir.join("identity").join(f)).unwrap();
    }
    let source = cp.enrolled("payments", "payments-0", &dir);
    let start = proxy::new().follow_source(source).run();
    let outcome = tokio::time::timeout(secs(3), start).await;
    assert!(outcome.is_err(), "a sidecar claiming another service got a configuration");
    let view = cp.status().await;
    assert!(view.sidecars.iter().all(|s: &SidecarStatus| s.node.service != "payments"), "{view:#?}");
    // Nor can it renew as `payments` with a `web` certificate: ask with the web certificate for payments.
    let node = Node { service: "payments".into(), instance: "payments-0".into(), namespace: "default".into() };
    let renew = Enrolment {
        addrs: vec![cp.addr().to_string()],
        node,
        ca_bundle: cp.pki().bundle(),
        token: None,
        dir: state.path().join("fresh"),
    };
    assert!(renew.ensure().await.is_err(), "no certificate and no token: nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_needs_an_admin_certificate() {
    let _shared = among_others().await;
    let (v1, v2) = api_backends().await;
    let cp = mtls_mesh(Duration::from_secs(3600), v1.addr(), v2.addr()).await;
    let plain = cp_cli::Api { addr: cp.addr().to_string(), tls_dir: None };
    let err = cp_cli::status(&plain).await.unwrap_err();
    assert!(format!("{err:#}").contains("--tls-dir"), "{err:#}");
    let workload = cp_cli::Api { addr: cp.addr().to_string(), tls_dir: Some(cp.pki().issue(WEB, "web-cli")) };
    let err = cp_cli::status(&workload).await.unwrap_err();
    assert!(format!("{err:#}").contains("403"), "a workload identity is not an admin: {err:#}");
    let err = cp_cli::canary_set(&workload, "api", &["api-v2=100".to_owned()]).await.unwrap_err();
    assert!(format!("{err:#}").contains("403"), "{err:#}");
    assert!(cp_cli::status(&cp.api()).await.is_ok(), "the admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn certificates_are_renewed_before_they_expire_and_the_stream_stays_up() {
    let _shared = among_others().await;
    let (v1, v2) = api_backends().await;
    // Renewal is due two thirds in: 4 s after issue.
    let cp = mtls_mesh(Duration::from_secs(6), v1.addr(), v2.addr()).await;
    let state = TempDir::new("attache-cp-identity");
    let web = enrolled(&cp, "web-0", &state).await;
    let first = identity(&state, "web-0");
    let renewed = with_timeout(secs(15), "a renewal", async {
        loop {
            let now = identity(&state, "web-0");
            if now.certs[0] != first.certs[0] {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(renewed.identity, first.identity);
    assert!(renewed.not_after > first.not_after);
    // The config stream was not dropped for it: one connect, still connected, and still serving.
    let metrics = web.metrics().await;
    assert_eq!(metrics.sum("attache_control_plane_connects_total", &[("result", "ok")]), 1.0, "{metrics}");
    eventually(secs(5), || async { cp.status().await.sidecars.iter().all(|s| s.connected) }).await;
    assert_eq!(routed(&web, "api").await, "api-v1");
}
