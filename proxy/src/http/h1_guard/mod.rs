//! HTTP/1 request framing guard: detects request-smuggling framing that hyper hides.
//!
//! hyper 1's HTTP/1 server, on a request that carries both `Content-Length` and
//! `Transfer-Encoding`, silently drops `Content-Length` from the `HeaderMap`, frames the
//! body as chunked and merely disables keep-alive. A service therefore cannot see the
//! ambiguous framing (RFC 9112 §6.1 says such a request ought to be handled as an error,
//! and an intermediary must not forward it). Likewise hyper accepts any
//! `Transfer-Encoding` whose *last* coding is `chunked` (`gzip, chunked`, repeated
//! fields, ...), which upstreams may frame differently.
//!
//! [`H1Guard`] wraps the connection IO below hyper and observes the raw request bytes as
//! hyper reads them. A small framing tracker follows the request stream (head, then
//! `Content-Length` or chunked body, then the next head, including pipelining) and
//! pushes one [`HeadVerdict`] per parsed request head into a per-connection FIFO,
//! [`HeadVerdicts`]. hyper dispatches HTTP/1 requests strictly in order and only after
//! their head has been read, so the service pops exactly one verdict per request and
//! answers a bad one with `400` and `connection: close`.
//!
//! The tracker mirrors hyper's framing rules and stops for good (so [`HeadVerdicts::pop`]
//! returns `None` from then on) whenever it cannot follow the stream: a head larger than
//! [`GuardLimits::max_head_bytes`], a head `httparse` rejects (including more than
//! [`GuardLimits::max_headers`] fields), invalid or differing `Content-Length` values,
//! a malformed chunked body (hyper rejects all of these itself and closes the
//! connection), after a bad verdict (the service closes the connection), and after a
//! `CONNECT` or HTTP/1.1 `Upgrade` request (the connection may switch protocols). The
//! limits should therefore be at least hyper's (`max_buf_size`, `max_headers`, default
//! 100), or a head hyper accepts leaves the rest of the connection unchecked.
//!
//! Cost: a head that arrives within one read is parsed in place; only partial heads are
//! buffered (bounded by `max_head_bytes`). Body bytes are counted, never copied.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use self::tracker::Tracker;
#[cfg(test)]
use self::tracker::*;

mod head;
mod tracker;

/// Outcome of inspecting one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadVerdict {
    /// Framing is unambiguous.
    Ok,
    /// Both `Content-Length` and `Transfer-Encoding` are present.
    ContentLengthWithTransferEncoding,
    /// `Transfer-Encoding` is anything other than exactly one field whose value is
    /// `chunked` (e.g. `gzip, chunked`, `chunked, chunked`, two fields).
    InvalidTransferEncoding,
}

impl HeadVerdict {
    /// `true` for [`HeadVerdict::Ok`].
    pub fn is_ok(self) -> bool {
        self == HeadVerdict::Ok
    }
}

/// Per-connection FIFO of head verdicts, shared between the [`H1Guard`] (producer) and
/// the service (consumer, one [`pop`](HeadVerdicts::pop) per dispatched request).
#[derive(Clone, Default, Debug)]
pub struct HeadVerdicts(Arc<Mutex<VecDeque<HeadVerdict>>>);

impl HeadVerdicts {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The verdict for the oldest request not yet popped; `None` when the guard
    /// stopped tracking (or did not see a head for this request).
    pub fn pop(&self) -> Option<HeadVerdict> {
        self.lock().pop_front()
    }

    fn push(&self, verdict: HeadVerdict) {
        self.lock().push_back(verdict);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<HeadVerdict>> {
        // The queue stays consistent even if a holder panicked.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bounds for the tracker; use at least hyper's own limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Largest request head (request line + fields + terminator) followed.
    pub max_head_bytes: usize,
    /// Largest number of header fields parsed per head.
    pub max_headers: usize,
}

impl Default for GuardLimits {
    /// hyper's defaults: ~400 KiB read buffer, 100 headers.
    fn default() -> Self {
        Self { max_head_bytes: 400 * 1024, max_headers: 100 }
    }
}

pin_project_lite::pin_project! {
    /// IO wrapper that feeds every read byte into the request framing tracker.
    #[derive(Debug)]
    pub struct H1Guard<I> {
        #[pin]
        io: I,
        tracker: Tracker,
    }
}

impl<I> H1Guard<I> {
    /// Wraps `io`; verdicts for the request heads read through it go to `verdicts`.
    pub fn new(io: I, verdicts: HeadVerdicts, limits: GuardLimits) -> Self {
        Self { io, tracker: Tracker::new(verdicts, limits) }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &I {
        &self.io
    }

    /// Unwraps the IO (tracking state is discarded).
    pub fn into_inner(self) -> I {
        self.io
    }
}

impl<I: AsyncRead> AsyncRead for H1Guard<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.io.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = res {
            if let Some(new) = buf.filled().get(before..) {
                this.tracker.feed(new);
            }
        }
        res
    }
}

impl<I: AsyncWrite> AsyncWrite for H1Guard<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
