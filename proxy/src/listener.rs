//! A listener's accept loop and the life of one connection: detect the protocol, then serve HTTP/1, HTTP/2 or
//! forward opaque TCP; drain gracefully on shutdown; close when idle.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use attache_config::model::{Limits, Listener, ListenerProtocol, ListenerTarget, SpiffeId};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt;

use crate::body::Body;
use crate::dataplane::Dataplane;
use crate::detect::{detect, Protocol};
use crate::drain;
use crate::http::h1_guard::{GuardLimits, H1Guard, HeadVerdicts};
use crate::http::meta::{ClientAddr, PeerIdentity};
use crate::http::upgrade::{self, Tunnel};
use crate::http::HttpService;
use crate::io::{Activity, Metered, Prefixed};
use crate::metrics::{ConnLabels, ConnMetrics, Dir, ListenerLabels, Name};
use crate::tls::{ServerTls, TlsMetrics};

/// Everything a listener's connections share.
#[derive(Clone)]
pub struct Context {
    pub name: Arc<str>,
    /// The listener's config as it was when this accept loop started (a changed listener gets a new loop).
    pub listener: Arc<Listener>,
    pub direction: Dir,
    pub plane: watch::Receiver<Arc<Dataplane>>,
    pub http: HttpService,
    pub metrics: ConnMetrics,
    pub drain: drain::Watch,
    /// TLS termination (inbound listeners with `tls`, unless disabled).
    pub tls: Option<Arc<ServerTls>>,
    pub tls_metrics: TlsMetrics,
    /// Authorization decisions of opaque TCP connections are counted with those of HTTP requests.
    pub http_authz: crate::http::authz::AuthzMetrics,
}

/// Accepts until `stop` fires (then hands the socket back, so a renamed listener keeps it without a gap) or
/// draining begins (then closes it). Each connection runs in its own task.
pub async fn accept_loop(tcp: TcpListener, ctx: Context, mut stop: watch::Receiver<bool>) -> Option<TcpListener> {
    let mut drain = ctx.drain.clone();
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return Some(tcp),
            () = drain.signaled() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let ctx = ctx.clone();
                tokio::spawn(async move { serve(stream, peer, ctx).await });
            }
            Err(error) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %ctx.name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Who is at the other end of a connection.
#[derive(Clone, Debug)]
struct Peer {
    addr: SocketAddr,
    /// The verified SPIFFE ID of an mTLS client.
    identity: Option<SpiffeId>,
}

async fn serve(mut stream: TcpStream, addr: SocketAddr, ctx: Context) {
    let _ = stream.set_nodelay(true);
    let plane = ctx.plane.borrow().clone();
    let listener = ctx.listener.clone();
    let limits = plane.snapshot.limits.clone();
    let labels = ListenerLabels { direction: ctx.direction, listener: Name(ctx.name.clone()) };
    let open = ctx.metrics.open.get_or_create_owned(&labels);
    open.inc();
    let _open = scopeguard(move || {
        open.dec();
    });
    // A TLS listener looks even on opaque ports: mTLS clients speak first.
    let (protocol, prefix) = match listener.protocol {
        ListenerProtocol::Opaque if ctx.tls.is_none() => (Protocol::Opaque, bytes::Bytes::new()),
        _ => match detect(&mut stream, limits.detect_timeout).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(error) => return tracing::debug!(peer = %addr, %error, "detect failed"),
        },
    };
    let activity = Activity::default();
    // Bytes are counted on the wire, below TLS.
    let io = Metered::new(
        Prefixed::new(prefix, stream),
        ctx.metrics.read_bytes.get_or_create_owned(&labels),
        ctx.metrics.write_bytes.get_or_create_owned(&labels),
        activity.clone(),
    );
    let conn = Conn { ctx: &ctx, listener: &listener, plane: &plane, limits: &limits, activity };
    let plaintext = Peer { addr, identity: None };
    match (&ctx.tls, protocol) {
        (Some(tls), Protocol::Tls) => conn.terminate_tls(io, tls, addr).await,
        (Some(tls), _) if tls.requires_tls() => {
            ctx.tls_metrics.handshake(ctx.direction, Err("plaintext"));
            tracing::debug!(peer = %addr, listener = %ctx.name, "plaintext on a strict mTLS listener; closing");
        }
        // TLS the listener does not terminate (an app's own HTTPS) passes through as opaque TCP.
        (_, Protocol::Tls) => conn.dispatch(io, Protocol::Opaque, plaintext).await,
        (_, protocol) => conn.dispatch(io, protocol, plaintext).await,
    }
}

/// One accepted connection's context, once its protocol is known.
struct Conn<'a> {
    ctx: &'a Context,
    listener: &'a Listener,
    plane: &'a Dataplane,
    limits: &'a Limits,
    activity: Activity,
}

impl Conn<'_> {
    /// Completes the handshake, then serves what the client speaks inside: by ALPN, else detected.
    async fn terminate_tls<I>(self, io: I, tls: &ServerTls, addr: SocketAddr)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limits = self.limits;
        let Ok(accepted) = crate::tls::accept(io, tls, limits.handshake_timeout, &self.ctx.tls_metrics).await else {
            return;
        };
        let peer = Peer { addr, identity: accepted.identity };
        let mut stream = accepted.stream;
        let (protocol, prefix) = match accepted.alpn.as_deref() {
            Some(crate::tls::config::ALPN_H2) => (Protocol::Http2, bytes::Bytes::new()),
            Some(crate::tls::config::ALPN_HTTP1) => (Protocol::Http1, bytes::Bytes::new()),
            _ if self.listener.protocol == ListenerProtocol::Opaque => (Protocol::Opaque, bytes::Bytes::new()),
            _ => match detect(&mut stream, limits.detect_timeout).await {
                Ok(Some(found)) => found,
                Ok(None) => return,
                Err(error) => return tracing::debug!(peer = %addr, %error, "detect failed"),
            },
        };
        self.dispatch(Prefixed::new(prefix, stream), protocol, peer).await;
    }

    async fn dispatch<I>(self, io: I, protocol: Protocol, peer: Peer)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ctx = self.ctx;
        if protocol == Protocol::Opaque && self.listener.protocol == ListenerProtocol::Http {
            return tracing::debug!(peer = %peer.addr, listener = %ctx.name, "not HTTP on an HTTP-only listener; closing");
        }
        let conn_labels =
            ConnLabels { direction: ctx.direction, listener: Name(ctx.name.clone()), protocol: protocol.as_str() };
        ctx.metrics.accepted.get_or_create(&conn_labels).inc();
        match protocol {
            Protocol::Http1 => serve_h1(io, ctx, self.limits, self.activity, peer).await,
            Protocol::Http2 => serve_h2(io, ctx, self.limits, self.activity, peer).await,
            Protocol::Opaque | Protocol::Tls => serve_tcp(io, &self, peer).await,
        }
    }
}

/// Request extensions every request of a connection carries.
fn connection_extensions(req: &mut hyper::Request<Body>, peer: &Peer) {
    req.extensions_mut().insert(ClientAddr(peer.addr));
    if let Some(id) = &peer.identity {
        req.extensions_mut().insert(PeerIdentity(id.clone()));
    }
}

async fn serve_h1<I>(io: I, ctx: &Context, limits: &Limits, activity: Activity, peer: Peer)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let verdicts = HeadVerdicts::default();
    // The guard must track at least what hyper accepts, or it would stop early and leave later heads unchecked.
    let max_head_bytes = limits.max_head_bytes.max(8192);
    let guard_limits = GuardLimits { max_head_bytes, max_headers: limits.max_header_count };
    let guarded = H1Guard::new(io, verdicts.clone(), guard_limits);
    let http = ctx.http.clone();
    let labels = ListenerLabels { direction: ctx.direction, listener: Name(ctx.name.clone()) };
    let tunnel = Tunnel {
        idle: limits.idle_timeout,
        drain: ctx.drain.clone(),
        open: ctx.metrics.open.get_or_create_owned(&labels),
    };
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::from);
        connection_extensions(&mut req, &peer);
        // The framing guard stops following a connection after a request that may switch protocols (any Upgrade
        // header, CONNECT), and a request with no verdict comes after it stopped: either way, unless the protocol
        // really switches, answer and close, so no later request goes unchecked.
        let verdict = verdicts.pop();
        let unverified = verdict.is_none()
            || req.headers().contains_key(http::header::UPGRADE)
            || req.method() == http::Method::CONNECT;
        if let Some(verdict) = verdict {
            req.extensions_mut().insert(verdict);
        }
        if upgrade::is_upgrade(&req) {
            req.extensions_mut().insert(tunnel.clone());
        }
        let fut = http.clone().oneshot(req);
        async move {
            let mut rsp = fut.await?;
            if unverified && rsp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                rsp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok::<_, std::convert::Infallible>(rsp)
        }
    });
    let mut builder = http1::Builder::new();
    // hyper's header-read timeout also runs while a keep-alive connection waits for its next request, so it is the
    // idle timeout; it also bounds a slow (slowloris) head.
    builder
        .timer(TokioTimer::new())
        .max_headers(limits.max_header_count)
        .max_buf_size(max_head_bytes)
        .header_read_timeout(limits.idle_timeout);
    let conn = builder.serve_connection(TokioIo::new(guarded), svc).with_upgrades();
    drive(conn, |c| c.graceful_shutdown(), ctx.drain.clone(), limits.idle_timeout, activity).await;
}

async fn serve_h2<I>(io: I, ctx: &Context, limits: &Limits, activity: Activity, peer: Peer)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = ctx.http.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::from);
        connection_extensions(&mut req, &peer);
        http.clone().oneshot(req)
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(u32::try_from(limits.max_concurrent_requests).unwrap_or(u32::MAX));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    drive(conn, |c| c.graceful_shutdown(), ctx.drain.clone(), limits.idle_timeout, activity).await;
}

/// Forwards opaque TCP: inbound to the app (when the listener's authorization admits the peer), outbound to the
/// listener's `tcp_backend` (over mTLS when that backend has `tls`).
async fn serve_tcp<I>(io: I, conn: &Conn<'_>, peer: Peer)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (ctx, listener) = (conn.ctx, conn.listener);
    let backend = match &listener.target {
        ListenerTarget::App(_) => {
            if let Some(authz) = &listener.authorization {
                let allowed =
                    ctx.http_authz.record(&listener.name, crate::http::authz::TCP_ROUTE, authz, &peer.identity);
                if !allowed {
                    return tracing::info!(peer = %peer.addr, identity = ?peer.identity, listener = %ctx.name, "TCP connection denied by authorization");
                }
            }
            conn.plane.backend(&crate::dataplane::app_backend_name(&listener.name))
        }
        ListenerTarget::Routed { tcp_backend: Some(name) } => conn.plane.backend(name),
        ListenerTarget::Routed { tcp_backend: None } => None,
    };
    let Some(backend) = backend else {
        return tracing::debug!(peer = %peer.addr, listener = %ctx.name, "opaque connection with no tcp_backend; closing");
    };
    let connectors = backend.connectors();
    match crate::tcp::forward(io, &connectors, conn.limits.idle_timeout, conn.activity.clone()).await {
        Ok((tx, rx)) => tracing::debug!(peer = %peer.addr, listener = %ctx.name, tx, rx, "TCP connection closed"),
        Err(error) => {
            tracing::debug!(peer = %peer.addr, listener = %ctx.name, %error, "TCP connection ended with an error")
        }
    }
}

/// Runs a connection to completion; on drain or idleness asks it to finish (HTTP/1: `Connection: close` after the
/// in-flight response; HTTP/2: GOAWAY), letting in-flight requests complete. A connection that stays idle for
/// another idle period after being asked is dropped.
async fn drive<C, E>(conn: C, shutdown: fn(Pin<&mut C>), mut drain: drain::Watch, idle: Duration, activity: Activity)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut closing = false;
    let mut seen = activity.count();
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(error) = res {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = drain.signaled(), if !closing => {
                closing = true;
                shutdown(conn.as_mut());
            }
            () = tokio::time::sleep(idle) => {
                let now = activity.count();
                if now == seen && closing {
                    // Asked to finish and still idle: a stalled body or a client that stopped reading.
                    tracing::debug!("closing a connection idle through its graceful shutdown");
                    return;
                }
                if now == seen {
                    closing = true;
                    shutdown(conn.as_mut());
                }
                seen = now;
            }
        }
    }
}

/// Runs `f` on drop.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
