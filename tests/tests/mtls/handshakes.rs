//! Inbound handshakes as independent TLS stacks see them: curl with a mesh certificate is served; no certificate,
//! plaintext, and certificates that do not verify are refused, each counted under its own reason; TLS 1.0 and 1.1
//! never, 1.2 only when configured; a stalled handshake is cut at `limits.handshake_timeout`.

use attache_tests::pki::{Ca, Workload};
use attache_tests::proxy::{self, TestProxy};
use attache_tests::server::{self, Server};
use attache_tests::wait::{millis, secs};
use attache_tests::{client, eventually, Metrics};
use http::Version;

use super::{api_with_dns, handshakes, https, https_as, inbound, seen_by_app, API, WEB};

/// A strict server-side sidecar whose certificate curl can verify, in front of an echo app.
struct Strict {
    ca: Ca,
    api: Workload,
    app: Server,
    proxy: TestProxy,
}

async fn strict(min_version: &str, limits: &str) -> Strict {
    let ca = Ca::new("example.org mesh");
    let api = api_with_dns(&ca);
    let app = server::auto().name("api").route_prefix("/", server::echo()).run().await;
    let proxy =
        proxy::new().config(inbound(&api, app.addr()).min_version(min_version).limits(limits).build()).run().await;
    Strict { ca, api, app, proxy }
}

/// Waits until the proxy has counted `n` inbound handshake failures for `reason`, and returns the metrics.
async fn refused(proxy: &TestProxy, reason: &str, n: f64) -> Metrics {
    eventually(secs(5), || async {
        let m = proxy.metrics().await;
        (handshakes(&m, "inbound", reason) == n).then_some(m)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_with_a_mesh_certificate_is_served_by_a_strict_listener() {
    let s = strict("1.3", "").await;
    let web = s.ca.workload(WEB);

    let rsp = https_as(s.proxy.inbound(), "/hello", &s.api.bundle(), &web).run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.version, Version::HTTP_2, "curl offered h2 by ALPN and got it");
    let echo = rsp.json();
    assert_eq!(echo["path"], "/hello");
    assert_eq!(seen_by_app(&echo, "x-attache-peer-identity"), [WEB]);

    // HTTP/1.1 by ALPN works too.
    let rsp = https_as(s.proxy.inbound(), "/h1", &s.api.bundle(), &web).http1_1().run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.json()["version"], "HTTP/1.1");
    // Without ALPN the proxy detects HTTP inside TLS.
    let rsp = https_as(s.proxy.inbound(), "/raw", &s.api.bundle(), &web).arg("--no-alpn").run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(seen_by_app(&rsp.json(), "x-attache-peer-identity"), [WEB]);
    assert_eq!(s.app.requests(), 3);
    let m = s.proxy.metrics().await;
    assert_eq!(handshakes(&m, "inbound", "none"), 3.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_strict_listener_refuses_curl_without_a_certificate_and_plaintext() {
    let s = strict("1.3", "").await;

    // curl's own message varies with when it notices (an alert, or a closed socket); the proxy's count does not.
    let res = https(s.proxy.inbound(), "/", &s.api.bundle()).run().await;
    assert!(res.is_err(), "served without a client certificate: {res:?}");
    refused(&s.proxy, "no-certificate", 1.0).await;

    let plain = client::curl().url(format!("http://{}/", s.proxy.inbound())).run().await.unwrap_err();
    // Closed without a response: an empty reply, or a reset since the request was never read.
    let plain = format!("{plain:#}");
    assert!(plain.contains("Empty reply") || plain.contains("reset"), "{plain}");
    let m = refused(&s.proxy, "plaintext", 1.0).await;

    assert_eq!(s.app.requests(), 0, "nothing reached the app");
    assert_eq!(s.app.connections(), 0);
    assert_eq!(handshakes(&m, "inbound", "none"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_that_do_not_verify_are_refused_each_with_its_reason() {
    let s = strict("1.3", "").await;
    let foreign = Ca::new("someone else");
    let cases = [
        ("untrusted", foreign.issue(WEB)),
        ("expired", s.ca.leaf().uri(WEB).valid((2020, 1, 1), (2021, 1, 1)).issue()),
        ("not-yet-valid", s.ca.leaf().uri(WEB).valid((2098, 1, 1), (2099, 1, 1)).issue()),
        ("no-identity", s.ca.leaf().uri(WEB).uri(API).issue()),
        ("no-identity", s.ca.leaf().dns("web.internal").issue()),
    ];
    for (reason, leaf) in cases {
        let before = handshakes(&s.proxy.metrics().await, "inbound", reason);
        let caller = s.ca.workload_with(leaf.clone());
        let res = https_as(s.proxy.inbound(), "/", &s.api.bundle(), &caller).run().await;
        assert!(res.is_err(), "{reason} ({:?}) was served: {res:?}", leaf.uris());
        refused(&s.proxy, reason, before + 1.0).await;
    }
    assert_eq!(s.app.requests(), 0, "nothing reached the app");
    let m = s.proxy.metrics().await;
    assert_eq!(handshakes(&m, "inbound", "none"), 0.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_1_0_and_1_1_are_never_accepted_and_1_2_only_when_configured() {
    let s = strict("1.3", "").await;
    let web = s.ca.workload(WEB);
    for (i, version) in ["-tls1", "-tls1_1", "-tls1_2"].into_iter().enumerate() {
        let hs = client::s_client(s.proxy.inbound()).cert(&web.cert(), &web.key()).only(version).run().await.unwrap();
        assert!(!hs.completed, "{version} was accepted by default:\n{}", hs.output);
        // The refusal is the proxy's: it saw the ClientHello and counted it.
        refused(&s.proxy, "incompatible", i as f64 + 1.0).await;
    }
    let hs = client::s_client(s.proxy.inbound()).cert(&web.cert(), &web.key()).only("-tls1_3").run().await.unwrap();
    assert!(hs.completed, "{}", hs.output);
    assert_eq!(hs.protocol(), Some("TLSv1.3"), "{}", hs.output);

    let s = strict("1.2", "").await;
    let web = s.ca.workload(WEB);
    let hs = client::s_client(s.proxy.inbound()).cert(&web.cert(), &web.key()).only("-tls1_2").run().await.unwrap();
    assert!(hs.completed, "min_version 1.2 accepts TLS 1.2:\n{}", hs.output);
    assert_eq!(hs.protocol(), Some("TLSv1.2"), "{}", hs.output);
    for (i, version) in ["-tls1", "-tls1_1"].into_iter().enumerate() {
        let hs = client::s_client(s.proxy.inbound()).cert(&web.cert(), &web.key()).only(version).run().await.unwrap();
        assert!(!hs.completed, "{version} was accepted with min_version 1.2:\n{}", hs.output);
        refused(&s.proxy, "incompatible", i as f64 + 1.0).await;
    }
    // And requests are served over TLS 1.2.
    let rsp = https_as(s.proxy.inbound(), "/", &s.api.bundle(), &web).arg("--tls-max").arg("1.2").run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(seen_by_app(&rsp.json(), "x-attache-peer-identity"), [WEB]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_handshake_is_cut_at_the_handshake_timeout() {
    let s = strict("1.3", "handshake_timeout: 300ms").await;

    let started = tokio::time::Instant::now();
    let mut conn = client::raw_tcp(s.proxy.inbound()).await.unwrap();
    // The start of a TLS record, then silence.
    conn.write_all(b"\x16\x03\x01\x00").await.unwrap();
    // The proxy closes (EOF or reset) without answering.
    if let Ok(answer) = conn.read_to_end().await {
        assert!(answer.is_empty(), "the proxy answered a partial ClientHello: {answer:?}");
    }
    let waited = started.elapsed();
    assert!(waited >= millis(290), "closed after {waited:?}, before the 300ms handshake timeout");
    assert!(waited < secs(3), "closed only after {waited:?}");
    refused(&s.proxy, "timeout", 1.0).await;
    assert_eq!(s.app.connections(), 0);
}
