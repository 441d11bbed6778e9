//! Self-tests of the end-to-end support code: every mock server against every client, no proxy involved.

use attache_tests::{
    client::{self, next_chunk},
    eventually, server,
    wait::{millis, secs},
    with_timeout, Metrics,
};
use http::{Method, Version};
use tokio::net::TcpStream;

#[tokio::test]
async fn h1_echo_via_hyper_client() {
    attache_tests::trace_init();
    let backend = server::http1().name("stable").route("/echo", server::echo()).run().await;
    let client = client::http1(backend.addr());

    let rsp = client.post("svc.local", "/echo?x=1", "hi").await.unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.version, Version::HTTP_11);
    assert_eq!(rsp.header("x-server-name"), Some("stable"));
    let echo = rsp.json();
    assert_eq!(echo["server"], "stable");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/echo?x=1");
    assert_eq!(echo["uri"], "/echo?x=1");
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(echo["headers"]["host"][0], "svc.local");
    assert_eq!(echo["body"], "hi");

    let rsp = client.get("svc.local", "/nope").await.unwrap();
    assert_eq!(rsp.status, 404);
    assert_eq!(rsp.header("x-server-name"), Some("stable"));

    assert_eq!(backend.requests(), 2);
    assert_eq!(backend.requests_to("/echo"), 1);
    assert_eq!(backend.requests_by_path()["/nope"], 1);
    assert_eq!(backend.versions(), vec![Version::HTTP_11]);
    assert_eq!(backend.last_request().unwrap().method, Method::GET);
    assert_eq!(backend.last_headers()["host"], "svc.local");
    assert_eq!(backend.connections(), 1, "the client reuses its connection");
    assert_eq!(client.connections_opened(), 1);

    client.reconnect().await;
    client.get("svc.local", "/echo").await.unwrap();
    assert_eq!(backend.connections(), 2);
}

#[tokio::test]
async fn h1_echo_via_curl_direct_resolve_and_proxy_forms() {
    let backend = server::http1().route("/echo", server::echo()).run().await;
    let addr = backend.addr();

    let rsp = client::curl()
        .url(format!("http://{addr}/echo"))
        .header("x-test", "1")
        .method("PUT")
        .data("payload\n")
        .run()
        .await
        .unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.version, Version::HTTP_11);
    assert_eq!(rsp.header("x-server-name"), Some("mock"));
    let echo = rsp.json();
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["headers"]["x-test"][0], "1");
    assert_eq!(echo["body"], "payload\n");

    let url = format!("http://svc.local:{}/echo", addr.port());
    let rsp = client::curl().resolve("svc.local", addr.port(), addr).url(url).run().await.unwrap();
    assert_eq!(rsp.json()["headers"]["host"][0], format!("svc.local:{}", addr.port()));

    // As an HTTP proxy, the mock sees the absolute-form target.
    let rsp = client::curl().proxy(addr).url("http://svc.local/echo?q").run().await.unwrap();
    assert_eq!(rsp.json()["uri"], "http://svc.local/echo?q");

    let err = client::curl().url("http://127.0.0.1:1/").run().await.unwrap_err();
    assert!(format!("{err:#}").contains("curl"), "{err:#}");
}

#[tokio::test]
async fn h2c_echo_via_curl_prior_knowledge() {
    let backend = server::http2().name("h2").route("/echo", server::echo()).run().await;
    let rsp =
        client::curl().http2_prior_knowledge().url(format!("http://{}/echo", backend.addr())).run().await.unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.version, Version::HTTP_2);
    assert_eq!(rsp.header("x-server-name"), Some("h2"));
    assert_eq!(rsp.json()["version"], "HTTP/2.0");
    assert_eq!(backend.versions(), vec![Version::HTTP_2]);
}

#[tokio::test]
async fn auto_server_speaks_both_versions() {
    let backend = server::auto().route("/", server::ok("hello")).run().await;
    let h1 = client::http1(backend.addr()).get("a", "/").await.unwrap();
    let h2 = client::http2(backend.addr()).get("a", "/").await.unwrap();
    assert_eq!((h1.version, h1.text()), (Version::HTTP_11, "hello".to_owned()));
    assert_eq!((h2.version, h2.text()), (Version::HTTP_2, "hello".to_owned()));
    assert_eq!(backend.versions(), vec![Version::HTTP_11, Version::HTTP_2]);

    let rsp = client::curl().http2_prior_knowledge().url(format!("http://{}/", backend.addr())).run().await.unwrap();
    assert_eq!(rsp.version, Version::HTTP_2);
}

#[tokio::test]
async fn grpc_trailers_over_h2_client() {
    let backend = server::http2()
        .route("/ok.Svc/Call", server::trailers(0, ""))
        .route("/bad.Svc/Call", server::trailers(14, "unavailable"))
        .run()
        .await;
    let client = client::http2(backend.addr());

    let rsp = client.grpc_unary("grpc.local", "/ok.Svc/Call", b"ping").await.unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.header("content-type"), Some("application/grpc"));
    assert_eq!(rsp.body, server::grpc_frame(b"ping"));
    assert_eq!(rsp.trailer("grpc-status"), Some("0"));
    assert_eq!(rsp.trailer("grpc-message"), None);

    let rsp = client.grpc_unary("grpc.local", "/bad.Svc/Call", b"").await.unwrap();
    assert_eq!(rsp.trailer("grpc-status"), Some("14"));
    assert_eq!(rsp.trailer("grpc-message"), Some("unavailable"));
    assert_eq!(backend.last_headers()["te"], "trailers");
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn streaming_chunks_are_not_buffered() {
    let backend = server::http1().route("/stream", server::chunks(3, millis(300))).run().await;
    let client = client::http1(backend.addr());
    let req = client.builder(Method::GET, "s", "/stream").body(attache_tests::empty()).unwrap();
    let mut body = client.send(req).await.unwrap().into_body();

    assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "chunk 0\n");
    let first = tokio::time::Instant::now();
    assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "chunk 1\n");
    assert_eq!(next_chunk(&mut body).await.unwrap().unwrap(), "chunk 2\n");
    assert_eq!(next_chunk(&mut body).await.unwrap(), None);
    assert!(first.elapsed() >= millis(500), "later chunks arrived {:?} after the first", first.elapsed());
}

#[tokio::test]
async fn status_slow_and_client_timeout() {
    let backend =
        server::http1().route("/503", server::status(503)).route("/slow", server::slow(secs(5), "late")).run().await;
    let rsp = client::http1(backend.addr()).get("a", "/503").await.unwrap();
    assert_eq!(rsp.status, 503);
    assert!(rsp.body.is_empty());

    let err = client::http1(backend.addr()).timeout(millis(100)).get("a", "/slow").await.unwrap_err();
    assert!(format!("{err:#}").contains("within"), "{err:#}");
}

#[tokio::test]
async fn websocket_echo_via_raw_upgrade() {
    let backend = server::websocket_echo().run().await;
    let mut ws = client::websocket(backend.addr(), "ws.local", "/chat").await.unwrap();
    ws.write_all("ping").await.unwrap();
    assert_eq!(ws.read_exact(4).await.unwrap(), "ping");
    ws.write_all(vec![0u8, 159, 255]).await.unwrap();
    assert_eq!(ws.read_exact(3).await.unwrap(), vec![0u8, 159, 255]);
    ws.shutdown_write().await.unwrap();
    assert!(ws.read_to_end().await.unwrap().is_empty());
    assert_eq!(backend.upgrades(), 1);

    let rsp = client::http1(backend.addr()).get("ws.local", "/chat").await.unwrap();
    assert_eq!(rsp.status, 426);
}

#[tokio::test]
async fn tcp_echo_with_half_close() {
    let backend = server::tcp_echo().run().await;
    let mut conn = client::raw_tcp(backend.addr()).await.unwrap();
    conn.write_all("hello").await.unwrap();
    assert_eq!(conn.read_exact(5).await.unwrap(), "hello");
    conn.write_all(" world").await.unwrap();
    conn.shutdown_write().await.unwrap();
    assert_eq!(conn.read_to_end().await.unwrap(), " worldEOF 11\n");
    assert_eq!(server::tcp_echo_reply(b"hello world"), b"hello worldEOF 11\n");
    assert_eq!((backend.connections(), backend.bytes_received(), backend.half_closes()), (1, 11, 1));
}

#[tokio::test]
async fn tcp_banner_speaks_first() {
    let backend = server::tcp_banner("220 ready\r\n").run().await;
    let mut conn = client::raw_tcp(backend.addr()).await.unwrap();
    assert_eq!(conn.read_until(b"\r\n").await.unwrap(), "220 ready\r\n");
    conn.write_all("x").await.unwrap();
    conn.shutdown_write().await.unwrap();
    assert_eq!(conn.read_to_end().await.unwrap(), "xEOF 1\n");
}

#[tokio::test]
async fn raw_http1_requests() {
    let backend =
        server::http1().route("/", server::ok("hi")).route("/stream", server::chunks(2, millis(1))).run().await;

    let mut conn = client::raw_tcp(backend.addr()).await.unwrap();
    conn.write_all("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /stream HTTP/1.1\r\nHost: a\r\n\r\n").await.unwrap();
    let rsp = conn.read_response().await.unwrap();
    assert_eq!((rsp.status, rsp.text().as_str(), rsp.header("X-Server-Name")), (200, "hi", Some("mock")));
    let rsp = conn.read_response().await.unwrap();
    assert_eq!(rsp.header("transfer-encoding"), Some("chunked"));
    assert_eq!(rsp.text(), "chunk 0\nchunk 1\n");

    let mut conn = client::raw_tcp(backend.addr()).await.unwrap();
    conn.write_all("NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let rsp = conn.read_response().await.unwrap();
    assert_eq!(rsp.status, 400);
}

#[tokio::test]
async fn dropping_a_server_stops_it() {
    let backend = server::http1().route("/", server::ok("x")).run().await;
    let addr = backend.addr();
    drop(backend);
    eventually(secs(5), || async { TcpStream::connect(addr).await.is_err() }).await;
}

#[tokio::test]
async fn waiting_helpers() {
    let mut n = 0;
    let got = eventually(secs(5), || {
        n += 1;
        let n = n;
        async move { (n >= 3).then_some(n) }
    })
    .await;
    assert_eq!(got, 3);
    assert_eq!(with_timeout(secs(1), "ready future", async { 7 }).await, 7);
}

#[tokio::test]
#[should_panic(expected = "timed out after")]
async fn with_timeout_panics_clearly() {
    with_timeout(millis(10), "never", std::future::pending::<()>()).await;
}

#[test]
fn metrics_parser() {
    let text = r#"# HELP attache_requests Requests.
# TYPE attache_requests counter
attache_requests_total{backend="stable",status_class="2xx",route="a"} 7
attache_requests_total{backend="stable",status_class="2xx",route="b"} 3
attache_requests_total{backend="canary",status_class="5xx",route="a"} 1
# TYPE attache_request_duration_seconds histogram
attache_request_duration_seconds_bucket{backend="stable",le="0.1"} 9
attache_request_duration_seconds_bucket{backend="stable",le="+Inf"} 10
attache_request_duration_seconds_sum{backend="stable"} 0.52
attache_request_duration_seconds_count{backend="stable"} 10
attache_up 1
# EOF
"#;
    let m = Metrics::parse(text).unwrap();
    assert_eq!(m.value("attache_requests_total", &[("backend", "stable"), ("route", "a")]), Some(7.0));
    assert_eq!(m.value("attache_requests_total", &[("backend", "stable"), ("status_class", "2xx")]), None, "ambiguous");
    assert_eq!(m.sum("attache_requests_total", &[("backend", "stable"), ("status_class", "2xx")]), 10.0);
    assert_eq!(m.sum("attache_requests_total", &[]), 11.0);
    assert_eq!(m.value("attache_request_duration_seconds_bucket", &[("le", "+Inf")]), Some(10.0));
    assert_eq!(m.value("attache_up", &[]), Some(1.0));
    assert_eq!(m.value("missing", &[]), None);
    assert_eq!(m.samples().len(), 8);
}
