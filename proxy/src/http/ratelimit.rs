//! Rate limit: the route's (or, inbound, the listener's) `rate_limit`, enforced per key with GCRA, optionally
//! queueing a request briefly instead of answering 429 at once.
//!
//! - **Algorithm.** GCRA, which is a token bucket without a refill timer: each bucket is one number, its theoretical
//!   arrival time (TAT). `burst` requests pass at once, then one every `1s / per_second`. Time is
//!   `tokio::time::Instant`, so tests run with paused time.
//! - **Keys.** `global`: one bucket. `client-ip`: the downstream IP (`Downstream`'s address, port ignored,
//!   IPv4-mapped IPv6 folded to IPv4); a request without one shares one "unknown" bucket. `header:<name>`: the
//!   header's first value; requests *without* the header share one bucket of their own (distinct from every value,
//!   including the empty one), so leaving the header out neither escapes the limit nor spends the tokens of any real
//!   value. `peer-identity`: the mTLS client's verified SPIFFE ID; every unauthenticated caller (plaintext, or a
//!   client without a certificate) shares one bucket of its own.
//! - **Memory.** A bucket is stored under a 64-bit keyed hash of its key (SipHash with a random key per limiter,
//!   so clients cannot aim collisions): a bucket costs the same whatever the header's length, and no request buffer
//!   is retained. At most `max_keys` buckets are kept. Making room evicts, among 8 randomly sampled buckets, the one
//!   closest to full (smallest TAT): a full bucket carries no state, so that eviction is lossless, and a client that
//!   is being limited (largest TAT) is the last to go, so a flood of fresh keys cannot reset a heavy client's
//!   bucket. This approximates LRU (TAT is last use plus backlog) in O(1).
//! - **Queue.** With `queue`, a request that would be limited reserves its future token if it comes within
//!   `max_wait` and fewer than `max_depth` requests of this route are waiting (an atomic counter), then sleeps until
//!   then holding no lock. A waiter that gives up (client gone) frees its queue place; its token stays spent.
//! - **Reloads.** `RateLimiters` keys limiters by (direction, service, route name, policy): an unchanged policy keeps
//!   its buckets across reloads, a changed one starts afresh. The previous policy's limiter is kept alongside (at
//!   most two per route), so requests still carrying the old snapshot during a reload do not thrash them.
//!   `RateLimiters::reconcile` (or `follow`, which calls it on every new dataplane) drops the limiters of routes and
//!   policies that no longer exist.
//! - **Metrics.** `attache_rate_limit_decisions_total{direction, service, route, decision}`, decision one of
//!   `allowed` (at once), `queued` (admitted after a wait) or `limited` (429). Never a key in a label.
//!
//! The limiter itself is in `limiter`, the registry of routes' limiters in `registry`; both are re-exported here.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use attache_config::model::Route;
use http::header::{HeaderName, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::rescue::ERROR_HEADER;
use super::route::Target;
use super::stage::{fail, Middleware, StageFuture};
use crate::body::Body;
use crate::errors::BoxError;
use crate::metrics::{Dir, Name};

mod limiter;
mod registry;

pub use limiter::{Decision, Limiter, QueuePlace};
pub use registry::RateLimiters;

/// The `x-attache-error` reason of a 429.
pub const REASON: &str = "rate-limited";

pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The request is over its route's rate limit (and could not wait for a token). Answered with 429 by
/// `rate_limited_response`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("over the route's rate limit of {limit} at once; retry after {retry_after:?}")]
pub struct RateLimited {
    /// Until the next token.
    pub retry_after: Duration,
    /// The bucket size (`burst`).
    pub limit: u32,
    /// Tokens left (0 when limited).
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// The rate-limit stage. Reads the matched route (`Target`); a route without `rate_limit` passes through.
#[derive(Clone, Debug)]
pub struct RateLimit {
    limiters: RateLimiters,
    metrics: RateLimitMetrics,
    direction: Dir,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabels {
    pub direction: Dir,
    pub service: Name,
    pub route: Name,
    pub decision: &'static str,
}

/// A resolved route's rate limiting in one direction, looked up on its first request: its limiter (`None`: the route
/// has no rate limit) and its decision counters, so a request neither takes the registry's lock nor hashes a label
/// set.
#[derive(Default)]
pub struct RouteLimit {
    limiter: OnceLock<Option<Arc<Limiter>>>,
    /// By decision, as `DECISIONS`.
    decisions: [OnceLock<Counter>; 3],
}

const DECISIONS: [&str; 3] = ["allowed", "queued", "limited"];

/// `attache_rate_limit_decisions_total`.
#[derive(Clone, Debug, Default)]
pub struct RateLimitMetrics {
    pub decisions: Family<DecisionLabels, Counter>,
}

impl RateLimit {
    pub fn new(limiters: RateLimiters, metrics: RateLimitMetrics, direction: Dir) -> Self {
        Self { limiters, metrics, direction }
    }
}

impl Middleware for RateLimit {
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let decision = {
            let Some(target) = Target::of(&req) else { return StageFuture::next(next.call(req)) };
            let slot = &target.route.rate_limit[self.direction as usize];
            let limiter = slot.limiter.get_or_init(|| self.limiters.get(self.direction, &target.route));
            let Some(limiter) = limiter else { return StageFuture::next(next.call(req)) };
            let decision = limiter.acquire(&req);
            self.metrics.record(self.direction, &target.route, slot, &decision);
            decision
        };
        match decision {
            Decision::Allowed => StageFuture::next(next.call(req)),
            Decision::Limited(err) => {
                tracing::debug!(retry_after = ?err.retry_after, "rate limited");
                fail(err)
            }
            Decision::Queued { until, place } => {
                // The rest of the pipeline is called when the wait ends: nothing is sent before.
                let mut next = next.clone();
                StageFuture::boxed(async move {
                    tokio::time::sleep_until(until).await;
                    drop(place);
                    next.call(req).await
                })
            }
        }
    }
}

impl RateLimited {
    /// The first `RateLimited` in `err`'s source chain; for the rescue layer.
    pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a RateLimited> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(found) = e.downcast_ref::<RateLimited>() {
                return Some(found);
            }
            cur = e.source();
        }
        None
    }
}

/// The 429 for `err`: `Retry-After` (whole seconds, rounded up, at least 1), `RateLimit-Limit`,
/// `RateLimit-Remaining`, `RateLimit-Reset` (seconds, rounded up) and `x-attache-error: rate-limited`.
pub fn rate_limited_response(err: &RateLimited) -> Response<Body> {
    let mut rsp = Response::new(Body::full(format!("{REASON}: {err}\n")));
    *rsp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    let headers = rsp.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(REASON));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(err.retry_after)));
    set_ratelimit_headers(headers, err.limit, err.remaining, err.reset);
    rsp
}

/// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (seconds, rounded up).
pub fn set_ratelimit_headers(headers: &mut HeaderMap, limit: u32, remaining: u32, reset: Duration) {
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(ceil_secs(reset)));
}

/// `Retry-After` seconds: rounded up, at least 1 (0 would invite an immediate retry that is limited again).
pub fn retry_after_secs(d: Duration) -> u64 {
    ceil_secs(d).max(1)
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

impl RateLimitMetrics {
    /// Registers `rate_limit_decisions` (a counter: `<prefix>_rate_limit_decisions_total`) in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "rate_limit_decisions",
            "Rate-limit decisions by route: allowed, queued (admitted after a wait) or limited (429)",
            metrics.decisions.clone(),
        );
        metrics
    }

    fn record(&self, direction: Dir, route: &Route, slot: &RouteLimit, decision: &Decision) {
        let index = match decision {
            Decision::Allowed => 0,
            Decision::Queued { .. } => 1,
            Decision::Limited(_) => 2,
        };
        let make = || {
            let (service, route, decision) = (Name::from(&route.service), Name::from(&route.name), DECISIONS[index]);
            self.decisions.get_or_create(&DecisionLabels { direction, service, route, decision }).clone()
        };
        slot.decisions[index].get_or_init(make).inc();
    }
}

#[cfg(test)]
mod tests;
