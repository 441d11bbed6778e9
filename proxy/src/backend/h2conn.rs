//! The one HTTP/2 connection to an endpoint, (re)established on demand, on `h2` directly: a request is one stream
//! opened by the caller's own task (no channel to a connection task, no task per request), and a request body, if
//! there is one, is pumped by a task of its own, which ends when the body ends, the stream is reset, or the response
//! is dropped. hyper's HTTP/2 client did the same work with a dispatch channel and a spawned task per request
//! (BENCHMARKS.md: instructions per h2c request).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Reason, SendStream};
use http::{HeaderMap, Request, Response};
use http_body::Body as _;
use tokio::sync::{oneshot, watch, Mutex};

use super::connect::Connector;
use crate::body::Body;
use crate::errors::{BoxError, Refused, UpstreamFailed};
use crate::tls::Alpn;

/// Flow-control windows, buffers and the stream limit before the server's SETTINGS, as hyper's client set them: large enough that one stream on loopback or a LAN
/// is not window-bound (a 64 KiB default window halts a 1 MiB body 16 times per round trip).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
const MAX_FRAME_SIZE: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Streams opened on a fresh connection before the server's SETTINGS say how many it takes (h2's default is no
/// limit: a burst on a redialled connection would have its excess refused).
const INITIAL_MAX_STREAMS: usize = 100;
/// The largest response head accepted from an upstream.
const MAX_HEADER_LIST: u32 = 16 * 1024;

#[derive(Debug)]
pub(super) struct H2Conn {
    connector: Connector,
    slot: Mutex<H2Slot>,
}

/// The live connection's sender, numbered so that a caller can retire exactly the connection it used.
#[derive(Debug, Default)]
struct H2Slot {
    generation: u64,
    live: Option<Live>,
}

/// A connection's sender, and a flag its task raises when the connection has ended.
#[derive(Clone, Debug)]
struct Live {
    sender: SendRequest<Bytes>,
    ended: watch::Receiver<bool>,
}

impl H2Conn {
    /// How many fresh connections a request that came back unsent may try before it is refused upward.
    const UNSENT_REDIALS: usize = 2;

    /// After its connection ended, how long a request still unanswered may wait to be answered or failed before it
    /// is taken for lost.
    const LOST_GRACE: Duration = Duration::from_secs(1);

    pub(super) fn new(connector: Connector) -> Self {
        Self { connector, slot: Mutex::default() }
    }

    pub(super) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// A sender on a live connection, connecting first if there is none.
    async fn sender(&self) -> Result<(u64, Live), BoxError> {
        let mut slot = self.slot.lock().await;
        if let Some(live) = slot.live.as_ref().filter(|l| !*l.ended.borrow()) {
            return Ok((slot.generation, live.clone()));
        }
        // Boxed: dialling is most of this future's size, and every request's future holds it.
        let live = Box::pin(self.dial()).await?;
        slot.generation += 1;
        slot.live = Some(live.clone());
        Ok((slot.generation, live))
    }

    async fn dial(&self) -> Result<Live, BoxError> {
        let addr = self.connector.addr();
        let stream = self.connector.connect(Alpn::Http2).await?;
        let (sender, conn) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(MAX_FRAME_SIZE)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_header_list_size(MAX_HEADER_LIST)
            .initial_max_send_streams(INITIAL_MAX_STREAMS)
            .enable_push(false)
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| UpstreamFailed { addr, source: Box::new(e) })?;
        let (ended_tx, ended) = watch::channel(false);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%addr, %error, "HTTP/2 upstream connection ended");
            }
            ended_tx.send_replace(true);
        });
        Ok(Live { sender, ended })
    }

    /// Stops handing out the connection of `generation`: it refused a new stream, so it is closing.
    async fn retire(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.generation == generation {
            slot.live = None;
        }
    }

    /// Sends on the endpoint's connection. A connection that cannot take a new stream (a GOAWAY or a close came
    /// first) is replaced and the request goes out on the fresh one, so a graceful restart of a healthy upstream
    /// costs no request even on routes without retries.
    pub(super) async fn send(&self, req: Request<Body>) -> Result<Response<Body>, BoxError> {
        let addr = self.connector.addr();
        let (mut head, body) = req.into_parts();
        strip_connection_specific(&mut head.headers);
        let mut redials = 0;
        loop {
            let (generation, Live { sender, ended }) = self.sender().await?;
            // A failed `ready` means the connection went away before this request touched it.
            let error = match sender.ready().await {
                Ok(mut sender) => {
                    let end_of_stream = body.is_end_stream();
                    // `send_request` takes the head: a GOAWAY read by the connection task on another worker between
                    // `ready` and here (multi-thread runtime only) fails this request as `Refused`, for the route's
                    // retries, instead of redialling; keeping a copy of every head for that window would cost each
                    // request an allocation.
                    let (response, stream) = sender
                        .send_request(Request::from_parts(head, ()), end_of_stream)
                        .map_err(|e| h2_error(addr, e))?;
                    let guard = (!end_of_stream).then(|| pump(body, stream));
                    let rsp = answered_or_lost(response, ended, addr).await?.map_err(|e| h2_error(addr, e))?;
                    return Ok(rsp.map(|recv| Body::h2(recv, guard)));
                }
                Err(error) => error,
            };
            if redials == Self::UNSENT_REDIALS {
                return Err(Box::new(Refused { addr, source: Box::new(error) }));
            }
            tracing::debug!(%addr, %error, "HTTP/2 connection cannot take a new stream; redialing");
            self.retire(generation).await;
            redials += 1;
        }
    }
}

/// Headers HTTP/2 forbids (RFC 9113 section 8.2.2), which `h2` refuses to send. The pipeline's hop-by-hop hygiene
/// (`http::strict`) removed them and left `TE` as `trailers` at most, except that an HTTP/1.1 upgrade request keeps
/// `Connection` and `Upgrade`, which cannot cross to HTTP/2: one lookup for the usual request.
fn strip_connection_specific(headers: &mut HeaderMap) {
    if headers.remove(http::header::CONNECTION).is_some() {
        headers.remove(http::header::UPGRADE);
    }
}

/// Starts the task that sends `body` on `stream`. The returned guard goes with the response: dropped unfired (the
/// response was abandoned: the client went away, the route timed out) it resets the stream if the body is still
/// going; fired (the response was complete) the body goes on to its end, as a server that answered early
/// may still read it (RFC 9113 section 8.1; it asks for the rest to stop with RST_STREAM NO_ERROR).
fn pump<B>(body: B, stream: SendStream<Bytes>) -> oneshot::Sender<()>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let (guard, dropped) = oneshot::channel();
    tokio::spawn(Pump { body, stream, pending: None, dropped: Some(dropped) });
    guard
}

pin_project_lite::pin_project! {
    /// A request body going out on its HTTP/2 stream, frame by frame, as the peer's flow-control window allows.
    struct Pump<B> {
        #[pin]
        body: B,
        stream: SendStream<Bytes>,
        // Data waiting for send capacity.
        pending: Option<Bytes>,
        // The response's guard, until it is fired or dropped.
        dropped: Option<oneshot::Receiver<()>>,
    }
}

impl<B> Future for Pump<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        if let Some(dropped) = this.dropped.as_mut() {
            match Pin::new(dropped).poll(cx) {
                Poll::Pending => {}
                // Read to its end: the body may go on.
                Poll::Ready(Ok(())) => *this.dropped = None,
                // Abandoned: nobody waits for this exchange any more.
                Poll::Ready(Err(_)) => {
                    this.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
            }
        }
        // The server reset the stream (it may have answered without reading the body: RST_STREAM NO_ERROR).
        if this.stream.poll_reset(cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            if let Some(data) = this.pending.as_mut() {
                this.stream.reserve_capacity(data.len());
                let capacity = match ready!(this.stream.poll_capacity(cx)) {
                    Some(Ok(0)) => continue,
                    Some(Ok(n)) => n,
                    Some(Err(_)) | None => return Poll::Ready(()),
                };
                let chunk = data.split_to(capacity.min(data.len()));
                let last = data.is_empty() && this.body.is_end_stream();
                if data.is_empty() {
                    *this.pending = None;
                }
                if this.stream.send_data(chunk, last).is_err() || last {
                    return Poll::Ready(());
                }
                continue;
            }
            match ready!(this.body.as_mut().poll_frame(cx)) {
                None => {
                    let _ = this.stream.send_data(Bytes::new(), true);
                    return Poll::Ready(());
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "request body failed; resetting its HTTP/2 stream");
                    this.stream.send_reset(Reason::CANCEL);
                    return Poll::Ready(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => *this.pending = Some(data),
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let _ = this.stream.send_trailers(trailers);
                        }
                        return Poll::Ready(());
                    }
                },
            }
        }
    }
}

/// The response, or the error the connection gave. A request the connection still holds when the connection has
/// ended (and a grace period passed) was lost: a server answers every stream it took before it closes, so a stream
/// still unanswered was never processed, and it is refused (safe to retry) rather than left to hang.
async fn answered_or_lost<F, T>(response: F, mut ended: watch::Receiver<bool>, addr: SocketAddr) -> Result<T, BoxError>
where
    F: Future<Output = T>,
{
    tokio::pin!(response);
    tokio::select! {
        biased;
        answer = &mut response => return Ok(answer),
        _ = ended.wait_for(|e| *e) => {}
    }
    match tokio::time::timeout(H2Conn::LOST_GRACE, response).await {
        Ok(answer) => Ok(answer),
        Err(_) => {
            tracing::warn!(%addr, "HTTP/2 upstream connection ended without answering or failing a request; refusing it");
            let source: BoxError = "the connection ended without answering or failing the request".into();
            Err(Box::new(Refused { addr, source }))
        }
    }
}

/// A stream the server refused, or left unprocessed when it went away, was never processed: say so, so that it is
/// retried like a connect failure. A graceful GOAWAY fails only the streams above its last processed id; an error
/// GOAWAY may fail processed ones too, so only the former counts.
fn h2_error(addr: SocketAddr, err: h2::Error) -> BoxError {
    let unprocessed =
        (err.is_go_away() && err.reason() == Some(Reason::NO_ERROR)) || err.reason() == Some(Reason::REFUSED_STREAM);
    if unprocessed {
        return Box::new(Refused { addr, source: Box::new(err) });
    }
    Box::new(UpstreamFailed { addr, source: Box::new(err) })
}

#[cfg(test)]
#[path = "h2conn_tests.rs"]
mod tests;
