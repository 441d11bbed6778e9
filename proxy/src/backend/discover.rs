//! Endpoint discovery for one backend: static addresses at once, DNS names re-resolved every `dns_refresh` (the
//! last good answer is kept when a lookup fails). Changes are diffed so unchanged endpoints keep their load state.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_config::model::{Backend, EndpointAddr};
use tokio::sync::{mpsc, watch};
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwma};

use super::endpoint::{Endpoint, PoolSettings};
use crate::metrics::{BackendLabels, BackendResultLabels, DiscoveryMetrics, Name};

pub(super) type Balanced = PeakEwma<Endpoint, CompleteOnResponse>;
pub(super) type Update = Result<Change<SocketAddr, Balanced>, Infallible>;

/// Peak-EWMA starts every endpoint at this round-trip estimate and decays over this window.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
const DECAY: Duration = Duration::from_secs(10);
const DNS_LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Addresses taken from one DNS answer; the rest are ignored (and logged).
const MAX_ADDRS_PER_NAME: usize = 256;

/// The most addresses `backend` can resolve to.
pub(super) fn max_addresses(backend: &Backend) -> usize {
    backend.endpoints.iter().map(|e| if matches!(e, EndpointAddr::Dns { .. }) { MAX_ADDRS_PER_NAME } else { 1 }).sum()
}

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
    pub updates: mpsc::Sender<Update>,
    pub addrs: watch::Sender<Arc<[SocketAddr]>>,
    pub pool: PoolSettings,
    pub metrics: DiscoveryMetrics,
    /// Last good answer per DNS entry.
    resolved: BTreeMap<(String, u16), Vec<SocketAddr>>,
    /// What the balancer currently holds, and the settings its clients were built with.
    current: BTreeSet<SocketAddr>,
    built_for: Option<(attache_config::model::UpstreamProtocol, Duration)>,
}

impl Discovery {
    pub fn new(
        config: watch::Receiver<Arc<Backend>>,
        updates: mpsc::Sender<Update>,
        addrs: watch::Sender<Arc<[SocketAddr]>>,
        pool: PoolSettings,
        metrics: DiscoveryMetrics,
        resolver: Resolver,
    ) -> Self {
        Self {
            resolver,
            config,
            updates,
            addrs,
            pool,
            metrics,
            resolved: BTreeMap::new(),
            current: BTreeSet::new(),
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
        // The backend is gone: so is its series.
        let name = self.config.borrow().name.clone();
        self.metrics.endpoints.remove(&BackendLabels { backend: Name(name) });
    }

    /// Brings the balancer's endpoint set in line with `backend`. Errs when the balancer is gone.
    pub async fn sync(&mut self, backend: &Backend) -> Result<(), ()> {
        let desired = self.desired(backend).await;
        let settings = (backend.protocol, backend.connect_timeout);
        if self.built_for.is_some_and(|b| b != settings) {
            // Clients are built for a protocol and connect timeout: rebuild them all.
            for addr in std::mem::take(&mut self.current) {
                self.updates.send(Ok(Change::Remove(addr))).await.map_err(drop)?;
            }
        }
        self.built_for = Some(settings);
        for addr in self.current.difference(&desired).copied().collect::<Vec<_>>() {
            self.updates.send(Ok(Change::Remove(addr))).await.map_err(drop)?;
        }
        for addr in desired.difference(&self.current).copied().collect::<Vec<_>>() {
            let endpoint = Endpoint::new(addr, backend.protocol, backend.connect_timeout, self.pool);
            let balanced = PeakEwma::new(endpoint, DEFAULT_RTT, DECAY.as_nanos() as f64, CompleteOnResponse::default());
            self.updates.send(Ok(Change::Insert(addr, balanced))).await.map_err(drop)?;
        }
        self.current = desired;
        let labels = BackendLabels { backend: Name(backend.name.clone()) };
        self.metrics.endpoints.get_or_create(&labels).set(self.current.len() as i64);
        self.addrs.send_replace(self.current.iter().copied().collect());
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
