//! The HTTP pipelines. Each direction is one top-down `ServiceBuilder` (first layer = outermost); read
//! `outbound` and `inbound` to see the whole path a request takes.

pub mod admit;
pub mod authz;
pub mod budget;
pub mod fault;
pub mod filters;
pub mod h1_guard;
pub mod meta;
pub mod observe;
pub mod ratelimit;
pub mod replay;
pub mod rescue;
pub mod resolved;
pub mod retry;
pub mod route;
pub mod split;
pub mod stage;
pub mod strict;
pub mod timeout;
pub mod upgrade;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, Request, Response, Uri};
use tokio::sync::watch;
use tower::{Service, ServiceBuilder};

use self::stage::StageLayer;

use crate::body::Body;
use crate::dataplane::Dataplane;
use crate::metrics::{Dir, Metrics};

/// What a pipeline answers with: its outermost stage's (observe's) boxed future.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// A whole pipeline: it never fails, errors are already responses. Each connection takes its own copy of the
/// concrete stack (`connection`, `Arc` increments once per connection, not per request) and calls it for each of
/// its requests; the call returns observe's future as it is. No `poll_ready`: every stage is always ready
/// (admission is a counter in `admit`, not a semaphore to wait on), so waiting for readiness is never needed.
#[derive(Clone)]
pub struct HttpService(Arc<dyn Fn() -> PipelineCopy + Send + Sync>);

/// One copy of a pipeline's concrete stack, called once per request.
type PipelineCopy = Box<dyn FnMut(Request<Body>) -> ResponseFuture + Send>;

/// One connection's copy of a pipeline. hyper calls a connection's service through `&self`; the copy is only ever
/// borrowed for the call itself, which returns before the next request's (calls never nest), so the `RefCell`
/// is never contended.
pub struct ConnectionService(std::cell::RefCell<PipelineCopy>);

impl HttpService {
    fn new<S>(svc: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = ResponseFuture>,
        S: Clone + Send + Sync + 'static,
    {
        Self(Arc::new(move || {
            let mut svc = svc.clone();
            Box::new(move |req| call_ready(&mut svc, req))
        }))
    }

    /// A copy of the pipeline for one connection's requests.
    pub fn connection(&self) -> ConnectionService {
        ConnectionService(std::cell::RefCell::new((self.0)()))
    }
}

impl ConnectionService {
    pub fn call(&self, req: Request<Body>) -> ResponseFuture {
        match self.0.try_borrow_mut() {
            Ok(mut call) => call(req),
            Err(_) => {
                debug_assert!(false, "a connection's pipeline called from inside its own call");
                overloaded(req.version())
            }
        }
    }
}

/// Every stage is ready at once today. One that is not (a later layer that waits for capacity) is answered 503
/// here, never called against tower's contract; debug builds say it is a bug.
fn call_ready<S>(svc: &mut S, req: Request<Body>) -> ResponseFuture
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = ResponseFuture>,
{
    match svc.poll_ready(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(())) => svc.call(req),
        _ => {
            debug_assert!(false, "a pipeline stage was not ready");
            overloaded(req.version())
        }
    }
}

fn overloaded(version: http::Version) -> ResponseFuture {
    let overloaded = tower::load_shed::error::Overloaded::new();
    Box::pin(std::future::ready(Ok(rescue::respond(&overloaded, version))))
}

/// What every pipeline of the proxy shares: metrics, and long-lived per-route state kept across reloads.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Metrics,
    pub limiters: ratelimit::RateLimiters,
    pub budgets: retry::Budgets,
    pub tracer: crate::trace::Tracer,
}

/// The outbound pipeline: the app calls out, we route by host to a weighted, balanced backend.
pub fn outbound(plane: watch::Receiver<Arc<Dataplane>>, shared: &Shared, max_concurrent: usize) -> HttpService {
    let m = &shared.metrics;
    let svc = ServiceBuilder::new()
        // Metrics and access log first: they see the final status, synthesized errors included, and all latency.
        // Trace context is continued here too, so every log line, the span and the exemplar carry its IDs.
        .layer(observe::ObserveLayer {
            metrics: m.http.clone(),
            direction: Dir::Outbound,
            tracer: shared.tracer.clone(),
        })
        // The one place errors become responses (404/400/429/503/504/502 with x-attache-error).
        .layer(rescue::RescueLayer)
        // Framing rules and hop-by-hop hygiene before anything reads headers.
        .layer(StageLayer(strict::Strict { inbound: false }))
        // A fast 503 instead of an unbounded queue when the listener is saturated.
        .layer(StageLayer(admit::Admit::new(max_concurrent)))
        // The only reader of the config: one request sees one snapshot.
        .layer(StageLayer(route::RouteStage { plane, inbound: None }))
        // The route's rate limit, before anything is spent on the request.
        .layer(StageLayer(ratelimit::RateLimit::new(shared.limiters.clone(), m.rate_limit.clone(), Dir::Outbound)))
        // Chaos: injected delays and aborts, as if the upstream had done it.
        .layer(StageLayer(fault::FaultInjection::new(m.faults.clone())))
        // The route's header changes and rewrite.
        .layer(StageLayer(filters::Filters))
        // The user-visible deadline, around every attempt and backoff.
        .layer(timeout::RouteTimeoutLayer)
        // Retries wrap the split: each attempt picks its backend and endpoint anew (the split, then the backend's
        // P2C balancer with its breakers and bulkhead, below it) and can avoid the endpoint that failed.
        .service(retry::Retry::new(m.retry.clone(), shared.budgets.clone()));
    HttpService::new(svc)
}

/// The inbound pipeline: the world calls the app behind this listener. No retries: the caller's sidecar owns them.
pub fn inbound(
    plane: watch::Receiver<Arc<Dataplane>>,
    listener: Arc<str>,
    shared: &Shared,
    max_concurrent: usize,
) -> HttpService {
    let m = &shared.metrics;
    let svc = ServiceBuilder::new()
        // Metrics, access log and trace context first, as outbound.
        .layer(observe::ObserveLayer {
            metrics: m.http.clone(),
            direction: Dir::Inbound,
            tracer: shared.tracer.clone(),
        })
        // Errors become responses here.
        .layer(rescue::RescueLayer)
        // Framing rules and hop-by-hop hygiene before the app sees anything; client x-attache-* headers dropped.
        .layer(StageLayer(strict::Strict { inbound: true }))
        // Shed load instead of queueing it (503).
        .layer(StageLayer(admit::Admit::new(max_concurrent)))
        // The listener's app is the only route.
        .layer(StageLayer(route::RouteStage { plane, inbound: Some(listener) }))
        // Who may call, from the mTLS peer identity; the app learns the verified identity from a header.
        .layer(StageLayer(authz::Authorize { metrics: m.authz.clone() }))
        // The listener's rate limit, after authorization, so denied callers spend no tokens.
        .layer(StageLayer(ratelimit::RateLimit::new(shared.limiters.clone(), m.rate_limit.clone(), Dir::Inbound)))
        // Deadline for the app's answer.
        .layer(timeout::RouteTimeoutLayer)
        // The app backend (one endpoint).
        .service(split::Split);
    HttpService::new(svc)
}

/// The request's authority: the URI's (absolute form, HTTP/2) or the Host header.
pub fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    uri.authority().map(|a| a.as_str()).or_else(|| headers.get(http::header::HOST)?.to_str().ok())
}

pub fn authority_of<B>(req: &Request<B>) -> Option<&str> {
    authority(req.uri(), req.headers())
}
