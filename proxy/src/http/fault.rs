//! Fault injection: the route's `fault`, for chaos testing. Some requests wait `delay.duration` before going on,
//! some are answered at once with an HTTP status or a gRPC status and never reach the upstream.
//!
//! - `only_if`: only requests matching that header get faults (as a route's header match).
//! - Both dice are rolled when the request arrives; with both faults, the request waits and then gets the abort.
//!   The delay sits above the route timeout, so, as in Envoy and Istio, it does not eat into the route's deadline.
//! - A delayed response carries `x-attache-fault: delay`, an aborted one `x-attache-fault: abort` (`delay+abort`
//!   when both fired); the same word goes to `RequestMeta::fault` for the access log.
//! - A gRPC abort is HTTP 200 with `grpc-status` in the headers and no body: the trailers-only form.
//! - Metrics: `attache_faults_injected_total{service, route, kind = delay|abort}`.

use std::sync::Arc;
use std::time::Duration;

use attache_config::model::{AbortKind, HeaderMatch, Route, ValueMatch};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::meta::RequestMeta;
use super::route::Target;
use super::stage::{Middleware, StageFuture};
use crate::body::Body;
use crate::errors::BoxError;
use crate::metrics::Name;

pub const FAULT_HEADER: &str = "x-attache-fault";

/// A roll of a hundred-sided die, in `0..100`: a fault of `p` percent fires when the roll is below `p`. 0% and
/// 100% faults never roll.
pub type Dice = Arc<dyn Fn() -> u32 + Send + Sync>;

/// The fault-injection stage. Reads the matched route (`Target`); a route without `fault` passes through.
#[derive(Clone)]
pub struct FaultInjection {
    metrics: FaultMetrics,
    dice: Dice,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FaultLabels {
    pub service: Name,
    pub route: Name,
    pub kind: &'static str,
}

/// `attache_faults_injected_total`.
#[derive(Clone, Debug, Default)]
pub struct FaultMetrics {
    pub injected: Family<FaultLabels, Counter>,
}

/// The faults that fired for one request.
#[derive(Clone, Copy, Debug)]
struct Injected {
    delay: Option<Duration>,
    abort: Option<AbortKind>,
    /// `delay`, `abort` or `delay+abort`.
    kind: &'static str,
}

impl FaultInjection {
    /// Rolls with the thread-local generator.
    pub fn new(metrics: FaultMetrics) -> Self {
        Self::with_dice(metrics, || rand::random_range(0..100))
    }

    /// Rolls with `dice` (tests: a seeded generator).
    pub fn with_dice(metrics: FaultMetrics, dice: impl Fn() -> u32 + Send + Sync + 'static) -> Self {
        Self { metrics, dice: Arc::new(dice) }
    }

    fn roll(&self, route: &Route, headers: &HeaderMap) -> Option<Injected> {
        let fault = route.fault.as_ref()?;
        if let Some(only_if) = &fault.only_if {
            if !header_matches(only_if, headers) {
                return None;
            }
        }
        let delay = fault.delay.filter(|d| self.fires(d.percent)).map(|d| d.duration);
        let abort = fault.abort.filter(|a| self.fires(a.percent)).map(|a| a.kind);
        let kind = match (delay.is_some(), abort.is_some()) {
            (false, false) => return None,
            (true, false) => "delay",
            (false, true) => "abort",
            (true, true) => "delay+abort",
        };
        if delay.is_some() {
            self.metrics.record(route, "delay");
        }
        if abort.is_some() {
            self.metrics.record(route, "abort");
        }
        Some(Injected { delay, abort, kind })
    }

    fn fires(&self, percent: u32) -> bool {
        percent >= 100 || (percent > 0 && (self.dice)() < percent)
    }
}

impl std::fmt::Debug for FaultInjection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjection").field("metrics", &self.metrics).finish_non_exhaustive()
    }
}

impl Middleware for FaultInjection {
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let injected = Target::of(&req).and_then(|t| self.roll(&t.route, req.headers()));
        let Some(Injected { delay, abort, kind }) = injected else { return StageFuture::next(next.call(req)) };
        if let Some(meta) = RequestMeta::of(&req) {
            let _ = meta.fault.set(kind);
        }
        tracing::debug!(fault = kind, "fault injected");
        match abort {
            Some(abort) => StageFuture::boxed(async move {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                Ok(abort_response(abort, kind))
            }),
            None => {
                // The rest of the pipeline is called when the delay ends: nothing is sent before.
                let mut next = next.clone();
                let delay = delay.unwrap_or_default();
                StageFuture::boxed(async move {
                    tokio::time::sleep(delay).await;
                    let mut rsp = next.call(req).await?;
                    rsp.headers_mut().insert(FAULT_HEADER, HeaderValue::from_static(kind));
                    Ok(rsp)
                })
            }
        }
    }
}

impl FaultMetrics {
    /// Registers `faults_injected` (a counter: `<prefix>_faults_injected_total`) in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "faults_injected",
            "Faults injected by route and kind (delay, abort)",
            metrics.injected.clone(),
        );
        metrics
    }

    fn record(&self, route: &Route, kind: &'static str) {
        let labels = FaultLabels { service: Name::from(&route.service), route: Name::from(&route.name), kind };
        self.injected.get_or_create(&labels).inc();
    }
}

/// The answer instead of the upstream's: the status with a short body, or a gRPC trailers-only response.
fn abort_response(abort: AbortKind, kind: &'static str) -> Response<Body> {
    let mut rsp = match abort {
        AbortKind::Status(status) => {
            let mut rsp = Response::new(Body::full("fault injected\n"));
            *rsp.status_mut() = status;
            rsp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            rsp
        }
        AbortKind::GrpcStatus(code) => {
            let mut rsp = Response::new(Body::empty());
            *rsp.status_mut() = StatusCode::OK;
            let headers = rsp.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert("grpc-status", HeaderValue::from(code));
            headers.insert("grpc-message", HeaderValue::from_static("fault injected"));
            rsp
        }
    };
    rsp.headers_mut().insert(FAULT_HEADER, HeaderValue::from_static(kind));
    rsp
}

/// As a route's header match: `present` needs the header, other matches any of its values.
fn header_matches(m: &HeaderMatch, headers: &HeaderMap) -> bool {
    match &m.value {
        ValueMatch::Present => headers.contains_key(&m.name),
        value => headers.get_all(&m.name).iter().filter_map(|v| v.to_str().ok()).any(|v| value.matches(v)),
    }
}

#[cfg(test)]
mod tests;
