//! One generic tower middleware for the pipeline's request-scoped stages: a stage is just its logic (`Middleware`),
//! and `StageLayer` / `Stage` supply the `Layer` and `Service` plumbing once for all of them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};

use crate::body::Body;
use crate::errors::BoxError;

pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send + 'static>>;

/// What a stage does with one request, given the next service.
pub trait Middleware: Clone + Send + Sync + 'static {
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> ResponseFuture
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static;
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
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        self.stage.call(req, &mut self.inner)
    }
}

/// A future that fails at once.
pub fn fail(err: impl Into<BoxError>) -> ResponseFuture {
    let err = err.into();
    Box::pin(async move { Err(err) })
}
