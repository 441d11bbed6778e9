//! Leaf errors of the data path. Each is a small struct with context; `http::rescue` is the one place that maps them
//! to a status and an `x-attache-error` reason by walking the source chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::body::BoxError;

/// No service answers to the request's host, or no route of it matches.
#[derive(Debug, thiserror::Error)]
#[error("no route for host {host:?}")]
pub struct NoRoute {
    pub host: String,
}

/// The request breaks HTTP/1 framing or header rules; answered with 400 and the connection closed.
#[derive(Debug, thiserror::Error)]
#[error("bad request: {reason}")]
pub struct BadRequest {
    pub reason: &'static str,
}

/// Inbound authorization does not admit the caller.
#[derive(Debug, thiserror::Error)]
#[error("{caller} is not authorized")]
pub struct Forbidden {
    pub caller: String,
}

/// A request the proxy deliberately does not carry (e.g. `CONNECT` tunnels).
#[derive(Debug, thiserror::Error)]
#[error("not supported: {what}")]
pub struct Unsupported {
    pub what: &'static str,
}

/// Every endpoint of the backend is ejected by its breaker or failing health checks. Not retried against the same
/// backend.
#[derive(Debug, thiserror::Error)]
#[error("every endpoint of backend {backend} is unavailable (circuit open)")]
pub struct CircuitOpen {
    pub backend: Arc<str>,
}

/// A bulkhead (per-backend concurrency and pending bound) is full.
#[derive(Debug, thiserror::Error)]
#[error("backend {backend} is overloaded: {what}")]
pub struct Overloaded {
    pub backend: Arc<str>,
    pub what: &'static str,
}

/// An attempt took longer than the route's per-try timeout.
#[derive(Debug, thiserror::Error)]
#[error("attempt to {addr} timed out after {after:?}")]
pub struct PerTryTimeout {
    pub addr: SocketAddr,
    pub after: Duration,
}

/// The backend has no endpoint to send to.
#[derive(Debug, thiserror::Error)]
#[error("backend {backend} has no endpoints")]
pub struct NoEndpoints {
    pub backend: Arc<str>,
}

/// The route's deadline passed.
#[derive(Debug, thiserror::Error)]
#[error("request timed out after {0:?}")]
pub struct RequestTimeout(pub Duration);

/// TCP connect to an endpoint failed or timed out. Nothing was sent: always safe to retry.
#[derive(Debug, thiserror::Error)]
#[error("connect to {addr} failed")]
pub struct ConnectFailed {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// The upstream refused the stream before processing it (HTTP/2 REFUSED_STREAM, or a GOAWAY that left it
/// unprocessed). Nothing was processed: always safe to retry.
#[derive(Debug, thiserror::Error)]
#[error("upstream {addr} refused the stream")]
pub struct Refused {
    pub addr: SocketAddr,
    #[source]
    pub source: BoxError,
}

/// The upstream exchange failed after connecting (reset, malformed response, ...).
#[derive(Debug, thiserror::Error)]
#[error("upstream {addr} failed")]
pub struct UpstreamFailed {
    pub addr: SocketAddr,
    #[source]
    pub source: BoxError,
}

/// What the rescue layer answers for an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rescued {
    pub status: http::StatusCode,
    pub reason: &'static str,
    /// Close the downstream connection after answering (framing errors).
    pub close: bool,
}

/// Classifies an error by the first leaf error found in its source chain.
pub fn classify(err: &(dyn std::error::Error + 'static)) -> Rescued {
    use http::StatusCode as S;
    let r = |status, reason| Rescued { status, reason, close: false };
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<NoRoute>() {
            return r(S::NOT_FOUND, "no-route");
        }
        if e.is::<BadRequest>() {
            return Rescued { status: S::BAD_REQUEST, reason: "bad-request", close: true };
        }
        if e.is::<Forbidden>() {
            return r(S::FORBIDDEN, "forbidden");
        }
        if e.is::<Unsupported>() {
            return r(S::NOT_IMPLEMENTED, "unsupported");
        }
        if e.is::<CircuitOpen>() {
            return r(S::SERVICE_UNAVAILABLE, "circuit-open");
        }
        // A listener's concurrency limit or a backend's bulkhead is full.
        if e.is::<Overloaded>() || e.is::<tower::load_shed::error::Overloaded>() {
            return r(S::SERVICE_UNAVAILABLE, "overloaded");
        }
        if e.is::<NoEndpoints>() {
            return r(S::SERVICE_UNAVAILABLE, "no-endpoints");
        }
        if e.is::<ConnectFailed>() {
            return r(S::SERVICE_UNAVAILABLE, "connect-failed");
        }
        if e.is::<RequestTimeout>() || e.is::<PerTryTimeout>() || e.is::<tower::timeout::error::Elapsed>() {
            return r(S::GATEWAY_TIMEOUT, "timeout");
        }
        if e.is::<UpstreamFailed>() || e.is::<Refused>() {
            return r(S::BAD_GATEWAY, "upstream-failed");
        }
        cur = e.source();
    }
    r(S::BAD_GATEWAY, "proxy-error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_through_the_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let leaf = ConnectFailed { addr: ([127, 0, 0, 1], 1).into(), source: io };
        let wrapped = UpstreamWrapper(Box::new(leaf));
        let got = classify(&wrapped);
        assert_eq!(got.status, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(got.reason, "connect-failed");
        assert_eq!(classify(&RequestTimeout(Duration::from_secs(1))).status, http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(classify(&NoRoute { host: "x".into() }).status, http::StatusCode::NOT_FOUND);
        assert!(classify(&BadRequest { reason: "x" }).close);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct UpstreamWrapper(#[source] BoxError);
}
