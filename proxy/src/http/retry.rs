//! Retry: above the split, so every attempt chooses its backend and endpoint anew and can avoid the endpoint that
//! just failed. Retryability is decided from where the failure was born: nothing sent (connect failed) is always
//! safe; after bytes went upstream only for idempotent methods or routes that opt in; once response headers reach
//! the client, never. Request bodies up to a bound are buffered and replayed byte for byte; a per-route budget caps
//! how much retries add, so a failing backend never multiplies load.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use attache_config::model::{RetryBudget, RetryPolicy, Route};
use http::request::Parts;
use http::{HeaderMap, Request, Response};
use http_body::Body as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::Service;

use super::budget::Budget;
use super::meta::RequestMeta;
use super::replay::{buffer, grpc_status, rebuild, Replay};
use super::resolved::ResolvedRoute;
use super::route::Target;
use super::split::Split;
use crate::backend::{nothing_sent, AttemptTimeout};
use crate::body::Body;
use crate::errors::{BoxError, ConnectFailed, PerTryTimeout, UpstreamFailed};
use crate::metrics::Name;

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send + 'static>>;

/// A body read ahead: the head and the body to replay, or the request to stream once; either with its share of the
/// replay pool.
type ReadAhead = Result<(Parts, Replay, Option<Held>), (Request<Body>, Option<Held>)>;

/// The retrying service, wrapping the split.
#[derive(Clone)]
pub struct Retry {
    metrics: RetryMetrics,
    budgets: Budgets,
    /// Request bytes held for replay by all requests at once (bounded by `limits.max_retry_buffer_bytes`).
    held: Arc<std::sync::atomic::AtomicUsize>,
}

/// A share of the replay pool, given back when the request is done.
struct Held {
    pool: Arc<std::sync::atomic::AtomicUsize>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Retry budgets by route, kept across reloads while the route's budget policy is unchanged.
#[derive(Clone, Default)]
pub struct Budgets(Arc<Mutex<BudgetMap>>);

/// (service, route) -> the budget policy and its state.
type BudgetMap = HashMap<(Arc<str>, Arc<str>), Arc<Budget>>;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub service: Name,
    pub route: Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RetryLabels {
    pub service: Name,
    pub route: Name,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct RetryMetrics {
    pub attempts: Family<RouteLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub budget_exhausted: Family<RouteLabels, Counter>,
    pub body_too_large: Family<RouteLabels, Counter>,
}

/// Why an attempt is worth another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    ConnectFailure,
    Reset,
    Timeout,
    Status,
    GrpcStatus,
}

impl RetryMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self::default();
        reg.register("request_attempts", "Upstream attempts on routes with retries", m.attempts.clone());
        reg.register("retries", "Retries by route and reason", m.retries.clone());
        reg.register(
            "retry_budget_exhausted",
            "Retries not made because the route's budget was spent",
            m.budget_exhausted.clone(),
        );
        reg.register(
            "retry_body_too_large",
            "Requests not retryable because their body was too large or of unknown length",
            m.body_too_large.clone(),
        );
        m
    }
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::ConnectFailure => "connect-failure",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Status => "status",
            Self::GrpcStatus => "grpc-status",
        }
    }
}

impl Budgets {
    /// The budget of `route`, new when the route or its budget policy is new.
    fn get(&self, route: &Route, policy: &RetryBudget) -> Arc<Budget> {
        let key = (route.service.clone(), route.name.clone());
        let Ok(mut map) = self.0.lock() else {
            return Arc::new(Budget::new(*policy));
        };
        match map.get(&key) {
            Some(budget) if budget.policy() == policy => budget.clone(),
            _ => {
                let budget = Arc::new(Budget::new(*policy));
                map.insert(key, budget.clone());
                budget
            }
        }
    }
}

impl Retry {
    pub fn new(metrics: RetryMetrics, budgets: Budgets) -> Self {
        Self { metrics, budgets, held: Arc::default() }
    }

    /// Reserves up to `bytes` of the replay pool; `None` when the pool cannot hold them.
    fn hold(&self, bytes: usize, limit: usize) -> Option<Held> {
        let prev = self.held.fetch_add(bytes, Ordering::AcqRel);
        let held = Held { pool: self.held.clone(), bytes };
        (prev + bytes <= limit).then_some(held)
    }
}

impl Service<Request<Body>> for Retry {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        let route = Target::of(&req).map(|t| t.route.clone());
        let Some(route) = route.filter(|r| r.retry.is_some() && !super::upgrade::is_upgrade(&req)) else {
            return Split.call(req);
        };
        Box::pin(self.clone().run(route, req))
    }
}

impl Retry {
    async fn run(self, route: Arc<ResolvedRoute>, req: Request<Body>) -> Result<Response<Body>, BoxError> {
        let Some(policy) = route.retry.as_ref() else { return Split.call(req).await };
        // Built only when a series is looked up (the attempts counter is the route's, resolved once).
        let labels = || RouteLabels { service: Name(route.service.clone()), route: Name(route.name.clone()) };
        let budget = route.budget.get_or_init(|| self.budgets.get(&route, &policy.budget));
        let attempts = route.attempts.get_or_init(|| self.metrics.attempts.get_or_create(&labels()).clone());
        budget.deposit();
        let meta = RequestMeta::of(&req).cloned();
        let timeout = policy.per_try_timeout;
        // A request without a body (most of them) goes out itself on the first attempt; a copy of its head waits
        // for a retry. One with a body is buffered first, and every attempt sends a copy.
        let (mut head, replay, _held);
        let mut result = if req.body().is_end_stream() {
            (head, replay, _held) = (copy_head(&req, meta.is_some()), Replay::default(), None);
            count_attempt(meta.as_ref(), attempts);
            Split.call(with_timeout(req, timeout)).await
        } else {
            match Box::pin(self.read_ahead(policy, req)).await? {
                Ok(buffered) => (head, replay, _held) = buffered,
                Err((req, _streaming)) => {
                    // Streamed as it comes: one attempt only (still bounded by the per-try timeout), holding its
                    // share of the pool while what was read ahead is still in it.
                    self.metrics.body_too_large.get_or_create(&labels()).inc();
                    count_attempt(meta.as_ref(), attempts);
                    return Split.call(with_timeout(req, timeout)).await;
                }
            }
            count_attempt(meta.as_ref(), attempts);
            Split.call(rebuild(&head, &replay, None, timeout)).await
        };
        let is_grpc = is_grpc(&head.headers);
        for attempt in 1..policy.attempts {
            let served = meta.as_ref().and_then(|m| m.served());
            let verdict = match judge(policy, &head.method, is_grpc, &result, served) {
                Some(verdict) => verdict,
                None => {
                    let read;
                    (read, result) = Box::pin(judge_grpc(policy, result, served)).await;
                    read
                }
            };
            let Some((reason, failed_at)) = verdict else { return result };
            if !budget.withdraw() {
                self.metrics.budget_exhausted.get_or_create(&labels()).inc();
                return result;
            }
            let RouteLabels { service, route: route_name } = labels();
            self.metrics
                .retries
                .get_or_create(&RetryLabels { service, route: route_name, reason: reason.as_str() })
                .inc();
            tracing::debug!(route = %route.name, attempt, reason = reason.as_str(), "retrying");
            drop(result);
            // The copied head left the meta out (see `copy_head`): the retry's request carries it again.
            if let Some(meta) = meta.as_ref().filter(|_| head.extensions.is_empty()) {
                head.extensions.insert(meta.clone());
            }
            Box::pin(tokio::time::sleep(backoff(policy, attempt))).await;
            count_attempt(meta.as_ref(), attempts);
            result = Split.call(rebuild(&head, &replay, failed_at, timeout)).await;
        }
        result
    }

    /// Buffers the request's body for replay; or hands the request back (the body too large, of unknown length past
    /// the bound, or the pool full), with what was read ahead in front, to be streamed once. Either way with its
    /// share of the replay pool, to hold until the request is done.
    async fn read_ahead(&self, policy: &RetryPolicy, req: Request<Body>) -> Result<ReadAhead, BoxError> {
        let limit = Target::of(&req).map_or(usize::MAX, |t| t.plane.snapshot.limits.max_retry_buffer_bytes);
        let (head, body) = req.into_parts();
        // Room for the largest body this route may replay; a body known to be empty needs none.
        let need = if body.size_hint().upper() == Some(0) { 0 } else { policy.max_body_bytes };
        let held = self.hold(need, limit);
        if need > 0 && held.is_none() {
            return Ok(Err((Request::from_parts(head, body), None)));
        }
        // Boxed: most requests have no body, and this future is moved into its box whole.
        Ok(match Box::pin(buffer(body, policy.max_body_bytes)).await? {
            Ok(replay) => Ok((head, replay, held)),
            Err(body) => Err((Request::from_parts(head, body), held)),
        })
    }
}

/// The head of a request without a body, kept for a retry. Its extensions are left out when the request meta is
/// all they hold (the usual case; the loop puts the meta back for a retry): a copy of a request's extensions costs
/// three allocations. Kept apart from the request the first attempt sends, so that the connection which sends it
/// reuses its header map, sized by the parser, for the response.
fn copy_head(req: &Request<Body>, has_meta: bool) -> Parts {
    let mut copy = Request::new(());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    if req.extensions().len() > usize::from(has_meta) {
        *copy.extensions_mut() = req.extensions().clone();
    }
    copy.into_parts().0
}

fn with_timeout(mut req: Request<Body>, timeout: Option<Duration>) -> Request<Body> {
    if let Some(t) = timeout {
        req.extensions_mut().insert(AttemptTimeout(t));
    }
    req
}

fn count_attempt(meta: Option<&Arc<RequestMeta>>, attempts: &Counter) {
    attempts.inc();
    if let Some(meta) = meta {
        meta.attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Full jitter: a uniform wait between zero and `base × 2^(attempt-1)`, capped at `max`.
fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    crate::backoff::full_jitter(policy.backoff_base, policy.backoff_max, attempt)
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether the attempt should be retried, and where it failed; `None` when that is in a gRPC response's trailers
/// (`judge_grpc`). Listing gRPC statuses is the route's opt-in for gRPC calls, which are all POSTs.
fn judge(
    policy: &RetryPolicy,
    method: &http::Method,
    is_grpc: bool,
    result: &Result<Response<Body>, BoxError>,
    served: Option<SocketAddr>,
) -> Option<Option<(Reason, Option<SocketAddr>)>> {
    match result {
        Err(e) => Some(judge_error(policy, method, &**e)),
        Ok(rsp) if policy.retries_status(rsp.status()) && policy.method_allowed(method) => {
            Some(Some((Reason::Status, served)))
        }
        Ok(_) if is_grpc && !policy.grpc_status.is_empty() => None,
        Ok(_) => Some(None),
    }
}

/// A gRPC response's verdict from its `grpc-status`, read ahead (up to the body bound) when it is in the trailers;
/// what was read is handed on unchanged.
async fn judge_grpc(
    policy: &RetryPolicy,
    result: Result<Response<Body>, BoxError>,
    served: Option<SocketAddr>,
) -> (Option<(Reason, Option<SocketAddr>)>, Result<Response<Body>, BoxError>) {
    let Ok(rsp) = result else { return (None, result) };
    let (rsp, code) = grpc_status(rsp, policy.max_body_bytes).await;
    let verdict = code.is_some_and(|c| policy.retries_grpc(c)).then_some((Reason::GrpcStatus, served));
    (verdict, Ok(rsp))
}

fn judge_error(
    policy: &RetryPolicy,
    method: &http::Method,
    err: &(dyn std::error::Error + 'static),
) -> Option<(Reason, Option<SocketAddr>)> {
    let at = failed_at(err);
    if nothing_sent(err) {
        return policy.on.connect_failure.then_some((Reason::ConnectFailure, at));
    }
    if !policy.method_allowed(method) {
        return None;
    }
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<PerTryTimeout>() {
            return policy.on.timeout.then_some((Reason::Timeout, at));
        }
        if e.is::<UpstreamFailed>() {
            return policy.on.reset.then_some((Reason::Reset, at));
        }
        cur = e.source();
    }
    // Circuit open, no endpoints, overloaded: nothing to gain from trying the same backends again.
    None
}

fn failed_at(err: &(dyn std::error::Error + 'static)) -> Option<SocketAddr> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<ConnectFailed>() {
            return Some(c.addr);
        }
        if let Some(u) = e.downcast_ref::<UpstreamFailed>() {
            return Some(u.addr);
        }
        if let Some(t) = e.downcast_ref::<PerTryTimeout>() {
            return Some(t.addr);
        }
        if let Some(r) = e.downcast_ref::<crate::errors::Refused>() {
            return Some(r.addr);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
