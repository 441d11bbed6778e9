//! Graceful shutdown of the real binary: on SIGTERM `/ready` turns 503, listeners stop accepting, in-flight
//! requests get `limits.drain_timeout` to finish, HTTP/1 keep-alive clients are told to close, and the process
//! exits 0.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use attache_tests::proxy::{self, ProcessProxy};
use attache_tests::server::{self, Server};
use attache_tests::wait::{millis, secs};
use attache_tests::{client, eventually, with_timeout};
use tokio::time::Instant;

/// An outbound listener at `outbound` sending every request for `svc` to `backend`.
fn config(admin: SocketAddr, outbound: SocketAddr, backend: SocketAddr, drain_timeout: &str) -> String {
    format!(
        r#"
admin: {{ address: "{admin}" }}
limits: {{ drain_timeout: {drain_timeout} }}
listeners:
  - {{ name: outbound, address: "{outbound}", direction: outbound }}
services:
  - name: svc
    hosts: [svc]
    routes:
      - name: default
        backends: [{{ name: backend }}]
backends:
  - {{ name: backend, endpoints: ["{backend}"] }}
"#
    )
}

/// A backend answering `/slow` after `delay` and everything else at once.
async fn backend(delay: Duration) -> Server {
    server::http1()
        .name("backend")
        .route("/slow", server::slow(delay, "done"))
        .route_prefix("/", server::ok("fast"))
        .run()
        .await
}

/// The binary with `drain_timeout`, its admin and outbound addresses. A port reserved with `free_port` can be taken
/// by someone else before the process binds it, so startup is retried with fresh ports.
async fn start(backend: &Server, drain_timeout: &str) -> (ProcessProxy, SocketAddr, SocketAddr) {
    let mut errors = Vec::new();
    for _ in 0..3 {
        let admin = proxy::free_port().unwrap();
        let outbound = proxy::free_port().unwrap();
        if admin == outbound {
            continue;
        }
        match proxy::process(&config(admin, outbound, backend.addr(), drain_timeout), admin).await {
            Ok(process) => return (process, admin, outbound),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    panic!("attache-proxy did not start: {errors:#?}");
}

async fn exit(process: &mut ProcessProxy, within: Duration) -> ExitStatus {
    with_timeout(within, "attache-proxy to exit", process.child.wait()).await.expect("waiting for attache-proxy")
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_zero() {
    let backend = backend(secs(1)).await;
    let (mut process, admin, outbound) = start(&backend, "5s").await;
    let client = client::http1(outbound);
    assert_eq!(client.get("svc", "/").await.unwrap().status, 200);
    let in_flight = tokio::spawn(async move { client.get("svc", "/slow").await });
    eventually(secs(5), || async { backend.requests_to("/slow") == 1 }).await;

    process.terminate().unwrap();
    let terminated = Instant::now();
    // Draining: the orchestrator is told to stop sending, and the listener no longer accepts...
    eventually(secs(1), || async { client::http1(admin).get("admin", "/ready").await.is_ok_and(|r| r.status == 503) })
        .await;
    eventually(secs(1), || async { tokio::net::TcpStream::connect(outbound).await.is_err() }).await;
    // ...while the process is still up, waiting for the in-flight request.
    assert!(!in_flight.is_finished(), "the in-flight request ended before the listener was seen closed");
    let ready = client::http1(admin).get("admin", "/ready").await.expect("admin is still up during the drain");
    assert_eq!(ready.status, 503);

    let rsp = with_timeout(secs(5), "the in-flight request", in_flight).await.unwrap().expect("in-flight request");
    assert_eq!((rsp.status.as_u16(), rsp.text()), (200, "done".to_owned()));
    let status = exit(&mut process, secs(5)).await;
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(terminated.elapsed() < secs(5), "exited after {:?}, beyond the 5s grace", terminated.elapsed());
    assert!(tokio::net::TcpStream::connect(outbound).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_after_the_drain_timeout_even_if_a_request_is_still_running() {
    let backend = backend(secs(5)).await;
    let (mut process, _admin, outbound) = start(&backend, "300ms").await;
    let client = client::http1(outbound);
    let in_flight = tokio::spawn(async move { client.get("svc", "/slow").await });
    eventually(secs(5), || async { backend.requests_to("/slow") == 1 }).await;

    process.terminate().unwrap();
    let terminated = Instant::now();
    let status = exit(&mut process, secs(3)).await;
    let took = terminated.elapsed();
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(took >= millis(300), "exited after {took:?}, without giving the in-flight request its 300ms");
    assert!(took < millis(1500), "exited {took:?} after SIGTERM; the drain timeout is 300ms");
    // The client is not left hanging for the backend's 5 s: its connection went away with the process.
    let res = with_timeout(secs(2), "the cut-off request to end", in_flight).await.unwrap();
    assert!(!matches!(&res, Ok(r) if r.status == 200), "the request outlived the drain: {res:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_client_is_told_to_close_during_the_drain() {
    let backend = backend(secs(1)).await;
    let (mut process, _admin, outbound) = start(&backend, "5s").await;
    let mut conn = client::raw_tcp(outbound).await.unwrap();
    conn.write_all("GET / HTTP/1.1\r\nHost: svc\r\n\r\n").await.unwrap();
    let rsp = conn.read_response().await.unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.header("connection"), None, "kept alive before the drain: {:?}", rsp.headers);

    conn.write_all("GET /slow HTTP/1.1\r\nHost: svc\r\n\r\n").await.unwrap();
    eventually(secs(5), || async { backend.requests_to("/slow") == 1 }).await;
    process.terminate().unwrap();

    let rsp = conn.read_response().await.unwrap();
    assert_eq!((rsp.status, rsp.text()), (200, "done".to_owned()));
    assert!(
        rsp.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
        "the in-flight response does not say `Connection: close`: {:?}",
        rsp.headers
    );
    let rest = conn.read_to_end().await.expect("the proxy closes the connection after the response");
    assert!(rest.is_empty(), "bytes after the last response: {rest:?}");
    assert_eq!(exit(&mut process, secs(5)).await.code(), Some(0));
}
