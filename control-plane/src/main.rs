//! `attache`: run the control plane, check a mesh directory, see which sidecar runs which version, shift canary
//! traffic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use attache_control_plane::{cli, ControlPlane};
use attache_proxy::process::{init_tracing, runtime, shutdown_signal, LogFormat};
use clap::{Parser, Subcommand};

/// Where the CLI finds the control plane unless told (`--control-plane` or `ATTACHE_CONTROL_PLANE`).
const DEFAULT_ADDR: &str = "127.0.0.1:7070";

#[derive(Parser)]
#[command(name = "attache", version, about = "Attaché control plane and mesh CLI")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the mesh found in a directory of YAML to every sidecar; the directory is watched.
    ControlPlane {
        #[arg(long)]
        config_dir: PathBuf,
        /// Address of the API (sidecar streams, status, canary).
        #[arg(long, default_value = DEFAULT_ADDR)]
        listen: SocketAddr,
        /// Versions, canary weights and the last good mesh (default: <config-dir>/.attache-state).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Be the mesh CA (ca.pem, ca-key.pem from `attache ca init`) and serve the API over mTLS.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// A file holding the token sidecars present for their first certificate.
        #[arg(long, requires = "ca_dir")]
        bootstrap_token_file: Option<PathBuf>,
        /// Identities allowed to use status and canary (default: spiffe://<trust-domain>/ns/attache/sa/admin).
        #[arg(long = "admin", requires = "ca_dir")]
        admins: Vec<String>,
        /// How long workload certificates live (sidecars renew them at two thirds), e.g. `24h`, `30m`.
        #[arg(long, default_value = "24h", value_parser = lifetime)]
        certificate_lifetime: std::time::Duration,
        /// What the admission webhook (`POST /inject`) injects.
        #[command(flatten)]
        inject: attache_control_plane::inject::InjectOptions,
    },
    /// The mesh CA: `ca init --dir D --trust-domain TD`, `ca issue --ca-dir D --spiffe-id ID --out DIR`.
    Ca(attache_proxy::certs::CertsArgs),
    /// Validate a mesh directory: every error with its file, field path, line and column.
    Check { dir: PathBuf },
    /// Every sidecar, the version it runs, whether it ACKed or NACKed the latest, when it was last seen.
    Status {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A whole mesh on loopback: the control plane, two sidecars, stable and canary services, traffic, a live view.
    Demo(attache_control_plane::demo::DemoArgs),
    /// Add the sidecar to every workload in Kubernetes YAML (a file, or `-` for stdin); writes the YAML to stdout.
    Inject {
        /// The manifests (multi-document YAML), or `-`.
        #[arg(short = 'f', long = "filename", default_value = "-")]
        file: PathBuf,
        #[command(flatten)]
        options: attache_control_plane::inject::InjectOptions,
    },
    /// Canary traffic: `canary set reviews reviews-v2=25 reviews-v1=75`, `canary status reviews`.
    Canary {
        #[command(subcommand)]
        command: CanaryCommand,
    },
}

#[derive(Subcommand)]
enum CanaryCommand {
    /// Set a service's split (persisted; pushed at once). Backends not named get no traffic.
    Set {
        service: String,
        /// <backend>=<weight>, e.g. reviews-v2=25
        #[arg(required = true)]
        weights: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show a service's split, route by route.
    Status {
        service: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Where the control plane is, and the certificate to call it with.
#[derive(clap::Args)]
struct ApiArgs {
    #[arg(long, env = "ATTACHE_CONTROL_PLANE", default_value = DEFAULT_ADDR)]
    control_plane: String,
    /// A directory with cert.pem, key.pem and bundle.pem of an admin identity: call the API over mTLS.
    #[arg(long, env = "ATTACHE_TLS_DIR")]
    tls_dir: Option<PathBuf>,
}

impl ApiArgs {
    fn api(&self) -> cli::Api {
        cli::Api { addr: self.control_plane.clone(), tls_dir: self.tls_dir.clone() }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A control plane holds a stream per sidecar, and a restart has them all reconnect at once: its descriptor table
    // is sized while the process has one thread, as the sidecar's is (`attache_proxy::fdtable`).
    let serving = matches!(cli.command, Command::ControlPlane { .. } | Command::Demo(_));
    let fds = serving.then(attache_proxy::fdtable::prepare);
    let default_filter = if matches!(cli.command, Command::ControlPlane { .. }) { "info" } else { "warn" };
    init_tracing(cli.log_format, default_filter);
    if let Some(fds) = fds {
        fds.log();
    }
    let result = match cli.command {
        Command::ControlPlane {
            config_dir,
            listen,
            state_dir,
            ca_dir,
            bootstrap_token_file,
            admins,
            certificate_lifetime,
            inject,
        } => ca_config(ca_dir, bootstrap_token_file, admins, certificate_lifetime).and_then(|ca| {
            runtime().and_then(|rt| rt.block_on(serve(ControlPlane { config_dir, state_dir, listen, ca, inject })))
        }),
        Command::Ca(args) => attache_proxy::certs::run(args).map(|()| ExitCode::SUCCESS),
        Command::Inject { file, options } => {
            attache_control_plane::inject::run(&file, &options).map(|()| ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            runtime().and_then(|rt| rt.block_on(attache_control_plane::demo::run(args))).map(|()| ExitCode::SUCCESS)
        }
        Command::Check { dir } => {
            let (ok, text) = cli::check(&dir);
            print!("{text}");
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Status { api } => print(runtime().and_then(|rt| rt.block_on(cli::status(&api.api())))),
        Command::Canary { command: CanaryCommand::Set { service, weights, api } } => {
            print(runtime().and_then(|rt| rt.block_on(cli::canary_set(&api.api(), &service, &weights))))
        }
        Command::Canary { command: CanaryCommand::Status { service, api } } => {
            print(runtime().and_then(|rt| rt.block_on(cli::canary_status(&api.api(), &service))))
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("attache: {error:#}");
        ExitCode::FAILURE
    })
}

async fn serve(cp: ControlPlane) -> anyhow::Result<ExitCode> {
    let handle = cp.start().await?;
    println!("control plane on {}", handle.addr());
    shutdown_signal().await;
    Ok(ExitCode::SUCCESS)
}

fn ca_config(
    dir: Option<PathBuf>,
    token_file: Option<PathBuf>,
    admins: Vec<String>,
    lifetime: std::time::Duration,
) -> anyhow::Result<Option<attache_control_plane::ca::CaConfig>> {
    let Some(dir) = dir else { return Ok(None) };
    let bootstrap_token = match token_file {
        Some(path) => {
            let token =
                std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let token = token.trim().to_owned();
            anyhow::ensure!(
                token.len() >= 16,
                "{}: the bootstrap token must be at least 16 characters",
                path.display()
            );
            Some(token)
        }
        None => None,
    };
    Ok(Some(attache_control_plane::ca::CaConfig { dir, bootstrap_token, admins, lifetime }))
}

/// A certificate lifetime: a duration of at least a minute.
fn lifetime(text: &str) -> Result<std::time::Duration, String> {
    let d = attache_config::duration::parse(text)?;
    if d < std::time::Duration::from_secs(60) {
        return Err("at least 1m".to_owned());
    }
    Ok(d)
}

fn print(text: anyhow::Result<String>) -> anyhow::Result<ExitCode> {
    print!("{}", text?);
    Ok(ExitCode::SUCCESS)
}
