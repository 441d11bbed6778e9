//! Filters and matches: header changes in both directions, path-prefix rewrite, method, query and header-regex
//! matches.

use std::net::SocketAddr;

use attache_tests::{client, proxy, server, TestResponse};
use http::{HeaderValue, Method};

struct Backends {
    echo: server::Server,
    orders: server::Server,
    debug: server::Server,
    trace: server::Server,
    tenant: server::Server,
    default: server::Server,
}

fn config(b: &Backends) -> String {
    let addr = |s: &server::Server| s.addr().to_string();
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound }}
services:
  - name: api
    hosts: [api]
    routes:
      - name: headers
        match: [{{ path: {{ prefix: /headers }} }}]
        filters:
          request_headers:
            set: [{{ name: x-set, value: by-proxy }}]
            add: [{{ name: x-add, value: by-proxy }}]
            remove: [x-remove]
          response_headers:
            set: [{{ name: x-rsp-set, value: by-proxy }}]
            add: [{{ name: x-rsp-add, value: by-proxy }}]
            remove: [x-rsp-remove]
        backends: [{{ name: echo }}]
      - name: no-host
        match: [{{ path: {{ prefix: /no-host }} }}]
        filters: {{ request_headers: {{ remove: [host] }} }}
        backends: [{{ name: echo }}]
      - name: rewrite
        match: [{{ path: {{ prefix: /api }} }}]
        filters: {{ rewrite: {{ path_prefix: /v2 }} }}
        backends: [{{ name: echo }}]
      - name: post-only
        match: [{{ path: {{ exact: /orders }}, method: POST }}]
        backends: [{{ name: orders }}]
      - name: query-exact
        match: [{{ query: [{{ name: debug, exact: "1" }}] }}]
        backends: [{{ name: debug }}]
      - name: query-present
        match: [{{ query: [{{ name: trace }}] }}]
        backends: [{{ name: trace }}]
      - name: header-regex
        match: [{{ headers: [{{ name: x-tenant, regex: "team-[0-9]+" }}] }}]
        backends: [{{ name: tenant }}]
      - name: default
        backends: [{{ name: default }}]
backends:
  - {{ name: echo, endpoints: ["{echo}"] }}
  - {{ name: orders, endpoints: ["{orders}"] }}
  - {{ name: debug, endpoints: ["{debug}"] }}
  - {{ name: trace, endpoints: ["{trace}"] }}
  - {{ name: tenant, endpoints: ["{tenant}"] }}
  - {{ name: default, endpoints: ["{default}"] }}
"#,
        echo = addr(&b.echo),
        orders = addr(&b.orders),
        debug = addr(&b.debug),
        trace = addr(&b.trace),
        tenant = addr(&b.tenant),
        default = addr(&b.default),
    )
}

/// An echo server that also answers with the response headers the `headers` route changes.
async fn echo_server() -> server::Server {
    let echo = std::sync::Arc::new(server::echo());
    server::http1()
        .name("echo")
        .route_prefix("/", move |req| {
            let fut = echo(req);
            async move {
                let mut rsp = fut.await;
                let h = rsp.headers_mut();
                h.insert("x-rsp-set", HeaderValue::from_static("by-backend"));
                h.insert("x-rsp-add", HeaderValue::from_static("by-backend"));
                h.insert("x-rsp-remove", HeaderValue::from_static("by-backend"));
                rsp
            }
        })
        .run()
        .await
}

async fn named(name: &str) -> server::Server {
    server::http1().name(name).route_prefix("/", server::echo()).run().await
}

async fn setup() -> (Backends, proxy::TestProxy) {
    let backends = Backends {
        echo: echo_server().await,
        orders: named("orders").await,
        debug: named("debug").await,
        trace: named("trace").await,
        tenant: named("tenant").await,
        default: named("default").await,
    };
    let proxy = proxy::new().config(config(&backends)).run().await;
    (backends, proxy)
}

fn values(rsp: &TestResponse, name: &str) -> Vec<String> {
    rsp.headers.get_all(name).iter().map(|v| v.to_str().unwrap_or_default().to_owned()).collect()
}

/// `GET path` with `headers` through the proxy; returns the name of the backend that answered and the response.
async fn get(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (String, TestResponse) {
    request(proxy, Method::GET, path, headers).await
}

async fn request(proxy: SocketAddr, method: Method, path: &str, headers: &[(&str, &str)]) -> (String, TestResponse) {
    let client = client::http1(proxy);
    let mut req = client.builder(method, "api", path);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let rsp = client.request(req.body(attache_tests::empty()).unwrap()).await.unwrap();
    assert_eq!(rsp.status, 200, "{path}: {}", rsp.text());
    (rsp.header("x-server-name").unwrap_or_default().to_owned(), rsp)
}

#[tokio::test]
async fn request_headers_are_set_added_and_removed() {
    let (backends, proxy) = setup().await;
    let rsp = client::curl()
        .url(format!("http://{}/headers", proxy.outbound()))
        .header("Host", "api")
        .header("x-set", "by-client")
        .header("x-add", "by-client")
        .header("x-remove", "by-client")
        .header("x-other", "by-client")
        .run()
        .await
        .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    let echo = rsp.json();
    let headers = &echo["headers"];
    assert_eq!(headers["x-set"], serde_json::json!(["by-proxy"]), "{headers}");
    assert_eq!(headers["x-add"], serde_json::json!(["by-client", "by-proxy"]), "{headers}");
    assert!(headers.get("x-remove").is_none(), "x-remove reached the backend: {headers}");
    assert_eq!(headers["x-other"], serde_json::json!(["by-client"]), "{headers}");

    // Set and add also work when the client sent nothing.
    let (_, rsp) = get(proxy.outbound(), "/headers", &[]).await;
    let headers = rsp.json()["headers"].clone();
    assert_eq!(headers["x-set"], serde_json::json!(["by-proxy"]), "{headers}");
    assert_eq!(headers["x-add"], serde_json::json!(["by-proxy"]), "{headers}");
    assert_eq!(backends.echo.requests(), 2);
}

#[tokio::test]
async fn a_filter_removing_host_leaves_the_upstream_the_routed_authority() {
    let (backends, proxy) = setup().await;
    let (_, rsp) = get(proxy.outbound(), "/no-host", &[]).await;
    let headers = rsp.json()["headers"].clone();
    assert_eq!(headers["host"], serde_json::json!(["api"]), "{headers}");
    assert_eq!(backends.echo.requests(), 1);
}

#[tokio::test]
async fn response_headers_are_set_added_and_removed() {
    let (_backends, proxy) = setup().await;
    let rsp =
        client::curl().url(format!("http://{}/headers", proxy.outbound())).header("Host", "api").run().await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(values(&rsp, "x-rsp-set"), ["by-proxy"], "{:?}", rsp.headers);
    assert_eq!(values(&rsp, "x-rsp-add"), ["by-backend", "by-proxy"], "{:?}", rsp.headers);
    assert!(rsp.header("x-rsp-remove").is_none(), "{:?}", rsp.headers);

    // Another route of the same service leaves response headers alone.
    let (_, rsp) = get(proxy.outbound(), "/api/x", &[]).await;
    assert_eq!(values(&rsp, "x-rsp-set"), ["by-backend"]);
    assert_eq!(values(&rsp, "x-rsp-add"), ["by-backend"]);
    assert_eq!(values(&rsp, "x-rsp-remove"), ["by-backend"]);
}

#[tokio::test]
async fn path_prefix_is_rewritten() {
    let (backends, proxy) = setup().await;
    let rsp = client::curl()
        .url(format!("http://{}/api/items?x=1", proxy.outbound()))
        .header("Host", "api")
        .run()
        .await
        .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.json()["path"], "/v2/items?x=1");

    let (_, rsp) = get(proxy.outbound(), "/api", &[]).await;
    assert_eq!(rsp.json()["path"], "/v2");
    let (_, rsp) = get(proxy.outbound(), "/api/", &[]).await;
    assert_eq!(rsp.json()["path"], "/v2/");
    let (_, rsp) = get(proxy.outbound(), "/api?y=2", &[]).await;
    assert_eq!(rsp.json()["path"], "/v2?y=2");
    assert_eq!(backends.echo.requests(), 4);

    // `/apix` is not under the `/api` prefix: not rewritten, not this route.
    let (server, rsp) = get(proxy.outbound(), "/apix", &[]).await;
    assert_eq!(server, "default");
    assert_eq!(rsp.json()["path"], "/apix");
}

#[tokio::test]
async fn method_match_takes_only_posts() {
    let (backends, proxy) = setup().await;
    let rsp = client::curl()
        .url(format!("http://{}/orders", proxy.outbound()))
        .header("Host", "api")
        .data("{}")
        .run()
        .await
        .unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    assert_eq!(rsp.header("x-server-name"), Some("orders"));
    assert_eq!(rsp.json()["body"], "{}");

    let (server, _) = get(proxy.outbound(), "/orders", &[]).await;
    assert_eq!(server, "default");
    let (server, _) = request(proxy.outbound(), Method::PUT, "/orders", &[]).await;
    assert_eq!(server, "default");
    assert_eq!(backends.orders.requests(), 1);
}

#[tokio::test]
async fn query_param_matches_exact_and_present() {
    let (_backends, proxy) = setup().await;
    let cases = [
        ("/search?debug=1", "debug"),
        ("/search?q=x&debug=1", "debug"),
        ("/search?debug=2", "default"),
        ("/search?debug", "default"),
        ("/search?trace", "trace"),
        ("/search?trace=", "trace"),
        ("/search?a=b&trace=yes", "trace"),
        ("/search?tracer=1", "default"),
        ("/search", "default"),
    ];
    for (path, want) in cases {
        let (server, rsp) = get(proxy.outbound(), path, &[]).await;
        assert_eq!(server, want, "{path}");
        assert_eq!(rsp.json()["path"], path, "query is forwarded unchanged");
    }
}

#[tokio::test]
async fn header_regex_must_match_the_whole_value() {
    let (_backends, proxy) = setup().await;
    let cases = [
        ("team-42", "tenant"),
        ("team-7", "tenant"),
        ("team-", "default"),
        ("team-x", "default"),
        ("xteam-42", "default"),
        ("team-42x", "default"),
    ];
    for (value, want) in cases {
        let (server, _) = get(proxy.outbound(), "/any", &[("x-tenant", value)]).await;
        assert_eq!(server, want, "x-tenant: {value}");
    }
    let rsp = client::curl()
        .url(format!("http://{}/any", proxy.outbound()))
        .header("Host", "api")
        .header("X-Tenant", "team-1")
        .run()
        .await
        .unwrap();
    assert_eq!(rsp.header("x-server-name"), Some("tenant"), "header names are case-insensitive");
}

#[tokio::test]
async fn prefix_rewrite_applies_when_a_filter_removes_the_matched_header() {
    let backend = server::http1().name("canary").route_prefix("/", server::echo()).run().await;
    let route = "match: [{ path: { prefix: /api }, headers: [{ name: x-canary }] }]\n\
                 filters: { request_headers: { remove: [x-canary] }, rewrite: { path_prefix: /v2 } }";
    let yaml = attache_tests::yaml::one_backend("api", &[backend.addr()]).route(route);
    let proxy = proxy::new().config(yaml).run().await;

    let (server, rsp) = get(proxy.outbound(), "/api/users?page=2", &[("x-canary", "1")]).await;
    assert_eq!(server, "canary");
    let echo = rsp.json();
    assert_eq!(echo["path"], "/v2/users?page=2", "{echo}");
    assert!(echo["headers"].get("x-canary").is_none(), "x-canary reached the backend: {echo}");
    assert_eq!(backend.requests(), 1);
}
