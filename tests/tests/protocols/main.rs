//! Protocols: h2c and HTTP/1.1 downstream against HTTP/1.1, HTTP/2 and auto upstreams, keep-alive pooling, HTTP/2
//! multiplexing, WebSocket upgrades, inbound HTTP, HTTP-only listeners and the
//! metrics all of that leaves behind.

use std::net::SocketAddr;
use std::sync::Arc;

use attache_tests::client::{self};
use attache_tests::wait::secs;
use attache_tests::{eventually, proxy, server, with_timeout};
use bytes::Bytes;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::sync::Barrier;

/// One outbound listener and one service `web` (hosts `web`, `web.local`) whose only route `default` goes to the
/// backend `web` at `endpoint`, spoken to with `protocol` (`http1`, `http2` or `auto`).
fn outbound_config(endpoint: SocketAddr, protocol: &str) -> String {
    attache_tests::yaml::one_backend("web", &[endpoint]).host("web.local").protocol(protocol).build()
}

/// `curl [--http2-prior-knowledge] -H 'Host: web.local' http://<outbound><path>`.
async fn curl_web(proxy: SocketAddr, path: &str, h2: bool) -> attache_tests::TestResponse {
    let mut curl = client::curl().url(format!("http://{proxy}{path}")).header("Host", "web.local");
    if h2 {
        curl = curl.http2_prior_knowledge();
    } else {
        curl = curl.http1_1();
    }
    curl.run().await.unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Downstream and upstream versions.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn h2c_client_reaches_an_http1_only_upstream_with_protocol_http1() {
    let backend = server::http1().name("h1-only").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "http1")).run().await;

    let rsp = curl_web(proxy.outbound(), "/versions?x=1", true).await;

    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.version, Version::HTTP_2, "curl spoke h2c to the proxy");
    assert_eq!(rsp.header("x-server-name"), Some("h1-only"));
    let echo = rsp.json();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["path"], "/versions?x=1");
    assert_eq!(echo["headers"]["host"][0], "web.local", "the :authority becomes Host upstream");
    assert_eq!(backend.versions(), vec![Version::HTTP_11]);
}

#[tokio::test]
async fn h2c_client_reaches_an_http2_only_upstream_with_protocol_http2() {
    let backend = server::http2().name("h2-only").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "http2")).run().await;

    let rsp = curl_web(proxy.outbound(), "/h2", true).await;

    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.version, Version::HTTP_2);
    assert_eq!(rsp.header("x-server-name"), Some("h2-only"));
    assert_eq!(rsp.json()["version"], "HTTP/2.0");
    assert_eq!(backend.versions(), vec![Version::HTTP_2]);
}

#[tokio::test]
async fn http1_client_reaches_an_http2_only_upstream_with_protocol_http2() {
    let backend = server::http2().name("h2-only").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "http2")).run().await;

    let rsp = curl_web(proxy.outbound(), "/h1-to-h2", false).await;

    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.version, Version::HTTP_11, "the client keeps its own version");
    assert_eq!(rsp.json()["version"], "HTTP/2.0");
    assert_eq!(backend.versions(), vec![Version::HTTP_2]);
}

#[tokio::test]
async fn auto_upstream_protocol_follows_the_client_version() {
    let backend = server::auto().name("both").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "auto")).run().await;

    let h2 = curl_web(proxy.outbound(), "/as-h2", true).await;
    assert_eq!(h2.status, 200, "{}", h2.text());
    assert_eq!(h2.version, Version::HTTP_2);
    assert_eq!(h2.json()["version"], "HTTP/2.0");
    assert_eq!(backend.versions(), vec![Version::HTTP_2]);

    let h1 = curl_web(proxy.outbound(), "/as-h1", false).await;
    assert_eq!(h1.status, 200, "{}", h1.text());
    assert_eq!(h1.version, Version::HTTP_11);
    assert_eq!(h1.json()["version"], "HTTP/1.1");
    assert_eq!(backend.versions(), vec![Version::HTTP_2, Version::HTTP_11]);
}

// ---------------------------------------------------------------------------------------------------------------
// 2. and 3. Connection reuse.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn http1_keep_alive_reuses_one_upstream_connection() {
    let backend = server::http1().name("pooled").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "auto")).run().await;
    let client = client::http1(proxy.outbound());

    for i in 0..25 {
        let rsp = client.post("web.local", &format!("/item/{i}"), format!("body {i}")).await.unwrap();
        assert_eq!(rsp.status, 200, "request {i}: {}", rsp.text());
        let echo = rsp.json();
        assert_eq!(echo["body"], format!("body {i}"));
        assert_eq!(echo["version"], "HTTP/1.1");
    }

    assert_eq!(client.connections_opened(), 1, "the client kept one connection to the proxy");
    assert_eq!(backend.requests(), 25);
    assert_eq!(backend.connections(), 1, "sequential requests reuse one pooled upstream connection");
}

#[tokio::test]
async fn http2_multiplexes_twenty_concurrent_requests_on_one_connection() {
    const N: usize = 20;
    // Every handler waits until all N requests are in flight at the upstream, so this only completes if the proxy
    // carries them concurrently, on the client side and the upstream side.
    let barrier = Arc::new(Barrier::new(N));
    let backend = server::http2()
        .name("mux")
        .route_prefix("/stream/", move |req: Request<Incoming>| {
            let barrier = barrier.clone();
            async move {
                barrier.wait().await;
                Response::new(attache_tests::full(req.uri().path().to_owned()))
            }
        })
        .run()
        .await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "auto")).run().await;
    let client = client::http2(proxy.outbound());

    let calls = (0..N).map(|i| {
        let client = &client;
        async move { (i, client.get("web.local", &format!("/stream/{i}")).await) }
    });
    let results = with_timeout(secs(15), "20 concurrent h2 requests", futures_util::future::join_all(calls)).await;

    for (i, rsp) in results {
        let rsp = rsp.unwrap_or_else(|e| panic!("request {i}: {e:#}"));
        assert_eq!(rsp.status, 200, "request {i}: {}", rsp.text());
        assert_eq!(rsp.version, Version::HTTP_2);
        assert_eq!(rsp.text(), format!("/stream/{i}"));
    }
    assert_eq!(client.connections_opened(), 1, "all requests shared one client connection");
    assert_eq!(backend.requests(), N);
    assert_eq!(backend.versions(), vec![Version::HTTP_2]);
    assert_eq!(backend.connections(), 1, "the proxy multiplexed them on one upstream h2 connection");
}

// ---------------------------------------------------------------------------------------------------------------
// 6. WebSocket upgrade.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn websocket_upgrade_passes_through_and_echoes_both_ways() {
    let ws = server::websocket_echo().run().await;
    let proxy = proxy::new()
        .config(format!(
            r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound }}
services:
  - name: chat
    hosts: [ws-host]
    routes:
      - name: default
        backends: [{{ name: chat }}]
backends:
  - {{ name: chat, endpoints: ["{}"] }}
"#,
            ws.addr()
        ))
        .run()
        .await;

    // `client::websocket` checks the 101, `Upgrade: websocket` and the `Sec-WebSocket-Accept`.
    let mut conn = client::websocket(proxy.outbound(), "ws-host", "/chat").await.unwrap();
    conn.write_all(b"hello through the proxy").await.unwrap();
    assert_eq!(&conn.read_exact(23).await.unwrap()[..], b"hello through the proxy");
    conn.write_all(b"\x81\x05again").await.unwrap();
    assert_eq!(&conn.read_exact(7).await.unwrap()[..], b"\x81\x05again");
    assert_eq!(ws.upgrades(), 1);

    // Half-close travels through the splice: the echo server sees EOF and closes its side.
    conn.shutdown_write().await.unwrap();
    assert_eq!(conn.read_to_end().await.unwrap(), Bytes::new());
}

// ---------------------------------------------------------------------------------------------------------------
// 8. Inbound HTTP.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn inbound_http_reaches_the_app_and_is_counted_as_inbound() {
    let app = server::auto().name("app").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new()
        .config(format!(
            r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: inbound, address: "127.0.0.1:0", direction: inbound, app: "{}" }}
"#,
            app.addr()
        ))
        .run()
        .await;

    let h1 = client::http1(proxy.inbound()).get("my-app.example", "/hello?who=world").await.unwrap();
    assert_eq!(h1.status, 200, "{}", h1.text());
    assert_eq!(h1.header("x-server-name"), Some("app"));
    let echo = h1.json();
    assert_eq!(echo["path"], "/hello?who=world");
    assert_eq!(echo["headers"]["host"][0], "my-app.example", "the caller's Host reaches the app");
    assert_eq!(echo["version"], "HTTP/1.1");

    let h2 =
        client::curl().http2_prior_knowledge().url(format!("http://{}/over-h2", proxy.inbound())).run().await.unwrap();
    assert_eq!(h2.status, 200, "{}", h2.text());
    assert_eq!(h2.version, Version::HTTP_2);
    assert_eq!(h2.json()["version"], "HTTP/2.0", "inbound upstream protocol follows the caller");
    assert_eq!(app.requests(), 2);

    let metrics = proxy.metrics().await;
    let inbound = metrics.sum("attache_requests_total", &[("direction", "inbound"), ("status_class", "2xx")]);
    assert_eq!(inbound, 2.0, "{metrics}");
    assert_eq!(metrics.sum("attache_requests_total", &[("direction", "outbound")]), 0.0, "{metrics}");
    assert!(
        metrics.value("attache_connections_total", &[("direction", "inbound"), ("protocol", "http1")]) == Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.value("attache_connections_total", &[("direction", "inbound"), ("protocol", "http2")]) == Some(1.0),
        "{metrics}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// 9. HTTP-only listeners.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn http_only_listener_closes_non_http_connections() {
    let backend = server::http1().name("web").route_prefix("/", server::ok("web")).run().await;
    let proxy = proxy::new()
        .config(format!(
            r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound, protocol: http }}
services:
  - name: web
    hosts: [web.local]
    routes:
      - name: default
        backends: [{{ name: web }}]
backends:
  - {{ name: web, endpoints: ["{}"] }}
"#,
            backend.addr()
        ))
        .run()
        .await;

    let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
    conn.write_all(b"\x00\x01binary\r\n\r\n").await.unwrap();
    let rest = conn.read_to_end().await.unwrap();
    assert_eq!(rest, Bytes::new(), "the proxy closes without answering");

    // HTTP still works on the same listener.
    let rsp = curl_web(proxy.outbound(), "/", false).await;
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.text(), "web");
    assert_eq!(backend.requests(), 1, "only the HTTP request reached the backend");
    assert_eq!(backend.connections(), 1, "the binary connection never reached the backend");
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.sum("attache_connections_total", &[("protocol", "tcp")]), 0.0, "{metrics}");
}

mod metrics;
mod streaming;
