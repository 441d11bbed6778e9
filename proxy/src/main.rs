//! `attache-proxy`: run a sidecar from a YAML file, check a file, or run the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use attache_proxy::process::{init_tracing, runtime, shutdown_signal, LogFormat};
use attache_proxy::source::{file, ConfigStatus};
use attache_proxy::Proxy;
use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: a request allocates ~25 times, and glibc's malloc and free were ~14% of its
/// instructions (BENCHMARKS.md, allocator).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "attache-proxy", version, about = "Attaché sidecar proxy")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sidecar; the config file is watched and hot-reloaded.
    Run {
        /// A config file (watched and hot-reloaded).
        #[arg(long, short, required_unless_present = "control_plane", conflicts_with = "control_plane")]
        config: Option<PathBuf>,
        #[command(flatten)]
        control: ControlArgs,
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
    /// Install the iptables rules that send the pod's traffic through the sidecar (run once, with NET_ADMIN).
    Init(attache_proxy::init::InitArgs),
    /// Create a dev CA and issue workload certificates with SPIFFE IDs (for running without a control plane).
    Certs(attache_proxy::certs::CertsArgs),
}

/// Following a control plane instead of a file.
#[derive(clap::Args)]
struct ControlArgs {
    /// Control-plane addresses (`host:port`, comma-separated or repeated), tried in turn.
    #[arg(long, env = "ATTACHE_CONTROL_PLANE", value_delimiter = ',')]
    control_plane: Vec<String>,
    /// The service this sidecar runs next to.
    #[arg(long, env = "ATTACHE_SERVICE", requires = "control_plane")]
    service: Option<String>,
    /// This instance (default: the host name).
    #[arg(long, env = "ATTACHE_INSTANCE")]
    instance: Option<String>,
    #[arg(long, env = "ATTACHE_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Where the last good configuration (and the workload certificate, in `identity/`) is saved.
    #[arg(long, env = "ATTACHE_STATE_DIR", default_value = "/var/lib/attache")]
    state_dir: PathBuf,
    /// The mesh CA's certificate: talk to the control plane over mTLS, with a workload certificate it issues.
    #[arg(long, env = "ATTACHE_CONTROL_PLANE_CA")]
    control_plane_ca: Option<PathBuf>,
    /// A file holding the bootstrap token for the first certificate request.
    #[arg(long, env = "ATTACHE_BOOTSTRAP_TOKEN_FILE", requires = "control_plane_ca")]
    bootstrap_token_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that serve, while the process still has one thread: growing the descriptor table later stalls
    // the runtime (`fdtable`).
    let serving = matches!(cli.command, Command::Run { .. } | Command::Echo { .. } | Command::Demo(_));
    let fds = serving.then(attache_proxy::fdtable::prepare);
    // The demo prints its own view; its access log would drown it.
    let default_filter = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    init_tracing(cli.log_format, default_filter);
    if let Some(fds) = fds {
        fds.log();
    }
    match cli.command {
        Command::Check { files } => check(&files),
        Command::Run { config, control } => {
            runtime().and_then(|rt| rt.block_on(run(config, control))).unwrap_or_else(fail)
        }
        Command::Echo { listen, name } => runtime().and_then(|rt| rt.block_on(echo(listen, name))).unwrap_or_else(fail),
        Command::Demo(args) => runtime()
            .and_then(|rt| rt.block_on(attache_proxy::demo::run(args)))
            .map(|()| ExitCode::SUCCESS)
            .unwrap_or_else(fail),
        Command::Init(args) => attache_proxy::init::run(args).map(|()| ExitCode::SUCCESS).unwrap_or_else(fail),
        Command::Certs(args) => attache_proxy::certs::run(args).map(|()| ExitCode::SUCCESS).unwrap_or_else(fail),
    }
}

async fn echo(listen: std::net::SocketAddr, name: String) -> anyhow::Result<ExitCode> {
    let addr = attache_proxy::demo::echo_server(&name, listen).await?;
    println!("echo service {name:?} on http://{addr}");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

fn control_source(args: ControlArgs) -> anyhow::Result<attache_proxy::source::control::ControlSource> {
    let service = args
        .service
        .ok_or_else(|| anyhow::anyhow!("--service (or ATTACHE_SERVICE) is required with --control-plane"))?;
    let instance = match args.instance {
        Some(i) => i,
        None => std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| format!("{service}-{}", std::process::id())),
    };
    let node = attache_config::wire::Node { service, instance, namespace: args.namespace };
    let token = match &args.bootstrap_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let identity = args.control_plane_ca.map(|ca_bundle| attache_proxy::source::enrol::Enrolment {
        addrs: args.control_plane.clone(),
        node: node.clone(),
        ca_bundle,
        token,
        dir: args.state_dir.join("identity"),
    });
    let (addrs, state_dir) = (args.control_plane, args.state_dir);
    Ok(attache_proxy::source::control::ControlSource { addrs, node, state_dir, identity })
}

fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("attache-proxy: {error:#}");
    ExitCode::FAILURE
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

async fn run(config: Option<PathBuf>, control: ControlArgs) -> anyhow::Result<ExitCode> {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = attache_proxy::metrics::Metrics::register(&mut registry);
    let (snapshots, status, _source) = match config {
        Some(path) => {
            let snapshot = file::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let status = ConfigStatus::new(path.display().to_string(), &snapshot);
            let (snapshots, task) = file::watch(path, snapshot, status.clone(), metrics.config.clone());
            (snapshots, status, task)
        }
        None => {
            let source = control_source(control)?;
            let status = ConfigStatus::named(format!("control plane {}", source.addrs.join(",")));
            let (snapshots, task) =
                source.start(status.clone(), metrics.config.clone(), metrics.control.clone()).await?;
            (snapshots, status, task)
        }
    };
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
