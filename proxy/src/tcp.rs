//! Opaque TCP forwarding: connect to one of the target's endpoints (trying the next on failure), then copy both
//! directions with half-close until both sides are done or the connection is idle too long.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::endpoint::{Conn, Connector};
use crate::io::Activity;
use crate::tls::Alpn;

/// Forwards `client` to the first endpoint that accepts (and, for an mTLS backend, proves its identity), starting
/// at a random one.
/// The connection is cut when `revoked` resolves (the policy it was admitted under no longer holds).
pub async fn forward<I>(
    client: I,
    endpoints: &[Connector],
    idle_timeout: Duration,
    activity: Activity,
    revoked: impl std::future::Future<Output = ()>,
) -> std::io::Result<(u64, u64)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = connect_any(endpoints).await?;
    tokio::select! {
        copied = splice(client, upstream, idle_timeout, activity) => copied,
        () = revoked => Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the listener's policy changed")),
    }
}

/// Copies both ways with half-close until both directions are done, or until `activity` (which must see the traffic
/// of `a`, and so of both directions) stays unchanged for `idle`.
pub async fn splice<A, B>(mut a: A, mut b: B, idle: Duration, activity: Activity) -> std::io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    let mut seen = activity.count();
    loop {
        tokio::select! {
            res = &mut copy => return res,
            () = tokio::time::sleep(idle) => {
                let now = activity.count();
                if now == seen {
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout"));
                }
                seen = now;
            }
        }
    }
}

async fn connect_any(endpoints: &[Connector]) -> std::io::Result<Conn> {
    if endpoints.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no endpoints"));
    }
    let start = rand::random_range(0..endpoints.len());
    let mut last = None;
    for i in 0..endpoints.len() {
        let endpoint = &endpoints[(start + i) % endpoints.len()];
        match endpoint.connect(Alpn::None).await {
            Ok(conn) => return Ok(conn),
            Err(e) => {
                tracing::debug!(addr = %endpoint.addr(), error = %e.source, "TCP connect failed; trying the next endpoint");
                last = Some(e.source);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("connect failed")))
}
