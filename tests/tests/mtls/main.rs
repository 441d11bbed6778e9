//! mTLS between sidecars: a client-side sidecar originates mTLS to a backend's endpoints (other sidecars' inbound
//! listeners) and proves the server's SPIFFE identity before a request byte is sent; an inbound listener refuses
//! callers it cannot verify, authorizes by identity, tells the app who called, and picks up rotated certificates
//! without failing a request. Certificates are generated per test (see `attache_tests::pki`).

mod authz;
mod config;
mod handshakes;
mod mesh;
mod rotation;

use std::net::SocketAddr;
use std::path::Path;

use attache_tests::client::{self, Curl};
use attache_tests::pki::{Ca, Workload};
use attache_tests::proxy::{self, TestProxy};
use attache_tests::server::{self, Server, TcpServer};
use attache_tests::Metrics;

/// The client-side workload.
pub const WEB: &str = "spiffe://example.org/ns/default/sa/web";
/// The server-side workload.
pub const API: &str = "spiffe://example.org/ns/default/sa/api";
/// A DNS SAN some server certificates carry too, so curl can verify them with `--cacert`.
pub const API_DNS: &str = "api.mesh.test";

/// An inbound (server-side) sidecar config: listener `inbound` in front of an HTTP app and, optionally,
/// `inbound-tcp` in front of a TCP app, both with the same `tls` and `authorization`.
#[must_use]
pub struct Inbound<'a> {
    workload: &'a Workload,
    app: SocketAddr,
    tcp_app: Option<SocketAddr>,
    tcp_protocol: &'a str,
    mode: &'a str,
    min_version: &'a str,
    authorization: String,
    more: Vec<(String, String)>,
    limits: String,
}

/// An outbound (client-side) sidecar config: listener `outbound`, and for each service a backend of the same name
/// reached over mTLS; optionally an opaque listener `outbound-tcp` whose `tcp_backend` is mTLS too.
#[must_use]
pub struct Outbound<'a> {
    workload: &'a Workload,
    services: Vec<(String, String, Vec<SocketAddr>)>,
    tcp: Option<(String, SocketAddr)>,
    route: String,
    limits: String,
}

/// Two sidecars, `web` (client side) calling `api` (server side, strict mTLS) in front of an HTTP echo app and a
/// TCP echo app.
pub struct Mesh {
    pub ca: Ca,
    pub web: Workload,
    pub api: Workload,
    pub app: Server,
    pub tcp_app: TcpServer,
    pub server_side: TestProxy,
    pub client_side: TestProxy,
}

/// Inbound for `workload` (strict, TLS 1.3, anyone from the mesh allowed) in front of `app`.
pub fn inbound<'a>(workload: &'a Workload, app: SocketAddr) -> Inbound<'a> {
    Inbound {
        workload,
        app,
        tcp_app: None,
        tcp_protocol: "detect",
        mode: "strict",
        min_version: "1.3",
        authorization: String::new(),
        more: Vec::new(),
        limits: String::new(),
    }
}

impl<'a> Inbound<'a> {
    pub fn tcp_app(mut self, addr: SocketAddr) -> Self {
        self.tcp_app = Some(addr);
        self
    }

    /// The `protocol` of `inbound-tcp`: `detect` (the default) or `opaque`.
    pub fn tcp_protocol(mut self, protocol: &'a str) -> Self {
        self.tcp_protocol = protocol;
        self
    }

    /// `strict` (the default), `permissive` or `disabled`.
    pub fn mode(mut self, mode: &'a str) -> Self {
        self.mode = mode;
        self
    }

    pub fn min_version(mut self, version: &'a str) -> Self {
        self.min_version = version;
        self
    }

    /// The listeners' `authorization` as flow YAML, e.g. `{ allow: ["spiffe://example.org/ns/web/*"] }`.
    pub fn authorization(mut self, yaml: &str) -> Self {
        self.authorization = format!(", authorization: {yaml}");
        self
    }

    /// One more listener, `name`, in front of the same app with the same `tls` but its own `authorization`.
    pub fn listener(mut self, name: &str, authorization: &str) -> Self {
        self.more.push((name.to_owned(), format!(", authorization: {authorization}")));
        self
    }

    /// Keys of `limits` as flow YAML, e.g. `handshake_timeout: 300ms`.
    pub fn limits(mut self, yaml: &str) -> Self {
        self.limits = yaml.to_owned();
        self
    }

    pub fn build(&self) -> String {
        let w = self.workload;
        let tls = format!(
            "tls: {{ mode: {}, cert: \"{}\", key: \"{}\", trust_bundle: \"{}\", min_version: \"{}\" }}",
            self.mode,
            w.cert().display(),
            w.key().display(),
            w.bundle().display(),
            self.min_version
        );
        let listener = |name: &str, protocol: &str, app: SocketAddr, authorization: &str| {
            format!(
                "  - {{ name: {name}, address: \"127.0.0.1:0\", direction: inbound, protocol: {protocol}, app: \
                 \"{app}\", {tls}{authorization} }}\n"
            )
        };
        let mut yaml = format!("admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ {} }}\nlisteners:\n", self.limits);
        yaml.push_str(&listener("inbound", "detect", self.app, &self.authorization));
        if let Some(tcp_app) = self.tcp_app {
            yaml.push_str(&listener("inbound-tcp", self.tcp_protocol, tcp_app, &self.authorization));
        }
        for (name, authorization) in &self.more {
            yaml.push_str(&listener(name, "detect", self.app, authorization));
        }
        yaml
    }
}

/// Outbound for `workload`, with no services yet.
pub fn outbound(workload: &Workload) -> Outbound<'_> {
    let limits = "connect_timeout: 2s".to_owned();
    Outbound { workload, services: Vec::new(), tcp: None, route: String::new(), limits }
}

impl Outbound<'_> {
    /// Service `name` (host `name`) whose backend `name` is `endpoints`, which must prove `identity`.
    pub fn service(mut self, name: &str, identity: &str, endpoints: &[SocketAddr]) -> Self {
        self.services.push((name.to_owned(), identity.to_owned(), endpoints.to_vec()));
        self
    }

    /// Listener `outbound-tcp` (opaque) forwarding to `endpoint`, which must prove `identity`.
    pub fn tcp(mut self, identity: &str, endpoint: SocketAddr) -> Self {
        self.tcp = Some((identity.to_owned(), endpoint));
        self
    }

    /// Extra keys of every route, as flow YAML, e.g. `retry: { attempts: 3, on: [connect-failure] }`.
    pub fn route(mut self, yaml: &str) -> Self {
        self.route = format!(", {yaml}");
        self
    }

    /// Keys of `limits` as flow YAML, e.g. `pool_idle_timeout: 1us`, replacing the default `connect_timeout: 2s`.
    pub fn limits(mut self, yaml: &str) -> Self {
        self.limits = yaml.to_owned();
        self
    }

    pub fn build(&self) -> String {
        let mut yaml = format!(
            "admin: {{ address: \"127.0.0.1:0\" }}\nlimits: {{ {} }}\nlisteners:\n  \
             - {{ name: outbound, address: \"127.0.0.1:0\", direction: outbound }}\n",
            self.limits
        );
        if self.tcp.is_some() {
            yaml.push_str(
                "  - { name: outbound-tcp, address: \"127.0.0.1:0\", direction: outbound, protocol: opaque, \
                 tcp_backend: api-tcp }\n",
            );
        }
        yaml.push_str("services:\n");
        for (name, _, _) in &self.services {
            yaml.push_str(&format!(
                "  - {{ name: {name}, hosts: [{name}], routes: [{{ name: default, backends: [{{ name: {name} }}]{} \
                 }}] }}\n",
                self.route
            ));
        }
        yaml.push_str("backends:\n");
        let tcp = self.tcp.iter().map(|(id, ep)| ("api-tcp".to_owned(), id.clone(), vec![*ep]));
        for (name, identity, endpoints) in self.services.iter().cloned().chain(tcp) {
            let endpoints: Vec<_> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
            yaml.push_str(&format!(
                "  - {{ name: {name}, endpoints: [{}], tls: {} }}\n",
                endpoints.join(", "),
                self.backend_tls(&identity)
            ));
        }
        yaml
    }

    fn backend_tls(&self, identity: &str) -> String {
        let w = self.workload;
        format!(
            "{{ identity: \"{identity}\", cert: \"{}\", key: \"{}\", trust_bundle: \"{}\" }}",
            w.cert().display(),
            w.key().display(),
            w.bundle().display()
        )
    }
}

/// Starts the two-sidecar mesh; `authorization` applies to both inbound listeners (`""` for none).
pub async fn mesh(authorization: &str) -> Mesh {
    mesh_with(Ca::new("example.org mesh"), authorization, |client_side| client_side).await
}

/// [`mesh`] with certificates from `ca`, and the client side's config extended by `client_side`.
pub async fn mesh_with(ca: Ca, authorization: &str, client_side: impl FnOnce(Outbound<'_>) -> Outbound<'_>) -> Mesh {
    let (web, api) = (ca.workload(WEB), ca.workload(API));
    let app = server::auto().name("api").route_prefix("/", server::echo()).run().await;
    let tcp_app = server::tcp_echo().run().await;
    let mut server_cfg = inbound(&api, app.addr()).tcp_app(tcp_app.addr());
    if !authorization.is_empty() {
        server_cfg = server_cfg.authorization(authorization);
    }
    let server_side = proxy::new().config(server_cfg.build()).run().await;
    let client_cfg =
        outbound(&web).service("api", API, &[server_side.inbound()]).tcp(API, server_side.listener("inbound-tcp"));
    let client_side = proxy::new().config(client_side(client_cfg).build()).run().await;
    Mesh { ca, web, api, app, tcp_app, server_side, client_side }
}

/// A workload whose certificate also names [`API_DNS`], so curl can verify it.
pub fn api_with_dns(ca: &Ca) -> Workload {
    ca.workload_with(ca.leaf().uri(API).dns(API_DNS).issue())
}

/// curl for `https://api.mesh.test:<port><path>` connecting to `addr`, verifying the server with `bundle`.
pub fn https(addr: SocketAddr, path: &str, bundle: &Path) -> Curl {
    client::curl()
        .url(format!("https://{API_DNS}:{}{path}", addr.port()))
        .resolve(API_DNS, addr.port(), addr)
        .cacert(bundle)
}

/// [`https`], presenting `caller`'s certificate.
pub fn https_as(addr: SocketAddr, path: &str, bundle: &Path, caller: &Workload) -> Curl {
    https(addr, path, bundle).client_cert(&caller.cert(), &caller.key())
}

/// `attache_tls_handshakes_total` for `direction` and failure `reason` (`none`: the successful ones).
pub fn handshakes(m: &Metrics, direction: &str, reason: &str) -> f64 {
    let result = if reason == "none" { "ok" } else { "failed" };
    m.sum("attache_tls_handshakes_total", &[("direction", direction), ("result", result), ("reason", reason)])
}

/// `attache_authorization_decisions_total` of listener `service`, route `app` or `tcp`.
pub fn decisions(m: &Metrics, service: &str, route: &str, decision: &str) -> f64 {
    m.sum("attache_authorization_decisions_total", &[("service", service), ("route", route), ("decision", decision)])
}

/// `attache_tls_credential_reloads_total` with `result` (and `reason`, unless empty).
pub fn reloads(m: &Metrics, result: &str, reason: &str) -> f64 {
    let mut labels = vec![("result", result)];
    if !reason.is_empty() {
        labels.push(("reason", reason));
    }
    m.sum("attache_tls_credential_reloads_total", &labels)
}

/// The values of `header` the app saw on its last request, as its echo reported them.
pub fn seen_by_app(echo: &serde_json::Value, header: &str) -> Vec<String> {
    echo["headers"][header]
        .as_array()
        .map(|values| values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}
