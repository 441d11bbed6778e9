//! Connecting to one endpoint: TCP with a connect timeout, then, for a backend with `tls`, an mTLS handshake that
//! proves the endpoint's SPIFFE identity before a single request byte is written. A failed handshake is a connect
//! failure (safe to retry, counted by the breaker) and never falls back to plaintext.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::errors::ConnectFailed;
use crate::metrics::Dir;
use crate::tls::{Alpn, ClientTls, TlsMetrics};

/// Dials one fixed address, whatever the URI says.
#[derive(Clone, Debug)]
pub struct Connector {
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<Arc<ClientTls>>,
    metrics: TlsMetrics,
}

/// An upstream connection: plaintext, or mTLS with a verified peer.
#[derive(Debug)]
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connector {
    pub fn new(addr: SocketAddr, timeout: Duration, tls: Option<Arc<ClientTls>>, metrics: TlsMetrics) -> Self {
        Self { addr, timeout, tls, metrics }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connects, and handshakes when the backend has `tls`, offering `alpn`. Each phase gets the connect timeout.
    pub async fn connect(&self, alpn: Alpn) -> Result<Conn, ConnectFailed> {
        let addr = self.addr;
        let failed = |source| ConnectFailed { addr, source };
        let stream = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(failed(source)),
            Err(_) => return Err(failed(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else { return Ok(Conn::Plain(stream)) };
        match self.handshake(tls, alpn, stream).await {
            Ok(conn) => {
                self.metrics.handshake(Dir::Outbound, Ok(()));
                Ok(Conn::Tls(Box::new(conn)))
            }
            Err((reason, source)) => {
                self.metrics.handshake(Dir::Outbound, Err(reason));
                tracing::debug!(%addr, expected = %tls.expected(), reason, error = %source, "mTLS handshake failed");
                Err(failed(source))
            }
        }
    }

    async fn handshake(
        &self,
        tls: &ClientTls,
        alpn: Alpn,
        stream: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, (&'static str, io::Error)> {
        let config = tls.config(alpn).map_err(|e| ("no-credentials", io::Error::other(e)))?;
        // The verifier checks the SPIFFE ID, not a name; the address only fills the field (and sends no SNI).
        let name = ServerName::IpAddress(self.addr.ip().into());
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, stream);
        match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err((crate::tls::io_reason(&e), e)),
            Err(_) => Err(("timeout", io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}
