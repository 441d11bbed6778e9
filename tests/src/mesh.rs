//! Runs the control plane under test: in-process (`mesh::control_plane()`) on a temporary config directory it
//! watches for real, on a port that stays the same across [`TestControlPlane::restart`]; its sidecars are
//! in-process proxies following it (`proxy::new().follow(..)`, or [`sidecars`] for many); and the real `attache`
//! binary ([`cli`]) for what users type.
//!
//! ```text
//! let cp = mesh::control_plane().file("routing.yaml", routing).file("sidecars.yaml", sidecars).run().await;
//! let web = proxy::new().follow(cp.addr(), "web", "web-0", state.path()).run().await;
//! cp.write("routing.yaml", &edited);
//! let status = cp.await_acked(1, 2, secs(5)).await;
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use attache_config::wire::{StatusView, STATUS_PATH};
use attache_control_plane::{cli as cp_cli, ControlPlane, ControlPlaneHandle};

use crate::metrics::{scrape, Metrics};
use crate::proxy::{self, TestProxy};
use crate::{TempDir, DEFAULT_TIMEOUT};

/// Builds an in-process control plane.
#[derive(Debug, Default)]
#[must_use]
pub struct Builder {
    files: Vec<(String, String)>,
    /// Be the mesh CA (with this workload certificate lifetime) and serve the API over mTLS.
    mtls: Option<Duration>,
}

/// The mesh CA of an mTLS control plane (trust domain `example.org`): its directory, the bootstrap token, and an
/// admin certificate for the CLI.
pub struct Pki {
    dir: TempDir,
    pub token: String,
}

/// A running (or, between [`TestControlPlane::stop`] and [`TestControlPlane::start`], stopped) in-process control
/// plane. Its directory (and the state kept in `<dir>/.attache-state`) is removed on drop.
pub struct TestControlPlane {
    dir: TempDir,
    addr: SocketAddr,
    handle: Option<ControlPlaneHandle>,
    pki: Option<(Pki, Duration)>,
}

/// Starts building a control plane.
pub fn control_plane() -> Builder {
    Builder::default()
}

impl Builder {
    /// A file of the config directory (a mesh file: `services`, `backends`, `sidecars`). Sidecar listener and admin
    /// addresses must be `127.0.0.1:0`: every in-process sidecar binds its own.
    pub fn file(mut self, name: &str, yaml: impl Into<String>) -> Self {
        self.files.push((name.to_owned(), yaml.into()));
        self
    }

    /// Makes it the mesh CA, issuing workload certificates that live `lifetime`, with an mTLS API.
    pub fn mtls(mut self, lifetime: Duration) -> Self {
        self.mtls = Some(lifetime);
        self
    }

    /// Writes the files, then starts the control plane on `127.0.0.1:0`. Panics if it cannot start.
    pub async fn run(self) -> TestControlPlane {
        crate::trace_init();
        let dir = TempDir::new("attache-mesh");
        for (name, yaml) in &self.files {
            write_atomically(dir.path(), name, yaml);
        }
        let pki = self.mtls.map(|lifetime| (Pki::new(), lifetime));
        let ca = pki.as_ref().map(|(p, lifetime)| p.config(*lifetime));
        let handle = start(dir.path(), "127.0.0.1:0".parse().expect("an address"), ca).await;
        TestControlPlane { addr: handle.addr(), dir, handle: Some(handle), pki }
    }
}

impl Pki {
    fn new() -> Self {
        let dir = TempDir::new("attache-mesh-ca");
        attache_proxy::certs::init(&dir.path().join("ca"), "example.org", 30, false).expect("creating a CA");
        let admin = attache_config::wire::admin_identity("example.org");
        attache_proxy::certs::issue(&dir.path().join("ca"), &admin, &dir.path().join("admin"), 1).expect("an admin");
        // Unique per CA; nothing secret in a test.
        let token = format!("token-{}-{}", std::process::id(), dir.path().display().to_string().len());
        Self { dir, token }
    }

    fn config(&self, lifetime: Duration) -> attache_control_plane::ca::CaConfig {
        attache_control_plane::ca::CaConfig {
            dir: self.dir.path().join("ca"),
            bootstrap_token: Some(self.token.clone()),
            admins: Vec::new(),
            lifetime,
        }
    }

    /// The CA certificate sidecars verify the control plane with.
    pub fn bundle(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    /// `cert.pem`, `key.pem`, `bundle.pem` of `spiffe://example.org/ns/attache/sa/admin`.
    pub fn admin_dir(&self) -> PathBuf {
        self.dir.path().join("admin")
    }

    /// Issues a certificate for `id` into a new directory under the CA's (as `attache ca issue` does).
    pub fn issue(&self, id: &str, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        attache_proxy::certs::issue(&self.dir.path().join("ca"), id, &out, 1).expect("issuing a certificate");
        out
    }
}

impl TestControlPlane {
    /// Where sidecars and the CLI reach it; the same across restarts.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The watched config directory.
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }

    /// What `attache_control_plane::cli`'s commands (`status`, `canary_set`, ...) take to reach it (as the admin,
    /// over mTLS, when it is the CA).
    pub fn api(&self) -> cp_cli::Api {
        cp_cli::Api { addr: self.addr.to_string(), tls_dir: self.pki.as_ref().map(|(p, _)| p.admin_dir()) }
    }

    /// The mesh CA, for a control plane built with [`Builder::mtls`].
    pub fn pki(&self) -> &Pki {
        &self.pki.as_ref().expect("this control plane is not the CA (Builder::mtls)").0
    }

    /// A sidecar source following this control plane over mTLS, enrolling with the bootstrap token.
    pub fn enrolled(
        &self,
        service: &str,
        instance: &str,
        state_dir: &Path,
    ) -> attache_proxy::source::control::ControlSource {
        let pki = self.pki();
        let node = attache_config::wire::Node {
            service: service.into(),
            instance: instance.into(),
            namespace: "default".into(),
        };
        let addrs = vec![self.addr.to_string()];
        let identity = attache_proxy::source::enrol::Enrolment {
            addrs: addrs.clone(),
            node: node.clone(),
            ca_bundle: pki.bundle(),
            token: Some(pki.token.clone()),
            dir: state_dir.join("identity"),
        };
        attache_proxy::source::control::ControlSource {
            addrs,
            node,
            state_dir: state_dir.to_owned(),
            identity: Some(identity),
        }
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_some()
    }

    /// Replaces (or adds) `file` in the config directory, atomically, as an editor or a ConfigMap update does.
    pub fn write(&self, file: &str, yaml: &str) {
        write_atomically(self.dir.path(), file, yaml);
    }

    /// Removes `file` from the config directory.
    pub fn remove(&self, file: &str) {
        let path = self.dir.path().join(file);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }

    /// `GET /v1/status`: the mesh's version and errors, every sidecar and what it runs. Panics if it does not answer.
    pub async fn status(&self) -> StatusView {
        self.try_status().await.unwrap_or_else(|e| panic!("GET {STATUS_PATH} from the control plane: {e:#}"))
    }

    pub async fn try_status(&self) -> Result<StatusView> {
        cp_cli::status_view(&self.api()).await.with_context(|| format!("GET {STATUS_PATH}"))
    }

    /// The version being served, from the status API.
    pub async fn version(&self) -> u64 {
        self.status().await.mesh.version
    }

    /// Scrapes the control plane's `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        scrape(self.addr).await.expect("scraping the control plane's metrics")
    }

    /// Polls the status API until `done` holds, returning that status. Panics, naming the caller and showing the
    /// last status seen, after `timeout`.
    #[track_caller]
    pub fn await_status<'a>(
        &'a self,
        what: impl Into<String>,
        timeout: Duration,
        mut done: impl FnMut(&StatusView) -> bool + 'a,
    ) -> impl Future<Output = StatusView> + 'a {
        let caller = std::panic::Location::caller();
        let what = what.into();
        async move {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                let status = self.try_status().await;
                match status {
                    Ok(view) if done(&view) => return view,
                    _ if tokio::time::Instant::now() >= deadline => {
                        let last = status.map_or_else(|e| format!("{e:#}"), |view| summary(&view));
                        panic!("{what}: not within {timeout:?} (at {caller}); last status:\n{last}")
                    }
                    _ => tokio::time::sleep(crate::wait::POLL_INTERVAL).await,
                }
            }
        }
    }

    /// Waits until the mesh is at `version` and exactly `sidecars` sidecars are known, every one connected and
    /// running (having ACKed) `version`.
    #[track_caller]
    pub fn await_acked(
        &self,
        sidecars: usize,
        version: u64,
        timeout: Duration,
    ) -> impl Future<Output = StatusView> + '_ {
        let what = format!("{sidecars} connected sidecars ACKing version {version}");
        self.await_status(what, timeout, move |view| {
            view.mesh.version == version
                && view.sidecars.len() == sidecars
                && view.sidecars.iter().all(|s| s.connected && s.acked_version == version && s.nack.is_none())
        })
    }

    /// Stops the control plane (its listener and every stream) and waits until its port refuses connections.
    pub async fn stop(&mut self) {
        drop(self.handle.take().expect("the control plane is already stopped"));
        let addr = self.addr;
        crate::eventually(DEFAULT_TIMEOUT, || async move { tokio::net::TcpStream::connect(addr).await.is_err() }).await;
    }

    /// Starts the control plane again, on the same directory, state and port.
    pub async fn start(&mut self) {
        assert!(self.handle.is_none(), "the control plane is already running");
        let ca = self.pki.as_ref().map(|(p, lifetime)| p.config(*lifetime));
        self.handle = Some(start(self.dir.path(), self.addr, ca).await);
    }

    /// [`TestControlPlane::stop`], then [`TestControlPlane::start`].
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }
}

/// `n` sidecars of `service` following `cp`, started concurrently: instances `<service>-0` .. `<service>-<n-1>`,
/// each saving its last good configuration in `<state>/<instance>`.
pub async fn sidecars(cp: &TestControlPlane, service: &str, n: usize, state: &Path) -> Vec<TestProxy> {
    let starts = (0..n).map(|i| {
        let instance = format!("{service}-{i}");
        proxy::new().follow(cp.addr(), service, &instance, state.join(&instance)).run()
    });
    futures_util::future::join_all(starts).await
}

/// The `attache` binary (control plane and mesh CLI), built once per test run if needed.
pub fn binary() -> Result<PathBuf> {
    crate::binaries::built("attache-control-plane", "attache")
}

/// Runs `attache` with `args`, returning its exit status and stdout+stderr. Bounded by `timeout`.
pub async fn cli(args: &[&str], timeout: Duration) -> Result<(std::process::ExitStatus, String)> {
    let mut command = tokio::process::Command::new(binary()?);
    command.args(args).env_remove("ATTACHE_CONTROL_PLANE").kill_on_drop(true);
    let out = tokio::time::timeout(timeout, command.output()).await.context("attache timed out")??;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status, text))
}

/// One line for the mesh, one per sidecar: what a failed wait shows.
fn summary(view: &StatusView) -> String {
    let mesh = &view.mesh;
    let mut out = format!("mesh version {} errors {:?}\n", mesh.version, mesh.errors);
    for s in &view.sidecars {
        out.push_str(&format!(
            "  {}/{} connected {} acked {} pushed {} nack {:?}\n",
            s.node.service, s.node.instance, s.connected, s.acked_version, s.pushed_version, s.nack
        ));
    }
    out
}

/// Starts a control plane on `dir` at `listen`. A port just freed by a stopped control plane may take a moment to
/// be released (its task is dropped asynchronously), so "address in use" is retried, within a bound.
async fn start(dir: &Path, listen: SocketAddr, ca: Option<attache_control_plane::ca::CaConfig>) -> ControlPlaneHandle {
    let deadline = tokio::time::Instant::now() + DEFAULT_TIMEOUT;
    loop {
        let cp = ControlPlane {
            config_dir: dir.to_owned(),
            state_dir: None,
            listen,
            ca: ca.clone(),
            inject: Default::default(),
        };
        match cp.start().await {
            Ok(handle) => return handle,
            Err(e) if in_use(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("starting the control plane on {listen}: {e:#}"),
        }
    }
}

fn in_use(error: &anyhow::Error) -> bool {
    error.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse))
}

/// Writes `dir/name` by renaming a hidden temporary file over it (the control plane ignores hidden files).
fn write_atomically(dir: &Path, name: &str, yaml: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("renaming over {}: {e}", path.display()));
}
