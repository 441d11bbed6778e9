//! Per-request facts that inner layers learn (route, backend) and outer layers report (metrics, access log).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::h1_guard::HeadVerdict;
use super::resolved::ResolvedRoute;
use super::route::Target;

/// `RequestMeta::backend` before the split chose one.
const NO_BACKEND: usize = usize::MAX;

/// What every request carries through the pipeline, as one request extension: inserted by the listener (by the
/// observe layer or the route stage, `ensure`, for a request that came another way); each fact in it is set once,
/// by the layer that decides it. One extension for all of them: each extension is a box in the request's map, and a
/// retry's copy of the head clones every one again. (Per-attempt facts, `Avoid` and `AttemptTimeout`, and an
/// upgrade's `Tunnel` are extensions of their own: only some requests carry them.)
pub struct RequestMeta {
    /// The connection the request came on; `None` for a request that came through no listener (unit tests).
    pub downstream: Option<Downstream>,
    /// The request's trace hop, continued by the observe layer.
    pub hop: OnceLock<Arc<crate::trace::Hop>>,
    /// The matched route with its resolved backends and the dataplane it belongs to, set by the route stage. The
    /// meta lives as long as the response body (the access log's tap), so a streaming response keeps its route's
    /// backend handles alive past a reload that removed them, as the request's in-flight connection does anyway.
    pub target: OnceLock<Target>,
    /// The backend of the latest attempt (the one whose answer the client gets), as its index in the route's
    /// backends.
    backend: AtomicUsize,
    /// An injected fault (`delay`, `abort`), for the access log.
    pub fault: OnceLock<&'static str>,
    /// Upstream attempts made (retries included).
    pub attempts: std::sync::atomic::AtomicU32,
    /// The endpoint that answered the latest attempt (a retry avoids it). Here rather than on the response: a
    /// response's first extension costs three allocations.
    served: std::sync::Mutex<Option<std::net::SocketAddr>>,
}

/// The connection a request came on and what its framing guard said of it.
#[derive(Clone, Debug)]
pub struct Downstream {
    pub conn: Arc<Connection>,
    /// The HTTP/1 framing guard's verdict on this request's head (`None`: HTTP/2, or the guard stopped following).
    pub verdict: Option<HeadVerdict>,
}

/// What every request of one downstream connection shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// The client's address.
    pub addr: std::net::SocketAddr,
    /// Where an intercepted connection was going (its `SO_ORIGINAL_DST`): a service's address, which routes a
    /// request whose Host names no service.
    pub original_dst: Option<std::net::SocketAddr>,
    /// The peer's verified SPIFFE ID, when it is an mTLS client that presented a certificate. `None`: the caller
    /// is unauthenticated.
    pub identity: Option<attache_config::model::SpiffeId>,
}

impl Downstream {
    pub fn of<B>(req: &http::Request<B>) -> Option<&Downstream> {
        RequestMeta::of(req)?.downstream.as_ref()
    }
}

impl Target {
    pub fn of<B>(req: &http::Request<B>) -> Option<&Target> {
        RequestMeta::of(req)?.target.get()
    }
}

impl RequestMeta {
    pub fn new(downstream: Option<Downstream>) -> Self {
        Self {
            downstream,
            hop: OnceLock::new(),
            target: OnceLock::new(),
            backend: AtomicUsize::new(NO_BACKEND),
            fault: OnceLock::new(),
            attempts: std::sync::atomic::AtomicU32::new(0),
            served: std::sync::Mutex::new(None),
        }
    }

    /// The latest attempt was answered by `addr`.
    pub fn set_served(&self, addr: std::net::SocketAddr) {
        if let Ok(mut s) = self.served.lock() {
            *s = Some(addr);
        }
    }

    /// The endpoint that answered the latest attempt.
    pub fn served(&self) -> Option<std::net::SocketAddr> {
        self.served.lock().ok().and_then(|s| *s)
    }

    /// The split chose the backend at `index` of the route's backends.
    pub fn set_backend(&self, index: usize) {
        self.backend.store(index, Ordering::Relaxed);
    }

    /// The index, in the route's backends, of the latest attempt's backend.
    pub fn backend_index(&self) -> Option<usize> {
        Some(self.backend.load(Ordering::Relaxed)).filter(|&i| i != NO_BACKEND)
    }

    /// The name of the latest attempt's backend.
    pub fn backend(&self) -> Option<&Arc<str>> {
        self.route()?.backend_name(self.backend_index()?)
    }

    /// The matched route, once the route stage has found it.
    pub fn route(&self) -> Option<&Arc<ResolvedRoute>> {
        self.target.get().map(|t| &t.route)
    }

    pub fn of<B>(req: &http::Request<B>) -> Option<&Arc<RequestMeta>> {
        Self::in_extensions(req.extensions())
    }

    pub fn in_extensions(extensions: &http::Extensions) -> Option<&Arc<RequestMeta>> {
        extensions.get::<Arc<RequestMeta>>()
    }

    /// The request's meta, inserted when it has none yet.
    pub fn ensure(extensions: &mut http::Extensions) -> &Arc<RequestMeta> {
        extensions.get_or_insert_with(|| Arc::new(Self::new(None)))
    }

    /// A request for the stages' unit tests: routed to `target` (when given), from `downstream`.
    #[cfg(test)]
    pub fn insert_for_test<B>(req: &mut http::Request<B>, downstream: Option<Downstream>, target: Option<Target>) {
        let meta = Self::new(downstream);
        if let Some(target) = target {
            let _ = meta.target.set(target);
        }
        req.extensions_mut().insert(Arc::new(meta));
    }
}

impl std::fmt::Debug for RequestMeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMeta")
            .field("downstream", &self.downstream)
            .field("route", &self.route().map(|r| (&r.service, &r.name)))
            .field("backend", &self.backend_index())
            .finish_non_exhaustive()
    }
}
