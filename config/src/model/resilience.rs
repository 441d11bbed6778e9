//! The validated resilience model: retry policies, breakers, bulkheads, health checks, rate limits and faults.

use std::time::Duration;

use http::HeaderName;

/// A route's retry policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RetryPolicy {
    /// Total attempts including the first; at least 1.
    pub attempts: u32,
    pub on: RetryOn,
    /// gRPC status codes (0..=16) that are retried.
    pub grpc_status: Vec<u32>,
    pub per_try_timeout: Option<Duration>,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub budget: RetryBudget,
    pub retry_non_idempotent: bool,
    pub max_body_bytes: usize,
}

/// Which failures are retried.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct RetryOn {
    pub connect_failure: bool,
    /// Reset or connection lost before any response byte.
    pub reset: bool,
    /// A per-try timeout.
    pub timeout: bool,
    /// Sorted response statuses (`5xx` and `gateway-error` expanded).
    pub statuses: Vec<u16>,
}

/// Retries may add `ratio` of the route's requests, plus `min_per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_second: u32,
}

/// Per-endpoint circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BreakerPolicy {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

/// Per-backend bulkhead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bulkhead {
    pub max_concurrent: usize,
    pub max_pending: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    /// Path and query, starting with `/`.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Tokens added per second; at least 1.
    pub per_second: u32,
    /// Bucket size; at least 1.
    pub burst: u32,
    pub key: RateLimitKey,
    pub max_keys: usize,
    pub queue: Option<RateLimitQueue>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RateLimitKey {
    Global,
    ClientIp,
    Header(HeaderName),
    PeerIdentity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitQueue {
    pub max_wait: Duration,
    pub max_depth: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// Only requests matching this header get faults.
    pub only_if: Option<super::HeaderMatch>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultDelay {
    /// 0..=100.
    pub percent: u32,
    pub duration: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FaultAbort {
    /// 0..=100.
    pub percent: u32,
    pub kind: AbortKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortKind {
    Status(http::StatusCode),
    /// Answered as HTTP 200 with `grpc-status` in a trailers-only response.
    GrpcStatus(u32),
}

impl Eq for RetryBudget {}

impl std::hash::Hash for RetryBudget {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.ratio.to_bits().hash(state);
        self.min_per_second.hash(state);
    }
}

impl RetryPolicy {
    /// Whether a method may be retried after bytes were sent.
    pub fn method_allowed(&self, method: &http::Method) -> bool {
        use http::Method as M;
        self.retry_non_idempotent
            || [M::GET, M::HEAD, M::OPTIONS, M::PUT, M::DELETE, M::TRACE].iter().any(|m| m == method)
    }

    pub fn retries_status(&self, status: http::StatusCode) -> bool {
        self.on.statuses.binary_search(&status.as_u16()).is_ok()
    }

    pub fn retries_grpc(&self, code: u32) -> bool {
        self.grpc_status.contains(&code)
    }
}

/// gRPC status names as in the gRPC spec, lower case with dashes.
pub const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];
