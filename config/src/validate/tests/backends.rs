use super::*;
use crate::model::EndpointAddr;

#[test]
fn backend_names_are_unique() {
    let yaml = "backends:\n  - name: web\n    endpoints: []\n  - name: web\n    endpoints: []\n";
    expect_error(yaml, "backends[1].name", (4, 5), "already used by backends[0]");
}

#[test]
fn endpoints_are_ip_or_dns_name_with_port() {
    let yaml = "\
backends:
  - name: web
    endpoints:
      - 10.0.0.1
      - web.local:0
      - bad_host!:80
      - 10.0.0.256:80
      - 10.0.0.1:80
      - 10.0.0.1:80
";
    expect_error(yaml, "backends[0].endpoints[0]", (4, 7), "has no port");
    expect_error(yaml, "backends[0].endpoints[1]", (5, 7), "from 1 to 65535");
    expect_error(yaml, "backends[0].endpoints[2]", (6, 7), "expected `IP:port` or `host-name:port`");
    expect_error(yaml, "backends[0].endpoints[3]", (7, 7), "expected `IP:port` or `host-name:port`");
    expect_error(yaml, "backends[0].endpoints[5]", (9, 7), "listed twice");
    assert_eq!(errors(yaml).len(), 5);
}

#[test]
fn endpoints_are_parsed_into_sockets_and_dns_names() {
    let yaml = "backends:\n  - name: web\n    endpoints: ['[::1]:80', Web.Default.svc:8080]\n";
    let backend = &load(yaml).backends["web"];
    assert!(matches!(backend.endpoints[0], EndpointAddr::Socket(a) if a.port() == 80));
    assert_eq!(backend.endpoints[1], EndpointAddr::Dns { host: "web.default.svc".into(), port: 8080 });
    assert_eq!(backend.dns_refresh, Duration::from_secs(5));
}

#[test]
fn empty_endpoints_are_an_error_only_when_traffic_can_reach_them() {
    let unused = "backends:\n  - name: spare\n    endpoints: []\n";
    assert!(load(unused).backends["spare"].endpoints.is_empty());
    let zero_weight = "\
services:
  - name: web
    hosts: [web]
    routes:
      - name: all
        backends: [{name: web}, {name: spare, weight: 0}]
backends:
  - {name: web, endpoints: [127.0.0.1:80]}
  - name: spare
    endpoints: []
";
    assert!(load(zero_weight).backends["spare"].endpoints.is_empty());
    let tcp = "\
listeners:
  - {name: db, address: 127.0.0.1:4140, direction: outbound, protocol: opaque, tcp_backend: db}
backends:
  - name: db
    endpoints: []
";
    expect_error(tcp, "backends[0].endpoints", (5, 5), "has no endpoints");
}

#[test]
fn backend_durations_are_checked_and_defaulted() {
    let yaml = "\
limits:
  connect_timeout: 2s
backends:
  - name: a
    endpoints: []
    dns_refresh: 0s
    connect_timeout: fast
  - name: b
    endpoints: []
";
    expect_error(yaml, "backends[0].dns_refresh", (6, 5), "greater than zero");
    expect_error(yaml, "backends[0].connect_timeout", (7, 5), "invalid duration `fast`");
    let valid = load("limits:\n  connect_timeout: 2s\nbackends:\n  - {name: b, endpoints: [], dns_refresh: 30s}\n");
    assert_eq!(valid.backends["b"].connect_timeout, Duration::from_secs(2));
    assert_eq!(valid.backends["b"].dns_refresh, Duration::from_secs(30));
}
