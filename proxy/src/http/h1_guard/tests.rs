use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const LIMITS: GuardLimits = GuardLimits { max_head_bytes: 1024, max_headers: 32, head_timeout: None };

const CHUNKED_REQ: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
    5;name=value;x=\"q\"\r\nhello\r\n\
    A \r\n\r\n\r\n\r\n\r\nxx\r\n\
    0;last\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n";
const CL_TE_REQ: &[u8] =
    b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
const GET_REQ: &[u8] = b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n";

fn tracker() -> (Tracker, HeadVerdicts) {
    let verdicts = HeadVerdicts::new();
    (Tracker::new(verdicts.clone(), LIMITS), verdicts)
}

fn drain(verdicts: &HeadVerdicts) -> Vec<HeadVerdict> {
    std::iter::from_fn(|| verdicts.pop()).collect()
}

/// Feeds `chunks` as separate reads; returns the verdicts and the final state.
fn feed(chunks: &[&[u8]]) -> (Vec<HeadVerdict>, State) {
    let (mut t, v) = tracker();
    for c in chunks {
        t.feed(c);
    }
    (drain(&v), t.state)
}

fn verdicts_of(stream: &[u8]) -> Vec<HeadVerdict> {
    feed(&[stream]).0
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn every_split_of_two_pipelined_requests() {
    let stream = concat(&[CHUNKED_REQ, CL_TE_REQ]);
    for split in 0..=stream.len() {
        let (a, b) = stream.split_at(split);
        let (got, _) = feed(&[a, b]);
        assert_eq!(got, [HeadVerdict::Ok, HeadVerdict::ContentLengthWithTransferEncoding], "split at {split}");
    }
}

#[test]
fn every_split_into_three_reads() {
    let body_req = b"PUT /d HTTP/1.1\r\nContent-Length: 12\r\n\r\n\r\n\r\nGET / HTTP";
    let stream = concat(&[body_req, GET_REQ]);
    for i in 0..=stream.len() {
        for j in i..=stream.len() {
            let (got, state) = feed(&[&stream[..i], &stream[i..j], &stream[j..]]);
            assert_eq!(got, [HeadVerdict::Ok, HeadVerdict::Ok], "splits {i},{j}");
            assert_eq!(state, State::Head);
        }
    }
}

#[test]
fn byte_by_byte_delivery() {
    let stream = concat(&[CHUNKED_REQ, GET_REQ, b"\r\n", CHUNKED_REQ, CL_TE_REQ]);
    let (mut t, v) = tracker();
    for b in &stream {
        t.feed(std::slice::from_ref(b));
    }
    assert_eq!(
        drain(&v),
        [HeadVerdict::Ok, HeadVerdict::Ok, HeadVerdict::Ok, HeadVerdict::ContentLengthWithTransferEncoding]
    );
}

#[test]
fn content_length_body_is_skipped() {
    // The body looks like a smuggled CL+TE head; it must be counted, not parsed.
    let smuggled = CL_TE_REQ;
    let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", smuggled.len());
    let stream = concat(&[head.as_bytes(), smuggled, GET_REQ]);
    assert_eq!(verdicts_of(&stream), [HeadVerdict::Ok, HeadVerdict::Ok]);
    // Repeated identical Content-Length values are accepted by hyper, too.
    let stream = concat(&[b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc", GET_REQ]);
    assert_eq!(verdicts_of(&stream), [HeadVerdict::Ok, HeadVerdict::Ok]);
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let stream = concat(&[CHUNKED_REQ, GET_REQ]);
    let (got, state) = feed(&[&stream]);
    assert_eq!(got, [HeadVerdict::Ok, HeadVerdict::Ok]);
    assert_eq!(state, State::Head);
    // Chunk data containing a complete CL+TE head is skipped as data.
    let data = CL_TE_REQ;
    let body = format!("{:x}\r\n", data.len());
    let stream = concat(&[
        b"POST / HTTP/1.1\r\ntransfer-encoding:  Chunked \r\n\r\n",
        body.as_bytes(),
        data,
        b"\r\n0\r\n\r\n",
        GET_REQ,
    ]);
    assert_eq!(verdicts_of(&stream), [HeadVerdict::Ok, HeadVerdict::Ok]);
}

#[test]
fn malformed_chunked_body_stops_tracking() {
    for bad in [&b"zz\r\n"[..], b"5\nhello\r\n", b"1;a\nx", b"1\r\nxyz", b"0\r\n\r\r"] {
        let stream = concat(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", bad, GET_REQ]);
        let (got, state) = feed(&[&stream]);
        assert_eq!(got, [HeadVerdict::Ok], "{bad:?}");
        assert_eq!(state, State::Stopped, "{bad:?}");
    }
}

#[test]
fn content_length_with_transfer_encoding_in_either_order() {
    let te_first = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n";
    let cl_first = CL_TE_REQ;
    let te_gzip = b"POST / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: gzip\r\n\r\n";
    for req in [&te_first[..], cl_first, te_gzip] {
        let (got, state) = feed(&[req, GET_REQ]);
        assert_eq!(got, [HeadVerdict::ContentLengthWithTransferEncoding]);
        assert_eq!(state, State::Stopped, "the connection is closed after a bad verdict");
    }
}

#[test]
fn invalid_transfer_encodings() {
    for te in [
        &b"Transfer-Encoding: gzip, chunked\r\n"[..],
        b"Transfer-Encoding: chunked, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
        b"Transfer-Encoding:\r\n",
    ] {
        let stream = concat(&[b"POST / HTTP/1.1\r\n", te, b"\r\n0\r\n\r\n", GET_REQ]);
        assert_eq!(verdicts_of(&stream), [HeadVerdict::InvalidTransferEncoding], "{}", String::from_utf8_lossy(te));
    }
}

#[test]
fn keep_alive_sequence_yields_verdicts_in_order() {
    let stream = concat(&[
        GET_REQ,
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nok",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ]);
    let (mut t, v) = tracker();
    t.feed(&stream);
    assert_eq!(v.pop(), Some(HeadVerdict::Ok));
    assert_eq!(v.pop(), Some(HeadVerdict::Ok));
    assert_eq!(v.pop(), Some(HeadVerdict::InvalidTransferEncoding));
    assert_eq!(v.pop(), None);
}

#[test]
fn head_in_one_read_is_not_copied() {
    let (mut t, v) = tracker();
    t.feed(&concat(&[CHUNKED_REQ, GET_REQ, GET_REQ]));
    assert_eq!(drain(&v).len(), 3);
    assert_eq!(t.head.capacity(), 0);
}

#[test]
fn oversize_head_stops_tracking() {
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(LIMITS.max_head_bytes));
    // In one read, and spread over small reads.
    let (got, state) = feed(&[big.as_bytes(), CL_TE_REQ]);
    assert_eq!((got, state), (vec![], State::Stopped));
    let (mut t, v) = tracker();
    for c in big.as_bytes().chunks(100) {
        t.feed(c);
    }
    t.feed(CL_TE_REQ);
    assert_eq!(v.pop(), None);
    assert_eq!(t.state, State::Stopped);
    assert_eq!(t.head.capacity(), 0, "partial head buffer released");
    // A head without any newline is bounded too.
    let (got, state) = feed(&[&[b'a'; 600], &[b'a'; 600]]);
    assert_eq!((got, state), (vec![], State::Stopped));
}

#[test]
fn too_many_headers_or_parse_error_stops_tracking() {
    let many: String = (0..=LIMITS.max_headers).map(|i| format!("X-{i}: 1\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(feed(&[req.as_bytes(), GET_REQ]), (vec![], State::Stopped));
    assert_eq!(feed(&[b"GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n", GET_REQ]), (vec![], State::Stopped));
    // Differing or invalid Content-Length values are rejected by hyper.
    for cl in ["Content-Length: 1\r\nContent-Length: 2", "Content-Length: +1", "Content-Length: 1, 1"] {
        let req = format!("POST / HTTP/1.1\r\n{cl}\r\n\r\n");
        assert_eq!(feed(&[req.as_bytes()]), (vec![], State::Stopped), "{cl}");
    }
}

#[test]
fn upgrade_and_connect_stop_tracking() {
    let upgrade = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    let connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    for req in [&upgrade[..], connect] {
        let (got, state) = feed(&[req, CL_TE_REQ]);
        assert_eq!((got, state), (vec![HeadVerdict::Ok], State::Stopped));
    }
    // hyper ignores Upgrade on HTTP/1.0.
    let (got, state) = feed(&[b"GET / HTTP/1.0\r\nUpgrade: x\r\n\r\n", GET_REQ]);
    assert_eq!((got, state), (vec![HeadVerdict::Ok, HeadVerdict::Ok], State::Head));
}

#[test]
fn leading_empty_lines_and_bare_lf() {
    let stream = concat(&[b"\r\n\n", b"GET / HTTP/1.1\nHost: x\n\n", b"\r\n", GET_REQ]);
    for split in 0..=stream.len() {
        let (a, b) = stream.split_at(split);
        let (got, state) = feed(&[a, b]);
        assert_eq!((got, state), (vec![HeadVerdict::Ok; 2], State::Head), "split at {split}");
    }
}

#[tokio::test]
async fn reads_through_guard_over_duplex() {
    let (mut client, server) = tokio::io::duplex(16);
    let verdicts = HeadVerdicts::new();
    let mut guard = H1Guard::new(server, verdicts.clone(), LIMITS);
    let stream = concat(&[CHUNKED_REQ, GET_REQ, CL_TE_REQ]);
    let expected = stream.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&stream).await?;
        client.shutdown().await
    });
    let mut read = Vec::new();
    guard.read_to_end(&mut read).await.expect("read");
    writer.await.expect("join").expect("write");
    assert_eq!(read, expected, "bytes pass through unchanged");
    assert_eq!(drain(&verdicts), [HeadVerdict::Ok, HeadVerdict::Ok, HeadVerdict::ContentLengthWithTransferEncoding]);
    assert!(!guard.is_write_vectored() || guard.get_ref().is_write_vectored());
}

#[tokio::test]
async fn hyper_connection_answers_cl_te_with_400() {
    let (mut client, server) = tokio::io::duplex(1024);
    let verdicts = HeadVerdicts::new();
    let io = TokioIo::new(H1Guard::new(server, verdicts.clone(), GuardLimits::default()));
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let verdict = verdicts.pop().unwrap_or(HeadVerdict::Ok);
        async move {
            let resp = if verdict.is_ok() {
                hyper::Response::new(Full::new(Bytes::from_static(b"fine")))
            } else {
                // hyper has already hidden the Content-Length header.
                assert!(req.headers().get(http::header::CONTENT_LENGTH).is_none());
                hyper::Response::builder()
                    .status(400)
                    .header(http::header::CONNECTION, "close")
                    .body(Full::new(Bytes::from_static(b"bad framing")))
                    .expect("response")
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));

    client.write_all(&concat(&[GET_REQ, CL_TE_REQ, GET_REQ])).await.expect("write");
    let mut resp = Vec::new();
    client.read_to_end(&mut resp).await.expect("read until close");
    let resp = String::from_utf8(resp).expect("utf8");
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    let second = resp.find("HTTP/1.1 400 Bad Request\r\n").expect("400 response");
    assert!(resp[second..].contains("connection: close"), "{resp}");
    assert!(resp.ends_with("bad framing"), "third request not served: {resp}");
    conn.await.expect("join").expect("connection");
}

/// Every request hyper dispatches on a pipelined keep-alive stream gets its own verdict.
#[tokio::test]
async fn verdicts_stay_in_step_with_hyper() {
    let (client, server) = tokio::io::duplex(7);
    let verdicts = HeadVerdicts::new();
    let io = TokioIo::new(H1Guard::new(server, verdicts.clone(), GuardLimits::default()));
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let verdict = verdicts.pop();
        async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await?.to_bytes();
            let status = if verdict == Some(HeadVerdict::Ok) { 200 } else { 500 };
            let resp = hyper::Response::builder().status(status).body(Full::new(body)).expect("response");
            Ok::<_, hyper::Error>(resp)
        }
    });
    let conn = tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, svc));
    let stream = concat(&[
        CHUNKED_REQ,
        b"\r\nPOST / HTTP/1.1\nContent-Length: 4\n\n\r\n\r\n",
        GET_REQ,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n1\r\nz\r\n0\r\n\r\n",
    ]);
    let (mut rx, mut tx) = tokio::io::split(client);
    let writer = tokio::spawn(async move { tx.write_all(&stream).await });
    let mut resp = Vec::new();
    rx.read_to_end(&mut resp).await.expect("read until close");
    writer.await.expect("join").expect("write");
    let resp = String::from_utf8(resp).expect("utf8");
    assert_eq!(resp.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{resp}");
    assert!(!resp.contains(" 500 "), "{resp}");
    conn.await.expect("join").expect("connection");
}

/// A guard over a duplex pipe whose heads must end within 5 s.
fn timed_guard() -> (tokio::io::DuplexStream, H1Guard<tokio::io::DuplexStream>) {
    let (client, server) = tokio::io::duplex(1024);
    let limits = GuardLimits { head_timeout: Some(Duration::from_secs(5)), ..LIMITS };
    (client, H1Guard::new(server, HeadVerdicts::new(), limits))
}

/// What the next read of `guard` gives within `within` (paused time): `None` while it still waits.
async fn next_read(guard: &mut H1Guard<tokio::io::DuplexStream>, within: Duration) -> Option<io::Result<usize>> {
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, guard.read(&mut buf)).await.ok()
}

#[tokio::test(start_paused = true)]
async fn a_head_that_stalls_part_way_fails_the_read_at_its_deadline() {
    let (mut client, mut guard) = timed_guard();
    client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(matches!(next_read(&mut guard, Duration::from_secs(1)).await, Some(Ok(n)) if n > 0));
    let err = next_read(&mut guard, Duration::from_secs(60)).await.expect("the read ends").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), Duration::from_secs(5), "at the head's deadline, counted from its first byte");
}

#[tokio::test(start_paused = true)]
async fn a_head_trickled_byte_by_byte_fails_at_its_deadline_too() {
    let (mut client, mut guard) = timed_guard();
    let started = tokio::time::Instant::now();
    let mut result = None;
    for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ".iter().cycle().take(100) {
        client.write_all(&[*byte]).await.unwrap();
        // As hyper does: read what came, then wait for more (900 ms until the next byte).
        match next_read(&mut guard, Duration::from_secs(1)).await {
            Some(Ok(_)) => {}
            other => {
                result = other;
                break;
            }
        }
        if let Some(failed) = next_read(&mut guard, Duration::from_millis(900)).await {
            result = Some(failed);
            break;
        }
    }
    let err = result.expect("the read failed").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn complete_heads_and_idle_waits_are_not_timed() {
    let (mut client, mut guard) = timed_guard();
    for _ in 0..3 {
        client.write_all(GET_REQ).await.unwrap();
        assert!(matches!(next_read(&mut guard, Duration::from_secs(1)).await, Some(Ok(n)) if n == GET_REQ.len()));
        // Between requests: idle, which is the listener's to bound, not the guard's.
        assert!(next_read(&mut guard, Duration::from_secs(60)).await.is_none(), "still waiting after 60 s");
    }
    // A slow head after fast ones has its own 5 s.
    client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    assert!(matches!(next_read(&mut guard, Duration::from_secs(1)).await, Some(Ok(_))));
    let err = next_read(&mut guard, Duration::from_secs(60)).await.expect("the read ends").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
}

#[tokio::test(start_paused = true)]
async fn a_head_that_arrived_behind_one_being_served_is_timed_from_when_it_is_awaited() {
    let (mut client, mut guard) = timed_guard();
    client.write_all(&concat(&[GET_REQ, b"GET /d HTTP/1.1\r\n"])).await.unwrap();
    assert!(matches!(next_read(&mut guard, Duration::from_secs(1)).await, Some(Ok(_))));
    // hyper serves the first request for longer than the head timeout before it reads again.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let awaited = tokio::time::Instant::now();
    let err = next_read(&mut guard, Duration::from_secs(60)).await.expect("the read ends").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(awaited.elapsed(), Duration::from_secs(5), "its own 5 s, from hyper's first wait for it");
}
