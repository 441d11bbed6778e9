//! One test per validation rule: a small document, the error's path, line and column, and a bit of its message.

mod backend_policies;
mod backends;
mod listeners;
mod matches;
mod rate_limit_fault;
mod resilience;
mod retry;
mod routes;
mod services;
mod tls;
mod tracing;

use std::time::Duration;

use crate::error::FieldError;
use crate::model::ListenerTarget;
use crate::{load_str, ConfigSpec, Snapshot};

/// A valid document to build on; its `backends` section comes last so snippets can be prepended.
pub(super) const BACKEND: &str = "backends:\n  - name: web\n    endpoints: [127.0.0.1:8080]\n";

pub(super) fn errors(yaml: &str) -> Vec<FieldError> {
    match load_str(yaml) {
        Ok(snapshot) => panic!("expected errors, got {snapshot:#?}"),
        Err(err) => err.errors,
    }
}

/// Asserts that loading `yaml` reports an error at `path`, located at `line`:`column`, whose message contains
/// `needle`.
#[track_caller]
pub(super) fn expect_error(yaml: &str, path: &str, (line, column): (usize, usize), needle: &str) {
    let errors = errors(yaml);
    let Some(e) = errors.iter().find(|e| e.path == path) else { panic!("no error at {path}: {errors:#?}") };
    let location = e.location.map(|l| (l.line, l.column));
    assert_eq!(location, Some((line, column)), "location of {e}");
    assert!(e.message.contains(needle), "`{}` should contain `{needle}`", e.message);
}

#[track_caller]
pub(super) fn load(yaml: &str) -> Snapshot {
    load_str(yaml).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_valid_document_builds_the_model() {
    let yaml = format!(
        "\
listeners:
  - name: out
    address: 127.0.0.1:4140
    direction: outbound
services:
  - name: web
    hosts: [Web.Local]
    routes:
      - name: all
        backends: [{{name: web}}]
{BACKEND}"
    );
    let snapshot = load(&yaml);
    assert_eq!(snapshot.version, 0);
    assert_ne!(snapshot.hash, 0);
    assert_eq!(snapshot.admin.address.to_string(), "127.0.0.1:9901");
    assert_eq!(snapshot.listeners[0].target, ListenerTarget::Routed { tcp_backend: None });
    let route = &snapshot.services[0].routes[0];
    assert_eq!(route.timeout, Duration::from_secs(15), "defaults to limits.request_timeout");
    assert_eq!(&*route.service, "web");
    assert!(snapshot.service_for("web.local:80").is_some(), "hosts are lower-cased");
    assert_eq!(snapshot.backends["web"].connect_timeout, Duration::from_secs(1));
    assert_eq!(snapshot.source.services[0].hosts[0], "Web.Local", "the source is the spec as given");
}

#[test]
fn the_hash_follows_the_text() {
    let a = load("{}");
    let b = load("{} # a comment");
    assert_eq!(a.hash, load("{}").hash);
    assert_ne!(a.hash, b.hash);
    let direct = Snapshot::try_from(ConfigSpec::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(direct.hash, 0);
    assert_eq!(direct.services.len(), 0);
}

#[test]
fn an_empty_document_is_an_error_but_braces_are_a_default_config() {
    for text in ["", "\n", "# only a comment\n", "---\n"] {
        let errors = errors(text);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("empty"), "{errors:?}");
    }
    assert!(load_str("{}").is_ok());
}

#[test]
fn deserialization_errors_carry_path_and_location() {
    let yaml = "listeners:\n  - name: out\n    adress: 127.0.0.1:4140\n";
    let errors = errors(yaml);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "listeners[0]");
    assert!(errors[0].message.starts_with("unknown field `adress`"), "{}", errors[0].message);
    assert!(!errors[0].message.contains("line 3"), "the location is not repeated: {}", errors[0].message);
    assert_eq!(errors[0].location.map(|l| (l.line, l.column)), Some((3, 5)));

    let errors = self::errors("services: [\n");
    assert_eq!(errors[0].path, "");
    assert!(errors[0].location.is_some());
}

#[test]
fn every_error_is_reported_in_document_order() {
    let yaml = "\
admin:
  address: nowhere
limits:
  request_timeout: 0s
  max_header_count: 0
listeners:
  - name: in
    address: 127.0.0.1:4143
    direction: inbound
services:
  - name: web
    hosts: []
    routes:
      - name: all
        timeout: soon
        backends:
          - name: missing
            weight: -1
backends:
  - name: web
    endpoints: [nowhere]
";
    let errors = errors(yaml);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "admin.address",
            "limits.request_timeout",
            "limits.max_header_count",
            "listeners[0].app",
            "services[0].hosts",
            "services[0].routes[0].timeout",
            "services[0].routes[0].backends[0].name",
            "services[0].routes[0].backends[0].weight",
            "backends[0].endpoints[0]",
        ]
    );
    assert!(errors.iter().all(|e| e.location.is_some()), "{errors:#?}");
    let rendered = crate::ConfigError { errors }.to_string();
    assert!(rendered.starts_with("invalid configuration (9 errors)"), "{rendered}");
}

#[test]
fn limits_must_be_valid_positive_durations_and_counts() {
    let yaml = "limits:\n  detect_timeout: 1x\n  idle_timeout: -5s\n  pool_max_idle_per_endpoint: 0\n  h2_max_pending_reset_streams: 0\n";
    expect_error(yaml, "limits.detect_timeout", (2, 3), "e.g. `250ms`");
    expect_error(yaml, "limits.idle_timeout", (3, 3), "negative");
    expect_error(yaml, "limits.pool_max_idle_per_endpoint", (4, 3), "greater than zero");
    expect_error(yaml, "limits.h2_max_pending_reset_streams", (5, 3), "greater than zero");
}

#[test]
fn admin_address_must_be_ip_and_port() {
    expect_error("admin:\n  address: localhost:9901\n", "admin.address", (2, 3), "expected `IP:port`");
}
