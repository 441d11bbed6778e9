//! Mock backends: HTTP servers with routes and ready-made handlers, a WebSocket-upgrade echo, TCP echo/banner, and
//! an mTLS probe that reports which client certificate a sidecar dialled with.
//!
//! HTTP servers route by exact path (or by prefix with [`Builder::route_prefix`]); a request matching no route
//! gets `404` with body `no route for <path>`. Every response, including that 404, carries
//! `x-server-name: <name>` (set with [`Builder::name`], default `"mock"`) unless the handler set it itself.
//! Each server records what it saw (see [`Server`]); dropping the [`Server`] stops it and its connections.

mod handlers;
mod lingering;
mod mtls;
mod tcp;
mod websocket;

pub use self::handlers::{chunks, echo, grpc_frame, ok, slow, status, trailers, MockHandler, ServerName};
pub use self::lingering::Lingering;
pub use self::mtls::{mtls_probe, ClientCert, MtlsServer};
pub use self::tcp::{tcp_banner, tcp_echo, tcp_echo_reply, TcpBuilder, TcpServer};
pub use self::websocket::{websocket_accept, websocket_echo, WebSocketBuilder, WebSocketServer};

use crate::{AbortOnDrop, Body};
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tokio::{net::TcpListener, task::JoinSet};

/// Builds a mock HTTP server; see [`http1`], [`http2`], [`auto`].
#[must_use]
pub struct Builder {
    protocol: Protocol,
    bind: std::net::IpAddr,
    name: String,
    routes: Vec<(Match, Handler)>,
    fallback: Option<Handler>,
}

/// A running mock HTTP server. Dropping it stops the server and aborts its connections.
pub struct Server {
    addr: SocketAddr,
    name: String,
    log: Arc<Log>,
    _task: AbortOnDrop,
}

/// What a mock server saw of one request (head only; handlers see the body).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

type Handler = Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Response<Body>> + Send + Sync>;

#[derive(Clone, Copy, Debug)]
enum Protocol {
    Http1,
    Http2,
    Auto,
}

enum Match {
    Exact(String),
    Prefix(String),
}

#[derive(Default)]
struct Log {
    connections: Mutex<usize>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// An HTTP/1.1-only mock server (upgrades enabled).
pub fn http1() -> Builder {
    Builder::new(Protocol::Http1)
}

/// An HTTP/2-only mock server, cleartext with prior knowledge (h2c, no `Upgrade: h2c`).
pub fn http2() -> Builder {
    Builder::new(Protocol::Http2)
}

/// A mock server speaking HTTP/1.1 or h2c prior knowledge, detected per connection.
pub fn auto() -> Builder {
    Builder::new(Protocol::Auto)
}

impl Builder {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            name: "mock".into(),
            routes: Vec::new(),
            fallback: None,
        }
    }

    /// Sets the name reported in `x-server-name` and in [`echo`]'s JSON.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Serves requests whose path is exactly `path` (query ignored) with `handler`.
    pub fn route<H, F>(mut self, path: &str, handler: H) -> Self
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        self.routes.push((Match::Exact(path.into()), boxed(handler)));
        self
    }

    /// Serves requests whose path starts with `prefix` with `handler`. Routes are tried in the order added.
    pub fn route_prefix<H, F>(mut self, prefix: &str, handler: H) -> Self
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        self.routes.push((Match::Prefix(prefix.into()), boxed(handler)));
        self
    }

    /// Serves requests matching no route with `handler` instead of the default 404.
    pub fn fallback<H, F>(mut self, handler: H) -> Self
    where
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        self.fallback = Some(boxed(handler));
        self
    }

    /// Listens on `ip` (port 0) instead of 127.0.0.1, e.g. the end of a veth pair a test made.
    pub fn bind_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.bind = ip;
        self
    }

    /// Binds `127.0.0.1:0` (or the `bind_ip`) and starts serving. Panics if binding fails.
    pub async fn run(self) -> Server {
        let listener = TcpListener::bind((self.bind, 0)).await.expect("bind mock server");
        let addr = listener.local_addr().expect("mock server address");
        let log = Arc::new(Log::default());
        let routes = Arc::new(Routes {
            name: self.name.clone(),
            header: HeaderValue::from_str(&self.name).expect("server name must be a valid header value"),
            routes: self.routes,
            fallback: self.fallback,
            log: log.clone(),
        });
        let protocol = self.protocol;
        let task = AbortOnDrop::spawn(accept_loop(listener, protocol, routes, log.clone()));
        tracing::debug!(%addr, name = %self.name, ?protocol, "mock server listening");
        Server { addr, name: self.name, log, _task: task }
    }
}

impl Server {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's name (as in `x-server-name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        *self.log.connections.lock().unwrap()
    }

    /// How many requests were received (routed or not).
    pub fn requests(&self) -> usize {
        self.log.requests.lock().unwrap().len()
    }

    /// How many requests were received for exactly `path` (query ignored).
    pub fn requests_to(&self, path: &str) -> usize {
        self.log.requests.lock().unwrap().iter().filter(|r| r.uri.path() == path).count()
    }

    /// Requests received per path.
    pub fn requests_by_path(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.log.requests.lock().unwrap().iter() {
            *counts.entry(r.uri.path().to_owned()).or_insert(0) += 1;
        }
        counts
    }

    /// The distinct HTTP versions of the requests received, in first-seen order.
    pub fn versions(&self) -> Vec<Version> {
        let mut seen = Vec::new();
        for r in self.log.requests.lock().unwrap().iter() {
            if !seen.contains(&r.version) {
                seen.push(r.version);
            }
        }
        seen
    }

    /// Every request head received, in arrival order.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.log.requests.lock().unwrap().clone()
    }

    /// The most recent request head, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.log.requests.lock().unwrap().last().cloned()
    }

    /// The headers of the most recent request (empty if none), e.g. to assert hop-by-hop headers were stripped.
    pub fn last_headers(&self) -> HeaderMap {
        self.last_request().map(|r| r.headers).unwrap_or_default()
    }
}

struct Routes {
    name: String,
    header: HeaderValue,
    routes: Vec<(Match, Handler)>,
    fallback: Option<Handler>,
    log: Arc<Log>,
}

impl Routes {
    async fn call(self: Arc<Self>, mut req: Request<Incoming>) -> Response<Body> {
        self.log.requests.lock().unwrap().push(RecordedRequest {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        });
        req.extensions_mut().insert(ServerName(self.name.clone()));
        let path = req.uri().path();
        let handler = self
            .routes
            .iter()
            .find(|(m, _)| match m {
                Match::Exact(p) => p == path,
                Match::Prefix(p) => path.starts_with(p.as_str()),
            })
            .map(|(_, h)| h)
            .or(self.fallback.as_ref());
        let mut rsp = match handler {
            Some(h) => h(req).await,
            None => {
                let body = format!("no route for {path}");
                let mut rsp = Response::new(crate::full(body));
                *rsp.status_mut() = StatusCode::NOT_FOUND;
                rsp
            }
        };
        rsp.headers_mut().entry("x-server-name").or_insert_with(|| self.header.clone());
        rsp
    }
}

fn boxed<H, F>(handler: H) -> Handler
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(handler(req)))
}

async fn accept_loop(listener: TcpListener, protocol: Protocol, routes: Arc<Routes>, log: Arc<Log>) {
    // Connections live in this set, so aborting the accept loop aborts them too.
    let mut conns = JoinSet::new();
    loop {
        let io = match listener.accept().await {
            Ok((io, _)) => TokioIo::new(io),
            Err(error) => {
                tracing::warn!(%error, "mock server accept failed");
                continue;
            }
        };
        *log.connections.lock().unwrap() += 1;
        let routes = routes.clone();
        let svc = hyper::service::service_fn(move |req| {
            let routes = routes.clone();
            async move { Ok::<_, std::convert::Infallible>(routes.call(req).await) }
        });
        conns.spawn(async move {
            let res = match protocol {
                Protocol::Http1 => hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .with_upgrades()
                    .await
                    .map_err(|e| e.to_string()),
                Protocol::Http2 => hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await
                    .map_err(|e| e.to_string()),
                Protocol::Auto => {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.serve_connection_with_upgrades(io, svc).await.map_err(|e| e.to_string())
                }
            };
            if let Err(error) = res {
                tracing::debug!(%error, "mock server connection ended with an error");
            }
        });
        while conns.try_join_next().is_some() {}
    }
}
