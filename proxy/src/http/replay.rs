//! Read-ahead and replay of bodies for retries: request bodies buffered (bounded in size and time) so that every
//! attempt sends the same bytes, and gRPC responses read ahead (bounded) to find a status in their trailers.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;

use crate::backend::{AttemptTimeout, Avoid};
use crate::body::Body;
use crate::errors::BoxError;

/// How long a body may take to end while it is read ahead (request bodies for replay, gRPC responses for their
/// trailers). Unary calls complete at once; a stream that is still open after this is handed on as it is.
pub(super) const READ_AHEAD: Duration = Duration::from_millis(100);

/// A request body kept for replay.
#[derive(Clone, Default)]
pub(super) struct Replay {
    pub(super) data: Bytes,
    pub(super) trailers: Option<HeaderMap>,
}

/// Buffers a request body for replay: one of known length within `max`, or one that ends within `max` bytes and
/// READ_AHEAD (gRPC clients send no content-length, but a unary call's body is complete at once). Otherwise the body
/// is handed back, with whatever was read ahead in front, to be streamed once.
pub(super) async fn buffer(body: Body, max: usize) -> Result<Result<Replay, Body>, BoxError> {
    let hint = body.size_hint();
    if hint.exact().is_some_and(|n| n <= max as u64) {
        let collected = body.collect().await.map_err(|e| -> BoxError { Box::new(e) })?;
        let trailers = collected.trailers().cloned();
        return Ok(Ok(Replay { data: collected.to_bytes(), trailers }));
    }
    if hint.lower() > max as u64 {
        return Ok(Err(body));
    }
    let mut body = body;
    let mut frames = Vec::new();
    let mut size = 0usize;
    let deadline = tokio::time::Instant::now() + READ_AHEAD;
    loop {
        if size > max {
            return Ok(Err(Body::buffered(frames, Some(body))));
        }
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Ok(Err(Body::buffered(frames, Some(body)))),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(Box::new(e)),
            Ok(Some(Ok(frame))) => {
                size += frame.data_ref().map_or(0, |d| d.len());
                frames.push(frame);
            }
        }
    }
    let mut data = bytes::BytesMut::with_capacity(size);
    let mut trailers = None;
    for frame in frames {
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok(Ok(Replay { data: data.freeze(), trailers }))
}

pub(super) fn rebuild(
    head: &Parts,
    replay: &Replay,
    avoid: Option<SocketAddr>,
    timeout: Option<Duration>,
) -> Request<Body> {
    // Allocated only for a body that has frames (most retried requests have none).
    let mut frames = Vec::new();
    if !replay.data.is_empty() {
        frames.push(Frame::data(replay.data.clone()));
    }
    if let Some(t) = &replay.trailers {
        frames.push(Frame::trailers(t.clone()));
    }
    let mut req = Request::new(Body::buffered(frames, None));
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    *req.extensions_mut() = head.extensions.clone();
    if let Some(addr) = avoid {
        req.extensions_mut().insert(Avoid(addr));
    }
    if let Some(t) = timeout {
        req.extensions_mut().insert(AttemptTimeout(t));
    }
    req
}

/// The `grpc-status` of a response: from its headers (trailers-only form), else from its trailers when the whole
/// body fits in `max` bytes and ends within READ_AHEAD. The response comes back with everything read ahead put back in front.
pub(super) async fn grpc_status(rsp: Response<Body>, max: usize) -> (Response<Body>, Option<u32>) {
    if let Some(code) = parse_status(rsp.headers()) {
        return (rsp, Some(code));
    }
    let (parts, mut body) = rsp.into_parts();
    let mut frames = Vec::new();
    let mut size = 0usize;
    let mut code = None;
    let mut ended = false;
    let deadline = tokio::time::Instant::now() + READ_AHEAD;
    while size <= max {
        let Ok(next) = tokio::time::timeout_at(deadline, body.frame()).await else {
            // A stream, not a unary reply: hand it on now rather than hold the client's headers.
            break;
        };
        match next {
            None => {
                ended = true;
                break;
            }
            Some(Err(error)) => {
                // The client sees the failure as it would have without the read-ahead.
                return (Response::from_parts(parts, Body::buffered_then_error(frames, error)), None);
            }
            Some(Ok(frame)) => {
                if let Some(t) = frame.trailers_ref() {
                    code = parse_status(t);
                }
                size += frame.data_ref().map_or(0, |d| d.len());
                frames.push(frame);
            }
        }
    }
    let rest = (!ended).then_some(body);
    (Response::from_parts(parts, Body::buffered(frames, rest)), code)
}

/// `grpc-status` as a name built once: looked up by `&str`, a name is parsed and lower-cased on every call.
static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The `grpc-status` in `headers` (a response's, trailers-only form, or its trailers).
pub(crate) fn parse_status(headers: &HeaderMap) -> Option<u32> {
    headers.get(&GRPC_STATUS)?.to_str().ok()?.trim().parse().ok()
}
