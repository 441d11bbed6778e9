//! A listener's accept loop and the life of one connection: detect the protocol (and terminate TLS), then serve
//! HTTP/1 or HTTP/2 (`http`) or forward opaque TCP (`opaque`); drain gracefully on shutdown; close when idle.

mod http;
mod on_wake;
mod opaque;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_config::model::{Limits, Listener, ListenerProtocol, SpiffeId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use self::http::{serve_h1, serve_h2};
use self::opaque::serve_tcp;
use crate::dataplane::Dataplane;
use crate::detect::{detect, Protocol};
use crate::drain;
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
    /// Turns true when a reload replaces this listener: stop accepting, finish HTTP connections.
    pub retire: watch::Receiver<bool>,
    /// TLS termination (inbound listeners with `tls`, unless disabled).
    pub tls: Option<Arc<ServerTls>>,
    pub tls_metrics: TlsMetrics,
    /// Authorization decisions of opaque TCP connections are counted with those of HTTP requests.
    pub http_authz: crate::http::authz::AuthzMetrics,
}

/// Accepts until `stop` fires (then hands the socket back, so a renamed listener keeps it without a gap) or
/// draining begins (then closes it). Each connection runs in its own task.
pub async fn accept_loop(tcp: TcpListener, ctx: Context) -> Option<TcpListener> {
    let mut stop = ctx.retire.clone();
    let mut drain = ctx.drain.clone();
    loop {
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            _ = stop.wait_for(|retired| *retired) => return Some(tcp),
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
    /// Said nothing within the detect timeout (so the connection was taken for server-speaks-first TCP).
    silent: bool,
    /// Where an intercepted (iptables-redirected) connection was going: a service's address.
    original_dst: Option<SocketAddr>,
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
    // Intercepted outbound: a mesh service's address is proxied; anything else goes where the app sent it.
    let original_dst = match ctx.direction {
        Dir::Outbound => crate::redirect::original_dst(&stream),
        Dir::Inbound => None,
    };
    if let Some(dst) = original_dst.filter(|dst| plane.snapshot.service_at(*dst).is_none()) {
        let conn_labels = ConnLabels { direction: ctx.direction, listener: Name(ctx.name.clone()), protocol: "tcp" };
        ctx.metrics.accepted.get_or_create(&conn_labels).inc();
        let activity = Activity::default();
        let io = Metered::new(
            stream,
            ctx.metrics.read_bytes.get_or_create_owned(&labels),
            ctx.metrics.write_bytes.get_or_create_owned(&labels),
            activity.clone(),
        );
        return Box::pin(opaque::passthrough(io, activity, addr, dst, &ctx, &limits)).await;
    }
    // A TLS listener looks even on opaque ports: mTLS clients speak first.
    let (protocol, prefix) = match listener.protocol {
        ListenerProtocol::Opaque if ctx.tls.is_none() => (Protocol::Opaque, bytes::Bytes::new()),
        _ => match detect_or_close(&mut stream, &limits, addr).await {
            Some(found) => found,
            None => return,
        },
    };
    // Detection ran and gave up on a client that said nothing: a server-speaks-first protocol, or a client that
    // waits to slip HTTP past the HTTP pipeline (refused inbound, see `RefuseHttp`).
    let detected = listener.protocol != ListenerProtocol::Opaque || ctx.tls.is_some();
    let silent = detected && protocol == Protocol::Opaque && prefix.is_empty();
    let activity = Activity::default();
    // Bytes are counted on the wire, below TLS.
    let io = Metered::new(
        Prefixed::new(prefix, stream),
        ctx.metrics.read_bytes.get_or_create_owned(&labels),
        ctx.metrics.write_bytes.get_or_create_owned(&labels),
        activity.clone(),
    );
    let conn = Conn { ctx: &ctx, listener: &listener, plane: &plane, limits: &limits, activity };
    let plaintext = Peer { addr, identity: None, silent, original_dst };
    // Each connection's task holds the future of its path: the plaintext HTTP/1 one inline, the larger rest
    // (TLS state, HTTP/2's connection, a TCP relay's buffers) boxed, so that a thousand keep-alive HTTP/1
    // connections do not each reserve the largest path's state.
    match (&ctx.tls, protocol) {
        (Some(tls), Protocol::Tls) => Box::pin(conn.terminate_tls(io, tls, addr)).await,
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
        let mut peer = Peer { addr, identity: accepted.identity, silent: false, original_dst: None };
        let mut stream = accepted.stream;
        // An opaque listener carries bytes whatever the client offers; otherwise ALPN decides, or detection.
        let (protocol, prefix) = match accepted.alpn.as_deref() {
            _ if self.listener.protocol == ListenerProtocol::Opaque => (Protocol::Opaque, bytes::Bytes::new()),
            Some(crate::tls::config::ALPN_H2) => (Protocol::Http2, bytes::Bytes::new()),
            Some(crate::tls::config::ALPN_HTTP1) => (Protocol::Http1, bytes::Bytes::new()),
            _ => match detect_or_close(&mut stream, limits, addr).await {
                Some(found) => found,
                None => return,
            },
        };
        peer.silent =
            self.listener.protocol != ListenerProtocol::Opaque && protocol == Protocol::Opaque && prefix.is_empty();
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
            Protocol::Http2 => Box::pin(serve_h2(io, ctx, self.limits, self.activity, peer)).await,
            Protocol::Opaque | Protocol::Tls => Box::pin(serve_tcp(io, &self, peer)).await,
        }
    }
}

/// What the client speaks, from its first bytes; `None` (close) when it hung up or the read failed.
async fn detect_or_close<I: AsyncRead + Unpin>(
    io: &mut I,
    limits: &Limits,
    addr: SocketAddr,
) -> Option<(Protocol, bytes::Bytes)> {
    match detect(io, limits.detect_timeout).await {
        Ok(found) => found,
        Err(error) => {
            tracing::debug!(peer = %addr, %error, "detect failed");
            None
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
