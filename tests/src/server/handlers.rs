//! Ready-made route handlers for mock HTTP servers.
//!
//! Each function returns a handler to pass to [`super::Builder::route`]:
//! `server::http1().route("/", ok("hello")).route("/echo", echo())`.

use crate::{Body, BoxError};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use serde_json::json;
use std::time::Duration;

/// Request extension inserted by the mock server before calling a handler: the server's name.
#[derive(Clone, Debug)]
pub struct ServerName(pub String);

/// The type every ready-made handler has.
pub trait MockHandler: Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync + 'static {}
impl<F> MockHandler for F where F: Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync + 'static {}

/// `200 OK` with `body`.
pub fn ok(body: impl Into<Bytes>) -> impl MockHandler {
    let body = body.into();
    move |_req| {
        let body = body.clone();
        Box::pin(async move { Response::new(crate::full(body)) })
    }
}

/// `code` with an empty body. Panics if `code` is not a valid status.
pub fn status(code: u16) -> impl MockHandler {
    let code = StatusCode::from_u16(code).expect("valid status code");
    move |_req| {
        Box::pin(async move {
            let mut rsp = Response::new(crate::empty());
            *rsp.status_mut() = code;
            rsp
        })
    }
}

/// Waits `delay` (tokio time), then `200 OK` with `body`.
pub fn slow(delay: Duration, body: impl Into<Bytes>) -> impl MockHandler {
    let body = body.into();
    move |_req| {
        let body = body.clone();
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            Response::new(crate::full(body))
        })
    }
}

/// `200 OK`, `content-type: application/json`, and a JSON body describing the request:
///
/// ```json
/// { "server": "stable", "method": "POST", "uri": "http://a.svc/p?q=1", "path": "/p?q=1",
///   "version": "HTTP/1.1", "headers": { "host": ["a.svc"], "x-many": ["1", "2"] }, "body": "hello" }
/// ```
///
/// `uri` is the request target as the server saw it (origin-form for HTTP/1 unless the client sent
/// absolute-form; absolute for h2), `path` is path and query, `version` is `HTTP/1.0`, `HTTP/1.1` or
/// `HTTP/2.0`, header names are lower-case with values in order, `body` is the request body (lossy UTF-8).
/// If reading the request body fails the response is `500` with the error as text.
pub fn echo() -> impl MockHandler {
    |req: Request<Incoming>| {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("echo: reading body: {e}")),
            };
            let name = parts.extensions.get::<ServerName>().map(|n| n.0.clone()).unwrap_or_default();
            let doc = json!({
                "server": name,
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                "version": format!("{:?}", parts.version),
                "headers": headers_json(&parts.headers),
                "body": String::from_utf8_lossy(&body),
            });
            let mut rsp = Response::new(crate::full(doc.to_string()));
            rsp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            rsp
        })
    }
}

/// gRPC-style unary reply: `200 OK` with `content-type: application/grpc`, one data frame that is the request
/// body as received (send a [`grpc_frame`] to get one back), then trailers `grpc-status: <grpc_status>` and,
/// when `grpc_message` is non-empty, `grpc-message: <grpc_message>`. Trailers need HTTP/2 (or chunked h1).
pub fn trailers(grpc_status: u32, grpc_message: &str) -> impl MockHandler {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(grpc_status));
    if !grpc_message.is_empty() {
        trailers.insert("grpc-message", HeaderValue::from_str(grpc_message).expect("grpc-message header value"));
    }
    move |req: Request<Incoming>| {
        let trailers = trailers.clone();
        Box::pin(async move {
            let data = match req.into_body().collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("trailers: reading body: {e}")),
            };
            let frames = vec![Ok::<_, BoxError>(Frame::data(data)), Ok(Frame::trailers(trailers))];
            let body = StreamBody::new(futures_util::stream::iter(frames));
            let mut rsp = Response::new(BodyExt::boxed_unsync(body));
            rsp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            rsp
        })
    }
}

/// `200 OK` streaming `n` data frames `chunk 0\n`, `chunk 1\n`, … with `delay` (tokio time) before every frame
/// after the first, so a test can observe the first chunk arriving long before the last one.
pub fn chunks(n: usize, delay: Duration) -> impl MockHandler {
    move |_req| {
        Box::pin(async move {
            let stream = futures_util::stream::unfold(0usize, move |i| async move {
                if i >= n {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                Some((Ok::<_, BoxError>(Frame::data(Bytes::from(format!("chunk {i}\n")))), i + 1))
            });
            Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)))
        })
    }
}

/// Wraps `message` in a gRPC length-prefixed frame: flag byte `0` (uncompressed), u32 big-endian length, bytes.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(5 + message.len());
    buf.put_u8(0);
    buf.put_u32(u32::try_from(message.len()).expect("gRPC message too large"));
    buf.put_slice(message);
    buf.freeze()
}

/// Header map as JSON `{ "name": ["value", ...] }` (lossy UTF-8).
pub(crate) fn headers_json(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let values = headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        map.insert(name.as_str().to_owned(), values.collect::<Vec<_>>().into());
    }
    map.into()
}

fn text(code: StatusCode, body: String) -> Response<Body> {
    let mut rsp = Response::new(crate::full(body));
    *rsp.status_mut() = code;
    rsp
}
