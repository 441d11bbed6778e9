use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU16, AtomicUsize};

use attache_config::model::{Bulkhead, EndpointAddr};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;
use crate::backend::endpoint::{Connector, Endpoint, PoolSettings};

/// Bound on every wait, so a broken check fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(5);

/// A local HTTP/1.1 server answering every request with `status` (0: never answers); counts what it sees.
struct Upstream {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    /// Requests answered with a non-2xx status.
    failures: Arc<AtomicUsize>,
    successes: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let failures = Arc::new(AtomicUsize::new(0));
        let successes = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, f, ok, c) = (status.clone(), failures.clone(), successes.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                c.fetch_add(1, Ordering::SeqCst);
                let (s, f, ok) = (s.clone(), f.clone(), ok.clone());
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (s, f, ok) = (s.clone(), f.clone(), ok.clone());
                    async move {
                        assert_eq!(req.uri().path(), "/healthz");
                        assert_eq!(req.headers()[header::HOST], addr.to_string());
                        let status = s.load(Ordering::SeqCst);
                        if status == 0 {
                            std::future::pending::<()>().await;
                        }
                        let status = StatusCode::from_u16(status).unwrap();
                        // Count before answering, so the counts are never behind what the checker saw.
                        if status.is_success() {
                            ok.fetch_add(1, Ordering::SeqCst)
                        } else {
                            f.fetch_add(1, Ordering::SeqCst)
                        };
                        let mut rsp = http::Response::new(http_body_util::Full::new(bytes::Bytes::from("status\n")));
                        *rsp.status_mut() = status;
                        Ok::<_, Infallible>(rsp)
                    }
                });
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc));
            }
        });
        Self { addr, status, failures, successes, connections, task }
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check() -> HealthCheck {
    HealthCheck {
        path: "/healthz".into(),
        interval: Duration::from_millis(20),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    }
}

fn backend(addrs: &[SocketAddr], health_check: Option<HealthCheck>) -> Arc<Backend> {
    Arc::new(Backend {
        name: Arc::from("web"),
        endpoints: addrs.iter().copied().map(EndpointAddr::Socket).collect(),
        protocol: UpstreamProtocol::Http1,
        dns_refresh: Duration::from_secs(5),
        connect_timeout: Duration::from_millis(500),
        breaker: None,
        bulkhead: Bulkhead { max_concurrent: 10, max_pending: 10 },
        health_check,
        tls: None,
    })
}

fn state(addr: SocketAddr) -> Arc<EndpointState> {
    let pool = PoolSettings { idle_timeout: Duration::from_secs(30), max_idle: 4 };
    let connector = Connector::new(addr, Duration::from_millis(500), None, Default::default());
    let client = Endpoint::new(UpstreamProtocol::Http1, pool, connector);
    Arc::new(EndpointState::new(addr, client, None))
}

/// A running checker over `states`, with the senders a test drives it by.
struct Harness {
    config: watch::Sender<Arc<Backend>>,
    endpoints: watch::Sender<Endpoints>,
    registry: Registry,
    task: tokio::task::JoinHandle<()>,
}

fn harness(backend: Arc<Backend>, states: Vec<Arc<EndpointState>>) -> Harness {
    let (config, config_rx) = watch::channel(backend);
    let (endpoints, endpoints_rx) = watch::channel(Endpoints::from(states));
    let mut registry = Registry::default();
    let metrics = HealthMetrics::register(registry.sub_registry_with_prefix("attache"));
    let task = spawn(config_rx, endpoints_rx, metrics);
    Harness { config, endpoints, registry, task }
}

impl Harness {
    fn metrics(&self) -> String {
        encode(&self.registry)
    }
}

fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).unwrap();
    out
}

fn healthy(state: &EndpointState) -> bool {
    state.healthy.load(Ordering::Relaxed)
}

/// Polls `cond` until it holds; panics after `PATIENCE`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits for `fut`, bounded.
async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.expect("bounded wait")
}

#[tokio::test]
async fn thresholds_flip_an_endpoint_against_a_real_server() {
    let upstream = Upstream::start().await;
    let endpoint = state(upstream.addr);
    let h = harness(backend(&[upstream.addr], Some(check())), vec![endpoint.clone()]);
    eventually("a few passing checks", || upstream.successes.load(Ordering::SeqCst) >= 3).await;
    assert!(healthy(&endpoint));

    // Failing: unhealthy after `unhealthy_threshold` (3) consecutive failures, not before.
    upstream.answer(503);
    eventually("unhealthy", || !healthy(&endpoint)).await;
    let failures = upstream.failures.load(Ordering::SeqCst);
    assert!(failures >= 3, "flipped after {failures} failures");
    let text = h.metrics();
    assert!(text.contains(r#"attache_endpoint_healthy{backend="web",endpoint=""#), "{text}");
    assert!(text.contains(&format!("endpoint=\"{}\"}} 0", upstream.addr)), "{text}");
    assert!(text.contains(r#"attache_health_checks_total{backend="web",result="unhealthy"}"#), "{text}");

    // Passing again: healthy after `healthy_threshold` (2) consecutive successes, not before.
    let before = upstream.successes.load(Ordering::SeqCst);
    upstream.answer(204);
    eventually("healthy again", || healthy(&endpoint)).await;
    let successes = upstream.successes.load(Ordering::SeqCst) - before;
    assert!(successes >= 2, "flipped after {successes} successes");
    assert!(h.metrics().contains(&format!("endpoint=\"{}\"}} 1", upstream.addr)));

    // Bodies are read to the end, so every check reused the one pooled connection.
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);

    // The backend is removed: the task ends and takes its series with it.
    let Harness { config, registry, task, .. } = h;
    drop(config);
    bounded(task).await.unwrap();
    let text = encode(&registry);
    assert!(!text.lines().any(|l| !l.starts_with('#') && !l.is_empty()), "{text}");
}

#[tokio::test]
async fn timeouts_and_refused_connections_fail() {
    // Never answers: each check times out.
    let silent = Upstream::start().await;
    silent.answer(0);
    // Nobody listens here.
    let refused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let (a, b) = (state(silent.addr), state(refused));
    let hc =
        HealthCheck { timeout: Duration::from_millis(30), healthy_threshold: 1, unhealthy_threshold: 2, ..check() };
    let _h = harness(backend(&[silent.addr, refused], Some(hc)), vec![a.clone(), b.clone()]);
    eventually("both unhealthy", || !healthy(&a) && !healthy(&b)).await;

    silent.answer(200);
    eventually("the silent one answers again", || healthy(&a)).await;
    assert!(!healthy(&b));
}

#[tokio::test]
async fn removing_the_check_marks_endpoints_healthy_and_idles() {
    let upstream = Upstream::start().await;
    upstream.answer(500);
    let endpoint = state(upstream.addr);
    let h = harness(backend(&[upstream.addr], Some(check())), vec![endpoint.clone()]);
    eventually("unhealthy", || !healthy(&endpoint)).await;

    h.config.send_replace(backend(&[upstream.addr], None));
    eventually("healthy once checks are off", || healthy(&endpoint)).await;
    let seen = upstream.failures.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(upstream.failures.load(Ordering::SeqCst) <= seen + 1, "checks keep running");
    assert!(healthy(&endpoint));
    assert!(!h.metrics().contains("attache_endpoint_healthy{"), "{}", h.metrics());

    // Turned back on: checked at once, and unhealthy again.
    h.config.send_replace(backend(&[upstream.addr], Some(check())));
    eventually("unhealthy again", || !healthy(&endpoint)).await;
}

#[tokio::test]
async fn endpoint_changes_keep_verdicts_by_address() {
    let upstream = Upstream::start().await;
    upstream.answer(500);
    let endpoint = state(upstream.addr);
    let h = harness(backend(&[upstream.addr], Some(check())), vec![endpoint.clone()]);
    eventually("unhealthy", || !healthy(&endpoint)).await;

    // Discovery rebuilds the state of the same address (e.g. the protocol changed): it starts unhealthy.
    let rebuilt = state(upstream.addr);
    let other = state(SocketAddr::from(([127, 0, 0, 1], 1)));
    h.endpoints.send_replace(Endpoints::from(vec![rebuilt.clone(), other.clone()]));
    eventually("the verdict carried over", || !healthy(&rebuilt)).await;
    assert!(healthy(&other), "a new endpoint starts healthy");

    // The address goes away: its series goes with it.
    h.endpoints.send_replace(Endpoints::from(vec![other.clone()]));
    let gone = format!("endpoint=\"{}\"", upstream.addr);
    eventually("series removed", || !h.metrics().contains(&gone)).await;
}

/// The counting itself, without a network: exact thresholds.
#[tokio::test]
async fn consecutive_results_flip_at_the_thresholds() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 9));
    let endpoint = state(addr);
    let (_config, config) = watch::channel(backend(&[addr], Some(check())));
    let (_endpoints, endpoints) = watch::channel(Endpoints::from(vec![endpoint.clone()]));
    let mut checker = Checker {
        name: Arc::from("web"),
        config,
        endpoints,
        metrics: HealthMetrics::default(),
        tallies: HashMap::new(),
    };
    checker.reconcile();
    let hc = check();
    let fail = || Err(Failure::Status(StatusCode::SERVICE_UNAVAILABLE));

    checker.record(addr, &hc, fail());
    checker.record(addr, &hc, fail());
    checker.record(addr, &hc, Ok(()));
    checker.record(addr, &hc, fail());
    checker.record(addr, &hc, fail());
    assert!(healthy(&endpoint), "a success in between resets the count");
    checker.record(addr, &hc, fail());
    assert!(!healthy(&endpoint), "3 consecutive failures");

    checker.record(addr, &hc, Ok(()));
    checker.record(addr, &hc, fail());
    checker.record(addr, &hc, Ok(()));
    assert!(!healthy(&endpoint), "a failure in between resets the count");
    checker.record(addr, &hc, Ok(()));
    assert!(healthy(&endpoint), "2 consecutive successes");
}
