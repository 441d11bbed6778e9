//! Config propagation through the control plane: N sidecar streams (each its own HTTP/2 connection, speaking the
//! real protocol and validating every configuration as a sidecar does before it ACKs) connect to an `attache
//! control-plane` process; the mesh file is edited K times, and for each edit the time from the write to every
//! stream's ACK is recorded. Reports p50 / p99 / max of "write to ACK" and of "write to last ACK", the control
//! plane's memory with N streams, and the ratios against a single stream measured in the same run.
//!
//!   cargo build --release --bin attache --bin cp-propagation
//!   target/release/cp-propagation --sidecars 100 --sidecars 1000

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use attache_config::wire::{ControlMessage, Node, SidecarMessage, MAX_MESSAGE_BYTES, STREAM_PATH};
use attache_proxy::wire::{line_channel, LineReader};
use clap::Parser;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    /// Stream counts to measure (repeat the flag); a 1-stream baseline is always measured first.
    #[arg(long, default_values_t = [100usize, 1000])]
    sidecars: Vec<usize>,
    /// Edits of the mesh per stream count.
    #[arg(long, default_value_t = 10)]
    publishes: usize,
    /// The `attache` binary.
    #[arg(long, default_value = "target/release/attache")]
    attache: PathBuf,
}

/// When each stream ACKed each version.
type Acks = Arc<Mutex<Vec<Vec<(u64, Instant)>>>>;

struct Measured {
    sidecars: usize,
    to_ack_p50: Duration,
    to_ack_p99: Duration,
    to_last_p50: Duration,
    to_last_max: Duration,
    rss_per_sidecar_kib: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut results = Vec::new();
    for n in std::iter::once(1).chain(args.sidecars.iter().copied()) {
        results.push(measure(&args, n).await.with_context(|| format!("{n} sidecars"))?);
    }
    let base = &results[0];
    println!("config propagation: file write -> ACK, {} edits each (this machine, loopback)", args.publishes);
    println!("| streams | write->ACK p50 | p99 | write->last ACK p50 | max | vs 1 stream (last ACK p50) | CP RSS per stream |");
    println!("|---|---|---|---|---|---|---|");
    for r in &results {
        let ratio = r.to_last_p50.as_secs_f64() / base.to_last_p50.as_secs_f64().max(1e-9);
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {ratio:.2}x | {:.1} KiB |",
            r.sidecars,
            ms(r.to_ack_p50),
            ms(r.to_ack_p99),
            ms(r.to_last_p50),
            ms(r.to_last_max),
            r.rss_per_sidecar_kib
        );
    }
    Ok(())
}

async fn measure(args: &Args, n: usize) -> anyhow::Result<Measured> {
    let dir = std::env::temp_dir().join(format!("attache-bench-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    write_mesh(&dir, 0)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let mut cp = tokio::process::Command::new(&args.attache)
        .args(["control-plane", "--config-dir"])
        .arg(&dir)
        .args(["--listen", &addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.attache.display()))?;
    let pid = cp.id().context("the control plane exited")?;
    wait_listening(&addr).await?;
    let rss_before = rss_kib(pid)?;
    let acks: Acks = Arc::new(Mutex::new(vec![Vec::new(); n]));
    let mut streams = tokio::task::JoinSet::new();
    for i in 0..n {
        streams.spawn(stream(addr.clone(), i, acks.clone()));
    }
    wait_all(&acks, 1, Duration::from_secs(60)).await?;
    let rss_with = rss_kib(pid)?;
    let (mut to_ack, mut to_last) = (Vec::new(), Vec::new());
    for k in 1..=args.publishes {
        let version = 1 + k as u64;
        let written = Instant::now();
        write_mesh(&dir, k)?;
        wait_all(&acks, version, Duration::from_secs(60)).await?;
        let times: Vec<Duration> = acks
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .filter_map(|a| a.iter().find(|(v, _)| *v == version).map(|(_, t)| t.duration_since(written)))
            .collect();
        to_last.push(times.iter().copied().max().unwrap_or_default());
        to_ack.extend(times);
    }
    streams.abort_all();
    let _ = cp.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    to_ack.sort();
    to_last.sort();
    Ok(Measured {
        sidecars: n,
        to_ack_p50: percentile(&to_ack, 0.50),
        to_ack_p99: percentile(&to_ack, 0.99),
        to_last_p50: percentile(&to_last, 0.50),
        to_last_max: to_last.last().copied().unwrap_or_default(),
        rss_per_sidecar_kib: (rss_with.saturating_sub(rss_before)) as f64 / n as f64,
    })
}

/// One sidecar's stream: ACKs every configuration that validates, recording when.
async fn stream(addr: String, i: usize, acks: Acks) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(&addr).await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let (tx, body) = line_channel(2);
    let node = Node { service: "web".into(), instance: format!("web-{i}"), namespace: "bench".into() };
    tx.send(&SidecarMessage::Hello { node, version: 0 }).await?;
    let rsp = sender.send_request(http::Request::post(format!("http://{addr}{STREAM_PATH}")).body(body)?).await?;
    let mut reader = LineReader::new(rsp.into_body(), MAX_MESSAGE_BYTES);
    while let Some(message) = reader.next::<ControlMessage>().await? {
        let ControlMessage::Config { version, nonce, config, .. } = message else { continue };
        // As a sidecar does: the whole model is built before the ACK.
        attache_config::Snapshot::try_from(*config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let now = Instant::now();
        tx.send(&SidecarMessage::Ack { version, nonce }).await?;
        if let Ok(mut a) = acks.lock() {
            a[i].push((version, now));
        }
    }
    Ok(())
}

async fn wait_all(acks: &Acks, version: u64, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let done = acks.lock().map(|a| a.iter().all(|s| s.iter().any(|(v, _)| *v == version))).unwrap_or(false);
        if done {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not every stream ACKed version {version} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn wait_listening(addr: &str) -> anyhow::Result<()> {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the control plane did not listen on {addr}")
}

/// A mesh with one client-side sidecar kind and a 2-backend split whose weights change with `k`.
fn write_mesh(dir: &Path, k: usize) -> anyhow::Result<()> {
    let canary = 10 + k % 80;
    let text = format!(
        "services:\n  - name: reviews\n    hosts: [reviews]\n    routes:\n      - name: default\n        backends:\n          \
         - {{ name: v1, weight: {} }}\n          - {{ name: v2, weight: {canary} }}\nbackends:\n  - {{ name: v1, \
         endpoints: [\"127.0.0.1:9001\"] }}\n  - {{ name: v2, endpoints: [\"127.0.0.1:9002\"] }}\nsidecars:\n  - \
         service: web\n    listeners:\n      - {{ name: outbound, address: \"127.0.0.1:4140\", direction: outbound }}\n",
        100 - canary
    );
    let path = dir.join("mesh.yaml");
    attache_proxy::persist::write_atomically(&path, text.as_bytes(), false)?;
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
