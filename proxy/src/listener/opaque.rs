//! Opaque TCP on a listener: authorized (inbound), then spliced to the app or the listener's `tcp_backend`.

use std::sync::Arc;

use attache_config::model::{Listener, ListenerTarget};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::{Conn, Peer};
use crate::dataplane::Dataplane;

/// Forwards opaque TCP: inbound to the app (when the listener's authorization admits the peer), outbound to the
/// listener's `tcp_backend` (over mTLS when that backend has `tls`).
pub(super) async fn serve_tcp<I>(io: I, conn: &Conn<'_>, peer: Peer)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let (ctx, listener) = (conn.ctx, conn.listener);
    let backend = match &listener.target {
        ListenerTarget::App(_) => {
            if let Some(authz) = &listener.authorization {
                let route = crate::http::authz::TCP_ROUTE;
                if !crate::http::authz::decide(&ctx.http_authz, &listener.name, route, authz, peer.identity.as_ref()) {
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
    let (idle, activity) = (conn.limits.idle_timeout, conn.activity.clone());
    let revoked = revoked(ctx.plane.clone(), conn.listener);
    let forwarded = if peer.silent && matches!(listener.target, ListenerTarget::App(_)) {
        crate::tcp::forward(crate::detect::RefuseHttp::new(io), &connectors, idle, activity, revoked).await
    } else {
        crate::tcp::forward(io, &connectors, idle, activity, revoked).await
    };
    match forwarded {
        Ok((tx, rx)) => tracing::debug!(peer = %peer.addr, listener = %ctx.name, tx, rx, "TCP connection closed"),
        Err(error) => {
            tracing::debug!(peer = %peer.addr, listener = %ctx.name, %error, "TCP connection ended with an error")
        }
    }
}

/// An intercepted connection to a destination the mesh does not know: connected to that destination and spliced,
/// unchanged (the app sees no difference but the sidecar's byte counts).
pub(super) async fn passthrough<I>(
    io: I,
    activity: crate::io::Activity,
    peer: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    ctx: &super::Context,
    limits: &attache_config::model::Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let connected = tokio::time::timeout(limits.connect_timeout, tokio::net::TcpStream::connect(dst)).await;
    let upstream = match connected {
        Ok(Ok(upstream)) => upstream,
        Ok(Err(error)) => {
            return tracing::debug!(%peer, %dst, listener = %ctx.name, %error, "passthrough connect failed")
        }
        Err(_) => return tracing::debug!(%peer, %dst, listener = %ctx.name, "passthrough connect timed out"),
    };
    let _ = upstream.set_nodelay(true);
    match crate::tcp::splice(io, upstream, limits.idle_timeout, activity).await {
        Ok((tx, rx)) => tracing::debug!(%peer, %dst, listener = %ctx.name, tx, rx, "passthrough connection closed"),
        Err(error) => tracing::debug!(%peer, %dst, listener = %ctx.name, %error, "passthrough connection ended"),
    }
}

/// Resolves when a reload changes the listener's TLS or authorization (or removes it): what admitted the tunnel may
/// no longer, so it is cut. Other changes leave it alone.
fn revoked(
    mut plane: watch::Receiver<Arc<Dataplane>>,
    admitted: &Listener,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (name, tls, authorization) = (admitted.name.clone(), admitted.tls.clone(), admitted.authorization.clone());
    async move {
        loop {
            if plane.changed().await.is_err() {
                // The proxy is stopping; its drain bounds the rest.
                return std::future::pending().await;
            }
            let current = plane.borrow_and_update().clone();
            let same = |l: &&Arc<Listener>| l.name == name && l.tls == tls && l.authorization == authorization;
            if !current.snapshot.listeners.iter().any(|l| same(&l)) {
                return;
            }
        }
    }
}
