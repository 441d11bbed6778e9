//! Errors: what a client sees when the proxy answers for an upstream that failed, timed out or was shed.

use std::net::SocketAddr;

use attache_tests::{
    client, proxy, server,
    wait::{millis, secs},
    with_timeout, AbortOnDrop,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// One service `svc` with one route `default` to the backend `web` at `endpoint`; `route_extra` and `limits` are
/// spliced in as YAML (already indented).
fn config(endpoint: &str, route_extra: &str, limits: &str) -> String {
    attache_tests::yaml::one_backend("svc", &[]).endpoint(endpoint).route(route_extra).limits(limits).build()
}

/// An address nothing listens on: bound a moment ago and released.
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("local addr")
}

/// A TCP server that reads whatever a client sends, answers `HELLO\r\n\r\n` (not HTTP) and closes.
async fn garbage_server() -> (SocketAddr, AbortOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = AbortOnDrop::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut buf = [0u8; 4096];
                if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                    let _ = stream.write_all(b"HELLO\r\n\r\n").await;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn unreachable_backend_is_503_connect_failed() {
    let dead = dead_addr();
    let proxy = proxy::new().config(config(&dead.to_string(), "", "")).run().await;
    let rsp = client::curl().url(format!("http://{}/", proxy.outbound())).header("Host", "svc").run().await.unwrap();
    assert_eq!(rsp.status, 503, "{}", rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("connect-failed"));
    assert!(rsp.text().contains("connect-failed"), "{}", rsp.text());
}

#[tokio::test]
async fn route_timeout_is_504_and_answered_at_the_deadline() {
    let backend = server::http1().route("/slow", server::slow(secs(2), "late")).run().await;
    let proxy = proxy::new().config(config(&backend.addr().to_string(), "        timeout: 200ms", "")).run().await;
    let started = tokio::time::Instant::now();
    let rsp =
        client::curl().url(format!("http://{}/slow", proxy.outbound())).header("Host", "svc").run().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(rsp.status, 504, "{}", rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("timeout"));
    assert!(elapsed >= millis(200), "answered before the deadline: {elapsed:?}");
    assert!(elapsed < millis(1500), "504 took {elapsed:?}; the backend answers after 2s");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn upstream_protocol_error_is_502() {
    let (garbage, _server) = garbage_server().await;
    let proxy = proxy::new().config(config(&garbage.to_string(), "", "")).run().await;
    let rsp = client::curl().url(format!("http://{}/", proxy.outbound())).header("Host", "svc").run().await.unwrap();
    assert_eq!(rsp.status, 502, "{}", rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("upstream-failed"), "{:?}", rsp.headers);
}

#[tokio::test]
async fn second_concurrent_request_is_shed_with_503_overloaded() {
    let backend =
        server::http1().route("/slow", server::slow(secs(1), "slow")).route("/fast", server::ok("fast")).run().await;
    let limits = "  max_concurrent_requests: 1";
    let proxy = proxy::new().config(config(&backend.addr().to_string(), "", limits)).run().await;
    let outbound = proxy.outbound();

    // The first request holds the only slot until the backend answers.
    let first = tokio::spawn(async move { client::http1(outbound).get("svc", "/slow").await });
    attache_tests::eventually(secs(5), || async { backend.requests_to("/slow") == 1 }).await;

    let started = tokio::time::Instant::now();
    let shed = client::http1(outbound).get("svc", "/fast").await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(shed.status, 503, "{}", shed.text());
    assert_eq!(shed.header("x-attache-error"), Some("overloaded"));
    assert!(elapsed < millis(500), "shedding took {elapsed:?}");
    assert_eq!(backend.requests_to("/fast"), 0, "a shed request must not reach the backend");

    let first = with_timeout(secs(10), "the slow request", first).await.unwrap().unwrap();
    assert_eq!((first.status.as_u16(), first.text().as_str()), (200, "slow"));

    // The slot is free again.
    let rsp = client::http1(outbound).get("svc", "/fast").await.unwrap();
    assert_eq!((rsp.status.as_u16(), rsp.text().as_str()), (200, "fast"));
}

#[tokio::test]
async fn backend_given_by_dns_name_works() {
    let backend = server::http1().name("named").route("/", server::ok("by name")).run().await;
    let endpoint = format!("localhost:{}", backend.addr().port());
    let proxy = proxy::new().config(config(&endpoint, "", "")).run().await;
    let client = client::http1(proxy.outbound());
    for _ in 0..5 {
        let rsp = client.get("svc", "/").await.unwrap();
        assert_eq!(rsp.status, 200, "{}", rsp.text());
        assert_eq!(rsp.text(), "by name");
        assert_eq!(rsp.header("x-server-name"), Some("named"));
    }
    assert_eq!(backend.requests(), 5);
}

#[tokio::test]
async fn synthesized_errors_count_in_request_metrics() {
    let dead = dead_addr();
    let proxy = proxy::new().config(config(&dead.to_string(), "", "")).run().await;
    let five_xx = [("service", "svc"), ("route", "default"), ("status_class", "5xx")];
    let before = proxy.metrics().await.sum("attache_requests_total", &five_xx);

    let rsp = client::http1(proxy.outbound()).get("svc", "/").await.unwrap();
    assert_eq!(rsp.status, 503);

    let metrics = proxy.metrics().await;
    let after = metrics.sum("attache_requests_total", &five_xx);
    assert_eq!(after - before, 1.0, "5xx count went {before} -> {after}:\n{metrics}");
    let two_xx = metrics.sum("attache_requests_total", &[("status_class", "2xx")]);
    assert_eq!(two_xx, 0.0, "{metrics}");
}

/// A TCP server that reads a request head and answers every time with `response`, then closes.
async fn raw_http_server(response: &'static str) -> (SocketAddr, AbortOnDrop) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = AbortOnDrop::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn upstream_response_with_content_length_and_transfer_encoding_is_well_formed() {
    let (upstream, _server) = raw_http_server(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let proxy = proxy::new().config(config(&upstream.to_string(), "", "")).run().await;
    let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
    conn.write_all("GET / HTTP/1.1\r\nHost: svc\r\n\r\n").await.unwrap();
    let rsp = conn.read_response().await.unwrap_or_else(|e| panic!("no well-formed response: {e:#}"));
    match rsp.status {
        200 => {
            assert_eq!(rsp.text(), "hello", "{:?}", rsp.headers);
            let framings = rsp.headers.iter().filter(|(n, _)| {
                n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
            });
            assert_eq!(framings.count(), 1, "ambiguous framing reached the client: {:?}", rsp.headers);
        }
        502 => assert_eq!(rsp.header("x-attache-error"), Some("upstream-failed"), "{:?}", rsp.headers),
        other => panic!("{other} {:?} {}", rsp.headers, rsp.text()),
    }
}
