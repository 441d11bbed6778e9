//! What each of our binaries sets up the same way (`attache-proxy`, `attache`): logging, the runtime, the
//! shutdown signal.

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` or else `default_filter`.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The runtime: `ATTACHE_WORKERS` threads (default: the cores this process may run on, which counts CPU affinity
/// and cgroup quotas). One worker gets tokio's single-threaded scheduler, as a one-core sidecar should: no
/// cross-thread queues or atomics per wake-up (BENCHMARKS.md has the A/B).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = workers(std::env::var("ATTACHE_WORKERS").ok().as_deref())?;
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    Ok(builder.enable_all().build()?)
}

fn workers(setting: Option<&str>) -> anyhow::Result<usize> {
    match setting.map(str::trim) {
        None | Some("") => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Ok(n),
            _ => anyhow::bail!("ATTACHE_WORKERS={s:?}: expected a number of threads from 1 to 1024"),
        },
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::workers;

    #[test]
    fn workers_default_to_the_cores_and_reject_nonsense() {
        assert!(workers(None).unwrap() >= 1);
        assert!(workers(Some("")).unwrap() >= 1);
        assert_eq!(workers(Some(" 2 ")).unwrap(), 2);
        for bad in ["0", "-1", "many", "100000"] {
            let err = workers(Some(bad)).unwrap_err().to_string();
            assert!(err.contains("ATTACHE_WORKERS"), "{err}");
        }
    }
}
