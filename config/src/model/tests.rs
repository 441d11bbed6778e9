//! Route and host matching on the built model.

use super::*;

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap_or_else(|e| panic!("{e}")).into_parts().0
}

fn get(uri: &str) -> http::request::Parts {
    req("GET", uri, &[])
}

/// A snapshot with one service `web` whose routes are `routes` (YAML list items indented 6).
fn snapshot(routes: &str) -> Snapshot {
    let yaml = format!(
        "services:\n  - name: web\n    hosts: [web.local, 'api.local:8080', '*.example.com', '[::1]']\n    routes:\n{routes}\
         backends:\n  - {{name: b, endpoints: [127.0.0.1:80]}}\n"
    );
    crate::load_str(&yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn route(matches: &str) -> Arc<Route> {
    let s = snapshot(&format!("      - name: r\n        match: {matches}\n        backends: [{{name: b}}]\n"));
    s.services[0].routes[0].clone()
}

#[test]
fn path_prefixes_match_whole_segments() {
    let api = PathMatch::Prefix("/api".into());
    for path in ["/api", "/api/", "/api/users"] {
        assert!(api.matches(path), "{path}");
    }
    for path in ["/apix", "/ap", "/", "/v1/api"] {
        assert!(!api.matches(path), "{path}");
    }
    let root = PathMatch::Prefix(String::new());
    assert!(root.matches("/") && root.matches("/anything"));
    let exact = PathMatch::Exact("/health".into());
    assert!(exact.matches("/health") && !exact.matches("/health/") && !exact.matches("/healthz"));
}

#[test]
fn a_prefix_written_with_a_trailing_slash_matches_the_bare_path() {
    let r = route("[{path: {prefix: /api/}}]");
    assert!(r.matches_request(&get("/api")));
    assert!(r.matches_request(&get("/api/x?y=1")));
    assert!(!r.matches_request(&get("/apix")));
    assert!(route("[{path: {prefix: /}}]").matches_request(&get("/")));
}

#[test]
fn methods_match_exactly() {
    let r = route("[{method: POST}]");
    assert!(r.matches_request(&req("POST", "/", &[])));
    assert!(!r.matches_request(&get("/")));
}

#[test]
fn headers_match_present_exact_and_regex() {
    let r = route("[{headers: [{name: x-canary}, {name: x-user, exact: alice}, {name: x-v, regex: 'v[0-9]+'}]}]");
    let all = [("x-canary", ""), ("X-User", "alice"), ("x-v", "v2")];
    assert!(r.matches_request(&req("GET", "/", &all)));
    assert!(!r.matches_request(&req("GET", "/", &all[1..])), "x-canary must be present");
    assert!(!r.matches_request(&req("GET", "/", &[all[0], ("x-user", "Alice"), all[2]])), "exact is case-sensitive");
    assert!(!r.matches_request(&req("GET", "/", &[all[0], all[1], ("x-v", "v2-beta")])), "regex is anchored");
    let repeated = [all[0], ("x-user", "bob"), ("x-user", "alice"), all[2]];
    assert!(r.matches_request(&req("GET", "/", &repeated)), "any of several values");
}

#[test]
fn query_parameters_match_present_exact_and_regex() {
    let r = route("[{query: [{name: debug}, {name: v, exact: '2'}, {name: id, regex: '[0-9]+'}]}]");
    assert!(r.matches_request(&get("/?debug&v=2&id=42")));
    assert!(r.matches_request(&get("/?id=7&v=1&v=2&debug=")));
    assert!(!r.matches_request(&get("/?v=2&id=42")), "debug must be present");
    assert!(!r.matches_request(&get("/?debug&v=2&id=4x")));
    assert!(!r.matches_request(&get("/")), "no query at all");
}

#[test]
fn any_match_selects_the_route_and_no_match_selects_everything() {
    let r = route("[{path: {exact: /a}}, {path: {exact: /b}, method: PUT}]");
    assert!(r.matches_request(&get("/a")));
    assert!(r.matches_request(&req("PUT", "/b", &[])));
    assert!(!r.matches_request(&get("/b")));
    assert!(route("[]").matches_request(&req("DELETE", "/anything", &[])));
}

#[test]
fn the_first_matching_route_wins() {
    let s = snapshot(
        "      - {name: api, match: [{path: {prefix: /api}}], backends: [{name: b}]}\n      - {name: rest, backends: [{name: b}]}\n",
    );
    let service = &s.services[0];
    assert_eq!(service.route_for(&get("/api/x")).map(|r| &*r.name), Some("api"));
    assert_eq!(service.route_for(&get("/other")).map(|r| &*r.name), Some("rest"));
}

#[test]
fn hosts_without_a_port_match_any_port() {
    let s = snapshot("      - {name: r, backends: [{name: b}]}\n");
    for authority in ["web.local", "WEB.local:80", "web.local:8080", "web.local.", "[::1]", "[::1]:80"] {
        assert!(s.service_for(authority).is_some(), "{authority}");
    }
    for authority in ["api.local", "api.local:80", "other.local", "web.localx"] {
        assert!(s.service_for(authority).is_none(), "{authority}");
    }
    assert!(s.service_for("API.local:8080").is_some(), "a host with a port matches only that port");
}

#[test]
fn wildcard_hosts_match_subdomains_only() {
    let suffix = HostMatch::Suffix(".example.com".into());
    assert!(suffix.matches("a.example.com"));
    assert!(suffix.matches("a.b.Example.COM:443"));
    assert!(!suffix.matches("example.com"));
    assert!(!suffix.matches(".example.com"));
    assert!(!suffix.matches("badexample.com"));
}

#[test]
fn split_authority_handles_ports_and_ipv6() {
    assert_eq!(split_authority("a:80"), ("a", Some("80")));
    assert_eq!(split_authority("a"), ("a", None));
    assert_eq!(split_authority("[::1]:80"), ("[::1]", Some("80")));
    assert_eq!(split_authority("[::1]"), ("[::1]", None));
}

#[test]
fn prefix_rewrite_replaces_the_matched_prefix() {
    let s = snapshot(
        "      - name: r\n        match: [{path: {prefix: /api/}}, {path: {prefix: /}, method: POST}]\n        filters: {rewrite: {path_prefix: /v2/}}\n        backends: [{name: b}]\n",
    );
    let r = &s.services[0].routes[0];
    assert_eq!(r.rewritten_path(&get("/api/users?x=1")).as_deref(), Some("/v2/users?x=1"));
    assert_eq!(r.rewritten_path(&get("/api")).as_deref(), Some("/v2"));
    assert_eq!(r.rewritten_path(&req("POST", "/x", &[])).as_deref(), Some("/v2/x"));
    assert_eq!(r.rewritten_path(&get("/other")), None);
    let root = snapshot(
        "      - name: r\n        match: [{path: {prefix: /api}}]\n        filters: {rewrite: {path_prefix: /}}\n        backends: [{name: b}]\n",
    );
    let r = &root.services[0].routes[0];
    assert_eq!(r.rewritten_path(&get("/api/users")).as_deref(), Some("/users"));
    assert_eq!(r.rewritten_path(&get("/api")).as_deref(), Some("/"));
}
