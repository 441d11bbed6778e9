//! Idle bounds: a connection whose response stalls, and an upgraded (WebSocket) tunnel left silent, are closed by
//! the proxy after `limits.idle_timeout` instead of being held forever.

use std::time::Duration;

use attache_tests::wait::{millis, secs};
use attache_tests::{client, eventually, proxy, server, with_timeout, BoxError};
use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

/// Short, so the tests are quick; the assertions allow many idle periods.
const IDLE: &str = "idle_timeout: 300ms";
/// Far more than the proxy needs (two idle periods), far less than forever.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn stalled_response_body_is_closed_after_the_idle_timeout() {
    // Headers and one chunk, then nothing, ever.
    let backend = server::http1()
        .route("/stall", |_req| async {
            let first = futures_util::stream::once(async { Ok::<_, BoxError>(Frame::data(Bytes::from("first\n"))) });
            let stream = futures_util::stream::StreamExt::chain(first, futures_util::stream::pending());
            Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)))
        })
        .run()
        .await;
    let yaml = attache_tests::yaml::one_backend("svc", &[backend.addr()]).limits(IDLE);
    let proxy = proxy::new().config(yaml).run().await;

    let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
    conn.write_all("GET /stall HTTP/1.1\r\nHost: svc\r\n\r\n").await.unwrap();
    let head = conn.read_response_head().await.unwrap();
    assert_eq!(head.status, 200, "{:?}", head.headers);
    assert_eq!(&conn.read_until(b"first\n").await.unwrap()[..], b"6\r\nfirst\n", "the first chunk arrives");

    let rest = closed_after_idle(&mut conn, "a stalled response").await;
    // Never the terminating chunk: the response was cut, not completed.
    assert!(!rest.ends_with(b"0\r\n\r\n"), "the stalled body was completed: {:?}", String::from_utf8_lossy(&rest));
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn silent_websocket_tunnel_is_closed_after_the_idle_timeout_and_counted_while_open() {
    let ws = server::websocket_echo().run().await;
    let yaml = attache_tests::yaml::one_backend("chat", &[ws.addr()]).limits(IDLE);
    let proxy = proxy::new().config(yaml).run().await;

    let mut conn = client::websocket(proxy.outbound(), "chat", "/ws").await.unwrap();
    conn.write_all(b"ping").await.unwrap();
    assert_eq!(&conn.read_exact(4).await.unwrap()[..], b"ping");
    let open = proxy.metrics().await.sum("attache_open_connections", &[("listener", "outbound")]);
    assert!(open >= 1.0, "an open tunnel is not an open connection: attache_open_connections = {open}");
    assert_eq!(ws.upgrades(), 1);

    // Silence: the proxy closes the tunnel.
    let rest = closed_after_idle(&mut conn, "a silent tunnel").await;
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");

    eventually(secs(5), || async {
        proxy.metrics().await.sum("attache_open_connections", &[("listener", "outbound")]) == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_request_head_trickled_in_is_cut_off_after_the_idle_timeout() {
    let backend = server::http1().run().await;
    let yaml = attache_tests::yaml::one_backend("svc", &[backend.addr()]).limits(IDLE);
    let proxy = proxy::new().config(yaml).run().await;

    let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
    conn.write_all("GET / HTTP/1.1\r\nHost: svc\r\nX-Slow: ").await.unwrap();
    let started = tokio::time::Instant::now();
    // One byte every 100 ms: never idle for an idle period, never a whole head (slowloris).
    let closed = loop {
        assert!(started.elapsed() < CLOSE_BOUND, "a head trickled in for {CLOSE_BOUND:?} was not cut off");
        if conn.write_all("a").await.is_err() {
            break Ok(Bytes::new());
        }
        if let Ok(read) = tokio::time::timeout(millis(100), conn.read_some()).await {
            break read;
        }
    };
    let elapsed = started.elapsed();
    // EOF, or a reset for the bytes written after the proxy closed: no response either way.
    assert!(closed.as_ref().map_or(true, Bytes::is_empty), "a response to half a head: {closed:?}");
    assert!(elapsed >= millis(250), "cut off before the idle timeout: {elapsed:?}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let backend = server::http1().route("/", server::ok("ok")).run().await;
    let yaml = attache_tests::yaml::one_backend("svc", &[backend.addr()]).limits(IDLE);
    let proxy = proxy::new().config(yaml).run().await;

    let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
    conn.write_all("GET / HTTP/1.1\r\nHost: svc\r\n\r\n").await.unwrap();
    let rsp = conn.read_response().await.unwrap();
    assert_eq!((rsp.status, rsp.text()), (200, "ok".to_owned()), "{:?}", rsp.headers);
    let rest = closed_after_idle(&mut conn, "an idle keep-alive connection").await;
    assert!(rest.is_empty(), "unexpected bytes: {rest:?}");
}

/// Reads `conn` until the proxy closes it, which must come after an idle period and within `CLOSE_BOUND`; the
/// bytes read on the way.
async fn closed_after_idle(conn: &mut client::RawConn, what: &str) -> Bytes {
    let started = tokio::time::Instant::now();
    conn.set_timeout(CLOSE_BOUND);
    let rest = with_timeout(CLOSE_BOUND + secs(1), what, conn.read_to_end())
        .await
        .unwrap_or_else(|e| panic!("{what} was not closed within {CLOSE_BOUND:?}: {e:#}"));
    let elapsed = started.elapsed();
    assert!(elapsed >= millis(250), "{what} was closed before an idle period passed: {elapsed:?}");
    rest
}
