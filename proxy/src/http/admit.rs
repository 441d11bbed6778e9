//! Admission: at most `limits.max_concurrent_requests` requests of a listener in flight; one more is answered 503
//! (`overloaded`) at once, never queued. A counter, not a semaphore: nothing waits, so nothing needs a queue, and a
//! request pays one atomic add and one subtract.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::{Request, Response};

use super::stage::{fail, Middleware, StageFuture};
use crate::body::Body;
use crate::errors::BoxError;

#[derive(Clone, Debug)]
pub struct Admit {
    in_flight: Arc<AtomicUsize>,
    max: usize,
}

/// One admitted request's place, given back when its response future ends (answered, failed or dropped).
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admit {
    pub fn new(max: usize) -> Self {
        Self { in_flight: Arc::default(), max }
    }
}

impl Middleware for Admit {
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        let slot = Slot(self.in_flight.clone());
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max {
            return fail(tower::load_shed::error::Overloaded::new());
        }
        StageFuture::admitted(next.call(req), slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::stage::StageLayer;
    use tower::{Layer, ServiceExt};

    #[tokio::test]
    async fn one_over_the_limit_is_refused_at_once_and_a_finished_request_frees_its_place() {
        let (release, released) = tokio::sync::watch::channel(false);
        let inner = tower::service_fn(move |_req: Request<Body>| {
            let mut released = released.clone();
            async move {
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, BoxError>(Response::new(Body::empty()))
            }
        });
        let svc = StageLayer(Admit::new(2)).layer(inner);
        let first = tokio::spawn(svc.clone().oneshot(Request::new(Body::empty())));
        let second = tokio::spawn(svc.clone().oneshot(Request::new(Body::empty())));
        tokio::task::yield_now().await;
        let refused = svc.clone().oneshot(Request::new(Body::empty())).await;
        let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("overloaded"), "{err}");
        release.send_replace(true);
        for task in [first, second] {
            assert!(matches!(task.await, Ok(Ok(_))));
        }
        let admitted = svc.clone().oneshot(Request::new(Body::empty())).await;
        assert!(admitted.is_ok(), "both places were given back");
        // Cancelled requests (their tasks aborted while they wait upstream) give their places back too.
        release.send_replace(false);
        let waiting: Vec<_> = (0..2).map(|_| tokio::spawn(svc.clone().oneshot(Request::new(Body::empty())))).collect();
        tokio::task::yield_now().await;
        assert!(svc.clone().oneshot(Request::new(Body::empty())).await.is_err(), "both places are taken");
        for task in waiting {
            task.abort();
            assert!(task.await.is_err_and(|e| e.is_cancelled()));
        }
        let again: Vec<_> = (0..2).map(|_| tokio::spawn(svc.clone().oneshot(Request::new(Body::empty())))).collect();
        tokio::task::yield_now().await;
        release.send_replace(true);
        for task in again {
            assert!(matches!(task.await, Ok(Ok(_))), "admitted after the cancelled ones left");
        }
    }
}
