//! Protocol detection: a TLS ClientHello, the HTTP/2 preface, an HTTP/1 request line, or else opaque TCP. Bounded in bytes and time;
//! a client that says nothing within the detect timeout is treated as opaque (server-speaks-first protocols).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The content type of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// Longest method token we accept before the first space.
const MAX_METHOD: usize = 24;
/// How much of a request line is read to find its ` HTTP/1.x` end; a method followed by a longer line is still
/// taken for HTTP/1, and hyper answers it (414/431).
const MAX_REQUEST_LINE: usize = 8 * 1024;

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
/// closed without sending anything.
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
            Err(_elapsed) => return Ok(Some((Protocol::Opaque, buf.freeze()))),
            Ok(Ok(0)) if buf.is_empty() => return Ok(None),
            Ok(Ok(0)) => return Ok(Some((Protocol::Opaque, buf.freeze()))),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// `None`: not enough bytes yet.
fn classify(buf: &[u8]) -> Option<Protocol> {
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
