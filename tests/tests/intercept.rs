//! Transparent interception in a network namespace the test makes: `attache-proxy init` installs the iptables
//! rules, the sidecar runs as its own UID, and the "app" (curl and `attache-proxy echo` inside the namespace) is not
//! told about the proxy at all.

use std::time::Duration;

use attache_tests::netns::{self, Netns};
use attache_tests::{proxy, server};

const PROXY_UID: &str = "1337";
// Fixed ports, on purpose: they are the targets of the iptables REDIRECT rules `init` writes (as in a pod), and they
// are bound only inside the network namespace this test creates, where nothing else listens.
const OUTBOUND_PORT: u16 = 4140;
const INBOUND_PORT: u16 = 4143;
const ADMIN_PORT: u16 = 9901;
const APP_PORT: u16 = 8080;

fn config(remote: std::net::SocketAddr) -> String {
    format!(
        r#"admin: {{ address: "0.0.0.0:{ADMIN_PORT}" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:{OUTBOUND_PORT}", direction: outbound }}
  - {{ name: inbound, address: "0.0.0.0:{INBOUND_PORT}", direction: inbound, app: "127.0.0.1:{APP_PORT}" }}
services:
  - name: remote
    hosts: [remote]
    addresses: ["{remote}"]
    routes:
      - name: default
        backends: [{{ name: remote }}]
backends:
  - {{ name: remote, endpoints: ["{remote}"] }}
"#
    )
}

async fn curl_in(ns: &Netns, url: &str) -> (String, String) {
    let out = ns
        .command("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()
        .await
        .unwrap_or_else(|e| panic!("curl in {}: {e}", ns.name));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    (status.to_owned(), body.to_owned())
}

#[tokio::test]
async fn iptables_interception_sends_the_apps_traffic_through_the_sidecar_both_ways() {
    if !netns::available() {
        // Only root can make namespaces; CI runs as root, so this runs there.
        eprintln!("skipped: needs root and iproute2");
        return;
    }
    let ns = Netns::create(1).unwrap_or_else(|e| panic!("{e:#}"));
    let remote = server::http1().name("remote").bind_ip(ns.host_ip.into()).route("/hello", server::echo()).run().await;
    let other = server::http1().name("other").bind_ip(ns.host_ip.into()).route("/hello", server::echo()).run().await;
    let dir = attache_tests::TempDir::new("intercept");
    let file = dir.path().join("sidecar.yaml");
    std::fs::write(&file, config(remote.addr())).unwrap_or_else(|e| panic!("{e}"));
    let binary = proxy::binary().unwrap_or_else(|e| panic!("{e:#}"));
    let binary = binary.to_string_lossy().into_owned();

    // The init step, twice: the second run changes nothing.
    let ports = [OUTBOUND_PORT, INBOUND_PORT, APP_PORT, ADMIN_PORT].map(|p| p.to_string());
    let init = [
        binary.as_str(),
        "init",
        "--proxy-uid",
        PROXY_UID,
        "--outbound-port",
        &ports[0],
        "--inbound-port",
        &ports[1],
        "--inbound-ports",
        &ports[2],
        "--skip-inbound-ports",
        &ports[3],
    ];
    let first = ns.exec_ok(&init).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(first.contains("jumps added"), "{first}");
    let again = ns.exec_ok(&init).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(again.contains("jumps already in place"), "{again}");
    let rules = ns.exec_ok(&["iptables", "-t", "nat", "-S"]).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(rules.matches("-j ATTACHE_OUTPUT").count(), 1, "{rules}");

    // The app and its sidecar, the sidecar as its own UID.
    let _app = ns
        .command(&binary)
        .args(["echo", "--listen", &format!("127.0.0.1:{APP_PORT}"), "--name", "app"])
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let _sidecar = ns
        .command("setpriv")
        .args(["--reuid", PROXY_UID, "--regid", PROXY_UID, "--clear-groups", &binary, "run", "--config"])
        .arg(&file)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let admin = std::net::SocketAddr::from((ns.ns_ip, ADMIN_PORT));
    attache_tests::eventually(Duration::from_secs(20), || async {
        attache_tests::client::http1(admin).get("admin", "/ready").await.is_ok_and(|r| r.status == 200)
    })
    .await;

    // Outbound to a mesh service's address: intercepted, proxied (the proxy adds x-request-id), counted.
    let (status, body) = curl_in(&ns, &format!("http://{}/hello", remote.addr())).await;
    assert_eq!(status, "200", "{body}");
    assert_eq!(remote.requests(), 1, "one request, no loop");
    assert!(remote.last_headers().contains_key("x-request-id"), "it came through the sidecar");
    let metrics = attache_tests::Metrics::parse(
        &attache_tests::client::http1(admin).get("admin", "/metrics").await.unwrap_or_else(|e| panic!("{e:#}")).text(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let outbound = [("direction", "outbound"), ("service", "remote"), ("status_class", "2xx")];
    assert_eq!(metrics.sum("attache_requests_total", &outbound), 1.0);

    // Outbound anywhere else: forwarded unchanged as TCP.
    let (status, _) = curl_in(&ns, &format!("http://{}/hello", other.addr())).await;
    assert_eq!(status, "200");
    assert_eq!(other.requests(), 1);
    assert!(!other.last_headers().contains_key("x-request-id"), "passed through untouched");

    // Inbound to the app's port (the app listens on loopback only): through the inbound listener.
    let inbound = attache_tests::client::http1(std::net::SocketAddr::from((ns.ns_ip, APP_PORT)))
        .get("app", "/hi")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(inbound.status, 200);
    assert!(inbound.text().contains("app"), "{}", inbound.text());
    let metrics = attache_tests::Metrics::parse(
        &attache_tests::client::http1(admin).get("admin", "/metrics").await.unwrap_or_else(|e| panic!("{e:#}")).text(),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(metrics.sum("attache_requests_total", &[("direction", "inbound"), ("status_class", "2xx")]), 1.0);
    assert!(metrics.sum("attache_connections_total", &[("direction", "outbound"), ("protocol", "tcp")]) >= 1.0);
}
