//! The endpoint client: pooled HTTP/1.1 and HTTP/2 connections to one endpoint address, with a connect timeout.
//! The request keeps its logical authority (`Host` / `:authority`); only the socket goes to the endpoint.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use attache_config::model::UpstreamProtocol;
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::body::Body;
use crate::errors::{BoxError, ConnectFailed, UpstreamFailed};
use crate::http::upgrade;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Pool settings shared by every endpoint client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

/// Dials one fixed address, whatever the URI says.
#[derive(Clone, Debug)]
struct Connector {
    addr: SocketAddr,
    timeout: Duration,
}

/// A client for one endpoint.
#[derive(Clone, Debug)]
pub struct Endpoint {
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    h1: Client<Connector, Body>,
    h2: Client<Connector, Body>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectFailed;
    type Future = BoxFuture<Result<Self::Response, ConnectFailed>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let Self { addr, timeout } = self.clone();
        Box::pin(async move {
            let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => return Err(ConnectFailed { addr, source }),
                Err(_) => {
                    let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                    return Err(ConnectFailed { addr, source });
                }
            };
            let _ = stream.set_nodelay(true);
            Ok(TokioIo::new(stream))
        })
    }
}

impl Endpoint {
    pub fn new(addr: SocketAddr, protocol: UpstreamProtocol, connect_timeout: Duration, pool: PoolSettings) -> Self {
        let connector = Connector { addr, timeout: connect_timeout };
        let client = |h2_only: bool| {
            Client::builder(TokioExecutor::new())
                .timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(pool.idle_timeout)
                .pool_max_idle_per_host(pool.max_idle)
                .http2_only(h2_only)
                .build(connector.clone())
        };
        Self { addr, protocol, h1: client(false), h2: client(true) }
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
        let h2 = self.use_h2(req.version());
        *req.version_mut() = if h2 { Version::HTTP_2 } else { Version::HTTP_11 };
        let client = if h2 { self.h2.clone() } else { self.h1.clone() };
        let addr = self.addr;
        // An HTTP/1 upgrade (WebSocket) is spliced once both sides have switched protocols.
        let downstream_upgrade = (!h2).then(|| upgrade::take(&mut req)).flatten();
        Box::pin(async move {
            let rsp = client.request(req).await.map_err(|e| client_error(addr, e))?;
            let mut rsp = rsp.map(Body::from);
            if let Some(down) = downstream_upgrade {
                upgrade::splice_if_switching(down, &mut rsp);
            }
            Ok(rsp)
        })
    }
}

fn client_error(addr: SocketAddr, err: hyper_util::client::legacy::Error) -> BoxError {
    use std::error::Error as _;
    if err.is_connect() {
        let mut cur = err.source();
        while let Some(e) = cur {
            if let Some(cf) = e.downcast_ref::<ConnectFailed>() {
                let source = std::io::Error::new(cf.source.kind(), cf.source.to_string());
                return Box::new(ConnectFailed { addr: cf.addr, source });
            }
            cur = e.source();
        }
        let source = std::io::Error::other(err.to_string());
        return Box::new(ConnectFailed { addr, source });
    }
    Box::new(UpstreamFailed { addr, source: Box::new(err) })
}
