//! Authorization by verified identity: allowed callers (exactly or by `/*` prefix) reach the app, which learns who
//! called; others get 403 `forbidden` (HTTP) or a closed connection (TCP) and the app sees nothing; permissive
//! listeners admit plaintext only with `allow_unauthenticated`; a client-sent identity header never reaches the app.

use std::net::SocketAddr;

use attache_tests::pki::{Ca, Workload};
use attache_tests::proxy::{self, TestProxy};
use attache_tests::server;
use attache_tests::wait::secs;
use attache_tests::{client, with_timeout};
use bytes::Bytes;

use super::{api_with_dns, decisions, https, https_as, inbound, mesh, seen_by_app, WEB};

const BATCH_JOB: &str = "spiffe://example.org/ns/batch/sa/job";
const LOOKALIKE: &str = "spiffe://example.org/ns/batchx/sa/job";
const INTRUDER: &str = "spiffe://example.org/ns/default/sa/intruder";
const ROOT: &str = "spiffe://example.org/ns/admin/sa/root";

#[tokio::test(flavor = "multi_thread")]
async fn allowed_identities_reach_the_app_and_others_get_403() {
    let ca = Ca::new("example.org mesh");
    let api = api_with_dns(&ca);
    let app = server::auto().route_prefix("/", server::echo()).run().await;
    let allow = format!(r#"{{ allow: ["{WEB}", "spiffe://example.org/ns/batch/*"] }}"#);
    let proxy = proxy::new().config(inbound(&api, app.addr()).authorization(&allow).build()).run().await;

    for caller in [WEB, BATCH_JOB] {
        let rsp = https_as(proxy.inbound(), "/", &api.bundle(), &ca.workload(caller)).run().await.unwrap();
        assert_eq!(rsp.status, 200, "{caller}: {}", rsp.text());
        assert_eq!(seen_by_app(&rsp.json(), "x-attache-peer-identity"), [caller]);
    }
    assert_eq!(app.requests(), 2);

    // A prefix matches whole path segments: `ns/batchx` is not under `ns/batch/`.
    for caller in [LOOKALIKE, INTRUDER] {
        let rsp = https_as(proxy.inbound(), "/", &api.bundle(), &ca.workload(caller)).run().await.unwrap();
        assert_eq!(rsp.status, 403, "{caller}: {}", rsp.text());
        assert_eq!(rsp.header("x-attache-error"), Some("forbidden"), "{caller}");
    }
    assert_eq!(app.requests(), 2, "denied requests never reached the app");

    let m = proxy.metrics().await;
    assert_eq!(decisions(&m, "inbound", "app", "allowed"), 2.0, "{m}");
    assert_eq!(decisions(&m, "inbound", "app", "denied"), 2.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecar_to_sidecar_requests_are_authorized_by_the_client_sidecars_identity() {
    let allowed = mesh(&format!(r#"{{ allow: ["{WEB}"] }}"#)).await;
    let rsp = client::http1(allowed.client_side.outbound()).get("api", "/").await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());

    let denied = mesh(&format!(r#"{{ allow: ["{INTRUDER}"] }}"#)).await;
    let rsp = client::http1(denied.client_side.outbound()).get("api", "/").await.unwrap();
    assert_eq!(rsp.status, 403, "{}", rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("forbidden"));
    assert_eq!(denied.app.requests(), 0);
    let m = denied.server_side.metrics().await;
    assert_eq!(decisions(&m, "inbound", "app", "denied"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_tcp_connection_is_closed_before_it_reaches_the_app() {
    let mesh = mesh(&format!(r#"{{ allow: ["{INTRUDER}"] }}"#)).await;

    let mut conn = client::raw_tcp(mesh.client_side.listener("outbound-tcp")).await.unwrap();
    // Lower-case, so no sniffing takes it for an HTTP method.
    let _ = conn.write_all(b"hello, db").await;
    // The connection ends (EOF or reset) with nothing echoed.
    let echoed = with_timeout(secs(10), "the denied connection to end", conn.read_to_end()).await;
    if let Ok(echoed) = echoed {
        assert_eq!(echoed, Bytes::new(), "bytes came back from a denied connection");
    }
    assert_eq!(mesh.tcp_app.connections(), 0, "the app never got a connection");
    let m = mesh.server_side.metrics().await;
    assert_eq!(decisions(&m, "inbound-tcp", "tcp", "denied"), 1.0, "{m}");
    assert_eq!(decisions(&m, "inbound-tcp", "tcp", "allowed"), 0.0, "{m}");

    // An allowed identity gets through the same way.
    let open = super::mesh(&format!(r#"{{ allow: ["{WEB}"] }}"#)).await;
    let mut conn = client::raw_tcp(open.client_side.listener("outbound-tcp")).await.unwrap();
    conn.write_all(b"hello, db").await.unwrap();
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_to_end().await.unwrap()[..], b"hello, dbEOF 9\n");
    let m = open.server_side.metrics().await;
    assert_eq!(decisions(&m, "inbound-tcp", "tcp", "allowed"), 1.0, "{m}");
}

/// A permissive sidecar with listener `inbound` (mesh callers only) and `open` (also unauthenticated callers).
async fn permissive(ca: &Ca, app: SocketAddr) -> (Workload, TestProxy) {
    let api = api_with_dns(ca);
    let cfg = inbound(&api, app)
        .mode("permissive")
        .authorization(&format!(r#"{{ allow: ["{WEB}"] }}"#))
        .listener("open", &format!(r#"{{ allow: ["{WEB}"], allow_unauthenticated: true }}"#));
    let proxy = proxy::new().config(cfg.build()).run().await;
    (api, proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permissive_listener_admits_plaintext_only_with_allow_unauthenticated() {
    let ca = Ca::new("example.org mesh");
    let app = server::auto().route_prefix("/", server::echo()).run().await;
    let (api, proxy) = permissive(&ca, app.addr()).await;
    let plaintext = |listener: &str| client::curl().url(format!("http://{}/", proxy.listener(listener)));

    let rsp = plaintext("open").run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert!(seen_by_app(&rsp.json(), "x-attache-peer-identity").is_empty(), "no identity for plaintext");
    // TLS without a client certificate is unauthenticated too.
    let rsp = https(proxy.listener("open"), "/", &api.bundle()).run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert!(seen_by_app(&rsp.json(), "x-attache-peer-identity").is_empty());
    assert_eq!(app.requests(), 2);

    let rsp = plaintext("inbound").run().await.unwrap();
    assert_eq!(rsp.status, 403, "{}", rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("forbidden"));
    assert_eq!(app.requests(), 2, "the unauthenticated request did not reach the app");

    let rsp = https_as(proxy.inbound(), "/", &api.bundle(), &ca.workload(WEB)).run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(seen_by_app(&rsp.json(), "x-attache-peer-identity"), [WEB]);

    let m = proxy.metrics().await;
    assert_eq!(decisions(&m, "open", "app", "allowed"), 2.0, "{m}");
    assert_eq!(decisions(&m, "inbound", "app", "denied"), 1.0, "{m}");
    assert_eq!(decisions(&m, "inbound", "app", "allowed"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spoofed_identity_header_never_reaches_the_app() {
    // Through both sidecars: the app sees the client sidecar's verified identity, once.
    let mesh = mesh("").await;
    let req = http::Request::get("/")
        .header("host", "api")
        .header("x-attache-peer-identity", ROOT)
        .header("x-attache-anything", "spoofed")
        .body(attache_tests::empty())
        .unwrap();
    let rsp = client::http1(mesh.client_side.outbound()).request(req).await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let echo = rsp.json();
    assert_eq!(seen_by_app(&echo, "x-attache-peer-identity"), [WEB]);
    assert!(seen_by_app(&echo, "x-attache-anything").is_empty(), "{echo}");

    // Directly, with a client certificate: the verified one wins.
    let ca = Ca::new("example.org mesh");
    let app = server::auto().route_prefix("/", server::echo()).run().await;
    let (api, proxy) = permissive(&ca, app.addr()).await;
    let web = ca.workload(WEB);
    let spoofed = https_as(proxy.inbound(), "/", &api.bundle(), &web).header("x-attache-peer-identity", ROOT);
    let rsp = spoofed.run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(seen_by_app(&rsp.json(), "x-attache-peer-identity"), [WEB]);

    // Unauthenticated: no identity at all, not the claimed one.
    let plain =
        client::curl().url(format!("http://{}/", proxy.listener("open"))).header("x-attache-peer-identity", ROOT);
    let rsp = plain.run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert!(seen_by_app(&rsp.json(), "x-attache-peer-identity").is_empty(), "{}", rsp.text());
}
