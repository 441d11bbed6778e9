//! `attache-proxy`: run a sidecar from a YAML file, check a file, or run the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use attache_proxy::source::{file, ConfigStatus};
use attache_proxy::Proxy;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "attache-proxy", version, about = "Attaché sidecar proxy")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sidecar; the config file is watched and hot-reloaded.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate config files; prints every error with its field path, line and column.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Start a sidecar with stable and canary echo services on loopback and show the 90/10 split.
    Demo(attache_proxy::demo::DemoArgs),
    /// A sample app for the examples: answers every request with a JSON echo naming itself.
    Echo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// Name reported in the `x-backend` header and the body.
        #[arg(long, default_value = "echo")]
        name: String,
    },
    /// Create a dev CA and issue workload certificates with SPIFFE IDs (for running without a control plane).
    Certs(attache_proxy::certs::CertsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own view; its access log would drown it.
    let default_filter = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    init_tracing(cli.log_format, default_filter);
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(config))).unwrap_or_else(fail),
        Command::Echo { listen, name } => runtime().and_then(|rt| rt.block_on(echo(listen, name))).unwrap_or_else(fail),
        Command::Demo(args) => runtime()
            .and_then(|rt| rt.block_on(attache_proxy::demo::run(args)))
            .map(|()| ExitCode::SUCCESS)
            .unwrap_or_else(fail),
        Command::Certs(args) => attache_proxy::certs::run(args).map(|()| ExitCode::SUCCESS).unwrap_or_else(fail),
    }
}

async fn echo(listen: std::net::SocketAddr, name: String) -> anyhow::Result<ExitCode> {
    let addr = attache_proxy::demo::echo_server(&name, listen).await?;
    println!("echo service {name:?} on http://{addr}");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("attache-proxy: {error:#}");
    ExitCode::FAILURE
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for path in files {
        match file::load(path) {
            Ok(s) => {
                let routes: usize = s.services.iter().map(|svc| svc.routes.len()).sum();
                println!(
                    "{}: ok ({} listeners, {} services, {} routes, {} backends)",
                    path.display(),
                    s.listeners.len(),
                    s.services.len(),
                    routes,
                    s.backends.len()
                );
            }
            Err(e) => {
                ok = false;
                println!("{}: {} error{}", path.display(), e.errors.len(), if e.errors.len() == 1 { "" } else { "s" });
                for err in &e.errors {
                    println!("  {}: {err}", path.display());
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(path: PathBuf) -> anyhow::Result<ExitCode> {
    let snapshot = file::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let status = ConfigStatus::new(path.display().to_string(), &snapshot);
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = attache_proxy::metrics::Metrics::register(&mut registry);
    let (snapshots, _watch) = file::watch(path, snapshot, status.clone(), metrics.config.clone());
    let proxy = Proxy { snapshots: snapshots.clone(), status, registry, metrics }.start().await?;
    shutdown_signal().await;
    // The drain period of the config being served at the time of the signal.
    let grace = snapshots.borrow().limits.drain_timeout;
    tracing::info!(?grace, "shutting down: draining in-flight requests");
    if proxy.shutdown(grace).await {
        tracing::info!("drained; bye");
    } else {
        tracing::warn!("drain grace period ended with connections still open");
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
