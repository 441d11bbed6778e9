//! Fault kit: mock upstreams that fail the ways resilience features exist for, each counting what reached it.
//!
//! ```text
//! let bad = faults::always(503).name("bad").run().await;          // one of three endpoints failing
//! let dead = faults::refusing().run().await;                      // connections refused
//! let flaky = faults::fail_then_recover(3, 503).run().await;      // 503, 503, 503, then 200s
//! let slow_503 = faults::always(503).after(millis(300)).run().await; // failures that take a round trip
//! let proxy = proxy::new().config(yaml::one_backend("svc", &faults::addrs(&[&good, &bad]))).run().await;
//! assert_eq!(bad.requests(), 3);
//! ```
//!
//! HTTP upstreams speak HTTP/1.1 or h2c (detected per connection) and answer every path. A successful answer is
//! `200` with body `<name>` and `x-server-name: <name>` (default name `"upstream"`). Every upstream records the
//! arrival time (tokio time) and the body of each request, so a test can count attempts, space probes, or compare
//! a replayed body byte for byte. Dropping an [`Upstream`] stops it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::{server, Body, BoxError};

/// Builds a faulty (or healthy) upstream; start with one of the functions of this module.
#[must_use]
#[derive(Clone, Debug)]
pub struct Builder {
    behaviour: Behaviour,
    name: String,
    delay: Duration,
}

/// A running upstream. Counts are of what reached it; dropping it stops it and its connections.
pub struct Upstream {
    addr: SocketAddr,
    name: String,
    log: Arc<Log>,
    server: Option<server::Server>,
}

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Refuse,
    ResetMidResponse,
    Hang,
    FailThenRecover { failures: usize, status: u16 },
    Healthy,
}

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<(Instant, Bytes)>>,
    /// Set by [`Upstream::recover`]: answer 200 from now on, whatever the behaviour.
    recovered: AtomicBool,
}

/// An address where connections are refused: a port bound a moment ago and released. Nothing is ever counted.
pub fn refusing() -> Builder {
    Builder::new(Behaviour::Refuse)
}

/// Answers `200` (with the request's `content-type`), sends 10 bytes of body, and 20ms later fails the body: over
/// HTTP/1.1 the connection is closed with the chunked body unfinished, over HTTP/2 the stream is reset.
pub fn reset_mid_response() -> Builder {
    Builder::new(Behaviour::ResetMidResponse)
}

/// Accepts and reads requests, never answers.
pub fn hanging() -> Builder {
    Builder::new(Behaviour::Hang)
}

/// Waits `delay` (tokio time), then answers 200.
pub fn slow(delay: Duration) -> Builder {
    healthy().after(delay)
}

/// Answers `status` to the first `failures` requests, then 200.
pub fn fail_then_recover(failures: usize, status: u16) -> Builder {
    Builder::new(Behaviour::FailThenRecover { failures, status })
}

/// Always answers `status` (until [`Upstream::recover`]): the failing endpoint among healthy ones.
pub fn always(status: u16) -> Builder {
    fail_then_recover(usize::MAX, status)
}

/// Always answers 200.
pub fn healthy() -> Builder {
    Builder::new(Behaviour::Healthy)
}

/// The addresses of `upstreams`, for a backend's `endpoints`.
pub fn addrs(upstreams: &[&Upstream]) -> Vec<SocketAddr> {
    upstreams.iter().map(|u| u.addr()).collect()
}

impl Builder {
    fn new(behaviour: Behaviour) -> Self {
        Self { behaviour, name: "upstream".to_owned(), delay: Duration::ZERO }
    }

    /// Waits `delay` (tokio time) after reading each request before behaving as built: a slow success, or a
    /// failure that takes as long as a real upstream round trip.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// The name answered in `x-server-name` and as the body of a 200.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Binds `127.0.0.1:0` and starts (a refusing upstream binds and releases at once).
    pub async fn run(self) -> Upstream {
        let log = Arc::new(Log::default());
        let name = self.name;
        match self.behaviour {
            Behaviour::Refuse => {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let addr = l.local_addr().expect("local addr");
                Upstream { addr, name, log, server: None }
            }
            behaviour => {
                let (l, n, delay) = (log.clone(), name.clone(), self.delay);
                let server = server::auto()
                    .name(name.clone())
                    .fallback(move |req| answer(behaviour, delay, l.clone(), n.clone(), req))
                    .run()
                    .await;
                Upstream { addr: server.addr(), name, log, server: Some(server) }
            }
        }
    }
}

impl Upstream {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests that reached this upstream (for a hanging one: that it started reading).
    pub fn requests(&self) -> usize {
        self.log.requests.lock().unwrap().len()
    }

    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.server.as_ref().map_or(0, server::Server::connections)
    }

    /// Arrival time of every request, in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.log.requests.lock().unwrap().iter().map(|(t, _)| *t).collect()
    }

    /// Requests that arrived at or after `since`.
    pub fn requests_since(&self, since: Instant) -> usize {
        self.arrivals().into_iter().filter(|t| *t >= since).count()
    }

    /// The body of every request, in order.
    pub fn bodies(&self) -> Vec<Bytes> {
        self.log.requests.lock().unwrap().iter().map(|(_, b)| b.clone()).collect()
    }

    /// From now on, answer 200 to every request (an always-failing upstream comes back).
    pub fn recover(&self) {
        self.log.recovered.store(true, Ordering::SeqCst);
    }
}

async fn answer(
    behaviour: Behaviour,
    delay: Duration,
    log: Arc<Log>,
    name: String,
    req: Request<Incoming>,
) -> Response<Body> {
    let arrived = Instant::now();
    // Counted on arrival, before the body is read, so a request that never completes is still seen.
    let index = {
        let mut requests = log.requests.lock().unwrap();
        requests.push((arrived, Bytes::new()));
        requests.len() - 1
    };
    let content_type = req.headers().get(http::header::CONTENT_TYPE).cloned();
    let body = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    log.requests.lock().unwrap()[index].1 = body;
    tokio::time::sleep(delay).await;
    if log.recovered.load(Ordering::SeqCst) {
        return reply(StatusCode::OK, &name);
    }
    match behaviour {
        Behaviour::Hang => std::future::pending().await,
        Behaviour::ResetMidResponse => {
            let frames = futures_util::stream::unfold(0, |i| async move {
                match i {
                    0 => Some((Ok(Frame::data(Bytes::from_static(b"0123456789"))), 1)),
                    // Late enough that the head and first bytes are on their way before the failure.
                    1 => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Some((Err::<Frame<Bytes>, BoxError>("upstream gave up mid-response".into()), 2))
                    }
                    _ => None,
                }
            });
            let mut rsp = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
            rsp.headers_mut().insert("x-server-name", HeaderValue::from_str(&name).expect("name is a header value"));
            if let Some(ct) = content_type {
                rsp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
            }
            rsp
        }
        Behaviour::FailThenRecover { failures, status } if index < failures => {
            reply(StatusCode::from_u16(status).expect("valid status"), &name)
        }
        _ => reply(StatusCode::OK, &name),
    }
}

fn reply(status: StatusCode, name: &str) -> Response<Body> {
    let body = if status.is_success() { name.to_owned() } else { format!("{name}: {status}") };
    let mut rsp = Response::new(crate::full(body));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert("x-server-name", HeaderValue::from_str(name).expect("name is a header value"));
    rsp
}

/// Clients sending the same GET back to back until stopped, each over its own connection, recording every status
/// (`0` for a request that got no response): steady traffic while a test watches breakers and probes.
pub struct Load {
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<Vec<u16>>>,
    workers: tokio::task::JoinSet<()>,
}

impl Load {
    /// Starts `workers` HTTP/1.1 clients sending `GET path` for `authority` to `addr`.
    pub fn get(addr: SocketAddr, authority: &str, path: &str, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (stop, statuses) = (stop.clone(), statuses.clone());
            let (authority, path) = (authority.to_owned(), path.to_owned());
            set.spawn(async move {
                let c = crate::client::http1(addr);
                while !stop.load(Ordering::SeqCst) {
                    let status = c.get(&authority, &path).await.map_or(0, |r| r.status.as_u16());
                    statuses.lock().unwrap().push(status);
                }
            });
        }
        Self { stop, statuses, workers: set }
    }

    /// Statuses seen so far.
    pub fn statuses(&self) -> Vec<u16> {
        self.statuses.lock().unwrap().clone()
    }

    /// Stops the clients, lets their requests in flight finish (bounded), and returns every status seen.
    pub async fn stop(mut self) -> Vec<u16> {
        self.stop.store(true, Ordering::SeqCst);
        crate::with_timeout(crate::DEFAULT_TIMEOUT, "load clients to stop", async {
            while self.workers.join_next().await.is_some() {}
        })
        .await;
        self.statuses()
    }
}
