//! The framing tracker: follows the request byte stream (head, body, next head) and records a verdict per head.

use super::head::{analyze, Framing, Outcome};
use super::{GuardLimits, HeadVerdicts};

/// Where the tracker is in the request byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
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
pub(super) enum Chunk {
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

/// Partial-head buffers that grew beyond this are released after use.
const KEEP_HEAD_CAPACITY: usize = 8 * 1024;

#[derive(Debug)]
pub(super) struct Tracker {
    pub(super) state: State,
    pub(super) verdicts: HeadVerdicts,
    pub(super) limits: GuardLimits,
    /// Bytes of a head split across reads (empty while a head starts in the current read).
    pub(super) head: Vec<u8>,
    /// Offset (within the current head) where the current line starts.
    pub(super) line_start: usize,
    /// A non-empty line (the request line) was seen; leading empty lines are skipped.
    pub(super) seen_line: bool,
    /// Heads read to their end so far (the guard's head clock restarts for the next one).
    pub(super) heads_ended: u64,
}

impl Tracker {
    pub(super) fn new(verdicts: HeadVerdicts, limits: GuardLimits) -> Self {
        Self { state: State::Head, verdicts, limits, head: Vec::new(), line_start: 0, seen_line: false, heads_ended: 0 }
    }

    /// Advances over newly read bytes.
    pub(super) fn feed(&mut self, mut data: &[u8]) {
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

    /// A head has begun and is not complete yet.
    pub(super) fn head_in_progress(&self) -> bool {
        self.state == State::Head && !self.head.is_empty()
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
        while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
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
        self.heads_ended += 1;
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
