//! The control plane end to end: a directory of mesh YAML served to in-process sidecars over real sockets, as users
//! see it — what the sidecars route to, what `/v1/status` and `attache status` say, what the sidecars' and the
//! control plane's metrics count.
//!
//! - `propagation`: 50 sidecars ACK an edit, timed;
//! - `rejection`: an invalid directory is never published, a config a sidecar cannot apply is NACKed;
//! - `outage`: sidecars serve on while the control plane is down, reconnect, and restart from their saved copy;
//! - `flap`: a control plane stopped and started every second leaks no file descriptors;
//! - `canary`: `attache canary set` shifts the split at once, and the split survives a restart;
//! - `cli`: the real `attache check` and `attache status`.

use std::fmt::Display;

use attache_config::wire::{SidecarStatus, StatusView};
use attache_tests::client;
use attache_tests::proxy::TestProxy;
use attache_tests::server::{self, Server};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

mod canary;
mod cli;
mod flap;
mod identity;
mod outage;
mod propagation;
mod rejection;
mod webhook;

/// Tests that count this process's file descriptors or time 50 sidecars take this exclusively; every other test
/// takes it shared, so no other test of this binary opens sockets or adds load meanwhile.
static EXCLUSIVE: RwLock<()> = RwLock::const_new(());

/// For a test that must run with no other test of this binary.
async fn alone() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().await
}

/// For every other test.
async fn among_others() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().await
}

/// `routing.yaml`: service `api` (host `api`) whose route `default` sends everything to `target`, and the backends
/// `api-v1` and `api-v2`. Block style, so errors have exact positions.
fn routing(v1: impl Display, v2: impl Display, target: &str) -> String {
    format!(
        r#"services:
  - name: api
    hosts:
      - api
    routes:
      - name: default
        backends:
          - name: {target}
backends:
  - name: api-v1
    endpoints:
      - "{v1}"
  - name: api-v2
    endpoints:
      - "{v2}"
"#
    )
}

/// `sidecars.yaml`: one sidecar spec per `(service, calls)`, each with admin and one outbound listener on
/// `127.0.0.1:0`.
fn sidecars(list: &[(&str, &[&str])]) -> String {
    let mut yaml = String::from("sidecars:\n");
    for (service, calls) in list {
        yaml.push_str(&format!(
            "  - service: {service}\n    admin: {{ address: \"127.0.0.1:0\" }}\n    limits: {{ connect_timeout: 500ms }}\n    \
             listeners:\n      - {{ name: outbound, address: \"127.0.0.1:0\", direction: outbound }}\n    calls: [{}]\n",
            calls.join(", ")
        ));
    }
    yaml
}

/// Two backends, `api-v1` and `api-v2`, answering every path with 200 and their name.
async fn api_backends() -> (Server, Server) {
    let v1 = server::http1().name("api-v1").route_prefix("/", server::ok("api-v1")).run().await;
    let v2 = server::http1().name("api-v2").route_prefix("/", server::ok("api-v2")).run().await;
    (v1, v2)
}

/// The mesh most tests start from: service `api` routed to `api-v1` (of `api-v1` and `api-v2`, returned to keep them
/// serving), and sidecar `web` calling it.
async fn api_mesh() -> (Server, Server, attache_tests::mesh::TestControlPlane) {
    let (v1, v2) = api_backends().await;
    let cp = attache_tests::mesh::control_plane()
        .file("routing.yaml", routing(v1.addr(), v2.addr(), "api-v1"))
        .file("sidecars.yaml", sidecars(&[("web", &["api"])]))
        .run()
        .await;
    (v1, v2, cp)
}

/// Which backend answered `GET /` for `host` through `sidecar`'s outbound listener; panics unless it is a 200.
async fn routed(sidecar: &TestProxy, host: &str) -> String {
    let rsp = client::http1(sidecar.outbound()).get(host, "/").await.expect("a request through the sidecar");
    assert_eq!(rsp.status, 200, "through {}: {}", sidecar.outbound(), rsp.text());
    rsp.header("x-server-name").expect("x-server-name").to_owned()
}

/// The status of sidecar `instance`; panics if the control plane does not know it.
fn sidecar<'a>(view: &'a StatusView, instance: &str) -> &'a SidecarStatus {
    view.sidecars
        .iter()
        .find(|s| s.node.instance == instance)
        .unwrap_or_else(|| panic!("the status has no sidecar {instance}: {view:#?}"))
}

/// The version the sidecar serves, as its admin `/config` shows it.
async fn served_version(sidecar: &TestProxy) -> u64 {
    let view = sidecar.config_view().await;
    view["version"].as_u64().unwrap_or_else(|| panic!("/config has no version: {view:#}"))
}

/// The 1-based line and column where `needle` first appears in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, c + 1)))
        .unwrap_or_else(|| panic!("{needle:?} not in {text}"))
}
