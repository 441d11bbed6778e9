//! The one body type that flows through both pipelines: a pass-through of hyper's `Incoming` or of an HTTP/2
//! upstream stream (no copy, no box), or a small synthesized body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

/// Errors of a body in flight.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pin_project_lite::pin_project! {
    /// A request or response body.
    #[derive(Debug)]
    pub struct Body {
        #[pin]
        kind: Kind,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind {
        Empty,
        Full { data: Option<Bytes> },
        Incoming { #[pin] inner: Incoming },
        /// An HTTP/2 upstream response (`backend::h2conn`).
        H2 { inner: H2Recv },
        /// Up to `TAPS` taps share one box of the body they watch (a response carries three: the pool's, the
        /// bulkhead's and the access log's), fired in the order they were added; on the last frame every tap sees
        /// its data before any is finished (nested, each finished before the next saw the frame).
        Tapped { inner: Pin<Box<Body>>, taps: [Option<Box<dyn BodyTap>>; TAPS], added: usize },
        /// Frames read ahead (to decide on a retry), then whatever is left of the original body, or the error
        /// that ended it.
        Buffered {
            frames: std::collections::VecDeque<Frame<Bytes>>,
            rest: Option<Pin<Box<Body>>>,
            error: Option<BodyError>,
        },
    }
}

/// Why a body in flight failed: the downstream or HTTP/1.1 side (hyper), or an HTTP/2 upstream stream.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error(transparent)]
    H2(#[from] h2::Error),
}

/// Watches a body go by: told of every data frame and of a clean end; dropped when the body ends or is dropped.
pub trait BodyTap: Send + 'static {
    fn data(&mut self, len: usize);

    /// The body was read to its end (not failed, not dropped part-way).
    fn finished(&mut self) {}
}

impl std::fmt::Debug for dyn BodyTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyTap")
    }
}

impl Body {
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        if data.is_empty() {
            return Self::empty();
        }
        Self { kind: Kind::Full { data: Some(data) } }
    }
}

impl Body {
    /// A body that yields `frames` first (data and trailers read ahead), then `rest` if the original was not over.
    pub fn buffered(frames: Vec<Frame<Bytes>>, rest: Option<Body>) -> Self {
        Self { kind: Kind::Buffered { frames: frames.into(), rest: rest.map(Box::pin), error: None } }
    }

    /// Frames read ahead from a body that then failed: the failure is passed on after them.
    pub fn buffered_then_error(frames: Vec<Frame<Bytes>>, error: BodyError) -> Self {
        Self { kind: Kind::Buffered { frames: frames.into(), rest: None, error: Some(error) } }
    }

    /// Wraps `self` so that `tap` sees every data frame and is dropped at the end of the stream, after the taps
    /// already on it.
    pub fn tapped(mut self, tap: Box<dyn BodyTap>) -> Self {
        if let Kind::Tapped { taps, added, .. } = &mut self.kind {
            if let Some(slot) = taps.get_mut(*added) {
                *slot = Some(tap);
                *added += 1;
                return self;
            }
        }
        let mut taps: [Option<Box<dyn BodyTap>>; TAPS] = Default::default();
        taps[0] = Some(tap);
        Self { kind: Kind::Tapped { inner: Box::pin(self), taps, added: 1 } }
    }
}

/// Taps held beside one body before another box is nested.
const TAPS: usize = 3;

fn finish(taps: &mut [Option<Box<dyn BodyTap>>]) {
    for tap in taps {
        if let Some(mut t) = tap.take() {
            t.finished();
        }
    }
}

impl Body {
    /// An HTTP/2 upstream response body. `guard`, if any, is fired when the body is dropped at its end (read to
    /// the end, or a response without a body), and dropped unfired if the body is dropped before.
    pub fn h2(recv: h2::RecvStream, guard: Option<tokio::sync::oneshot::Sender<()>>) -> Self {
        Self { kind: Kind::H2 { inner: H2Recv { recv, data_done: false, guard } } }
    }
}

/// An HTTP/2 stream's receiving half. Data is released to the flow-control window as it is handed on (the
/// consumer's pace is the window's pace); its guard tells the request body's pump, at drop, whether the response
/// was complete or abandoned. Decided at drop, not at the last poll: a consumer that sees `is_end_stream` (a
/// response of headers only, or after the last frame) never polls again.
#[derive(Debug)]
pub struct H2Recv {
    recv: h2::RecvStream,
    data_done: bool,
    guard: Option<tokio::sync::oneshot::Sender<()>>,
}

impl H2Recv {
    /// Its data, then its trailers. Any reset before the end of the stream is an error, NO_ERROR included: a
    /// server's RST_STREAM(NO_ERROR) after a complete response (RFC 9113 section 8.1) comes after END_STREAM, and
    /// `h2` then reports a clean end; one before it cut the body short.
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if !self.data_done {
            match std::task::ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => self.data_done = true,
            }
        }
        match std::task::ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }
}

impl Drop for H2Recv {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            if self.recv.is_end_stream() {
                let _ = guard.send(());
            }
        }
    }
}

impl Default for Body {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Incoming> for Body {
    fn from(inner: Incoming) -> Self {
        Self { kind: Kind::Incoming { inner } }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Incoming { inner } => inner.poll_frame(cx).map_err(BodyError::from),
            KindProj::H2 { inner } => inner.poll_frame(cx),
            KindProj::Tapped { inner, taps, .. } => {
                let frame = std::task::ready!(inner.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(f)) => {
                        if let Some(d) = f.data_ref() {
                            taps.iter_mut().flatten().for_each(|t| t.data(d.len()));
                        }
                    }
                    Some(Err(_)) => taps.iter_mut().for_each(|t| drop(t.take())),
                    None => finish(taps),
                }
                if inner.is_end_stream() {
                    finish(taps);
                }
                Poll::Ready(frame)
            }
            KindProj::Buffered { frames, rest, error } => match frames.pop_front() {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => match (rest.as_mut(), error.take()) {
                    (_, Some(e)) => Poll::Ready(Some(Err(e))),
                    (Some(rest), None) => rest.as_mut().poll_frame(cx),
                    (None, None) => Poll::Ready(None),
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Full { data } => data.is_none(),
            Kind::Incoming { inner } => inner.is_end_stream(),
            Kind::H2 { inner } => inner.recv.is_end_stream(),
            Kind::Tapped { inner, .. } => inner.is_end_stream(),
            Kind::Buffered { frames, rest, error } => {
                frames.is_empty() && error.is_none() && rest.as_ref().is_none_or(|r| r.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Incoming { inner } => inner.size_hint(),
            Kind::H2 { inner } if inner.recv.is_end_stream() => SizeHint::with_exact(0),
            Kind::H2 { .. } => SizeHint::new(),
            Kind::Tapped { inner, .. } => inner.size_hint(),
            Kind::Buffered { frames, rest, .. } => {
                let buffered: u64 = frames.iter().filter_map(|f| f.data_ref()).map(|d| d.len() as u64).sum();
                match rest {
                    None => SizeHint::with_exact(buffered),
                    Some(rest) => {
                        let r = rest.size_hint();
                        let mut hint = SizeHint::new();
                        hint.set_lower(r.lower() + buffered);
                        if let Some(upper) = r.upper() {
                            hint.set_upper(upper + buffered);
                        }
                        hint
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::*;

    /// Writes what it sees, under its name, into a shared log.
    struct Recorder(&'static str, Arc<Mutex<Vec<String>>>);

    impl BodyTap for Recorder {
        fn data(&mut self, len: usize) {
            self.1.lock().unwrap().push(format!("{} data {len}", self.0));
        }

        fn finished(&mut self) {
            self.1.lock().unwrap().push(format!("{} finished", self.0));
        }
    }

    impl Drop for Recorder {
        fn drop(&mut self) {
            self.1.lock().unwrap().push(format!("{} dropped", self.0));
        }
    }

    #[tokio::test]
    async fn taps_see_every_frame_and_the_end_in_the_order_they_were_added() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let tap = |name| Box::new(Recorder(name, log.clone()));
        let frames = vec![Frame::data(Bytes::from_static(b"abc")), Frame::data(Bytes::from_static(b"de"))];
        // Four taps: three share one box, the fourth nests around them.
        let body = Body::buffered(frames, None).tapped(tap("a")).tapped(tap("b")).tapped(tap("c")).tapped(tap("d"));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"abcde");
        // Inner taps first; the last frame ends the shared box's taps before the nesting tap sees that frame.
        let want = [
            "a data 3",
            "b data 3",
            "c data 3",
            "d data 3",
            "a data 2",
            "b data 2",
            "c data 2",
            "a finished",
            "a dropped",
            "b finished",
            "b dropped",
            "c finished",
            "c dropped",
            "d data 2",
            "d finished",
            "d dropped",
        ];
        assert_eq!(*log.lock().unwrap(), want);
    }

    #[tokio::test]
    async fn a_body_dropped_early_drops_its_taps_unfinished() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let tap = |name| Box::new(Recorder(name, log.clone()));
        let frames = vec![Frame::data(Bytes::from_static(b"abc"))];
        let rest = Body::buffered(vec![Frame::data(Bytes::from_static(b"more"))], None);
        let mut body = Body::buffered(frames, Some(rest)).tapped(tap("a")).tapped(tap("b"));
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().map(|d| d.len()), Some(3));
        drop(body);
        assert_eq!(*log.lock().unwrap(), ["a data 3", "b data 3", "a dropped", "b dropped"]);
    }
}
