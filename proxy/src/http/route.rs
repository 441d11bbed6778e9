//! Route: the only reader of the dataplane state. One request sees one snapshot; the matched route travels with
//! it as the `Target` in its `RequestMeta`. Inbound, the "route" is the listener's app.

use std::sync::Arc;

use http::request::Parts;
use http::uri::Authority;
use http::{HeaderValue, Request, Response};
use tokio::sync::watch;

use super::meta::RequestMeta;
use super::resolved::ResolvedRoute;
use super::stage::{fail, Middleware, StageFuture};
use crate::body::Body;
use crate::dataplane::Dataplane;
use crate::errors::{BadRequest, BoxError, NoRoute};

/// The matched route and the dataplane it belongs to.
#[derive(Clone)]
pub struct Target {
    pub plane: Arc<Dataplane>,
    pub route: Arc<ResolvedRoute>,
    /// The path (and query) after the route's prefix rewrite, decided when the route matched.
    pub rewritten_path: Option<String>,
    /// The authority the request was routed by (its `Host` then): HTTP/2 upstreams are sent it as `:authority`,
    /// and an HTTP/1.1 request whose Host a route filter removed gets it back.
    pub authority: Option<Authority>,
}

/// Outbound routes by host; inbound (`Some(listener)`) always picks the listener's app route.
#[derive(Clone)]
pub struct RouteStage {
    pub plane: watch::Receiver<Arc<Dataplane>>,
    pub inbound: Option<Arc<str>>,
}

impl Middleware for RouteStage {
    fn call<S>(&self, req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        let plane = self.plane.borrow().clone();
        let (mut head, body) = req.into_parts();
        let routed = match &self.inbound {
            Some(listener) => plane.inbound.get(listener).cloned().ok_or_else(|| no_route(&head)),
            None => find_route(&plane, &head),
        };
        let (route, authority) = match routed.and_then(|r| check_authority(&mut head).map(|a| (r, a))) {
            Ok(routed) => routed,
            Err(e) => return fail(e),
        };
        let rewritten_path = route.rewritten_path(&head);
        let set = RequestMeta::ensure(&mut head.extensions).target.set(Target {
            plane,
            route,
            rewritten_path,
            authority: Some(authority),
        });
        debug_assert!(set.is_ok(), "a request routed twice");
        StageFuture::next(next.call(Request::from_parts(head, body)))
    }
}

/// By Host (or authority); for an intercepted connection whose Host names no service, by the address it dialed.
fn find_route(plane: &Dataplane, head: &Parts) -> Result<Arc<ResolvedRoute>, BoxError> {
    let snapshot = &plane.snapshot;
    let by_host = super::authority(&head.uri, &head.headers).and_then(|a| plane.service_for(a));
    let original_dst = || RequestMeta::in_extensions(&head.extensions)?.downstream.as_ref()?.conn.original_dst;
    let by_address = || original_dst().and_then(|d| snapshot.service_index_at(d));
    let service = by_host.or_else(by_address).ok_or_else(|| no_route(head))?;
    let route = snapshot.services.get(service).and_then(|s| s.route_index_for(head)).ok_or_else(|| no_route(head))?;
    plane.route(service, route).cloned().ok_or_else(|| no_route(head))
}

fn no_route(head: &Parts) -> BoxError {
    NoRoute { host: super::authority(&head.uri, &head.headers).unwrap_or("").to_owned() }.into()
}

/// The request must name its authority, and `Host` then names the one it was routed by: a request that carried an
/// authority in its target (HTTP/2, absolute-form) gets Host replaced with it (RFC 9112 3.2.2: a proxy replaces
/// Host with the target's authority); an origin-form request's Host must be a valid authority. The target itself is
/// left as it came: HTTP/1.1 upstreams are sent origin-form, HTTP/2 ones get `:authority` from the authority
/// returned here (`backend::endpoint`), so nothing is built here that one of them would take apart again. Returns that authority.
fn check_authority(head: &mut Parts) -> Result<Authority, BoxError> {
    let invalid = || BadRequest { reason: "invalid authority" };
    match head.uri.authority() {
        Some(authority) => {
            let host = HeaderValue::from_str(authority.as_str()).map_err(|_| invalid())?;
            head.headers.insert(http::header::HOST, host);
            Ok(authority.clone())
        }
        None => {
            let host = head.headers.get(http::header::HOST).ok_or(BadRequest { reason: "no authority or Host" })?;
            Ok(Authority::try_from(host.as_bytes()).map_err(|_| invalid())?)
        }
    }
}

#[cfg(test)]
impl Target {
    /// `route` in a dataplane of its own with no backends, for the stages' unit tests.
    pub fn for_test(route: Arc<attache_config::model::Route>) -> Self {
        let snapshot = attache_config::load_str("{}").unwrap_or_else(|e| panic!("{e}"));
        let plane = Arc::new(Dataplane::new(Arc::new(snapshot), Default::default(), Vec::new()));
        let route = Arc::new(ResolvedRoute::new(route, |_| None));
        Self { plane, route, rewritten_path: None, authority: None }
    }
}

/// A route with every policy off and a 30 s timeout, for the stages' unit tests to change one field of.
#[cfg(test)]
pub fn test_route() -> attache_config::model::Route {
    attache_config::model::Route {
        service: Arc::from("web"),
        name: Arc::from("r"),
        matches: Vec::new(),
        filters: Default::default(),
        backends: Vec::new(),
        sticky: None,
        timeout: std::time::Duration::from_secs(30),
        retry: None,
        rate_limit: None,
        fault: None,
        authorization: None,
    }
}
