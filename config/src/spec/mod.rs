//! The YAML file format: raw `*Spec` types that mirror the file one to one.
//!
//! Every struct denies unknown fields so a typo fails loudly; every optional field has a default. Nothing here is
//! validated: `TryFrom<ConfigSpec> for Snapshot` (in `validate`) turns these into the immutable model.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod resilience;
mod tls;
mod tracing;

pub use self::resilience::*;
pub use self::tls::*;
pub use self::tracing::*;

/// A whole proxy configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// The admin listener (`/live`, `/ready`, `/metrics`, `/config`).
    #[serde(default)]
    pub admin: AdminSpec,
    /// Limits and default timeouts. Every field has a sane default.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// The ports the sidecar listens on.
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
    /// Logical services the app calls through the outbound listener, matched by Host/authority.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Named groups of endpoints that routes and listeners send traffic to.
    #[serde(default)]
    pub backends: Vec<BackendSpec>,
    /// Trace-context propagation, sampling and span export.
    #[serde(default)]
    pub tracing: TracingSpec,
}

/// The admin listener. Loopback by default: it is never public unless configured so.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSpec {
    /// `IP:port`; port 0 picks a free port.
    #[serde(default = "default_admin_address")]
    pub address: String,
}

/// Limits and defaults. Durations are strings such as `250ms`, `3s`, `1m`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSpec {
    /// How long to wait for a client's first bytes before treating the connection as opaque TCP.
    pub detect_timeout: String,
    /// How long an inbound TLS handshake may take once the client started it.
    pub handshake_timeout: String,
    /// Upstream TCP connect timeout (and, for backends with `tls`, the handshake's).
    pub connect_timeout: String,
    /// Default whole-request deadline for routes without their own `timeout`.
    pub request_timeout: String,
    /// A downstream connection, or a TCP stream, with no traffic for this long is closed.
    pub idle_timeout: String,
    /// On SIGTERM, in-flight requests get this long to finish.
    pub drain_timeout: String,
    /// Maximum number of request header fields (HTTP/1); more gets 431.
    pub max_header_count: u32,
    /// Maximum size of a request head in bytes (request line and headers); more gets 431.
    pub max_head_bytes: u32,
    /// Requests in flight per listener before new ones are shed with 503.
    pub max_concurrent_requests: u32,
    /// HTTP/2 streams a downstream peer may open and reset before the proxy took them up, per connection; one more
    /// closes the connection with GOAWAY `ENHANCE_YOUR_CALM` (the rapid-reset guard, CVE-2023-44487).
    pub h2_max_pending_reset_streams: u32,
    /// Requests in flight per backend (bulkhead) unless the backend sets its own.
    pub max_concurrent_per_backend: u32,
    /// Requests waiting for a slot, per backend, before new ones are shed with 503 (0: none wait).
    pub max_pending_per_backend: u32,
    /// Idle pooled upstream connections are closed after this long.
    pub pool_idle_timeout: String,
    /// Idle pooled upstream connections kept per endpoint.
    pub pool_max_idle_per_endpoint: u32,
    /// Request bytes held for retry replay across all requests at once; beyond it, requests are streamed once.
    pub max_retry_buffer_bytes: u32,
    /// Connections the kernel queues for a listener before the proxy accepts them (capped by
    /// `net.core.somaxconn`); a burst beyond it has its SYNs dropped and retried a second later. Applies to
    /// listeners bound after the change.
    pub listen_backlog: u32,
}

/// Which way a listener carries traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DirectionSpec {
    /// The app calls out through it (ambassador port or `HTTP_PROXY`).
    Outbound,
    /// The world calls the app through it.
    Inbound,
}

/// How a listener decides what a connection carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocolSpec {
    /// Sniff HTTP/2 preface or an HTTP/1 request line; anything else is opaque TCP.
    #[default]
    Detect,
    /// HTTP only (HTTP/1.1 or h2c); no opaque fallback.
    Http,
    /// Opaque TCP without sniffing, for server-speaks-first protocols (MySQL, SMTP, ...).
    Opaque,
}

/// One listening port.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// `IP:port` to bind; port 0 picks a free port.
    pub address: String,
    /// `outbound` or `inbound`.
    pub direction: DirectionSpec,
    /// `detect` (default), `http` or `opaque`.
    #[serde(default)]
    pub protocol: ListenerProtocolSpec,
    /// Inbound only: the local app's `IP:port` that traffic is forwarded to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Outbound only: the backend that non-HTTP (opaque TCP) connections are forwarded to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_backend: Option<String>,
    /// Inbound only: a rate limit on HTTP requests to the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Inbound only: terminate mutual TLS and learn each caller's SPIFFE identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTlsSpec>,
    /// Inbound only: which caller identities may reach the app (HTTP: 403 otherwise; TCP: closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthorizationSpec>,
}

/// A logical service, addressed by host name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Host names (optionally `host:port`, or `*.suffix`) this service answers to.
    pub hosts: Vec<String>,
    /// `IP:port`s the app dials for this service (e.g. its Kubernetes ClusterIP). A connection intercepted by the
    /// sidecar's iptables rules whose original destination is listed is proxied as this service (by Host first);
    /// one to an unlisted destination is forwarded unchanged as TCP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Ordered routes; the first whose match fits the request wins.
    pub routes: Vec<RouteSpec>,
}

/// A route: which requests it takes, how it changes them, where they go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Unique within the service; used in metrics and logs.
    pub name: String,
    /// Any one match selects the route; an empty list matches every request.
    #[serde(default, rename = "match")]
    pub matches: Vec<MatchSpec>,
    /// Request and response changes.
    #[serde(default)]
    pub filters: FiltersSpec,
    /// Weighted backends; weights are relative and need not sum to 100.
    pub backends: Vec<BackendRefSpec>,
    /// Keep a user on one backend by hashing a header or cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    /// Whole-request deadline; defaults to `limits.request_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retries (off unless configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    /// Rate limit for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// Fault injection for this route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultSpec>,
}

/// All conditions of one match must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatchSpec>,
    /// HTTP method, e.g. `GET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatchSpec>,
    /// Query parameter conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatchSpec>,
}

/// Exactly one of `exact` or `prefix`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathMatchSpec {
    /// The whole path equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The path starts with these segments (`/api` matches `/api` and `/api/x`, not `/apix`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// A header or query parameter condition: at most one of `exact` and `regex`; with neither, it must be present.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// Header or parameter name (header names are case-insensitive).
    pub name: String,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// Request and response changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FiltersSpec {
    /// Changes to the request headers sent upstream.
    #[serde(default)]
    pub request_headers: HeaderFilterSpec,
    /// Changes to the response headers sent back.
    #[serde(default)]
    pub response_headers: HeaderFilterSpec,
    /// Path rewrite.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewriteSpec>,
}

/// Header changes, applied in the order remove, set, add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderFilterSpec {
    /// Replace (or create) these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HeaderSpec>,
    /// Append these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HeaderSpec>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// Path rewrite.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteSpec {
    /// Replace the matched path prefix with this one. Every match of the route needs a `path.prefix`.
    pub path_prefix: String,
}

/// A route's reference to a backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendRefSpec {
    /// Name of an entry in `backends`.
    pub name: String,
    /// Relative weight (default 1); 0 takes no traffic.
    #[serde(default = "default_weight")]
    pub weight: i64,
}

/// Exactly one of `header` or `cookie`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StickySpec {
    /// Hash this request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Hash this cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

/// Upstream protocol of a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocolSpec {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
    /// The version the client used.
    #[default]
    Auto,
}

/// A named group of endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    /// Unique name, referenced by routes and listeners.
    pub name: String,
    /// `IP:port` or `dns-name:port` entries; DNS names are re-resolved every `dns_refresh`.
    pub endpoints: Vec<String>,
    /// `http1`, `http2` or `auto` (default: the client's version).
    #[serde(default)]
    pub protocol: UpstreamProtocolSpec,
    /// How often DNS endpoints are re-resolved (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh: Option<String>,
    /// Connect timeout for this backend; defaults to `limits.connect_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// Per-endpoint circuit breaking; on by default.
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerSpec,
    /// Requests in flight to this backend at most (bulkhead); default `limits.max_concurrent_per_backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_requests: Option<u32>,
    /// Requests waiting for a slot at most (0: none); beyond, a fast 503; default `limits.max_pending_per_backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// Active health checks feeding the same endpoint gate as the circuit breaker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
    /// Originate mTLS to this backend's endpoints and require their exact SPIFFE identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTlsSpec>,
}

fn default_admin_address() -> String {
    "127.0.0.1:9901".to_owned()
}

fn default_weight() -> i64 {
    1
}

impl Default for AdminSpec {
    fn default() -> Self {
        Self { address: default_admin_address() }
    }
}

impl Default for LimitsSpec {
    fn default() -> Self {
        Self {
            detect_timeout: "1s".to_owned(),
            handshake_timeout: "5s".to_owned(),
            connect_timeout: "1s".to_owned(),
            request_timeout: "15s".to_owned(),
            idle_timeout: "60s".to_owned(),
            drain_timeout: "10s".to_owned(),
            max_header_count: 100,
            max_head_bytes: 64 * 1024,
            max_concurrent_requests: 10_000,
            h2_max_pending_reset_streams: 100,
            max_concurrent_per_backend: 10_000,
            max_pending_per_backend: 1_000,
            pool_idle_timeout: "90s".to_owned(),
            pool_max_idle_per_endpoint: 64,
            max_retry_buffer_bytes: 64 * 1024 * 1024,
            listen_backlog: 1024,
        }
    }
}
