//! Opaque TCP forwarding: connect to one of the target's endpoints (trying the next on failure), then copy both
//! directions with half-close until both sides are done or the connection is idle too long.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::io::Activity;

/// Forwards `client` to the first endpoint of `addrs` that accepts, starting at a random one.
pub async fn forward<I>(
    client: I,
    addrs: &[SocketAddr],
    connect_timeout: Duration,
    idle_timeout: Duration,
    activity: Activity,
) -> std::io::Result<(u64, u64)>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = connect_any(addrs, connect_timeout).await?;
    splice(client, upstream, idle_timeout, activity).await
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

async fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> std::io::Result<TcpStream> {
    if addrs.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no endpoints"));
    }
    let start = rand::random_range(0..addrs.len());
    let mut last = None;
    for i in 0..addrs.len() {
        let addr = addrs[(start + i) % addrs.len()];
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => last = Some(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")),
        }
        tracing::debug!(%addr, "TCP connect failed; trying the next endpoint");
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("connect failed")))
}
