//! A builder around the real `curl` binary, for checking the proxy against an independent HTTP stack.
//!
//! Runs `curl -q -sS -o - -w <write-out> …`: the body goes to stdout, followed by a marker, curl's
//! `%{header_json}` (the final response's headers) and `%{http_code} %{http_version}`; the marker splits them.
//! Proxy variables from the environment are removed so only [`Curl::proxy`] routes through a proxy. curl is
//! killed if it outlives the timeout (default 10 s; also passed as `--max-time`).

use super::{header_value, parse_version, TestResponse};
use crate::DEFAULT_TIMEOUT;
use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};
use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

const MARKER: &str = "\n--attache-curl-write-out--\n";

/// Builds a `curl` invocation; see [`curl`].
#[must_use]
#[derive(Clone, Debug)]
pub struct Curl {
    url: Option<String>,
    args: Vec<String>,
    timeout: Duration,
}

/// A `curl` invocation with no URL yet: `client::curl().http2_prior_knowledge().url(u).run().await`.
pub fn curl() -> Curl {
    Curl { url: None, args: Vec::new(), timeout: DEFAULT_TIMEOUT }
}

impl Curl {
    /// The URL to fetch, e.g. `http://127.0.0.1:<port>/path` or, with [`Curl::proxy`], `http://svc.local/path`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// `-X method`.
    pub fn method(self, method: &str) -> Self {
        self.arg("-X").arg(method)
    }

    /// `-H "name: value"`.
    pub fn header(self, name: &str, value: &str) -> Self {
        self.arg("-H").arg(format!("{name}: {value}"))
    }

    /// `--data-binary data` (sent verbatim; implies `POST` unless [`Curl::method`] says otherwise).
    pub fn data(self, data: impl Into<String>) -> Self {
        self.arg("--data-binary").arg(data)
    }

    /// `--http2-prior-knowledge` (h2c without upgrade).
    pub fn http2_prior_knowledge(self) -> Self {
        self.arg("--http2-prior-knowledge")
    }

    /// `--http1.1`.
    pub fn http1_1(self) -> Self {
        self.arg("--http1.1")
    }

    /// `-x http://addr`: send absolute-form requests to `addr` as an HTTP proxy (like `HTTP_PROXY`).
    pub fn proxy(self, addr: SocketAddr) -> Self {
        self.arg("-x").arg(format!("http://{addr}"))
    }

    /// `--resolve host:port:ip`: connect to `addr` for `host:port` while keeping the URL's authority.
    pub fn resolve(self, host: &str, port: u16, addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        self.arg("--resolve").arg(format!("{host}:{port}:{ip}"))
    }

    /// `--cert cert --key key`: present a TLS client certificate.
    pub fn client_cert(self, cert: &Path, key: &Path) -> Self {
        self.arg("--cert").arg(cert.display().to_string()).arg("--key").arg(key.display().to_string())
    }

    /// `--cacert bundle`: verify the server's certificate against `bundle` (by the URL's host name).
    pub fn cacert(self, bundle: &Path) -> Self {
        self.arg("--cacert").arg(bundle.display().to_string())
    }

    /// Kills curl after `timeout` (also `--max-time`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Any other curl argument (one argv entry).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs curl and parses the final response. Errors if curl exits non-zero (message includes its stderr),
    /// times out, or prints something unparsable. `TestResponse::trailers` is always `None`.
    pub async fn run(self) -> Result<TestResponse> {
        let url = self.url.clone().context("curl: no URL set")?;
        let mut cmd = tokio::process::Command::new("curl");
        cmd.arg("-q")
            .args(["-sS", "-o", "-", "--max-time"])
            .arg(format!("{:.3}", self.timeout.as_secs_f64()))
            .arg("-w")
            .arg(format!("{MARKER}%{{header_json}}{MARKER}%{{http_code}} %{{http_version}}"))
            .args(&self.args)
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy"] {
            cmd.env_remove(var);
        }
        tracing::debug!(?cmd, "running curl");
        let child = cmd.spawn().context("spawning curl")?;
        let out = tokio::time::timeout(self.timeout + Duration::from_secs(2), child.wait_with_output())
            .await
            .map_err(|_| anyhow!("curl {url}: timed out after {:?}", self.timeout))?
            .context("waiting for curl")?;
        if !out.status.success() {
            bail!("curl {url} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
        }
        parse_output(&out.stdout).with_context(|| format!("curl {url}: unexpected output"))
    }
}

fn parse_output(stdout: &[u8]) -> Result<TestResponse> {
    let marker = MARKER.as_bytes();
    let second = rfind(stdout, marker).context("no write-out marker")?;
    let first = rfind(&stdout[..second], marker).context("no header write-out marker")?;
    let body = Bytes::copy_from_slice(&stdout[..first]);
    let headers_json: serde_json::Value = serde_json::from_slice(&stdout[first + marker.len()..second])?;
    let tail = std::str::from_utf8(&stdout[second + marker.len()..])?;
    let (code, version) = tail.trim().split_once(' ').context("no `code version` write-out")?;
    let mut headers = HeaderMap::new();
    for (name, values) in headers_json.as_object().context("header_json is not an object")? {
        let name = HeaderName::from_bytes(name.as_bytes())?;
        for value in values.as_array().context("header_json values are not an array")? {
            headers.append(name.clone(), header_value(value.as_str().context("header value is not a string")?)?);
        }
    }
    Ok(TestResponse {
        status: StatusCode::from_u16(code.parse()?)?,
        version: parse_version(version)?,
        headers,
        body,
        trailers: None,
    })
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}
