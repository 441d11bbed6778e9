//! The control plane as the mesh CA, and the mTLS its API runs on.
//!
//! A sidecar gets its workload certificate here: the identity is decided from what it says it is
//! (`spiffe://<td>/ns/<namespace>/sa/<service>`), never taken from its CSR; the first request must carry the
//! bootstrap token, a renewal is authenticated by the current certificate of that same identity. The control plane's
//! own serving certificate (`spiffe://<td>/ns/attache/sa/control-plane`) is issued by the same CA into the state
//! directory and renewed there, so new handshakes pick it up without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use attache_config::model::{SpiffeId, TlsFiles, TlsMode, TlsVersion};
use attache_config::wire::{self, CertificateRequest, CertificateResponse};
use attache_proxy::certs::Authority;
use attache_proxy::tls::{CredentialStore, ServerTls, TlsMetrics};
use http::StatusCode;

/// Workload certificates live this long by default (renewed by sidecars at two thirds).
pub const WORKLOAD_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// The control plane's own certificate lives this long and is reissued every third of it.
const SERVING_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// How the control plane is the mesh CA.
#[derive(Clone, Debug)]
pub struct CaConfig {
    /// `ca.pem` and `ca-key.pem` (from `attache ca init`).
    pub dir: PathBuf,
    /// Required for a sidecar's first certificate; `None`: only renewals are served.
    pub bootstrap_token: Option<String>,
    /// Identities allowed to use `status` and `canary` (default: `spiffe://<td>/ns/attache/sa/admin`).
    pub admins: Vec<String>,
    /// How long workload certificates live.
    pub lifetime: Duration,
}

/// The loaded CA and the API's TLS.
pub struct Ca {
    authority: Authority,
    token: Option<String>,
    admins: Vec<SpiffeId>,
    trust_domain: String,
    lifetime: Duration,
    pub server: Arc<ServerTls>,
    pub tls_metrics: TlsMetrics,
}

impl Ca {
    /// Loads the CA, issues the serving certificate into `state_dir/tls`, and keeps it renewed.
    pub fn start(
        config: &CaConfig,
        state_dir: &Path,
        tls_metrics: TlsMetrics,
    ) -> anyhow::Result<(Arc<Self>, tokio::task::JoinHandle<()>)> {
        let authority = Authority::load(&config.dir)?;
        let trust_domain = authority.trust_domain().to_owned();
        let serving =
            SpiffeId::parse(&wire::control_plane_identity(&trust_domain)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let files = issue_serving(&authority, &serving, &state_dir.join("tls"))?;
        let admins =
            if config.admins.is_empty() { vec![wire::admin_identity(&trust_domain)] } else { config.admins.clone() };
        let admins = admins
            .iter()
            .map(|a| SpiffeId::parse(a).map_err(|e| anyhow::anyhow!("admin identity {a}: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let credentials = CredentialStore::new(tls_metrics.clone()).get(&files);
        // Permissive: a sidecar with no certificate yet may ask for one (with the token); everything else checks
        // the caller's identity.
        let server = ServerTls::new(credentials, TlsMode::Permissive, TlsVersion::Tls13).context("the API's TLS")?;
        let ca = Arc::new(Self {
            authority,
            token: config.bootstrap_token.clone(),
            admins,
            trust_domain,
            lifetime: config.lifetime,
            server: Arc::new(server),
            tls_metrics,
        });
        let renew = {
            let ca = ca.clone();
            let dir = state_dir.join("tls");
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(SERVING_LIFETIME / 3).await;
                    if let Err(error) = issue_serving(&ca.authority, &serving, &dir) {
                        tracing::error!("renewing the control plane's certificate: {error:#}");
                    }
                }
            })
        };
        Ok((ca, renew))
    }

    /// The identity a sidecar that says it is `node` gets.
    pub fn identity_of(&self, node: &wire::Node) -> Result<SpiffeId, String> {
        let id = wire::workload_identity(&self.trust_domain, node);
        SpiffeId::parse(&id).map_err(|e| format!("`{id}` is not a SPIFFE ID: {e}"))
    }

    pub fn is_admin(&self, caller: Option<&SpiffeId>) -> bool {
        caller.is_some_and(|c| self.admins.contains(c))
    }

    /// Answers a certificate request from `caller` (its verified identity, if it presented a certificate).
    pub fn issue(
        &self,
        caller: Option<&SpiffeId>,
        bearer: Option<&str>,
        request: &CertificateRequest,
    ) -> Result<CertificateResponse, (StatusCode, String)> {
        let id = self.identity_of(&request.node).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
        let renewal = caller == Some(&id);
        let bootstrap =
            self.token.as_deref().zip(bearer).is_some_and(|(want, got)| same(want.as_bytes(), got.as_bytes()));
        if !renewal && !bootstrap {
            let why = match caller {
                Some(c) => format!("{c} may not get a certificate for {id}"),
                None => "a first certificate needs the bootstrap token".to_owned(),
            };
            return Err((StatusCode::FORBIDDEN, why));
        }
        let leaf = self
            .authority
            .sign_csr(&request.csr, &id, self.lifetime)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e:#}")))?;
        tracing::info!(%id, renewal, not_after = leaf.not_after, "workload certificate issued");
        Ok(CertificateResponse {
            identity: id.to_string(),
            cert: leaf.cert_pem,
            bundle: String::from_utf8_lossy(self.authority.bundle_pem()).into_owned(),
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        })
    }
}

/// Issues the control plane's serving certificate into `dir` (swapped in as one).
fn issue_serving(authority: &Authority, id: &SpiffeId, dir: &Path) -> anyhow::Result<TlsFiles> {
    let (leaf, key) = authority.issue_with_key(id, SERVING_LIFETIME)?;
    let bundle = String::from_utf8_lossy(authority.bundle_pem()).into_owned();
    let files = [
        ("key.pem", key.as_str(), true),
        ("cert.pem", leaf.cert_pem.as_str(), false),
        ("bundle.pem", bundle.as_str(), false),
    ];
    attache_proxy::persist::swap_in(dir, &files).with_context(|| format!("writing {}", dir.display()))?;
    Ok(TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), trust_bundle: dir.join("bundle.pem") })
}

/// Constant-time equality, for the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: &str) -> CertificateRequest {
        let node = wire::Node { service: service.into(), instance: "i-1".into(), namespace: "default".into() };
        let asked = SpiffeId::parse("spiffe://example.org/ns/ops/sa/root").unwrap();
        CertificateRequest { node, csr: attache_proxy::certs::new_csr(&asked).unwrap().0 }
    }

    #[tokio::test]
    async fn a_first_certificate_needs_the_token_and_a_renewal_the_same_identity() {
        let dir = std::env::temp_dir().join(format!("attache-cp-ca-{}-{}", std::process::id(), rand::random::<u64>()));
        attache_proxy::certs::init(&dir.join("ca"), "example.org", 30, false).unwrap();
        let config = CaConfig {
            dir: dir.join("ca"),
            bootstrap_token: Some("0123456789abcdef".into()),
            admins: Vec::new(),
            lifetime: Duration::from_secs(3600),
        };
        let (ca, renew) = Ca::start(&config, &dir.join("state"), TlsMetrics::default()).unwrap();
        renew.abort();
        let web = SpiffeId::parse("spiffe://example.org/ns/default/sa/web").unwrap();

        let denied = ca.issue(None, None, &request("web")).unwrap_err();
        assert_eq!(denied.0, StatusCode::FORBIDDEN);
        assert_eq!(ca.issue(None, Some("wrong-token-0000"), &request("web")).unwrap_err().0, StatusCode::FORBIDDEN);
        let first = ca.issue(None, Some("0123456789abcdef"), &request("web")).unwrap();
        assert_eq!(first.identity, web.as_str(), "the identity is the node's, not the CSR's");
        assert!(first.not_after - first.not_before <= 3600 + 300);

        assert!(ca.issue(Some(&web), None, &request("web")).is_ok(), "a renewal with the current certificate");
        let stolen = ca.issue(Some(&web), None, &request("payments")).unwrap_err();
        assert_eq!(stolen.0, StatusCode::FORBIDDEN, "{}", stolen.1);
        assert!(!ca.is_admin(Some(&web)));
        assert!(ca.is_admin(Some(&SpiffeId::parse("spiffe://example.org/ns/attache/sa/admin").unwrap())));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
