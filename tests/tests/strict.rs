//! Strictness: HTTP/1 framing ambiguities and oversized heads are refused, hop-by-hop headers never cross.

use attache_tests::{
    client::{self, RawConn, RawResponse},
    proxy, server,
};
use http::{HeaderValue, Response};

fn config(backend: std::net::SocketAddr, limits: &str) -> String {
    attache_tests::yaml::one_backend("svc", &[backend]).limits(limits).build()
}

/// A backend echoing every request, and a proxy in front of it.
async fn setup(limits: &str) -> (server::Server, proxy::TestProxy) {
    let backend = server::http1().route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(config(backend.addr(), limits)).run().await;
    (backend, proxy)
}

/// Sends `request` on `conn` and reads the response.
async fn exchange(conn: &mut RawConn, request: &str) -> RawResponse {
    conn.write_all(request).await.unwrap();
    conn.read_response().await.unwrap_or_else(|e| panic!("no response to {request:?}: {e:#}"))
}

/// Asserts a 400 with `Connection: close`, then that the proxy closes the connection without sending more.
async fn assert_rejected_and_closed(conn: &mut RawConn, rsp: &RawResponse) {
    assert_eq!(rsp.status, 400, "{} {:?} {}", rsp.reason, rsp.headers, rsp.text());
    assert_eq!(rsp.header("x-attache-error"), Some("bad-request"), "{:?}", rsp.headers);
    let connection = rsp.header("connection").unwrap_or_default().to_ascii_lowercase();
    assert!(connection.contains("close"), "400 without Connection: close: {:?}", rsp.headers);
    let rest = conn.read_to_end().await.expect("the proxy closes the connection after a 400");
    assert!(rest.is_empty(), "bytes after the 400: {:?}", String::from_utf8_lossy(&rest));
}

/// Reads a whole response; tolerant of the proxy closing the connection right after it.
async fn request_on_new_conn(proxy: &proxy::TestProxy, request: &str) -> (RawConn, RawResponse) {
    let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
    let rsp = exchange(&mut conn, request).await;
    (conn, rsp)
}

const CL_THEN_TE: &str =
    "POST /smuggle HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
const TE_THEN_CL: &str =
    "POST /smuggle HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_closes() {
    let (backend, proxy) = setup("").await;
    for request in [CL_THEN_TE, TE_THEN_CL] {
        let (mut conn, rsp) = request_on_new_conn(&proxy, request).await;
        assert_rejected_and_closed(&mut conn, &rsp).await;
    }
    assert_eq!(backend.requests(), 0, "the backend saw {:?}", backend.recorded());
}

#[tokio::test]
async fn content_length_with_transfer_encoding_on_a_keep_alive_connection_is_400_and_closes() {
    let (backend, proxy) = setup("").await;
    for request in [CL_THEN_TE, TE_THEN_CL] {
        let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
        let first = exchange(&mut conn, "GET /first HTTP/1.1\r\nHost: svc\r\n\r\n").await;
        assert_eq!(first.status, 200, "{}", first.text());
        let second = exchange(&mut conn, request).await;
        assert_rejected_and_closed(&mut conn, &second).await;
    }
    assert_eq!(backend.requests_to("/first"), 2);
    assert_eq!(backend.requests_to("/smuggle"), 0, "the backend saw {:?}", backend.recorded());
}

#[tokio::test]
async fn transfer_encoding_other_than_chunked_is_400_and_closes() {
    let (backend, proxy) = setup("").await;
    let gzip_chunked = "POST /te HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    let two_fields =
        "POST /te HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for request in [gzip_chunked, two_fields] {
        let (mut conn, rsp) = request_on_new_conn(&proxy, request).await;
        assert_rejected_and_closed(&mut conn, &rsp).await;
    }
    assert_eq!(backend.requests(), 0, "the backend saw {:?}", backend.recorded());
}

#[tokio::test]
async fn http11_without_host_is_400() {
    let (backend, proxy) = setup("").await;
    let (mut conn, rsp) = request_on_new_conn(&proxy, "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n").await;
    assert_rejected_and_closed(&mut conn, &rsp).await;
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn too_many_headers_is_431() {
    let (backend, proxy) = setup("  max_header_count: 20").await;
    let mut request = String::from("GET / HTTP/1.1\r\nHost: svc\r\n");
    for i in 0..25 {
        request.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    let (_conn, rsp) = request_on_new_conn(&proxy, &request).await;
    assert_eq!(rsp.status, 431, "{} {:?} {}", rsp.reason, rsp.headers, rsp.text());

    // At the limit is fine.
    let mut request = String::from("GET / HTTP/1.1\r\nHost: svc\r\n");
    for i in 0..19 {
        request.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    request.push_str("\r\n");
    let (_conn, rsp) = request_on_new_conn(&proxy, &request).await;
    assert_eq!(rsp.status, 200, "{} {:?} {}", rsp.reason, rsp.headers, rsp.text());
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn head_bigger_than_max_head_bytes_is_431() {
    let (backend, proxy) = setup("  max_head_bytes: 16384").await;
    let big = "a".repeat(20 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: svc\r\nx-big: {big}\r\n\r\n");
    let (_conn, rsp) = request_on_new_conn(&proxy, &request).await;
    assert_eq!(rsp.status, 431, "{} {:?} {}", rsp.reason, rsp.headers, rsp.text());
    assert_eq!(backend.requests(), 0);

    // A head under the limit goes through.
    let small = "a".repeat(8 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: svc\r\nx-big: {small}\r\n\r\n");
    let (_conn, rsp) = request_on_new_conn(&proxy, &request).await;
    assert_eq!(rsp.status, 200, "{} {:?}", rsp.reason, rsp.headers);
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_upstream() {
    let (backend, proxy) = setup("").await;
    let request = "GET /hop HTTP/1.1\r\nHost: svc\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\n\
                   Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\n\
                   Upgrade: foo\r\nx-kept: yes\r\n\r\n";
    let (_conn, rsp) = request_on_new_conn(&proxy, request).await;
    assert_eq!(rsp.status, 200, "{} {:?} {}", rsp.reason, rsp.headers, rsp.text());

    let seen = backend.last_headers();
    for name in ["connection", "x-secret", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(!seen.contains_key(name), "upstream saw {name}: {seen:?}");
    }
    let te: Vec<_> = seen.get_all("te").iter().collect();
    assert_eq!(te, [&HeaderValue::from_static("trailers")], "{seen:?}");
    assert_eq!(seen.get("x-kept").map(HeaderValue::as_bytes), Some(&b"yes"[..]), "{seen:?}");
}

#[tokio::test]
async fn hop_by_hop_response_headers_never_reach_the_client() {
    let backend = server::http1()
        .route("/hop", |_req| async {
            let mut rsp = Response::new(attache_tests::full("hi"));
            let h = rsp.headers_mut();
            h.insert("connection", HeaderValue::from_static("x-internal"));
            h.insert("x-internal", HeaderValue::from_static("1"));
            h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
            h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
            h.insert("x-visible", HeaderValue::from_static("yes"));
            rsp
        })
        .run()
        .await;
    let proxy = proxy::new().config(config(backend.addr(), "")).run().await;

    // The mock really sends them (so the assertions below test the proxy, not hyper).
    let direct = client::curl().url(format!("http://{}/hop", backend.addr())).run().await.unwrap();
    assert_eq!(direct.header("x-internal"), Some("1"));

    let rsp = client::curl().url(format!("http://{}/hop", proxy.outbound())).header("Host", "svc").run().await.unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.text(), "hi");
    assert_eq!(rsp.header("x-visible"), Some("yes"));
    for name in ["x-internal", "keep-alive", "proxy-connection"] {
        assert!(rsp.header(name).is_none(), "client saw {name}: {:?}", rsp.headers);
    }
    for value in rsp.headers.get_all("connection") {
        let value = value.to_str().unwrap_or_default().to_ascii_lowercase();
        assert!(!value.contains("x-internal"), "client saw Connection: {value}");
    }
}

/// The CL+TE request of [`CL_THEN_TE`] on a connection the framing guard no longer follows: if the proxy read it,
/// hyper would frame it as chunked and forward it.
async fn assert_nothing_more_is_read(conn: &mut RawConn, backend: &server::Server) {
    // The proxy may already have closed: a failed write or a reset is as good as EOF.
    let _ = conn.write_all(CL_THEN_TE).await;
    if let Ok(rest) = conn.read_to_end().await {
        assert!(rest.is_empty(), "the proxy answered after Connection: close: {:?}", String::from_utf8_lossy(&rest));
    }
    assert_eq!(backend.requests_to("/smuggle"), 0, "the backend saw {:?}", backend.recorded());
}

#[tokio::test]
async fn upgrade_header_without_connection_upgrade_answers_close_and_stops_reading() {
    let (backend, proxy) = setup("").await;
    let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
    let rsp = exchange(&mut conn, "GET / HTTP/1.1\r\nHost: svc\r\nUpgrade: x\r\n\r\n").await;
    assert_eq!(rsp.status, 200, "{} {:?} {}", rsp.reason, rsp.headers, rsp.text());
    let connection = rsp.header("connection").unwrap_or_default().to_ascii_lowercase();
    assert!(connection.contains("close"), "no Connection: close after an unswitched Upgrade: {:?}", rsp.headers);
    assert_nothing_more_is_read(&mut conn, &backend).await;
    assert_eq!(backend.requests(), 1, "the backend saw {:?}", backend.recorded());
}

#[tokio::test]
async fn websocket_upgrade_to_an_unknown_host_is_404_with_connection_close() {
    let (backend, proxy) = setup("").await;
    let mut conn = client::raw_tcp(proxy.outbound()).await.unwrap();
    let rsp = client::websocket_handshake(&mut conn, "nope.example", "/chat").await.unwrap();
    assert_eq!(rsp.status, 404, "{} {:?}", rsp.reason, rsp.headers);
    assert_eq!(rsp.header("x-attache-error"), Some("no-route"), "{:?}", rsp.headers);
    let connection = rsp.header("connection").unwrap_or_default().to_ascii_lowercase();
    assert!(connection.contains("close"), "no Connection: close after a refused upgrade: {:?}", rsp.headers);
    // Skip the 404's body, then nothing else may be read off this connection.
    let len = rsp.header("content-length").map_or(0, |l| l.parse().unwrap());
    conn.read_exact(len).await.unwrap();
    assert_nothing_more_is_read(&mut conn, &backend).await;
    assert_eq!(backend.requests(), 0, "the backend saw {:?}", backend.recorded());
}

#[tokio::test]
async fn inbound_drops_client_sent_x_attache_headers() {
    let app = server::http1().name("app").route_prefix("/", server::echo()).run().await;
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlisteners:\n  - {{ name: inbound, address: \"127.0.0.1:0\", \
         direction: inbound, app: \"{}\" }}\n",
        app.addr()
    );
    let proxy = proxy::new().config(yaml).run().await;
    let client = client::http1(proxy.inbound());
    let req = client
        .builder(http::Method::GET, "my-app", "/who")
        .header("x-attache-peer-identity", "spoofed")
        .header("X-Attache-Error", "spoofed")
        .header("x-attached", "kept")
        .body(attache_tests::empty())
        .unwrap();
    let rsp = client.request(req).await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let headers = &rsp.json()["headers"];
    assert!(headers.get("x-attache-peer-identity").is_none(), "the app saw a spoofed identity: {headers}");
    assert!(headers.get("x-attache-error").is_none(), "{headers}");
    assert_eq!(headers["x-attached"], serde_json::json!(["kept"]), "only x-attache-* is dropped: {headers}");
}
