//! Sidecar to sidecar: HTTP/1.1, h2 and opaque TCP cross two sidecars over mTLS, the app learns the caller's
//! verified identity, and a server that cannot prove the expected identity never sees a request.

use attache_tests::pki::Ca;
use attache_tests::wait::secs;
use attache_tests::{client, eventually, proxy, server, AbortOnDrop};
use http::Version;

use super::{handshakes, inbound, mesh, outbound, seen_by_app, API, WEB};

const PAYMENTS: &str = "spiffe://example.org/ns/default/sa/payments";

#[tokio::test(flavor = "multi_thread")]
async fn http1_crosses_two_sidecars_over_mtls_and_the_app_learns_the_caller() {
    let mesh = mesh("").await;

    let rsp = client::http1(mesh.client_side.outbound()).post("api", "/orders", "order #1").await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let echo = rsp.json();
    assert_eq!(echo["body"], "order #1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(seen_by_app(&echo, "x-attache-peer-identity"), [WEB]);
    assert_eq!(mesh.app.requests(), 1);

    // The hop between the sidecars was mTLS, verified on both ends.
    let client_side = mesh.client_side.metrics().await;
    assert_eq!(handshakes(&client_side, "outbound", "none"), 1.0, "{client_side}");
    let server_side = mesh.server_side.metrics().await;
    assert_eq!(handshakes(&server_side, "inbound", "none"), 1.0, "{server_side}");
    let h1 = [("listener", "inbound"), ("protocol", "http1")];
    assert_eq!(server_side.sum("attache_connections_total", &h1), 1.0, "{server_side}");
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_from_the_client_travels_as_h2_over_mtls() {
    let mesh = mesh("").await;

    let rsp = client::curl()
        .http2_prior_knowledge()
        .url(format!("http://{}/h2?x=1", mesh.client_side.outbound()))
        .header("Host", "api")
        .run()
        .await
        .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.version, Version::HTTP_2);
    let echo = rsp.json();
    assert_eq!(echo["path"], "/h2?x=1");
    assert_eq!(echo["version"], "HTTP/2.0", "h2 all the way to the app");
    assert_eq!(seen_by_app(&echo, "x-attache-peer-identity"), [WEB]);

    // ALPN chose h2 on the mTLS hop.
    let server_side = mesh.server_side.metrics().await;
    let h2 = [("listener", "inbound"), ("protocol", "http2")];
    assert_eq!(server_side.sum("attache_connections_total", &h2), 1.0, "{server_side}");
    assert_eq!(handshakes(&server_side, "inbound", "none"), 1.0, "{server_side}");
}

#[tokio::test(flavor = "multi_thread")]
async fn opaque_tcp_crosses_two_sidecars_over_mtls() {
    let mesh = mesh("").await;

    let mut conn = client::raw_tcp(mesh.client_side.listener("outbound-tcp")).await.unwrap();
    conn.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(&conn.read_exact(6).await.unwrap()[..], b"PING\r\n");
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_to_end().await.unwrap()[..], b"EOF 6\n", "half-close crosses both sidecars");

    assert_eq!(mesh.tcp_app.connections(), 1);
    assert_eq!(mesh.tcp_app.half_closes(), 1);
    assert_eq!(mesh.app.requests(), 0);
    let client_side = mesh.client_side.metrics().await;
    assert_eq!(handshakes(&client_side, "outbound", "none"), 1.0, "{client_side}");
    // Without ALPN the server side detected opaque TCP inside TLS.
    let server_side = mesh.server_side.metrics().await;
    assert_eq!(handshakes(&server_side, "inbound", "none"), 1.0, "{server_side}");
    let tcp = [("listener", "inbound-tcp"), ("protocol", "tcp")];
    assert_eq!(server_side.sum("attache_connections_total", &tcp), 1.0, "{server_side}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_first_protocol_crosses_an_opaque_mtls_listener_at_once() {
    let ca = Ca::new("example.org mesh");
    let (web, api) = (ca.workload(WEB), ca.workload(API));
    let app = server::http1().route("/", server::ok("unused")).run().await;
    let banner = server::tcp_banner("220 smtp.api ready\r\n").run().await;
    // A detect timeout far longer than the client waits: inside TLS, an opaque listener must not sniff.
    let cfg = inbound(&api, app.addr()).tcp_app(banner.addr()).tcp_protocol("opaque").limits("detect_timeout: 60s");
    let server_side = proxy::new().config(cfg.build()).run().await;
    let client_cfg = outbound(&web).service("api", API, &[server_side.inbound()]);
    let client_side = proxy::new().config(client_cfg.tcp(API, server_side.listener("inbound-tcp")).build()).run().await;

    let mut conn = client::raw_tcp(client_side.listener("outbound-tcp")).await.unwrap();
    conn.set_timeout(secs(5));
    assert_eq!(&conn.read_until(b"\r\n").await.unwrap()[..], b"220 smtp.api ready\r\n");
    conn.write_all(b"QUIT\r\n").await.unwrap();
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_to_end().await.unwrap()[..], b"QUIT\r\nEOF 6\n");
    let m = server_side.metrics().await;
    assert_eq!(handshakes(&m, "inbound", "none"), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_proving_another_identity_gets_503_and_its_app_sees_nothing() {
    let ca = Ca::new("example.org mesh");
    let (web, api) = (ca.workload(WEB), ca.workload(API));
    let app = server::auto().route_prefix("/", server::echo()).run().await;
    let server_side = proxy::new().config(inbound(&api, app.addr()).build()).run().await;
    // The client side expects `payments` at the address where `api` answers.
    let retry = "retry: { attempts: 3, on: [connect-failure], backoff: { base: 1ms, max: 2ms } }";
    let cfg = outbound(&web).service("payments", PAYMENTS, &[server_side.inbound()]).route(retry);
    let client_side = proxy::new().config(cfg.build()).run().await;

    let rsp = client::http1(client_side.outbound()).get("payments", "/charge").await.unwrap();
    assert_eq!(rsp.status, 503, "{}", rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("connect-failed"));
    assert_eq!(app.requests(), 0, "no request byte reached the impostor's app");
    assert_eq!(app.connections(), 0);

    // A wrong identity is a connect failure: retried, each attempt refused the same way.
    let m = client_side.metrics().await;
    assert_eq!(handshakes(&m, "outbound", "wrong-identity"), 3.0, "{m}");
    assert_eq!(handshakes(&m, "outbound", "none"), 0.0, "{m}");
    let retries = [("service", "payments"), ("reason", "connect-failure")];
    assert_eq!(m.sum("attache_retries_total", &retries), 2.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_that_are_untrusted_or_have_no_single_identity_are_refused() {
    let ca = Ca::new("example.org mesh");
    let other_ca = Ca::new("someone else");
    let web = ca.workload(WEB);
    let cases = [
        ("untrusted", other_ca.workload(API)),
        ("no-identity", ca.workload_with(ca.leaf().uri(API).uri(PAYMENTS).issue())),
        ("no-identity", ca.workload_with(ca.leaf().dns("api.internal").issue())),
    ];
    for (i, (reason, impostor)) in cases.iter().enumerate() {
        let probe = server::mtls_probe(impostor).await;
        let client_side = proxy::new().config(outbound(&web).service("api", API, &[probe.addr()]).build()).run().await;

        let rsp = client::http1(client_side.outbound()).get("api", "/").await.unwrap();
        assert_eq!(rsp.status, 503, "case {i}: {}", rsp.text());
        assert_eq!(rsp.header("x-attache-error"), Some("connect-failed"), "case {i}");
        let m = eventually(secs(5), || async {
            let m = client_side.metrics().await;
            (handshakes(&m, "outbound", reason) >= 1.0).then_some(m)
        })
        .await;
        assert_eq!(handshakes(&m, "outbound", "none"), 0.0, "case {i}: {m}");
        assert!(probe.clients().is_empty(), "case {i}: the impostor completed a handshake: {:?}", probe.clients());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_the_handshake_is_a_connect_timeout() {
    let ca = Ca::new("example.org mesh");
    let web = ca.workload(WEB);
    // Accepts connections and holds them, silent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _silent = AbortOnDrop::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
        }
    });
    let cfg = outbound(&web).service("api", API, &[addr]).limits("connect_timeout: 300ms");
    let client_side = proxy::new().config(cfg.build()).run().await;

    let started = tokio::time::Instant::now();
    let rsp = client::http1(client_side.outbound()).get("api", "/").await.unwrap();
    assert_eq!(rsp.status, 503, "{}", rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("connect-failed"));
    assert!(started.elapsed() < secs(5), "the handshake was bounded by connect_timeout: {:?}", started.elapsed());
    let m = client_side.metrics().await;
    assert_eq!(handshakes(&m, "outbound", "timeout"), 1.0, "{m}");
}
