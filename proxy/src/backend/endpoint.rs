//! The endpoint client: connections to one endpoint address, with a connect timeout. HTTP/1.1 uses the endpoint's
//! keep-alive pool (`h1pool`); HTTP/2 multiplexes every request over one connection. Either way the number of upstream
//! connections does not depend on what authority clients send, and the request keeps its logical authority
//! (`Host` for HTTP/1.1, `:authority` for HTTP/2).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use attache_config::model::UpstreamProtocol;
use http::uri::Authority;
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{watch, Mutex};

pub use super::connect::{Conn, Connector};
use super::h1pool::H1Pool;
use crate::body::Body;
use crate::errors::{BoxError, Refused, UpstreamFailed};
use crate::http::route::Target;
use crate::http::upgrade;
use crate::tls::Alpn;

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

/// The one HTTP/2 connection to an endpoint, (re)established on demand.
#[derive(Debug)]
struct H2Conn {
    connector: Connector,
    sender: Mutex<H2Slot>,
}

/// The live connection's sender, numbered so that a caller can retire exactly the connection it used.
#[derive(Debug, Default)]
struct H2Slot {
    generation: u64,
    sender: Option<Live>,
}

/// A connection's sender, and a flag its task raises when the connection has ended.
#[derive(Clone, Debug)]
struct Live {
    sender: http2::SendRequest<Body>,
    ended: watch::Receiver<bool>,
}

impl H2Conn {
    /// How many fresh connections a request that came back unsent may try before it is refused upward.
    const UNSENT_REDIALS: usize = 2;

    /// After its connection ended, how long a request still unanswered may wait to be answered or failed before it
    /// is taken for lost.
    const LOST_GRACE: Duration = Duration::from_secs(1);

    /// A sender on a live connection, connecting first if there is none.
    async fn sender(&self) -> Result<(u64, Live), BoxError> {
        let mut slot = self.sender.lock().await;
        if let Some(live) = slot.sender.as_ref().filter(|l| !l.sender.is_closed()) {
            return Ok((slot.generation, live.clone()));
        }
        // Boxed: dialling is most of this future's size, and every request's future holds it.
        let live = Box::pin(self.dial()).await?;
        slot.generation += 1;
        slot.sender = Some(live.clone());
        Ok((slot.generation, live))
    }

    async fn dial(&self) -> Result<Live, BoxError> {
        let addr = self.connector.addr();
        let stream = self.connector.connect(Alpn::Http2).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamFailed { addr, source: Box::new(e) })?;
        let (ended_tx, ended) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%addr, %error, "HTTP/2 upstream connection ended");
            }
            ended_tx.send_replace(true);
        });
        Ok(Live { sender, ended })
    }

    /// Stops handing out the connection of `generation`: it handed a request back, so it is closing.
    async fn retire(&self, generation: u64) {
        let mut slot = self.sender.lock().await;
        if slot.generation == generation {
            slot.sender = None;
        }
    }

    /// Sends on the endpoint's connection. A request the connection hands back unsent (it was closing: a GOAWAY
    /// or a close raced the dispatch) goes out again on a fresh connection, so a graceful restart of a healthy
    /// upstream costs no request even on routes without retries.
    async fn send(&self, mut req: Request<Body>) -> Result<Response<Body>, BoxError> {
        let addr = self.connector.addr();
        let mut redials = 0;
        loop {
            let (generation, Live { mut sender, ended }) = self.sender().await?;
            // A failed `ready` means the connection went away before this request touched it.
            let unsent = match sender.ready().await {
                Err(error) => Unsent { error, req },
                Ok(()) => match answered_or_lost(sender.try_send_request(req), ended, addr).await? {
                    Ok(rsp) => return Ok(rsp.map(Body::from)),
                    Err(mut err) => match err.take_message() {
                        Some(req) => Unsent { error: err.into_error(), req },
                        None => return Err(h2_error(addr, err.into_error())),
                    },
                },
            };
            if redials == Self::UNSENT_REDIALS {
                return Err(Box::new(Refused { addr, source: Box::new(unsent.error) }));
            }
            tracing::debug!(%addr, error = %unsent.error, "HTTP/2 request came back unsent; redialing");
            self.retire(generation).await;
            redials += 1;
            req = unsent.req;
        }
    }
}

/// The response, or the error the connection gave. A request the connection still holds when the connection has
/// ended (and a grace period passed) was lost by the client stack (a race between a closing connection and a new
/// stream, hyperium/hyper#2500 and friends): a server answers every stream it took before it closes, so a stream
/// still unanswered was never processed, and it is refused (safe to retry) rather than left to hang.
async fn answered_or_lost<F, T>(response: F, mut ended: watch::Receiver<bool>, addr: SocketAddr) -> Result<T, BoxError>
where
    F: Future<Output = T>,
{
    tokio::pin!(response);
    tokio::select! {
        biased;
        answer = &mut response => return Ok(answer),
        _ = ended.wait_for(|e| *e) => {}
    }
    match tokio::time::timeout(H2Conn::LOST_GRACE, response).await {
        Ok(answer) => Ok(answer),
        Err(_) => {
            tracing::warn!(%addr, "HTTP/2 upstream connection ended without answering or failing a request; refusing it");
            let source: BoxError = "the connection ended without answering or failing the request".into();
            Err(Box::new(Refused { addr, source }))
        }
    }
}

/// A request the HTTP/2 connection never took, and why.
struct Unsent {
    error: hyper::Error,
    req: Request<Body>,
}

impl Endpoint {
    pub fn new(protocol: UpstreamProtocol, pool: PoolSettings, connector: Connector) -> Self {
        let h1 = H1Pool::new(connector.clone(), pool);
        let h2 = Arc::new(H2Conn { connector, sender: Mutex::default() });
        Self { protocol, h1, h2 }
    }

    /// How this endpoint is dialled, for opaque TCP.
    pub fn connector(&self) -> &Connector {
        &self.h2.connector
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

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The authority the request was routed by (its Host then, unless a route filter changed or removed Host).
        let routed = req.extensions().get::<Target>().and_then(|t| t.authority.clone());
        if self.use_h2(req.version()) {
            *req.version_mut() = Version::HTTP_2;
            // `:authority` carries the routed authority; a Host header beside it would be redundant.
            let host = req.headers_mut().remove(http::header::HOST);
            if req.uri().authority().is_none() {
                let authority = routed.or_else(|| host.and_then(|h| Authority::try_from(h.as_bytes()).ok()));
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
            let authority = routed.as_ref().or(req.uri().authority());
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
        let pool = self.h1.clone();
        // An HTTP/1 upgrade (WebSocket) is spliced once both sides have switched protocols.
        let downstream_upgrade = upgrade::take(&mut req);
        Box::pin(async move {
            let mut rsp = pool.send(req).await?;
            if let Some(down) = downstream_upgrade {
                upgrade::splice_if_switching(down, &mut rsp);
            }
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

/// A stream the server refused, or left unprocessed when it went away, or one dropped unsent because its connection
/// was closing, was never processed: say so, so that it is retried like a connect failure.
fn h2_error(addr: SocketAddr, err: hyper::Error) -> BoxError {
    use std::error::Error as _;
    // Dropped before it was ever sent: the connection was going away when the request was queued on it.
    if err.is_canceled() {
        return Box::new(Refused { addr, source: Box::new(err) });
    }
    let mut cur = err.source();
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            // A graceful GOAWAY fails only the streams above its last processed id; an error GOAWAY may fail
            // processed ones too, so only the former counts.
            let unprocessed = (h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR))
                || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            if unprocessed {
                return Box::new(Refused { addr, source: Box::new(err) });
            }
        }
        cur = e.source();
    }
    Box::new(UpstreamFailed { addr, source: Box::new(err) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_request_its_ended_connection_still_holds_is_refused_after_the_grace() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (ended_tx, ended) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let waiting = tokio::spawn(answered_or_lost(std::future::pending::<()>(), ended, addr));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiting.is_finished(), "a live connection's request is not given up on");
        ended_tx.send_replace(true);
        let err = waiting.await.unwrap().unwrap_err();
        assert!(err.is::<Refused>(), "{err}");
        assert_eq!(started.elapsed(), Duration::from_secs(30) + H2Conn::LOST_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_that_comes_with_the_close_wins() {
        let (_ended_tx, ended) = watch::channel(true);
        let answer = answered_or_lost(async { 7 }, ended, "127.0.0.1:1".parse().unwrap()).await.unwrap();
        assert_eq!(answer, 7);
    }
}
