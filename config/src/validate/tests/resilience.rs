//! Resilience validation across policies: the document helpers shared by `retry`, `backend_policies` and
//! `rate_limit_fault`, a full resilience config, and errors of several policies collected in document order.

use http::{HeaderName, StatusCode};

use super::*;
use crate::model::{
    AbortKind, BreakerPolicy, Bulkhead, FaultAbort, FaultDelay, HeaderMatch, HealthCheck, RateLimit, RateLimitKey,
    RateLimitQueue, RetryBudget, ValueMatch,
};

/// One service `web` whose route `r` has the body `route` (indented 8, starting on line 6), then `backends:
/// [{name: web}]`, and a backend `web`.
pub(super) fn with_route(route: &str) -> String {
    format!(
        "\
services:
  - name: web
    hosts: [web]
    routes:
      - name: r
{route}        backends: [{{name: web}}]
{BACKEND}"
    )
}

/// A backend `web` whose body (indented 4, starting on line 4) is `body`.
pub(super) fn with_backend(body: &str) -> String {
    format!("backends:\n  - name: web\n    endpoints: [127.0.0.1:8080]\n{body}")
}

pub(super) const R: &str = "services[0].routes[0]";

#[test]
fn a_full_resilience_config_builds_the_model() {
    let yaml = "\
listeners:
  - name: in
    address: 127.0.0.1:4143
    direction: inbound
    app: 127.0.0.1:8080
    rate_limit:
      requests_per_second: 100
      key: client-ip
      max_keys: 5000
services:
  - name: web
    hosts: [web]
    routes:
      - name: r
        timeout: 3s
        retry:
          attempts: 4
          on: [connect-failure, reset, timeout, 5xx, 429]
          grpc_status: [unavailable]
          per_try_timeout: 500ms
          backoff: {base: 10ms, max: 100ms}
          budget: {ratio: 0.5, min_per_second: 3}
          retry_non_idempotent: true
          max_body_bytes: 1024
        rate_limit:
          requests_per_second: 20
          burst: 40
          key: header:x-tenant
          queue: {max_wait: 250ms, max_depth: 8}
        fault:
          delay: {percent: 50, duration: 2s}
          abort: {percent: 10, status: 503}
          header: {name: x-chaos, exact: 'on'}
        backends: [{name: web}]
backends:
  - name: web
    endpoints: [127.0.0.1:8080]
    circuit_breaker: {consecutive_failures: 3, base_ejection: 500ms, max_ejection: 30s}
    max_concurrent_requests: 64
    max_pending_requests: 16
    health_check: {path: /healthz, interval: 2s, timeout: 500ms, healthy_threshold: 1, unhealthy_threshold: 2}
";
    let snapshot = load(yaml);
    let listener_limit = snapshot.listeners[0].rate_limit.as_ref().unwrap_or_else(|| panic!("no listener limit"));
    assert_eq!(
        (listener_limit.burst, &listener_limit.key, listener_limit.max_keys),
        (100, &RateLimitKey::ClientIp, 5000)
    );

    let route = &snapshot.services[0].routes[0];
    let retry = route.retry.as_ref().unwrap_or_else(|| panic!("no retry policy"));
    assert_eq!(retry.attempts, 4);
    assert!(retry.on.connect_failure && retry.on.reset && retry.on.timeout);
    assert_eq!(retry.on.statuses.first(), Some(&429));
    assert_eq!(retry.on.statuses.len(), 101);
    assert_eq!(retry.grpc_status, [14]);
    assert!(retry.retries_grpc(14));
    assert_eq!(retry.per_try_timeout, Some(Duration::from_millis(500)));
    assert_eq!((retry.backoff_base, retry.backoff_max), (Duration::from_millis(10), Duration::from_millis(100)));
    assert_eq!(retry.budget, RetryBudget { ratio: 0.5, min_per_second: 3 });
    assert!(retry.retry_non_idempotent && retry.method_allowed(&http::Method::POST));
    assert_eq!(retry.max_body_bytes, 1024);

    let queue = Some(RateLimitQueue { max_wait: Duration::from_millis(250), max_depth: 8 });
    let key = RateLimitKey::Header(HeaderName::from_static("x-tenant"));
    assert_eq!(route.rate_limit, Some(RateLimit { per_second: 20, burst: 40, key, max_keys: 10_000, queue }));

    let fault = route.fault.as_ref().unwrap_or_else(|| panic!("no fault"));
    assert_eq!(fault.delay, Some(FaultDelay { percent: 50, duration: Duration::from_secs(2) }));
    assert_eq!(fault.abort, Some(FaultAbort { percent: 10, kind: AbortKind::Status(StatusCode::SERVICE_UNAVAILABLE) }));
    let only_if = HeaderMatch { name: HeaderName::from_static("x-chaos"), value: ValueMatch::Exact("on".into()) };
    assert_eq!(fault.only_if, Some(only_if));

    let backend = &snapshot.backends["web"];
    let breaker = BreakerPolicy {
        consecutive_failures: 3,
        base_ejection: Duration::from_millis(500),
        max_ejection: Duration::from_secs(30),
    };
    assert_eq!(backend.breaker, Some(breaker));
    assert_eq!(backend.bulkhead, Bulkhead { max_concurrent: 64, max_pending: 16 });
    let health_check = HealthCheck {
        path: "/healthz".into(),
        interval: Duration::from_secs(2),
        timeout: Duration::from_millis(500),
        healthy_threshold: 1,
        unhealthy_threshold: 2,
    };
    assert_eq!(backend.health_check, Some(health_check));
}

#[test]
fn resilience_errors_are_all_collected_in_document_order() {
    let route = "        sticky: {}
        retry:
          attempts: 0
        rate_limit:
          requests_per_second: 0
        fault:
          abort: {percent: 1}
";
    let paths: Vec<String> = errors(&with_route(route)).into_iter().map(|e| e.path).collect();
    assert_eq!(
        paths,
        [
            format!("{R}.sticky"),
            format!("{R}.retry.attempts"),
            format!("{R}.rate_limit.requests_per_second"),
            format!("{R}.fault.abort"),
        ]
    );
}
