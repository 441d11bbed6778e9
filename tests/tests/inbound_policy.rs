//! What the inbound pipeline's policy (authorization, header hygiene, rate limits) cannot be slipped past: HTTP sent
//! only after the detect timeout is refused instead of forwarded as raw TCP, empty lines before a request line are
//! still HTTP, and a listener replaced by a reload finishes its keep-alive connections and, when its TLS or
//! authorization changed, cuts its TCP tunnels.

use std::net::SocketAddr;

use attache_tests::wait::{millis, secs};
use attache_tests::{client, eventually, proxy, server, with_timeout};

/// Listener `inbound` (detect) in front of `app`; `extra` is appended to the listener's flow mapping.
fn inbound(app: SocketAddr, extra: &str) -> String {
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ detect_timeout: 200ms }}\nlisteners:\n  - {{ name: inbound, \
         address: \"127.0.0.1:0\", direction: inbound, app: \"{app}\"{extra} }}\n"
    )
}

const FORGED: &str =
    "GET /admin HTTP/1.1\r\nHost: app\r\nx-attache-peer-identity: spiffe://example.org/ns/ops/sa/root\r\n\r\n";

#[tokio::test]
async fn http_sent_only_after_the_detect_timeout_never_reaches_the_app() {
    let app = server::http1().route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(inbound(app.addr(), "")).run().await;
    let mut conn = client::raw_tcp(proxy.inbound()).await.unwrap();
    // Silent past the detect timeout, the connection is taken for a server-speaks-first protocol...
    tokio::time::sleep(millis(400)).await;
    // ...so HTTP now would reach the app raw, forged identity header and all: it is refused instead.
    conn.write_all(FORGED).await.unwrap();
    let rest = with_timeout(secs(5), "the connection to close", conn.read_to_end()).await;
    assert!(rest.map_or(true, |b| b.is_empty()), "the client got an answer");
    assert_eq!(app.requests(), 0, "the app saw the request");

    // Sent at once, the same request goes through the HTTP pipeline, which drops the forged header.
    let mut conn = client::raw_tcp(proxy.inbound()).await.unwrap();
    conn.write_all(FORGED).await.unwrap();
    let rsp = conn.read_response().await.unwrap();
    assert_eq!(rsp.status, 200);
    let seen = app.last_request().unwrap();
    assert!(!seen.headers.contains_key("x-attache-peer-identity"), "{:?}", seen.headers);
}

#[tokio::test]
async fn a_server_speaks_first_app_is_still_reached_after_silence() {
    let app = server::tcp_banner("220 ready\r\n").run().await;
    let proxy = proxy::new().config(inbound(app.addr(), "")).run().await;
    let mut conn = client::raw_tcp(proxy.inbound()).await.unwrap();
    assert_eq!(&conn.read_until(b"\n").await.unwrap()[..], b"220 ready\r\n");
    conn.write_all("EHLO client.example\r\n").await.unwrap();
    assert_eq!(&conn.read_until(b"\n").await.unwrap()[..], b"EHLO client.example\r\n");
}

#[tokio::test]
async fn empty_lines_before_a_request_line_are_still_http() {
    let app = server::http1().route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(inbound(app.addr(), "")).run().await;
    let mut conn = client::raw_tcp(proxy.inbound()).await.unwrap();
    conn.write_all(format!("\r\n\r\n{FORGED}")).await.unwrap();
    let rsp = conn.read_response().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let seen = app.last_request().unwrap();
    assert!(!seen.headers.contains_key("x-attache-peer-identity"), "{:?}", seen.headers);
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.sum("attache_connections_total", &[("protocol", "tcp")]), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_authorization_cuts_tunnels_an_unrelated_change_keeps() {
    let app = server::tcp_echo().run().await;
    let proxy = proxy::new().config(inbound(app.addr(), "")).run().await;
    let mut tunnel = client::raw_tcp(proxy.inbound()).await.unwrap();
    tunnel.write_all("one\n").await.unwrap();
    assert_eq!(&tunnel.read_until(b"\n").await.unwrap()[..], b"one\n");

    // A rate limit is HTTP-only: the tunnel admitted before it carries on.
    proxy.write_config(&inbound(app.addr(), ", rate_limit: { requests_per_second: 5 }"));
    eventually(secs(5), || async { proxy.config_view().await["version"] == 2 }).await;
    tunnel.write_all("two\n").await.unwrap();
    assert_eq!(&tunnel.read_until(b"\n").await.unwrap()[..], b"two\n");

    // Who may connect changed: what admitted the tunnel may no longer, so it is cut.
    let deny =
        ", rate_limit: { requests_per_second: 5 }, authorization: { allow: [\"spiffe://example.org/ns/x/sa/y\"] }";
    proxy.write_config(&inbound(app.addr(), deny));
    let rest = with_timeout(secs(5), "the tunnel to be cut", tunnel.read_to_end()).await;
    assert!(rest.map_or(true, |b| b.is_empty()), "the tunnel kept carrying bytes");
    // A new unauthenticated connection is denied by the new policy.
    let mut fresh = client::raw_tcp(proxy.inbound()).await.unwrap();
    fresh.write_all("three\n").await.unwrap();
    let rest = with_timeout(secs(5), "the denied connection to close", fresh.read_to_end()).await;
    assert!(rest.map_or(true, |b| b.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_listener_answers_its_keep_alive_connections_once_more_then_closes_them() {
    let app = server::http1().route_prefix("/", server::ok("app")).run().await;
    let proxy = proxy::new().config(inbound(app.addr(), "")).run().await;
    let c = client::http1(proxy.inbound());
    let first = c.get("app", "/").await.unwrap();
    assert_eq!((first.status.as_u16(), first.headers.get("connection")), (200, None));

    proxy.write_config(&inbound(app.addr(), ", rate_limit: { requests_per_second: 100 }"));
    eventually(secs(5), || async { proxy.config_view().await["version"] == 2 }).await;
    let last = c.get("app", "/").await.unwrap();
    assert_eq!(last.status, 200, "the request already on its way is served");
    assert_eq!(last.headers.get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
    // The client learns of the close when it comes; a new connection serves the new config.
    let next = client::http1(proxy.inbound()).get("app", "/").await.unwrap();
    assert_eq!(next.status, 200);
}
