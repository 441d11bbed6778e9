//! Observe: request metrics, the access log and the hop's trace span. Outermost, so it sees the final status
//! (synthesized errors included) and the latency of everything below. The trace context is continued here, first,
//! so that every log line of the request (in a `request` span), the exemplar and the access log carry its IDs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::meta::RequestMeta;
use crate::body::{Body, BodyTap};
use crate::metrics::{
    status_class_index, Dir, HexTraceId, HttpMetrics, LatencyLabels, Name, RequestLabels, TraceExemplar, STATUS_CLASSES,
};
use crate::trace::{Hop, Tracer};

#[derive(Clone, Debug)]
pub struct ObserveLayer {
    pub metrics: HttpMetrics,
    pub direction: Dir,
    pub tracer: Tracer,
}

#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    metrics: HttpMetrics,
    direction: Dir,
    tracer: Tracer,
}

/// One access-log line, written when the response body ends (or is dropped).
struct AccessLog {
    direction: Dir,
    method: http::Method,
    authority: String,
    path: String,
    version: http::Version,
    meta: Arc<RequestMeta>,
    hop: Arc<Hop>,
    status: u16,
    /// The reason of an error the proxy answered with (`x-attache-error`).
    error: Option<String>,
    started: Instant,
    bytes: u64,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, metrics: self.metrics.clone(), direction: self.direction, tracer: self.tracer.clone() }
    }
}

impl<S> tower::Service<Request<Body>> for Observe<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let hop = Arc::new(Hop::start(&self.tracer, self.direction, req.headers_mut()));
        let meta = RequestMeta::ensure(req.extensions_mut()).clone();
        let _ = meta.hop.set(hop.clone());
        let span = tracing::info_span!("request", trace_id = %hop.trace_id(), span_id = %hop.span_id());
        // The access log line and the span are the only readers of what follows; with both off, nothing is kept.
        let logged = tracing::enabled!(target: "attache::access", tracing::Level::INFO) || hop.recording();
        let (method, version) = (req.method().clone(), req.version());
        let (authority, path) = if logged {
            (super::authority_of(&req).unwrap_or_default().to_owned(), req.uri().path().to_owned())
        } else {
            (String::new(), String::new())
        };
        let (metrics, direction) = (self.metrics.clone(), self.direction);
        let fut = span.in_scope(|| self.inner.call(req));
        let observed = async move {
            let rsp = fut.await?;
            let elapsed = started.elapsed();
            // Only a sampled trace is worth linking to: an unsampled one is in no backend.
            let exemplar = hop.out.sampled.then(|| TraceExemplar { trace_id: HexTraceId(hop.trace_id().0) });
            record(&metrics, direction, &meta, rsp.status(), elapsed.as_secs_f64(), exemplar);
            if !logged {
                return Ok(rsp);
            }
            let error = rsp.headers().get(super::rescue::ERROR_HEADER).and_then(|v| v.to_str().ok());
            let log = AccessLog {
                direction,
                method,
                authority,
                path,
                version,
                meta,
                hop,
                status: rsp.status().as_u16(),
                error: error.map(str::to_owned),
                started,
                bytes: 0,
            };
            Ok(rsp.map(|b| b.tapped(Box::new(log))))
        };
        // With request logs filtered out, the span would only cost.
        if span.is_disabled() {
            Box::pin(observed)
        } else {
            Box::pin(observed.instrument(span))
        }
    }
}

/// Counts the request and its latency: through the route's series slots, filled from the families on the route's
/// first request of each kind; a request that matched no route looks its series up.
fn record(
    metrics: &HttpMetrics,
    direction: Dir,
    meta: &RequestMeta,
    status: http::StatusCode,
    secs: f64,
    exemplar: Option<TraceExemplar>,
) {
    let class = status_class_index(status);
    let route = meta.route();
    let labels = || {
        let name = |v: Option<&Arc<str>>| Name(v.cloned().unwrap_or_else(|| Arc::from("")));
        let (service, route_name) = (name(route.map(|r| &r.service)), name(route.map(|r| &r.name)));
        LatencyLabels { direction, service, route: route_name, backend: name(meta.backend()) }
    };
    let requests = |l: LatencyLabels| {
        let LatencyLabels { direction, service, route, backend } = l;
        let status_class = STATUS_CLASSES.get(class).copied().unwrap_or("5xx");
        metrics.requests.get_or_create(&RequestLabels { direction, service, route, backend, status_class }).clone()
    };
    let duration = |l: LatencyLabels| metrics.duration.get_or_create(&l).clone();
    match route.and_then(|r| r.series(direction, meta.backend_index())) {
        Some(series) => {
            if let Some(counter) = series.requests(class, || requests(labels())) {
                counter.inc();
            }
            series.duration(|| duration(labels())).observe(secs, exemplar, None);
        }
        None => {
            requests(labels()).inc();
            duration(labels()).observe(secs, exemplar, None);
        }
    }
}

impl BodyTap for AccessLog {
    fn data(&mut self, len: usize) {
        self.bytes += len as u64;
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let route = self.meta.route();
        let backend = self.meta.backend();
        tracing::info!(
            target: "attache::access",
            direction = self.direction.as_str(),
            method = %self.method,
            authority = %self.authority,
            path = %self.path,
            service = route.map_or("", |r| &*r.service),
            route = route.map_or("", |r| &*r.name),
            backend = backend.map_or("", |b| &**b),
            fault = self.meta.fault.get().copied().unwrap_or(""),
            attempts = self.meta.attempts.load(std::sync::atomic::Ordering::Relaxed),
            status = self.status,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            bytes = self.bytes,
            trace_id = %self.hop.trace_id(),
            span_id = %self.hop.span_id(),
            request_id = self.hop.request_id.to_str().unwrap_or(""),
        );
        self.export_span(route.map(|r| &*r.route), backend.map(|b| &**b));
    }
}

impl AccessLog {
    /// The hop's server span, OpenTelemetry HTTP semantic conventions first, `attache.*` for the rest.
    fn export_span(&self, route: Option<&attache_config::model::Route>, backend: Option<&str>) {
        let name = match route {
            Some(r) => format!("{} {}", self.method, r.name),
            None => self.method.to_string(),
        };
        let Some(mut span) = self.hop.span(name) else { return };
        span.str("http.request.method", self.method.as_str());
        span.str("url.path", self.path.as_str());
        span.str("url.scheme", "http");
        span.str("server.address", self.authority.split(':').next().unwrap_or_default());
        span.str("network.protocol.version", protocol_version(self.version));
        span.int("http.response.status_code", i64::from(self.status));
        span.str("attache.direction", self.direction.as_str());
        span.str("attache.request_id", self.hop.request_id.to_str().unwrap_or(""));
        span.int("http.response.body.size", i64::try_from(self.bytes).unwrap_or(i64::MAX));
        if let Some(r) = route {
            span.str("http.route", &*r.name);
            span.str("attache.service", &*r.service);
            if self.direction == Dir::Outbound {
                span.str("peer.service", &*r.service);
            }
        }
        if let Some(b) = backend {
            span.str("attache.backend", b);
        }
        let attempts = self.meta.attempts.load(std::sync::atomic::Ordering::Relaxed);
        if attempts > 1 {
            span.int("http.request.resend_count", i64::from(attempts - 1));
        }
        if let Some(e) = &self.error {
            span.str("attache.error", e.as_str());
        }
        if self.status >= 500 {
            span.str("error.type", self.status.to_string());
            span.error = Some(self.error.clone().unwrap_or_else(|| format!("HTTP {}", self.status)));
        }
        self.hop.submit(span);
    }
}

pub fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}
