//! The control-plane stream's framing, shared by both ends: JSON messages, one per line, over a streaming HTTP/2
//! body. Both directions are bounded: a reader refuses a line longer than its limit, a sender waits while the peer
//! is slow to read instead of queueing without end.

use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, StreamBody};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::body::BoxError;

/// A body whose frames are the lines a [`LineSender`] sends.
pub type LineBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// Sends messages as JSON lines of a [`LineBody`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LineSender(mpsc::Sender<Result<Frame<Bytes>, Infallible>>);

/// Reads JSON lines from a body.
pub struct LineReader<B> {
    body: B,
    buf: BytesMut,
    max: usize,
}

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the stream failed")]
    Body(#[source] BoxError),
    #[error("a message is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("a message is not valid")]
    Json(#[source] serde_json::Error),
}

/// The receiving end of a [`LineSender`] is gone.
#[derive(Debug, thiserror::Error)]
#[error("the stream is closed")]
pub struct Closed;

/// A sender and the body it feeds; at most `capacity` messages wait to be written.
pub fn line_channel(capacity: usize) -> (LineSender, LineBody) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (LineSender(tx), StreamBody::new(ReceiverStream::new(rx)))
}

impl LineSender {
    pub async fn send<T: Serialize>(&self, message: &T) -> Result<(), Closed> {
        let mut line = serde_json::to_vec(message).map_err(|_| Closed)?;
        line.push(b'\n');
        self.0.send(Ok(Frame::data(Bytes::from(line)))).await.map_err(|_| Closed)
    }

    /// Resolves when the body has been dropped (the peer or the connection is gone).
    pub async fn closed(&self) {
        self.0.closed().await;
    }
}

impl<B> LineReader<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub fn new(body: B, max: usize) -> Self {
        Self { body, buf: BytesMut::new(), max }
    }

    /// The next message; `None` when the body ended cleanly between messages.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line = self.buf.split_to(end + 1);
                let line = &line[..end];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line).map(Some).map_err(WireError::Json);
            }
            if self.buf.len() > self.max {
                return Err(WireError::TooLong { max: self.max });
            }
            match self.body.frame().await {
                None if self.buf.iter().all(u8::is_ascii_whitespace) => return Ok(None),
                None => return Err(WireError::Body("the stream ended inside a message".into())),
                Some(Err(e)) => return Err(WireError::Body(e.into())),
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize, Serialize)]
    struct Msg {
        n: u32,
    }

    #[tokio::test]
    async fn lines_round_trip_and_a_message_split_over_frames_is_whole() {
        let (tx, body) = line_channel(4);
        tokio::spawn(async move {
            tx.send(&Msg { n: 1 }).await.unwrap();
            tx.send(&Msg { n: 2 }).await.unwrap();
        });
        let mut reader = LineReader::new(body, 1024);
        assert_eq!(reader.next::<Msg>().await.unwrap(), Some(Msg { n: 1 }));
        assert_eq!(reader.next::<Msg>().await.unwrap(), Some(Msg { n: 2 }));
        assert_eq!(reader.next::<Msg>().await.unwrap(), None);

        let frames = ["{\"n\"", ":3}\n\n{\"n\":4}\n"].map(|s| Ok::<_, Infallible>(Frame::data(Bytes::from(s))));
        let body = StreamBody::new(tokio_stream::iter(frames));
        let mut reader = LineReader::new(body, 1024);
        assert_eq!(reader.next::<Msg>().await.unwrap(), Some(Msg { n: 3 }));
        assert_eq!(reader.next::<Msg>().await.unwrap(), Some(Msg { n: 4 }));
    }

    #[tokio::test]
    async fn an_overlong_or_broken_message_is_an_error() {
        let long = Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'x'; 2000])));
        let mut reader = LineReader::new(StreamBody::new(tokio_stream::iter([long])), 1024);
        assert!(matches!(reader.next::<Msg>().await, Err(WireError::TooLong { max: 1024 })));
        let cut = Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{\"n\":")));
        let mut reader = LineReader::new(StreamBody::new(tokio_stream::iter([cut])), 1024);
        assert!(matches!(reader.next::<Msg>().await, Err(WireError::Body(_))));
        let bad = Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{\"n\":\"x\"}\n")));
        let mut reader = LineReader::new(StreamBody::new(tokio_stream::iter([bad])), 1024);
        assert!(matches!(reader.next::<Msg>().await, Err(WireError::Json(_))));
    }
}
