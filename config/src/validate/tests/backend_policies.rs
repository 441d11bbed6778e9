//! Backend policy validation: circuit breaker, bulkhead (concurrency and pending limits) and health checks.

use super::resilience::with_backend;
use super::*;
use crate::model::{BreakerPolicy, Bulkhead, HealthCheck};

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
