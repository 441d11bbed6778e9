//! Rate-limit tests, on paused tokio time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use attache_config::model::{RateLimit as Policy, RateLimitKey, RateLimitQueue};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::dataplane::Dataplane;
use crate::http::meta::{Connection, Downstream, RequestMeta};
use crate::http::stage::StageLayer;
use attache_config::model::SpiffeId;

fn policy(per_second: u32, burst: u32, key: RateLimitKey) -> Policy {
    Policy { per_second, burst, key, max_keys: 10_000, queue: None }
}

fn queued(mut policy: Policy, max_wait: Duration, max_depth: usize) -> Policy {
    policy.queue = Some(RateLimitQueue { max_wait, max_depth });
    policy
}

fn route(service: &str, name: &str, rate_limit: Option<Policy>) -> Arc<Route> {
    Arc::new(Route {
        service: Arc::from(service),
        name: Arc::from(name),
        matches: Vec::new(),
        filters: Default::default(),
        backends: Vec::new(),
        sticky: None,
        timeout: Duration::from_secs(30),
        retry: None,
        rate_limit,
        fault: None,
        authorization: None,
    })
}

fn plane(inbound: &[Arc<Route>]) -> Arc<Dataplane> {
    let snapshot = attache_config::load_str("{}").unwrap_or_else(|e| panic!("{e}"));
    let inbound = inbound.iter().map(|r| (r.service.clone(), Route::clone(r))).collect();
    Arc::new(Dataplane::new(Arc::new(snapshot), HashMap::new(), inbound))
}

fn request(plane: &Arc<Dataplane>, route: &Arc<Route>) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    RequestMeta::insert_for_test(
        &mut req,
        None,
        Some(Target { plane: plane.clone(), ..Target::for_test(route.clone()) }),
    );
    req
}

fn with_header(value: &str) -> Request<()> {
    Request::builder().header("x-user", value).body(()).unwrap_or_else(|e| panic!("{e}"))
}

fn from_addr(addr: &str) -> Request<()> {
    from_peer(addr, None)
}

/// A request from `addr` on a connection whose mTLS client is `identity`.
fn from_peer(addr: &str, identity: Option<&str>) -> Request<()> {
    let mut req = Request::new(());
    let addr = addr.parse::<SocketAddr>().unwrap_or_else(|e| panic!("{e}"));
    let identity = identity.map(|id| SpiffeId::parse(id).unwrap_or_else(|e| panic!("{e}")));
    let conn = Arc::new(Connection { addr, original_dst: None, identity });
    RequestMeta::insert_for_test(&mut req, Some(Downstream { conn, verdict: None }), None);
    req
}

fn allowed<B>(limiter: &Arc<Limiter>, req: &Request<B>) -> bool {
    matches!(limiter.acquire(req), Decision::Allowed)
}

/// The stage over a service that counts its calls and answers 200.
fn stage(
    limiters: &RateLimiters,
    metrics: &RateLimitMetrics,
) -> (impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone, Arc<AtomicUsize>)
{
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let inner = tower::service_fn(move |_req: Request<Body>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(Response::new(Body::empty())) }
    });
    let layer = StageLayer(RateLimit::new(limiters.clone(), metrics.clone(), Dir::Outbound));
    (layer.layer(inner), calls)
}

fn decisions(metrics: &RateLimitMetrics, route: &Route, decision: &'static str) -> u64 {
    let labels = DecisionLabels {
        direction: Dir::Outbound,
        service: Name::from(&route.service),
        route: Name::from(&route.name),
        decision,
    };
    metrics.decisions.get_or_create(&labels).get()
}

#[tokio::test(start_paused = true)]
async fn admits_burst_at_once_then_per_second() {
    let limiter = Arc::new(Limiter::new(policy(10, 5, RateLimitKey::Global)));
    let req = Request::new(());
    assert_eq!((0..20).filter(|_| allowed(&limiter, &req)).count(), 5);
    let mut admitted = 0;
    for _ in 0..10_000 {
        tokio::time::advance(Duration::from_millis(1)).await;
        admitted += usize::from(allowed(&limiter, &req));
    }
    // 10 per second over 10 s: 100, within 5%.
    assert!((95..=105).contains(&admitted), "admitted {admitted}");
}

#[tokio::test(start_paused = true)]
async fn limited_reports_retry_after_and_reset() {
    let limiter = Arc::new(Limiter::new(policy(2, 2, RateLimitKey::Global)));
    let req = Request::new(());
    assert!(allowed(&limiter, &req) && allowed(&limiter, &req));
    let Decision::Limited(err) = limiter.acquire(&req) else { panic!("expected limited") };
    assert_eq!(
        err,
        RateLimited { retry_after: Duration::from_millis(500), limit: 2, remaining: 0, reset: Duration::from_secs(1) }
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(allowed(&limiter, &req));
    assert!(!allowed(&limiter, &req));
}

#[tokio::test(start_paused = true)]
async fn separate_keys_are_independent() {
    let by_ip = Arc::new(Limiter::new(policy(1, 1, RateLimitKey::ClientIp)));
    assert!(allowed(&by_ip, &from_addr("10.0.0.1:1000")));
    // Same IP, other port: same bucket. IPv4-mapped IPv6: same bucket.
    assert!(!allowed(&by_ip, &from_addr("10.0.0.1:2000")));
    assert!(!allowed(&by_ip, &from_addr("[::ffff:10.0.0.1]:3000")));
    assert!(allowed(&by_ip, &from_addr("10.0.0.2:1000")));
    // No client address: one bucket of its own.
    assert!(allowed(&by_ip, &Request::new(())));
    assert!(!allowed(&by_ip, &Request::new(())));

    let name = HeaderName::from_static("x-user");
    let by_header = Arc::new(Limiter::new(policy(1, 1, RateLimitKey::Header(name))));
    assert!(allowed(&by_header, &with_header("alice")));
    assert!(!allowed(&by_header, &with_header("alice")));
    assert!(allowed(&by_header, &with_header("bob")));
    // A missing header has its own bucket, distinct from the empty value's.
    assert!(allowed(&by_header, &Request::new(())));
    assert!(!allowed(&by_header, &Request::new(())));
    assert!(allowed(&by_header, &with_header("")));

    // By verified identity, whatever the address; every unauthenticated caller shares one bucket.
    let by_peer = Arc::new(Limiter::new(policy(1, 1, RateLimitKey::PeerIdentity)));
    let (a, b) = (Some("spiffe://mesh.local/ns/x/sa/a"), Some("spiffe://mesh.local/ns/x/sa/b"));
    assert!(allowed(&by_peer, &from_peer("10.0.0.1:1", a)));
    assert!(!allowed(&by_peer, &from_peer("10.0.0.2:1", a)));
    assert!(allowed(&by_peer, &from_peer("10.0.0.1:1", b)));
    assert!(allowed(&by_peer, &from_addr("10.0.0.1:1")));
    assert!(!allowed(&by_peer, &from_addr("10.0.0.2:1")));
}

#[tokio::test(start_paused = true)]
async fn buckets_stay_bounded_under_a_flood_of_keys() {
    let mut p = policy(1, 5, RateLimitKey::Header(HeaderName::from_static("x-user")));
    p.max_keys = 1_000;
    let limiter = Arc::new(Limiter::new(p));
    let heavy = with_header("heavy");
    while allowed(&limiter, &heavy) {}
    for i in 0..100_000 {
        assert!(allowed(&limiter, &with_header(&format!("user-{i}"))));
        if i % 1_000 == 0 {
            assert!(limiter.keys() <= 1_000, "{} buckets", limiter.keys());
        }
    }
    assert_eq!(limiter.keys(), 1_000);
    // The client that is being limited is the last to be evicted: the flood did not reset its bucket.
    assert!(!allowed(&limiter, &heavy));
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_waits_for_its_token() {
    let limiters = RateLimiters::new();
    let metrics = RateLimitMetrics::default();
    let (svc, calls) = stage(&limiters, &metrics);
    let r = route("web", "r", Some(queued(policy(1, 1, RateLimitKey::Global), Duration::from_secs(2), 10)));
    let plane = plane(&[]);

    let start = Instant::now();
    let first = svc.clone().oneshot(request(&plane, &r)).await;
    assert!(first.is_ok());
    assert_eq!(start.elapsed(), Duration::ZERO);
    let mut second = std::pin::pin!(svc.clone().oneshot(request(&plane, &r)));
    let early = tokio::time::timeout(Duration::from_millis(900), second.as_mut()).await;
    assert!(early.is_err(), "answered before its token");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the upstream was called while the request queued");
    assert_eq!(second.await.map(|r| r.status()).ok(), Some(StatusCode::OK));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(decisions(&metrics, &r, "allowed"), 1);
    assert_eq!(decisions(&metrics, &r, "queued"), 1);
    let limiter = limiters.get(Dir::Outbound, &r).unwrap_or_else(|| panic!("no limiter"));
    assert_eq!(limiter.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_or_a_long_wait_is_limited_at_once() {
    let limiter = Arc::new(Limiter::new(queued(policy(1, 1, RateLimitKey::Global), Duration::from_secs(5), 1)));
    let req = Request::new(());
    assert!(allowed(&limiter, &req));
    let Decision::Queued { until, place } = limiter.acquire(&req) else { panic!("expected queued") };
    assert_eq!(until, Instant::now() + Duration::from_secs(1));
    assert_eq!(limiter.waiting(), 1);
    // The wait (2 s) is within max_wait, but the queue is full.
    let Decision::Limited(err) = limiter.acquire(&req) else { panic!("expected limited") };
    assert_eq!(err.retry_after, Duration::from_secs(2));
    // A waiter that gives up frees its place.
    drop(place);
    assert_eq!(limiter.waiting(), 0);

    let short = Arc::new(Limiter::new(queued(policy(1, 1, RateLimitKey::Global), Duration::from_millis(500), 10)));
    assert!(allowed(&short, &req));
    assert!(matches!(short.acquire(&req), Decision::Limited(e) if e.retry_after == Duration::from_secs(1)));
    assert_eq!(short.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_stage_answers_a_limited_request_without_calling_the_service() {
    let limiters = RateLimiters::new();
    let metrics = RateLimitMetrics::default();
    let (svc, calls) = stage(&limiters, &metrics);
    let r = route("web", "r", Some(policy(1, 1, RateLimitKey::Global)));
    let plane = plane(&[]);
    assert!(svc.clone().oneshot(request(&plane, &r)).await.is_ok());
    let start = Instant::now();
    let err = match svc.clone().oneshot(request(&plane, &r)).await {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    };
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(RateLimited::find(&*err).map(|e| e.retry_after), Some(Duration::from_secs(1)));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(decisions(&metrics, &r, "limited"), 1);

    // No rate limit on the route, or no route at all: passed through.
    let open = route("web", "open", None);
    for _ in 0..10 {
        assert!(svc.clone().oneshot(request(&plane, &open)).await.is_ok());
    }
    assert!(svc.clone().oneshot(Request::new(Body::empty())).await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 12);
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let secs = |ms| retry_after_secs(Duration::from_millis(ms));
    assert_eq!([secs(0), secs(1), secs(999), secs(1_000), secs(1_001), secs(2_500)], [1, 1, 1, 1, 2, 3]);

    let err = RateLimited {
        retry_after: Duration::from_millis(1_200),
        limit: 5,
        remaining: 0,
        reset: Duration::from_millis(4_100),
    };
    let rsp = rate_limited_response(&err);
    assert_eq!(rsp.status(), StatusCode::TOO_MANY_REQUESTS);
    let header = |name: &str| rsp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header("retry-after").as_deref(), Some("2"));
    assert_eq!(header("ratelimit-limit").as_deref(), Some("5"));
    assert_eq!(header("ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header("ratelimit-reset").as_deref(), Some("5"));
    assert_eq!(header("x-attache-error").as_deref(), Some("rate-limited"));
}

#[test]
fn rate_limited_is_found_through_the_source_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] BoxError);
    let err = RateLimited { retry_after: Duration::from_secs(1), limit: 1, remaining: 0, reset: Duration::ZERO };
    let wrapped = Wrapper(Box::new(err));
    assert_eq!(RateLimited::find(&wrapped), Some(&err));
    assert_eq!(RateLimited::find(&Wrapper("other".into())), None);
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_buckets_of_an_unchanged_policy_only() {
    let limiters = RateLimiters::new();
    let req = Request::new(());
    let before = route("web", "r", Some(policy(1, 1, RateLimitKey::Global)));
    let limiter = limiters.get(Dir::Outbound, &before).unwrap_or_else(|| panic!("no limiter"));
    assert!(allowed(&limiter, &req));

    // The reloaded snapshot has a new `Route` with the same policy: same limiter, still empty.
    let same = route("web", "r", Some(policy(1, 1, RateLimitKey::Global)));
    let again = limiters.get(Dir::Outbound, &same).unwrap_or_else(|| panic!("no limiter"));
    assert!(Arc::ptr_eq(&limiter, &again));
    assert!(!allowed(&again, &req));

    // A changed policy starts afresh; the previous one stays for requests of the old snapshot in flight.
    let changed = route("web", "r", Some(policy(1, 2, RateLimitKey::Global)));
    let fresh = limiters.get(Dir::Outbound, &changed).unwrap_or_else(|| panic!("no limiter"));
    assert!(!Arc::ptr_eq(&limiter, &fresh));
    assert!(allowed(&fresh, &req));
    assert!(Arc::ptr_eq(&limiter, &limiters.get(Dir::Outbound, &before).unwrap_or_else(|| panic!("no limiter"))));
    assert_eq!(limiters.len(), 2);

    // Same names in the other direction: a limiter of its own.
    let inbound = limiters.get(Dir::Inbound, &before).unwrap_or_else(|| panic!("no limiter"));
    assert!(!Arc::ptr_eq(&limiter, &inbound));
    assert!(limiters.get(Dir::Outbound, &route("web", "r", None)).is_none());
}

#[tokio::test(start_paused = true)]
async fn reconcile_drops_limiters_of_removed_routes_and_policies() {
    let limiters = RateLimiters::new();
    let app = route("in", "app", Some(policy(5, 5, RateLimitKey::ClientIp)));
    let kept = limiters.get(Dir::Inbound, &app).unwrap_or_else(|| panic!("no limiter"));
    let _ = limiters.get(Dir::Inbound, &route("in", "app", Some(policy(9, 9, RateLimitKey::ClientIp))));
    let _ = limiters.get(Dir::Outbound, &route("web", "r", Some(policy(1, 1, RateLimitKey::Global))));
    let _ = limiters.get(Dir::Inbound, &route("gone", "app", Some(policy(1, 1, RateLimitKey::Global))));
    assert_eq!(limiters.len(), 4);

    // The new dataplane has only the `in` listener, with the first policy.
    limiters.reconcile(&plane(&[route("in", "app", Some(policy(5, 5, RateLimitKey::ClientIp)))]));
    assert_eq!(limiters.len(), 1);
    let after = limiters.get(Dir::Inbound, &app).unwrap_or_else(|| panic!("no limiter"));
    assert!(Arc::ptr_eq(&kept, &after));

    limiters.retain(|_, _, _, _| false);
    assert!(limiters.is_empty());
}

#[tokio::test(start_paused = true)]
async fn follow_reconciles_on_every_new_dataplane() {
    let limiters = RateLimiters::new();
    let _ = limiters.get(Dir::Outbound, &route("web", "r", Some(policy(1, 1, RateLimitKey::Global))));
    let (tx, rx) = watch::channel(plane(&[]));
    let task = limiters.follow(rx);
    assert_eq!(limiters.len(), 1);
    let _ = tx.send(plane(&[]));
    for _ in 0..100 {
        if limiters.is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(limiters.is_empty());
    drop(tx);
    assert!(task.await.is_ok());
}

#[test]
fn metrics_register_under_the_given_registry() {
    let mut registry = Registry::default();
    let metrics = RateLimitMetrics::register(registry.sub_registry_with_prefix("attache"));
    let r = route("web", "r", None);
    // The route's slot keeps each decision's series after its first use.
    let slot = RouteLimit::default();
    let limited = RateLimited { retry_after: Duration::from_secs(1), limit: 1, remaining: 0, reset: Duration::ZERO };
    for decision in [Decision::Allowed, Decision::Limited(limited), Decision::Allowed] {
        metrics.record(Dir::Inbound, &r, &slot, &decision);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_else(|e| panic!("{e}"));
    let series = |decision: &str, n: u32| {
        format!(
            r#"attache_rate_limit_decisions_total{{direction="inbound",service="web",route="r",decision="{decision}"}} {n}"#
        )
    };
    assert!(text.contains(&series("allowed", 2)), "{text}");
    assert!(text.contains(&series("limited", 1)), "{text}");
    assert!(!text.contains("decision=\"queued\""), "no series before its first decision: {text}");
}
