//! Hot reload: a watched config file is re-read and applied under load without failing a request; invalid edits are
//! rejected and the last good config keeps serving; listeners are re-bound only when their address changes;
//! Kubernetes ConfigMap symlink swaps are seen; unchanged backends keep their connection pools.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use attache_tests::proxy::{self, TestProxy};
use attache_tests::server::{self, Server};
use attache_tests::wait::secs;
use attache_tests::{client, eventually, with_timeout};

/// One outbound listener, service `svc` whose default route sends everything to `target`, backends `a` and `b`.
fn config(a: SocketAddr, b: SocketAddr, target: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound }}
services:
  - name: svc
    hosts: [svc]
    routes:
      - name: default
        backends: [{{ name: {target} }}]
backends:
  - {{ name: a, endpoints: ["{a}"] }}
  - {{ name: b, endpoints: ["{b}"] }}
"#
    )
}

/// Two backends named `a` and `b` answering every path with 200 and their name.
async fn backends() -> (Server, Server) {
    let a = server::http1().name("a").route_prefix("/", server::ok("a")).run().await;
    let b = server::http1().name("b").route_prefix("/", server::ok("b")).run().await;
    (a, b)
}

/// The served config version and last reload result, as `/config` shows them.
async fn served(proxy: &TestProxy) -> (u64, Option<String>) {
    let view = proxy.config_view().await;
    let version = view["version"].as_u64().expect("/config has a numeric version");
    (version, view["last_reload"]["result"].as_str().map(str::to_owned))
}

// ---------------------------------------------------------------------------------------------------------------
// 1. Reload under continuous load.

/// Client loops hammering a listener, each on its own keep-alive connection, counting every response that is not
/// a 200 (or no response at all).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    loops: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(addr: SocketAddr, loops: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let loops = (0..loops)
            .map(|i| {
                let (stop, ok) = (stop.clone(), ok.clone());
                tokio::spawn(async move {
                    let client = client::http1(addr).timeout(secs(5));
                    let mut failures = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        match client.get("svc", "/").await {
                            Ok(rsp) if rsp.status == 200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(rsp) => failures.push(format!("loop {i}: {} {}", rsp.status, rsp.text())),
                            Err(e) => failures.push(format!("loop {i}: {e:#}")),
                        }
                    }
                    failures
                })
            })
            .collect();
        Self { stop, ok, loops }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::SeqCst)
    }

    /// Stops every loop; returns how many requests got a 200 and every failure seen.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for l in self.loops {
            failures.extend(with_timeout(secs(10), "a client loop to stop", l).await.expect("client loop panicked"));
        }
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

/// Rewrites the config to send everything to `to` and checks, while `loops` clients keep sending, that `to` starts
/// receiving within a second of the write and `from` stops receiving right after.
async fn switch(proxy: &TestProxy, yaml: &str, from: &Server, to: &Server, loops: usize) {
    let to_before = to.requests();
    proxy.write_config(yaml);
    // The whole budget, from the write: file event, debounce, validation, publish.
    eventually(secs(1), || async { to.requests() > to_before }).await;
    let from_at_switch = from.requests();
    // Let every loop get plenty more requests through on the new config.
    let to_now = to.requests();
    eventually(secs(5), || async { to.requests() >= to_now + 20 * loops }).await;
    // Once one request was routed to `to`, every later one is too; only requests each loop had already routed to
    // `from` (at most one per loop) can still arrive there.
    let late = from.requests() - from_at_switch;
    assert!(late <= loops, "{} still received {late} requests after the switch to {}", from.name(), to.name());
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_under_load_fails_no_request() {
    const LOOPS: usize = 3;
    let (a, b) = backends().await;
    let proxy = proxy::new().config(config(a.addr(), b.addr(), "a")).run().await;
    let load = Load::start(proxy.outbound(), LOOPS);
    eventually(secs(5), || async { load.ok() >= 50 }).await;
    assert_eq!(b.requests(), 0, "b is not routed to yet");

    // a -> b -> a -> b: every switch applies within a second, under load.
    switch(&proxy, &config(a.addr(), b.addr(), "b"), &a, &b, LOOPS).await;
    assert_eq!(served(&proxy).await, (2, Some("applied".to_owned())));
    switch(&proxy, &config(a.addr(), b.addr(), "a"), &b, &a, LOOPS).await;
    assert_eq!(served(&proxy).await, (3, Some("applied".to_owned())));
    switch(&proxy, &config(a.addr(), b.addr(), "b"), &a, &b, LOOPS).await;
    assert_eq!(served(&proxy).await, (4, Some("applied".to_owned())));

    let (ok, failures) = load.finish().await;
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:#?}", failures.len(), ok + failures.len());
    assert_eq!(a.requests() + b.requests(), ok, "every 200 came from a backend");
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.sum("attache_config_reloads_total", &[("result", "applied")]), 3.0, "{metrics}");
    assert_eq!(metrics.sum("attache_config_reloads_total", &[("result", "rejected")]), 0.0, "{metrics}");
}

// ---------------------------------------------------------------------------------------------------------------
// 2. Invalid edits.

/// Like [`config`] in block style (so errors have precise locations), with a route to `target`.
fn block_config(a: SocketAddr, b: SocketAddr, target: &str) -> String {
    format!(
        r#"admin:
  address: 127.0.0.1:0
listeners:
  - name: outbound
    address: 127.0.0.1:0
    direction: outbound
services:
  - name: svc
    hosts:
      - svc
    routes:
      - name: default
        backends:
          - name: {target}
backends:
  - name: a
    endpoints:
      - "{a}"
  - name: b
    endpoints:
      - "{b}"
"#
    )
}

/// The 1-based line and column where `needle` first appears in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_edit_is_rejected_and_the_last_good_config_keeps_serving() {
    let (a, b) = backends().await;
    let proxy = proxy::new().config(block_config(a.addr(), b.addr(), "a")).run().await;
    let client = client::http1(proxy.outbound());
    assert_eq!(client.get("svc", "/").await.unwrap().header("x-server-name"), Some("a"));

    // A route naming a backend that does not exist.
    let broken = block_config(a.addr(), b.addr(), "missing");
    let (line, column) = position(&broken, "name: missing");
    proxy.write_config(&broken);
    eventually(secs(2), || async { served(&proxy).await.1.as_deref() == Some("rejected") }).await;
    let view = proxy.config_view().await;
    assert_eq!(view["version"], 1, "a rejected edit does not change the version: {view:#}");
    let errors = view["last_reload"]["errors"].as_array().unwrap_or_else(|| panic!("no errors: {view:#}"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let error = errors[0].as_str().unwrap();
    assert!(error.contains("services[0].routes[0].backends[0].name"), "field path missing: {error}");
    assert!(error.contains(&format!("line {line}, column {column}")), "expected line {line}: {error}");
    assert!(error.contains("missing"), "the unknown name is not shown: {error}");
    // The served config is still the last good one.
    assert_eq!(view["config"]["services"][0]["routes"][0]["backends"][0]["name"], "a", "{view:#}");
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.sum("attache_config_reloads_total", &[("result", "rejected")]), 1.0, "{metrics}");
    assert_eq!(metrics.sum("attache_config_reloads_total", &[("result", "applied")]), 0.0, "{metrics}");
    assert_eq!(metrics.value("attache_config_version", &[]), Some(1.0), "{metrics}");

    // Traffic is untouched.
    for _ in 0..20 {
        let rsp = client.get("svc", "/").await.unwrap();
        assert_eq!((rsp.status.as_u16(), rsp.header("x-server-name")), (200, Some("a")));
    }
    assert_eq!(b.requests(), 0);

    // A good edit applies again.
    proxy.write_config(&block_config(a.addr(), b.addr(), "b"));
    eventually(secs(2), || async { served(&proxy).await == (2, Some("applied".to_owned())) }).await;
    eventually(secs(1), || async {
        client.get("svc", "/").await.is_ok_and(|r| r.status == 200 && r.header("x-server-name") == Some("b"))
    })
    .await;
    assert!(proxy.config_view().await["last_reload"].get("errors").is_none(), "an applied reload has no errors");

    // A typo (unknown field) is rejected too, naming the field and where it is.
    let typo = block_config(a.addr(), b.addr(), "b").replace("    direction: outbound", "    directon: outbound");
    let (line, _) = position(&typo, "directon");
    proxy.write_config(&typo);
    eventually(secs(2), || async { served(&proxy).await.1.as_deref() == Some("rejected") }).await;
    let view = proxy.config_view().await;
    assert_eq!(view["version"], 2, "{view:#}");
    let error = view["last_reload"]["errors"][0].as_str().unwrap_or_else(|| panic!("no errors: {view:#}"));
    assert!(error.contains("listeners[0]") && error.contains("directon"), "{error}");
    assert!(error.contains(&format!("line {line}")), "expected line {line}: {error}");
    let rsp = client.get("svc", "/").await.unwrap();
    assert_eq!((rsp.status.as_u16(), rsp.header("x-server-name")), (200, Some("b")));
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.sum("attache_config_reloads_total", &[("result", "rejected")]), 2.0, "{metrics}");
    assert_eq!(metrics.sum("attache_config_reloads_total", &[("result", "applied")]), 1.0, "{metrics}");
    assert_eq!(metrics.value("attache_config_version", &[]), Some(2.0), "{metrics}");
}

// ---------------------------------------------------------------------------------------------------------------
// 3. Listeners.

/// Listeners `x` (port 0) and `y` (at `y`), one service routing to `target`.
fn two_listeners(a: SocketAddr, b: SocketAddr, y: &str, target: &str) -> String {
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: x, address: "127.0.0.1:0", direction: outbound }}
  - {{ name: y, address: "{y}", direction: outbound }}
services:
  - name: svc
    hosts: [svc]
    routes:
      - name: default
        backends: [{{ name: {target} }}]
backends:
  - {{ name: a, endpoints: ["{a}"] }}
  - {{ name: b, endpoints: ["{b}"] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn listeners_are_rebound_only_when_their_address_changes() {
    let (a, b) = backends().await;
    let proxy = proxy::new().config(two_listeners(a.addr(), b.addr(), "127.0.0.1:0", "a")).run().await;
    let (x, y_old) = (proxy.listener("x"), proxy.listener("y"));
    let on_x = client::http1(x);
    assert_eq!(on_x.get("svc", "/").await.unwrap().header("x-server-name"), Some("a"));

    // Routes only: the kept-alive connection on x sees the new routes, and nothing is re-bound.
    proxy.write_config(&two_listeners(a.addr(), b.addr(), "127.0.0.1:0", "b"));
    eventually(secs(2), || async {
        on_x.get("svc", "/").await.is_ok_and(|r| r.status == 200 && r.header("x-server-name") == Some("b"))
    })
    .await;
    assert_eq!(on_x.connections_opened(), 1, "the client's connection on x was closed by the reload");
    assert_eq!((proxy.listener("x"), proxy.listener("y")), (x, y_old), "a route change re-bound a listener");
    assert_eq!(client::http1(y_old).get("svc", "/").await.unwrap().status, 200);

    // y moves: the new address serves, the old one stops accepting, x is untouched.
    let y_new = proxy::free_port().unwrap();
    proxy.write_config(&two_listeners(a.addr(), b.addr(), &y_new.to_string(), "b"));
    eventually(secs(2), || async {
        client::http1(y_new).timeout(secs(1)).get("svc", "/").await.is_ok_and(|r| r.status == 200)
    })
    .await;
    assert_eq!(proxy.listener("y"), y_new);
    eventually(secs(2), || async { tokio::net::TcpStream::connect(y_old).await.is_err() }).await;
    let rsp = on_x.get("svc", "/").await.unwrap();
    assert_eq!((rsp.status.as_u16(), rsp.header("x-server-name")), (200, Some("b")));
    assert_eq!(on_x.connections_opened(), 1, "the client's connection on x was closed by moving y");
    assert_eq!(proxy.listener("x"), x);
}

mod k8s;

// ---------------------------------------------------------------------------------------------------------------
// 5. Metrics of removed backends.

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_backend_leaves_no_endpoint_gauge_behind() {
    let (a, b) = backends().await;
    let both = config(a.addr(), b.addr(), "a");
    let proxy = proxy::new().config(both.clone()).run().await;
    let gauge =
        |m: &attache_tests::Metrics, backend: &str| m.value("attache_backend_endpoints", &[("backend", backend)]);
    eventually(secs(5), || async { gauge(&proxy.metrics().await, "b") == Some(1.0) }).await;

    let b_line = format!("  - {{ name: b, endpoints: [\"{}\"] }}\n", b.addr());
    let only_a = both.replace(&b_line, "");
    assert_ne!(only_a, both, "the test config has no line for backend b");
    proxy.write_config(&only_a);
    eventually(secs(2), || async { served(&proxy).await == (2, Some("applied".to_owned())) }).await;

    let metrics = eventually(secs(5), || async {
        let m = proxy.metrics().await;
        let gone = m.matching("attache_backend_endpoints", &[("backend", "b")]).next().is_none();
        gone.then_some(m)
    })
    .await;
    assert_eq!(gauge(&metrics, "a"), Some(1.0), "the remaining backend's series went too:\n{metrics}");
    let rsp = client::http1(proxy.outbound()).get("svc", "/").await.unwrap();
    assert_eq!((rsp.status.as_u16(), rsp.header("x-server-name")), (200, Some("a")));
}

mod listeners;
