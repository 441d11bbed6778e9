//! The HTTP/1.1 keep-alive connections to one endpoint: a stack of idle connections (the most recently used first,
//! so a quiet period lets the others expire), each going back on the stack when its response body has been read to
//! the end. Written for the proxy instead of hyper-util's general client: no per-request task to return a
//! connection, no pool key to hash, no multi-kilobyte request future to move (measured in BENCHMARKS.md).
//!
//! A connection is only reused once hyper says it is ready again; one that closed, carried an unfinished body, or
//! switched protocols is never handed out. A request a connection gives back unsent (it was closing) goes out on
//! another one.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::connect::Connector;
use super::endpoint::PoolSettings;
use crate::body::{Body, BodyTap};
use crate::errors::{BoxError, ConnectFailed, Refused, UpstreamFailed};
use crate::tls::Alpn;

/// How many fresh connections a request that came back unsent may try before it is refused upward.
const UNSENT_REDIALS: usize = 2;

#[derive(Debug)]
pub struct H1Pool {
    connector: Connector,
    settings: PoolSettings,
    /// Idle connections, the most recently returned at the back.
    idle: Mutex<VecDeque<Idle>>,
    /// A task is expiring idle connections (at most one per pool, only while any are idle).
    reaping: AtomicBool,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

impl Idle {
    fn usable(&self, fresh_since: Option<Instant>) -> bool {
        !self.sender.is_closed() && fresh_since.is_none_or(|limit| self.since > limit)
    }
}

impl H1Pool {
    pub fn new(connector: Connector, settings: PoolSettings) -> Arc<Self> {
        Arc::new(Self { connector, settings, idle: Mutex::default(), reaping: AtomicBool::new(false) })
    }

    /// Sends `req` (origin-form URI, `Host` set) on an idle connection, or a new one. An idle connection that is
    /// ready takes the request now, so the request is not moved through this future; a request it gives back
    /// unsent (the connection was closing) goes out on another one.
    pub fn send(self: &Arc<Self>, req: Request<Body>) -> impl Future<Output = Result<Response<Body>, BoxError>> {
        let first = match self.checkout() {
            Some(mut sender) => Ok((sender.try_send_request(req), sender)),
            None => Err(req),
        };
        let pool = self.clone();
        async move {
            let (req, redials) = match first {
                Err(req) => (req, 0),
                Ok((sent, sender)) => match sent.await {
                    Ok(rsp) => return Ok(pool.track(rsp, sender)),
                    // Not counted: it may have been refused before it went out (the connection stopped being
                    // ready after the checkout), as a pooled connection failing `ready` is not counted below.
                    Err(err) => (pool.unsent(err, true, 0)?, 0),
                },
            };
            pool.send_from(req, redials).await
        }
    }

    /// `send` after `redials` requests came back unsent: on the next idle connection, or a new one.
    async fn send_from(
        self: &Arc<Self>,
        mut req: Request<Body>,
        mut redials: usize,
    ) -> Result<Response<Body>, BoxError> {
        let addr = self.connector.addr();
        loop {
            let (mut sender, pooled) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: dialling (TCP, TLS, the handshake) is most of this future's size, and most requests find
                // a pooled connection; the request's future is moved into its box whole.
                None => (Box::pin(self.connect()).await?, false),
            };
            // A fresh connection finishes its handshake here; one that is closing fails here, before the request
            // touched it (a pooled one: the next idle one is tried; the stack is finite).
            if let Err(error) = sender.ready().await {
                tracing::debug!(%addr, %error, pooled, "HTTP/1.1 upstream connection closed before use");
                if pooled {
                    continue;
                }
                return Err(dropped_at_once(addr, error));
            }
            match sender.try_send_request(req).await {
                Ok(rsp) => return Ok(self.track(rsp, sender)),
                Err(err) => req = self.unsent(err, pooled, redials)?,
            }
            redials += 1;
        }
    }

    /// The request a connection gave back unsent, to try on another one; or the error to answer with: it was sent
    /// (hyper failed it after it went out), it came back from a fresh connection, or it came back too often.
    fn unsent(
        &self,
        mut err: hyper::client::conn::TrySendError<Request<Body>>,
        pooled: bool,
        redials: usize,
    ) -> Result<Request<Body>, BoxError> {
        let addr = self.connector.addr();
        let Some(unsent) = err.take_message() else {
            return Err(Box::new(UpstreamFailed { addr, source: Box::new(err.into_error()) }));
        };
        let error = err.into_error();
        if !pooled {
            return Err(dropped_at_once(addr, error));
        }
        // A kept-alive connection the server was closing as the request went out: another one may take it.
        if redials == UNSENT_REDIALS {
            return Err(Box::new(Refused { addr, source: Box::new(error) }));
        }
        tracing::debug!(%addr, %error, "HTTP/1.1 request came back unsent; trying another connection");
        Ok(unsent)
    }

    /// The most recently used idle connection that is open, within the idle timeout and ready for a request now.
    /// One not ready yet stays (hyper is still finishing its last exchange, e.g. a request body the server answered
    /// early): a request never waits behind another request's upload.
    fn checkout(&self) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().ok()?;
        let fresh_since = self.fresh_since();
        // Closed or expired connections on top go at once; the reaper takes those further down.
        while idle.back().is_some_and(|i| !i.usable(fresh_since)) {
            idle.pop_back();
        }
        let ready = idle.iter().rposition(|i| i.usable(fresh_since) && i.sender.is_ready())?;
        idle.remove(ready).map(|i| i.sender)
    }

    async fn connect(&self) -> Result<http1::SendRequest<Body>, BoxError> {
        let addr = self.connector.addr();
        let stream = self.connector.connect(Alpn::Http1).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| UpstreamFailed { addr, source: Box::new(e) })?;
        tokio::spawn(async move {
            // An HTTP/1 upgrade (WebSocket) takes the connection over once both sides switched.
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%addr, %error, "HTTP/1.1 upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// The response, whose connection goes back on the stack once the body has been read to its end.
    fn track(
        self: &Arc<Self>,
        rsp: Response<hyper::body::Incoming>,
        sender: http1::SendRequest<Body>,
    ) -> Response<Body> {
        use http_body::Body as _;
        // After a protocol switch the connection is the tunnel's.
        if rsp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            return rsp.map(Body::from);
        }
        // A body already complete (HEAD, 204, 304, Content-Length: 0) may never be polled.
        if rsp.body().is_end_stream() {
            self.put_back(sender);
            return rsp.map(Body::from);
        }
        let back = GiveBack { pool: Arc::downgrade(self), sender: Some(sender) };
        rsp.map(|b| Body::from(b).tapped(Box::new(back)))
    }

    fn put_back(self: &Arc<Self>, sender: http1::SendRequest<Body>) {
        if sender.is_closed() || self.settings.max_idle == 0 {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        if idle.len() >= self.settings.max_idle {
            // The oldest goes: the stack keeps the connections most likely to be warm.
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: Instant::now() });
        if !self.reaping.swap(true, Ordering::AcqRel) {
            tokio::spawn(reap(Arc::downgrade(self), self.settings.idle_timeout));
        }
    }

    /// Drops idle connections past the idle timeout; `false` once none are left (the reaper then stops).
    fn expire(&self) -> bool {
        let Ok(mut idle) = self.idle.lock() else { return false };
        let fresh_since = self.fresh_since();
        idle.retain(|i| i.usable(fresh_since));
        if idle.is_empty() {
            // Under the lock, so a connection put back now sees the flag down and starts a new reaper.
            self.reaping.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Connections idle since before this have expired (`None`: the process is younger than the idle timeout).
    fn fresh_since(&self) -> Option<Instant> {
        Instant::now().checked_sub(self.settings.idle_timeout)
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }
}

/// A fresh connection that closed before the request could be sent: the endpoint accepts and drops connections (a
/// dying process, a TLS peer rejecting our certificate after the handshake), which is a connect failure: safe to
/// retry, since nothing was sent, and counted by the breaker (a `Refused` would not be).
fn dropped_at_once(addr: std::net::SocketAddr, error: hyper::Error) -> BoxError {
    Box::new(ConnectFailed { addr, source: std::io::Error::other(error) })
}

/// Expires idle connections every half idle timeout while there are any, so a quiet endpoint holds none for longer
/// than about 1.5 times the timeout.
async fn reap(pool: Weak<H1Pool>, idle_timeout: std::time::Duration) {
    loop {
        tokio::time::sleep(idle_timeout / 2).await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.expire() {
            return;
        }
    }
}

/// Rides on a response body: puts the connection back when the body ended cleanly; dropped early, the connection
/// goes with it (hyper closes a connection whose body was not read).
struct GiveBack {
    pool: Weak<H1Pool>,
    sender: Option<http1::SendRequest<Body>>,
}

impl BodyTap for GiveBack {
    fn data(&mut self, _: usize) {}

    fn finished(&mut self) {
        if let (Some(pool), Some(sender)) = (self.pool.upgrade(), self.sender.take()) {
            pool.put_back(sender);
        }
    }
}

#[cfg(test)]
#[path = "h1pool_tests.rs"]
mod tests;
