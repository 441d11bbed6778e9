//! Retry policy validation: attempts, conditions and statuses, gRPC statuses, per-try timeout, backoff, budget.

use http::StatusCode;

use super::resilience::{with_route, R};
use super::*;
use crate::model::RetryBudget;

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
