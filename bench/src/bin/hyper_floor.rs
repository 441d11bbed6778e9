//! `hyper-floor`: the least an HTTP proxy on our stack (tokio's current-thread runtime, hyper's HTTP/1 and HTTP/2
//! server and client) can do per request, as the floor under attaché's figures in `bench/harness/instrs.py`.
//!
//!     hyper-floor H1_LISTEN H2C_LISTEN H1_UPSTREAM H2C_UPSTREAM
//!
//! No routing, no header hygiene, no metrics, no trace context, no timeouts, no pool: each downstream HTTP/1.1
//! connection gets one upstream connection of its own, and all h2c streams share one upstream HTTP/2 connection.
//! Requests and responses pass through as hyper parsed them. Not a proxy to run: a measurement of what the libraries
//! cost, so that what attaché adds above them, and what no change of ours can remove, are both known.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1 as client1, http2 as client2};
use hyper::server::conn::{http1 as server1, http2 as server2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OnceCell;

type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// The sidecar's allocator, so that the two counts differ by code alone.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [h1, h2, up1, up2] = args.as_slice() else {
        anyhow::bail!("usage: hyper-floor H1_LISTEN H2C_LISTEN H1_UPSTREAM H2C_UPSTREAM");
    };
    let addr = |s: &str| s.parse::<SocketAddr>().with_context(|| format!("not an address: {s}"));
    let (h1, h2, up1, up2) = (addr(h1)?, addr(h2)?, addr(up1)?, addr(up2)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let l1 = TcpListener::bind(h1).await.with_context(|| format!("bind {h1}"))?;
        let l2 = TcpListener::bind(h2).await.with_context(|| format!("bind {h2}"))?;
        tokio::spawn(serve_h2c(l2, up2));
        serve_h1(l1, up1).await
    })
}

fn bad_gateway() -> Response<Body> {
    let mut rsp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *rsp.status_mut() = StatusCode::BAD_GATEWAY;
    rsp
}

/// HTTP/1.1: one upstream connection per downstream connection, dialled on its first request.
async fn serve_h1(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let sender: Arc<Mutex<Option<client1::SendRequest<Incoming>>>> = Arc::default();
            let svc = service_fn(move |req: Request<Incoming>| {
                let sender = sender.clone();
                async move {
                    Ok::<_, Infallible>(forward_h1(&sender, upstream, req).await.unwrap_or_else(|_| bad_gateway()))
                }
            });
            let _ = server1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn forward_h1(
    slot: &Mutex<Option<client1::SendRequest<Incoming>>>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> anyhow::Result<Response<Body>> {
    let taken = slot.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.take();
    let mut sender = match taken {
        Some(s) => s,
        None => {
            let stream = TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) = client1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        }
    };
    // The downstream connection sends its next request only after this response's body: by then it is ready.
    sender.ready().await?;
    let fut = sender.send_request(req);
    *slot.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(sender);
    Ok(fut.await?.map(BodyExt::boxed))
}

/// h2c: every stream over one shared upstream HTTP/2 connection, dialled on the first request.
async fn serve_h2c(listener: TcpListener, upstream: SocketAddr) -> anyhow::Result<()> {
    let shared: Arc<OnceCell<client2::SendRequest<Incoming>>> = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    Ok::<_, Infallible>(forward_h2(&shared, upstream, req).await.unwrap_or_else(|_| bad_gateway()))
                }
            });
            let _ = server2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

async fn forward_h2(
    shared: &OnceCell<client2::SendRequest<Incoming>>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> anyhow::Result<Response<Body>> {
    let sender = shared
        .get_or_try_init(|| async {
            let stream = TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) = client2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            anyhow::Ok(sender)
        })
        .await?;
    let mut sender = sender.clone();
    sender.ready().await?;
    Ok(sender.send_request(req).await?.map(BodyExt::boxed))
}
