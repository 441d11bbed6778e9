//! Protocol detection: a TLS ClientHello, the HTTP/2 preface, an HTTP/1 request line, or else opaque TCP. Bounded in bytes and time;
//! a client that says nothing within the detect timeout is treated as opaque (server-speaks-first protocols).

use std::time::Duration;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The content type of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Longest method token we accept before the first space.
const MAX_METHOD: usize = 24;
/// How much of a request line is read to find its ` HTTP/1.x` end; a method followed by a longer line is still
/// taken for HTTP/1, and hyper answers it (414/431).
const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Bytes of CR/LF looked past before a request line; more is handed to the HTTP server (which rejects it).
const MAX_EMPTY_LINES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS handshake record: terminated where the listener has `tls`, else forwarded as opaque TCP.
    Tls,
    Http1,
    Http2,
    Opaque,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Http1 => "http1",
            Self::Http2 => "http2",
            Self::Opaque => "tcp",
        }
    }
}

/// Reads just enough to decide. Returns the protocol and the bytes read, to be replayed; `None` when the client
/// closed without sending anything. A client silent for the whole timeout is opaque with no bytes (a
/// server-speaks-first protocol); one that stopped or closed partway through something that could still be HTTP is
/// HTTP/1, so the HTTP server answers it, and it never reaches the upstream as raw bytes past HTTP policy.
pub async fn detect<I: AsyncRead + Unpin>(io: &mut I, timeout: Duration) -> std::io::Result<Option<(Protocol, Bytes)>> {
    let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
    // Validation caps durations, but a deadline must never overflow the clock.
    let now = tokio::time::Instant::now();
    let deadline = now.checked_add(timeout).unwrap_or(now + Duration::from_secs(3600));
    loop {
        if let Some(p) = classify(&buf) {
            return Ok(Some((p, buf.freeze())));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_) if buf.is_empty() => return Ok(Some((Protocol::Opaque, buf.freeze()))),
            Ok(Ok(0)) if buf.is_empty() => return Ok(None),
            Err(_) | Ok(Ok(0)) => return Ok(Some((Protocol::Http1, buf.freeze()))),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// `None`: not enough bytes yet (and what there is could still be HTTP).
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    match buf {
        [] | [TLS_HANDSHAKE] => return None,
        // A handshake record of SSL 3.0 / TLS 1.x framing.
        [TLS_HANDSHAKE, 3, ..] => return Some(Protocol::Tls),
        _ => {}
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    // HTTP/1 servers ignore empty lines before a request line (RFC 9112, 2.2), and so does hyper.
    let empty = buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
    if empty > MAX_EMPTY_LINES {
        return Some(Protocol::Http1);
    }
    let buf = &buf[empty..];
    if buf.is_empty() {
        return None;
    }
    for (i, &b) in buf.iter().enumerate().take(MAX_METHOD + 1) {
        match b {
            b'A'..=b'Z' | b'-' | b'_' => {}
            b' ' if i > 0 => return request_line(buf, i + 1),
            _ => return Some(Protocol::Opaque),
        }
    }
    (buf.len() > MAX_METHOD).then_some(Protocol::Opaque)
}

/// After `METHOD `: HTTP/1 when the line ends in ` HTTP/1.0` or ` HTTP/1.1`, else opaque (so text protocols with
/// upper-case commands, `SET k v` or `SELECT 1;`, are not mistaken for HTTP).
fn request_line(buf: &[u8], target: usize) -> Option<Protocol> {
    let Some(end) = buf[target..].iter().position(|&b| b == b'\n') else {
        return (buf.len() >= MAX_REQUEST_LINE).then_some(Protocol::Http1);
    };
    let line = &buf[target..target + end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let http = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
    Some(if http { Protocol::Http1 } else { Protocol::Opaque })
}

/// The client side of an inbound connection that was taken for opaque TCP because its client said nothing within
/// the detect timeout. Its first bytes are held until [`classify`] decides: HTTP is refused (the read fails, which
/// closes the connection), so a client that waits before speaking cannot carry HTTP past authorization, header
/// hygiene and rate limits to the app. Anything else flows through unchanged.
pub struct RefuseHttp<I> {
    inner: I,
    held: BytesMut,
    decided: bool,
}

impl<I> RefuseHttp<I> {
    pub fn new(inner: I) -> Self {
        Self { inner, held: BytesMut::new(), decided: false }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for RefuseHttp<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.decided {
                if this.held.is_empty() {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                let n = buf.remaining().min(this.held.len());
                buf.put_slice(&this.held[..n]);
                this.held.advance(n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 2048];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let eof = read.filled().is_empty();
            this.held.extend_from_slice(read.filled());
            match classify(&this.held) {
                _ if eof && this.held.is_empty() => this.decided = true,
                Some(Protocol::Opaque | Protocol::Tls) => this.decided = true,
                // Still possibly HTTP: read on, unless the client is done.
                None if !eof => {}
                Some(Protocol::Http1 | Protocol::Http2) | None => {
                    let why =
                        "HTTP sent after the detect timeout; refused (send it at once, or use `protocol: opaque`)";
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::PermissionDenied, why)));
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for RefuseHttp<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"GET http://a/ HTTP/1.0\n"), Some(Protocol::Http1));
        assert_eq!(classify(b"GET / HTTP/1.1"), None, "the line is not complete yet");
        assert_eq!(classify(b"OPTIONS"), None);
        assert_eq!(classify(b"SET key value\r\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"SELECT 1;\n"), Some(Protocol::Opaque));
        assert_eq!(classify(b"\r\nGET / HTTP/1.1\r\n"), Some(Protocol::Http1), "leading empty lines are HTTP's");
        assert_eq!(classify(b"\r\n\r\n"), None);
        assert_eq!(classify(&[b'\n'; 65]), Some(Protocol::Http1));
        let long = [&b"GET /"[..], &[b'a'; MAX_REQUEST_LINE]].concat();
        assert_eq!(classify(&long), Some(Protocol::Http1), "hyper answers an overlong request line");
        assert_eq!(classify(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"PRIX"), None);
        assert_eq!(classify(b"\x16\x03\x01"), Some(Protocol::Tls));
        assert_eq!(classify(b"\x16"), None);
        assert_eq!(classify(b"\x16\x04"), Some(Protocol::Opaque));
        assert_eq!(classify(b"hello"), Some(Protocol::Opaque));
        assert_eq!(classify(b" GET"), Some(Protocol::Opaque));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_opaque_after_the_timeout() {
        let (mut a, _b) = tokio::io::duplex(64);
        let got = detect(&mut a, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got, Some((Protocol::Opaque, Bytes::new())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_inside_what_could_be_http_is_http() {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(b"GET /admin HTTP/1.1").await.unwrap();
        let got = detect(&mut a, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got, Some((Protocol::Http1, Bytes::from_static(b"GET /admin HTTP/1.1"))));
        drop(b);
        let (mut a, mut b) = tokio::io::duplex(64);
        b.write_all(b"\r\n").await.unwrap();
        drop(b);
        assert_eq!(detect(&mut a, Duration::from_secs(1)).await.unwrap().map(|d| d.0), Some(Protocol::Http1));
    }

    #[tokio::test]
    async fn late_http_is_refused_and_late_other_bytes_pass() {
        use tokio::io::AsyncWriteExt;
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b"GET /admin HTTP/1.1\r\nx-attache-peer-identity: spiffe://x/y\r\n").await.unwrap();
        let mut out = Vec::new();
        let err = RefuseHttp::new(a).read_to_end(&mut out).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(out.is_empty(), "nothing of it was released");

        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(b"EHLO client.example\r\n").await.unwrap();
        b.write_all(&[0u8, 1, 2, 3]).await.unwrap();
        drop(b);
        let mut out = Vec::new();
        RefuseHttp::new(a).read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"EHLO client.example\r\n\x00\x01\x02\x03");
    }

    #[tokio::test]
    async fn split_preface_is_http2() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            b.write_all(&H2_PREFACE[..5]).await.unwrap();
            b.write_all(&H2_PREFACE[5..]).await.unwrap();
            std::future::pending::<()>().await;
        });
        let (p, bytes) = detect(&mut a, Duration::from_secs(5)).await.unwrap().unwrap();
        assert_eq!(p, Protocol::Http2);
        assert_eq!(&bytes[..], H2_PREFACE);
    }
}
