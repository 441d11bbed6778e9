//! Test clients: hyper `client::conn` clients (h1, h2c), the real `curl` and `openssl s_client` binaries, raw TCP,
//! and a raw WebSocket upgrade client.
//!
//! The hyper clients hold at most one connection, opened lazily on the first request and reused until it closes
//! or [`Client::reconnect`] is called, so a test controls exactly which connection a request uses.

mod curl;
mod openssl;
mod raw;

pub use self::curl::{curl, Curl};
pub use self::openssl::{s_client, Handshake, SClient};
pub use self::raw::{raw_tcp, websocket, websocket_handshake, RawConn, RawResponse};

use crate::{AbortOnDrop, Body, DEFAULT_TIMEOUT};
use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::{body::Incoming, client::conn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};
use tokio::{net::TcpStream, sync::Mutex};

/// A fully read response.
#[derive(Clone, Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Trailers, if the response had any (hyper clients only; curl never reports them).
    pub trailers: Option<HeaderMap>,
}

/// An HTTP client over a single hyper `client::conn` connection; see [`http1`], [`http2`].
pub struct Client {
    addr: SocketAddr,
    version: Version,
    timeout: Duration,
    opened: AtomicUsize,
    conn: Mutex<Option<Conn>>,
}

enum Sender {
    H1(conn::http1::SendRequest<Body>),
    H2(conn::http2::SendRequest<Body>),
}

struct Conn {
    sender: Sender,
    _task: AbortOnDrop,
}

/// An HTTP/1.1 client for `addr` (connects lazily; upgrades enabled).
pub fn http1(addr: SocketAddr) -> Client {
    Client::new(addr, Version::HTTP_11)
}

/// An HTTP/2 client for `addr`, cleartext with prior knowledge (connects lazily).
pub fn http2(addr: SocketAddr) -> Client {
    Client::new(addr, Version::HTTP_2)
}

impl TestResponse {
    /// Reads a hyper response fully (body and trailers).
    pub async fn read(rsp: Response<Incoming>) -> Result<Self> {
        let (parts, body) = rsp.into_parts();
        let collected = body.collect().await.context("reading response body")?;
        let trailers = collected.trailers().cloned();
        Ok(Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON. Panics, showing the status and body, if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        self.try_json().unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The body as JSON.
    pub fn try_json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response ({}) body is not JSON: {:?}", self.status, self.text()))
    }

    /// A response header as a string (the first value), if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A trailer as a string, if present.
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers.as_ref()?.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    fn new(addr: SocketAddr, version: Version) -> Self {
        Self { addr, version, timeout: DEFAULT_TIMEOUT, opened: AtomicUsize::new(0), conn: Mutex::new(None) }
    }

    /// Bounds each request (connect, response head and body) by `timeout` (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The address this client connects to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections this client has opened so far.
    pub fn connections_opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    /// Closes the current connection (if any); the next request opens a new one.
    pub async fn reconnect(&self) {
        self.conn.lock().await.take();
    }

    /// A request builder with the right target form: for HTTP/1 origin-form `path` plus `Host: authority`;
    /// for HTTP/2 the absolute URI `http://{authority}{path}` (becoming `:authority`/`:path`).
    pub fn builder(&self, method: Method, authority: &str, path: &str) -> http::request::Builder {
        let b = Request::builder().method(method);
        if self.version == Version::HTTP_2 {
            b.uri(format!("http://{authority}{path}")).version(Version::HTTP_2)
        } else {
            b.uri(path).header(header::HOST, authority)
        }
    }

    /// `GET path` for `authority`, read fully.
    pub async fn get(&self, authority: &str, path: &str) -> Result<TestResponse> {
        self.request(self.builder(Method::GET, authority, path).body(crate::empty())?).await
    }

    /// `POST path` for `authority` with `body`, read fully.
    pub async fn post(&self, authority: &str, path: &str, body: impl Into<Bytes>) -> Result<TestResponse> {
        self.request(self.builder(Method::POST, authority, path).body(crate::full(body))?).await
    }

    /// Sends `req` and reads the response fully, all within the client's timeout. The request goes out as
    /// given: over HTTP/1 an absolute URI is sent in absolute-form (as to an HTTP proxy) and no `Host` is added.
    pub async fn request(&self, req: Request<Body>) -> Result<TestResponse> {
        let what = format!("{} {}", req.method(), req.uri());
        let fut = async { TestResponse::read(self.send_inner(req).await?).await };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| anyhow!("{what}: no complete response within {:?}", self.timeout))?
    }

    /// Sends `req` and returns as soon as the response head arrives (bounded by the timeout); the body streams.
    /// Read it with [`next_chunk`]. For HTTP/2, a request without an authority in its URI takes it from `Host`.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>> {
        let what = format!("{} {}", req.method(), req.uri());
        tokio::time::timeout(self.timeout, self.send_inner(req))
            .await
            .map_err(|_| anyhow!("{what}: no response head within {:?}", self.timeout))?
    }

    /// A gRPC-style unary call: `POST path` with `content-type: application/grpc`, `te: trailers` and `message`
    /// wrapped in a gRPC frame; the response is read fully, trailers included (see [`TestResponse::trailer`]).
    pub async fn grpc_unary(&self, authority: &str, path: &str, message: &[u8]) -> Result<TestResponse> {
        let req = self
            .builder(Method::POST, authority, path)
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers")
            .body(crate::full(crate::server::grpc_frame(message)))?;
        self.request(req).await
    }

    async fn send_inner(&self, mut req: Request<Body>) -> Result<Response<Incoming>> {
        let mut guard = self.conn.lock().await;
        let closed = match guard.as_ref().map(|c| &c.sender) {
            Some(Sender::H1(s)) => s.is_closed(),
            Some(Sender::H2(s)) => s.is_closed(),
            None => true,
        };
        if closed {
            *guard = Some(self.connect().await?);
        }
        let conn = guard.as_mut().expect("connected");
        let fut = match &mut conn.sender {
            Sender::H1(s) => {
                s.ready().await.context("HTTP/1 connection not ready")?;
                s.send_request(req)
            }
            Sender::H2(s) => {
                s.ready().await.context("HTTP/2 connection not ready")?;
                if req.uri().authority().is_none() {
                    let host = req.headers_mut().remove(header::HOST).context("HTTP/2 request needs an authority")?;
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    *req.uri_mut() = Uri::try_from(format!("http://{}{pq}", host.to_str()?))?;
                }
                // The h2 sender is cloneable, so concurrent requests need not wait for this one.
                let mut s = s.clone();
                drop(guard);
                return s.send_request(req).await.context("HTTP/2 request failed");
            }
        };
        drop(guard);
        fut.await.context("HTTP/1 request failed")
    }

    async fn connect(&self) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr).await.with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let io = TokioIo::new(tcp);
        self.opened.fetch_add(1, Ordering::SeqCst);
        let conn = match self.version {
            Version::HTTP_2 => {
                let (sender, conn) = conn::http2::handshake(TokioExecutor::new(), io).await?;
                let task = AbortOnDrop::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "h2 client connection ended");
                    }
                });
                Conn { sender: Sender::H2(sender), _task: task }
            }
            Version::HTTP_11 | Version::HTTP_10 => {
                let (sender, conn) = conn::http1::handshake(io).await?;
                let task = AbortOnDrop::spawn(async move {
                    if let Err(error) = conn.with_upgrades().await {
                        tracing::debug!(%error, "h1 client connection ended");
                    }
                });
                Conn { sender: Sender::H1(sender), _task: task }
            }
            v => bail!("unsupported client version {v:?}"),
        };
        Ok(conn)
    }
}

/// The next data chunk of a streaming body (skipping trailers frames), or `None` at the end; bounded by
/// [`DEFAULT_TIMEOUT`].
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>> {
    loop {
        let frame = tokio::time::timeout(DEFAULT_TIMEOUT, body.frame())
            .await
            .map_err(|_| anyhow!("no body frame within {DEFAULT_TIMEOUT:?}"))?;
        match frame {
            None => return Ok(None),
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Parses an HTTP version as curl prints it (`1.0`, `1.1`, `2`, `3`).
pub(crate) fn parse_version(v: &str) -> Result<Version> {
    Ok(match v.trim() {
        "1.0" => Version::HTTP_10,
        "1.1" => Version::HTTP_11,
        "2" => Version::HTTP_2,
        "3" => Version::HTTP_3,
        other => bail!("unknown HTTP version {other:?}"),
    })
}

pub(crate) fn header_value(v: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(v).with_context(|| format!("invalid header value {v:?}"))
}
