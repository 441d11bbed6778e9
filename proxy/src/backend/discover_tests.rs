use std::sync::Mutex;

use attache_config::model::UpstreamProtocol;

use super::*;

fn backend(endpoints: Vec<EndpointAddr>) -> Arc<Backend> {
    Arc::new(Backend {
        name: Arc::from("b"),
        endpoints,
        protocol: UpstreamProtocol::Http1,
        dns_refresh: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
        breaker: None,
        bulkhead: attache_config::model::Bulkhead { max_concurrent: 10, max_pending: 10 },
        health_check: None,
        tls: None,
    })
}

/// A resolver whose answer the test sets; `None` makes lookups fail.
fn scripted() -> (Resolver, Arc<Mutex<Option<Vec<SocketAddr>>>>) {
    let answer: Arc<Mutex<Option<Vec<SocketAddr>>>> = Arc::default();
    let a = answer.clone();
    let resolver: Resolver = Arc::new(move |_, _| {
        let got = a.lock().unwrap().clone();
        Box::pin(async move { got.ok_or_else(|| std::io::Error::other("SERVFAIL")) })
    });
    (resolver, answer)
}

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], 80))
}

type Harness = (Discovery, watch::Receiver<Endpoints>, watch::Sender<Arc<Backend>>);

fn discovery(b: &Arc<Backend>, resolver: Resolver) -> Harness {
    let (cfg_tx, cfg_rx) = watch::channel(b.clone());
    let (tx, rx) = watch::channel(Endpoints::from(Vec::new()));
    let pool = PoolSettings { idle_timeout: Duration::from_secs(1), max_idle: 1 };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::metrics::Metrics::register(&mut registry).discovery;
    let credentials = crate::tls::CredentialStore::new(Default::default());
    (Discovery::new(cfg_rx, tx, pool, metrics, resolver, credentials), rx, cfg_tx)
}

fn addrs(rx: &watch::Receiver<Endpoints>) -> Vec<SocketAddr> {
    rx.borrow().iter().map(|e| e.addr).collect()
}

/// The state object of `addr`, to check it survives changes.
fn state_of(rx: &watch::Receiver<Endpoints>, addr: SocketAddr) -> Arc<super::super::balance::EndpointState> {
    rx.borrow().iter().find(|e| e.addr == addr).cloned().expect("endpoint present")
}

#[tokio::test(start_paused = true)]
async fn dns_failure_keeps_the_last_good_answer_and_changes_are_diffed() {
    let b = backend(vec![EndpointAddr::Dns { host: "svc".into(), port: 80 }]);
    let (resolver, answer) = scripted();
    *answer.lock().unwrap() = Some(vec![addr(1), addr(2)]);
    let (d, rx, _cfg) = discovery(&b, resolver);
    let task = tokio::spawn(async move {
        let mut d = d;
        d.sync(&b).await.unwrap();
        d.run().await;
    });
    tokio::task::yield_now().await;
    assert_eq!(addrs(&rx), [addr(1), addr(2)]);
    let kept = state_of(&rx, addr(2));

    // The lookup fails: nothing changes.
    *answer.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(addrs(&rx), [addr(1), addr(2)]);

    // A new answer: addr(2) keeps its state (load estimate, breaker, connections).
    *answer.lock().unwrap() = Some(vec![addr(2), addr(3)]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(addrs(&rx), [addr(2), addr(3)]);
    assert!(Arc::ptr_eq(&kept, &state_of(&rx, addr(2))));
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn config_change_updates_static_endpoints_in_place() {
    let b = backend(vec![EndpointAddr::Socket(addr(1)), EndpointAddr::Socket(addr(2))]);
    let (resolver, _) = scripted();
    let (d, rx, cfg) = discovery(&b, resolver);
    let task = tokio::spawn(async move {
        let mut d = d;
        d.sync(&b).await.unwrap();
        d.run().await;
    });
    tokio::task::yield_now().await;
    let kept = state_of(&rx, addr(2));
    cfg.send_replace(backend(vec![EndpointAddr::Socket(addr(2)), EndpointAddr::Socket(addr(4))]));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(addrs(&rx), [addr(2), addr(4)]);
    assert!(Arc::ptr_eq(&kept, &state_of(&rx, addr(2))));
    task.abort();
}
