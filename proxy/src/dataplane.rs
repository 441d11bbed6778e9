//! The dataplane state one request reads: a config snapshot plus the running backends it references, published
//! together so that a request never sees a route whose backend does not exist yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use attache_config::model::{
    Backend, Bulkhead, EndpointAddr, Filters, HostIndex, Limits, Listener, ListenerTarget, Route, Snapshot,
    UpstreamProtocol, WeightedBackend,
};
use tokio::sync::watch;

use crate::backend::{BackendHandle, Backends};
use crate::http::resolved::ResolvedRoute;
use crate::metrics::Metrics;
use crate::tls::CredentialStore;

/// What the data path routes with. Replaced as a whole on every reload.
pub struct Dataplane {
    pub snapshot: Arc<Snapshot>,
    /// User backends by name, plus one `app:<listener>` backend per inbound listener.
    pub backends: HashMap<Arc<str>, BackendHandle>,
    /// Inbound listener name -> the route that forwards to its app.
    pub inbound: HashMap<Arc<str>, Arc<ResolvedRoute>>,
    /// Parallel to `snapshot.services` and each service's routes: the routes resolved against `backends`.
    services: Vec<Box<[Arc<ResolvedRoute>]>>,
    /// `snapshot.services` by host.
    hosts: HostIndex,
}

impl Dataplane {
    pub fn backend(&self, name: &str) -> Option<&BackendHandle> {
        self.backends.get(name)
    }

    /// The index in `snapshot.services` of the service for `authority` (`Snapshot::service_index_for`).
    pub fn service_for(&self, authority: &str) -> Option<usize> {
        self.hosts.find(authority)
    }

    /// The resolved route at `route` of the service at `service` in the snapshot.
    pub fn route(&self, service: usize, route: usize) -> Option<&Arc<ResolvedRoute>> {
        self.services.get(service)?.get(route)
    }

    /// The snapshot's routes (and the inbound listeners' app routes) resolved against `backends`.
    pub fn new(
        snapshot: Arc<Snapshot>,
        backends: HashMap<Arc<str>, BackendHandle>,
        inbound: Vec<(Arc<str>, Route)>,
    ) -> Self {
        let resolve = |route: Arc<Route>| Arc::new(ResolvedRoute::new(route, |name| backends.get(name)));
        let services =
            snapshot.services.iter().map(|s| s.routes.iter().map(|r| resolve(r.clone())).collect()).collect();
        let inbound = inbound.into_iter().map(|(listener, route)| (listener, resolve(Arc::new(route)))).collect();
        let hosts = HostIndex::new(&snapshot.services);
        Self { snapshot, backends, inbound, services, hosts }
    }
}

/// Follows the snapshot channel and publishes a `Dataplane` for each snapshot, reconciling backends by name.
pub async fn spawn(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: &Metrics,
    credentials: &CredentialStore,
) -> watch::Receiver<Arc<Dataplane>> {
    let mut backends = Backends::new(metrics.discovery.clone(), metrics.backend.clone(), credentials.clone());
    let first = snapshots.borrow_and_update().clone();
    let (tx, rx) = watch::channel(Arc::new(build(&mut backends, first, credentials).await));
    let credentials = credentials.clone();
    tokio::spawn(async move {
        while snapshots.changed().await.is_ok() {
            let snapshot = snapshots.borrow_and_update().clone();
            let plane = build(&mut backends, snapshot, &credentials).await;
            if tx.send(Arc::new(plane)).is_err() {
                return;
            }
        }
    });
    rx
}

async fn build(backends: &mut Backends, snapshot: Arc<Snapshot>, credentials: &CredentialStore) -> Dataplane {
    let limits = &snapshot.limits;
    let mut wanted: Vec<Arc<Backend>> = snapshot.backends.values().cloned().collect();
    let mut inbound = Vec::new();
    for listener in &snapshot.listeners {
        let ListenerTarget::App(addr) = listener.target else { continue };
        let app = app_backend(&listener.name, EndpointAddr::Socket(addr), limits);
        inbound.push((listener.name.clone(), app_route(listener, &app.name, limits.request_timeout)));
        wanted.push(Arc::new(app));
    }
    let backends = backends.reconcile(&wanted, limits).await;
    // Credentials nobody refers to any more stop being watched once their last connection is gone.
    let files = snapshot.tls_files();
    credentials.retain(|f| files.contains(&f));
    Dataplane::new(snapshot, backends, inbound)
}

/// The name of the backend that is an inbound listener's app.
pub fn app_backend_name(listener: &str) -> String {
    format!("app:{listener}")
}

/// The local app as a backend: one endpoint, no breaker (ejecting the only endpoint helps no one; the caller's
/// sidecar breaks on its side).
fn app_backend(listener: &str, endpoint: EndpointAddr, limits: &Limits) -> Backend {
    Backend {
        name: Arc::from(app_backend_name(listener)),
        endpoints: vec![endpoint],
        protocol: UpstreamProtocol::Auto,
        dns_refresh: Duration::from_secs(5),
        connect_timeout: limits.connect_timeout,
        breaker: None,
        bulkhead: Bulkhead {
            max_concurrent: limits.max_concurrent_per_backend,
            max_pending: limits.max_pending_per_backend,
        },
        health_check: None,
        tls: None,
    }
}

/// The listener's one route: to its app, under its rate limit and authorization.
fn app_route(listener: &Listener, backend: &Arc<str>, timeout: Duration) -> Route {
    Route {
        service: listener.name.clone(),
        name: Arc::from("app"),
        matches: Vec::new(),
        filters: Filters::default(),
        backends: vec![WeightedBackend { name: backend.clone(), weight: 1 }],
        sticky: None,
        timeout,
        retry: None,
        rate_limit: listener.rate_limit.clone(),
        fault: None,
        authorization: listener.authorization.clone(),
    }
}
