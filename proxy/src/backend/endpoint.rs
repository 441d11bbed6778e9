//! The endpoint client: connections to one endpoint address, with a connect timeout. HTTP/1.1 uses the endpoint's
//! keep-alive pool (`h1pool`); HTTP/2 multiplexes every request over one connection (`h2conn`). Either way the number of upstream
//! connections does not depend on what authority clients send, and the request keeps its logical authority
//! (`Host` for HTTP/1.1, `:authority` for HTTP/2).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use attache_config::model::UpstreamProtocol;
use http::uri::Authority;
use http::{Request, Response, Uri, Version};

pub use super::connect::{Conn, Connector};
use super::h1pool::H1Pool;
use super::h2conn::H2Conn;
use crate::body::Body;
use crate::errors::BoxError;
use crate::http::route::Target;
use crate::http::upgrade;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Pool settings shared by every endpoint client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// A client for one endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    protocol: UpstreamProtocol,
    h1: Arc<H1Pool>,
    h2: Arc<H2Conn>,
}

impl Endpoint {
    pub fn new(protocol: UpstreamProtocol, pool: PoolSettings, connector: Connector) -> Self {
        let h1 = H1Pool::new(connector.clone(), pool);
        let h2 = Arc::new(H2Conn::new(connector));
        Self { protocol, h1, h2 }
    }

    /// How this endpoint is dialled, for opaque TCP.
    pub fn connector(&self) -> &Connector {
        self.h2.connector()
    }

    fn use_h2(&self, version: Version) -> bool {
        match self.protocol {
            UpstreamProtocol::Http1 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Auto => version == Version::HTTP_2,
        }
    }
}

impl tower::Service<Request<Body>> for Endpoint {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.send(req)
    }
}

impl Endpoint {
    /// Sends `req`: an HTTP/1.1 request that finds an idle connection ready is handed to it now; the future is
    /// the wait for the answer.
    pub fn send(&self, mut req: Request<Body>) -> BoxFuture<Result<Response<Body>, BoxError>> {
        // The authority the request was routed by (its Host then, unless a route filter changed or removed Host),
        // copied only where it is needed: the usual HTTP/1.1 request keeps its Host.
        let routed = |req: &Request<Body>| Target::of(req).and_then(|t| t.authority.clone());
        if self.use_h2(req.version()) {
            *req.version_mut() = Version::HTTP_2;
            // `:authority` carries the routed authority; a Host header beside it would be redundant.
            let host = req.headers_mut().remove(http::header::HOST);
            if req.uri().authority().is_none() {
                let authority = routed(&req).or_else(|| host.and_then(|h| Authority::try_from(h.as_bytes()).ok()));
                match absolute(req.uri(), authority) {
                    Ok(uri) => *req.uri_mut() = uri,
                    Err(e) => return Box::pin(async move { Err(e) }),
                }
            }
            let h2 = self.h2.clone();
            return Box::pin(async move { h2.send(req).await });
        }
        *req.version_mut() = Version::HTTP_11;
        // HTTP/1.1 requires Host; routing sets it, but a route filter may have removed it.
        if !req.headers().contains_key(http::header::HOST) {
            let authority = routed(&req).or_else(|| req.uri().authority().cloned());
            if let Some(host) = authority.and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()) {
                req.headers_mut().insert(http::header::HOST, host);
            }
        }
        // The Host header (set by routing) carries the logical authority; the request line is origin-form
        // (authority-form for CONNECT), as a client talking to the server directly sends it.
        let target = match (req.method() == http::Method::CONNECT, req.uri().authority(), req.uri().path_and_query()) {
            (true, Some(authority), _) => Some(Uri::from(authority.clone())),
            (false, _, Some(path)) => Some(Uri::from(path.clone())),
            _ => None,
        };
        if let Some(uri) = target {
            *req.uri_mut() = uri;
        }
        // An HTTP/1 upgrade (WebSocket) is spliced once both sides have switched protocols.
        let Some(downstream_upgrade) = upgrade::take(&mut req) else { return Box::pin(self.h1.send(req)) };
        let sent = self.h1.send(req);
        Box::pin(async move {
            let mut rsp = sent.await?;
            upgrade::splice_if_switching(downstream_upgrade, &mut rsp);
            Ok(rsp)
        })
    }
}

/// `http://authority/path` for an origin-form request going out as HTTP/2 (`:scheme`, `:authority`, `:path`).
fn absolute(uri: &Uri, authority: Option<Authority>) -> Result<Uri, BoxError> {
    let authority = authority.ok_or(crate::errors::BadRequest { reason: "no authority or Host" })?;
    let path = uri.path_and_query().cloned().unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let uri = Uri::builder().scheme("http").authority(authority).path_and_query(path).build();
    Ok(uri.map_err(|_| crate::errors::BadRequest { reason: "invalid authority" })?)
}
