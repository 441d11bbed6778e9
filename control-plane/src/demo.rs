//! `attache demo`: a whole mesh on loopback. The control plane serves a config directory to two sidecars, a
//! client-side one (the `web` app's) and a server-side one in front of the `reviews` service's stable and canary
//! versions; a traffic generator calls `reviews` through the client-side sidecar, and a live view shows requests
//! per second per version, the success rate, and the config version each sidecar runs. Change the split from another
//! terminal with `attache canary set` (or edit the directory) and watch the view follow.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use attache_config::wire::{Node, StatusView};
use attache_proxy::source::control::ControlSource;
use attache_proxy::source::ConfigStatus;
use attache_proxy::{Proxy, ProxyHandle};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{ControlPlane, ControlPlaneHandle};

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// The control plane's API address (`attache status` and `attache canary` find it here by default).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// The client-side sidecar's outbound port, the one the `web` app calls (0 picks a free one).
    #[arg(long, default_value_t = 4140)]
    pub port: u16,
    /// Requests per second the traffic generator sends.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
}

const ROUTING: &str = include_str!("demo/routing.yaml");
const SIDECARS: &str = include_str!("demo/sidecars.yaml");

/// Answers per backend (and failures) since the view last looked.
#[derive(Default)]
struct Tally {
    by_backend: BTreeMap<String, u64>,
    failed: u64,
}

/// Runs the demo until Ctrl-C (or `--seconds`).
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stable = attache_proxy::demo::echo_server("reviews-stable", "127.0.0.1:0".parse()?).await?;
    let canary = attache_proxy::demo::echo_server("reviews-canary", "127.0.0.1:0".parse()?).await?;
    let dir = std::env::temp_dir().join(format!("attache-mesh-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let config_dir = dir.join("mesh");
    std::fs::create_dir_all(&config_dir).with_context(|| format!("creating {}", config_dir.display()))?;
    let ports = [free_port(args.port).await?, free_port(0).await?, free_port(0).await?];
    let fill = |t: &str| {
        t.replace("{outbound}", &ports[0].to_string())
            .replace("{inbound_stable}", &ports[1].to_string())
            .replace("{inbound_canary}", &ports[2].to_string())
            .replace("{stable}", &stable.to_string())
            .replace("{canary}", &canary.to_string())
    };
    std::fs::write(config_dir.join("routing.yaml"), fill(ROUTING))?;
    std::fs::write(config_dir.join("sidecars.yaml"), fill(SIDECARS))?;
    let listen = match TcpListener::bind(args.listen).await {
        Ok(_) => args.listen,
        Err(_) => "127.0.0.1:0".parse()?,
    };
    let pki = Pki::create(&dir)?;
    let ca = crate::ca::CaConfig {
        dir: pki.ca_dir.clone(),
        bootstrap_token: Some(pki.token.clone()),
        admins: Vec::new(),
        lifetime: crate::ca::WORKLOAD_LIFETIME,
    };
    let state_dir = Some(dir.join("state"));
    let cp =
        ControlPlane { config_dir: config_dir.clone(), state_dir, listen, ca: Some(ca), inject: Default::default() }
            .start()
            .await?;
    let (web, web_follow) = sidecar(&cp, &pki, "web", "web-1", &dir).await?;
    let (reviews, reviews_follow) = sidecar(&cp, &pki, "reviews", "reviews-1", &dir).await?;
    let outbound = web.listener_addr("outbound").context("the client-side sidecar has no outbound listener")?;
    intro(&cp, outbound, &config_dir, &pki);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let traffic = tokio::spawn(generate(outbound, args.rate.max(1), tally.clone()));
    view(&cp, &tally, args.seconds).await;
    traffic.abort();
    // The sidecars stop following before the control plane goes, so they do not report losing it.
    for (proxy, follow) in [(web, web_follow), (reviews, reviews_follow)] {
        follow.abort();
        proxy.shutdown(Duration::from_secs(2)).await;
    }
    drop(cp);
    Ok(())
}

/// The demo's mesh CA: the control plane's, a bootstrap token for the sidecars, an admin certificate for the CLI.
struct Pki {
    ca_dir: PathBuf,
    token: String,
    admin_dir: PathBuf,
}

/// The demo mesh's trust domain.
const TRUST_DOMAIN: &str = "demo.attache";

impl Pki {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let ca_dir = dir.join("ca");
        attache_proxy::certs::init(&ca_dir, TRUST_DOMAIN, 30, true)?;
        let admin_dir = dir.join("admin");
        attache_proxy::certs::issue(&ca_dir, &attache_config::wire::admin_identity(TRUST_DOMAIN), &admin_dir, 1)?;
        Ok(Self { ca_dir, token: format!("{:032x}", rand::random::<u128>()), admin_dir })
    }
}

/// An in-process sidecar following the control plane, enrolled for its workload certificate with the token.
async fn sidecar(
    cp: &ControlPlaneHandle,
    pki: &Pki,
    service: &str,
    instance: &str,
    dir: &Path,
) -> anyhow::Result<(ProxyHandle, tokio::task::JoinHandle<()>)> {
    let node = Node { service: service.to_owned(), instance: instance.to_owned(), namespace: "demo".to_owned() };
    let state_dir = dir.join(instance);
    let identity = attache_proxy::source::enrol::Enrolment {
        addrs: vec![cp.addr().to_string()],
        node: node.clone(),
        ca_bundle: pki.ca_dir.join("ca.pem"),
        token: Some(pki.token.clone()),
        dir: state_dir.join("identity"),
    };
    let source = ControlSource { addrs: vec![cp.addr().to_string()], node, state_dir, identity: Some(identity) };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = attache_proxy::metrics::Metrics::register(&mut registry);
    let status = ConfigStatus::named(format!("control plane {}", cp.addr()));
    let (snapshots, follow) = source.start(status.clone(), metrics.config.clone(), metrics.control.clone()).await?;
    Ok((Proxy { snapshots, status, registry, metrics }.start().await?, follow))
}

fn intro(cp: &ControlPlaneHandle, outbound: SocketAddr, config_dir: &Path, pki: &Pki) {
    let flag = if cp.addr().to_string() == "127.0.0.1:7070" {
        String::new()
    } else {
        format!(" --control-plane {}", cp.addr())
    };
    println!("Attaché mesh demo");
    println!("  control plane   {}   serving {} (mTLS; it is the mesh CA)", cp.addr(), config_dir.display());
    println!("  web's sidecar   http://{outbound}   (the client side: the app calls reviews through it)");
    println!("  reviews         stable and canary versions behind their own sidecar (the server side)");
    println!();
    println!("From another terminal (the CLI authenticates with the demo's admin certificate):");
    println!("  export ATTACHE_TLS_DIR={}", pki.admin_dir.display());
    println!("  attache status{flag}");
    println!("  attache canary set reviews reviews-canary=50 reviews-stable=50{flag}");
    println!("  attache canary set reviews reviews-stable=100{flag}        # roll back");
    println!("  curl -s -H 'Host: reviews' http://{outbound}/");
    println!("  or edit {}/routing.yaml", config_dir.display());
    println!();
}

/// Calls `reviews` through the client-side sidecar `rate` times a second.
async fn generate(outbound: SocketAddr, rate: u32, tally: Arc<Mutex<Tally>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    let mut sender = None;
    loop {
        tick.tick().await;
        let backend = call(&mut sender, outbound).await;
        let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
        match backend {
            Some(b) => *t.by_backend.entry(b).or_insert(0) += 1,
            None => t.failed += 1,
        }
    }
}

/// One request on the kept connection (reconnecting when it is gone); the backend that answered.
async fn call(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
    outbound: SocketAddr,
) -> Option<String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let tcp = tokio::net::TcpStream::connect(outbound).await.ok()?;
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.ok()?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let s = sender.as_mut()?;
    s.ready().await.ok()?;
    let req = http::Request::get("/reviews").header("host", "reviews").body(Full::default()).ok()?;
    let rsp = s.send_request(req).await.ok()?;
    let ok = rsp.status().is_success();
    let backend = rsp.headers().get("x-backend").and_then(|v| v.to_str().ok()).map(str::to_owned);
    rsp.into_body().collect().await.ok()?;
    backend.filter(|_| ok)
}

/// Prints a line a second: requests per second per version, success rate, what each sidecar runs.
async fn view(cp: &ControlPlaneHandle, tally: &Mutex<Tally>, seconds: Option<u64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut elapsed = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return,
        }
        elapsed += 1;
        let t = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
        let status = StatusView { mesh: cp.store().status(), sidecars: cp.sidecars().view() };
        println!("{}", line(elapsed, &t, &status));
        if seconds.is_some_and(|s| elapsed >= s) {
            return;
        }
    }
}

fn line(elapsed: u64, t: &Tally, status: &StatusView) -> String {
    let ok: u64 = t.by_backend.values().sum();
    let total = ok + t.failed;
    let split: Vec<String> =
        t.by_backend.iter().map(|(b, n)| format!("{b} {n}/s ({:.0}%)", 100.0 * *n as f64 / ok.max(1) as f64)).collect();
    let sidecars: Vec<String> = status
        .sidecars
        .iter()
        .map(|s| format!("{} v{}{}", s.node.instance, s.acked_version, if s.nack.is_some() { " NACK" } else { "" }))
        .collect();
    let success = if total == 0 { 100.0 } else { 100.0 * ok as f64 / total as f64 };
    format!(
        "[{elapsed:>4}s] mesh v{} | {} | success {success:.1}% | sidecars: {}",
        status.mesh.version,
        if split.is_empty() { "no answers".to_owned() } else { split.join(", ") },
        sidecars.join(", ")
    )
}

/// `port` if it is free (or 0), else a free one.
async fn free_port(port: u16) -> anyhow::Result<u16> {
    let tcp = match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(tcp) => tcp,
        Err(_) => TcpListener::bind(("127.0.0.1", 0)).await?,
    };
    Ok(tcp.local_addr()?.port())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
