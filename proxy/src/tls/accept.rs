//! Inbound TLS termination: the handshake (bounded in time, counted by outcome) and what it proved about the peer.

use std::time::Duration;

use attache_config::model::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};

use super::config::ServerTls;
use super::identity::{peer_identity, IdentityError};
use super::metrics::TlsMetrics;
use crate::metrics::Dir;

/// A terminated TLS connection.
pub struct Accepted<I> {
    pub stream: tokio_rustls::server::TlsStream<I>,
    /// The verified SPIFFE ID of the client; `None` when it presented no certificate (permissive mode only).
    pub identity: Option<SpiffeId>,
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<Vec<u8>>,
}

/// Runs the server side of a handshake. On failure returns the bounded reason it was counted under.
pub async fn accept<I>(
    io: I,
    tls: &ServerTls,
    timeout: Duration,
    metrics: &TlsMetrics,
) -> Result<Accepted<I>, &'static str>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let outcome = handshake(io, tls, timeout).await;
    metrics.handshake(Dir::Inbound, outcome.as_ref().map(|_| ()).map_err(|r| *r));
    outcome
}

async fn handshake<I>(io: I, tls: &ServerTls, timeout: Duration) -> Result<Accepted<I>, &'static str>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let config = tls.config().map_err(|error| {
        tracing::warn!(%error, "TLS connection refused: no usable credentials");
        "no-credentials"
    })?;
    let stream = match tokio::time::timeout(timeout, tokio_rustls::TlsAcceptor::from(config).accept(io)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let reason = super::io_reason(&error);
            tracing::debug!(%error, reason, "inbound TLS handshake failed");
            return Err(reason);
        }
        Err(_) => return Err("timeout"),
    };
    let (_, conn) = stream.get_ref();
    let identity = match peer_identity(conn.peer_certificates()) {
        Ok(id) => Some(id),
        Err(IdentityError::NoCertificate) => None,
        // The verifier already refused certificates without exactly one SPIFFE ID.
        Err(_) => return Err("no-identity"),
    };
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    Ok(Accepted { stream, identity, alpn })
}
