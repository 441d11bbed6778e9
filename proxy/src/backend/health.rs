//! Active health checks: one task per backend sends `GET <path>` to each of its endpoints every `interval` and flips
//! the endpoint's `healthy` flag after `unhealthy_threshold` consecutive failures or `healthy_threshold` consecutive
//! successes. The flag lives in the endpoint state the balancer holds, so the balancer skips unhealthy endpoints
//! without being told.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use attache_config::model::{Backend, HealthCheck, UpstreamProtocol};
use http::{header, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use super::balance::EndpointState;
use super::discover::Endpoints;
use crate::body::Body;
use crate::metrics::{BackendResultLabels, EndpointLabels, Name};

/// A health response body is read to its end up to this size, so that its HTTP/1.1 connection goes back to the
/// pool; a longer body is dropped, and its connection with it.
const MAX_BODY: usize = 64 * 1024;
/// Each wait is the interval give or take this fraction, so that checks from many proxies do not stay in step.
const JITTER: f64 = 0.1;

/// Health check metrics.
#[derive(Clone, Debug, Default)]
pub struct HealthMetrics {
    /// Checks by backend and result (`healthy`: a 2xx in time; `unhealthy`: anything else).
    pub checks: Family<BackendResultLabels, Counter>,
    /// 1 while an endpoint is considered healthy, 0 while it is not.
    pub endpoint_healthy: Family<EndpointLabels, Gauge>,
}

/// The health checks of one backend, owned by its task.
struct Checker {
    name: Arc<str>,
    config: watch::Receiver<Arc<Backend>>,
    endpoints: watch::Receiver<Endpoints>,
    metrics: HealthMetrics,
    /// By address, like the endpoints themselves; pruned when endpoints go away.
    tallies: HashMap<SocketAddr, Tally>,
}

/// What the checker knows about one endpoint.
struct Tally {
    /// The state the balancer holds for this address (replaced when discovery rebuilds it).
    state: Arc<EndpointState>,
    healthy: bool,
    /// Consecutive results contradicting `healthy`.
    streak: u32,
}

/// Why a check failed.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Status(StatusCode),
    Error(String),
    Timeout(Duration),
}

/// What woke the task up.
enum Wake {
    Config,
    Endpoints,
    Round,
    Closed,
}

/// Starts the health checks of one backend. The task follows the backend's config: it checks while the config has
/// a `health_check`, marks every endpoint healthy and idles while it has none, and ends when the config watch
/// closes (the backend was removed).
pub(super) fn spawn(
    config: watch::Receiver<Arc<Backend>>,
    endpoints: watch::Receiver<Endpoints>,
    metrics: HealthMetrics,
) -> tokio::task::JoinHandle<()> {
    let name = config.borrow().name.clone();
    let checker = Checker { name, config, endpoints, metrics, tallies: HashMap::new() };
    tokio::spawn(checker.run())
}

impl HealthMetrics {
    /// Registers `health_checks` (a counter: `<prefix>_health_checks_total`) and `endpoint_healthy` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "health_checks",
            "Active health checks by backend and result (healthy, unhealthy)",
            metrics.checks.clone(),
        );
        registry.register(
            "endpoint_healthy",
            "Whether active health checks consider an endpoint healthy (1) or not (0)",
            metrics.endpoint_healthy.clone(),
        );
        metrics
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(status) => write!(f, "status {status}"),
            Self::Error(error) => f.write_str(error),
            Self::Timeout(after) => write!(f, "no answer within {after:?}"),
        }
    }
}

impl Checker {
    async fn run(mut self) {
        // The check the last round ran with; a new or changed check runs at once.
        let mut current: Option<HealthCheck> = None;
        let mut next = Instant::now();
        loop {
            let backend = self.config.borrow_and_update().clone();
            let Some(check) = backend.health_check.as_ref() else {
                current = None;
                self.disable();
                if self.config.changed().await.is_err() {
                    break;
                }
                continue;
            };
            if current.as_ref() != Some(check) {
                current = Some(check.clone());
                next = Instant::now();
            }
            self.reconcile();
            let wake = tokio::select! {
                changed = self.config.changed() => if changed.is_ok() { Wake::Config } else { Wake::Closed },
                // Discovery only stops when the backend is removed.
                changed = self.endpoints.changed() => if changed.is_ok() { Wake::Endpoints } else { Wake::Closed },
                () = tokio::time::sleep_until(next) => Wake::Round,
            };
            match wake {
                Wake::Closed => break,
                Wake::Config | Wake::Endpoints => {}
                Wake::Round => {
                    let started = Instant::now();
                    self.round(backend.protocol, check).await;
                    next = started + jittered(check.interval);
                }
            }
        }
        // The backend is gone: so are its series.
        for (addr, _) in self.tallies.drain() {
            self.metrics.endpoint_healthy.remove(&endpoint_labels(&self.name, addr));
        }
        for result in ["healthy", "unhealthy"] {
            self.metrics.checks.remove(&BackendResultLabels { backend: Name(self.name.clone()), result });
        }
    }

    /// Checks every endpoint concurrently and records the results.
    async fn round(&mut self, protocol: UpstreamProtocol, check: &HealthCheck) {
        let endpoints = self.endpoints.borrow().clone();
        // The endpoint client picks the wire version from this and the backend protocol: HTTP/2 only for an `http2`
        // backend; an `auto` one is checked over HTTP/1.1.
        let version = match protocol {
            UpstreamProtocol::Http2 => Version::HTTP_2,
            UpstreamProtocol::Http1 | UpstreamProtocol::Auto => Version::HTTP_11,
        };
        let probes = endpoints.iter().map(|e| probe(e, &check.path, version, check.timeout));
        let results = futures_util::future::join_all(probes).await;
        for (endpoint, result) in endpoints.iter().zip(results) {
            self.record(endpoint.addr, check, result);
        }
    }

    /// Counts one result; flips the endpoint when enough consecutive results disagree with its current verdict.
    fn record(&mut self, addr: SocketAddr, check: &HealthCheck, result: Result<(), Failure>) {
        let label = if result.is_ok() { "healthy" } else { "unhealthy" };
        self.metrics
            .checks
            .get_or_create(&BackendResultLabels { backend: Name(self.name.clone()), result: label })
            .inc();
        // An endpoint that went away during the round.
        let Some(tally) = self.tallies.get_mut(&addr) else { return };
        if result.is_ok() == tally.healthy {
            tally.streak = 0;
            return;
        }
        tally.streak += 1;
        let threshold = if tally.healthy { check.unhealthy_threshold } else { check.healthy_threshold };
        if tally.streak < threshold.max(1) {
            return;
        }
        tally.healthy = result.is_ok();
        tally.streak = 0;
        tally.state.healthy.store(tally.healthy, Ordering::Relaxed);
        self.metrics.endpoint_healthy.get_or_create(&endpoint_labels(&self.name, addr)).set(tally.healthy.into());
        match result {
            Ok(()) => {
                tracing::info!(backend = %self.name, endpoint = %addr, "health check passing: endpoint healthy again")
            }
            Err(failure) => {
                tracing::warn!(backend = %self.name, endpoint = %addr, %failure, "health check failing: endpoint unhealthy")
            }
        }
    }

    /// Follows the endpoint set: new endpoints start healthy, a rebuilt endpoint state gets its address's verdict,
    /// endpoints that went away are forgotten.
    fn reconcile(&mut self) {
        let endpoints = self.endpoints.borrow_and_update().clone();
        for endpoint in endpoints.iter() {
            match self.tallies.entry(endpoint.addr) {
                Entry::Occupied(mut entry) => {
                    let tally = entry.get_mut();
                    if !Arc::ptr_eq(&tally.state, endpoint) {
                        endpoint.healthy.store(tally.healthy, Ordering::Relaxed);
                        tally.state = endpoint.clone();
                    }
                }
                Entry::Vacant(entry) => {
                    endpoint.healthy.store(true, Ordering::Relaxed);
                    self.metrics.endpoint_healthy.get_or_create(&endpoint_labels(&self.name, endpoint.addr)).set(1);
                    entry.insert(Tally { state: endpoint.clone(), healthy: true, streak: 0 });
                }
            }
        }
        let name = &self.name;
        let metrics = &self.metrics;
        self.tallies.retain(|addr, _| {
            let keep = endpoints.iter().any(|e| e.addr == *addr);
            if !keep {
                metrics.endpoint_healthy.remove(&endpoint_labels(name, *addr));
            }
            keep
        });
    }

    /// No health check configured: every endpoint takes traffic, and nothing is tracked.
    fn disable(&mut self) {
        let endpoints = self.endpoints.borrow().clone();
        for endpoint in endpoints.iter() {
            if !endpoint.healthy.swap(true, Ordering::Relaxed) {
                tracing::info!(backend = %self.name, endpoint = %endpoint.addr, "health checks disabled: endpoint healthy");
            }
        }
        for (addr, _) in self.tallies.drain() {
            self.metrics.endpoint_healthy.remove(&endpoint_labels(&self.name, addr));
        }
    }
}

/// One check: `GET <path>` through the endpoint's client; a 2xx within `timeout` (body included) passes.
async fn probe(endpoint: &EndpointState, path: &str, version: Version, timeout: Duration) -> Result<(), Failure> {
    let addr = endpoint.addr;
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{path}"))
        .version(version)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "attache-health-check")
        .body(Body::empty())
        .map_err(|e| Failure::Error(format!("invalid health check request: {e}")))?;
    let client = endpoint.client.clone();
    let exchange = async move {
        let rsp = client.oneshot(req).await.map_err(|e| Failure::Error(chain(&*e)))?;
        let status = rsp.status();
        match Limited::new(rsp.into_body(), MAX_BODY).collect().await {
            Ok(_) => {}
            Err(e) if e.is::<LengthLimitError>() => {}
            Err(e) => return Err(Failure::Error(format!("reading the body: {}", chain(&*e)))),
        }
        if status.is_success() {
            Ok(())
        } else {
            Err(Failure::Status(status))
        }
    };
    tokio::time::timeout(timeout, exchange).await.unwrap_or(Err(Failure::Timeout(timeout)))
}

/// `interval`, give or take `JITTER` of it.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(1.0 + JITTER * (2.0 * rand::random::<f64>() - 1.0))
}

fn endpoint_labels(backend: &Arc<str>, addr: SocketAddr) -> EndpointLabels {
    EndpointLabels { backend: Name(backend.clone()), endpoint: addr.to_string() }
}

/// An error and its sources, `outer: inner: ...`.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
