//! The HTTP/2 client against a real loopback HTTP/2 server (the `h2` crate's), which reports what each stream
//! delivered: its body, its trailers, or the reset that ended it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt as _;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::backend::connect::Connector;

/// What the server saw of one request stream.
#[derive(Debug)]
enum Seen {
    Body { bytes: usize, trailers: Option<HeaderMap> },
    Reset(Option<Reason>),
}

/// How the server answers each stream, at once, before it reads the request body.
#[derive(Clone, Copy)]
enum Answer {
    /// 200, body `ok`, trailer `grpc-status: 0`.
    Full,
    /// 200 and END_STREAM on the headers (a 204, a gRPC trailers-only answer).
    HeadersOnly,
    /// 200, `par`, then RST_STREAM(NO_ERROR) before the end of the stream.
    Truncated,
}

/// Answers each stream at once (`answer`), then reads the request body to its end and reports it. `window`: the
/// server's initial stream window (small, to make the client wait for capacity).
async fn server(window: u32) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    answering(window, Answer::Full).await
}

async fn answering(window: u32, answer: Answer) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut conn = h2::server::Builder::new().initial_window_size(window).handshake(tcp).await.unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let seen_tx = seen_tx.clone();
                    tokio::spawn(async move {
                        let headers_only = matches!(answer, Answer::HeadersOnly);
                        let mut send = respond.send_response(Response::new(()), headers_only).unwrap();
                        match answer {
                            Answer::Full => {
                                send.send_data(Bytes::from_static(b"ok"), false).unwrap();
                                let mut trailers = HeaderMap::new();
                                trailers.insert("grpc-status", "0".parse().unwrap());
                                send.send_trailers(trailers).unwrap();
                            }
                            Answer::HeadersOnly => {}
                            Answer::Truncated => {
                                send.send_data(Bytes::from_static(b"par"), false).unwrap();
                                send.send_reset(Reason::NO_ERROR);
                                return;
                            }
                        }
                        let mut body = req.into_body();
                        let mut bytes = 0;
                        let seen = loop {
                            match body.data().await {
                                Some(Ok(data)) => {
                                    bytes += data.len();
                                    let _ = body.flow_control().release_capacity(data.len());
                                }
                                Some(Err(e)) => break Seen::Reset(e.reason()),
                                None => match body.trailers().await {
                                    Ok(trailers) => break Seen::Body { bytes, trailers },
                                    Err(e) => break Seen::Reset(e.reason()),
                                },
                            }
                        };
                        let _ = seen_tx.send(seen);
                    });
                }
            });
        }
    });
    (addr, seen)
}

fn client(addr: SocketAddr) -> H2Conn {
    H2Conn::new(Connector::new(addr, Duration::from_secs(5), None, Default::default()))
}

fn request(body: Body) -> Request<Body> {
    Request::builder().uri("http://app/x").version(http::Version::HTTP_2).body(body).unwrap()
}

#[tokio::test]
async fn a_response_brings_its_data_and_trailers() {
    let (addr, mut seen) = server(65_535).await;
    let rsp = client(addr).send(request(Body::empty())).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let collected = rsp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().and_then(|t| t.get("grpc-status")).unwrap(), "0");
    assert_eq!(collected.to_bytes(), "ok");
    assert!(matches!(seen.recv().await.unwrap(), Seen::Body { bytes: 0, trailers: None }));
}

#[tokio::test]
async fn a_request_body_larger_than_the_window_arrives_whole_with_its_trailers() {
    let (addr, mut seen) = server(1_024).await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-sum", "1".parse().unwrap());
    let frames = vec![http_body::Frame::data(Bytes::from(vec![7u8; 100_000])), http_body::Frame::trailers(trailers)];
    let rsp = client(addr).send(request(Body::buffered(frames, None))).await.unwrap();
    rsp.into_body().collect().await.unwrap();
    match seen.recv().await.unwrap() {
        Seen::Body { bytes, trailers } => {
            assert_eq!(bytes, 100_000);
            assert_eq!(trailers.unwrap().get("x-sum").unwrap(), "1");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_answer_of_headers_only_lets_the_upload_finish() {
    let (addr, mut seen) = answering(1_024, Answer::HeadersOnly).await;
    let frames = vec![http_body::Frame::data(Bytes::from(vec![7u8; 50_000]))];
    let rsp = client(addr).send(request(Body::buffered(frames, None))).await.unwrap();
    assert!(http_body::Body::is_end_stream(rsp.body()), "nothing to read");
    // A consumer that sees the end never polls the body: dropping it complete must not cancel the upload.
    drop(rsp);
    let seen = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.unwrap().unwrap();
    assert!(matches!(seen, Seen::Body { bytes: 50_000, .. }), "{seen:?}");
}

#[tokio::test]
async fn a_reset_before_the_end_of_the_stream_is_a_failure_not_a_short_body() {
    let (addr, _seen) = answering(65_535, Answer::Truncated).await;
    // The reset may be read with the headers (the response fails) or after them (the body fails).
    match client(addr).send(request(Body::empty())).await {
        Ok(rsp) => {
            let err = rsp.into_body().collect().await.unwrap_err();
            assert!(matches!(err, crate::body::BodyError::H2(ref e) if e.reason() == Some(Reason::NO_ERROR)), "{err}");
        }
        Err(err) => assert!(err.is::<UpstreamFailed>(), "{err}"),
    }
}

#[tokio::test]
async fn a_dropped_response_resets_a_request_body_still_streaming() {
    let (addr, mut seen) = server(65_535).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let (response, stream) = sender.ready().await.unwrap().send_request(Request::new(()), false).unwrap();
    // A request body that never ends (a stalled upload): only the response's guard can end its stream.
    let (_tx, rx) = mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(1);
    let stalled = http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    let guard = pump(stalled, stream);
    let rsp = response.await.unwrap();
    // Abandoned before its end (the server's trailers are not read).
    drop(Body::h2(rsp.into_body(), Some(guard)));
    let seen = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.unwrap().unwrap();
    assert!(matches!(seen, Seen::Reset(Some(Reason::CANCEL))), "{seen:?}");
}

#[tokio::test]
async fn a_connection_that_went_away_is_redialled_for_the_next_request() {
    let (addr, _seen) = server(65_535).await;
    let conn = client(addr);
    conn.send(request(Body::empty())).await.unwrap().into_body().collect().await.unwrap();
    // Kill the live connection from the client side; the next request must find it gone and dial again.
    {
        let mut slot = conn.slot.lock().await;
        slot.live = None;
    }
    let rsp = conn.send(request(Body::empty())).await.unwrap();
    assert_eq!(rsp.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert_eq!(conn.slot.lock().await.generation, 2);
}

#[tokio::test]
async fn an_upgrade_requests_connection_headers_never_reach_the_wire() {
    let mut headers = HeaderMap::new();
    for (k, v) in [("connection", "upgrade"), ("upgrade", "websocket"), ("te", "trailers"), ("x-keep", "1")] {
        headers.insert(k, v.parse().unwrap());
    }
    strip_connection_specific(&mut headers);
    let mut names: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["te", "x-keep"], "gRPC's te: trailers is allowed");
}

#[tokio::test(start_paused = true)]
async fn a_request_its_ended_connection_still_holds_is_refused_after_the_grace() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (ended_tx, ended) = watch::channel(false);
    let started = tokio::time::Instant::now();
    let waiting = tokio::spawn(answered_or_lost(std::future::pending::<()>(), ended, addr));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!waiting.is_finished(), "a live connection's request is not given up on");
    ended_tx.send_replace(true);
    let err = waiting.await.unwrap().unwrap_err();
    assert!(err.is::<Refused>(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(30) + H2Conn::LOST_GRACE);
}

#[tokio::test(start_paused = true)]
async fn an_answer_that_comes_with_the_close_wins() {
    let (_ended_tx, ended) = watch::channel(true);
    let answer = answered_or_lost(async { 7 }, ended, "127.0.0.1:1".parse().unwrap()).await.unwrap();
    assert_eq!(answer, 7);
}
