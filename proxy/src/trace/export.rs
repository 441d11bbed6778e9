//! Span export: one task per configured collector, fed through a bounded queue. Requests only ever `try_send`; a
//! full queue, a failed or slow collector cost dropped spans (counted), never request latency.

use std::sync::Arc;

use attache_config::model::{Exporter, ExporterKind};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::span::SpanRecord;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ExporterLabels {
    pub exporter: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DropLabels {
    pub exporter: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct ExportMetrics {
    pub exported: Family<ExporterLabels, Counter>,
    pub dropped: Family<DropLabels, Counter>,
}

impl ExportMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self::default();
        reg.register("trace_spans_exported", "Spans a collector accepted", m.exported.clone());
        reg.register(
            "trace_spans_dropped",
            "Spans not exported: the queue was full (queue_full) or the collector failed (export_failed)",
            m.dropped.clone(),
        );
        m
    }

    fn drop_spans(&self, exporter: ExporterKind, reason: &'static str, n: usize) {
        let labels = DropLabels { exporter: exporter.as_str(), reason };
        self.dropped.get_or_create(&labels).inc_by(n as u64);
    }
}

/// The sending side of one exporter; dropping it lets the task send what it holds and end.
#[derive(Clone, Debug)]
pub struct ExporterHandle {
    pub config: Exporter,
    tx: mpsc::Sender<Arc<SpanRecord>>,
    metrics: ExportMetrics,
}

impl ExporterHandle {
    /// Starts the exporter's task; its handle goes to `tasks`, so that shutdown can wait for the last batch.
    pub fn spawn(config: Exporter, metrics: ExportMetrics, tasks: &mut Vec<tokio::task::JoinHandle<()>>) -> Self {
        let (tx, rx) = mpsc::channel(config.queue);
        tasks.retain(|t| !t.is_finished());
        tasks.push(tokio::spawn(run(config.clone(), rx, metrics.clone())));
        Self { config, tx, metrics }
    }

    /// Queues a span, or counts it dropped when the queue is full.
    pub fn submit(&self, span: Arc<SpanRecord>) {
        if self.tx.try_send(span).is_err() {
            self.metrics.drop_spans(self.config.kind, "queue_full", 1);
        }
    }
}

async fn run(config: Exporter, mut rx: mpsc::Receiver<Arc<SpanRecord>>, metrics: ExportMetrics) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .pool_max_idle_per_host(1)
        .build_http();
    let uri: http::Uri = match format!("http://{}{}", config.authority, config.path).parse() {
        Ok(uri) => uri,
        Err(error) => {
            tracing::error!(exporter = config.kind.as_str(), %error, "span exporter has an invalid endpoint");
            return;
        }
    };
    let mut logged_failure = false;
    // After a failed export, batches are dropped unencoded until this instant: a dead collector costs a counter.
    let mut resting_until: Option<Instant> = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        let deadline = Instant::now() + config.flush_interval;
        while batch.len() < config.max_batch {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let n = batch.len();
        if resting_until.is_some_and(|until| Instant::now() < until) {
            metrics.drop_spans(config.kind, "export_failed", n);
            continue;
        }
        match send(&client, &uri, &config, batch).await {
            Ok(()) => {
                metrics.exported.get_or_create(&ExporterLabels { exporter: config.kind.as_str() }).inc_by(n as u64);
                resting_until = None;
                if logged_failure {
                    tracing::info!(exporter = config.kind.as_str(), endpoint = %uri, "span export recovered");
                    logged_failure = false;
                }
            }
            Err(error) => {
                metrics.drop_spans(config.kind, "export_failed", n);
                resting_until = Some(Instant::now() + config.flush_interval.max(RETRY_AFTER_FAILURE));
                // Once per outage: a dead collector must not flood the log either.
                if !logged_failure {
                    tracing::warn!(exporter = config.kind.as_str(), endpoint = %uri, %error, spans = n, "span export failed; dropping spans until it recovers");
                    logged_failure = true;
                }
            }
        }
    }
}

/// How long a failed collector is left alone before the next batch is tried.
const RETRY_AFTER_FAILURE: std::time::Duration = std::time::Duration::from_secs(1);

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: &http::Uri,
    config: &Exporter,
    batch: Vec<Arc<SpanRecord>>,
) -> Result<(), String> {
    // Encoding a full batch takes milliseconds: off the workers that serve requests.
    let kind = config.kind;
    let body = tokio::task::spawn_blocking(move || match kind {
        ExporterKind::Otlp => super::encode::otlp(&batch),
        ExporterKind::Zipkin => super::encode::zipkin(&batch),
    })
    .await
    .map_err(|e| format!("encoding the batch: {e}"))?;
    let req = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let rsp = client.request(req).await.map_err(|e| format!("{e:#}"))?;
        let status = rsp.status();
        // Read (a bounded amount of) the answer so the connection can be used again.
        let _ = http_body_util::BodyExt::collect(http_body_util::Limited::new(rsp.into_body(), 64 * 1024)).await;
        Ok::<_, String>(status)
    };
    let status = tokio::time::timeout(config.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {:?}", config.timeout))??;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("collector answered {status}"))
    }
}
