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
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// Where the tracker is in the request byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head. Partial head bytes live in `Tracker::head`.
    Head,
    /// Skipping this many more `Content-Length` body bytes.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not following the stream any more.
    Stopped,
}

/// Chunked-body states, mirroring hyper's decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting the first hex digit of a chunk size.
    Start,
    Size(u64),
    SizeLws(u64),
    Ext(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk or a trailer field: `\r` ends the body, anything else
    /// starts a trailer field.
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

/// How the body after a head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// What to do after a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Push the verdict, then skip the body and expect the next head.
    Continue(HeadVerdict, Framing),
    /// Push the verdict, then stop tracking.
    Last(HeadVerdict),
    /// hyper rejects the head (or we cannot follow it): stop without a verdict.
    Abandon,
}

/// Header arrays up to this size live on the stack (uninitialised, no memset).
const STACK_HEADERS: usize = 128;
/// Partial-head buffers that grew beyond this are released after use.
const KEEP_HEAD_CAPACITY: usize = 8 * 1024;

#[derive(Debug)]
struct Tracker {
    state: State,
    verdicts: HeadVerdicts,
    limits: GuardLimits,
    /// Bytes of a head split across reads (empty while a head starts in the current read).
    head: Vec<u8>,
    /// Offset (within the current head) where the current line starts.
    line_start: usize,
    /// A non-empty line (the request line) was seen; leading empty lines are skipped.
    seen_line: bool,
}

impl Tracker {
    fn new(verdicts: HeadVerdicts, limits: GuardLimits) -> Self {
        Self { state: State::Head, verdicts, limits, head: Vec::new(), line_start: 0, seen_line: false }
    }

    /// Advances over newly read bytes.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = match self.state {
                State::Stopped => return,
                State::Head => self.step_head(data),
                State::Length(remaining) => {
                    let n = usize::try_from(remaining).map_or(data.len(), |r| r.min(data.len()));
                    let left = remaining - n as u64;
                    self.state = if left == 0 { State::Head } else { State::Length(left) };
                    n
                }
                State::Chunked(chunk) => self.step_chunked(chunk, data),
            };
            data = data.get(used..).unwrap_or_default();
        }
    }

    fn stop(&mut self) {
        self.state = State::Stopped;
        self.head = Vec::new();
    }

    /// Scans `data` for the end of the current head; returns the bytes consumed.
    fn step_head(&mut self, data: &[u8]) -> usize {
        // The current head is `self.head ++ data`; offsets below are into that.
        let base = self.head.len();
        let mut pos = 0;
        while let Some(i) = data[pos..].iter().position(|&b| b == b'\n') {
            let nl = pos + i;
            let line_len = base + nl - self.line_start;
            let prev = match nl.checked_sub(1) {
                Some(p) => data.get(p),
                None => self.head.last(),
            };
            let empty = line_len == 0 || (line_len == 1 && prev == Some(&b'\r'));
            pos = nl + 1;
            self.line_start = base + pos;
            if base + pos > self.limits.max_head_bytes {
                self.stop();
                return data.len();
            }
            if !empty {
                self.seen_line = true;
            } else if self.seen_line {
                let outcome = if base == 0 {
                    analyze(&data[..pos], self.limits.max_headers)
                } else {
                    self.head.extend_from_slice(&data[..pos]);
                    let outcome = analyze(&self.head, self.limits.max_headers);
                    self.head.clear();
                    if self.head.capacity() > KEEP_HEAD_CAPACITY {
                        self.head = Vec::new();
                    }
                    outcome
                };
                self.line_start = 0;
                self.seen_line = false;
                self.apply(outcome);
                return pos;
            }
        }
        if base + data.len() > self.limits.max_head_bytes {
            self.stop();
        } else {
            self.head.extend_from_slice(data);
        }
        data.len()
    }

    fn apply(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Continue(verdict, framing) => {
                self.verdicts.push(verdict);
                self.state = match framing {
                    Framing::None | Framing::Length(0) => State::Head,
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::Chunked(Chunk::Start),
                };
            }
            Outcome::Last(verdict) => {
                self.verdicts.push(verdict);
                self.stop();
            }
            Outcome::Abandon => self.stop(),
        }
    }

    /// Advances a chunked body over `data`; returns the bytes consumed.
    fn step_chunked(&mut self, mut chunk: Chunk, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            i += 1;
            chunk = match chunk {
                Chunk::Start => match hex(b) {
                    Some(d) => Chunk::Size(u64::from(d)),
                    None => return self.chunk_error(data.len()),
                },
                Chunk::Size(size) => match (hex(b), b) {
                    (Some(d), _) => match size.checked_mul(16) {
                        Some(s) => Chunk::Size(s | u64::from(d)),
                        None => return self.chunk_error(data.len()),
                    },
                    (None, b'\t' | b' ') => Chunk::SizeLws(size),
                    (None, b';') => Chunk::Ext(size),
                    (None, b'\r') => Chunk::SizeLf(size),
                    _ => return self.chunk_error(data.len()),
                },
                Chunk::SizeLws(size) => match b {
                    b'\t' | b' ' => Chunk::SizeLws(size),
                    b';' => Chunk::Ext(size),
                    b'\r' => Chunk::SizeLf(size),
                    _ => return self.chunk_error(data.len()),
                },
                Chunk::Ext(size) => {
                    // Extensions are ignored up to the CR; a bare LF is an error in hyper.
                    i -= 1;
                    match data[i..].iter().position(|&c| c == b'\r' || c == b'\n') {
                        None => {
                            i = data.len();
                            Chunk::Ext(size)
                        }
                        Some(p) if data[i + p] == b'\r' => {
                            i += p + 1;
                            Chunk::SizeLf(size)
                        }
                        Some(_) => return self.chunk_error(data.len()),
                    }
                }
                Chunk::SizeLf(size) => match (b, size) {
                    (b'\n', 0) => Chunk::EndCr,
                    (b'\n', _) => Chunk::Data(size),
                    _ => return self.chunk_error(data.len()),
                },
                Chunk::Data(rem) => {
                    i -= 1;
                    let avail = data.len() - i;
                    let n = usize::try_from(rem).map_or(avail, |r| r.min(avail));
                    i += n;
                    match rem - n as u64 {
                        0 => Chunk::DataCr,
                        left => Chunk::Data(left),
                    }
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Start,
                Chunk::EndCr if b == b'\r' => Chunk::EndLf,
                Chunk::EndCr | Chunk::Trailer => {
                    // A trailer field runs up to the next CR.
                    i -= 1;
                    match data[i..].iter().position(|&c| c == b'\r') {
                        None => {
                            i = data.len();
                            Chunk::Trailer
                        }
                        Some(p) => {
                            i += p + 1;
                            Chunk::TrailerLf
                        }
                    }
                }
                Chunk::TrailerLf if b == b'\n' => Chunk::EndCr,
                Chunk::EndLf if b == b'\n' => {
                    self.state = State::Head;
                    return i;
                }
                Chunk::DataCr | Chunk::DataLf | Chunk::TrailerLf | Chunk::EndLf => return self.chunk_error(data.len()),
            };
        }
        self.state = State::Chunked(chunk);
        data.len()
    }

    fn chunk_error(&mut self, consumed: usize) -> usize {
        self.stop();
        consumed
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a complete head (ending with its empty line) and decides what follows.
fn analyze(head: &[u8], max_headers: usize) -> Outcome {
    if max_headers <= STACK_HEADERS {
        let mut headers = [const { MaybeUninit::uninit() }; STACK_HEADERS];
        analyze_with(head, &mut headers[..max_headers])
    } else {
        let mut headers = Vec::new();
        headers.resize_with(max_headers, MaybeUninit::uninit);
        analyze_with(head, &mut headers)
    }
}

fn analyze_with<'b>(head: &'b [u8], headers: &mut [MaybeUninit<httparse::Header<'b>>]) -> Outcome {
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, headers) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        // hyper answers parse errors itself; a length mismatch means we lost track.
        _ => return Outcome::Abandon,
    }
    let is_http_11 = req.version == Some(1);
    let mut te_fields = 0usize;
    let mut te_exactly_chunked = false;
    let mut content_length: Option<u64> = None;
    let mut cl_invalid = false;
    let mut upgrade = req.method == Some("CONNECT");
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te_fields += 1;
            te_exactly_chunked = trim(h.value).eq_ignore_ascii_case(b"chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            match (digits(h.value), content_length) {
                (Some(n), None) => content_length = Some(n),
                (Some(n), Some(prev)) if n == prev => {}
                _ => cl_invalid = true,
            }
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade |= is_http_11;
        }
    }
    let has_cl = content_length.is_some() || cl_invalid;
    if te_fields > 0 {
        let verdict = if has_cl {
            HeadVerdict::ContentLengthWithTransferEncoding
        } else if te_fields > 1 || !te_exactly_chunked {
            HeadVerdict::InvalidTransferEncoding
        } else {
            HeadVerdict::Ok
        };
        // After a bad verdict the service closes the connection; hyper rejects TE on
        // HTTP/1.0 itself.
        if verdict != HeadVerdict::Ok || upgrade || !is_http_11 {
            return Outcome::Last(verdict);
        }
        return Outcome::Continue(verdict, Framing::Chunked);
    }
    if cl_invalid {
        // Invalid or differing Content-Length: hyper answers 400 itself.
        return Outcome::Abandon;
    }
    if upgrade {
        return Outcome::Last(HeadVerdict::Ok);
    }
    let framing = content_length.map_or(Framing::None, Framing::Length);
    Outcome::Continue(HeadVerdict::Ok, framing)
}

/// Strips optional whitespace (SP / HTAB) around a field value or list element.
fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(v.len());
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// A `Content-Length` value as hyper accepts it: ASCII digits only, no overflow.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
#[path = "h1_guard_tests.rs"]
mod tests;
