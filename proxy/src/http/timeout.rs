//! Route timeout: the user-visible deadline for the response headers, from the matched route.

use http::{Request, Response};

use super::route::Target;
use super::stage::{Middleware, StageFuture};
use crate::body::Body;
use crate::errors::{BoxError, RequestTimeout};

/// The deadline comes from the matched route (`Target`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteTimeout;

impl Middleware for RouteTimeout {
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        let deadline = req.extensions().get::<Target>().map(|t| t.route.timeout);
        let fut = next.call(req);
        StageFuture::boxed(async move {
            match deadline {
                Some(d) => tokio::time::timeout(d, fut).await.map_err(|_| RequestTimeout(d))?,
                None => fut.await,
            }
        })
    }
}
