//! Serving HTTP/1.1 and HTTP/2 connections through the listener's pipeline, and finishing them gracefully on drain,
//! on the listener's replacement, or when idle.

use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use attache_config::model::Limits;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::on_wake::OnWake;
use super::{Context, Peer};
use crate::body::Body;
use crate::drain;
use crate::http::h1_guard::{GuardLimits, H1Guard, HeadVerdict, HeadVerdicts};
use crate::http::meta::{Connection, Downstream, RequestMeta};
use crate::http::upgrade::{self, Tunnel};
use crate::io::Activity;
use crate::metrics::{ListenerLabels, Name};

/// What every request of the connection carries, with the framing guard's verdict on its head.
fn downstream(req: &mut hyper::Request<Body>, conn: &Arc<Connection>, verdict: Option<HeadVerdict>) {
    let downstream = Downstream { conn: conn.clone(), verdict };
    req.extensions_mut().insert(Arc::new(RequestMeta::new(Some(downstream))));
}

fn connection(peer: Peer) -> Arc<Connection> {
    Arc::new(Connection { addr: peer.addr, original_dst: peer.original_dst, identity: peer.identity })
}

pub(super) async fn serve_h1<I>(io: I, ctx: &Context, limits: &Limits, activity: Activity, peer: Peer)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let verdicts = HeadVerdicts::default();
    // The guard must track at least what hyper accepts, or it would stop early and leave later heads unchecked.
    let max_head_bytes = limits.max_head_bytes.max(8192);
    // A head that has begun must end within the idle timeout (slowloris); the guard keeps that clock, so hyper's
    // header-read timer, armed and dropped for every request, is off.
    let guard_limits =
        GuardLimits { max_head_bytes, max_headers: limits.max_header_count, head_timeout: Some(limits.idle_timeout) };
    let guarded = H1Guard::new(io, verdicts.clone(), guard_limits);
    let http = ctx.http.connection();
    // Shared by the connection's response futures: one count per request rather than a receiver's two.
    let retire = Arc::new(ctx.retire.clone());
    let labels = ListenerLabels { direction: ctx.direction, listener: Name(ctx.name.clone()) };
    let tunnel = Tunnel {
        idle: limits.idle_timeout,
        drain: ctx.drain.clone(),
        open: ctx.metrics.open.get_or_create_owned(&labels),
    };
    let conn = connection(peer);
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::from);
        // The framing guard stops following a connection after a request that may switch protocols (any Upgrade
        // header, CONNECT), and a request with no verdict comes after it stopped: either way, unless the protocol
        // really switches, answer and close, so no later request goes unchecked.
        let verdict = verdicts.pop();
        let unverified = verdict.is_none()
            || req.headers().contains_key(http::header::UPGRADE)
            || req.method() == http::Method::CONNECT;
        downstream(&mut req, &conn, verdict);
        if upgrade::is_upgrade(&req) {
            req.extensions_mut().insert(tunnel.clone());
        }
        let fut = http.call(req);
        let retire = retire.clone();
        async move {
            let mut rsp = fut.await?;
            // A listener replaced by a reload: this connection's next response is its last. (Shutting it down
            // outright could lose a request already sent on a connection accepted just before.)
            let retired = *retire.borrow();
            if (unverified || retired) && rsp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                rsp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok::<_, std::convert::Infallible>(rsp)
        }
    });
    let mut builder = http1::Builder::new();
    // A keep-alive connection waiting for its next request is idle: `drive` closes it. A slow head: the guard.
    builder
        .timer(TokioTimer::new())
        .max_headers(limits.max_header_count)
        .max_buf_size(max_head_bytes)
        .header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(guarded), svc).with_upgrades();
    drive(conn, |c| c.graceful_shutdown(), Ends::drain(ctx), limits.idle_timeout, activity).await;
}

pub(super) async fn serve_h2<I>(io: I, ctx: &Context, limits: &Limits, activity: Activity, peer: Peer)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = ctx.http.connection();
    let conn = connection(peer);
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(Body::from);
        downstream(&mut req, &conn, None);
        http.call(req)
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(u32::try_from(limits.max_concurrent_requests).unwrap_or(u32::MAX))
        // h2's own 20 is low for a peer sidecar's connection, which carries the cancellations of many clients: a
        // burst of them read in one pass would GOAWAY every request on it.
        .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    // HTTP/2 says GOAWAY when the listener is replaced: streams already sent still complete.
    drive(conn, |c| c.graceful_shutdown(), Ends::drain_or_retire(ctx), limits.idle_timeout, activity).await;
}

/// What asks a connection to finish besides idleness: the proxy's drain, and for some protocols the listener's
/// replacement.
struct Ends {
    drain: drain::Watch,
    retire: Option<watch::Receiver<bool>>,
}

impl Ends {
    fn drain(ctx: &Context) -> Self {
        Self { drain: ctx.drain.clone(), retire: None }
    }

    fn drain_or_retire(ctx: &Context) -> Self {
        Self { drain: ctx.drain.clone(), retire: Some(ctx.retire.clone()) }
    }

    async fn retired(retire: &mut Option<watch::Receiver<bool>>) {
        match retire {
            // Replaced by a reload, or the proxy is stopping (the listener set is gone).
            Some(r) => drop(r.wait_for(|retired| *retired).await),
            None => std::future::pending().await,
        }
    }
}

/// Runs a connection to completion; on drain or idleness asks it to finish (HTTP/1: `Connection: close` after the
/// in-flight response; HTTP/2: GOAWAY), letting in-flight requests complete. A connection that stays idle for
/// another idle period after being asked is dropped. The connection is polled on every wake of its task, its ends
/// only when one of them woke it (`OnWake`).
async fn drive<C, E>(conn: C, shutdown: fn(Pin<&mut C>), ends: Ends, idle: Duration, activity: Activity)
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let Ends { mut drain, mut retire } = ends;
    tokio::pin!(conn);
    let on_wake = OnWake::new();
    let mut closing = false;
    let mut seen = activity.count();
    loop {
        let end = next_end(&mut drain, &mut retire, closing, idle);
        tokio::pin!(end);
        on_wake.arm();
        // Break: the connection ended; Continue: one of its ends came first.
        let step = std::future::poll_fn(|cx| match conn.as_mut().poll(cx) {
            Poll::Ready(res) => Poll::Ready(ControlFlow::Break(res)),
            Poll::Pending => on_wake.poll(end.as_mut(), cx).map(ControlFlow::Continue),
        })
        .await;
        match step {
            ControlFlow::Break(res) => {
                if let Err(error) = res {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            ControlFlow::Continue(End::Asked) => {
                closing = true;
                shutdown(conn.as_mut());
            }
            ControlFlow::Continue(End::Idle) => {
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

/// Why a connection should finish, or that an idle period has passed.
enum End {
    /// The proxy drains, or the listener was replaced.
    Asked,
    Idle,
}

/// The next of the connection's ends; once it is closing, only the idle period.
async fn next_end(
    drain: &mut drain::Watch,
    retire: &mut Option<watch::Receiver<bool>>,
    closing: bool,
    idle: Duration,
) -> End {
    tokio::select! {
        () = drain.signaled(), if !closing => End::Asked,
        () = Ends::retired(retire), if !closing => End::Asked,
        () = tokio::time::sleep(idle) => End::Idle,
    }
}
