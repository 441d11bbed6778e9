//! Per-request facts that inner layers learn (route, backend) and outer layers report (metrics, access log).

use std::sync::{Arc, OnceLock};

use attache_config::model::Route;

/// Inserted into the request's extensions by the observe layer; set once by the layer that decides each fact.
#[derive(Debug, Default)]
pub struct RequestMeta {
    /// The request's trace hop, continued by the observe layer (one extension for both: each is a box there, and
    /// a retry's copy of the head clones every one).
    pub hop: Option<Arc<crate::trace::Hop>>,
    pub route: OnceLock<Arc<Route>>,
    /// The backend of the latest attempt: the one whose answer the client gets.
    pub backend: std::sync::Mutex<Option<Arc<str>>>,
    /// An injected fault (`delay`, `abort`), for the access log.
    pub fault: OnceLock<&'static str>,
    /// Upstream attempts made (retries included).
    pub attempts: std::sync::atomic::AtomicU32,
}

/// The downstream client's address, inserted into every request by the connection that carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Where an intercepted connection was going (its `SO_ORIGINAL_DST`): a service's address, which routes a request
/// whose Host names no service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalDst(pub std::net::SocketAddr);

/// The downstream peer's verified SPIFFE identity, inserted into every request of an mTLS connection whose client
/// presented a certificate. Absent: the caller is unauthenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity(pub attache_config::model::SpiffeId);

impl RequestMeta {
    pub fn new(hop: Arc<crate::trace::Hop>) -> Self {
        Self { hop: Some(hop), ..Self::default() }
    }

    pub fn set_backend(&self, name: &Arc<str>) {
        if let Ok(mut b) = self.backend.lock() {
            *b = Some(name.clone());
        }
    }

    pub fn backend(&self) -> Option<Arc<str>> {
        self.backend.lock().ok().and_then(|b| b.clone())
    }

    pub fn of<B>(req: &http::Request<B>) -> Option<&Arc<RequestMeta>> {
        req.extensions().get::<Arc<RequestMeta>>()
    }
}
