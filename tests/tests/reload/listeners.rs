//! Listener hand-over: a listener renamed, or turned around (outbound to inbound), at the same address keeps its
//! socket, so the port never stops accepting.

use super::{backends, served};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use attache_tests::proxy::{self, TestProxy};
use attache_tests::wait::secs;
use attache_tests::{client, eventually, with_timeout};

/// One listener `name` at `address`; outbound it routes `svc` to backend `a` at `a`, inbound it sends everything
/// to the app at `a`.
fn one_listener(name: &str, address: SocketAddr, direction: &str, a: SocketAddr) -> String {
    let app = if direction == "inbound" { format!(", app: \"{a}\"") } else { String::new() };
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: {name}, address: "{address}", direction: {direction}{app} }}
services:
  - name: svc
    hosts: [svc]
    routes:
      - name: default
        backends: [{{ name: a }}]
backends:
  - {{ name: a, endpoints: ["{a}"] }}
"#
    )
}

/// A client loop sending `GET /` for `svc` to `addr`, each request on a new connection (so every one needs the
/// listener to accept), recording every response that is not a 200 from `a` (or no response at all).
struct FreshConnections {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

impl FreshConnections {
    fn start(addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let task = tokio::spawn(async move {
            let mut failures = Vec::new();
            while !s.load(Ordering::SeqCst) {
                match client::http1(addr).timeout(secs(2)).get("svc", "/").await {
                    Ok(rsp) if rsp.status == 200 && rsp.header("x-server-name") == Some("a") => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(rsp) => failures.push(format!("{} {:?} {}", rsp.status, rsp.headers, rsp.text())),
                    Err(e) => failures.push(format!("{e:#}")),
                }
            }
            failures
        });
        Self { stop, ok, task }
    }

    /// Waits until `n` more requests succeeded.
    async fn more(&self, n: usize) {
        let target = self.ok.load(Ordering::SeqCst) + n;
        eventually(secs(5), || async { self.ok.load(Ordering::SeqCst) >= target }).await;
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let failures =
            with_timeout(secs(10), "the client loop to stop", self.task).await.expect("client loop panicked");
        (self.ok.load(Ordering::SeqCst), failures)
    }
}

fn inbound_requests(m: &attache_tests::Metrics) -> f64 {
    m.sum("attache_requests_total", &[("direction", "inbound")])
}

#[tokio::test(flavor = "multi_thread")]
async fn renamed_or_turned_around_listener_keeps_serving_its_port() {
    let (a, _b) = backends().await;
    let port = proxy::free_port().unwrap();
    let proxy: TestProxy = proxy::new().config(one_listener("x", port, "outbound", a.addr())).run().await;
    assert_eq!(proxy.try_listener("x"), Some(port));
    let load = FreshConnections::start(port);
    load.more(20).await;

    // Renamed at the same address: `y` takes over the socket, `x` is gone.
    proxy.write_config(&one_listener("y", port, "outbound", a.addr()));
    eventually(secs(2), || async { proxy.try_listener("y") == Some(port) }).await;
    assert_eq!(proxy.try_listener("x"), None, "the old name is still listed");
    assert_eq!(served(&proxy).await, (2, Some("applied".to_owned())));
    load.more(20).await;

    // Turned around at the same address: the port now serves inbound.
    assert_eq!(inbound_requests(&proxy.metrics().await), 0.0);
    proxy.write_config(&one_listener("y", port, "inbound", a.addr()));
    eventually(secs(2), || async { served(&proxy).await == (3, Some("applied".to_owned())) }).await;
    eventually(secs(5), || async { inbound_requests(&proxy.metrics().await) > 0.0 }).await;
    load.more(20).await;
    assert_eq!(proxy.try_listener("y"), Some(port));

    let (ok, failures) = load.finish().await;
    assert!(failures.is_empty(), "{} of {} requests failed: {failures:#?}", failures.len(), ok + failures.len());
    let rsp = client::http1(port).get("svc", "/").await.unwrap();
    assert_eq!((rsp.status.as_u16(), rsp.header("x-server-name")), (200, Some("a")));
}

#[tokio::test(flavor = "multi_thread")]
async fn writing_the_bound_port_for_a_port_zero_listener_keeps_serving() {
    let (a, _b) = backends().await;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let proxy = proxy::new().config(one_listener("x", any, "outbound", a.addr())).run().await;
    let bound = proxy.listener("x");
    let (version, _) = served(&proxy).await;
    // The config now names the port the listener already holds: the socket is handed over, not re-bound.
    proxy.write_config(&one_listener("x", bound, "outbound", a.addr()));
    eventually(secs(5), || async { served(&proxy).await.0 > version }).await;
    eventually(secs(5), || async { proxy.try_listener("x") == Some(bound) }).await;
    let rsp = with_timeout(secs(5), "GET through the handed-over socket", client::http1(bound).get("svc", "/")).await;
    assert_eq!(rsp.unwrap().status, 200);
}
