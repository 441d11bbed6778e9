//! Admin: `/live`, `/ready`, `/metrics`, `/config`, and the access log of the real binary.

use std::net::SocketAddr;
use std::process::Stdio;

use attache_tests::{client, eventually, proxy, server, wait::secs, with_timeout, Metrics};
use tokio::io::{AsyncBufReadExt, BufReader};

fn config(backend: SocketAddr, admin: &str, listener: &str) -> String {
    format!(
        r#"
admin: {{ address: "{admin}" }}
limits:
  max_concurrent_requests: 500
listeners:
  - {{ name: outbound, address: "{listener}", direction: outbound }}
services:
  - name: shop
    hosts: [shop, shop.local]
    routes:
      - name: default
        backends: [{{ name: shop-stable }}]
backends:
  - {{ name: shop-stable, endpoints: ["{backend}"] }}
"#
    )
}

async fn admin_get(admin: SocketAddr, path: &str) -> attache_tests::TestResponse {
    client::curl().url(format!("http://{admin}{path}")).run().await.unwrap()
}

#[tokio::test]
async fn live_and_ready_answer_200_once_running() {
    let backend = server::http1().route("/", server::ok("x")).run().await;
    let proxy = proxy::new().config(config(backend.addr(), "127.0.0.1:0", "127.0.0.1:0")).run().await;
    let live = admin_get(proxy.admin(), "/live").await;
    assert_eq!(live.status, 200, "{}", live.text());
    let ready = admin_get(proxy.admin(), "/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.text());
}

#[tokio::test]
async fn metrics_are_openmetrics_with_config_families() {
    let backend = server::http1().route("/", server::ok("x")).run().await;
    let proxy = proxy::new().config(config(backend.addr(), "127.0.0.1:0", "127.0.0.1:0")).run().await;
    let rsp = admin_get(proxy.admin(), "/metrics").await;
    assert_eq!(rsp.status, 200);
    let content_type = rsp.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "content-type {content_type:?}");
    let text = rsp.text();
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF:\n{text}");
    let metrics = Metrics::parse(&text).unwrap();
    assert_eq!(metrics.value("attache_config_version", &[]), Some(1.0), "{metrics}");
    assert!(
        metrics.samples().iter().any(|s| s.name == "attache_config_reloads_total"),
        "no attache_config_reloads_total sample in /metrics:\n{text}"
    );
}

#[tokio::test]
async fn config_view_shows_the_served_config() {
    let backend = server::http1().route("/", server::ok("x")).run().await;
    let proxy = proxy::new().config(config(backend.addr(), "127.0.0.1:0", "127.0.0.1:0")).run().await;
    let rsp = admin_get(proxy.admin(), "/config").await;
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.header("content-type"), Some("application/json"));
    let view = rsp.json();
    assert!(view["version"].as_u64().is_some_and(|v| v >= 1), "{view:#}");
    assert_eq!(view["last_reload"]["result"], "applied", "{view:#}");
    assert!(view["hash"].as_str().is_some_and(|h| !h.is_empty()), "{view:#}");
    assert_eq!(view["source"], proxy.config_path().display().to_string());

    let config = &view["config"];
    assert_eq!(config["services"][0]["name"], "shop", "{config:#}");
    assert_eq!(config["services"][0]["hosts"], serde_json::json!(["shop", "shop.local"]));
    assert_eq!(config["services"][0]["routes"][0]["name"], "default");
    assert_eq!(config["services"][0]["routes"][0]["backends"][0]["name"], "shop-stable");
    assert_eq!(config["backends"][0]["name"], "shop-stable");
    assert_eq!(config["backends"][0]["endpoints"][0], backend.addr().to_string());
    assert_eq!(config["listeners"][0]["name"], "outbound");
    assert_eq!(config["listeners"][0]["direction"], "outbound");
    // Set in the file, and defaults filled in.
    assert_eq!(config["limits"]["max_concurrent_requests"], 500);
    assert_eq!(config["limits"]["max_header_count"], 100);
}

#[tokio::test]
async fn unknown_admin_path_is_404() {
    let backend = server::http1().route("/", server::ok("x")).run().await;
    let proxy = proxy::new().config(config(backend.addr(), "127.0.0.1:0", "127.0.0.1:0")).run().await;
    for path in ["/nope", "/", "/metrics/extra"] {
        let rsp = admin_get(proxy.admin(), path).await;
        assert_eq!(rsp.status, 404, "{path}: {}", rsp.text());
    }
}

/// The real binary with `--log-format json`: one access-log line per request, with route, backend and status.
#[tokio::test]
async fn access_log_is_one_json_line_per_request() {
    let backend = server::http1().route("/hello", server::ok("hi")).run().await;
    let admin = proxy::free_port().unwrap();
    let outbound = proxy::free_port().unwrap();
    let file = proxy::ConfigFile::new(&config(backend.addr(), &admin.to_string(), &outbound.to_string())).unwrap();
    let mut child = tokio::process::Command::new(proxy::binary().unwrap())
        .args(["--log-format", "json", "run", "--config"])
        .arg(file.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    eventually(secs(20), || async { client::http1(admin).get("admin", "/ready").await.is_ok_and(|r| r.status == 200) })
        .await;

    let rsp = client::curl().url(format!("http://{outbound}/hello?q=1")).header("Host", "shop").run().await.unwrap();
    assert_eq!((rsp.status.as_u16(), rsp.text().as_str()), (200, "hi"));

    let mut seen = Vec::new();
    let line = with_timeout(secs(10), "an access-log line", async {
        loop {
            let line = lines.next_line().await.unwrap().expect("stderr closed before an access-log line");
            let json: Option<serde_json::Value> = serde_json::from_str(&line).ok();
            if let Some(json) = json.filter(|j| j["target"] == "attache::access") {
                return json;
            }
            seen.push(line);
        }
    })
    .await;
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["authority"], "shop", "{line}");
    assert_eq!(line["path"], "/hello", "{line}");
    assert_eq!(line["service"], "shop", "{line}");
    assert_eq!(line["route"], "default", "{line}");
    assert_eq!(line["backend"], "shop-stable", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["bytes"], 2, "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
}
