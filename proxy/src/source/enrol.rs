//! Workload identity from the control plane: the sidecar makes its key, sends a CSR, and gets a short-lived
//! certificate with its SPIFFE ID; it renews it at two thirds of its lifetime. The first request is authenticated by
//! a bootstrap token, renewals by the current certificate (mTLS). The key never leaves the sidecar.
//!
//! Files are swapped in as one (`<dir>/.data` is a symlink to a versioned directory, replaced with a rename, as the
//! kubelet does for Secrets), so whoever watches them (the credential store) never reads a certificate with another
//! one's key. Connections keep their certificate; new handshakes use the new one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use attache_config::model::{SpiffeId, TlsFiles};
use attache_config::wire::{CertificateRequest, CertificateResponse, Node, CERTIFICATE_PATH};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::tls::{Alpn, TlsMaterial, TlsVersions};

/// A certificate request may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A failed renewal is tried again after at least this long...
const RETRY_MIN: Duration = Duration::from_secs(2);
/// ...and at most this long.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// How a sidecar gets and keeps its workload certificate.
#[derive(Clone, Debug)]
pub struct Enrolment {
    /// `host:port` of each control-plane replica, tried in turn.
    pub addrs: Vec<String>,
    pub node: Node,
    /// The mesh CA's certificates: the control plane must chain to them.
    pub ca_bundle: PathBuf,
    /// Presented (as `Authorization: Bearer`) when there is no valid certificate yet.
    pub token: Option<String>,
    /// Where the key, certificate and bundle live: `cert.pem`, `key.pem`, `bundle.pem`.
    pub dir: PathBuf,
}

impl Enrolment {
    /// The identity files (stable paths; their content is swapped on renewal).
    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("cert.pem"),
            key: self.dir.join("key.pem"),
            trust_bundle: self.dir.join("bundle.pem"),
        }
    }

    /// The trust domain, read from the CA bundle's `spiffe://<trust-domain>` URI SAN.
    pub fn trust_domain(&self) -> anyhow::Result<String> {
        let pem = std::fs::read(&self.ca_bundle).with_context(|| format!("reading {}", self.ca_bundle.display()))?;
        crate::certs::bundle_trust_domain(&pem).with_context(|| self.ca_bundle.display().to_string())
    }

    /// The control plane's identity, which its certificate must carry.
    pub fn control_plane_id(&self) -> anyhow::Result<SpiffeId> {
        let id = attache_config::wire::control_plane_identity(&self.trust_domain()?);
        SpiffeId::parse(&id).map_err(|e| anyhow::anyhow!("{id}: {e}"))
    }

    /// A valid certificate, enrolling (or renewing) first when there is none or it is due.
    pub async fn ensure(&self) -> anyhow::Result<TlsMaterial> {
        match self.current() {
            Some(m) if !due(&m) => Ok(m),
            current => self.request(current.as_ref()).await,
        }
    }

    /// Renews at two thirds of each certificate's lifetime, for as long as the returned task runs.
    pub fn renew_forever(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                let wait = match self.current() {
                    Some(m) if failures == 0 => until(renew_at(&m)).max(RETRY_MIN),
                    // Not enrolled yet (or expired): the next config stream enrols, with the token.
                    None => RETRY_MIN,
                    Some(_) => crate::backoff::full_jitter(RETRY_MIN, RETRY_MAX, failures).max(RETRY_MIN),
                };
                tokio::time::sleep(wait).await;
                let Some(current) = self.current().filter(due) else { continue };
                match self.request(Some(&current)).await {
                    Ok(m) => {
                        failures = 0;
                        tracing::info!(identity = %m.identity, not_after = m.not_after, "workload certificate renewed");
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!("renewing the workload certificate: {error:#}");
                    }
                }
            }
        })
    }

    /// The certificate on disk, if it loads and has not expired.
    fn current(&self) -> Option<TlsMaterial> {
        let files = self.files();
        TlsMaterial::load(&files.cert, &files.key, &files.trust_bundle).ok()
    }

    /// Asks for a certificate: with `current` (mTLS) when there is one, else with the bootstrap token.
    async fn request(&self, current: Option<&TlsMaterial>) -> anyhow::Result<TlsMaterial> {
        let td = self.trust_domain()?;
        let id = SpiffeId::parse(&attache_config::wire::workload_identity(&td, &self.node))
            .map_err(|e| anyhow::anyhow!("this sidecar's identity: {e}"))?;
        let expected = self.control_plane_id()?;
        let config = match current {
            Some(m) => crate::tls::client_config(m, expected, TlsVersions::Tls13, Alpn::Http1)?,
            None => {
                let bundle = std::fs::read(&self.ca_bundle)?;
                crate::tls::enrolment_config(&bundle, expected, Alpn::Http1)?
            }
        };
        let token = if current.is_none() { self.token.as_deref() } else { None };
        if current.is_none() && token.is_none() {
            bail!("no workload certificate yet and no bootstrap token to get one");
        }
        let (csr, key) = crate::certs::new_csr(&id)?;
        let body = serde_json::to_vec(&CertificateRequest { node: self.node.clone(), csr })?;
        let mut last = None;
        let mut answer = None;
        for addr in &self.addrs {
            let attempt = tokio::time::timeout(REQUEST_TIMEOUT, post(addr, config.clone(), token, body.clone())).await;
            match attempt.context("the certificate request timed out").and_then(|r| r) {
                Ok(r) => {
                    answer = Some(r);
                    break;
                }
                Err(e) => last = Some(e.context(format!("asking {addr} for a certificate"))),
            }
        }
        let response = match (answer, last) {
            (Some(r), _) => r,
            (None, Some(e)) => return Err(e),
            (None, None) => bail!("no control-plane address"),
        };
        let material = TlsMaterial::from_pem(response.cert.as_bytes(), key.as_bytes(), response.bundle.as_bytes())
            .context("the issued certificate does not validate")?;
        let files = [
            ("key.pem", key.as_str(), true),
            ("cert.pem", response.cert.as_str(), false),
            ("bundle.pem", response.bundle.as_str(), false),
        ];
        crate::persist::swap_in(&self.dir, &files).context("saving the workload certificate")?;
        Ok(material)
    }
}

/// Whether `m` should be renewed now.
fn due(m: &TlsMaterial) -> bool {
    until(renew_at(m)).is_zero()
}

/// Two thirds into the certificate's lifetime, unix seconds.
fn renew_at(m: &TlsMaterial) -> i64 {
    m.not_before + (m.not_after - m.not_before) * 2 / 3
}

fn until(unix: i64) -> Duration {
    Duration::from_secs(u64::try_from(unix - crate::source::unix_now() as i64).unwrap_or(0))
}

/// `POST /v1/certificate` over TLS (HTTP/1.1).
async fn post(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    token: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<CertificateResponse> {
    let tcp = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let name = rustls_pki_types::ServerName::try_from("control-plane.attache.invalid")?.to_owned();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.context("TLS to the control plane")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::post(CERTIFICATE_PATH)
        .header(http::header::HOST, addr)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let rsp = sender.send_request(req.body(Full::new(Bytes::from(body)))?).await?;
    let status = rsp.status();
    let bytes = rsp.into_body().collect().await?.to_bytes();
    if status != http::StatusCode::OK {
        bail!(
            "the control plane refused the certificate request ({status}): {}",
            String::from_utf8_lossy(&bytes).trim()
        );
    }
    serde_json::from_slice(&bytes).context("reading the issued certificate")
}
