//! Rate limit (route and listener) and fault injection validation.

use http::HeaderName;

use super::resilience::{with_route, R};
use super::*;
use crate::model::{AbortKind, HeaderMatch, RateLimit, RateLimitKey, ValueMatch};

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
