use super::*;
use attache_config::model::RetryOn;
use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;

fn policy() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        on: RetryOn { connect_failure: true, reset: true, timeout: true, statuses: vec![502, 503, 504] },
        grpc_status: vec![14],
        per_try_timeout: None,
        backoff_base: Duration::from_millis(25),
        backoff_max: Duration::from_millis(250),
        budget: RetryBudget { ratio: 0.2, min_per_second: 10 },
        retry_non_idempotent: false,
        max_body_bytes: 64 * 1024,
    }
}

fn addr() -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 80))
}

#[test]
fn backoff_is_jittered_below_a_doubling_capped_ceiling() {
    let p = policy();
    for (attempt, ceiling_ms) in [(1, 25), (2, 50), (3, 100), (4, 200), (5, 250), (30, 250)] {
        for _ in 0..200 {
            let d = backoff(&p, attempt);
            assert!(d <= Duration::from_millis(ceiling_ms), "attempt {attempt}: {d:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn budget_allows_the_floor_plus_the_ratio_and_survives_an_unchanged_reload() {
    let budgets = Budgets::default();
    let route = Route {
        service: Arc::from("s"),
        name: Arc::from("r"),
        matches: vec![],
        filters: Default::default(),
        backends: vec![],
        sticky: None,
        timeout: Duration::from_secs(1),
        retry: Some(policy()),
        rate_limit: None,
        fault: None,
        authorization: None,
    };
    let p = policy().budget;
    let budget = budgets.get(&route, &p);
    for _ in 0..100 {
        budget.deposit();
    }
    let allowed = (0..1000).filter(|_| budget.withdraw()).count();
    // The floor of 10, plus 20% of the 100 requests.
    assert!((29..=30).contains(&allowed), "allowed {allowed}");
    assert!(Arc::ptr_eq(&budget, &budgets.get(&route, &p)), "same policy, same budget");
    let changed = RetryBudget { ratio: 0.5, min_per_second: 10 };
    assert!(!Arc::ptr_eq(&budget, &budgets.get(&route, &changed)), "a changed policy starts afresh");
}

#[test]
fn errors_are_judged_where_they_were_born() {
    let p = policy();
    let connect: BoxError =
        Box::new(ConnectFailed { addr: addr(), source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused) });
    let reset: BoxError = Box::new(UpstreamFailed { addr: addr(), source: "reset".into() });
    let timeout: BoxError = Box::new(PerTryTimeout { addr: addr(), after: Duration::from_secs(1) });
    let post = http::Method::POST;
    let get = http::Method::GET;
    // Nothing was sent: safe whatever the method.
    assert_eq!(judge_error(&p, &post, &*connect), Some((Reason::ConnectFailure, Some(addr()))));
    // Bytes went upstream: only idempotent methods.
    assert_eq!(judge_error(&p, &get, &*reset), Some((Reason::Reset, Some(addr()))));
    assert_eq!(judge_error(&p, &post, &*reset), None);
    assert_eq!(judge_error(&p, &get, &*timeout), Some((Reason::Timeout, Some(addr()))));
    let mut opted_in = policy();
    opted_in.retry_non_idempotent = true;
    assert_eq!(judge_error(&opted_in, &post, &*reset), Some((Reason::Reset, Some(addr()))));
    let circuit: BoxError = Box::new(crate::errors::CircuitOpen { backend: Arc::from("b") });
    assert_eq!(judge_error(&p, &get, &*circuit), None);
}

#[test]
fn listed_statuses_are_retried_for_idempotent_methods_only() {
    let p = policy();
    let rsp = |status: u16| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        Ok(r)
    };
    let get = http::Method::GET;
    assert_eq!(judge(&p, &get, false, &rsp(503), Some(addr())), Some(Some((Reason::Status, Some(addr())))));
    assert_eq!(judge(&p, &get, false, &rsp(500), Some(addr())), Some(None));
    assert_eq!(judge(&p, &http::Method::POST, false, &rsp(503), Some(addr())), Some(None));
}

#[tokio::test]
async fn grpc_status_in_trailers_is_read_ahead_and_handed_on_unchanged() {
    let p = policy();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "14".parse().unwrap());
    let body =
        Body::buffered(vec![Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi")), Frame::trailers(trailers)], None);
    let mut rsp = Response::new(body);
    rsp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
    // The status is not in the headers: the verdict waits for the trailers.
    let result = Ok(rsp);
    assert_eq!(judge(&p, &http::Method::POST, true, &result, None), None);
    let (verdict, result) = judge_grpc(&p, result, None).await;
    assert_eq!(verdict.map(|v| v.0), Some(Reason::GrpcStatus));
    let collected = result.unwrap().into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().and_then(|t| t.get("grpc-status")).unwrap(), "14");
    assert_eq!(&collected.to_bytes()[..], b"\0\0\0\0\x02hi");
}

#[tokio::test]
async fn bodies_are_buffered_only_when_known_and_small() {
    let small = Body::full(Bytes::from(vec![7u8; 1000]));
    let replay = buffer(small, 1024).await.unwrap().ok().unwrap();
    assert_eq!(replay.data.len(), 1000);
    let large = Body::full(Bytes::from(vec![7u8; 2000]));
    assert!(buffer(large, 1024).await.unwrap().is_err(), "too large: handed back");
}

#[test]
fn the_replay_pool_is_shared_and_given_back() {
    let retry = Retry::new(RetryMetrics::default(), Budgets::default());
    let a = retry.hold(600, 1000).expect("fits");
    assert!(retry.hold(600, 1000).is_none(), "the pool is full");
    drop(a);
    assert!(retry.hold(600, 1000).is_some(), "given back");
}

#[test]
fn a_retry_copies_the_head_and_leaves_out_extensions_that_are_only_the_meta() {
    let mut req = Request::builder()
        .method(http::Method::PUT)
        .uri("/a?b")
        .header("host", "web")
        .header("x-one", "1")
        .body(Body::empty())
        .unwrap_or_else(|e| panic!("{e}"));
    RequestMeta::insert_for_test(&mut req, None, None);
    let copy = copy_head(&req, true);
    assert_eq!((&copy.method, &copy.uri, copy.version), (req.method(), req.uri(), req.version()));
    assert_eq!(&copy.headers, req.headers());
    assert!(copy.extensions.is_empty(), "the meta alone is put back by the loop, not copied");
    // Anything beside the meta is copied whole.
    req.extensions_mut().insert(AttemptTimeout(Duration::from_secs(1)));
    let copy = copy_head(&req, true);
    assert_eq!(copy.extensions.len(), 2);
    assert!(copy.extensions.get::<Arc<RequestMeta>>().is_some());
}
