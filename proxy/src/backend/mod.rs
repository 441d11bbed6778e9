//! Backends: one balancer per backend (P2C over peak-EWMA among its admitting endpoints, `balance`), guarded by a
//! bulkhead (concurrency and pending bounds that shed instead of queueing without end), with a circuit breaker per
//! endpoint (`breaker`). Backends are long-lived state reconciled by name across config reloads, so an unchanged
//! backend keeps its connection pools, load estimates and breaker states.

mod balance;
mod breaker;
mod bulkhead;
mod connect;
mod discover;
pub mod endpoint;
mod h1pool;
mod h2conn;
pub(crate) mod health;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use attache_config::model::{Backend, Limits};
use http::{Request, Response};
use tokio::sync::{watch, OwnedSemaphorePermit};

use self::balance::{EndpointState, Pick};
use self::breaker::{Admission, State};
use self::bulkhead::Gate;
use self::discover::{Discovery, Endpoints};
use self::endpoint::PoolSettings;
use crate::body::{Body, BodyTap};
use crate::errors::{BoxError, CircuitOpen, ConnectFailed, NoEndpoints, PerTryTimeout};
use crate::metrics::{BackendMetrics, DiscoveryMetrics, EndpointLabels, FastFailLabels, Name, TransitionLabels};
use crate::tls::CredentialStore;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Set on a request by the retry layer: prefer any endpoint but this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avoid(pub SocketAddr);

/// Set on a request by the retry layer: abandon the attempt after this long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptTimeout(pub Duration);

/// A cheap, cloneable handle to one backend.
#[derive(Clone)]
pub struct BackendHandle {
    name: Arc<str>,
    endpoints: watch::Receiver<Endpoints>,
    gate: Arc<Gate>,
    metrics: BackendMetrics,
}

/// Owns every backend's discovery task; reconciles them by name.
pub struct Backends {
    entries: HashMap<Arc<str>, Entry>,
    metrics: DiscoveryMetrics,
    backend_metrics: BackendMetrics,
    resolver: discover::Resolver,
    credentials: CredentialStore,
}

struct Entry {
    config: watch::Sender<Arc<Backend>>,
    handle: BackendHandle,
}

impl BackendHandle {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// How to dial each endpoint currently known, for opaque TCP.
    pub fn connectors(&self) -> Vec<endpoint::Connector> {
        self.endpoints.borrow().iter().map(|e| e.client.connector().clone()).collect()
    }

    /// Whether some endpoint would take a request now (the split steers around backends that would not).
    pub fn is_available(&self) -> bool {
        self.endpoints.borrow().iter().any(|e| e.is_available())
    }

    /// Sends one request: takes a bulkhead slot (waiting, bounded, only when none is free), picks an endpoint,
    /// records the outcome in its breaker. The bulkhead slot is held until the response body ends.
    pub fn call(&self, req: Request<Body>) -> BoxFuture<Result<Response<Body>, BoxError>> {
        // Most requests find a slot free: they go to the endpoint now, and only what follows the send is a future
        // (the request is not moved through a future of this layer on its way).
        if let Some(permit) = self.gate.try_enter() {
            return self.send(permit, req);
        }
        let this = self.clone();
        Box::pin(async move {
            let permit = match this.gate.wait(&this.name).await {
                Ok(p) => p,
                Err(e) => return Err(this.fast_fail("overloaded", e.into())),
            };
            this.send(permit, req).await
        })
    }

    /// Picks an endpoint and sends `req` to it, holding `permit` until the response body ends.
    fn send(&self, permit: OwnedSemaphorePermit, req: Request<Body>) -> BoxFuture<Result<Response<Body>, BoxError>> {
        let avoid = req.extensions().get::<Avoid>().map(|a| a.0);
        // A clone, so the watch is not held while the breakers are consulted.
        let endpoints = self.endpoints.borrow().clone();
        let (endpoint, admission) = match balance::pick(&endpoints, avoid) {
            Pick::Endpoint(e, a) => (e, a),
            Pick::Empty => {
                let err = self.fast_fail("no-endpoints", NoEndpoints { backend: self.name.clone() }.into());
                return Box::pin(std::future::ready(Err(err)));
            }
            Pick::AllUnavailable => {
                let err = self.fast_fail("circuit-open", CircuitOpen { backend: self.name.clone() }.into());
                return Box::pin(std::future::ready(Err(err)));
            }
        };
        if admission == Some(Admission::Probe) {
            self.breaker_changed(&endpoint, State::HalfOpen);
        }
        let attempt = self.attempt(endpoint, admission, req);
        Box::pin(async move {
            let rsp = attempt.await?;
            Ok(rsp.map(|b| b.tapped(Box::new(Hold(permit)))))
        })
    }

    /// Sends `req` to `endpoint` now; the future is the wait for its answer, with the per-try timeout, and the
    /// outcome recorded in the endpoint's load estimate and breaker.
    fn attempt(
        &self,
        endpoint: Arc<EndpointState>,
        admission: Option<Admission>,
        mut req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, BoxError>> + Send + 'static {
        let timeout = req.extensions_mut().remove::<AttemptTimeout>().map(|t| t.0);
        let probe = ProbeGuard { endpoint: endpoint.clone(), admission, settled: false };
        let in_flight = endpoint.start();
        // Told which endpoint answered (a retry avoids it, the attempt's span names it).
        let meta = crate::http::meta::RequestMeta::of(&req).cloned();
        let call = endpoint.client.send(req);
        let this = self.clone();
        async move {
            let result = match timeout {
                Some(after) => match tokio::time::timeout(after, call).await {
                    Ok(r) => r,
                    Err(_) => Err(PerTryTimeout { addr: endpoint.addr, after }.into()),
                },
                None => call.await,
            };
            let outcome = match &result {
                Ok(rsp) => Some(!rsp.status().is_server_error() && !grpc_server_failure(rsp.headers())),
                // A refused stream (graceful shutdown of a healthy upstream) says nothing about the endpoint's health.
                Err(e) if is_refused(&**e) => None,
                Err(_) => Some(false),
            };
            match outcome {
                Some(success) => {
                    in_flight.finish(success);
                    this.settle(probe, success);
                }
                None => drop((in_flight, probe)),
            }
            let rsp = result?;
            if let Some(meta) = meta {
                meta.set_served(endpoint.addr);
            }
            Ok(rsp)
        }
    }

    fn settle(&self, mut probe: ProbeGuard, success: bool) {
        probe.settled = true;
        let (Some(breaker), Some(admission)) = (probe.endpoint.breaker.as_ref(), probe.admission) else { return };
        if let Some(state) = breaker.record(admission, success) {
            self.breaker_changed(&probe.endpoint, state);
        }
    }

    fn breaker_changed(&self, endpoint: &EndpointState, state: State) {
        let (value, name) = match state {
            State::Closed => (0, "closed"),
            State::Open => (1, "open"),
            State::HalfOpen => (2, "half-open"),
        };
        if state == State::Open {
            tracing::warn!(backend = %self.name, endpoint = %endpoint.addr, "circuit opened: endpoint ejected");
        } else {
            tracing::info!(backend = %self.name, endpoint = %endpoint.addr, state = name, "circuit breaker");
        }
        let labels = EndpointLabels { backend: Name(self.name.clone()), endpoint: endpoint.addr.to_string() };
        self.metrics.breaker_state.get_or_create(&labels).set(value);
        let labels = TransitionLabels { backend: Name(self.name.clone()), state: name };
        self.metrics.breaker_transitions.get_or_create(&labels).inc();
    }

    fn fast_fail(&self, reason: &'static str, err: BoxError) -> BoxError {
        let labels = FastFailLabels { backend: Name(self.name.clone()), reason };
        self.metrics.fast_failures.get_or_create(&labels).inc();
        err
    }
}

/// Lets another request probe if a half-open probe is dropped without an outcome (its caller gave up).
struct ProbeGuard {
    endpoint: Arc<EndpointState>,
    admission: Option<Admission>,
    settled: bool,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if !self.settled && self.admission == Some(Admission::Probe) {
            if let Some(b) = self.endpoint.breaker.as_ref() {
                b.release_probe();
            }
        }
    }
}

/// Keeps something alive (a bulkhead slot) until the response body ends.
struct Hold<T>(T);

impl<T: Send + 'static> BodyTap for Hold<T> {
    fn data(&mut self, _len: usize) {}
}

/// A gRPC status in the response headers (a trailers-only reply) that says the server failed: UNKNOWN,
/// DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS. gRPC failures arrive as HTTP 200.
fn grpc_server_failure(headers: &http::HeaderMap) -> bool {
    matches!(crate::http::replay::parse_status(headers), Some(2 | 4 | 13 | 14 | 15))
}

fn is_refused(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<crate::errors::Refused>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Whether an error happened before anything reached the upstream (always safe to retry).
pub fn nothing_sent(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<ConnectFailed>() || e.is::<crate::errors::Refused>() {
            return true;
        }
        cur = e.source();
    }
    false
}

impl Backends {
    pub fn new(metrics: DiscoveryMetrics, backend_metrics: BackendMetrics, credentials: CredentialStore) -> Self {
        Self { entries: HashMap::new(), metrics, backend_metrics, resolver: discover::system_resolver(), credentials }
    }

    /// Makes the set of running backends equal to `wanted`, keeping unchanged ones, updating changed ones in place,
    /// starting new ones and dropping removed ones. Returns the handles by name.
    pub async fn reconcile<'a>(
        &mut self,
        wanted: impl IntoIterator<Item = &'a Arc<Backend>>,
        limits: &Limits,
    ) -> HashMap<Arc<str>, BackendHandle> {
        let mut out = HashMap::new();
        for backend in wanted {
            let handle = match self.entries.get_mut(&backend.name) {
                Some(entry) => {
                    entry.config.send_if_modified(|cur| {
                        let changed = **cur != **backend;
                        if changed {
                            *cur = backend.clone();
                        }
                        changed
                    });
                    if !entry.handle.gate.is(&backend.bulkhead) {
                        // New bounds apply to new requests; those in flight finish under the old ones.
                        entry.handle.gate = Arc::new(Gate::new(backend.bulkhead));
                    }
                    entry.handle.clone()
                }
                None => {
                    let entry = self.start(backend.clone(), limits).await;
                    let handle = entry.handle.clone();
                    self.entries.insert(backend.name.clone(), entry);
                    handle
                }
            };
            out.insert(backend.name.clone(), handle);
        }
        self.entries.retain(|name, _| out.contains_key(name));
        out
    }

    async fn start(&self, backend: Arc<Backend>, limits: &Limits) -> Entry {
        let (config_tx, config_rx) = watch::channel(backend.clone());
        let (endpoints_tx, endpoints_rx) = watch::channel(Endpoints::from(Vec::new()));
        let pool = PoolSettings { idle_timeout: limits.pool_idle_timeout, max_idle: limits.pool_max_idle_per_endpoint };
        let mut discovery = Discovery::new(
            config_rx,
            endpoints_tx,
            pool,
            self.metrics.clone(),
            self.resolver.clone(),
            self.credentials.clone(),
        );
        // The first resolution completes before the backend is visible, so no request sees it empty by accident.
        let _ = discovery.sync(&backend).await;
        // Active health checks (when configured) clear and set each endpoint's `healthy` flag.
        health::spawn(discovery.config.clone(), endpoints_rx.clone(), self.metrics.health.clone());
        tokio::spawn(discovery.run());
        let handle = BackendHandle {
            name: backend.name.clone(),
            endpoints: endpoints_rx,
            gate: Arc::new(Gate::new(backend.bulkhead)),
            metrics: self.backend_metrics.clone(),
        };
        Entry { config: config_tx, handle }
    }
}
