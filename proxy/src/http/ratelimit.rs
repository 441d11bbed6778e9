//! Rate limit: the route's (or, inbound, the listener's) `rate_limit`, enforced per key with GCRA, optionally
//! queueing a request briefly instead of answering 429 at once.
//!
//! - **Algorithm.** GCRA, which is a token bucket without a refill timer: each bucket is one number, its theoretical
//!   arrival time (TAT). `burst` requests pass at once, then one every `1s / per_second`. Time is
//!   `tokio::time::Instant`, so tests run with paused time.
//! - **Keys.** `global`: one bucket. `client-ip`: the downstream IP (`ClientAddr`, port ignored, IPv4-mapped IPv6
//!   folded to IPv4); a request without a `ClientAddr` shares one "unknown" bucket. `header:<name>`: the header's
//!   first value; requests *without* the header share one bucket of their own (distinct from every value, including
//!   the empty one), so leaving the header out neither escapes the limit nor spends the tokens of any real value.
//!   `peer-identity`: there is no mTLS yet, so every request is "unauthenticated" and shares one bucket (a global
//!   limit) until the verified peer identity is available as a request extension.
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

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use attache_config::model::{RateLimit as Policy, RateLimitKey, Route};
use http::header::{HeaderName, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;

use super::meta::ClientAddr;
use super::rescue::ERROR_HEADER;
use super::route::Target;
use super::stage::{fail, Middleware, ResponseFuture};
use crate::body::Body;
use crate::dataplane::Dataplane;
use crate::errors::BoxError;
use crate::metrics::{Dir, Name};

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

/// The live limiters of every route, shared by both pipelines and kept across reloads. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RateLimiters {
    table: Arc<RwLock<Table>>,
}

/// One route's limiter for one policy: its buckets and its queue depth.
#[derive(Debug)]
pub struct Limiter {
    policy: Policy,
    /// Nanoseconds between tokens; at least 1.
    interval: u64,
    /// `burst * interval`: how far ahead of now a bucket's TAT may run.
    tolerance: u64,
    max_keys: usize,
    max_wait: u64,
    /// Keys buckets by a hash that clients cannot predict.
    hasher: RandomState,
    /// Bucket times are nanoseconds since this instant.
    epoch: Instant,
    buckets: Mutex<Buckets>,
    /// Requests waiting for a token.
    waiting: AtomicUsize,
}

/// What a limiter decided for one request.
#[derive(Debug)]
pub enum Decision {
    Allowed,
    /// Admitted at `until`; the request holds `QueuePlace` while it waits.
    Queued {
        until: Instant,
        place: QueuePlace,
    },
    Limited(RateLimited),
}

/// A place in a limiter's wait queue; freed when dropped.
#[derive(Debug)]
pub struct QueuePlace(Arc<Limiter>);

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabels {
    pub direction: Dir,
    pub service: Name,
    pub route: Name,
    pub decision: &'static str,
}

/// `attache_rate_limit_decisions_total`.
#[derive(Clone, Debug, Default)]
pub struct RateLimitMetrics {
    pub decisions: Family<DecisionLabels, Counter>,
}

/// Routes' limiters: per direction, by service, by route name; newest policy first, at most `GENERATIONS`.
#[derive(Debug, Default)]
struct Table {
    inbound: ByService,
    outbound: ByService,
}

/// Service -> route name -> limiters (newest policy first).
type ByService = HashMap<Arc<str>, HashMap<Arc<str>, Vec<Arc<Limiter>>>>;

/// Buckets by key hash; `slots` makes random sampling for eviction O(1).
#[derive(Debug, Default)]
struct Buckets {
    index: HashMap<u64, usize>,
    slots: Vec<Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    key: u64,
    /// Theoretical arrival time, nanoseconds since the limiter's epoch. `<= now` means full.
    tat: u64,
}

/// Limiters kept per route: the current policy and the previous one (requests of the old snapshot in flight).
const GENERATIONS: usize = 2;
/// Buckets sampled to choose an eviction.
const EVICTION_SAMPLE: usize = 8;

impl RateLimit {
    pub fn new(limiters: RateLimiters, metrics: RateLimitMetrics, direction: Dir) -> Self {
        Self { limiters, metrics, direction }
    }
}

impl Middleware for RateLimit {
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> ResponseFuture
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        let decision = {
            let Some(target) = req.extensions().get::<Target>() else { return Box::pin(next.call(req)) };
            let Some(limiter) = self.limiters.get(self.direction, &target.route) else {
                return Box::pin(next.call(req));
            };
            let decision = limiter.acquire(&req);
            self.metrics.record(self.direction, &target.route, &decision);
            decision
        };
        match decision {
            Decision::Allowed => Box::pin(next.call(req)),
            Decision::Limited(err) => {
                tracing::debug!(retry_after = ?err.retry_after, "rate limited");
                fail(err)
            }
            Decision::Queued { until, place } => {
                // The stages below do their work when polled, so nothing is sent before the wait ends.
                let fut = next.call(req);
                Box::pin(async move {
                    tokio::time::sleep_until(until).await;
                    drop(place);
                    fut.await
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

impl RateLimiters {
    pub fn new() -> Self {
        Self::default()
    }

    /// The limiter for `route`'s policy, created on first use; `None` when the route has no rate limit.
    pub fn get(&self, direction: Dir, route: &Route) -> Option<Arc<Limiter>> {
        let policy = route.rate_limit.as_ref()?;
        {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let found = table
                .dir(direction)
                .get(&*route.service)
                .and_then(|routes| routes.get(&*route.name))
                .and_then(|gens| gens.iter().find(|l| l.policy == *policy));
            if let Some(limiter) = found {
                return Some(limiter.clone());
            }
        }
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let gens =
            table.dir_mut(direction).entry(route.service.clone()).or_default().entry(route.name.clone()).or_default();
        if let Some(limiter) = gens.iter().find(|l| l.policy == *policy) {
            return Some(limiter.clone());
        }
        let limiter = Arc::new(Limiter::new(policy.clone()));
        gens.insert(0, limiter.clone());
        gens.truncate(GENERATIONS);
        Some(limiter)
    }

    /// Keeps the limiters for which `keep(direction, service, route, policy)` holds.
    pub fn retain(&self, mut keep: impl FnMut(Dir, &str, &str, &Policy) -> bool) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        for direction in [Dir::Inbound, Dir::Outbound] {
            let services = table.dir_mut(direction);
            services.retain(|service, routes| {
                routes.retain(|name, gens| {
                    gens.retain(|l| keep(direction, service, name, &l.policy));
                    !gens.is_empty()
                });
                !routes.is_empty()
            });
        }
    }

    /// Keeps only the limiters of `plane`'s routes and current policies: outbound, the snapshot's service routes;
    /// inbound, the listeners' app routes. Unchanged policies keep their buckets.
    pub fn reconcile(&self, plane: &Dataplane) {
        let mut live: HashMap<(Dir, &str, &str), &Policy> = HashMap::new();
        let outbound = plane.snapshot.services.iter().flat_map(|s| s.routes.iter()).map(|r| (Dir::Outbound, r));
        let inbound = plane.inbound.values().map(|r| (Dir::Inbound, r));
        for (direction, route) in outbound.chain(inbound) {
            if let Some(policy) = &route.rate_limit {
                live.insert((direction, &route.service, &route.name), policy);
            }
        }
        self.retain(|direction, service, route, policy| live.get(&(direction, service, route)) == Some(&policy));
    }

    /// Reconciles with every dataplane `plane` publishes, until its sender is gone.
    pub fn follow(&self, mut plane: watch::Receiver<Arc<Dataplane>>) -> tokio::task::JoinHandle<()> {
        let limiters = self.clone();
        tokio::spawn(async move {
            while plane.changed().await.is_ok() {
                let current = plane.borrow_and_update().clone();
                limiters.reconcile(&current);
            }
        })
    }

    /// Limiters alive (all routes, all kept policies).
    pub fn len(&self) -> usize {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        [&table.inbound, &table.outbound].iter().flat_map(|d| d.values()).flat_map(|r| r.values()).map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    fn dir(&self, direction: Dir) -> &ByService {
        match direction {
            Dir::Inbound => &self.inbound,
            Dir::Outbound => &self.outbound,
        }
    }

    fn dir_mut(&mut self, direction: Dir) -> &mut ByService {
        match direction {
            Dir::Inbound => &mut self.inbound,
            Dir::Outbound => &mut self.outbound,
        }
    }
}

impl Limiter {
    pub fn new(policy: Policy) -> Self {
        let interval = (1_000_000_000 / u64::from(policy.per_second.max(1))).max(1);
        let tolerance = interval.saturating_mul(u64::from(policy.burst.max(1)));
        let max_wait = policy.queue.map_or(0, |q| nanos(q.max_wait));
        Self {
            interval,
            tolerance,
            max_keys: policy.max_keys.max(1),
            max_wait,
            hasher: RandomState::new(),
            epoch: Instant::now(),
            buckets: Mutex::new(Buckets::default()),
            waiting: AtomicUsize::new(0),
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Takes a token for `req`'s key, reserves a later one (`Queued`), or refuses.
    pub fn acquire<B>(self: &Arc<Self>, req: &Request<B>) -> Decision {
        self.acquire_key(self.key_of(req))
    }

    /// Buckets currently kept.
    pub fn keys(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).slots.len()
    }

    /// Requests currently waiting for a token.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn key_of<B>(&self, req: &Request<B>) -> u64 {
        let mut h = self.hasher.build_hasher();
        match &self.policy.key {
            RateLimitKey::Global => 0u8.hash(&mut h),
            // No mTLS yet: every peer is the same "unauthenticated" identity.
            RateLimitKey::PeerIdentity => 1u8.hash(&mut h),
            RateLimitKey::ClientIp => match req.extensions().get::<ClientAddr>() {
                Some(addr) => (2u8, addr.0.ip().to_canonical()).hash(&mut h),
                None => 3u8.hash(&mut h),
            },
            RateLimitKey::Header(name) => match req.headers().get(name) {
                Some(value) => (4u8, value.as_bytes()).hash(&mut h),
                None => 5u8.hash(&mut h),
            },
        }
        h.finish()
    }

    fn acquire_key(self: &Arc<Self>, key: u64) -> Decision {
        let now = nanos(Instant::now().saturating_duration_since(self.epoch));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = buckets.get_or_insert(key, self.max_keys);
        let tat = slot.tat.max(now);
        let next = tat.saturating_add(self.interval);
        let admit_until = now.saturating_add(self.tolerance);
        if next <= admit_until {
            slot.tat = next;
            return Decision::Allowed;
        }
        let wait = next - admit_until;
        if let Some(queue) = &self.policy.queue {
            if wait <= self.max_wait && self.enter_queue(queue.max_depth) {
                slot.tat = next;
                drop(buckets);
                let until = self.epoch + Duration::from_nanos(now.saturating_add(wait));
                return Decision::Queued { until, place: QueuePlace(self.clone()) };
            }
        }
        Decision::Limited(RateLimited {
            retry_after: Duration::from_nanos(wait),
            limit: self.policy.burst,
            remaining: 0,
            reset: Duration::from_nanos(tat - now),
        })
    }

    fn enter_queue(&self, max_depth: usize) -> bool {
        self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max_depth).then_some(n + 1)).is_ok()
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Buckets {
    /// `key`'s bucket; a new key gets a full bucket, evicting one when `max_keys` are kept.
    fn get_or_insert(&mut self, key: u64, max_keys: usize) -> &mut Bucket {
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                if self.slots.len() >= max_keys {
                    self.evict();
                }
                self.slots.push(Bucket { key, tat: 0 });
                self.index.insert(key, self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        &mut self.slots[i]
    }

    /// Drops the fullest of a few sampled buckets (smallest TAT).
    fn evict(&mut self) {
        let len = self.slots.len();
        if len == 0 {
            return;
        }
        let victim = if len <= EVICTION_SAMPLE {
            (0..len).min_by_key(|&i| self.slots[i].tat)
        } else {
            (0..EVICTION_SAMPLE).map(|_| rand::random_range(0..len)).min_by_key(|&i| self.slots[i].tat)
        };
        let Some(victim) = victim else { return };
        let removed = self.slots.swap_remove(victim);
        self.index.remove(&removed.key);
        if let Some(moved) = self.slots.get(victim) {
            self.index.insert(moved.key, victim);
        }
    }
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

    fn record(&self, direction: Dir, route: &Route, decision: &Decision) {
        let decision = match decision {
            Decision::Allowed => "allowed",
            Decision::Queued { .. } => "queued",
            Decision::Limited(_) => "limited",
        };
        let labels =
            DecisionLabels { direction, service: Name::from(&route.service), route: Name::from(&route.name), decision };
        self.decisions.get_or_create(&labels).inc();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
