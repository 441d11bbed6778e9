//! Mock TCP backends: an echo server that reports half-close, and a server-speaks-first banner server.
//!
//! Exact behaviour per connection:
//! 1. `tcp_banner(b)` only: write `b` immediately on accept.
//! 2. Echo every byte read back to the client, as it arrives.
//! 3. On read EOF (the client shut down its write side), write the marker `EOF <n>\n`, where `<n>` is the
//!    decimal number of bytes received on this connection, then shut down the write side and close.
//!
//! So a client that writes `hello` and half-closes reads exactly [`tcp_echo_reply`]`(b"hello")` =
//! `helloEOF 5\n` and then EOF. A reset or error just closes the connection.

use crate::AbortOnDrop;
use bytes::Bytes;
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

/// Builds a mock TCP server; see [`tcp_echo`] and [`tcp_banner`].
#[must_use]
pub struct TcpBuilder {
    banner: Option<Bytes>,
}

/// A running mock TCP server. Dropping it stops the server and aborts its connections.
pub struct TcpServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    _task: AbortOnDrop,
}

#[derive(Default)]
struct Stats {
    connections: AtomicUsize,
    bytes_received: AtomicUsize,
    half_closes: AtomicUsize,
}

/// A TCP echo server that writes `EOF <n>\n` and half-closes after the client half-closes (see module docs).
pub fn tcp_echo() -> TcpBuilder {
    TcpBuilder { banner: None }
}

/// A server-speaks-first TCP server: writes `banner` on accept, then behaves like [`tcp_echo`].
pub fn tcp_banner(banner: impl Into<Bytes>) -> TcpBuilder {
    TcpBuilder { banner: Some(banner.into()) }
}

/// What a client writing `sent` and then half-closing reads back from [`tcp_echo`]: `sent` + `EOF <len>\n`.
pub fn tcp_echo_reply(sent: &[u8]) -> Vec<u8> {
    let mut out = sent.to_vec();
    out.extend_from_slice(format!("EOF {}\n", sent.len()).as_bytes());
    out
}

impl TcpBuilder {
    /// Binds `127.0.0.1:0` and starts serving. Panics if binding fails.
    pub async fn run(self) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock tcp server");
        let addr = listener.local_addr().expect("mock tcp server address");
        let stats = Arc::new(Stats::default());
        let task = AbortOnDrop::spawn(accept_loop(listener, self.banner, stats.clone()));
        TcpServer { addr, stats, _task: task }
    }
}

impl TcpServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Total bytes received over all connections.
    pub fn bytes_received(&self) -> usize {
        self.stats.bytes_received.load(Ordering::SeqCst)
    }

    /// How many connections saw the client half-close (read EOF) and were answered with the EOF marker.
    pub fn half_closes(&self) -> usize {
        self.stats.half_closes.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, banner: Option<Bytes>, stats: Arc<Stats>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        stats.connections.fetch_add(1, Ordering::SeqCst);
        let (banner, stats) = (banner.clone(), stats.clone());
        conns.spawn(async move {
            if let Err(error) = serve(stream, banner, &stats).await {
                tracing::debug!(%error, "mock tcp connection ended with an error");
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn serve(mut stream: TcpStream, banner: Option<Bytes>, stats: &Stats) -> std::io::Result<()> {
    if let Some(banner) = banner {
        stream.write_all(&banner).await?;
    }
    let mut received = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        received += n;
        stats.bytes_received.fetch_add(n, Ordering::SeqCst);
        stream.write_all(&buf[..n]).await?;
    }
    stats.half_closes.fetch_add(1, Ordering::SeqCst);
    stream.write_all(format!("EOF {received}\n").as_bytes()).await?;
    stream.shutdown().await
}
