//! attache-control-plane: serves the mesh found in a directory of YAML to every sidecar, as versioned
//! configurations pushed over one HTTP/2 stream per sidecar, and knows which sidecar runs which version.
//!
//! - `source`: the directory, validated as a whole, published as a new version only when valid and changed;
//! - `stream`: one sidecar's stream (hello, config, ack/nack);
//! - `registry`: what every sidecar runs (`attache status`);
//! - `server`: the API (streams, status, canary weights, metrics);
//! - `cli`: the `attache` commands that talk to it;
//! - `inject`: the sidecar added to Kubernetes workloads (`attache inject`).

#![forbid(unsafe_code)]

pub mod ca;
pub mod cli;
pub mod demo;
pub mod inject;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod source;
pub mod state;
pub mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::metrics::CpMetrics;
use crate::registry::Sidecars;
use crate::source::Store;

/// How to run a control plane.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    pub config_dir: PathBuf,
    /// Where versions, canary weights and the last good mesh are kept (default `<config_dir>/.attache-state`).
    pub state_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Be the mesh CA and serve the API over mTLS (`None`: plaintext, for development).
    pub ca: Option<ca::CaConfig>,
    /// What the admission webhook (`POST /inject`) injects.
    pub inject: inject::InjectOptions,
}

/// A running control plane; stops when dropped.
pub struct ControlPlaneHandle {
    addr: SocketAddr,
    store: Store,
    sidecars: Sidecars,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start(self) -> anyhow::Result<ControlPlaneHandle> {
        let state_dir = self.state_dir.clone().unwrap_or_else(|| self.config_dir.join(".attache-state"));
        let mut registry = Registry::default();
        let metrics = CpMetrics::register(&mut registry);
        let tls_metrics =
            attache_proxy::tls::TlsMetrics::register(registry.sub_registry_with_prefix("attache_control_plane"));
        let store = Store::open(&self.config_dir, &state_dir, metrics.clone())?;
        let tcp = TcpListener::bind(self.listen).await.with_context(|| format!("binding {}", self.listen))?;
        let addr = tcp.local_addr()?;
        let sidecars = Sidecars::default();
        let streams = stream::StreamContext { store: store.clone(), sidecars: sidecars.clone(), metrics };
        let mut tasks = vec![store.watch()];
        let ca = match &self.ca {
            Some(config) => {
                let (ca, renew) = ca::Ca::start(config, &state_dir, tls_metrics)?;
                tasks.push(renew);
                Some(ca)
            }
            None => {
                tracing::warn!(
                    "no --ca-dir: the control-plane API is plaintext and unauthenticated (development only)"
                );
                None
            }
        };
        let api = server::Api { streams, registry: Arc::new(registry), ca, inject: self.inject.clone() };
        tasks.push(tokio::spawn(server::serve(tcp, api)));
        let status = store.status();
        tracing::info!(%addr, dir = %self.config_dir.display(), version = status.version, "control plane ready");
        Ok(ControlPlaneHandle { addr, store, sidecars, tasks })
    }
}

impl ControlPlaneHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn sidecars(&self) -> &Sidecars {
        &self.sidecars
    }
}

impl Drop for ControlPlaneHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
