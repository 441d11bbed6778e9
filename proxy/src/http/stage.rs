//! One generic tower middleware for the pipeline's request-scoped stages: a stage is just its logic (`Middleware`),
//! and `StageLayer` / `Stage` supply the `Layer` and `Service` plumbing once for all of them.
//!
//! A stage answers with a `StageFuture`: the next stage's own future when it only looked at or changed the request
//! (most requests through most stages), that future with a plain function over its response or holding an
//! admission slot, a failure, or a boxed future for the rest: waits (delays, rate-limit queues), the route's
//! deadline, response-header filters. So a request pays one allocation per stage that needs state after the call,
//! not one per stage.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};

use crate::body::Body;
use crate::errors::BoxError;

pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send + 'static>>;

/// What a stage does with one request, given the next service.
pub trait Middleware: Clone + Send + Sync + 'static {
    /// A stage that waits before the rest of the pipeline runs (an injected delay, a rate-limit queue) calls a
    /// clone of `next` when the wait is over: a call may already send the request (a backend with a free slot and
    /// a ready connection sends it at once).
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
        S::Future: Send + 'static;
}

pin_project_lite::pin_project! {
    /// A stage's answer (see the module docs).
    #[project = StageProj]
    pub enum StageFuture<F> {
        /// The next stage's future, as it is.
        Next { #[pin] next: F },
        /// The next stage's future; its response passed through `map`.
        Map { #[pin] next: F, map: fn(&mut Response<Body>) },
        /// The next stage's future, holding an admission slot until it ends.
        Admitted { #[pin] next: F, slot: super::admit::Slot },
        /// Refused before the next stage was called.
        Failed { err: Option<BoxError> },
        /// Anything else.
        Boxed { fut: ResponseFuture },
    }
}

impl<F> StageFuture<F> {
    pub fn next(next: F) -> Self {
        Self::Next { next }
    }

    pub fn map(next: F, map: fn(&mut Response<Body>)) -> Self {
        Self::Map { next, map }
    }

    pub fn admitted(next: F, slot: super::admit::Slot) -> Self {
        Self::Admitted { next, slot }
    }

    pub fn boxed(fut: impl Future<Output = Result<Response<Body>, BoxError>> + Send + 'static) -> Self {
        Self::Boxed { fut: Box::pin(fut) }
    }
}

/// A stage's answer that fails at once.
pub fn fail<F>(err: impl Into<BoxError>) -> StageFuture<F> {
    StageFuture::Failed { err: Some(err.into()) }
}

impl<F> Future for StageFuture<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            StageProj::Next { next } | StageProj::Admitted { next, .. } => next.poll(cx),
            StageProj::Map { next, map } => next.poll(cx).map_ok(|mut rsp| {
                map(&mut rsp);
                rsp
            }),
            StageProj::Failed { err } => {
                Poll::Ready(Err(err.take().unwrap_or_else(|| "stage future polled after it failed".into())))
            }
            StageProj::Boxed { fut } => fut.as_mut().poll(cx),
        }
    }
}

/// Wraps a service with a `Middleware`.
#[derive(Clone, Debug)]
pub struct StageLayer<M>(pub M);

#[derive(Clone, Debug)]
pub struct Stage<M, S> {
    stage: M,
    inner: S,
}

impl<M: Clone, S> tower::Layer<S> for StageLayer<M> {
    type Service = Stage<M, S>;
    fn layer(&self, inner: S) -> Stage<M, S> {
        Stage { stage: self.0.clone(), inner }
    }
}

impl<M, S> tower::Service<Request<Body>> for Stage<M, S>
where
    M: Middleware,
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = StageFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.stage.call(req, &mut self.inner)
    }
}
