use http::{HeaderName, StatusCode};

use super::*;
use crate::model::{
    AbortKind, BreakerPolicy, Bulkhead, FaultAbort, FaultDelay, HeaderMatch, HealthCheck, RateLimit, RateLimitKey,
    RateLimitQueue, RetryBudget, ValueMatch,
};

/// One service `web` whose route `r` has the body `route` (indented 8, starting on line 6), then `backends:
/// [{name: web}]`, and a backend `web`.
fn with_route(route: &str) -> String {
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
fn with_backend(body: &str) -> String {
    format!("backends:\n  - name: web\n    endpoints: [127.0.0.1:8080]\n{body}")
}

const R: &str = "services[0].routes[0]";

#[test]
fn retry_attempts_are_1_to_10() {
    let yaml = with_route("        retry:\n          attempts: 11\n");
    expect_error(&yaml, &format!("{R}.retry.attempts"), (7, 11), "expected 1 to 10 attempts");
    let yaml = with_route("        retry:\n          attempts: 0\n");
    expect_error(&yaml, &format!("{R}.retry.attempts"), (7, 11), "0 is out of range");
    let yaml = with_route("        retry: {attempts: 1}\n");
    assert_eq!(load(&yaml).services[0].routes[0].retry.as_ref().map(|r| r.attempts), Some(1));
}

#[test]
fn retry_on_entries_are_conditions_or_statuses() {
    let route = "        retry:
          on:
            - reset
            - 600
            - 4xx
            - 99
";
    let yaml = with_route(route);
    let accepted = "expected `connect-failure`, `reset`, `timeout`, `5xx`, `gateway-error` or a status code";
    expect_error(&yaml, &format!("{R}.retry.on[1]"), (9, 13), accepted);
    expect_error(&yaml, &format!("{R}.retry.on[2]"), (10, 13), "unknown retry condition `4xx`");
    expect_error(&yaml, &format!("{R}.retry.on[3]"), (11, 13), "`99`");
    assert_eq!(errors(&yaml).len(), 3);
}

#[test]
fn retry_statuses_are_expanded_sorted_and_deduplicated() {
    let yaml = with_route("        retry:\n          on: [503, gateway-error, 409, connect-failure, 409]\n");
    let snapshot = load(&yaml);
    let retry = snapshot.services[0].routes[0].retry.as_ref().unwrap_or_else(|| panic!("no retry policy"));
    assert_eq!(retry.on.statuses, [409, 502, 503, 504]);
    assert!(retry.on.connect_failure && !retry.on.reset && !retry.on.timeout);
    assert!(retry.retries_status(StatusCode::CONFLICT));
    let yaml = with_route("        retry:\n          on: [5xx, 502]\n");
    let snapshot = load(&yaml);
    let statuses = &snapshot.services[0].routes[0].retry.as_ref().map(|r| r.on.statuses.clone());
    assert_eq!(statuses.as_deref(), Some(&(500..=599).collect::<Vec<u16>>()[..]));
}

#[test]
fn retry_defaults_are_applied() {
    let snapshot = load(&with_route("        retry: {}\n"));
    let retry = snapshot.services[0].routes[0].retry.clone().unwrap_or_else(|| panic!("no retry policy"));
    assert_eq!(retry.attempts, 3);
    assert!(retry.on.connect_failure && retry.on.reset && !retry.on.timeout);
    assert_eq!(retry.on.statuses, [502, 503, 504]);
    assert_eq!((retry.backoff_base, retry.backoff_max), (Duration::from_millis(25), Duration::from_millis(250)));
    assert_eq!(retry.budget, RetryBudget { ratio: 0.2, min_per_second: 10 });
    assert_eq!(retry.max_body_bytes, 65536);
    assert_eq!(retry.per_try_timeout, None);
    assert!(retry.grpc_status.is_empty());
}

#[test]
fn retry_grpc_statuses_are_failure_names_or_numbers() {
    let route = "        retry:
          grpc_status:
            - ok
            - 0
            - 17
            - unavailabel
            - RESOURCE_EXHAUSTED
            - 14
            - unavailable
";
    let yaml = with_route(route);
    expect_error(&yaml, &format!("{R}.retry.grpc_status[0]"), (8, 13), "a success, not a failure");
    expect_error(&yaml, &format!("{R}.retry.grpc_status[1]"), (9, 13), "a success, not a failure");
    expect_error(&yaml, &format!("{R}.retry.grpc_status[2]"), (10, 13), "17 is out of range");
    expect_error(&yaml, &format!("{R}.retry.grpc_status[3]"), (11, 13), "one of cancelled, unknown");
    assert_eq!(errors(&yaml).len(), 4);
    let yaml = with_route("        retry:\n          grpc_status: [unavailable, RESOURCE_EXHAUSTED, 14, 4]\n");
    let snapshot = load(&yaml);
    assert_eq!(snapshot.services[0].routes[0].retry.as_ref().map(|r| r.grpc_status.clone()), Some(vec![4, 8, 14]));
}

#[test]
fn retrying_timeouts_needs_a_per_try_timeout() {
    let yaml = with_route("        retry:\n          on:\n            - timeout\n");
    expect_error(&yaml, &format!("{R}.retry.on[0]"), (8, 13), "nothing produces a per-try timeout");
    let yaml = with_route("        retry:\n          on: [timeout]\n          per_try_timeout: 1s\n");
    let snapshot = load(&yaml);
    let retry = snapshot.services[0].routes[0].retry.clone().unwrap_or_else(|| panic!("no retry policy"));
    assert!(retry.on.timeout);
    assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(1)));
}

#[test]
fn per_try_timeout_is_a_duration_shorter_than_the_route_timeout() {
    let yaml = with_route("        timeout: 2s\n        retry:\n          per_try_timeout: 2s\n");
    expect_error(&yaml, &format!("{R}.retry.per_try_timeout"), (8, 11), "must be shorter than the route timeout");
    let yaml = format!("limits:\n  request_timeout: 1s\n{}", with_route("        retry: {per_try_timeout: 5s}\n"));
    expect_error(&yaml, &format!("{R}.retry.per_try_timeout"), (8, 9), "(1s;");
    let yaml = with_route("        retry:\n          per_try_timeout: soon\n");
    expect_error(&yaml, &format!("{R}.retry.per_try_timeout"), (7, 11), "invalid duration `soon`");
    // An invalid route timeout is reported once, not compared.
    let yaml = with_route("        timeout: soon\n        retry:\n          per_try_timeout: 2s\n");
    assert_eq!(errors(&yaml).len(), 1);
}

#[test]
fn backoff_base_is_at_most_max() {
    let yaml = with_route("        retry:\n          backoff:\n            base: 1s\n            max: 100ms\n");
    expect_error(&yaml, &format!("{R}.retry.backoff.base"), (8, 13), "base `1s` is longer than max `100ms`");
    let yaml = with_route("        retry:\n          backoff:\n            base: 1s\n            max: never\n");
    expect_error(&yaml, &format!("{R}.retry.backoff.max"), (9, 13), "invalid duration `never`");
    assert_eq!(errors(&yaml).len(), 1);
}

#[test]
fn retry_budget_ratio_is_a_fraction() {
    for ratio in ["1.5", "-0.1", ".nan", ".inf"] {
        let yaml = with_route(&format!("        retry:\n          budget:\n            ratio: {ratio}\n"));
        expect_error(&yaml, &format!("{R}.retry.budget.ratio"), (8, 13), "expected a fraction from 0.0 to 1.0");
    }
    let yaml = with_route("        retry:\n          budget: {ratio: 0, min_per_second: 0}\n");
    let snapshot = load(&yaml);
    let budget = snapshot.services[0].routes[0].retry.as_ref().map(|r| r.budget);
    assert_eq!(budget, Some(RetryBudget { ratio: 0.0, min_per_second: 0 }));
}

#[test]
fn retry_body_buffer_is_at_most_16_mib() {
    let yaml = with_route("        retry:\n          max_body_bytes: 16777217\n");
    expect_error(&yaml, &format!("{R}.retry.max_body_bytes"), (7, 11), "expected 0 to 16777216 bytes");
    let yaml = with_route("        retry: {max_body_bytes: 0}\n");
    assert_eq!(load(&yaml).services[0].routes[0].retry.as_ref().map(|r| r.max_body_bytes), Some(0));
}

#[test]
fn a_retry_policy_retries_something() {
    let yaml = with_route("        retry:\n          on: []\n");
    expect_error(&yaml, &format!("{R}.retry.on"), (7, 11), "nothing is retried");
    let yaml = with_route("        retry:\n          on: []\n          grpc_status: [unavailable]\n");
    assert!(load(&yaml).services[0].routes[0].retry.is_some());
}

#[test]
fn breaker_needs_a_failure_count_and_ordered_ejections() {
    let body = "    circuit_breaker:
      consecutive_failures: 0
      base_ejection: 2m
      max_ejection: 1m
";
    let yaml = with_backend(body);
    expect_error(&yaml, "backends[0].circuit_breaker.consecutive_failures", (5, 7), "at least 1");
    expect_error(&yaml, "backends[0].circuit_breaker.base_ejection", (6, 7), "longer than max_ejection `1m`");
    let yaml = with_backend("    circuit_breaker:\n      max_ejection: forever\n");
    expect_error(&yaml, "backends[0].circuit_breaker.max_ejection", (5, 7), "invalid duration `forever`");
}

#[test]
fn breaker_is_on_by_default_and_can_be_disabled() {
    let defaults = load(BACKEND);
    let expected = BreakerPolicy {
        consecutive_failures: 5,
        base_ejection: Duration::from_secs(1),
        max_ejection: Duration::from_secs(60),
    };
    assert_eq!(defaults.backends["web"].breaker, Some(expected));
    let disabled = load(&with_backend("    circuit_breaker: {enabled: false}\n"));
    assert_eq!(disabled.backends["web"].breaker, None);
    // A disabled breaker is still checked, so switching it on cannot fail.
    let yaml = with_backend("    circuit_breaker:\n      enabled: false\n      consecutive_failures: 0\n");
    expect_error(&yaml, "backends[0].circuit_breaker.consecutive_failures", (6, 7), "at least 1");
}

#[test]
fn bulkhead_allows_at_least_one_request_and_defaults_to_limits() {
    let yaml = with_backend("    max_concurrent_requests: 0\n");
    expect_error(&yaml, "backends[0].max_concurrent_requests", (4, 5), "at least 1");
    let yaml = format!(
        "limits:\n  max_concurrent_per_backend: 7\n  max_pending_per_backend: 0\n{BACKEND}  - name: own\n    \
         endpoints: []\n    max_concurrent_requests: 3\n    max_pending_requests: 0\n"
    );
    let snapshot = load(&yaml);
    assert_eq!(snapshot.backends["web"].bulkhead, Bulkhead { max_concurrent: 7, max_pending: 0 });
    assert_eq!(snapshot.backends["own"].bulkhead, Bulkhead { max_concurrent: 3, max_pending: 0 });
    let defaults = load(BACKEND);
    assert_eq!(defaults.backends["web"].bulkhead, Bulkhead { max_concurrent: 10_000, max_pending: 1_000 });
}

#[test]
fn health_check_path_durations_and_thresholds() {
    let body = "    health_check:
      path: healthz
      interval: 1s
      timeout: 2s
      healthy_threshold: 0
      unhealthy_threshold: 0
";
    let yaml = with_backend(body);
    let hc = "backends[0].health_check";
    expect_error(&yaml, &format!("{hc}.path"), (5, 7), "must start with `/`");
    expect_error(&yaml, &format!("{hc}.timeout"), (7, 7), "timeout `2s` is longer than interval `1s`");
    expect_error(&yaml, &format!("{hc}.healthy_threshold"), (8, 7), "at least 1");
    expect_error(&yaml, &format!("{hc}.unhealthy_threshold"), (9, 7), "at least 1");
    assert_eq!(errors(&yaml).len(), 4);
    let yaml = with_backend("    health_check:\n      path: '/health?x=1#top'\n      interval: 0s\n");
    expect_error(&yaml, &format!("{hc}.path"), (5, 7), "no fragment");
    expect_error(&yaml, &format!("{hc}.interval"), (6, 7), "greater than zero");
}

#[test]
fn health_check_defaults() {
    let snapshot = load(&with_backend("    health_check: {path: /ready?full=1}\n"));
    let expected = HealthCheck {
        path: "/ready?full=1".into(),
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
    };
    assert_eq!(snapshot.backends["web"].health_check, Some(expected));
}

#[test]
fn rate_limit_rate_burst_and_key_count_are_positive() {
    let route = "        rate_limit:
          requests_per_second: 0
          burst: 0
          max_keys: 1000001
";
    let yaml = with_route(route);
    let rl = format!("{R}.rate_limit");
    expect_error(&yaml, &format!("{rl}.requests_per_second"), (7, 11), "at least 1");
    expect_error(&yaml, &format!("{rl}.burst"), (8, 11), "at least 1");
    expect_error(&yaml, &format!("{rl}.max_keys"), (9, 11), "expected 1 to 1000000");
    let yaml = with_route("        rate_limit:\n          requests_per_second: 0\n          max_keys: 0\n");
    expect_error(&yaml, &format!("{rl}.max_keys"), (8, 11), "0 is out of range");
    assert_eq!(errors(&yaml).len(), 2, "a defaulted burst is not reported again");
}

#[test]
fn rate_limit_keys_are_known_forms() {
    let rl = format!("{R}.rate_limit.key");
    let yaml = with_route("        rate_limit:\n          requests_per_second: 5\n          key: client_ip\n");
    expect_error(&yaml, &rl, (8, 11), "expected `global`, `client-ip`, `header:<name>` or `peer-identity`");
    let yaml = with_route("        rate_limit:\n          requests_per_second: 5\n          key: 'header:x user'\n");
    expect_error(&yaml, &rl, (8, 11), "invalid header name `x user`");
    let yaml = with_route("        rate_limit:\n          requests_per_second: 5\n          key: 'header:'\n");
    expect_error(&yaml, &rl, (8, 11), "invalid header name");
    for (key, expected) in [
        ("global", RateLimitKey::Global),
        ("client-ip", RateLimitKey::ClientIp),
        ("peer-identity", RateLimitKey::PeerIdentity),
        ("header:X-Tenant", RateLimitKey::Header(HeaderName::from_static("x-tenant"))),
    ] {
        let yaml = with_route(&format!("        rate_limit: {{requests_per_second: 5, key: '{key}'}}\n"));
        let snapshot = load(&yaml);
        assert_eq!(snapshot.services[0].routes[0].rate_limit.as_ref().map(|r| r.key.clone()), Some(expected));
    }
}

#[test]
fn rate_limit_queue_needs_a_wait_and_a_depth() {
    let route = "        rate_limit:
          requests_per_second: 5
          queue:
            max_wait: 0ms
            max_depth: 0
";
    let yaml = with_route(route);
    expect_error(&yaml, &format!("{R}.rate_limit.queue.max_wait"), (9, 13), "greater than zero");
    expect_error(&yaml, &format!("{R}.rate_limit.queue.max_depth"), (10, 13), "at least 1");
}

#[test]
fn rate_limit_burst_defaults_to_the_rate() {
    let yaml = with_route("        rate_limit: {requests_per_second: 50}\n");
    let expected = RateLimit { per_second: 50, burst: 50, key: RateLimitKey::Global, max_keys: 10_000, queue: None };
    assert_eq!(load(&yaml).services[0].routes[0].rate_limit, Some(expected));
}

#[test]
fn listener_rate_limits_are_for_inbound_http_only() {
    let yaml = "\
listeners:
  - name: out
    address: 127.0.0.1:4140
    direction: outbound
    rate_limit:
      requests_per_second: 10
  - name: db
    address: 127.0.0.1:4143
    direction: inbound
    protocol: opaque
    app: 127.0.0.1:5432
    rate_limit:
      requests_per_second: 10
  - name: in
    address: 127.0.0.1:4144
    direction: inbound
    app: 127.0.0.1:8080
    rate_limit:
      requests_per_second: 0
";
    expect_error(yaml, "listeners[0].rate_limit", (5, 5), "only inbound listeners have a `rate_limit`");
    expect_error(yaml, "listeners[1].rate_limit", (12, 5), "carries no HTTP requests");
    expect_error(yaml, "listeners[2].rate_limit.requests_per_second", (19, 7), "at least 1");
    assert_eq!(errors(yaml).len(), 3);
    let yaml = "\
listeners:
  - name: in
    address: 127.0.0.1:4143
    direction: inbound
    app: 127.0.0.1:8080
    rate_limit: {requests_per_second: 100, burst: 20, key: client-ip}
";
    let limit = load(yaml).listeners[0].rate_limit.clone();
    assert_eq!(limit.map(|l| (l.per_second, l.burst, l.key)), Some((100, 20, RateLimitKey::ClientIp)));
}

#[test]
fn a_fault_needs_a_delay_or_an_abort() {
    let yaml = with_route("        fault:\n          header: {name: x-chaos}\n");
    expect_error(&yaml, &format!("{R}.fault"), (6, 9), "needs a `delay`, an `abort`, or both");
    assert_eq!(errors(&yaml).len(), 1);
}

#[test]
fn fault_percentages_are_0_to_100_and_the_delay_a_duration() {
    let route = "        fault:
          delay:
            percent: 101
            duration: 0s
          abort:
            percent: 200
            status: 503
";
    let yaml = with_route(route);
    expect_error(&yaml, &format!("{R}.fault.delay.percent"), (8, 13), "expected 0 to 100 percent");
    expect_error(&yaml, &format!("{R}.fault.delay.duration"), (9, 13), "greater than zero");
    expect_error(&yaml, &format!("{R}.fault.abort.percent"), (11, 13), "200 is out of range");
    assert_eq!(errors(&yaml).len(), 3);
}

#[test]
fn a_fault_abort_has_exactly_one_final_status() {
    let abort = |body: &str| with_route(&format!("        fault:\n          abort:\n            percent: 5\n{body}"));
    let path = format!("{R}.fault.abort");
    let both = abort("            status: 503\n            grpc_status: unavailable\n");
    expect_error(&both, &path, (7, 11), "exactly one of `status` (HTTP) and `grpc_status`");
    expect_error(&abort(""), &path, (7, 11), "exactly one of");
    let informational = abort("            status: 103\n");
    expect_error(&informational, &format!("{path}.status"), (9, 13), "informational (1xx)");
    let invalid = abort("            status: 600\n");
    expect_error(&invalid, &format!("{path}.status"), (9, 13), "invalid status 600");
    let ok = abort("            grpc_status: ok\n");
    expect_error(&ok, &format!("{path}.grpc_status"), (9, 13), "not a failure");
    let unknown = abort("            grpc_status: unavailabel\n");
    expect_error(&unknown, &format!("{path}.grpc_status"), (9, 13), "unknown gRPC status `unavailabel`");
    let grpc = load(&abort("            grpc_status: '14'\n"));
    let kind = grpc.services[0].routes[0].fault.as_ref().and_then(|f| f.abort).map(|a| a.kind);
    assert_eq!(kind, Some(AbortKind::GrpcStatus(14)));
}

#[test]
fn a_fault_header_is_a_header_match() {
    let route = "        fault:
          delay: {percent: 10, duration: 1s}
          header:
            name: 'x chaos'
            exact: on
            regex: o.
";
    let yaml = with_route(route);
    expect_error(&yaml, &format!("{R}.fault.header.name"), (9, 13), "invalid header name `x chaos`");
    expect_error(&yaml, &format!("{R}.fault.header"), (8, 11), "at most one of `exact` and `regex`");
    let yaml =
        with_route("        fault:\n          delay: {percent: 10, duration: 1s}\n          header: {name: X-Chaos}\n");
    let only_if = load(&yaml).services[0].routes[0].fault.as_ref().and_then(|f| f.only_if.clone());
    assert_eq!(only_if, Some(HeaderMatch { name: HeaderName::from_static("x-chaos"), value: ValueMatch::Present }));
}

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
