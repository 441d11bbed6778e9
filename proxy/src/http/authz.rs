//! Authorization, inbound: after routing and before the rate limit (so a denied caller spends no tokens), the
//! route's `authorization` decides from the peer's verified SPIFFE identity whether the request reaches the app. A
//! denied request is answered 403 (`x-attache-error: forbidden`). An admitted one carries the verified identity to
//! the app in `x-attache-peer-identity`; header hygiene already dropped any copy the client sent.

use std::sync::Arc;

use attache_config::model::{Authorization, SpiffeId};
use http::{HeaderValue, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::meta::Downstream;
use super::route::Target;
use super::stage::{fail, Middleware, StageFuture};
use crate::body::Body;
use crate::errors::{BoxError, Forbidden};
use crate::metrics::Name;

/// The header that tells the app who called.
pub const PEER_IDENTITY_HEADER: &str = "x-attache-peer-identity";
/// The `route` label of opaque TCP connections' decisions.
pub const TCP_ROUTE: &str = "tcp";

#[derive(Clone, Debug)]
pub struct Authorize {
    pub metrics: AuthzMetrics,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DecisionLabels {
    pub service: Name,
    pub route: Name,
    /// `allowed` or `denied`.
    pub decision: &'static str,
}

/// `attache_authorization_decisions_total`.
#[derive(Clone, Debug, Default)]
pub struct AuthzMetrics {
    pub decisions: Family<DecisionLabels, Counter>,
}

impl AuthzMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self::default();
        reg.register(
            "authorization_decisions",
            "Inbound authorization decisions by listener (service), route and decision",
            m.decisions.clone(),
        );
        m
    }

    pub fn record(&self, service: &Arc<str>, route: &str, allowed: bool) {
        let decision = if allowed { "allowed" } else { "denied" };
        let labels = DecisionLabels { service: Name(service.clone()), route: Name(Arc::from(route)), decision };
        self.decisions.get_or_create(&labels).inc();
    }
}

/// Whether `authz` admits `identity` (`None`: unauthenticated), counted under `service` and `route`.
pub fn decide(
    metrics: &AuthzMetrics,
    service: &Arc<str>,
    route: &str,
    authz: &Authorization,
    identity: Option<&SpiffeId>,
) -> bool {
    let allowed = authz.allows(identity);
    metrics.record(service, route, allowed);
    allowed
}

impl Middleware for Authorize {
    fn call<S>(&self, mut req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        let identity = Downstream::of(&req).and_then(|d| d.conn.identity.clone());
        let who = || identity.as_ref().map_or_else(|| "an unauthenticated caller".to_owned(), |id| id.to_string());
        // Routing always attaches a target; a request without one is refused rather than waved through.
        let Some(route) = Target::of(&req).map(|t| t.route.clone()) else {
            return fail(Forbidden { caller: who() });
        };
        if let Some(authz) = &route.authorization {
            if !decide(&self.metrics, &route.service, &route.name, authz, identity.as_ref()) {
                let caller = who();
                tracing::info!(service = %route.service, route = %route.name, %caller, "request denied by authorization");
                return fail(Forbidden { caller });
            }
        }
        if let Some(id) = identity {
            // A SPIFFE ID is ASCII by construction; a value that still fails is left out rather than guessed.
            if let Ok(value) = HeaderValue::from_str(id.as_str()) {
                req.headers_mut().insert(PEER_IDENTITY_HEADER, value);
            }
        }
        StageFuture::next(next.call(req))
    }
}
