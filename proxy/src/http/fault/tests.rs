//! Fault-injection tests, on paused tokio time.

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
use crate::http::stage::StageLayer;

fn route(fault: Fault) -> Arc<Route> {
    Arc::new(Route { fault: Some(fault), ..crate::http::route::test_route() })
}

fn delay(percent: u32, ms: u64) -> Option<FaultDelay> {
    Some(FaultDelay { percent, duration: Duration::from_millis(ms) })
}

fn abort(percent: u32, kind: AbortKind) -> Option<FaultAbort> {
    Some(FaultAbort { percent, kind })
}

/// A request routed to `route`, with a `RequestMeta` to read the recorded fault from.
fn request(route: &Arc<Route>, headers: &[(&str, &str)]) -> (Request<Body>, Arc<RequestMeta>) {
    let mut req = Request::new(Body::empty());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        req.headers_mut().insert(name, HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")));
    }
    RequestMeta::insert_for_test(&mut req, None, Some(Target::for_test(route.clone())));
    let meta = RequestMeta::of(&req).cloned().unwrap_or_else(|| panic!("no meta"));
    (req, meta)
}

/// The stage over a service that counts its calls and answers 200.
fn stage(
    stage: FaultInjection,
) -> (impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone, Arc<AtomicUsize>)
{
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
async fn a_delayed_request_reaches_the_service_only_when_its_delay_ends() {
    let (mut svc, calls) = stage(FaultInjection::new(FaultMetrics::default()));
    let r = route(Fault { delay: delay(100, 250), ..Fault::default() });
    let (req, _) = request(&r, &[]);
    let mut fut = std::pin::pin!(svc.ready().await.unwrap_or_else(|e| panic!("{e}")).call(req));
    let early = tokio::time::timeout(Duration::from_millis(200), fut.as_mut()).await;
    assert!(early.is_err(), "answered before the delay ended");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the upstream was called during the delay");
    let rsp = fut.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_abort_never_calls_the_service() {
    let metrics = FaultMetrics::default();
    let (svc, calls) = stage(FaultInjection::new(metrics.clone()));
    let r = route(Fault { abort: abort(100, AbortKind::Status(StatusCode::SERVICE_UNAVAILABLE)), ..Fault::default() });
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
    let r = route(Fault { abort: abort(30, AbortKind::Status(StatusCode::SERVICE_UNAVAILABLE)), ..Fault::default() });
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
