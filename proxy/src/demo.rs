//! `attache-proxy demo`: a sidecar and two sample echo services ("stable" and "canary") on loopback, a config file
//! you can edit live, and a measured 90/10 split.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::source::{file, ConfigStatus};
use crate::Proxy;

#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Outbound listener port (0 picks a free one).
    #[arg(long, default_value_t = 4140)]
    pub port: u16,
    /// Admin listener port (0 picks a free one).
    #[arg(long, default_value_t = 9901)]
    pub admin_port: u16,
    /// Requests sent to show the split.
    #[arg(long, default_value_t = 1000)]
    pub requests: usize,
    /// Exit after showing the split instead of serving until Ctrl-C.
    #[arg(long)]
    pub once: bool,
}

const TEMPLATE: &str = include_str!("demo.yaml");

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stable = echo_server("stable", "127.0.0.1:0".parse()?).await?;
    let canary = echo_server("canary", "127.0.0.1:0".parse()?).await?;
    let port = free_or_zero(args.port).await;
    let admin_port = free_or_zero(args.admin_port).await;
    let dir = std::env::temp_dir().join(format!("attache-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path: PathBuf = dir.join("config.yaml");
    let text = TEMPLATE
        .replace("{port}", &port.to_string())
        .replace("{admin_port}", &admin_port.to_string())
        .replace("{stable}", &stable.to_string())
        .replace("{canary}", &canary.to_string());
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let snapshot = file::load(&path).map_err(|e| anyhow::anyhow!("the embedded demo config is invalid: {e}"))?;
    let status = ConfigStatus::new(path.display().to_string(), &snapshot);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::metrics::Metrics::register(&mut registry);
    let (snapshots, _watch) = file::watch(path.clone(), snapshot, status.clone(), metrics.config.clone());
    let proxy = Proxy { snapshots, status, registry, metrics }.start().await?;
    let outbound = proxy.listener_addr("outbound").context("outbound listener not bound")?;
    let admin = proxy.admin_addr();
    println!("Attaché demo");
    println!("  sidecar outbound  http://{outbound}   (services: echo)");
    println!("  sidecar admin     http://{admin}      (/live /ready /metrics /config)");
    println!("  stable echo       http://{stable}");
    println!("  canary echo       http://{canary}");
    println!("  config (live)     {}", path.display());
    println!();
    println!("Try:");
    println!("  curl -s -H 'Host: echo' http://{outbound}/hello");
    println!("  curl -s --http2-prior-knowledge -H 'Host: echo' http://{outbound}/hello");
    println!("  curl -s -x http://{outbound} http://echo/hello          # as HTTP_PROXY");
    println!("  curl -s -H 'Host: echo' -H 'x-user: alice' http://{outbound}/sticky   # always the same backend");
    println!("  curl -s http://{admin}/metrics | grep attache_requests_total");
    println!("  edit the weights in {} and watch them apply", path.display());
    println!();
    let counts = send(outbound, args.requests).await?;
    print_split(&counts, args.requests);
    if !args.once {
        println!("\nServing until Ctrl-C.");
        let _ = tokio::signal::ctrl_c().await;
    }
    proxy.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn free_or_zero(port: u16) -> u16 {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(_) => port,
        Err(_) => 0,
    }
}

fn print_split(counts: &BTreeMap<String, usize>, total: usize) {
    println!("Split over {total} requests through the sidecar (configured 90/10):");
    for (backend, n) in counts {
        let pct = 100.0 * *n as f64 / total.max(1) as f64;
        println!("  {backend:<8} {n:>6}  {pct:5.1}%  {}", "#".repeat((pct / 2.0).round() as usize));
    }
}

/// Sends `n` requests through the sidecar on one keep-alive connection and counts answers per backend.
async fn send(proxy: SocketAddr, n: usize) -> anyhow::Result<BTreeMap<String, usize>> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        sender.ready().await?;
        let req = http::Request::get("/demo").header("host", "echo").body(Full::<Bytes>::default())?;
        let rsp = sender.send_request(req).await?;
        let backend = rsp.headers().get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("error").to_owned();
        rsp.into_body().collect().await?;
        *counts.entry(backend).or_insert(0) += 1;
    }
    Ok(counts)
}

/// A tiny HTTP/1.1 + h2c echo service that names itself in `x-backend` and the body. The sample app of the
/// examples (`attache-proxy echo`).
pub async fn echo_server(name: &str, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let tcp = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let addr = tcp.local_addr()?;
    let name: std::sync::Arc<str> = std::sync::Arc::from(name);
    tokio::spawn(async move {
        while let Ok((stream, _)) = tcp.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| echo(name.clone(), req));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

async fn echo(
    name: std::sync::Arc<str>,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    // The caller's verified mesh identity, when the request came through an mTLS inbound listener.
    let peer = req.headers().get(crate::http::authz::PEER_IDENTITY_HEADER).and_then(|v| v.to_str().ok());
    let mut body = serde_json::json!({
        "backend": &*name,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "version": format!("{:?}", req.version()),
    });
    if let Some(peer) = peer {
        body["peer"] = serde_json::Value::from(peer);
    }
    let body = format!("{body}\n");
    let mut rsp = http::Response::new(Full::new(Bytes::from(body)));
    if let Ok(v) = http::HeaderValue::from_str(&name) {
        rsp.headers_mut().insert("x-backend", v);
    }
    rsp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    Ok(rsp)
}
