use super::*;
use crate::model::HostMatch;

/// A service named `name` with `hosts` and one catch-all route to `web`.
fn service(name: &str, hosts: &str) -> String {
    format!("  - name: {name}\n    hosts: {hosts}\n    routes:\n      - name: all\n        backends: [{{name: web}}]\n")
}

#[test]
fn service_names_are_unique() {
    let yaml = format!("services:\n{}{}{BACKEND}", service("web", "[a]"), service("web", "[b]"));
    expect_error(&yaml, "services[1].name", (7, 5), "already used by services[0]");
}

#[test]
fn a_service_needs_a_host() {
    let yaml = format!("services:\n{}{BACKEND}", service("web", "[]"));
    expect_error(&yaml, "services[0].hosts", (3, 5), "at least one host");
}

#[test]
fn hosts_are_lower_cased_and_wildcards_become_suffixes() {
    let yaml =
        format!("services:\n{}{BACKEND}", service("web", "['Web.Local:8080', '*.Example.com', '[::1]', 10.0.0.1]"));
    let snapshot = load(&yaml);
    let hosts = &snapshot.services[0].hosts;
    assert_eq!(hosts[0], HostMatch::Exact("web.local:8080".into()));
    assert_eq!(hosts[1], HostMatch::Suffix(".example.com".into()));
    assert_eq!(hosts[2], HostMatch::Exact("[::1]".into()));
}

#[test]
fn hosts_must_be_names_addresses_or_wildcards() {
    let hosts = "\n      - 'a b'\n      - '*.web:80'\n      - 'web:99999'\n      - '*'\n      - '::1'";
    let yaml = format!("services:\n{}{BACKEND}", service("web", hosts));
    expect_error(&yaml, "services[0].hosts[0]", (4, 7), "invalid host `a b`");
    expect_error(&yaml, "services[0].hosts[1]", (5, 7), "cannot have a port");
    expect_error(&yaml, "services[0].hosts[2]", (6, 7), "from 1 to 65535");
    expect_error(&yaml, "services[0].hosts[3]", (7, 7), "invalid host");
    expect_error(&yaml, "services[0].hosts[4]", (8, 7), "invalid host");
}

#[test]
fn a_host_belongs_to_one_service() {
    let yaml = format!("services:\n{}{}{BACKEND}", service("a", "[web, Web]"), service("b", "\n      - WEB"));
    expect_error(&yaml, "services[0].hosts[1]", (3, 5), "listed twice");
    expect_error(&yaml, "services[1].hosts[0]", (9, 7), "already served by service `a`");
}

#[test]
fn a_service_needs_a_route() {
    let yaml = "services:\n  - name: web\n    hosts: [web]\n    routes: []\n";
    expect_error(yaml, "services[0].routes", (4, 5), "at least one route");
}

#[test]
fn route_names_are_unique_within_a_service() {
    let yaml = format!(
        "\
services:
  - name: web
    hosts: [web]
    routes:
      - name: all
        backends: [{{name: web}}]
      - name: all
        backends: [{{name: web}}]
{}{BACKEND}",
        service("other", "[other]")
    );
    expect_error(&yaml, "services[0].routes[1].name", (7, 9), "already used by routes[0]");
    assert_eq!(errors(&yaml).len(), 1, "the same route name in another service is fine");
}
