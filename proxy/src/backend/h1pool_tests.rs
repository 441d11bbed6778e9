//! The pool against a real loopback HTTP/1.1 server that counts the connections it accepts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::server::conn::http1 as server;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::H1Pool;
use crate::backend::connect::Connector;
use crate::backend::endpoint::PoolSettings;
use crate::body::Body;

/// Answers `hello` (or nothing to HEAD); counts accepted connections.
async fn server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                let body = if req.method() == http::Method::HEAD { "" } else { "hello" };
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from(body))))
            });
            tokio::spawn(server::Builder::new().serve_connection(TokioIo::new(tcp), svc));
        }
    });
    (addr, accepted)
}

fn new_pool(addr: SocketAddr, max_idle: usize) -> Arc<H1Pool> {
    let connector = Connector::new(addr, Duration::from_secs(5), None, Default::default());
    H1Pool::new(connector, PoolSettings { idle_timeout: Duration::from_secs(30), max_idle })
}

fn get(method: http::Method) -> Request<Body> {
    Request::builder().method(method).uri("/").header("host", "app").body(Body::empty()).unwrap()
}

async fn read(rsp: Response<Body>) -> String {
    String::from_utf8(rsp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn a_read_response_gives_its_connection_back_for_the_next_request() {
    let (addr, accepted) = server().await;
    let pool = new_pool(addr, 8);
    for _ in 0..5 {
        assert_eq!(read(pool.send(get(http::Method::GET)).await.unwrap()).await, "hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.idle_count(), 1);
}

#[tokio::test]
async fn a_bodiless_response_gives_its_connection_back_at_once() {
    let (addr, accepted) = server().await;
    let pool = new_pool(addr, 8);
    for _ in 0..3 {
        let rsp = pool.send(get(http::Method::HEAD)).await.unwrap();
        assert_eq!(rsp.status(), 200);
        drop(rsp);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_response_dropped_unread_takes_its_connection_with_it() {
    let (addr, accepted) = server().await;
    let pool = new_pool(addr, 8);
    drop(pool.send(get(http::Method::GET)).await.unwrap());
    assert_eq!(pool.idle_count(), 0);
    assert_eq!(read(pool.send(get(http::Method::GET)).await.unwrap()).await, "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn at_most_max_idle_connections_are_kept() {
    let (addr, accepted) = server().await;
    let pool = new_pool(addr, 2);
    let rsps = futures_util::future::join_all((0..4).map(|_| pool.send(get(http::Method::GET)))).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 4, "concurrent requests each need a connection");
    for rsp in rsps {
        read(rsp.unwrap()).await;
    }
    assert_eq!(pool.idle_count(), 2);
    let none = new_pool(addr, 0);
    read(none.send(get(http::Method::GET)).await.unwrap()).await;
    assert_eq!(none.idle_count(), 0, "max_idle 0 keeps nothing");
}

#[tokio::test]
async fn idle_connections_expire_and_the_next_request_dials_again() {
    let (addr, accepted) = server().await;
    let pool = new_pool(addr, 8);
    read(pool.send(get(http::Method::GET)).await.unwrap()).await;
    assert_eq!(pool.idle_count(), 1);
    // The reaper (started by the connection's return) wakes every half timeout: past 1.5 timeouts the connection
    // is gone.
    tokio::task::yield_now().await;
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(16)).await;
    assert_eq!(pool.idle_count(), 1, "not yet expired at the first look");
    tokio::time::advance(Duration::from_secs(30)).await;
    tokio::task::yield_now().await;
    assert_eq!(pool.idle_count(), 0);
    tokio::time::resume();
    read(pool.send(get(http::Method::GET)).await.unwrap()).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_endpoint_that_drops_every_connection_is_a_connect_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    let err = new_pool(addr, 8).send(get(http::Method::GET)).await.unwrap_err();
    // Never `Refused`, which the breaker ignores: a connect failure when hyper saw the close before writing (safe to
    // retry), an upstream failure when the request was already written; the breaker counts both.
    assert!(!err.is::<crate::errors::Refused>(), "{err}");
    assert!(err.is::<crate::errors::ConnectFailed>() || err.is::<crate::errors::UpstreamFailed>(), "{err}");
}
