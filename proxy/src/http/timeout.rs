//! Route timeout: the user-visible deadline for the response headers, from the matched route.
//!
//! Its own service rather than a `Middleware` stage: the deadline has to stay with the response future, and a
//! named future (`Deadline`) keeps it without boxing that future on every request.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};

use super::route::Target;
use crate::body::Body;
use crate::errors::{BoxError, RequestTimeout};

/// The deadline comes from the matched route (`Target`).
#[derive(Clone, Copy, Debug, Default)]
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
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Deadline<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let after = Target::of(&req).map(|t| t.route.timeout);
        Deadline { inner: self.inner.call(req), after, sleep: None }
    }
}

pin_project_lite::pin_project! {
    /// The next stage's future, failing with `RequestTimeout` when the route's deadline passes first. The clock
    /// starts at the first poll, not at the call: a future is the upstream's time only once it is being driven.
    pub struct Deadline<F> {
        #[pin]
        inner: F,
        after: Option<Duration>,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
    }
}

impl<F> Future for Deadline<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(done) = this.inner.poll(cx) {
            return Poll::Ready(done);
        }
        let Some(after) = *this.after else { return Poll::Pending };
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep(after)));
        }
        match this.sleep.as_pin_mut().map(|s| s.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(RequestTimeout(after).into())),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use attache_config::model::Route;
    use tower::{Layer as _, Service as _, ServiceExt as _};

    use super::*;

    /// A request routed to a route with a 1 s timeout.
    fn routed() -> Request<Body> {
        let route = Arc::new(Route { timeout: Duration::from_secs(1), ..crate::http::route::test_route() });
        let mut req = Request::new(Body::empty());
        crate::http::meta::RequestMeta::insert_for_test(&mut req, None, Some(Target::for_test(route)));
        req
    }

    /// An upstream answering 200 after `after`.
    fn upstream(
        after: Duration,
    ) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone {
        tower::service_fn(move |_req: Request<Body>| async move {
            tokio::time::sleep(after).await;
            Ok::<_, BoxError>(Response::new(Body::empty()))
        })
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_after_the_deadline_is_a_timeout_at_the_deadline() {
        let start = tokio::time::Instant::now();
        let err = RouteTimeoutLayer.layer(upstream(Duration::from_secs(5))).oneshot(routed()).await.err();
        assert!(err.is_some_and(|e| e.is::<RequestTimeout>()));
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        let ok = RouteTimeoutLayer.layer(upstream(Duration::from_millis(900))).oneshot(routed()).await;
        assert!(ok.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_starts_at_the_first_poll_not_at_the_call() {
        let mut svc = RouteTimeoutLayer.layer(upstream(Duration::from_millis(900)));
        let fut = svc.ready().await.unwrap_or_else(|e| panic!("{e}")).call(routed());
        // A stage above waits (an injected delay) before it polls.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(fut.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_without_a_route_has_no_deadline() {
        let rsp =
            RouteTimeoutLayer.layer(upstream(Duration::from_secs(3600))).oneshot(Request::new(Body::empty())).await;
        assert!(rsp.is_ok());
    }
}
