//! Endpoint discovery for one backend: static addresses at once, DNS names re-resolved every `dns_refresh` (the
//! last good answer is kept when a lookup fails). Endpoints are kept by address, so an unchanged endpoint keeps its
//! connections, load estimate and breaker state across DNS changes and config reloads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_config::model::{Backend, EndpointAddr};
use tokio::sync::watch;

use super::balance::EndpointState;
use super::endpoint::{Connector, Endpoint, PoolSettings};
use crate::metrics::{BackendLabels, BackendResultLabels, DiscoveryMetrics, EndpointLabels, Name};
use crate::tls::{ClientTls, CredentialStore};

/// The endpoints of one backend, as the balancer sees them.
pub type Endpoints = Arc<[Arc<EndpointState>]>;
const DNS_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Addresses taken from one DNS answer; the rest are ignored (and logged).
const MAX_ADDRS_PER_NAME: usize = 256;

/// Looks a name up; injectable so tests can make DNS fail or change.
pub type Resolver = Arc<dyn Fn(String, u16) -> BoxFuture<std::io::Result<Vec<SocketAddr>>> + Send + Sync>;
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The system resolver, bounded in time.
pub fn system_resolver() -> Resolver {
    Arc::new(|host, port| Box::pin(async move { resolve(&host, port).await }))
}

/// The discovery state of one backend, owned by its task.
pub(super) struct Discovery {
    resolver: Resolver,
    pub config: watch::Receiver<Arc<Backend>>,
    pub endpoints: watch::Sender<Endpoints>,
    pub pool: PoolSettings,
    pub metrics: DiscoveryMetrics,
    /// Last good answer per DNS entry.
    resolved: BTreeMap<(String, u16), Vec<SocketAddr>>,
    /// What the balancer currently holds, and the settings its endpoints were built with.
    current: BTreeMap<SocketAddr, Arc<EndpointState>>,
    built_for: Option<Settings>,
    credentials: CredentialStore,
    /// The backend's mTLS origination, shared by its endpoints; rebuilt with them.
    tls: Option<Arc<ClientTls>>,
}

/// What an endpoint's client and breaker are built from: a change rebuilds every endpoint.
type Settings = (
    attache_config::model::UpstreamProtocol,
    Duration,
    Option<attache_config::model::BreakerPolicy>,
    Option<attache_config::model::BackendTls>,
);

impl Discovery {
    pub fn new(
        config: watch::Receiver<Arc<Backend>>,
        endpoints: watch::Sender<Endpoints>,
        pool: PoolSettings,
        metrics: DiscoveryMetrics,
        resolver: Resolver,
        credentials: CredentialStore,
    ) -> Self {
        Self {
            credentials,
            tls: None,
            resolver,
            config,
            endpoints,
            pool,
            metrics,
            resolved: BTreeMap::new(),
            current: BTreeMap::new(),
            built_for: None,
        }
    }

    /// Follows config changes and the DNS refresh interval until the backend is
    /// removed from the configuration.
    pub async fn run(mut self) {
        loop {
            let backend = self.config.borrow_and_update().clone();
            let has_dns = backend.endpoints.iter().any(|e| matches!(e, EndpointAddr::Dns { .. }));
            let refresh = async {
                if has_dns {
                    tokio::time::sleep(backend.dns_refresh).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                changed = self.config.changed() => if changed.is_err() { break },
                () = refresh => {}
            }
            let backend = self.config.borrow_and_update().clone();
            if self.sync(&backend).await.is_err() {
                break;
            }
        }
        // The backend is gone: so are its series.
        let name = self.config.borrow().name.clone();
        for addr in self.current.keys() {
            let labels = EndpointLabels { backend: Name(name.clone()), endpoint: addr.to_string() };
            self.metrics.breaker_state.remove(&labels);
        }
        self.metrics.endpoints.remove(&BackendLabels { backend: Name(name) });
    }

    /// Brings the balancer's endpoint set in line with `backend`, keeping the state of endpoints that stay. Errs
    /// when every handle to the backend is gone.
    pub async fn sync(&mut self, backend: &Backend) -> Result<(), ()> {
        let desired = self.desired(backend).await;
        let settings = (backend.protocol, backend.connect_timeout, backend.breaker, backend.tls.clone());
        let breaker_series =
            |addr: &SocketAddr| EndpointLabels { backend: Name(backend.name.clone()), endpoint: addr.to_string() };
        if self.built_for.as_ref() != Some(&settings) {
            // Rebuilt endpoints start with closed breakers.
            for addr in std::mem::take(&mut self.current).keys() {
                self.metrics.breaker_state.remove(&breaker_series(addr));
            }
            self.tls = backend
                .tls
                .as_ref()
                .map(|t| Arc::new(ClientTls::new(self.credentials.get(&t.files), t.identity.clone(), t.min_version)));
        }
        self.built_for = Some(settings);
        for addr in self.current.keys().filter(|a| !desired.contains(a)) {
            self.metrics.breaker_state.remove(&breaker_series(addr));
        }
        self.current.retain(|addr, _| desired.contains(addr));
        for addr in desired {
            self.current.entry(addr).or_insert_with(|| {
                let tls_metrics = self.credentials.metrics().clone();
                let connector = Connector::new(addr, backend.connect_timeout, self.tls.clone(), tls_metrics);
                let client = Endpoint::new(backend.protocol, self.pool, connector);
                Arc::new(EndpointState::new(addr, client, backend.breaker))
            });
        }
        let labels = BackendLabels { backend: Name(backend.name.clone()) };
        self.metrics.endpoints.get_or_create(&labels).set(self.current.len() as i64);
        self.endpoints.send_replace(self.current.values().cloned().collect());
        if self.endpoints.is_closed() {
            return Err(());
        }
        Ok(())
    }

    async fn desired(&mut self, backend: &Backend) -> BTreeSet<SocketAddr> {
        let mut out = BTreeSet::new();
        let mut names = Vec::new();
        for endpoint in &backend.endpoints {
            match endpoint {
                EndpointAddr::Socket(addr) => {
                    out.insert(*addr);
                }
                EndpointAddr::Dns { host, port } => names.push((host.clone(), *port)),
            }
        }
        // Names are looked up together, so one slow name does not delay the others.
        let answers = futures_util::future::join_all(names.iter().map(|(h, p)| (self.resolver)(h.clone(), *p))).await;
        let label = |result| BackendResultLabels { backend: Name(backend.name.clone()), result };
        for ((host, port), answer) in names.iter().zip(answers) {
            let key = (host.clone(), *port);
            match answer {
                Ok(mut addrs) => {
                    self.metrics.resolutions.get_or_create(&label("ok")).inc();
                    if addrs.len() > MAX_ADDRS_PER_NAME {
                        tracing::warn!(backend = %backend.name, %host, n = addrs.len(), "DNS answer truncated to {MAX_ADDRS_PER_NAME} addresses");
                        addrs.truncate(MAX_ADDRS_PER_NAME);
                    }
                    self.resolved.insert(key.clone(), addrs);
                }
                Err(error) => {
                    self.metrics.resolutions.get_or_create(&label("error")).inc();
                    tracing::warn!(backend = %backend.name, %host, %error, "DNS lookup failed; keeping the last good answer");
                }
            }
            out.extend(self.resolved.get(&key).into_iter().flatten().copied());
        }
        self.resolved.retain(|k, _| names.contains(k));
        out
    }
}

async fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let lookup = tokio::net::lookup_host((host, port));
    let addrs: Vec<_> = tokio::time::timeout(DNS_LOOKUP_TIMEOUT, lookup)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "lookup timed out"))??
        .collect();
    if addrs.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"));
    }
    Ok(addrs)
}

#[cfg(test)]
#[path = "discover_tests.rs"]
mod tests;
