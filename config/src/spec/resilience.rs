//! YAML for resilience: retries, circuit breaking, bulkheads, health checks, rate limits and fault injection.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Per-route retries. Off unless configured.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Total attempts including the first (default 3).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// What is retried: `connect-failure`, `reset` (stream reset or connection lost before any response byte),
    /// `timeout` (a per-try timeout), `5xx`, `gateway-error` (502, 503, 504), or a status code such as `409`.
    /// Default: `[connect-failure, reset, gateway-error]`.
    #[serde(default = "default_retry_on")]
    pub on: Vec<String>,
    /// gRPC statuses retried, by name (`unavailable`, `resource-exhausted`, ...) or number, whether they arrive in
    /// response headers or in the trailers of a unary response.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_status: Vec<String>,
    /// Abandon an attempt after this long (the route timeout still bounds all attempts together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<String>,
    /// Exponential backoff with full jitter between attempts.
    #[serde(default)]
    pub backoff: BackoffSpec,
    /// How much retries may add to the route's request rate.
    #[serde(default)]
    pub budget: RetryBudgetSpec,
    /// Retry POST, PATCH and other non-idempotent methods too (default false).
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// Request bodies up to this size are buffered so they can be replayed (default 65536); larger or
    /// unknown-length bodies are streamed and not retried.
    #[serde(default = "default_retry_body")]
    pub max_body_bytes: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffSpec {
    /// First backoff ceiling (default `25ms`); doubles per attempt.
    pub base: String,
    /// Largest backoff ceiling (default `250ms`).
    pub max: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryBudgetSpec {
    /// Retries may add at most this fraction of the route's requests (default 0.2).
    pub ratio: f64,
    /// Retries always allowed per second, whatever the ratio (default 10).
    pub min_per_second: u32,
}

/// Per-endpoint circuit breaking (on by default).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerSpec {
    /// Set false to never eject endpoints.
    pub enabled: bool,
    /// Consecutive failures (connect errors, 5xx, timeouts) that open an endpoint (default 5).
    pub consecutive_failures: u32,
    /// First ejection (default `1s`), jittered; doubles on each failed probe.
    pub base_ejection: String,
    /// Longest ejection (default `60s`).
    pub max_ejection: String,
}

/// Active health checks of a backend's endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// Path requested with GET; any 2xx is healthy.
    pub path: String,
    /// Time between checks (default `5s`).
    #[serde(default = "default_hc_interval")]
    pub interval: String,
    /// A check slower than this fails (default `1s`).
    #[serde(default = "default_hc_timeout")]
    pub timeout: String,
    /// Consecutive successes that bring an endpoint back (default 2).
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
    /// Consecutive failures that take an endpoint out (default 3).
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
}

/// A rate limit: a token bucket refilled at `requests_per_second` holding up to `burst` tokens, per key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// Requests allowed at once above the rate (default: one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// `global` (default), `client-ip`, `header:<name>`, or `peer-identity`.
    #[serde(default = "default_rl_key")]
    pub key: String,
    /// Buckets kept at most (least recently used go first), so a flood of keys cannot exhaust memory.
    #[serde(default = "default_rl_keys")]
    pub max_keys: u32,
    /// Wait instead of answering 429 at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<RateLimitQueueSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitQueueSpec {
    /// Longest wait for a token before 429.
    pub max_wait: String,
    /// Requests waiting at most; beyond, 429 at once.
    pub max_depth: u32,
}

/// Fault injection, for chaos testing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Delay some requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelaySpec>,
    /// Answer some requests with an error instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbortSpec>,
    /// Only requests carrying this header (and value, if `exact` is given) get faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<super::ValueMatchSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultDelaySpec {
    /// Share of requests delayed, 0 to 100.
    pub percent: u32,
    pub duration: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultAbortSpec {
    /// Share of requests aborted, 0 to 100.
    pub percent: u32,
    /// HTTP status to answer with (exactly one of `status` and `grpc_status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// gRPC status to answer with, by name or number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<String>,
}

impl Eq for RetryBudgetSpec {}

impl Default for BackoffSpec {
    fn default() -> Self {
        Self { base: "25ms".to_owned(), max: "250ms".to_owned() }
    }
}

impl Default for RetryBudgetSpec {
    fn default() -> Self {
        Self { ratio: 0.2, min_per_second: 10 }
    }
}

impl Default for CircuitBreakerSpec {
    fn default() -> Self {
        Self { enabled: true, consecutive_failures: 5, base_ejection: "1s".to_owned(), max_ejection: "60s".to_owned() }
    }
}

fn default_attempts() -> u32 {
    3
}

fn default_retry_on() -> Vec<String> {
    ["connect-failure", "reset", "gateway-error"].map(str::to_owned).to_vec()
}

fn default_retry_body() -> u32 {
    64 * 1024
}

fn default_hc_interval() -> String {
    "5s".to_owned()
}

fn default_hc_timeout() -> String {
    "1s".to_owned()
}

fn default_healthy() -> u32 {
    2
}

fn default_unhealthy() -> u32 {
    3
}

fn default_rl_key() -> String {
    "global".to_owned()
}

fn default_rl_keys() -> u32 {
    10_000
}
