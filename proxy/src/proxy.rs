//! The running sidecar: binds the admin and data listeners, keeps the listeners in line with the config (re-bound
//! only when an address changes), and drains gracefully on shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use attache_config::model::{Direction, Listener, TlsMode};
use attache_config::Snapshot;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::dataplane::{self, Dataplane};
use crate::drain;
use crate::listener::{self, Context};
use crate::metrics::{Dir, Metrics};
use crate::source::ConfigStatus;
use crate::tls::{CredentialStore, ServerTls};

/// Bound listener addresses by name.
pub type Bound = Arc<Mutex<BTreeMap<Arc<str>, SocketAddr>>>;

/// Starts a sidecar.
pub struct Proxy {
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub status: ConfigStatus,
    pub registry: Registry,
    pub metrics: Metrics,
}

/// A running sidecar.
pub struct ProxyHandle {
    admin_addr: SocketAddr,
    bound: Bound,
    ready: Arc<AtomicBool>,
    drain: drain::Signal,
    listeners_task: tokio::task::JoinHandle<()>,
    limiters_task: tokio::task::JoinHandle<()>,
    tracer_task: tokio::task::JoinHandle<()>,
    tracer: crate::trace::Tracer,
    admin_task: tokio::task::JoinHandle<()>,
}

struct Running {
    config: Arc<Listener>,
    retire: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Option<TcpListener>>,
}

impl Proxy {
    /// A proxy with its own registry, for callers that don't export other metrics.
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, status: ConfigStatus) -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Self { snapshots, status, registry, metrics }
    }

    /// Binds every listener (failing if any cannot be bound) and starts serving.
    pub async fn start(self) -> anyhow::Result<ProxyHandle> {
        let Self { snapshots, status, registry, metrics } = self;
        let admin_addr = snapshots.borrow().admin.address;
        let admin_tcp =
            TcpListener::bind(admin_addr).await.with_context(|| format!("binding admin on {admin_addr}"))?;
        let admin_addr = admin_tcp.local_addr()?;
        let credentials = CredentialStore::new(metrics.tls.clone());
        let mut plane = dataplane::spawn(snapshots, &metrics, &credentials).await;
        let (signal, drain_watch) = drain::channel();
        let bound: Bound = Arc::default();
        let limiters = crate::http::ratelimit::RateLimiters::new();
        // Rate-limit buckets of routes that no longer exist are dropped on each reload.
        let limiters_task = limiters.follow(plane.clone());
        let budgets = crate::http::retry::Budgets::default();
        let tracer = crate::trace::Tracer::new(metrics.trace.clone());
        // Exporters start, stop or keep running as the tracing settings change.
        let tracer_task = tracer.follow(plane.clone());
        let shared = crate::http::Shared { metrics: metrics.clone(), limiters, budgets, tracer: tracer.clone() };
        let mut set =
            ListenerSet { running: BTreeMap::new(), bound: bound.clone(), shared, drain: drain_watch, credentials };
        let first = plane.borrow_and_update().clone();
        set.reconcile(&first, &plane, true).await?;
        let listeners_task = tokio::spawn(async move {
            while plane.changed().await.is_ok() {
                let current = plane.borrow_and_update().clone();
                let _ = set.reconcile(&current, &plane, false).await;
            }
        });
        let ready = Arc::new(AtomicBool::new(true));
        let admin = crate::admin::Admin { registry: Arc::new(registry), status, ready: ready.clone() };
        let admin_task = tokio::spawn(admin.serve(admin_tcp));
        tracing::info!(%admin_addr, listeners = ?bound.lock().map(|b| b.clone()).unwrap_or_default(), "attache-proxy ready");
        Ok(ProxyHandle {
            admin_addr,
            bound,
            ready,
            drain: signal,
            listeners_task,
            limiters_task,
            tracer_task,
            tracer,
            admin_task,
        })
    }
}

impl ProxyHandle {
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The address a listener is bound to (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound.lock().ok()?.get(name).copied()
    }

    pub fn listener_addrs(&self) -> BTreeMap<Arc<str>, SocketAddr> {
        self.bound.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// Turns `/ready` to 503, stops accepting, lets in-flight requests finish for up to `grace`. Returns whether
    /// every connection finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.ready.store(false, Ordering::SeqCst);
        self.listeners_task.abort();
        self.limiters_task.abort();
        let _ = self.listeners_task.await;
        let drained = tokio::time::timeout(grace, self.drain.drain()).await.is_ok();
        self.tracer_task.abort();
        // Spans still queued are sent (for up to a second) before the process goes.
        self.tracer.shutdown(Duration::from_secs(1)).await;
        self.admin_task.abort();
        drained
    }
}

struct ListenerSet {
    running: BTreeMap<Arc<str>, Running>,
    bound: Bound,
    shared: crate::http::Shared,
    drain: drain::Watch,
    credentials: CredentialStore,
}

impl ListenerSet {
    /// Keeps listeners whose name, address and direction are unchanged; stops the others. A socket whose address is
    /// still wanted (a renamed listener, or a new direction) is handed to the new listener, so it is never closed
    /// and re-bound. At startup a bind failure is fatal; on reload it is logged and the rest still applies.
    async fn reconcile(
        &mut self,
        plane: &Arc<Dataplane>,
        plane_rx: &watch::Receiver<Arc<Dataplane>>,
        startup: bool,
    ) -> anyhow::Result<()> {
        let wanted = &plane.snapshot.listeners;
        let unchanged = |name: &Arc<str>, r: &Running| wanted.iter().any(|l| l.name == *name && **l == *r.config);
        let stopping: Vec<Arc<str>> =
            self.running.iter().filter(|(name, r)| !unchanged(name, r)).map(|(name, _)| name.clone()).collect();
        let mut sockets = BTreeMap::new();
        for name in stopping {
            let Some(r) = self.running.remove(&name) else { continue };
            let _ = r.retire.send(true);
            // A listener replaced under the same name keeps its entry until the new one overwrites it (with the
            // same address when its socket is handed over), so lookups never see it missing mid-reload.
            if !wanted.iter().any(|l| l.name == name) {
                if let Ok(mut b) = self.bound.lock() {
                    b.remove(&name);
                }
            }
            if let Ok(Some(tcp)) = r.task.await {
                sockets.insert(r.config.address, tcp);
            }
        }
        // A stopped listener's socket goes to the new listener for the same address (as configured, or as bound
        // when the config named port 0); sockets nobody claims are closed before anything new is bound.
        let mut claimed = BTreeMap::new();
        for l in wanted.iter().filter(|l| !self.running.contains_key(&l.name)) {
            let key = sockets
                .iter()
                .find(|(configured, tcp)| **configured == l.address || tcp.local_addr().ok() == Some(l.address))
                .map(|(k, _)| *k);
            if let Some(tcp) = key.and_then(|k| sockets.remove(&k)) {
                claimed.insert(l.name.clone(), tcp);
            }
        }
        drop(sockets);
        for l in wanted {
            if let Some(r) = self.running.get_mut(&l.name) {
                r.config = l.clone();
                continue;
            }
            match self.start(l, claimed.remove(&l.name), plane, plane_rx).await {
                Ok(r) => {
                    self.running.insert(l.name.clone(), r);
                }
                Err(e) if startup => return Err(e),
                Err(error) => {
                    tracing::error!(listener = %l.name, "{error:#}");
                    if let Ok(mut b) = self.bound.lock() {
                        b.remove(&l.name);
                    }
                }
            }
        }
        Ok(())
    }

    async fn start(
        &self,
        l: &Arc<Listener>,
        socket: Option<TcpListener>,
        plane: &Arc<Dataplane>,
        plane_rx: &watch::Receiver<Arc<Dataplane>>,
    ) -> anyhow::Result<Running> {
        let limits = &plane.snapshot.limits;
        let tcp = match socket {
            Some(tcp) => tcp,
            None => bind(l.address, limits.listen_backlog)
                .with_context(|| format!("binding listener {} on {}", l.name, l.address))?,
        };
        let addr = tcp.local_addr()?;
        let http = match l.direction {
            Direction::Outbound => {
                crate::http::outbound(plane_rx.clone(), &self.shared, limits.max_concurrent_requests)
            }
            Direction::Inbound => {
                crate::http::inbound(plane_rx.clone(), l.name.clone(), &self.shared, limits.max_concurrent_requests)
            }
        };
        // `mode: disabled` names files it never uses: they are neither loaded nor watched.
        let tls = l.tls.as_ref().filter(|t| t.mode != TlsMode::Disabled);
        let tls = tls.and_then(|t| ServerTls::new(self.credentials.get(&t.files), t.mode, t.min_version));
        let (retire, retire_rx) = watch::channel(false);
        let ctx = Context {
            retire: retire_rx,
            tls: tls.map(Arc::new),
            tls_metrics: self.shared.metrics.tls.clone(),
            http_authz: self.shared.metrics.authz.clone(),
            name: l.name.clone(),
            listener: l.clone(),
            direction: Dir::from(l.direction),
            plane: plane_rx.clone(),
            http,
            metrics: self.shared.metrics.conn.clone(),
            drain: self.drain.clone(),
        };
        let task = tokio::spawn(listener::accept_loop(tcp, ctx));
        if let Ok(mut b) = self.bound.lock() {
            b.insert(l.name.clone(), addr);
        }
        tracing::info!(listener = %l.name, %addr, direction = ?l.direction, "listening");
        Ok(Running { config: l.clone(), retire, task })
    }
}

/// A listening socket with `backlog` (the standard library's and tokio's `bind` listen with 128: a burst of new
/// connections past it, 1,000 clients reconnecting after a deploy, has SYNs dropped and retried a second later).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 300 connections queue on a listener nobody accepts from: past tokio's default backlog of 128 the kernel
    /// would drop their SYNs (a second's wait each). `net.core.somaxconn` caps any backlog, so the count does too.
    #[tokio::test]
    async fn the_backlog_queues_a_burst_of_connections() {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let burst = 300.min(somaxconn);
        let tcp =
            bind("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), 1024).unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = tcp.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let mut held = Vec::new();
        for i in 0..burst {
            let conn = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await;
            match conn {
                Ok(Ok(stream)) => held.push(stream),
                other => panic!("connection {i} of {burst} was not queued: {other:?}"),
            }
        }
        assert_eq!(held.len(), burst);
    }
}
