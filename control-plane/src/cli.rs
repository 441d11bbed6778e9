//! The `attache` commands that talk to a running control plane (`status`, `canary`) or read a directory
//! (`check`), each returning the text it prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use attache_config::wire::{CanaryView, CanaryWeights, SidecarStatus, StatusView, CANARY_PATH, STATUS_PATH};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// How long a CLI request to the control plane may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where the control plane is, and (for an mTLS API) the admin certificate to call it with.
#[derive(Clone, Debug)]
pub struct Api {
    pub addr: String,
    /// `cert.pem`, `key.pem`, `bundle.pem`.
    pub tls_dir: Option<PathBuf>,
}

/// `attache status`: the mesh's version and validity, then every sidecar and what it runs.
pub async fn status(api: &Api) -> anyhow::Result<String> {
    let view = status_view(api).await?;
    Ok(render_status(&view, attache_proxy::source::unix_now()))
}

/// `GET /v1/status`, as data.
pub async fn status_view(api: &Api) -> anyhow::Result<StatusView> {
    let (code, body) = request(api, Method::GET, STATUS_PATH, None).await?;
    if code != StatusCode::OK {
        bail!("the control plane answered {code}: {}", String::from_utf8_lossy(&body).trim_end());
    }
    serde_json::from_slice(&body).context("reading the status")
}

/// `attache canary set <service> <backend>=<weight>...`.
pub async fn canary_set(api: &Api, service: &str, weights: &[String]) -> anyhow::Result<String> {
    let mut split = BTreeMap::new();
    for w in weights {
        let (backend, weight) = w.split_once('=').with_context(|| format!("`{w}`: expected <backend>=<weight>"))?;
        let weight: i64 = weight.trim().parse().with_context(|| format!("`{w}`: the weight is not a whole number"))?;
        split.insert(backend.trim().to_owned(), weight);
    }
    if split.is_empty() {
        bail!("name at least one <backend>=<weight>");
    }
    let body = serde_json::to_vec(&CanaryWeights { weights: split })?;
    let (code, body) = request(api, Method::PUT, &format!("{CANARY_PATH}{service}"), Some(body)).await?;
    if code != StatusCode::OK {
        bail!("the control plane refused the weights ({code}):\n{}", String::from_utf8_lossy(&body).trim_end());
    }
    let view: CanaryView = serde_json::from_slice(&body).context("reading the answer")?;
    Ok(format!("set; now serving:\n{}", render_canary(&view)))
}

/// `attache canary status <service>`.
pub async fn canary_status(api: &Api, service: &str) -> anyhow::Result<String> {
    let (code, body) = request(api, Method::GET, &format!("{CANARY_PATH}{service}"), None).await?;
    if code != StatusCode::OK {
        bail!("the control plane answered {code}: {}", String::from_utf8_lossy(&body).trim_end());
    }
    let view: CanaryView = serde_json::from_slice(&body).context("reading the answer")?;
    Ok(render_canary(&view))
}

/// `attache check DIR`: validates the directory as the control plane would. `(valid, text)`.
pub fn check(dir: &Path) -> (bool, String) {
    let result = crate::source::read_dir(dir).and_then(|files| {
        let n = files.len();
        attache_config::mesh::load_mesh(&files, &BTreeMap::new()).map(|mesh| (mesh, n))
    });
    match result {
        Ok((mesh, files)) => {
            let s = &mesh.spec;
            let text = format!(
                "{}: ok ({files} files, {} services, {} backends, {} sidecars: {})\n",
                dir.display(),
                s.services.len(),
                s.backends.len(),
                s.sidecars.len(),
                mesh.sidecars.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            (true, text)
        }
        Err(e) => {
            let n = e.errors.len();
            let mut text = format!("{}: {n} error{}\n", dir.display(), if n == 1 { "" } else { "s" });
            for err in &e.errors {
                text.push_str(&format!("  {err}\n"));
            }
            (false, text)
        }
    }
}

fn render_status(view: &StatusView, now: u64) -> String {
    let mesh = &view.mesh;
    let mut out = format!("mesh {}: version {} (hash {:016x})\n", mesh.source, mesh.version, mesh.hash);
    if !mesh.errors.is_empty() {
        out.push_str(&format!("  the directory is INVALID and not served; version {} still is:\n", mesh.version));
        for e in &mesh.errors {
            out.push_str(&format!("    {e}\n"));
        }
    }
    if view.sidecars.is_empty() {
        out.push_str("no sidecars have connected\n");
        return out;
    }
    let rows: Vec<[String; 6]> = view.sidecars.iter().map(|s| row(s, mesh.version, now)).collect();
    let header = ["SERVICE", "INSTANCE", "NAMESPACE", "ADDRESS", "VERSION", "STATE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn row(s: &SidecarStatus, latest: u64, now: u64) -> [String; 6] {
    let ago = now.saturating_sub(s.last_seen);
    let state = match (&s.nack, s.connected) {
        (Some(error), _) => {
            format!("NACK of {}: {}", s.pushed_version, error.split_whitespace().collect::<Vec<_>>().join(" "))
        }
        (None, false) => format!("disconnected (last seen {ago}s ago)"),
        (None, true) if s.acked_version == latest => "up to date (ACK)".to_owned(),
        (None, true) => format!("applying {}", s.pushed_version),
    };
    let n = &s.node;
    [n.service.clone(), n.instance.clone(), n.namespace.clone(), s.address.clone(), s.acked_version.to_string(), state]
}

fn render_canary(view: &CanaryView) -> String {
    let mut out = String::new();
    for (route, split) in &view.routes {
        let total: i64 = split.iter().map(|(_, w)| *w).sum::<i64>().max(1);
        let parts: Vec<String> = split.iter().map(|(b, w)| format!("{b}={w} ({}%)", w * 100 / total)).collect();
        out.push_str(&format!("{} route {route}: {}\n", view.service, parts.join(", ")));
    }
    if view.overridden.is_none() {
        out.push_str("(as in the config directory; no canary override)\n");
    }
    out
}

/// One HTTP/1.1 request to the control plane (over mTLS with the admin certificate, when given).
async fn request(api: &Api, method: Method, path: &str, body: Option<Vec<u8>>) -> anyhow::Result<(StatusCode, Bytes)> {
    let addr = api.addr.as_str();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        let io = match &api.tls_dir {
            None => attache_proxy::backend::endpoint::Conn::Plain(tcp),
            Some(dir) => attache_proxy::backend::endpoint::Conn::Tls(Box::new(mtls(dir, tcp).await?)),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let rsp = sender.send_request(req).await?;
        let code = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        anyhow::Ok((code, body))
    };
    let answer = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("{addr} did not answer within {TIMEOUT:?}"))?;
    // Plaintext that met TLS comes back as an HTTP parse error: say what is missing.
    let met_tls =
        |e: &anyhow::Error| e.chain().any(|c| c.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse));
    match answer {
        Err(e) if api.tls_dir.is_none() && met_tls(&e) => {
            Err(e.context("a control plane started with --ca-dir needs --tls-dir (or ATTACHE_TLS_DIR)"))
        }
        other => other,
    }
}

/// TLS to the control plane with the certificate in `dir`, checking the control plane's identity.
async fn mtls(
    dir: &Path,
    tcp: tokio::net::TcpStream,
) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use attache_proxy::tls::{client_config, Alpn, TlsMaterial, TlsVersions};
    let material = TlsMaterial::load(dir.join("cert.pem"), dir.join("key.pem"), dir.join("bundle.pem"))
        .with_context(|| format!("loading the admin certificate in {}", dir.display()))?;
    let expected = attache_config::wire::control_plane_identity(material.identity.trust_domain());
    let expected = attache_config::model::SpiffeId::parse(&expected).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = client_config(&material, expected, TlsVersions::Tls13, Alpn::Http1)?;
    let name = rustls_pki_types::ServerName::try_from("control-plane.attache.invalid")?.to_owned();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.context("TLS to the control plane")
}

#[cfg(test)]
mod tests {
    use super::*;
    use attache_config::wire::{MeshStatus, NodeView};

    #[test]
    fn status_says_what_each_sidecar_runs_and_why_the_directory_is_not_served() {
        let node = |i: &str| NodeView { service: "web".into(), instance: i.into(), namespace: "default".into() };
        let up = SidecarStatus {
            node: node("web-1"),
            address: "10.0.0.1:5000".into(),
            connected: true,
            acked_version: 4,
            pushed_version: 4,
            nack: None,
            last_seen: 100,
        };
        let refused = SidecarStatus { node: node("web-2"), nack: Some("bad".into()), acked_version: 3, ..up.clone() };
        let gone =
            SidecarStatus { node: node("web-3"), connected: false, acked_version: 2, last_seen: 90, ..up.clone() };
        let view = StatusView {
            mesh: MeshStatus { version: 4, hash: 1, source: "mesh/".into(), errors: vec!["a.yaml: x: y".into()] },
            sidecars: vec![up, refused, gone],
        };
        let text = render_status(&view, 100);
        assert!(text.contains("INVALID and not served; version 4 still is"), "{text}");
        assert!(text.contains("a.yaml: x: y"), "{text}");
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("web ")).collect();
        assert!(lines[0].ends_with("4        up to date (ACK)"), "{text}");
        assert!(lines[1].ends_with("3        NACK of 4: bad"), "{text}");
        assert!(lines[2].ends_with("2        disconnected (last seen 10s ago)"), "{text}");
    }
}
