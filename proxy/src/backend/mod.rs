//! Backends: one balancer per backend (P2C over peak-EWMA among its endpoints), bounded by a pending queue that
//! sheds instead of growing. Backends are long-lived state reconciled by name across config reloads, so an
//! unchanged backend keeps its connection pools and load estimates.

mod discover;
pub mod endpoint;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use attache_config::model::{Backend, Limits};
use http::{Request, Response};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use self::discover::{Discovery, Update};
use self::endpoint::PoolSettings;
use crate::body::Body;
use crate::errors::{BoxError, NoEndpoints};
use crate::metrics::DiscoveryMetrics;

/// Room for endpoint changes queued for a balancer besides one initial insert per address.
const DISCOVERY_SLACK: usize = 64;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type Balancer = tower::buffer::Buffer<Request<Body>, BoxFuture<Result<Response<Body>, BoxError>>>;

/// A cheap, cloneable handle to one backend's balancer.
#[derive(Clone)]
pub struct BackendHandle {
    name: Arc<str>,
    balancer: tower::load_shed::LoadShed<Balancer>,
    addrs: watch::Receiver<Arc<[SocketAddr]>>,
    /// Keeps the balancer's discovery stream open while any handle lives.
    _updates: mpsc::Sender<Update>,
}

/// Owns every backend's discovery task; reconciles them by name.
pub struct Backends {
    entries: HashMap<Arc<str>, Entry>,
    metrics: DiscoveryMetrics,
    resolver: discover::Resolver,
}

struct Entry {
    config: watch::Sender<Arc<Backend>>,
    handle: BackendHandle,
}

impl BackendHandle {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The endpoints currently known, for opaque TCP.
    pub fn addrs(&self) -> Arc<[SocketAddr]> {
        self.addrs.borrow().clone()
    }

    /// Sends one request to the least-loaded of two random endpoints; fails fast when there are none or the
    /// pending bound is reached.
    pub fn call(&self, req: Request<Body>) -> BoxFuture<Result<Response<Body>, BoxError>> {
        if self.addrs.borrow().is_empty() {
            let err: BoxError = Box::new(NoEndpoints { backend: self.name.clone() });
            return Box::pin(std::future::ready(Err(err)));
        }
        Box::pin(self.balancer.clone().oneshot(req))
    }
}

impl Backends {
    pub fn new(metrics: DiscoveryMetrics) -> Self {
        Self { entries: HashMap::new(), metrics, resolver: discover::system_resolver() }
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
            let handle = match self.entries.get(&backend.name) {
                Some(entry) => {
                    entry.config.send_if_modified(|cur| {
                        let changed = **cur != **backend;
                        if changed {
                            *cur = backend.clone();
                        }
                        changed
                    });
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
        // Sized so that the first sync (before anything polls the balancer) always fits; later syncs run in the
        // discovery task and wait for room.
        let (updates_tx, updates_rx) = mpsc::channel(discover::max_addresses(&backend) + DISCOVERY_SLACK);
        let (addrs_tx, addrs_rx) = watch::channel(Arc::from(Vec::new()));
        let pool = PoolSettings { idle_timeout: limits.pool_idle_timeout, max_idle: limits.pool_max_idle_per_endpoint };
        let discover = tokio_stream::wrappers::ReceiverStream::new(updates_rx);
        let balance = tower::balance::p2c::Balance::new(discover);
        let boxed = tower::util::BoxService::new(balance.map_err(BoxError::from));
        let buffer = tower::buffer::Buffer::new(boxed, limits.max_pending_per_backend.max(1));
        let mut discovery =
            Discovery::new(config_rx, updates_tx.clone(), addrs_tx, pool, self.metrics.clone(), self.resolver.clone());
        // The first resolution completes before the backend is visible, so no request sees it empty by accident.
        let _ = discovery.sync(&backend).await;
        tokio::spawn(discovery.run());
        let handle = BackendHandle {
            name: backend.name.clone(),
            balancer: tower::load_shed::LoadShed::new(buffer),
            addrs: addrs_rx,
            _updates: updates_tx,
        };
        Entry { config: config_tx, handle }
    }
}
