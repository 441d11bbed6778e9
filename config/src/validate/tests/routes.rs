use super::*;
use crate::model::{Sticky, WeightedBackend};

/// One service `web` with one route whose body (indented 8) is `route`, and backends `web` and `canary`.
fn with_route(route: &str) -> String {
    format!(
        "\
services:
  - name: web
    hosts: [web]
    routes:
      - name: r
{route}backends:
  - {{name: web, endpoints: [127.0.0.1:8080]}}
  - {{name: canary, endpoints: [127.0.0.1:8081]}}
"
    )
}

#[test]
fn a_route_needs_a_backend() {
    expect_error(
        &with_route("        backends: []\n"),
        "services[0].routes[0].backends",
        (6, 9),
        "at least one backend",
    );
}

#[test]
fn backend_references_must_be_known() {
    let yaml = with_route("        backends:\n          - name: web\n          - name: nope\n");
    expect_error(
        &yaml,
        "services[0].routes[0].backends[1].name",
        (8, 13),
        "unknown backend `nope` (known: canary, web)",
    );
}

#[test]
fn a_backend_is_referenced_once_per_route() {
    let yaml = with_route("        backends:\n          - name: web\n          - name: web\n");
    expect_error(&yaml, "services[0].routes[0].backends[1].name", (8, 13), "listed twice");
}

#[test]
fn weights_are_non_negative_and_fit_u32() {
    let yaml = with_route("        backends:\n          - name: web\n            weight: -1\n          - name: canary\n            weight: 4294967296\n");
    expect_error(&yaml, "services[0].routes[0].backends[0].weight", (8, 13), "negative");
    expect_error(&yaml, "services[0].routes[0].backends[1].weight", (10, 13), "too large");
    let yaml = with_route(
        "        backends:\n          - {name: web, weight: 4294967295}\n          - {name: canary, weight: 1}\n",
    );
    expect_error(&yaml, "services[0].routes[0].backends", (6, 9), "add up to");
}

#[test]
fn some_weight_must_be_positive_and_zero_weights_are_dropped() {
    let yaml =
        with_route("        backends:\n          - {name: web, weight: 0}\n          - {name: canary, weight: 0}\n");
    expect_error(&yaml, "services[0].routes[0].backends", (6, 9), "every backend has weight 0");
    let yaml =
        with_route("        backends:\n          - {name: web, weight: 90}\n          - {name: canary, weight: 0}\n");
    let snapshot = load(&yaml);
    assert_eq!(snapshot.services[0].routes[0].backends, [WeightedBackend { name: "web".into(), weight: 90 }]);
}

#[test]
fn timeout_is_a_duration_defaulting_to_the_request_timeout() {
    let yaml = with_route("        timeout: 1.5\n        backends: [{name: web}]\n");
    expect_error(&yaml, "services[0].routes[0].timeout", (6, 9), "invalid duration `1.5`");
    let yaml = with_route("        timeout: 1.5s\n        backends: [{name: web}]\n");
    assert_eq!(load(&yaml).services[0].routes[0].timeout, Duration::from_millis(1500));
    let yaml = format!("limits:\n  request_timeout: 2s\n{}", with_route("        backends: [{name: web}]\n"));
    assert_eq!(load(&yaml).services[0].routes[0].timeout, Duration::from_secs(2));
}

#[test]
fn sticky_needs_exactly_one_of_header_or_cookie() {
    let both = with_route("        sticky: {header: x-user, cookie: user}\n        backends: [{name: web}]\n");
    expect_error(&both, "services[0].routes[0].sticky", (6, 9), "exactly one of `header` or `cookie`");
    let neither = with_route("        sticky: {}\n        backends: [{name: web}]\n");
    expect_error(&neither, "services[0].routes[0].sticky", (6, 9), "exactly one");
    let bad_header = with_route("        sticky:\n          header: 'x user'\n        backends: [{name: web}]\n");
    expect_error(&bad_header, "services[0].routes[0].sticky.header", (7, 11), "invalid header name");
    let bad_cookie = with_route("        sticky:\n          cookie: 'a=b'\n        backends: [{name: web}]\n");
    expect_error(&bad_cookie, "services[0].routes[0].sticky.cookie", (7, 11), "invalid cookie name");
    let header = with_route("        sticky: {header: X-User}\n        backends: [{name: web}]\n");
    let sticky = load(&header).services[0].routes[0].sticky.clone();
    assert_eq!(sticky, Some(Sticky::Header(http::HeaderName::from_static("x-user"))));
}

#[test]
fn header_filters_need_valid_names_and_values() {
    let filters = "        filters:
          request_headers:
            set:
              - {name: 'bad name', value: x}
            add:
              - name: x-ok
                value: \"a\\nb\"
          response_headers:
            remove: ['also bad']
        backends: [{name: web}]
";
    let yaml = with_route(filters);
    let base = "services[0].routes[0].filters";
    expect_error(&yaml, &format!("{base}.request_headers.set[0].name"), (9, 15), "invalid header name");
    expect_error(&yaml, &format!("{base}.request_headers.add[0].value"), (12, 17), "invalid header value");
    expect_error(&yaml, &format!("{base}.response_headers.remove[0]"), (14, 13), "invalid header name");
}

#[test]
fn prefix_rewrite_needs_a_prefix_match_everywhere() {
    let no_matches = with_route("        filters: {rewrite: {path_prefix: /v2}}\n        backends: [{name: web}]\n");
    expect_error(&no_matches, "services[0].routes[0].filters.rewrite.path_prefix", (6, 9), "needs `match` entries");
    let route = "        match:
          - path: {prefix: /api}
          - path: {exact: /health}
          - method: GET
        filters:
          rewrite:
            path_prefix: v2
        backends: [{name: web}]
";
    let yaml = with_route(route);
    expect_error(&yaml, "services[0].routes[0].match[1].path", (8, 13), "every match needs a `path.prefix`");
    expect_error(&yaml, "services[0].routes[0].match[2].path", (9, 11), "every match needs a `path.prefix`");
    expect_error(&yaml, "services[0].routes[0].filters.rewrite.path_prefix", (12, 13), "must start with `/`");
    assert_eq!(errors(&yaml).len(), 3);
}

#[test]
fn prefix_rewrite_is_stored_without_a_trailing_slash() {
    let route = "        match: [{path: {prefix: /api/}}]\n        filters: {rewrite: {path_prefix: /v2/}}\n        backends: [{name: web}]\n";
    let snapshot = load(&with_route(route));
    assert_eq!(snapshot.services[0].routes[0].filters.path_prefix_rewrite.as_deref(), Some("/v2"));
}
