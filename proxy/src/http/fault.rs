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
use super::stage::{Middleware, ResponseFuture};
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
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> ResponseFuture
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        let injected = req.extensions().get::<Target>().and_then(|t| self.roll(&t.route, req.headers()));
        let Some(Injected { delay, abort, kind }) = injected else { return Box::pin(next.call(req)) };
        if let Some(meta) = RequestMeta::of(&req) {
            let _ = meta.fault.set(kind);
        }
        tracing::debug!(fault = kind, "fault injected");
        match abort {
            Some(abort) => Box::pin(async move {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                Ok(abort_response(abort, kind))
            }),
            None => {
                // The stages below do their work when polled, so nothing is sent before the delay ends.
                let fut = next.call(req);
                let delay = delay.unwrap_or_default();
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    let mut rsp = fut.await?;
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
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use attache_config::model::{Fault, FaultAbort, FaultDelay};
    use http::HeaderName;
    use http_body::Body as _;
    use http_body_util::BodyExt;
    use rand::{Rng, SeedableRng};
    use tokio::time::Instant;
    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::dataplane::Dataplane;
    use crate::http::stage::StageLayer;

    fn route(fault: Fault) -> Arc<Route> {
        Arc::new(Route {
            service: Arc::from("web"),
            name: Arc::from("r"),
            matches: Vec::new(),
            filters: Default::default(),
            backends: Vec::new(),
            sticky: None,
            timeout: Duration::from_secs(30),
            retry: None,
            rate_limit: None,
            fault: Some(fault),
        })
    }

    fn delay(percent: u32, ms: u64) -> Option<FaultDelay> {
        Some(FaultDelay { percent, duration: Duration::from_millis(ms) })
    }

    fn abort(percent: u32, kind: AbortKind) -> Option<FaultAbort> {
        Some(FaultAbort { percent, kind })
    }

    /// A request routed to `route`, with a `RequestMeta` to read the recorded fault from.
    fn request(route: &Arc<Route>, headers: &[(&str, &str)]) -> (Request<Body>, Arc<RequestMeta>) {
        let snapshot = attache_config::load_str("{}").unwrap_or_else(|e| panic!("{e}"));
        let plane =
            Arc::new(Dataplane { snapshot: Arc::new(snapshot), backends: HashMap::new(), inbound: HashMap::new() });
        let mut req = Request::new(Body::empty());
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            req.headers_mut().insert(name, HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")));
        }
        let meta = Arc::new(RequestMeta::default());
        req.extensions_mut().insert(meta.clone());
        req.extensions_mut().insert(Target { plane, route: route.clone(), rewritten_path: None });
        (req, meta)
    }

    /// The stage over a service that counts its calls and answers 200.
    fn stage(
        stage: FaultInjection,
    ) -> (
        impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone,
        Arc<AtomicUsize>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let inner = tower::service_fn(move |_req: Request<Body>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(Response::new(Body::full("upstream"))) }
        });
        (StageLayer(stage).layer(inner), calls)
    }

    fn injected(metrics: &FaultMetrics, kind: &'static str) -> u64 {
        let labels = FaultLabels { service: Name(Arc::from("web")), route: Name(Arc::from("r")), kind };
        metrics.injected.get_or_create(&labels).get()
    }

    fn header<'a>(rsp: &'a Response<Body>, name: &str) -> Option<&'a str> {
        rsp.headers().get(name).and_then(|v| v.to_str().ok())
    }

    async fn body(rsp: Response<Body>) -> String {
        let bytes = rsp.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_delay_adds_exactly_its_duration() {
        let metrics = FaultMetrics::default();
        let (svc, calls) = stage(FaultInjection::new(metrics.clone()));
        let r = route(Fault { delay: delay(100, 250), ..Fault::default() });
        let (req, meta) = request(&r, &[]);
        let start = Instant::now();
        let rsp = svc.oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(header(&rsp, FAULT_HEADER), Some("delay"));
        assert_eq!(body(rsp).await, "upstream");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(meta.fault.get(), Some(&"delay"));
        assert_eq!((injected(&metrics, "delay"), injected(&metrics, "abort")), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_abort_never_calls_the_service() {
        let metrics = FaultMetrics::default();
        let (svc, calls) = stage(FaultInjection::new(metrics.clone()));
        let r =
            route(Fault { abort: abort(100, AbortKind::Status(StatusCode::SERVICE_UNAVAILABLE)), ..Fault::default() });
        for _ in 0..10 {
            let (req, meta) = request(&r, &[]);
            let rsp = svc.clone().oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(header(&rsp, FAULT_HEADER), Some("abort"));
            assert_eq!(body(rsp).await, "fault injected\n");
            assert_eq!(meta.fault.get(), Some(&"abort"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(injected(&metrics, "abort"), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_percent_never_injects() {
        let metrics = FaultMetrics::default();
        let dice = || -> u32 { panic!("a 0% fault rolled") };
        let (svc, calls) = stage(FaultInjection::with_dice(metrics.clone(), dice));
        let r = route(Fault {
            delay: delay(0, 1_000),
            abort: abort(0, AbortKind::Status(StatusCode::INTERNAL_SERVER_ERROR)),
            only_if: None,
        });
        let start = Instant::now();
        for _ in 0..1_000 {
            let (req, meta) = request(&r, &[]);
            let rsp = svc.clone().oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rsp.status(), StatusCode::OK);
            assert_eq!(header(&rsp, FAULT_HEADER), None);
            assert_eq!(meta.fault.get(), None);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 1_000);
        assert_eq!((injected(&metrics, "delay"), injected(&metrics, "abort")), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn header_gated_faults_only_hit_matching_requests() {
        let (svc, calls) = stage(FaultInjection::new(FaultMetrics::default()));
        let only_if = HeaderMatch { name: HeaderName::from_static("x-chaos"), value: ValueMatch::Exact("on".into()) };
        let r = route(Fault {
            abort: abort(100, AbortKind::Status(StatusCode::IM_A_TEAPOT)),
            only_if: Some(only_if),
            ..Fault::default()
        });
        let status = |headers: &'static [(&'static str, &'static str)]| {
            let svc = svc.clone();
            let (req, _) = request(&r, headers);
            async move { svc.oneshot(req).await.map(|r| r.status()).ok() }
        };
        assert_eq!(status(&[("x-chaos", "on")]).await, Some(StatusCode::IM_A_TEAPOT));
        assert_eq!(status(&[]).await, Some(StatusCode::OK));
        assert_eq!(status(&[("x-chaos", "off")]).await, Some(StatusCode::OK));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_grpc_abort_is_trailers_only() {
        let (svc, calls) = stage(FaultInjection::new(FaultMetrics::default()));
        let r = route(Fault { abort: abort(100, AbortKind::GrpcStatus(14)), ..Fault::default() });
        let (req, _) = request(&r, &[("content-type", "application/grpc")]);
        let rsp = svc.oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(header(&rsp, "content-type"), Some("application/grpc"));
        assert_eq!(header(&rsp, "grpc-status"), Some("14"));
        assert_eq!(header(&rsp, "grpc-message"), Some("fault injected"));
        assert_eq!(header(&rsp, FAULT_HEADER), Some("abort"));
        assert!(rsp.body().is_end_stream());
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_and_abort_wait_then_answer() {
        let metrics = FaultMetrics::default();
        let (svc, calls) = stage(FaultInjection::new(metrics.clone()));
        let r = route(Fault {
            delay: delay(100, 2_000),
            abort: abort(100, AbortKind::Status(StatusCode::BAD_GATEWAY)),
            only_if: None,
        });
        let (req, meta) = request(&r, &[]);
        let start = Instant::now();
        let rsp = svc.oneshot(req).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(header(&rsp, FAULT_HEADER), Some("delay+abort"));
        assert_eq!(meta.fault.get(), Some(&"delay+abort"));
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!((injected(&metrics, "delay"), injected(&metrics, "abort")), (1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn seeded_dice_fire_in_proportion() {
        let rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(7));
        let dice = move || rng.lock().map(|mut r| r.random_range(0..100)).unwrap_or(0);
        let metrics = FaultMetrics::default();
        let (svc, calls) = stage(FaultInjection::with_dice(metrics.clone(), dice));
        let r =
            route(Fault { abort: abort(30, AbortKind::Status(StatusCode::SERVICE_UNAVAILABLE)), ..Fault::default() });
        for _ in 0..10_000 {
            let (req, _) = request(&r, &[]);
            let _ = svc.clone().oneshot(req).await;
        }
        let aborted = injected(&metrics, "abort");
        assert!((2_800..=3_200).contains(&aborted), "aborted {aborted} of 10000");
        assert_eq!(calls.load(Ordering::SeqCst) as u64, 10_000 - aborted);
    }

    #[test]
    fn metrics_register_under_the_given_registry() {
        let mut registry = Registry::default();
        let metrics = FaultMetrics::register(registry.sub_registry_with_prefix("attache"));
        metrics.record(&route(Fault::default()), "delay");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains(r#"attache_faults_injected_total{service="web",route="r",kind="delay"} 1"#), "{text}");
    }
}
