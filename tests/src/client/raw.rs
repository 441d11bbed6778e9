//! Raw TCP client with bounded reads and half-close, an HTTP/1 response reader for hand-written (possibly
//! malformed) requests, and a hand-rolled HTTP/1.1 WebSocket upgrade.

use crate::DEFAULT_TIMEOUT;
use anyhow::{anyhow, bail, ensure, Context as _, Result};
use bytes::{Buf, Bytes, BytesMut};
use std::{future::Future, net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// A TCP connection with a read buffer; every operation is bounded by its timeout (default 10 s).
#[derive(Debug)]
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
    eof: bool,
    timeout: Duration,
}

/// An HTTP/1 response as read off the wire.
#[derive(Clone, Debug)]
pub struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Header names as sent (case kept), in order.
    pub headers: Vec<(String, String)>,
    /// The body: `content-length` bytes, de-chunked, or everything until EOF. Empty for
    /// [`RawConn::read_response_head`], 1xx, 204 and 304.
    pub body: Bytes,
}

/// Connects to `addr` (bounded by [`DEFAULT_TIMEOUT`]).
pub async fn raw_tcp(addr: SocketAddr) -> Result<RawConn> {
    let stream = tokio::time::timeout(DEFAULT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(RawConn { stream, buf: BytesMut::new(), eof: false, timeout: DEFAULT_TIMEOUT })
}

/// Connects to `addr`, performs [`websocket_handshake`] and returns the upgraded connection (any bytes read
/// past the handshake stay buffered). After this, bytes are raw: the mock server echoes them, unframed.
pub async fn websocket(addr: SocketAddr, authority: &str, path: &str) -> Result<RawConn> {
    let mut conn = raw_tcp(addr).await?;
    let rsp = websocket_handshake(&mut conn, authority, path).await?;
    ensure!(rsp.status == 101, "websocket upgrade refused: {} {} {:?}", rsp.status, rsp.reason, rsp.headers);
    Ok(conn)
}

/// Writes a WebSocket upgrade request by hand and reads the response head. If it is a `101`, checks that it
/// has `Upgrade: websocket` and the correct `Sec-WebSocket-Accept`; any other status is returned as is.
pub async fn websocket_handshake(conn: &mut RawConn, authority: &str, path: &str) -> Result<RawResponse> {
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    conn.write_all(req).await?;
    let rsp = conn.read_response_head().await?;
    if rsp.status == 101 {
        let upgrade = rsp.header("upgrade").unwrap_or_default();
        ensure!(upgrade.eq_ignore_ascii_case("websocket"), "101 without `Upgrade: websocket`: {:?}", rsp.headers);
        let accept = rsp.header("sec-websocket-accept").unwrap_or_default();
        ensure!(accept == crate::server::websocket_accept(KEY), "bad Sec-WebSocket-Accept {accept:?}");
    }
    Ok(rsp)
}

impl RawConn {
    /// Bounds each following operation by `timeout`.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// Writes all of `bytes`.
    pub async fn write_all(&mut self, bytes: impl AsRef<[u8]>) -> Result<()> {
        let (timeout, stream) = (self.timeout, &mut self.stream);
        bounded(timeout, "write", stream.write_all(bytes.as_ref())).await
    }

    /// Half-closes: shuts down the write side (the peer reads EOF); reading still works.
    pub async fn shutdown_write(&mut self) -> Result<()> {
        let (timeout, stream) = (self.timeout, &mut self.stream);
        bounded(timeout, "shutdown", stream.shutdown()).await
    }

    /// Buffered bytes if any, else the bytes of one read; empty means EOF.
    pub async fn read_some(&mut self) -> Result<Bytes> {
        if self.buf.is_empty() {
            self.fill().await?;
        }
        Ok(self.buf.split().freeze())
    }

    /// Exactly `n` bytes; errors on EOF first.
    pub async fn read_exact(&mut self, n: usize) -> Result<Bytes> {
        while self.buf.len() < n {
            ensure!(self.fill().await? > 0, "EOF after {} of {n} bytes: {:?}", self.buf.len(), self.lossy());
        }
        Ok(self.buf.split_to(n).freeze())
    }

    /// Bytes up to and including the first `delim`; errors on EOF first.
    pub async fn read_until(&mut self, delim: &[u8]) -> Result<Bytes> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return Ok(self.buf.split_to(i + delim.len()).freeze());
            }
            ensure!(self.fill().await? > 0, "EOF before {:?}; got {:?}", String::from_utf8_lossy(delim), self.lossy());
        }
    }

    /// Everything until the peer closes its write side.
    pub async fn read_to_end(&mut self) -> Result<Bytes> {
        while self.fill().await? > 0 {}
        Ok(self.buf.split().freeze())
    }

    /// Reads an HTTP/1 response head (status line and headers), leaving the body unread.
    pub async fn read_response_head(&mut self) -> Result<RawResponse> {
        let head = self.read_until(b"\r\n\r\n").await?;
        let head = std::str::from_utf8(&head).context("response head is not UTF-8")?;
        let mut lines = head.trim_end().split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        ensure!(version.starts_with("HTTP/1."), "not an HTTP/1 status line: {status_line:?}");
        let status =
            parts.next().unwrap_or_default().parse().with_context(|| format!("bad status: {status_line:?}"))?;
        let reason = parts.next().unwrap_or_default().to_owned();
        let headers = lines
            .map(|l| l.split_once(':').map(|(n, v)| (n.to_owned(), v.trim().to_owned())))
            .collect::<Option<Vec<_>>>()
            .context("malformed header line")?;
        Ok(RawResponse { version, status, reason, headers, body: Bytes::new() })
    }

    /// Reads a whole HTTP/1 response: the head, then a body delimited by `content-length`, by chunked encoding
    /// (trailers discarded), or by EOF; no body for 1xx, 204 and 304. Assumes the request was not `HEAD`.
    pub async fn read_response(&mut self) -> Result<RawResponse> {
        let mut rsp = self.read_response_head().await?;
        if matches!(rsp.status, 100..=199 | 204 | 304) {
            return Ok(rsp);
        }
        let chunked = rsp.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        rsp.body = if chunked {
            self.read_chunked().await?
        } else if let Some(len) = rsp.header("content-length") {
            self.read_exact(len.parse().with_context(|| format!("bad content-length {len:?}"))?).await?
        } else {
            self.read_to_end().await?
        };
        Ok(rsp)
    }

    /// The stream and any buffered-but-unread bytes.
    pub fn into_parts(self) -> (TcpStream, Bytes) {
        (self.stream, self.buf.freeze())
    }

    async fn read_chunked(&mut self) -> Result<Bytes> {
        let mut body = BytesMut::new();
        loop {
            let line = self.read_until(b"\r\n").await?;
            let size = std::str::from_utf8(&line)?.trim().split(';').next().unwrap_or_default().to_owned();
            let size = usize::from_str_radix(&size, 16).with_context(|| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                while self.read_until(b"\r\n").await?.len() > 2 {}
                return Ok(body.freeze());
            }
            body.extend_from_slice(&self.read_exact(size).await?);
            let crlf = self.read_exact(2).await?;
            ensure!(&crlf[..] == b"\r\n", "chunk not followed by CRLF");
        }
    }

    /// One read into the buffer; returns the number of bytes read (0 at EOF).
    async fn fill(&mut self) -> Result<usize> {
        if self.eof {
            return Ok(0);
        }
        let mut chunk = [0u8; 8192];
        let n = match tokio::time::timeout(self.timeout, self.stream.read(&mut chunk)).await {
            Ok(res) => res.context("raw tcp read")?,
            Err(_) => bail!("raw tcp read: timed out after {:?}; buffered: {:?}", self.timeout, self.lossy()),
        };
        self.eof = n == 0;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn lossy(&self) -> String {
        String::from_utf8_lossy(self.buf.chunk()).into_owned()
    }
}

impl RawResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn bounded<T>(timeout: Duration, what: &str, fut: impl Future<Output = std::io::Result<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(res) => res.with_context(|| format!("raw tcp {what}")),
        Err(_) => bail!("raw tcp {what}: timed out after {timeout:?}"),
    }
}
