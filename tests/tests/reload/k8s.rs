//! Hot reload the Kubernetes way: ConfigMap symlink swaps are seen, and unchanged backends keep their pools.

use super::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use attache_tests::proxy::{self};
use attache_tests::wait::secs;
use attache_tests::{client, eventually};

// ---------------------------------------------------------------------------------------------------------------
// 4. Kubernetes ConfigMap volume.

/// A directory laid out like a mounted ConfigMap: `config.yaml -> ..data/config.yaml`, `..data -> ..<timestamp>`;
/// updated the way the kubelet does it (new timestamped dir, `..data_tmp` symlink renamed over `..data`).
struct ConfigMapVolume {
    root: PathBuf,
    current: String,
    generation: usize,
}

impl ConfigMapVolume {
    fn new(yaml: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let root = std::env::temp_dir().join(format!("attache-configmap-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let mut volume = Self { root, current: String::new(), generation: 0 };
        let dir = volume.write_generation(yaml);
        std::os::unix::fs::symlink(&dir, volume.root.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/config.yaml", volume.root.join("config.yaml")).unwrap();
        volume.current = dir;
        volume
    }

    /// The path the pod's process is given.
    fn path(&self) -> PathBuf {
        self.root.join("config.yaml")
    }

    fn update(&mut self, yaml: &str) {
        let dir = self.write_generation(yaml);
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(&dir, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
        std::fs::remove_dir_all(self.root.join(&self.current)).unwrap();
        self.current = dir;
    }

    /// Writes `yaml` into a new timestamped directory; returns its name (relative, as the kubelet links it).
    fn write_generation(&mut self, yaml: &str) -> String {
        self.generation += 1;
        let name = format!("..2024_06_01_12_00_{:02}.{}", self.generation, 100_000_000 + self.generation);
        let dir = self.root.join(&name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("config.yaml"), yaml).unwrap();
        name
    }
}

impl Drop for ConfigMapVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

#[tokio::test(flavor = "multi_thread")]
async fn configmap_symlink_swap_is_applied() {
    let (a, b) = backends().await;
    let mut volume = ConfigMapVolume::new(&config(a.addr(), b.addr(), "a"));
    assert!(is_symlink(&volume.path()) && is_symlink(&volume.root.join("..data")));
    let proxy = proxy::new().config_at(volume.path()).run().await;
    let client = client::http1(proxy.outbound());
    assert_eq!(client.get("svc", "/").await.unwrap().header("x-server-name"), Some("a"));

    for (generation, target) in [(2, "b"), (3, "a")] {
        volume.update(&config(a.addr(), b.addr(), target));
        // Seen through the file watch, not the slow periodic re-check.
        eventually(secs(1), || async { served(&proxy).await == (generation, Some("applied".to_owned())) }).await;
        let rsp = client.get("svc", "/").await.unwrap();
        assert_eq!((rsp.status.as_u16(), rsp.header("x-server-name")), (200, Some(target)));
    }
    assert!(proxy.config_view().await["source"].as_str().unwrap().ends_with("config.yaml"));
}

// ---------------------------------------------------------------------------------------------------------------
// 5. Connection pools.

/// Backend `a` behind the default route; with `v2`, the route also sets `x-config: v2` on responses, and a new
/// route `/b` goes to a new backend `b`.
fn pool_config(a: SocketAddr, b: SocketAddr, v2: bool) -> String {
    let (filter, extra_route, extra_backend) = if v2 {
        (
            "        filters: { response_headers: { set: [{ name: x-config, value: v2 }] } }\n",
            "      - name: to-b\n        match: [{ path: { prefix: /b } }]\n        backends: [{ name: b }]\n",
            format!("  - {{ name: b, endpoints: [\"{b}\"] }}\n"),
        )
    } else {
        ("", "", String::new())
    };
    format!(
        r#"
admin: {{ address: "127.0.0.1:0" }}
listeners:
  - {{ name: outbound, address: "127.0.0.1:0", direction: outbound }}
services:
  - name: svc
    hosts: [svc]
    routes:
{extra_route}      - name: default
{filter}        backends: [{{ name: a }}]
backends:
  - {{ name: a, endpoints: ["{a}"] }}
{extra_backend}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn unchanged_backends_keep_their_connections_across_a_reload() {
    let (a, b) = backends().await;
    let proxy = proxy::new().config(pool_config(a.addr(), b.addr(), false)).run().await;
    let client = client::http1(proxy.outbound());
    for _ in 0..20 {
        let rsp = client.get("svc", "/").await.unwrap();
        assert_eq!((rsp.status.as_u16(), rsp.header("x-config")), (200, None));
    }
    let upstream = a.connections();
    assert!(upstream >= 1);

    proxy.write_config(&pool_config(a.addr(), b.addr(), true));
    // Keep sending until the new route config shows.
    eventually(secs(2), || async {
        client.get("svc", "/").await.is_ok_and(|r| r.status == 200 && r.header("x-config") == Some("v2"))
    })
    .await;
    for _ in 0..20 {
        let rsp = client.get("svc", "/").await.unwrap();
        assert_eq!(
            (rsp.status.as_u16(), rsp.header("x-config"), rsp.header("x-server-name")),
            (200, Some("v2"), Some("a"))
        );
    }
    assert_eq!(client.get("svc", "/b/x").await.unwrap().header("x-server-name"), Some("b"));
    assert_eq!(a.connections(), upstream, "the reload dropped a's connection pool");
    assert_eq!(client.connections_opened(), 1);
    // Not a timing artefact: a's connections stay put while traffic continues.
    for _ in 0..20 {
        assert_eq!(client.get("svc", "/").await.unwrap().status, 200);
    }
    assert_eq!(a.connections(), upstream, "a's connection pool was replaced after the reload");
}
