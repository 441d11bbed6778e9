//! Opaque TCP: `opaque` and `detect` listeners forwarding to a `tcp_backend` (outbound) or the app (inbound), with
//! half-close, server-speaks-first protocols and the detect timeout.

use std::net::SocketAddr;

use attache_tests::client;
use attache_tests::wait::{millis, secs};
use attache_tests::{eventually, proxy, server, with_timeout};
use bytes::Bytes;
use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Outbound listeners `opaque` (protocol opaque) and `mixed` (protocol detect), both with `tcp_backend: tcp` at
/// `tcp`; the `mixed` listener routes HTTP for `web.local` to `web`.
fn outbound_tcp_config(tcp: SocketAddr, web: SocketAddr, detect_timeout: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
limits: {{ detect_timeout: {detect_timeout} }}
listeners:
  - {{ name: opaque, address: "127.0.0.1:0", direction: outbound, protocol: opaque, tcp_backend: tcp }}
  - {{ name: mixed, address: "127.0.0.1:0", direction: outbound, protocol: detect, tcp_backend: tcp }}
services:
  - name: web
    hosts: [web.local]
    routes:
      - name: default
        backends: [{{ name: web }}]
backends:
  - {{ name: tcp, endpoints: ["{tcp}"] }}
  - {{ name: web, endpoints: ["{web}"] }}
"#
    )
}

#[tokio::test]
async fn opaque_listener_echoes_bytes_and_propagates_half_close() {
    let echo = server::tcp_echo().run().await;
    let web = server::http1().route_prefix("/", server::ok("web")).run().await;
    let proxy = proxy::new().config(outbound_tcp_config(echo.addr(), web.addr(), "1s")).run().await;

    let mut conn = client::raw_tcp(proxy.listener("opaque")).await.unwrap();
    // Bytes flow before either side closes.
    conn.write_all(b"hello").await.unwrap();
    assert_eq!(&conn.read_exact(5).await.unwrap()[..], b"hello");
    conn.write_all(b", world").await.unwrap();
    assert_eq!(&conn.read_exact(7).await.unwrap()[..], b", world");

    // Half-close: the backend sees EOF, answers with its marker, and closes; we read that, then EOF.
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_until(b"\n").await.unwrap()[..], b"EOF 12\n");
    assert_eq!(conn.read_to_end().await.unwrap(), Bytes::new());

    assert_eq!(echo.connections(), 1);
    assert_eq!(echo.bytes_received(), 12);
    assert_eq!(echo.half_closes(), 1);
    assert_eq!(web.connections(), 0);
}

#[tokio::test]
async fn opaque_listener_carries_a_megabyte_both_ways_under_backpressure() {
    let echo = server::tcp_echo().run().await;
    let web = server::http1().route_prefix("/", server::ok("web")).run().await;
    let proxy = proxy::new().config(outbound_tcp_config(echo.addr(), web.addr(), "1s")).run().await;

    let payload: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let conn = client::raw_tcp(proxy.listener("opaque")).await.unwrap();
    let (stream, buffered) = conn.into_parts();
    assert!(buffered.is_empty());
    let (mut rd, mut wr) = stream.into_split();
    let to_send = payload.clone();
    // Write and read concurrently: neither side may wait for the other to finish.
    let writer = async move {
        wr.write_all(&to_send).await.unwrap();
        wr.shutdown().await.unwrap();
        wr
    };
    let reader = async move {
        let mut got = Vec::new();
        rd.read_to_end(&mut got).await.unwrap();
        got
    };
    let (_wr, got) =
        with_timeout(secs(20), "a 1 MiB echo through the proxy", async { tokio::join!(writer, reader) }).await;

    assert_eq!(got.len(), server::tcp_echo_reply(&payload).len());
    assert!(got == server::tcp_echo_reply(&payload), "the echoed bytes differ from what was sent");
    assert_eq!(echo.bytes_received(), payload.len());
}

#[tokio::test]
async fn detect_listener_forwards_non_http_bytes_to_the_tcp_backend() {
    let echo = server::tcp_echo().run().await;
    let web = server::http1().name("web").route_prefix("/", server::ok("web")).run().await;
    let proxy = proxy::new().config(outbound_tcp_config(echo.addr(), web.addr(), "1s")).run().await;

    let sent = b"\x00\x01binary";
    let mut conn = client::raw_tcp(proxy.listener("mixed")).await.unwrap();
    conn.write_all(sent).await.unwrap();
    // The bytes read while sniffing are replayed to the backend, not lost.
    assert_eq!(&conn.read_exact(sent.len()).await.unwrap()[..], sent);
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_to_end().await.unwrap()[..], b"EOF 8\n");
    assert_eq!(echo.bytes_received(), sent.len());

    // HTTP on the same listener is still routed.
    let rsp = client::curl()
        .url(format!("http://{}/", proxy.listener("mixed")))
        .header("Host", "web.local")
        .run()
        .await
        .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.text(), "web");
    assert_eq!(echo.connections(), 1, "HTTP did not go to the tcp backend");
    assert_eq!(web.requests(), 1);

    let m = proxy.metrics().await;
    assert_eq!(m.value("attache_connections_total", &[("listener", "mixed"), ("protocol", "tcp")]), Some(1.0), "{m}");
    assert_eq!(m.value("attache_connections_total", &[("listener", "mixed"), ("protocol", "http1")]), Some(1.0), "{m}");
}

#[tokio::test]
async fn detect_listener_forwards_h2c_as_http_not_tcp() {
    let echo = server::tcp_echo().run().await;
    let web = server::auto().name("web").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(outbound_tcp_config(echo.addr(), web.addr(), "1s")).run().await;

    let rsp = client::http2(proxy.listener("mixed")).get("web.local", "/h2").await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.json()["version"], "HTTP/2.0");
    assert_eq!(echo.connections(), 0);
}

#[tokio::test]
async fn opaque_listener_delivers_a_server_first_banner_at_once() {
    let banner = server::tcp_banner("220 mail.example ESMTP ready\r\n").run().await;
    let web = server::http1().route_prefix("/", server::ok("web")).run().await;
    // A detect timeout far longer than the client waits: an opaque listener must not sniff at all.
    let proxy = proxy::new().config(outbound_tcp_config(banner.addr(), web.addr(), "60s")).run().await;

    let mut conn = client::raw_tcp(proxy.listener("opaque")).await.unwrap();
    conn.set_timeout(secs(5));
    let greeting = conn.read_until(b"\r\n").await.unwrap();
    assert_eq!(&greeting[..], b"220 mail.example ESMTP ready\r\n");

    conn.write_all(b"QUIT\r\n").await.unwrap();
    assert_eq!(&conn.read_exact(6).await.unwrap()[..], b"QUIT\r\n");
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_to_end().await.unwrap()[..], b"EOF 6\n");
}

#[tokio::test]
async fn detect_listener_delivers_a_server_first_banner_after_the_detect_timeout() {
    let banner = server::tcp_banner("* OK IMAP4rev1 ready\r\n").run().await;
    let web = server::http1().route_prefix("/", server::ok("web")).run().await;
    let proxy = proxy::new().config(outbound_tcp_config(banner.addr(), web.addr(), "200ms")).run().await;

    let started = tokio::time::Instant::now();
    let mut conn = client::raw_tcp(proxy.listener("mixed")).await.unwrap();
    conn.set_timeout(secs(5));
    let greeting = conn.read_until(b"\r\n").await.unwrap();
    let waited = started.elapsed();
    assert_eq!(&greeting[..], b"* OK IMAP4rev1 ready\r\n");
    // A silent client is only treated as opaque once the detect timeout has passed.
    assert!(waited >= millis(190), "banner arrived after {waited:?}, before the 200ms detect timeout");
    assert_eq!(banner.connections(), 1);

    conn.write_all(b"a1 LOGOUT\r\n").await.unwrap();
    assert_eq!(&conn.read_exact(11).await.unwrap()[..], b"a1 LOGOUT\r\n");
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_to_end().await.unwrap()[..], b"EOF 11\n");
    assert_eq!(web.connections(), 0);
}

#[tokio::test]
async fn tcp_backend_that_refuses_connections_closes_the_client() {
    // A port that was free a moment ago: nothing listens there.
    let dead = proxy::free_port().unwrap();
    let web = server::http1().route_prefix("/", server::ok("web")).run().await;
    let proxy = proxy::new().config(outbound_tcp_config(dead, web.addr(), "1s")).run().await;

    let mut conn = client::raw_tcp(proxy.listener("opaque")).await.unwrap();
    conn.set_timeout(secs(5));
    let _ = conn.write_all(b"anyone there?").await;
    // Either a clean EOF or a reset: the connection must end, not hang.
    match conn.read_to_end().await {
        Ok(rest) => assert_eq!(rest, Bytes::new()),
        Err(e) => assert!(format!("{e:#}").contains("reset"), "unexpected error: {e:#}"),
    }
    let m = eventually(secs(5), || async {
        let m = proxy.metrics().await;
        (m.sum("attache_open_connections", &[("listener", "opaque")]) == 0.0).then_some(m)
    })
    .await;
    assert_eq!(m.value("attache_connections_total", &[("listener", "opaque"), ("protocol", "tcp")]), Some(1.0), "{m}");
}

#[tokio::test]
async fn inbound_opaque_listener_reaches_the_tcp_app() {
    let app = server::tcp_echo().run().await;
    let http_app = server::auto().name("app").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new()
        .config(format!(
            r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: inbound-tcp, address: "127.0.0.1:0", direction: inbound, protocol: opaque, app: "{}" }}
  - {{ name: inbound-detect, address: "127.0.0.1:0", direction: inbound, app: "{}" }}
  - {{ name: inbound, address: "127.0.0.1:0", direction: inbound, app: "{}" }}
"#,
            app.addr(),
            app.addr(),
            http_app.addr()
        ))
        .run()
        .await;

    let mut conn = client::raw_tcp(proxy.listener("inbound-tcp")).await.unwrap();
    conn.write_all(b"SELECT 1;").await.unwrap();
    assert_eq!(&conn.read_exact(9).await.unwrap()[..], b"SELECT 1;");
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_to_end().await.unwrap()[..], b"EOF 9\n");
    assert_eq!(app.half_closes(), 1);

    // On a detect inbound listener, non-HTTP bytes go to the app as TCP...
    let mut conn = client::raw_tcp(proxy.listener("inbound-detect")).await.unwrap();
    conn.write_all(b"\x16\x03\x01hello").await.unwrap();
    conn.shutdown_write().await.unwrap();
    assert_eq!(&conn.read_to_end().await.unwrap()[..], &server::tcp_echo_reply(b"\x16\x03\x01hello")[..]);
    assert_eq!(app.half_closes(), 2);

    // ...and HTTP on the inbound listener reaches the HTTP app.
    let rsp = client::http1(proxy.inbound()).get("app.local", "/in").await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.version, Version::HTTP_11);
    assert_eq!(http_app.requests(), 1);

    let m = proxy.metrics().await;
    let inbound_tcp = [("direction", "inbound"), ("listener", "inbound-tcp"), ("protocol", "tcp")];
    assert_eq!(m.value("attache_connections_total", &inbound_tcp), Some(1.0), "{m}");
    let read = [("direction", "inbound"), ("listener", "inbound-tcp")];
    assert_eq!(m.value("attache_tcp_read_bytes_total", &read), Some(9.0), "{m}");
    assert_eq!(m.value("attache_tcp_write_bytes_total", &read), Some(15.0), "{m}");
}
