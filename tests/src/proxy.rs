//! Runs the proxy under test: in-process (`proxy::new()`), with its config in a real file watched by the real
//! file source or pushed by a control plane it follows (`proxy::new().follow(..)`), or as the real `attache-proxy`
//! binary (`proxy::process()`) when a test needs signals or the CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use attache_config::wire::Node;
use attache_proxy::source::control::ControlSource;
use attache_proxy::source::{file, ConfigStatus};
use attache_proxy::{Proxy, ProxyHandle};

use crate::metrics::{scrape, Metrics};
use crate::AbortOnDrop;

/// A config file in its own temporary directory, removed on drop.
#[derive(Debug)]
pub struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

/// Builds an in-process proxy.
#[derive(Debug, Default)]
pub struct Builder {
    yaml: String,
    path: Option<PathBuf>,
    follow: Option<ControlSource>,
}

/// A running in-process proxy. Dropping it stops accepting; `shutdown` drains.
pub struct TestProxy {
    handle: Option<ProxyHandle>,
    /// The config file this proxy owns; `None` when started with [`Builder::config_at`] or [`Builder::follow`].
    file: Option<ConfigFile>,
    /// The watched config file; `None` for a proxy following a control plane.
    path: Option<PathBuf>,
    _source: Source,
}

/// Where a [`TestProxy`]'s snapshots come from; held only to be dropped with the proxy.
enum Source {
    /// The file watch (left running when the proxy is dropped, as it always was).
    File { _watch: tokio::task::JoinHandle<()> },
    /// The control-plane stream, closed when the proxy is dropped: a dropped sidecar is gone for the control plane.
    Control { _stream: AbortOnDrop },
}

/// Starts building an in-process proxy.
pub fn new() -> Builder {
    Builder::default()
}

impl Builder {
    /// The YAML config. Use `127.0.0.1:0` for listener and admin addresses.
    pub fn config(mut self, yaml: impl Into<String>) -> Self {
        self.yaml = yaml.into();
        self
    }

    /// Watches a config file the test laid out itself (e.g. a ConfigMap-style symlink) instead of writing one;
    /// `config` is then ignored and [`TestProxy::write_config`] is not available.
    pub fn config_at(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Follows the control plane at `control_plane` as instance `instance` of `service`, saving the last good
    /// configuration in `state_dir` (as `attache-proxy run --control-plane` does); `config` and `config_at` are
    /// then ignored. [`Builder::run`] returns once the first configuration (pushed, or saved in `state_dir`) is
    /// served, and panics if none comes within [`crate::DEFAULT_TIMEOUT`].
    pub fn follow(
        mut self,
        control_plane: SocketAddr,
        service: &str,
        instance: &str,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        let node = Node { service: service.to_owned(), instance: instance.to_owned(), namespace: "default".to_owned() };
        let addrs = vec![control_plane.to_string()];
        // Plaintext to the control plane, as in development: what is tested here is what it pushes.
        self.follow = Some(ControlSource { addrs, node, state_dir: state_dir.into(), identity: None });
        self
    }

    /// Follows a control plane as `source` says (e.g. over mTLS, see `mesh::TestControlPlane::enrolled`).
    pub fn follow_source(mut self, source: ControlSource) -> Self {
        self.follow = Some(source);
        self
    }

    pub async fn run(self) -> TestProxy {
        crate::trace_init();
        if let Some(source) = self.follow {
            return follow(source).await;
        }
        let (file, path) = match self.path {
            Some(path) => (None, path),
            None => {
                let file = ConfigFile::new(&self.yaml).expect("writing the config file");
                let path = file.path().to_owned();
                (Some(file), path)
            }
        };
        let snapshot = file::load(&path).unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        let status = ConfigStatus::new(path.display().to_string(), &snapshot);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = attache_proxy::metrics::Metrics::register(&mut registry);
        let (snapshots, watch) = file::watch(path.clone(), snapshot, status.clone(), metrics.config.clone());
        let handle = Proxy { snapshots, status, registry, metrics }.start().await.expect("starting the proxy");
        TestProxy { handle: Some(handle), file, path: Some(path), _source: Source::File { _watch: watch } }
    }
}

/// Starts a sidecar whose snapshots come from `source`, as `attache-proxy run --control-plane` does.
async fn follow(source: ControlSource) -> TestProxy {
    let who = format!("{}/{} following {}", source.node.service, source.node.instance, source.addrs.join(","));
    let status = ConfigStatus::named(format!("control plane {}", source.addrs.join(",")));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = attache_proxy::metrics::Metrics::register(&mut registry);
    let started = source.start(status.clone(), metrics.config.clone(), metrics.control.clone());
    let waited = tokio::time::timeout(crate::DEFAULT_TIMEOUT, started).await;
    let (snapshots, task) = waited
        .unwrap_or_else(|_| panic!("sidecar {who}: no configuration within {:?}", crate::DEFAULT_TIMEOUT))
        .unwrap_or_else(|e| panic!("sidecar {who}: {e:#}"));
    let source = Source::Control { _stream: AbortOnDrop(task) };
    let handle = Proxy { snapshots, status, registry, metrics }.start().await.expect("starting the proxy");
    TestProxy { handle: Some(handle), file: None, path: None, _source: source }
}

impl TestProxy {
    fn handle(&self) -> &ProxyHandle {
        self.handle.as_ref().expect("proxy already shut down")
    }

    /// The bound address of the listener called `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.handle().listener_addr(name).unwrap_or_else(|| panic!("no listener named {name}"))
    }

    /// The bound address of the listener called `name`, or `None` while there is no such listener (e.g. during a
    /// reload that renames it).
    pub fn try_listener(&self, name: &str) -> Option<SocketAddr> {
        self.handle().listener_addr(name)
    }

    /// The listener named `outbound`.
    pub fn outbound(&self) -> SocketAddr {
        self.listener("outbound")
    }

    /// The listener named `inbound`.
    pub fn inbound(&self) -> SocketAddr {
        self.listener("inbound")
    }

    pub fn admin(&self) -> SocketAddr {
        self.handle().admin_addr()
    }

    /// The watched config file. Panics for a proxy following a control plane.
    pub fn config_path(&self) -> &Path {
        self.path.as_deref().expect("config_path needs a proxy started from a file, not one following a control plane")
    }

    /// Replaces the config file (atomically, as editors and ConfigMaps do) to trigger a reload.
    pub fn write_config(&self, yaml: &str) {
        let file =
            self.file.as_ref().expect("write_config needs a proxy started with `config` (not `config_at`/`follow`)");
        file.write(yaml).expect("rewriting the config file");
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        scrape(self.admin()).await.expect("scraping metrics")
    }

    /// GETs `/config` as JSON.
    pub async fn config_view(&self) -> serde_json::Value {
        let rsp = crate::client::http1(self.admin()).get("admin", "/config").await.expect("GET /config");
        rsp.json()
    }

    /// Drains for up to `grace`; returns whether every connection finished in time.
    pub async fn shutdown(mut self, grace: Duration) -> bool {
        match self.handle.take() {
            Some(h) => h.shutdown(grace).await,
            None => true,
        }
    }
}

impl ConfigFile {
    pub fn new(yaml: &str) -> Result<Self> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "attache-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let file = Self { path: dir.join("config.yaml"), dir };
        file.write(yaml)?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes to a temporary file and renames it over the config.
    pub fn write(&self, yaml: &str) -> Result<()> {
        let tmp = self.dir.join(".config.yaml.tmp");
        std::fs::write(&tmp, yaml)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `attache-proxy` binary, built once per test run if needed.
pub fn binary() -> Result<PathBuf> {
    crate::binaries::built("attache-proxy", "attache-proxy")
}

/// Runs `attache-proxy` with `args`, returning its exit status and stdout+stderr. Bounded by `timeout`.
pub async fn cli(args: &[&str], timeout: Duration) -> Result<(std::process::ExitStatus, String)> {
    cli_in(Path::new("."), args, timeout).await
}

/// [`cli`] with `dir` as the working directory (relative paths in configs resolve from it).
pub async fn cli_in(dir: &Path, args: &[&str], timeout: Duration) -> Result<(std::process::ExitStatus, String)> {
    let mut command = tokio::process::Command::new(binary()?);
    command.args(args).current_dir(dir).kill_on_drop(true);
    let out = tokio::time::timeout(timeout, command.output()).await.context("attache-proxy timed out")??;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status, text))
}

/// `attache-proxy run` as a child process, killed on drop.
pub struct ProcessProxy {
    pub child: tokio::process::Child,
    pub file: ConfigFile,
}

/// Starts `attache-proxy run --config <file>` and waits until its admin `/ready` answers 200. The config's admin
/// address must be fixed by the caller (reserve one with `free_port`).
pub async fn process(yaml: &str, admin: SocketAddr) -> Result<ProcessProxy> {
    let file = ConfigFile::new(yaml)?;
    let mut child = tokio::process::Command::new(binary()?)
        .args(["run", "--config"])
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            // Fail fast if it exited (e.g. a reserved port was taken meanwhile) instead of waiting out the timeout.
            if let Some(status) = child.try_wait()? {
                bail!("attache-proxy exited before becoming ready on {admin}: {status}");
            }
            if let Ok(rsp) = crate::client::http1(admin).get("admin", "/ready").await {
                if rsp.status == 200 && child.try_wait()?.is_none() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    match ready {
        Ok(res) => res?,
        Err(_) => bail!("attache-proxy did not become ready on {admin}"),
    }
    Ok(ProcessProxy { child, file })
}

impl ProcessProxy {
    /// Sends SIGTERM.
    pub fn terminate(&self) -> Result<()> {
        let pid = self.child.id().context("process already exited")?;
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        Ok(())
    }
}

/// A port that was free a moment ago, for the rare config address that must be known before the process starts.
pub fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}
