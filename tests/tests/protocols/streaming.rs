//! Streaming: gRPC trailers and unbuffered bodies in both directions, over HTTP/1.1 and h2c.

use super::*;
use std::sync::{Arc, Mutex};

use attache_tests::client::{self, next_chunk};
use attache_tests::wait::millis;
use attache_tests::{proxy, server, Body, BoxError};
use bytes::Bytes;
use http::{Method, Request, Response, Version};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------------------------------------------
// 4. gRPC-style trailers.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn grpc_unary_trailers_reach_the_client() {
    let backend = server::http2()
        .name("grpc")
        .route("/demo.Greeter/SayHello", server::trailers(0, ""))
        .route("/demo.Greeter/Missing", server::trailers(5, "no such greeting"))
        .run()
        .await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "auto")).run().await;
    let client = client::http2(proxy.outbound());

    let ok = client.grpc_unary("web.local", "/demo.Greeter/SayHello", b"hello").await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("content-type"), Some("application/grpc"));
    assert_eq!(ok.body, server::grpc_frame(b"hello"));
    assert!(ok.trailers.is_some(), "no trailers in the response; headers: {:?}", ok.headers);
    assert_eq!(ok.trailer("grpc-status"), Some("0"));
    assert_eq!(ok.trailer("grpc-message"), None);

    let err = client.grpc_unary("web.local", "/demo.Greeter/Missing", b"who?").await.unwrap();
    assert_eq!(err.status, 200, "gRPC errors travel in trailers, not the HTTP status");
    assert_eq!(err.body, server::grpc_frame(b"who?"));
    assert_eq!(err.trailer("grpc-status"), Some("5"), "trailers: {:?}", err.trailers);
    assert_eq!(err.trailer("grpc-message"), Some("no such greeting"));

    // The upstream saw a gRPC request: h2, with `te: trailers` intact.
    let seen = backend.last_request().unwrap();
    assert_eq!(seen.version, Version::HTTP_2);
    assert_eq!(seen.headers.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
    assert_eq!(seen.headers.get("content-type").map(|v| v.as_bytes()), Some(&b"application/grpc"[..]));
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Streaming.
// ---------------------------------------------------------------------------------------------------------------

/// A mock route whose response body is fed by the test: each `Bytes` sent on the returned sender becomes one data
/// frame; dropping the sender ends the body. Serves exactly one request.
fn test_fed_stream() -> (mpsc::Sender<Bytes>, impl Fn(Request<Incoming>) -> futures_util::future::Ready<Response<Body>>)
{
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let slot = Arc::new(Mutex::new(Some(rx)));
    let handler = move |_req: Request<Incoming>| {
        let rx = slot.lock().unwrap().take().expect("the streaming route serves one request");
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            let chunk = rx.recv().await?;
            Some((Ok::<_, BoxError>(Frame::data(chunk)), rx))
        });
        futures_util::future::ready(Response::new(BodyExt::boxed_unsync(StreamBody::new(frames))))
    };
    (tx, handler)
}

/// The client (h2c when `h2`, else HTTP/1.1) reads each chunk while the upstream (same version) still holds the rest.
async fn streaming_is_not_buffered(h2: bool) {
    let (feed, handler) = test_fed_stream();
    let builder = if h2 { server::http2() } else { server::http1() };
    let backend = builder.name("stream").route("/events", handler).run().await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "auto")).run().await;
    let client = if h2 { client::http2(proxy.outbound()) } else { client::http1(proxy.outbound()) };

    let req = client.builder(Method::GET, "web.local", "/events").body(attache_tests::empty()).unwrap();
    let rsp = client.send(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();

    // The body is still open (the mock holds the rest until we say so), yet the first chunk must arrive.
    feed.send(Bytes::from_static(b"event: one\n")).await.unwrap();
    assert_eq!(next_data(&mut body).await.as_deref(), Some(&b"event: one\n"[..]));
    feed.send(Bytes::from_static(b"event: two\n")).await.unwrap();
    assert_eq!(next_data(&mut body).await.as_deref(), Some(&b"event: two\n"[..]));
    drop(feed);
    assert_eq!(next_data(&mut body).await, None, "the body ends when the upstream's does");
}

/// The next non-empty data chunk (h2 may end a stream with an empty DATA frame), or `None` at the end.
async fn next_data(body: &mut Incoming) -> Option<Bytes> {
    loop {
        match next_chunk(body).await.unwrap() {
            Some(chunk) if chunk.is_empty() => continue,
            other => return other,
        }
    }
}

#[tokio::test]
async fn http1_response_streams_chunk_by_chunk() {
    streaming_is_not_buffered(false).await;
}

#[tokio::test]
async fn http2_response_streams_chunk_by_chunk() {
    streaming_is_not_buffered(true).await;
}

#[tokio::test]
async fn http2_request_and_response_stream_together() {
    // The mock answers at once with a body that is the request body, frame by frame (bidirectional streaming).
    let backend = server::http2()
        .name("bidi")
        .route("/demo.Chat/Stream", |req: Request<Incoming>| async move {
            let echoed = req.into_body().map_err(|e| -> BoxError { Box::new(e) });
            Response::new(BodyExt::boxed_unsync(echoed))
        })
        .run()
        .await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "auto")).run().await;
    let client = client::http2(proxy.outbound());

    let (feed, rx) = mpsc::channel::<Bytes>(1);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(chunk)), rx))
    });
    let req = client
        .builder(Method::POST, "web.local", "/demo.Chat/Stream")
        .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        .unwrap();
    let rsp = client.send(req).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();

    // Each message comes back while the request body is still open.
    for msg in ["first message", "second message", "third message"] {
        feed.send(Bytes::from(msg)).await.unwrap();
        assert_eq!(next_data(&mut body).await.as_deref(), Some(msg.as_bytes()));
    }
    drop(feed);
    assert_eq!(next_data(&mut body).await, None);
}

#[tokio::test]
async fn server_chunks_are_all_delivered_in_order() {
    let backend = server::http1().name("chunky").route("/chunks", server::chunks(5, millis(20))).run().await;
    let proxy = proxy::new().config(outbound_config(backend.addr(), "http1")).run().await;
    // h2c downstream, chunked HTTP/1.1 upstream.
    let rsp = curl_web(proxy.outbound(), "/chunks", true).await;
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.text(), "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
}
