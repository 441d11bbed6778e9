//! Route timeout: the user-visible deadline for the response headers, from the matched route.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};

use super::route::Target;
use crate::body::Body;
use crate::errors::{BoxError, RequestTimeout};

#[derive(Clone, Debug, Default)]
pub struct RouteTimeoutLayer;

#[derive(Clone, Debug)]
pub struct RouteTimeout<S> {
    inner: S,
}

impl<S> tower::Layer<S> for RouteTimeoutLayer {
    type Service = RouteTimeout<S>;
    fn layer(&self, inner: S) -> RouteTimeout<S> {
        RouteTimeout { inner }
    }
}

impl<S> tower::Service<Request<Body>> for RouteTimeout<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let deadline = req.extensions().get::<Target>().map(|t| t.route.timeout);
        let fut = self.inner.call(req);
        Box::pin(async move {
            match deadline {
                Some(d) => tokio::time::timeout(d, fut).await.map_err(|_| RequestTimeout(d))?,
                None => fut.await,
            }
        })
    }
}
