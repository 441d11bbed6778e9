use super::*;

#[test]
fn listener_address_must_be_ip_and_port() {
    let yaml = "listeners:\n  - name: out\n    address: 4140\n    direction: outbound\n";
    expect_error(yaml, "listeners[0].address", (3, 5), "expected `IP:port`");
}

#[test]
fn listener_names_are_unique() {
    let yaml = "\
listeners:
  - name: out
    address: 127.0.0.1:4140
    direction: outbound
  - name: out
    address: 127.0.0.1:4141
    direction: outbound
";
    expect_error(yaml, "listeners[1].name", (5, 5), "already used by listeners[0]");
}

#[test]
fn listener_addresses_are_unique_including_admin() {
    let yaml = "\
admin:
  address: 127.0.0.1:4140
listeners:
  - name: a
    address: 127.0.0.1:4140
    direction: outbound
  - name: b
    address: 0.0.0.0:4141
    direction: outbound
  - name: c
    address: 127.0.0.1:4141
    direction: outbound
";
    expect_error(yaml, "listeners[0].address", (5, 5), "already used by the admin listener");
    expect_error(yaml, "listeners[2].address", (11, 5), "already used by listener `b`");
}

#[test]
fn port_zero_never_collides() {
    let yaml = "\
admin:
  address: 127.0.0.1:0
listeners:
  - {name: a, address: 127.0.0.1:0, direction: outbound}
  - {name: b, address: 127.0.0.1:0, direction: outbound}
";
    assert_eq!(load(yaml).listeners.len(), 2);
}

#[test]
fn inbound_needs_an_app_address() {
    let yaml = "listeners:\n  - name: in\n    address: 127.0.0.1:4143\n    direction: inbound\n";
    expect_error(yaml, "listeners[0].app", (2, 3), "needs `app`");
    let yaml = "listeners:\n  - name: in\n    address: 127.0.0.1:4143\n    direction: inbound\n    app: app:8080\n";
    expect_error(yaml, "listeners[0].app", (5, 5), "expected `IP:port`");
}

#[test]
fn inbound_has_no_tcp_backend() {
    let yaml = format!(
        "\
listeners:
  - name: in
    address: 127.0.0.1:4143
    direction: inbound
    app: 127.0.0.1:8080
    tcp_backend: web
{BACKEND}"
    );
    expect_error(&yaml, "listeners[0].tcp_backend", (6, 5), "only outbound");
}

#[test]
fn outbound_has_no_app() {
    let yaml =
        "listeners:\n  - name: out\n    address: 127.0.0.1:4140\n    direction: outbound\n    app: 127.0.0.1:8080\n";
    expect_error(yaml, "listeners[0].app", (5, 5), "only inbound");
}

#[test]
fn tcp_backend_must_be_known() {
    let yaml = format!(
        "\
listeners:
  - name: out
    address: 127.0.0.1:4140
    direction: outbound
    tcp_backend: db
{BACKEND}"
    );
    expect_error(&yaml, "listeners[0].tcp_backend", (5, 5), "unknown backend `db` (known: web)");
}

#[test]
fn opaque_outbound_needs_a_tcp_backend() {
    let yaml = "listeners:\n  - name: db\n    address: 127.0.0.1:4140\n    direction: outbound\n    protocol: opaque\n";
    expect_error(yaml, "listeners[0].tcp_backend", (2, 3), "needs a `tcp_backend`");
}

#[test]
fn http_listener_has_no_tcp_backend() {
    let yaml = format!(
        "\
listeners:
  - name: out
    address: 127.0.0.1:4140
    direction: outbound
    protocol: http
    tcp_backend: web
{BACKEND}"
    );
    expect_error(&yaml, "listeners[0].tcp_backend", (6, 5), "never carries opaque TCP");
}

#[test]
fn listener_targets_are_built() {
    let yaml = format!(
        "\
listeners:
  - {{name: in, address: 127.0.0.1:4143, direction: inbound, app: 127.0.0.1:8080}}
  - {{name: db, address: 127.0.0.1:4144, direction: outbound, protocol: opaque, tcp_backend: web}}
{BACKEND}"
    );
    let snapshot = load(&yaml);
    let app = "127.0.0.1:8080".parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snapshot.listener("in").map(|l| l.target.clone()), Some(ListenerTarget::App(app)));
    let db = snapshot.listener("db").map(|l| l.target.clone());
    assert_eq!(db, Some(ListenerTarget::Routed { tcp_backend: Some("web".into()) }));
}
