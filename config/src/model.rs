//! The validated, immutable configuration model the proxy runs on.
//!
//! Built only through `TryFrom<ConfigSpec>` (see `validate`): once a `Snapshot` exists, applying it cannot fail.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::spec::ConfigSpec;

mod host_index;
mod matches;
pub mod resilience;
mod spiffe;
pub mod tls;
pub mod tracing;

pub use self::host_index::HostIndex;
pub use self::matches::*;
pub use self::resilience::*;
pub use self::spiffe::*;
pub use self::tls::*;
pub use self::tracing::*;

/// One complete, valid configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Set by the source: a monotonic counter (file) or the control plane's version.
    pub version: u64,
    /// Hash of the source text, so an unchanged file is recognised.
    pub hash: u64,
    pub admin: Admin,
    pub limits: Limits,
    pub listeners: Vec<Arc<Listener>>,
    pub services: Vec<Arc<Service>>,
    /// By name.
    pub backends: BTreeMap<Arc<str>, Arc<Backend>>,
    pub tracing: Tracing,
    /// The effective configuration (defaults filled in), for the admin `/config` view.
    pub source: Arc<ConfigSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub address: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Limits {
    pub detect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_header_count: usize,
    pub max_head_bytes: usize,
    pub max_concurrent_requests: usize,
    pub h2_max_pending_reset_streams: usize,
    pub max_concurrent_per_backend: usize,
    pub max_pending_per_backend: usize,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_endpoint: usize,
    pub max_retry_buffer_bytes: usize,
    pub listen_backlog: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenerProtocol {
    Detect,
    Http,
    Opaque,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Listener {
    pub name: Arc<str>,
    pub address: SocketAddr,
    pub direction: Direction,
    pub protocol: ListenerProtocol,
    /// Where opaque TCP (and, inbound, HTTP) goes.
    pub target: ListenerTarget,
    /// Inbound HTTP rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Inbound mTLS.
    pub tls: Option<ListenerTls>,
    /// Inbound authorization.
    pub authorization: Option<Authorization>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ListenerTarget {
    /// Inbound: the local app.
    App(SocketAddr),
    /// Outbound: HTTP is routed by host; opaque TCP goes to this backend, if any.
    Routed { tcp_backend: Option<Arc<str>> },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub name: Arc<str>,
    pub hosts: Vec<HostMatch>,
    /// Original destinations (of intercepted connections) that mean this service.
    pub addresses: Vec<SocketAddr>,
    pub routes: Vec<Arc<Route>>,
}

/// Lower-cased. A host without a port matches any port; with a port, only that port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Suffix(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub service: Arc<str>,
    pub name: Arc<str>,
    /// Empty: matches everything.
    pub matches: Vec<RouteMatch>,
    pub filters: Filters,
    /// Only entries with weight > 0; never empty.
    pub backends: Vec<WeightedBackend>,
    pub sticky: Option<Sticky>,
    pub timeout: Duration,
    pub retry: Option<RetryPolicy>,
    pub rate_limit: Option<RateLimit>,
    pub fault: Option<Fault>,
    /// Who may call (inbound routes only).
    pub authorization: Option<Authorization>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Filters {
    pub request_headers: HeaderFilter,
    pub response_headers: HeaderFilter,
    /// Replaces the matched prefix of the route's `PathMatch::Prefix`. Stored like that prefix, without a trailing
    /// `/` (`/` itself as the empty string); `Route::rewritten_path` applies it.
    pub path_prefix_rewrite: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HeaderFilter {
    pub remove: Vec<HeaderName>,
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightedBackend {
    pub name: Arc<str>,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Sticky {
    Header(HeaderName),
    Cookie(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamProtocol {
    Http1,
    Http2,
    /// Same as the downstream request.
    Auto,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    pub name: Arc<str>,
    pub endpoints: Vec<EndpointAddr>,
    pub protocol: UpstreamProtocol,
    pub dns_refresh: Duration,
    pub connect_timeout: Duration,
    /// `None`: the breaker is disabled.
    pub breaker: Option<BreakerPolicy>,
    pub bulkhead: Bulkhead,
    pub health_check: Option<HealthCheck>,
    /// mTLS origination.
    pub tls: Option<BackendTls>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointAddr {
    Socket(SocketAddr),
    Dns { host: String, port: u16 },
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(addr) => addr.fmt(f),
            Self::Dns { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Snapshot {
    /// Every set of TLS files the listeners and backends use.
    pub fn tls_files(&self) -> std::collections::BTreeSet<&TlsFiles> {
        let listeners = self.listeners.iter().filter_map(|l| l.tls.as_ref()).map(|t| &t.files);
        listeners.chain(self.backends.values().filter_map(|b| b.tls.as_ref()).map(|t| &t.files)).collect()
    }

    /// The service answering to `authority` (`host` or `host:port`), if any.
    pub fn service_for(&self, authority: &str) -> Option<&Arc<Service>> {
        self.services.get(self.service_index_for(authority)?)
    }

    /// The index in `services` of the service for `authority` (see `service_for`).
    pub fn service_index_for(&self, authority: &str) -> Option<usize> {
        let find = |a: &str| self.services.iter().position(|s| s.hosts.iter().any(|h| h.matches(a)));
        let (host, port) = split_authority(authority);
        if !host.ends_with('.') {
            return find(authority);
        }
        // A fully qualified name (`web.local.`) is the same host; the dot goes, the port stays.
        let host = host.trim_end_matches('.');
        match port {
            Some(port) => find(&format!("{host}:{port}")),
            None => find(host),
        }
    }

    /// The service an intercepted connection to `addr` was meant for.
    pub fn service_at(&self, addr: SocketAddr) -> Option<&Arc<Service>> {
        self.services.get(self.service_index_at(addr)?)
    }

    /// The index in `services` of the service at `addr`.
    pub fn service_index_at(&self, addr: SocketAddr) -> Option<usize> {
        self.services.iter().position(|s| s.addresses.contains(&addr))
    }

    pub fn listener(&self, name: &str) -> Option<&Arc<Listener>> {
        self.listeners.iter().find(|l| &*l.name == name)
    }
}

impl HostMatch {
    /// `authority` is `host` or `host:port`, any case.
    pub fn matches(&self, authority: &str) -> bool {
        let (host, _port) = split_authority(authority);
        match self {
            Self::Exact(want) if want.contains(':') && !want.starts_with('[') => want.eq_ignore_ascii_case(authority),
            Self::Exact(want) => want.eq_ignore_ascii_case(host) || want.eq_ignore_ascii_case(authority),
            Self::Suffix(suffix) => ends_with_ignore_case(host, suffix),
        }
    }
}

impl Service {
    /// The first route whose matches fit the request.
    pub fn route_for(&self, req: &http::request::Parts) -> Option<&Arc<Route>> {
        self.routes.get(self.route_index_for(req)?)
    }

    /// The index in `routes` of the first route whose matches fit the request.
    pub fn route_index_for(&self, req: &http::request::Parts) -> Option<usize> {
        self.routes.iter().position(|r| r.matches_request(req))
    }
}

impl Route {
    pub fn matches_request(&self, req: &http::request::Parts) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(req))
    }

    /// The first `PathMatch::Prefix` that matches `path`, for the prefix rewrite.
    pub fn matched_prefix(&self, req: &http::request::Parts) -> Option<&str> {
        self.matches.iter().filter(|m| m.matches(req)).find_map(|m| match &m.path {
            Some(PathMatch::Prefix(p)) => Some(p.as_str()),
            _ => None,
        })
    }

    /// The request's path and query with the matched prefix replaced by `filters.path_prefix_rewrite`; `None`
    /// when the route has no rewrite or no prefix matched.
    pub fn rewritten_path(&self, req: &http::request::Parts) -> Option<String> {
        let rewrite = self.filters.path_prefix_rewrite.as_deref()?;
        let rest = req.uri.path().get(self.matched_prefix(req)?.len()..)?;
        let mut path = format!("{rewrite}{rest}");
        if path.is_empty() {
            path.push('/');
        }
        if let Some(query) = req.uri.query() {
            path.push('?');
            path.push_str(query);
        }
        Some(path)
    }
}

/// `host` is longer than `suffix` and ends with it, ASCII case aside (by bytes: a cut inside a multi-byte character
/// of a hostile `Host` is no panic).
fn ends_with_ignore_case(host: &str, suffix: &str) -> bool {
    let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
    host.len() > suffix.len() && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// Splits `host:port`, `[v6]:port`, `host` into host and optional port.
pub fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let port = rest[end + 1..].strip_prefix(':');
            return (&authority[..end + 2], port);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests;
