//! A mock WebSocket backend: an HTTP/1.1 Upgrade handshake, then a raw byte echo.
//!
//! A request with `Upgrade: websocket` and a `Sec-WebSocket-Key` gets `101 Switching Protocols` with
//! `Upgrade: websocket`, `Connection: Upgrade` and the RFC 6455 `Sec-WebSocket-Accept`; any other request gets
//! `426 Upgrade Required`. After the upgrade the connection is treated as **raw bytes, not WebSocket frames**:
//! every byte read is written back; on read EOF the server shuts down its write side. The matching client is
//! [`crate::client::websocket`].

use crate::AbortOnDrop;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    task::JoinSet,
};

/// Builds a WebSocket echo server; see [`websocket_echo`].
#[must_use]
pub struct WebSocketBuilder {
    _priv: (),
}

/// A running WebSocket echo server. Dropping it stops the server and aborts its connections.
pub struct WebSocketServer {
    addr: SocketAddr,
    upgrades: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

/// A WebSocket-handshake server that echoes raw bytes after the upgrade (see module docs).
pub fn websocket_echo() -> WebSocketBuilder {
    WebSocketBuilder { _priv: () }
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + RFC 6455 GUID)).
pub fn websocket_accept(key: &str) -> String {
    let mut input = key.as_bytes().to_vec();
    input.extend_from_slice(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64(&sha1(&input))
}

impl WebSocketBuilder {
    /// Binds `127.0.0.1:0` and starts serving. Panics if binding fails.
    pub async fn run(self) -> WebSocketServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind websocket server");
        let addr = listener.local_addr().expect("websocket server address");
        let upgrades = Arc::new(AtomicUsize::new(0));
        let task = AbortOnDrop::spawn(accept_loop(listener, upgrades.clone()));
        WebSocketServer { addr, upgrades, _task: task }
    }
}

impl WebSocketServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections completed the upgrade handshake.
    pub fn upgrades(&self) -> usize {
        self.upgrades.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, upgrades: Arc<AtomicUsize>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let upgrades = upgrades.clone();
        conns.spawn(async move {
            // The pending upgrade is parked here so the echo runs inside this (guarded) task.
            let pending: Arc<Mutex<Option<OnUpgrade>>> = Arc::default();
            let slot = pending.clone();
            let svc = hyper::service::service_fn(move |req| {
                let slot = slot.clone();
                async move { Ok::<_, std::convert::Infallible>(handshake(req, &slot)) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "websocket handshake connection failed");
                return;
            }
            let Some(on_upgrade) = pending.lock().unwrap().take() else { return };
            match on_upgrade.await {
                Ok(upgraded) => {
                    upgrades.fetch_add(1, Ordering::SeqCst);
                    if let Err(error) = echo(TokioIo::new(upgraded)).await {
                        tracing::debug!(%error, "websocket echo ended with an error");
                    }
                }
                Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

fn handshake(mut req: Request<Incoming>, slot: &Mutex<Option<OnUpgrade>>) -> Response<crate::Body> {
    let is_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut rsp = Response::new(crate::empty());
    match (is_ws, key) {
        (true, Some(key)) => {
            *slot.lock().unwrap() = Some(hyper::upgrade::on(&mut req));
            *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = rsp.headers_mut();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&websocket_accept(&key)).unwrap());
        }
        _ => *rsp.status_mut() = StatusCode::UPGRADE_REQUIRED,
    }
    rsp
}

async fn echo<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: T) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return io.shutdown().await;
        }
        io.write_all(&buf[..n]).await?;
    }
}

/// SHA-1 (FIPS 180-4); only used for the handshake, never for security.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a.rotate_left(5).wrapping_add(f).wrapping_add(e).wrapping_add(k).wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc6455_accept_example() {
        assert_eq!(super::websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn sha1_and_base64_vectors() {
        assert_eq!(super::base64(&super::sha1(b"abc")), "qZk+NkcGgWq6PiVxeFDCbJzQ2J0=");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
    }
}
