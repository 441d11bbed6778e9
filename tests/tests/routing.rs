//! Routing: hosts, matches, weighted and sticky splits, absolute-form, 404 naming the host.

use attache_tests::{client, proxy, server};

fn config(stable: std::net::SocketAddr, canary: std::net::SocketAddr) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound }}
services:
  - name: reviews
    hosts: [reviews, reviews.default.svc.cluster.local]
    routes:
      - name: v2-api
        match:
          - path: {{ prefix: /api }}
            headers: [{{ name: x-version, exact: "2" }}]
        backends: [{{ name: canary }}]
      - name: sticky
        match: [{{ path: {{ prefix: /sticky }} }}]
        sticky: {{ header: x-user }}
        backends: [{{ name: stable, weight: 50 }}, {{ name: canary, weight: 50 }}]
      - name: split
        backends: [{{ name: stable, weight: 90 }}, {{ name: canary, weight: 10 }}]
backends:
  - {{ name: stable, endpoints: ["{stable}"] }}
  - {{ name: canary, endpoints: ["{canary}"] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_accurate_over_ten_thousand_requests() {
    let stable = server::http1().name("stable").route("/", server::ok("stable")).run().await;
    let canary = server::http1().name("canary").route("/", server::ok("canary")).run().await;
    let proxy = proxy::new().config(config(stable.addr(), canary.addr())).run().await;
    let client = client::http1(proxy.outbound());
    for _ in 0..10_000 {
        let rsp = client.get("reviews", "/").await.unwrap();
        assert_eq!(rsp.status, 200);
    }
    let share = canary.requests() as f64 / 10_000.0;
    assert!((0.08..=0.12).contains(&share), "canary share {share}");
    assert_eq!(stable.requests() + canary.requests(), 10_000);
    let metrics = proxy.metrics().await;
    let canary_count = metrics.sum("attache_requests_total", &[("backend", "canary"), ("status_class", "2xx")]);
    assert_eq!(canary_count as usize, canary.requests());
}

#[tokio::test]
async fn header_match_selects_the_route_and_host_is_case_insensitive() {
    let stable = server::http1().name("stable").route_prefix("/", server::echo()).run().await;
    let canary = server::http1().name("canary").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(config(stable.addr(), canary.addr())).run().await;
    let rsp = client::curl()
        .url(format!("http://{}/api/items", proxy.outbound()))
        .header("Host", "Reviews.Default.svc.cluster.local")
        .header("x-version", "2")
        .run()
        .await
        .unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.header("x-server-name"), Some("canary"));
}

#[tokio::test]
async fn sticky_header_keeps_a_user_on_one_backend() {
    let stable = server::http1().name("stable").route_prefix("/", server::ok("s")).run().await;
    let canary = server::http1().name("canary").route_prefix("/", server::ok("c")).run().await;
    let proxy = proxy::new().config(config(stable.addr(), canary.addr())).run().await;
    let client = client::http1(proxy.outbound());
    for user in ["alice", "bob", "carol", "dave", "erin"] {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let req = client.builder(http::Method::GET, "reviews", "/sticky").header("x-user", user);
            let rsp = client.request(req.body(attache_tests::empty()).unwrap()).await.unwrap();
            seen.insert(rsp.header("x-server-name").unwrap_or_default().to_owned());
        }
        assert_eq!(seen.len(), 1, "{user} saw {seen:?}");
    }
}

#[tokio::test]
async fn unknown_host_gets_404_naming_the_host() {
    let stable = server::http1().route("/", server::ok("x")).run().await;
    let proxy = proxy::new().config(config(stable.addr(), stable.addr())).run().await;
    let rsp =
        client::curl().url(format!("http://{}/", proxy.outbound())).header("Host", "nope.example").run().await.unwrap();
    assert_eq!(rsp.status, 404);
    assert_eq!(rsp.header("x-attache-error"), Some("no-route"));
    assert!(rsp.text().contains("nope.example"), "{}", rsp.text());
    assert_eq!(stable.requests(), 0);
}

#[tokio::test]
async fn absolute_form_requests_work_as_http_proxy() {
    let stable = server::http1().name("stable").route_prefix("/", server::echo()).run().await;
    let proxy = proxy::new().config(config(stable.addr(), stable.addr())).run().await;
    let rsp = client::curl().proxy(proxy.outbound()).url("http://reviews/hello?x=1").run().await.unwrap();
    assert_eq!(rsp.status, 200);
    let echo = rsp.json();
    assert_eq!(echo["path"], "/hello?x=1");
    assert_eq!(echo["headers"]["host"][0], "reviews");
    // Origin-form upstream, whatever form the client used.
    assert_eq!(echo["uri"], "/hello?x=1");
}
