//! Drain over HTTP/2: in-flight streams finish after the proxy sends GOAWAY; new streams on that connection are
//! refused and new connections are not accepted.

use std::time::Duration;

use attache_tests::{client, eventually, proxy, server, yaml};

#[tokio::test(flavor = "multi_thread")]
async fn http2_stream_in_flight_finishes_during_the_drain() {
    let backend = server::http2().route("/slow", server::slow(Duration::from_millis(500), "done")).run().await;
    let proxy = proxy::new().config(yaml::one_backend("web", &[backend.addr()]).protocol("http2").build()).run().await;
    let outbound = proxy.outbound();
    let client = std::sync::Arc::new(client::http2(outbound));
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.get("web", "/slow").await })
    };
    eventually(Duration::from_secs(5), || async { backend.requests() == 1 }).await;

    let drain = tokio::spawn(proxy.shutdown(Duration::from_secs(5)));
    let rsp = in_flight.await.unwrap().unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.text(), "done");
    assert!(drain.await.unwrap(), "the drain should finish within its grace period");
    // After GOAWAY the connection takes no new stream, and the listener is closed.
    assert!(client.get("web", "/slow").await.is_err());
    assert!(tokio::net::TcpStream::connect(outbound).await.is_err());
    assert_eq!(backend.requests(), 1);
}
