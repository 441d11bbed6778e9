//! Rescue: the one place that turns errors into responses (404, 400, 503, 504, 502) with an `x-attache-error`
//! reason. Below it, layers return typed errors; above it, nothing sees an error.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, HeaderValue, Request, Response, Version};

use crate::body::Body;
use crate::errors::{classify, BoxError};

pub const ERROR_HEADER: &str = "x-attache-error";

#[derive(Clone, Debug, Default)]
pub struct RescueLayer;

#[derive(Debug)]
pub struct Rescue<S> {
    inner: S,
    /// An error from the inner `poll_ready`, answered on the next call.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for Rescue<S> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), not_ready: None }
    }
}

impl<S> tower::Layer<S> for RescueLayer {
    type Service = Rescue<S>;
    fn layer(&self, inner: S) -> Rescue<S> {
        Rescue { inner, not_ready: None }
    }
}

impl<S> tower::Service<Request<Body>> for Rescue<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = RescueFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                // Answered at call time, like any other error.
                self.not_ready = Some(e.into());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let version = req.version();
        if let Some(err) = self.not_ready.take() {
            return RescueFuture { inner: None, failed: Some(err), version };
        }
        RescueFuture { inner: Some(self.inner.call(req)), failed: None, version }
    }
}

pin_project_lite::pin_project! {
    /// The inner future, its error answered as a response. Named rather than boxed: observe boxes the whole
    /// pipeline's future once.
    pub struct RescueFuture<F> {
        #[pin]
        inner: Option<F>,
        // Failed before the call (the inner `poll_ready`).
        failed: Option<BoxError>,
        version: Version,
    }
}

impl<F, E> Future for RescueFuture<F>
where
    F: Future<Output = Result<Response<Body>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<Body>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = match (this.failed.take(), this.inner.as_mut().as_pin_mut()) {
            (Some(err), _) => Err(err),
            (None, Some(inner)) => {
                let out = std::task::ready!(inner.poll(cx)).map_err(Into::into);
                this.inner.set(None);
                out
            }
            (None, None) => Err("the request's future was polled after it completed".into()),
        };
        Poll::Ready(Ok(result.unwrap_or_else(|err| respond(&*err, *this.version))))
    }
}

/// The synthesized response for `err`.
pub fn respond(err: &(dyn std::error::Error + Send + Sync + 'static), version: Version) -> Response<Body> {
    if let Some(limited) = super::ratelimit::RateLimited::find(err) {
        tracing::debug!(error = %err, "rate limited");
        return super::ratelimit::rate_limited_response(limited);
    }
    let rescued = classify(err);
    if rescued.status.is_server_error() {
        tracing::warn!(status = rescued.status.as_u16(), reason = rescued.reason, error = %ErrorChain(err), "request failed");
    } else {
        tracing::debug!(status = rescued.status.as_u16(), reason = rescued.reason, error = %ErrorChain(err), "request rejected");
    }
    let mut rsp = Response::new(Body::full(format!("{}: {}\n", rescued.reason, err)));
    *rsp.status_mut() = rescued.status;
    let headers = rsp.headers_mut();
    headers.insert(ERROR_HEADER, HeaderValue::from_static(rescued.reason));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if rescued.close && version < Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    rsp
}

/// Displays an error and its sources: `a: b: c`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}
