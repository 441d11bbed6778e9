//! The real `openssl s_client`, for checking the proxy's TLS against an independent stack: which protocol versions
//! a listener accepts, and which certificate it serves (`s_client … | openssl x509 -noout -serial`).
//!
//! `s_client` runs with stdin closed, so it handshakes, prints what it saw and disconnects. It is killed if it
//! outlives the timeout (default 10 s).

use std::path::Path;
use std::process::Stdio;
use std::{net::SocketAddr, time::Duration};

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::io::AsyncWriteExt;

use crate::DEFAULT_TIMEOUT;

/// Builds an `openssl s_client -connect <addr>` invocation; see [`s_client`].
#[must_use]
#[derive(Clone, Debug)]
pub struct SClient {
    addr: SocketAddr,
    args: Vec<String>,
    timeout: Duration,
}

/// What `s_client` reported.
#[derive(Clone, Debug)]
pub struct Handshake {
    /// Whether the handshake completed (exit status 0 and a negotiated cipher).
    pub completed: bool,
    /// stdout and stderr.
    pub output: String,
}

/// `openssl s_client -connect addr`, no SNI.
pub fn s_client(addr: SocketAddr) -> SClient {
    SClient { addr, args: Vec::new(), timeout: DEFAULT_TIMEOUT }
}

impl SClient {
    /// `-cert cert -key key`: present a client certificate.
    pub fn cert(self, cert: &Path, key: &Path) -> Self {
        self.arg("-cert").arg(cert.display().to_string()).arg("-key").arg(key.display().to_string())
    }

    /// Any other `s_client` argument (one argv entry), e.g. `-tls1_2`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Offers only `version` (`-tls1`, `-tls1_1`, `-tls1_2`, `-tls1_3`). Versions OpenSSL's default security level
    /// disables (1.0, 1.1) are allowed with `@SECLEVEL=0`, so the refusal tested is the server's, not openssl's.
    pub fn only(self, version: &str) -> Self {
        let this = self.arg(version);
        if matches!(version, "-tls1" | "-tls1_1") {
            this.arg("-cipher").arg("DEFAULT@SECLEVEL=0")
        } else {
            this
        }
    }

    /// Runs `s_client`. A refused handshake is an `Ok` with `completed: false`; errors are only failures to run it.
    pub async fn run(self) -> Result<Handshake> {
        let mut cmd = tokio::process::Command::new("openssl");
        cmd.arg("s_client")
            .arg("-connect")
            .arg(self.addr.to_string())
            .arg("-noservername")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(self.timeout, cmd.output())
            .await
            .map_err(|_| anyhow!("openssl s_client {}: timed out after {:?}", self.addr, self.timeout))?
            .context("running openssl s_client")?;
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let completed = out.status.success() && !output.contains("Cipher is (NONE)");
        Ok(Handshake { completed, output })
    }
}

impl Handshake {
    /// The negotiated protocol, e.g. `TLSv1.3`, from the `New, TLSv1.3, Cipher is …` line.
    pub fn protocol(&self) -> Option<&str> {
        let line = self.output.lines().find(|l| l.starts_with("New, "))?;
        line.split(", ").nth(1).filter(|p| *p != "(NONE)")
    }

    /// The server's certificate as PEM, as `s_client` printed it.
    pub fn server_cert_pem(&self) -> Option<&str> {
        let begin = self.output.find("-----BEGIN CERTIFICATE-----")?;
        let end = self.output[begin..].find("-----END CERTIFICATE-----")? + begin + "-----END CERTIFICATE-----".len();
        Some(&self.output[begin..end])
    }

    /// The server certificate's serial, by piping it to `openssl x509 -noout -serial`, normalized as
    /// [`crate::pki::Leaf::serial`] prints it.
    pub async fn server_serial(&self) -> Result<String> {
        let pem = self.server_cert_pem().with_context(|| format!("no server certificate in:\n{}", self.output))?;
        let mut child = tokio::process::Command::new("openssl")
            .args(["x509", "-noout", "-serial"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("running openssl x509")?;
        let mut stdin = child.stdin.take().context("openssl x509 stdin")?;
        stdin.write_all(pem.as_bytes()).await?;
        drop(stdin);
        let out = tokio::time::timeout(DEFAULT_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| anyhow!("openssl x509 timed out"))??;
        if !out.status.success() {
            bail!("openssl x509 failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(crate::pki::normalize_serial(&String::from_utf8_lossy(&out.stdout)))
    }
}
