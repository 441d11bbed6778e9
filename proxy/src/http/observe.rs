//! Observe: request metrics and the access log. Outermost, so it sees the final status (synthesized errors
//! included) and the latency of everything below.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;

use super::meta::RequestMeta;
use crate::body::{Body, BodyTap};
use crate::metrics::{status_class, Dir, HttpMetrics, LatencyLabels, Name, RequestLabels};

#[derive(Clone, Debug)]
pub struct ObserveLayer {
    pub metrics: HttpMetrics,
    pub direction: Dir,
}

#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    metrics: HttpMetrics,
    direction: Dir,
}

/// One access-log line, written when the response body ends (or is dropped).
struct AccessLog {
    direction: Dir,
    method: http::Method,
    authority: String,
    path: String,
    meta: Arc<RequestMeta>,
    status: u16,
    started: Instant,
    bytes: u64,
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe { inner, metrics: self.metrics.clone(), direction: self.direction }
    }
}

impl<S> tower::Service<Request<Body>> for Observe<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, std::convert::Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let meta = Arc::new(RequestMeta::default());
        req.extensions_mut().insert(meta.clone());
        let method = req.method().clone();
        let authority = super::authority_of(&req).unwrap_or_default().to_owned();
        let path = req.uri().path().to_owned();
        let (metrics, direction) = (self.metrics.clone(), self.direction);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let rsp = fut.await?;
            let elapsed = started.elapsed();
            let name = |v: Option<&Arc<str>>| Name(v.cloned().unwrap_or_else(|| Arc::from("")));
            let route = meta.route.get();
            let (service, route_name) = (name(route.map(|r| &r.service)), name(route.map(|r| &r.name)));
            let backend = name(meta.backend().as_ref());
            let status_class = status_class(rsp.status());
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    direction,
                    service: service.clone(),
                    route: route_name.clone(),
                    backend: backend.clone(),
                    status_class,
                })
                .inc();
            metrics
                .duration
                .get_or_create(&LatencyLabels { direction, service, route: route_name, backend })
                .observe(elapsed.as_secs_f64());
            let log = AccessLog {
                direction,
                method,
                authority,
                path,
                meta,
                status: rsp.status().as_u16(),
                started,
                bytes: 0,
            };
            Ok(rsp.map(|b| b.tapped(Box::new(log))))
        })
    }
}

impl BodyTap for AccessLog {
    fn data(&mut self, len: usize) {
        self.bytes += len as u64;
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let route = self.meta.route.get();
        tracing::info!(
            target: "attache::access",
            direction = self.direction.as_str(),
            method = %self.method,
            authority = %self.authority,
            path = %self.path,
            service = route.map_or("", |r| &*r.service),
            route = route.map_or("", |r| &*r.name),
            backend = self.meta.backend().as_deref().unwrap_or(""),
            fault = self.meta.fault.get().copied().unwrap_or(""),
            attempts = self.meta.attempts.load(std::sync::atomic::Ordering::Relaxed),
            status = self.status,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            bytes = self.bytes,
        );
    }
}
