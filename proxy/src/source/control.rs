//! The control-plane source: the sidecar's configuration pushed by `attache control-plane` over one HTTP/2 stream.
//!
//! Every configuration is validated here again (as a file would be, TLS files included) and applied only when
//! valid, then ACKed; an invalid one is NACKed with why, and the sidecar keeps what it runs. The last good one is
//! saved (atomically) to the state directory, so a sidecar restarted while the control plane is away serves from it.
//! While the control plane is away the sidecar keeps serving, and reconnects with jittered exponential backoff,
//! going round the addresses it was given.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use attache_config::wire::{ControlMessage, Node, SidecarMessage, MAX_MESSAGE_BYTES, STREAM_PATH};
use attache_config::{ConfigError, ConfigSpec, FieldError, Snapshot};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::ConfigStatus;
use crate::backend::endpoint::Conn;
use crate::metrics::{ConfigMetrics, ResultLabels};
use crate::tls::{Alpn, TlsVersions};
use crate::wire::{line_channel, LineReader, LineSender};

/// Reconnects wait between zero and this doubling ceiling...
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// ...capped here.
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// Connecting (TCP and the HTTP/2 handshake) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keepalive: a ping this often, and the connection is given up when one goes unanswered this long.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The saved last good configuration.
const LAST_GOOD: &str = "last-good.json";

/// How to follow a control plane.
#[derive(Clone, Debug)]
pub struct ControlSource {
    /// `host:port` of each control-plane replica, tried in turn.
    pub addrs: Vec<String>,
    pub node: Node,
    /// Where the last good configuration is saved.
    pub state_dir: PathBuf,
    /// mTLS to the control plane, with a workload certificate it issues (`None`: plaintext, for development).
    pub identity: Option<super::enrol::Enrolment>,
}

/// `attache_control_plane_*` on the sidecar.
#[derive(Clone, Debug, Default)]
pub struct ControlMetrics {
    /// 1 while a stream to a control plane is open.
    pub connected: Gauge,
    /// Stream attempts by result (`ok`, `failed`).
    pub connects: Family<ResultLabels, Counter>,
}

/// What is saved: the configuration and the version it came as.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u64,
    hash: u64,
    config: ConfigSpec,
}

/// The stream's side of the sidecar: where applied snapshots go.
struct Applier {
    /// `None` until the first configuration (saved or pushed).
    tx: watch::Sender<Option<Arc<Snapshot>>>,
    status: ConfigStatus,
    metrics: ConfigMetrics,
    state_dir: PathBuf,
}

impl ControlMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let reg = registry.sub_registry_with_prefix("attache_control_plane");
        let m = Self::default();
        reg.register("connected", "1 while the sidecar's stream to a control plane is open", m.connected.clone());
        reg.register("connects", "Streams to a control plane opened, by result", m.connects.clone());
        m
    }
}

impl ControlSource {
    /// Starts following the control plane. Serves the saved last good configuration at once when there is one
    /// that still validates; otherwise waits (while no control plane answers, forever) for the first one. The
    /// watch lives as long as the returned task.
    pub async fn start(
        self,
        status: ConfigStatus,
        config_metrics: ConfigMetrics,
        metrics: ControlMetrics,
    ) -> anyhow::Result<(watch::Receiver<Arc<Snapshot>>, tokio::task::JoinHandle<()>)> {
        anyhow::ensure!(!self.addrs.is_empty(), "no control-plane address");
        let saved = self.saved();
        if let Some(s) = &saved {
            tracing::info!(version = s.version, "serving the saved configuration until a control plane answers");
        }
        let (tx, mut applied) = watch::channel(saved.map(Arc::new));
        let applier =
            Applier { tx, status: status.clone(), metrics: config_metrics.clone(), state_dir: self.state_dir.clone() };
        let renew = self.identity.clone().map(super::enrol::Enrolment::renew_forever);
        let follow = tokio::spawn(self.follow(applier, metrics));
        let first = applied.wait_for(Option::is_some).await.ok().and_then(|first| first.clone());
        let first = first.ok_or_else(|| anyhow::anyhow!("stopped following the control plane"))?;
        status.applied(&first);
        config_metrics.version.set(first.version as i64);
        let (out, rx) = watch::channel(first);
        let task = tokio::spawn(async move {
            let _follow = Abort(follow);
            let _renew = renew.map(Abort);
            while applied.changed().await.is_ok() {
                let next = applied.borrow_and_update().clone();
                if let Some(s) = next {
                    out.send_replace(s);
                }
            }
        });
        Ok((rx, task))
    }

    /// The saved last good configuration, if there is one that still validates.
    fn saved(&self) -> Option<Snapshot> {
        let bytes = std::fs::read(self.state_dir.join(LAST_GOOD)).ok()?;
        let saved: Saved = serde_json::from_slice(&bytes).ok()?;
        let mut snapshot = validate(saved.config).ok()?;
        snapshot.version = saved.version;
        snapshot.hash = saved.hash;
        Some(snapshot)
    }

    async fn follow(self, applier: Applier, metrics: ControlMetrics) {
        let mut failures = 0u32;
        for addr in self.addrs.iter().cycle() {
            let outcome = session(addr, &self.node, self.identity.as_ref(), &applier, &metrics).await;
            metrics.connected.set(0);
            match outcome {
                // A stream that carried a configuration was healthy: start the backoff over.
                Ok(()) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(control_plane = %addr, "{error:#}");
                }
            }
            tokio::time::sleep(crate::backoff::full_jitter(BACKOFF_BASE, BACKOFF_MAX, failures.max(1))).await;
        }
    }
}

/// Aborts a task when dropped.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One stream: hello, then configurations until it ends. `Ok` when it delivered at least one.
async fn session(
    addr: &str,
    node: &Node,
    identity: Option<&super::enrol::Enrolment>,
    applier: &Applier,
    metrics: &ControlMetrics,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let io = match identity {
            None => Conn::Plain(tcp),
            Some(enrolment) => Conn::Tls(Box::new(mtls(enrolment, tcp).await?)),
        };
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await?;
        anyhow::Ok((sender, conn))
    };
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.context("connect timed out");
    let (mut sender, conn) = match connected.and_then(|r| r) {
        Ok(c) => c,
        Err(e) => {
            metrics.connects.get_or_create(&ResultLabels { result: "failed" }).inc();
            return Err(e.context(format!("cannot reach the control plane at {addr}")));
        }
    };
    let _conn = Abort(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let (tx, body) = line_channel(2);
    let req = http::Request::post(format!("http://{addr}{STREAM_PATH}")).body(body)?;
    let running = applier.tx.borrow().as_ref().map_or(0, |s| s.version);
    tx.send(&SidecarMessage::Hello { node: node.clone(), version: running }).await?;
    let rsp = sender.send_request(req).await.context("opening the config stream")?;
    if rsp.status() != http::StatusCode::OK {
        metrics.connects.get_or_create(&ResultLabels { result: "failed" }).inc();
        anyhow::bail!("the control plane at {addr} answered {}", rsp.status());
    }
    metrics.connects.get_or_create(&ResultLabels { result: "ok" }).inc();
    metrics.connected.set(1);
    tracing::info!(control_plane = %addr, running, "config stream open");
    let mut reader = LineReader::new(rsp.into_body(), MAX_MESSAGE_BYTES);
    let mut delivered = false;
    loop {
        match reader.next::<ControlMessage>().await.context("reading the config stream")? {
            Some(ControlMessage::Config { version, nonce, hash, config }) => {
                delivered = true;
                answer(&tx, applier.apply(version, hash, *config), version, nonce).await?;
            }
            Some(ControlMessage::Unknown { version, error }) => {
                delivered = true;
                tracing::warn!(version, %error, "the control plane has no configuration for this sidecar");
            }
            None if delivered => return Ok(()),
            None => anyhow::bail!("the control plane at {addr} closed the stream"),
        }
    }
}

/// The control stream's mTLS: this sidecar's workload certificate (enrolled first when there is none), and the
/// control plane's identity checked.
async fn mtls(
    enrolment: &super::enrol::Enrolment,
    tcp: tokio::net::TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let material = enrolment.ensure().await?;
    let config = crate::tls::client_config(&material, enrolment.control_plane_id()?, TlsVersions::Tls13, Alpn::Http2)?;
    let name = rustls_pki_types::ServerName::try_from("control-plane.attache.invalid")?.to_owned();
    Ok(tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?)
}

async fn answer(tx: &LineSender, applied: Result<(), ConfigError>, version: u64, nonce: String) -> anyhow::Result<()> {
    let message = match applied {
        Ok(()) => SidecarMessage::Ack { version, nonce },
        Err(e) => SidecarMessage::Nack { version, nonce, error: e.to_string() },
    };
    tx.send(&message).await?;
    Ok(())
}

impl Applier {
    /// Validates and applies one pushed configuration; the last good one keeps serving when it is invalid.
    fn apply(&self, version: u64, hash: u64, config: ConfigSpec) -> Result<(), ConfigError> {
        let current = self.tx.borrow().clone();
        let serving = current.as_ref().map_or(0, |s| s.version);
        if current.is_some_and(|s| s.version == version && s.hash == hash) {
            return Ok(());
        }
        let count = |result| self.metrics.reloads.get_or_create(&ResultLabels { result }).inc();
        let mut snapshot = match validate(config) {
            Ok(s) => s,
            Err(error) => {
                tracing::error!(version, serving, "pushed configuration rejected: {error}");
                self.status.rejected(&error);
                count("rejected");
                return Err(error);
            }
        };
        snapshot.version = version;
        snapshot.hash = hash;
        self.save(&snapshot);
        tracing::info!(version, "configuration applied");
        self.status.applied(&snapshot);
        self.metrics.version.set(version as i64);
        self.metrics.last_reload_timestamp.set(super::unix_now() as i64);
        count("applied");
        self.tx.send_replace(Some(Arc::new(snapshot)));
        Ok(())
    }

    fn save(&self, snapshot: &Snapshot) {
        let saved = Saved { version: snapshot.version, hash: snapshot.hash, config: (*snapshot.source).clone() };
        let path = self.state_dir.join(LAST_GOOD);
        let result = std::fs::create_dir_all(&self.state_dir).and_then(|()| {
            let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
            crate::persist::write_atomically(&path, &bytes, false)
        });
        if let Err(error) = result {
            tracing::error!(path = %path.display(), %error, "cannot save the last good configuration");
        }
    }
}

/// As a file's configuration is validated: the model, then the TLS files it names.
fn validate(config: ConfigSpec) -> Result<Snapshot, ConfigError> {
    let snapshot = Snapshot::try_from(config)?;
    let errors: Vec<FieldError> = crate::tls::check_snapshot(&snapshot);
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(ConfigError { errors })
    }
}
