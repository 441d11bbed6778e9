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
//!
//! The guard also bounds how long a head may take once it has begun ([`GuardLimits::head_timeout`], a slowloris
//! client): hyper's own header-read timer would arm and drop a timer for every request, where a head that arrives
//! in one read (nearly all of them) needs none. Waiting for a next request that has not begun is the connection's
//! idle timeout, kept by the listener.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

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
    /// How long a head may take from its first byte to its end; `None`: unbounded. While the tracker follows
    /// the stream (see the module docs: after it stops, hyper's own limits are what is left).
    pub head_timeout: Option<Duration>,
}

impl Default for GuardLimits {
    /// hyper's defaults: ~400 KiB read buffer, 100 headers; no head timeout.
    fn default() -> Self {
        Self { max_head_bytes: 400 * 1024, max_headers: 100, head_timeout: None }
    }
}

/// The deadline of a head in progress; the timer is made on the first slow head and reset for later ones.
#[derive(Debug, Default)]
struct HeadClock {
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl HeadClock {
    /// After a read: an error when the head in progress is past its deadline (a client trickling bytes is never
    /// Pending for long, so the deadline is checked on every read too); the clock stops once no head is.
    fn after_read(&mut self, in_progress: bool) -> io::Result<()> {
        if !in_progress {
            self.deadline = None;
            return Ok(());
        }
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(head_timed_out()),
            _ => Ok(()),
        }
    }

    /// While the read waits with a head in progress: the clock starts (hyper is waiting for the rest of the head
    /// now, not merely holding bytes that arrived early behind a request it is still serving), and an error once
    /// the head is past its deadline.
    fn poll_waiting(&mut self, cx: &mut Context<'_>, in_progress: bool, timeout: Option<Duration>) -> Poll<io::Error> {
        let Some(timeout) = timeout.filter(|_| in_progress) else { return Poll::Pending };
        if self.deadline.is_none() {
            let deadline = Instant::now() + timeout;
            self.deadline = Some(deadline);
            match self.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match self.timer.as_mut() {
            Some(timer) => timer.as_mut().poll(cx).map(|()| head_timed_out()),
            None => Poll::Pending,
        }
    }
}

fn head_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request head not complete within the head timeout")
}

pin_project_lite::pin_project! {
    /// IO wrapper that feeds every read byte into the request framing tracker.
    #[derive(Debug)]
    pub struct H1Guard<I> {
        #[pin]
        io: I,
        tracker: Tracker,
        clock: HeadClock,
    }
}

impl<I> H1Guard<I> {
    /// Wraps `io`; verdicts for the request heads read through it go to `verdicts`.
    pub fn new(io: I, verdicts: HeadVerdicts, limits: GuardLimits) -> Self {
        Self { io, tracker: Tracker::new(verdicts, limits), clock: HeadClock::default() }
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
        let timeout = this.tracker.limits.head_timeout;
        match res {
            Poll::Ready(Ok(())) => {
                let ended = this.tracker.heads_ended;
                if let Some(new) = buf.filled().get(before..) {
                    this.tracker.feed(new);
                }
                if this.tracker.heads_ended != ended {
                    // A head that ended in this read: the next one, if it began here, has a clock of its own.
                    this.clock.deadline = None;
                }
                Poll::Ready(this.clock.after_read(this.tracker.head_in_progress()))
            }
            Poll::Pending => this.clock.poll_waiting(cx, this.tracker.head_in_progress(), timeout).map(Err),
            done => done,
        }
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
