//! Retries of gRPC calls and HTTP/2 upstreams: a unary call whose body has no content-length is replayed, a
//! server stream is handed on at once, metrics name the backend that answered, and streams an HTTP/2 upstream
//! refused or left unprocessed when it went away are retried whatever the method.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attache_tests::{
    client, faults, proxy, server,
    wait::{millis, secs},
    with_timeout, Body, BoxError, Metrics,
};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

/// Service `svc`, route `default` with the keys `route_extra` (e.g. `retry: {...}, timeout: 5s`) to backend `web` at
/// `endpoints`, whose keys are extended by `backend_extra` (e.g. `, protocol: http2`).
fn config(endpoints: &[SocketAddr], route_extra: &str, backend_extra: &str) -> String {
    let eps: Vec<_> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ connect_timeout: 500ms }}\nlisteners:\n  - {{ name: outbound, \
         address: \"127.0.0.1:0\", direction: outbound }}\nservices:\n  - name: svc\n    hosts: [svc]\n    routes:\n      \
         - {{ name: default, {route_extra}, backends: [{{ name: web }}] }}\nbackends:\n  - {{ name: web, endpoints: \
         [{}] {backend_extra} }}\n",
        eps.join(", ")
    )
}

fn retries(metrics: &Metrics, reason: &str) -> f64 {
    metrics.sum("attache_retries_total", &[("service", "svc"), ("route", "default"), ("reason", reason)])
}

fn route_counter(metrics: &Metrics, name: &str) -> f64 {
    metrics.sum(name, &[("service", "svc"), ("route", "default")])
}

fn grpc_response(frames: Vec<Result<Frame<Bytes>, BoxError>>) -> Response<Body> {
    let mut rsp = Response::new(BodyExt::boxed_unsync(StreamBody::new(futures_util::stream::iter(frames))));
    rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    rsp
}

fn grpc_trailers(code: u32) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from(code));
    t
}

/// A gRPC request for `svc` whose body comes from a channel: its size is unknown to the client, so no
/// content-length is sent (as with every gRPC client). The body is `message` in one gRPC frame, then ends.
fn streamed_grpc_request(c: &client::Client, message: &[u8]) -> Request<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    tx.try_send(server::grpc_frame(message)).expect("channel has room");
    drop(tx);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let data = rx.recv().await?;
        Some((Ok::<_, BoxError>(Frame::data(data)), rx))
    });
    c.builder(Method::POST, "svc", "/pkg.Svc/Call")
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
        .unwrap()
}

#[tokio::test]
async fn a_unary_call_without_content_length_is_replayed_on_grpc_unavailable() {
    // Answers UNAVAILABLE in the trailers of the first call, OK to every later one; records each call's body.
    let bodies: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let seen = bodies.clone();
    let up = server::http2()
        .name("flaky")
        .route_prefix("/", move |req: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                let first = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(body.clone());
                    seen.len() == 1
                };
                let code = if first { 14 } else { 0 };
                grpc_response(vec![Ok(Frame::data(body)), Ok(Frame::trailers(grpc_trailers(code)))])
            }
        })
        .run()
        .await;
    let route = "retry: { attempts: 3, on: [gateway-error], grpc_status: [unavailable] }";
    let proxy = proxy::new().config(config(&[up.addr()], route, ", protocol: http2")).run().await;
    let message = b"unary call #1: \x00\x01\x02 binary \xff payload";

    // The premise: such a call reaches a server without content-length.
    let echo = server::http2().route_prefix("/", server::echo()).run().await;
    let direct = client::http2(echo.addr());
    let seen = direct.request(streamed_grpc_request(&direct, message)).await.unwrap().json();
    assert_eq!(seen["headers"].get("content-length"), None, "{seen}");

    let c = client::http2(proxy.outbound());
    let rsp = c.request(streamed_grpc_request(&c, message)).await.unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.trailer("grpc-status"), Some("0"), "headers {:?} trailers {:?}", rsp.headers, rsp.trailers);
    let expected = server::grpc_frame(message);
    assert_eq!(rsp.body, expected, "the answering attempt echoed the request");
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one failed attempt, one retry");
    assert_eq!(bodies[0], expected, "first attempt's body");
    assert_eq!(bodies[1], expected, "the replayed body is byte-identical");

    let metrics = proxy.metrics().await;
    assert_eq!(route_counter(&metrics, "attache_retry_body_too_large_total"), 0.0, "{metrics}");
    assert_eq!(retries(&metrics, "grpc-status"), 1.0, "{metrics}");
    assert_eq!(route_counter(&metrics, "attache_request_attempts_total"), 2.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stream_is_handed_on_before_its_trailers() {
    // Headers and the first message at once, the second message and the trailers 1.5 s later.
    let up = server::http2()
        .name("stream")
        .route_prefix("/", |_req: Request<Incoming>| async move {
            let frames = futures_util::stream::unfold(0, |i| async move {
                let frame = match i {
                    0 => Frame::data(server::grpc_frame(b"first")),
                    1 => {
                        tokio::time::sleep(millis(1500)).await;
                        Frame::data(server::grpc_frame(b"second"))
                    }
                    2 => Frame::trailers(grpc_trailers(0)),
                    _ => return None,
                };
                Some((Ok::<_, BoxError>(frame), i + 1))
            });
            let mut rsp = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
            rsp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            rsp
        })
        .run()
        .await;
    let route = "timeout: 5s, retry: { attempts: 3, on: [gateway-error], grpc_status: [unavailable] }";
    let proxy = proxy::new().config(config(&[up.addr()], route, ", protocol: http2")).run().await;
    let c = client::http2(proxy.outbound());

    let req = c
        .builder(Method::POST, "svc", "/pkg.Svc/Watch")
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(attache_tests::full(server::grpc_frame(b"watch")))
        .unwrap();
    let started = Instant::now();
    let rsp = c.send(req).await.unwrap();
    let head_after = started.elapsed();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(head_after < millis(500), "response headers took {head_after:?}: held back for the trailers");
    let mut body = rsp.into_body();
    let first = with_timeout(secs(5), "the first message", body.frame()).await.expect("a frame").unwrap();
    let first_after = started.elapsed();
    assert_eq!(first.into_data().ok(), Some(server::grpc_frame(b"first")));
    assert!(first_after < millis(500), "the first message took {first_after:?}");

    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = with_timeout(secs(5), "the rest of the stream", body.frame()).await {
        match frame.unwrap().into_data() {
            Ok(d) => data.push(d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    assert!(started.elapsed() >= millis(1400), "the stream really ran on: {:?}", started.elapsed());
    assert_eq!(data, [server::grpc_frame(b"second")]);
    let trailers = trailers.expect("the stream ends with trailers");
    assert_eq!(trailers.get("grpc-status").and_then(|v| v.to_str().ok()), Some("0"), "{trailers:?}");
    let metrics = proxy.metrics().await;
    assert_eq!(route_counter(&metrics, "attache_retries_total"), 0.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_name_the_backend_whose_answer_the_client_got() {
    let bad = faults::always(503).name("bad").run().await;
    let good = faults::healthy().name("good").run().await;
    // Each attempt splits anew, so a retry can land on `bad` again: enough attempts (and budget) that nearly every
    // request ends on `good`. The breaker is off so `bad` keeps being chosen.
    let yaml = format!(
        "admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ connect_timeout: 500ms }}\nlisteners:\n  - {{ name: \
         outbound, address: \"127.0.0.1:0\", direction: outbound }}\nservices:\n  - name: svc\n    hosts: [svc]\n    \
         routes:\n      - name: default\n        retry: {{ attempts: 10, on: [gateway-error], backoff: {{ base: 1ms, \
         max: 2ms }}, budget: {{ ratio: 1.0, min_per_second: 1000 }} }}\n        backends: [{{ name: bad, weight: 50 \
         }}, {{ name: good, weight: 50 }}]\nbackends:\n  - {{ name: bad, endpoints: [\"{}\"], circuit_breaker: {{ \
         enabled: false }} }}\n  - {{ name: good, endpoints: [\"{}\"] }}\n",
        bad.addr(),
        good.addr()
    );
    let proxy = proxy::new().config(yaml).run().await;
    let c = client::http1(proxy.outbound());
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses.push(c.get("svc", "/").await.unwrap().status.as_u16());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let failed = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok + failed, 100, "{statuses:?}");
    assert!(ok >= 97, "only {ok} of 100 succeeded: {statuses:?}");
    assert!(bad.requests() >= 20, "the split sent first attempts to `bad` too: {}", bad.requests());
    assert_eq!(good.requests(), ok);

    let metrics = proxy.metrics().await;
    let count = |backend: &str, class: &str| {
        metrics.sum("attache_requests_total", &[("service", "svc"), ("backend", backend), ("status_class", class)])
    };
    assert_eq!(count("bad", "2xx"), 0.0, "a success is never `bad`'s:\n{metrics}");
    assert_eq!(count("good", "2xx") as usize, ok, "{metrics}");
    assert_eq!(count("bad", "5xx") as usize, failed, "{metrics}");
    assert_eq!(count("good", "5xx"), 0.0, "{metrics}");
}

/// An h2c upstream that refuses (RST_STREAM REFUSED_STREAM) its first `refusals` streams and answers the others
/// `200` with their body. Counts the streams it refused and the bodies it answered.
struct Refusing {
    addr: SocketAddr,
    refused: Arc<AtomicUsize>,
    answered: Arc<Mutex<Vec<Bytes>>>,
    _task: attache_tests::AbortOnDrop,
}

async fn refusing_h2(refusals: usize) -> Refusing {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let answered: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let (r, a) = (refused.clone(), answered.clone());
    let task = attache_tests::AbortOnDrop::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((io, _)) = listener.accept().await else { continue };
            let (r, a) = (r.clone(), a.clone());
            conns.spawn(async move {
                let Ok(mut conn) = h2::server::handshake(io).await else { return };
                let mut streams = tokio::task::JoinSet::new();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let refuse =
                        r.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < refusals).then_some(n + 1));
                    if refuse.is_ok() {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                        continue;
                    }
                    let a = a.clone();
                    streams.spawn(async move {
                        let mut body = req.into_body();
                        let mut data = Vec::new();
                        while let Some(Ok(chunk)) = body.data().await {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            data.extend_from_slice(&chunk);
                        }
                        let data = Bytes::from(data);
                        a.lock().unwrap().push(data.clone());
                        let Ok(mut send) = respond.send_response(Response::new(()), false) else { return };
                        let _ = send.send_data(data, true);
                    });
                }
            });
        }
    });
    Refusing { addr, refused, answered, _task: task }
}

#[tokio::test]
async fn a_post_refused_by_an_h2_upstream_is_retried_without_opt_in() {
    let up = refusing_h2(1).await;
    let route = "retry: { attempts: 3, on: [connect-failure] }";
    let proxy = proxy::new().config(config(&[up.addr], route, ", protocol: http2")).run().await;
    let rsp = client::http1(proxy.outbound()).post("svc", "/orders", "order #1").await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.text(), "order #1");
    assert_eq!(up.refused.load(Ordering::SeqCst), 1);
    assert_eq!(*up.answered.lock().unwrap(), [Bytes::from("order #1")], "processed exactly once");
    let metrics = proxy.metrics().await;
    assert_eq!(retries(&metrics, "connect-failure"), 1.0, "{metrics}");
}

/// An h2c upstream whose every connection goes away gracefully (GOAWAY, in-flight streams finish) each time
/// `restart` is notified, as a rolling restart does; it keeps accepting new connections. Answers `200` with the
/// request body after `delay`. It lingers on close, as Go's and Envoy's servers do: a server that closes with
/// unread bytes resets the connection, and the reset can destroy its own final GOAWAY before the client reads it,
/// leaving the client unable to tell processed streams from unprocessed ones.
struct Restarting {
    addr: SocketAddr,
    restart: Arc<tokio::sync::watch::Sender<u64>>,
    answered: Arc<AtomicUsize>,
    _task: attache_tests::AbortOnDrop,
}

async fn restarting_h2(delay: Duration) -> Restarting {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let restart = Arc::new(tokio::sync::watch::channel(0u64).0);
    let answered = Arc::new(AtomicUsize::new(0));
    let (signal, count) = (restart.clone(), answered.clone());
    let task = attache_tests::AbortOnDrop::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((io, _)) = listener.accept().await else { continue };
            let mut restart = signal.subscribe();
            restart.mark_unchanged();
            let count = count.clone();
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let count = count.clone();
                    async move {
                        let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                        tokio::time::sleep(delay).await;
                        count.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(Response::new(attache_tests::full(body)))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(attache_tests::server::Lingering::new(io)), svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    _ = restart.changed() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Restarting { addr, restart, answered, _task: task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posts_survive_graceful_restarts_of_an_h2_upstream() {
    let up = restarting_h2(millis(2)).await;
    let route = "retry: { attempts: 3, on: [connect-failure] }";
    // The breaker is off so that what is measured is the retries alone, not an ejection after a few failures.
    let backend = ", protocol: http2, circuit_breaker: { enabled: false }";
    let proxy = proxy::new().config(config(&[up.addr], route, backend)).run().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (addr, stop) = (proxy.outbound(), stop.clone());
            tokio::spawn(async move {
                let c = client::http1(addr);
                let mut out = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let body = format!("client {i} order {n}");
                    let result = c.post("svc", "/orders", body.clone()).await;
                    out.push(match result {
                        Ok(rsp) if rsp.status == 200 && rsp.text() == body => Ok(()),
                        Ok(rsp) => Err(format!("{} {}", rsp.status, rsp.text())),
                        Err(e) => Err(format!("{e:#}")),
                    });
                    n += 1;
                }
                out
            })
        })
        .collect();
    // Restart the upstream 30 times while the clients keep posting.
    for i in 1..=30u64 {
        tokio::time::sleep(millis(40)).await;
        up.restart.send_replace(i);
    }
    tokio::time::sleep(millis(100)).await;
    stop.store(true, Ordering::SeqCst);
    let mut results = Vec::new();
    for t in clients {
        results.extend(with_timeout(secs(10), "a client", t).await.unwrap());
    }
    let failures: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let retried = retries(&proxy.metrics().await, "connect-failure") as u64;
    assert!(results.len() >= 100, "too little traffic to mean anything: {}", results.len());
    assert!(
        failures.is_empty(),
        "{} of {} failed ({retried} retried as nothing sent): {failures:?}",
        failures.len(),
        results.len()
    );
    assert_eq!(up.answered.load(Ordering::SeqCst), results.len(), "every POST processed exactly once");
}
