//! Host handling: the upstream sees the authority a request was routed by, ambiguous or unsupported request targets
//! are refused, fully qualified names match, and client-chosen authorities do not multiply upstream connections.

use std::net::SocketAddr;

use attache_tests::client::{self, RawResponse};
use attache_tests::{proxy, server};
use http::Version;

/// Sends `request` on a new raw connection to `proxy` and reads the response.
async fn raw(proxy: SocketAddr, request: &str) -> RawResponse {
    let mut conn = client::raw_tcp(proxy).await.unwrap();
    conn.write_all(request).await.unwrap();
    conn.read_response().await.unwrap_or_else(|e| panic!("no response to {request:?}: {e:#}"))
}

/// An echo backend named `name` and a proxy sending service `svc` to it.
async fn setup(name: &str) -> (server::Server, proxy::TestProxy) {
    let backend = server::http1().name(name).route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(attache_tests::yaml::one_backend("svc", &[backend.addr()])).run().await;
    (backend, proxy)
}

#[tokio::test]
async fn absolute_form_target_wins_over_host_and_is_the_upstream_host() {
    let (backend, proxy) = setup("svc").await;
    let rsp = raw(proxy.outbound(), "GET http://svc/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n").await;
    assert_eq!(rsp.status, 200, "{} {:?} {}", rsp.reason, rsp.headers, rsp.text());
    assert_eq!(rsp.header("x-server-name"), Some("svc"), "routed by the request target, not Host");
    let echo: serde_json::Value = serde_json::from_slice(&rsp.body).unwrap();
    assert_eq!(echo["headers"]["host"], serde_json::json!(["svc"]), "the upstream Host names the routed authority");
    assert_eq!(echo["path"], "/x?y=1");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn two_host_headers_are_400() {
    let (backend, proxy) = setup("svc").await;
    for hosts in ["Host: svc\r\nHost: other\r\n", "Host: svc\r\nHost: svc\r\n"] {
        let rsp = raw(proxy.outbound(), &format!("GET / HTTP/1.1\r\n{hosts}\r\n")).await;
        assert_eq!(rsp.status, 400, "{hosts:?}: {} {:?} {}", rsp.reason, rsp.headers, rsp.text());
        assert_eq!(rsp.header("x-attache-error"), Some("bad-request"), "{:?}", rsp.headers);
    }
    assert_eq!(backend.requests(), 0, "the backend saw {:?}", backend.recorded());
}

#[tokio::test]
async fn connect_is_501_unsupported() {
    let (backend, proxy) = setup("svc").await;
    let rsp = raw(proxy.outbound(), "CONNECT svc:443 HTTP/1.1\r\nHost: svc:443\r\n\r\n").await;
    assert_eq!(rsp.status, 501, "{} {:?} {}", rsp.reason, rsp.headers, rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("unsupported"), "{:?}", rsp.headers);
    assert_eq!(backend.requests(), 0, "the backend saw {:?}", backend.recorded());
}

#[tokio::test]
async fn fully_qualified_host_with_a_port_routes_to_the_service() {
    let (backend, proxy) = setup("svc").await;
    let port = proxy.outbound().port();
    let client = client::http1(proxy.outbound());
    for host in [format!("svc.:{port}"), "svc.".to_owned(), format!("svc:{port}")] {
        let rsp = client.get(&host, "/").await.unwrap();
        assert_eq!(rsp.status, 200, "Host: {host}: {} {}", rsp.status, rsp.text());
        assert_eq!(rsp.header("x-server-name"), Some("svc"), "Host: {host}");
    }
    assert_eq!(backend.requests(), 3);
}

#[tokio::test]
async fn http1_upstream_connections_do_not_multiply_with_client_host_ports() {
    let backend = server::http1().name("web").route_prefix("/", server::echo()).run().await;
    let proxy =
        proxy::new().config(attache_tests::yaml::one_backend("web", &[backend.addr()]).protocol("http1")).run().await;
    for i in 1..=6 {
        let host = format!("web:{i}");
        // A new client connection per request: only the proxy's pool can reuse anything.
        let rsp = client::http1(proxy.outbound()).get(&host, "/pooled").await.unwrap();
        assert_eq!(rsp.status, 200, "Host: {host}: {}", rsp.text());
        assert_eq!(rsp.json()["headers"]["host"], serde_json::json!([host]), "the upstream sees Host as sent");
    }
    assert_eq!(backend.requests(), 6);
    assert!(backend.connections() <= 2, "6 Host values opened {} upstream connections", backend.connections());
}

#[tokio::test]
async fn http2_upstream_connections_do_not_multiply_with_client_authorities() {
    let backend = server::http2().name("web").route_prefix("/", server::echo()).run().await;
    let proxy =
        proxy::new().config(attache_tests::yaml::one_backend("web", &[backend.addr()]).protocol("http2")).run().await;
    for i in 1..=6 {
        let authority = format!("web:{i}");
        let rsp = client::http2(proxy.outbound()).get(&authority, "/pooled").await.unwrap();
        assert_eq!(rsp.status, 200, ":authority {authority}: {}", rsp.text());
        assert_eq!(rsp.version, Version::HTTP_2);
    }
    let seen: Vec<String> =
        backend.recorded().iter().map(|r| r.uri.authority().map_or(String::new(), |a| a.to_string())).collect();
    let sent: Vec<String> = (1..=6).map(|i| format!("web:{i}")).collect();
    assert_eq!(seen, sent, "the upstream sees each client's :authority");
    assert_eq!(backend.versions(), vec![Version::HTTP_2]);
    assert_eq!(backend.connections(), 1, "6 authorities opened {} upstream h2 connections", backend.connections());
}
