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
    },
    /// Validate a mesh directory: every error with its file, field path, line and column.
    Check { dir: PathBuf },
    /// Every sidecar, the version it runs, whether it ACKed or NACKed the latest, when it was last seen.
    Status {
        #[arg(long, env = "ATTACHE_CONTROL_PLANE", default_value = DEFAULT_ADDR)]
        control_plane: String,
    },
    /// A whole mesh on loopback: the control plane, two sidecars, stable and canary services, traffic, a live view.
    Demo(attache_control_plane::demo::DemoArgs),
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
        #[arg(long, env = "ATTACHE_CONTROL_PLANE", default_value = DEFAULT_ADDR)]
        control_plane: String,
    },
    /// Show a service's split, route by route.
    Status {
        service: String,
        #[arg(long, env = "ATTACHE_CONTROL_PLANE", default_value = DEFAULT_ADDR)]
        control_plane: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = if matches!(cli.command, Command::ControlPlane { .. }) { "info" } else { "warn" };
    init_tracing(cli.log_format, default_filter);
    let result = match cli.command {
        Command::ControlPlane { config_dir, listen, state_dir } => {
            runtime().and_then(|rt| rt.block_on(serve(ControlPlane { config_dir, state_dir, listen })))
        }
        Command::Demo(args) => {
            runtime().and_then(|rt| rt.block_on(attache_control_plane::demo::run(args))).map(|()| ExitCode::SUCCESS)
        }
        Command::Check { dir } => {
            let (ok, text) = cli::check(&dir);
            print!("{text}");
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Status { control_plane } => print(runtime().and_then(|rt| rt.block_on(cli::status(&control_plane)))),
        Command::Canary { command: CanaryCommand::Set { service, weights, control_plane } } => {
            print(runtime().and_then(|rt| rt.block_on(cli::canary_set(&control_plane, &service, &weights))))
        }
        Command::Canary { command: CanaryCommand::Status { service, control_plane } } => {
            print(runtime().and_then(|rt| rt.block_on(cli::canary_status(&control_plane, &service))))
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

fn print(text: anyhow::Result<String>) -> anyhow::Result<ExitCode> {
    print!("{}", text?);
    Ok(ExitCode::SUCCESS)
}
