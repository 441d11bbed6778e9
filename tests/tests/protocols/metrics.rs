//! Metrics: what HTTP and TCP traffic leaves behind in `/metrics`, with bounded labels.

use super::*;

// ---------------------------------------------------------------------------------------------------------------
// 10. Metrics.
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn metrics_describe_http_and_tcp_traffic_without_raw_paths() {
    let web = server::auto().name("web").route_prefix("/", server::echo()).run().await;
    let echo = server::tcp_echo().run().await;
    let proxy = proxy::new()
        .config(format!(
            r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound }}
  - {{ name: tcp, address: "127.0.0.1:0", direction: outbound, protocol: opaque, tcp_backend: echo }}
services:
  - name: web
    hosts: [web.local]
    routes:
      - name: users
        match: [{{ path: {{ prefix: /users }} }}]
        backends: [{{ name: web }}]
backends:
  - {{ name: web, endpoints: ["{}"] }}
  - {{ name: echo, endpoints: ["{}"] }}
"#,
            web.addr(),
            echo.addr()
        ))
        .run()
        .await;

    // HTTP: three requests over one HTTP/1.1 connection, two over one h2 connection, one unknown host.
    let payload = "x".repeat(1000);
    let h1 = client::http1(proxy.outbound());
    for id in ["12345", "67890", "secret-token"] {
        let rsp = h1.post("web.local", &format!("/users/{id}?session=abc"), payload.clone()).await.unwrap();
        assert_eq!(rsp.status, 200, "{}", rsp.text());
    }
    let h2 = client::http2(proxy.outbound());
    for id in ["11111", "22222"] {
        let rsp = h2.get("web.local", &format!("/users/{id}")).await.unwrap();
        assert_eq!(rsp.status, 200, "{}", rsp.text());
    }
    let missing = h1.get("unknown-host.example", "/users/404").await.unwrap();
    assert_eq!(missing.status, 404);

    // TCP: one connection that stays open while we look at the gauge.
    let sent = b"ping over opaque tcp";
    let mut tcp = client::raw_tcp(proxy.listener("tcp")).await.unwrap();
    tcp.write_all(sent).await.unwrap();
    assert_eq!(&tcp.read_exact(sent.len()).await.unwrap()[..], sent);

    let m = proxy.metrics().await;
    let outbound_ok = [
        ("direction", "outbound"),
        ("service", "web"),
        ("route", "users"),
        ("backend", "web"),
        ("status_class", "2xx"),
    ];
    assert_eq!(m.value("attache_requests_total", &outbound_ok), Some(5.0), "{m}");
    assert_eq!(m.sum("attache_requests_total", &[("status_class", "4xx")]), 1.0, "{m}");

    let latency = [("direction", "outbound"), ("service", "web"), ("route", "users"), ("backend", "web")];
    let inf: Vec<_> = latency.iter().copied().chain([("le", "+Inf")]).collect();
    assert_eq!(m.value("attache_request_duration_seconds_bucket", &inf), Some(5.0), "{m}");
    assert_eq!(m.value("attache_request_duration_seconds_count", &latency), Some(5.0), "{m}");
    let buckets: Vec<_> = m.matching("attache_request_duration_seconds_bucket", &latency).collect();
    assert!(buckets.len() > 2, "a histogram has several buckets: {m}");
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value), "buckets are cumulative: {m}");
    assert!(m.value("attache_request_duration_seconds_sum", &latency).is_some_and(|s| s > 0.0), "{m}");

    let conns = |listener: &str, protocol: &str| {
        m.value("attache_connections_total", &[("listener", listener), ("protocol", protocol)]).unwrap_or(0.0)
    };
    assert_eq!(conns("outbound", "http1"), 1.0, "{m}");
    assert_eq!(conns("outbound", "http2"), 1.0, "{m}");
    assert_eq!(conns("tcp", "tcp"), 1.0, "{m}");
    assert_eq!(m.value("attache_open_connections", &[("listener", "tcp")]), Some(1.0), "{m}");
    assert_eq!(m.value("attache_open_connections", &[("listener", "outbound")]), Some(2.0), "{m}");

    let http_read = m.value("attache_tcp_read_bytes_total", &[("listener", "outbound")]).unwrap_or(0.0);
    let http_written = m.value("attache_tcp_write_bytes_total", &[("listener", "outbound")]).unwrap_or(0.0);
    assert!(http_read >= 3.0 * 1000.0, "read {http_read} < the 3000 body bytes sent: {m}");
    assert!(http_written >= 3.0 * 1000.0, "wrote {http_written} < the 3000 echoed body bytes: {m}");

    // Half-close the TCP connection and read the rest; then the byte counters are exact.
    tcp.shutdown_write().await.unwrap();
    let rest = tcp.read_to_end().await.unwrap();
    assert_eq!(&rest[..], &server::tcp_echo_reply(sent)[sent.len()..]);
    let reply_len = server::tcp_echo_reply(sent).len() as f64;
    drop(tcp);
    drop(h1);
    drop(h2);
    let m = eventually(secs(5), || async {
        let m = proxy.metrics().await;
        let open = m.sum("attache_open_connections", &[]);
        (open == 0.0).then_some(m)
    })
    .await;
    assert_eq!(m.value("attache_tcp_read_bytes_total", &[("listener", "tcp")]), Some(sent.len() as f64), "{m}");
    assert_eq!(m.value("attache_tcp_write_bytes_total", &[("listener", "tcp")]), Some(reply_len), "{m}");

    // Label values are config names, directions and classes: never paths, queries or client-supplied hosts.
    for sample in m.samples() {
        for (key, value) in &sample.labels {
            for raw in ["/", "12345", "secret", "session", "unknown-host"] {
                assert!(!value.contains(raw), "{}{{{key}={value:?}}} carries raw request data", sample.name);
            }
        }
    }
}
