//! Split: the weighted choice of backend (the canary), optionally sticky by a hash of a header or cookie so that a
//! user stays on one version and every sidecar makes the same choice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use attache_config::model::{Sticky, WeightedBackend};
use http::{Request, Response};

use super::meta::RequestMeta;
use super::route::Target;
use crate::body::Body;
use crate::errors::{BoxError, NoEndpoints};
use crate::metrics::Dir;
use crate::trace::hop::Attempt;

#[derive(Clone, Debug, Default)]
pub struct Split;

impl tower::Service<Request<Body>> for Split {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some(route) = Target::of(&req).map(|t| t.route.clone()) else {
            return Box::pin(async { Err("request reached the split without a route".into()) });
        };
        let mut chosen = choose(&route.backends, route.sticky.as_ref(), &req);
        // A backend whose every endpoint is ejected gets none of the traffic while others can take it: the choice is
        // made again, by weight, among those.
        if route.backends.len() > 1 && route.backend(chosen).is_some_and(|b| !b.is_available()) {
            let available = |i: usize| route.backend(i).is_some_and(|h| h.is_available());
            chosen = choose_where(&route.backends, available, route.sticky.as_ref(), &req).unwrap_or(chosen);
        }
        if let Some(meta) = RequestMeta::of(&req) {
            meta.set_backend(chosen);
        }
        // Outbound, each attempt is its own child span of the hop, and the upstream is told that span. A span that
        // will not be exported gets no child: the upstream is told the hop's span, written when the hop started.
        let attempt = RequestMeta::of(&req)
            .and_then(|m| m.hop.get())
            .filter(|hop| hop.direction == Dir::Outbound && hop.recording())
            .cloned()
            .map(|hop| hop.attempt(req.headers_mut()));
        let backend_name = || route.backend_name(chosen).cloned().unwrap_or_else(|| Arc::from(""));
        let send = |req| match route.backend(chosen) {
            // Already boxed by the backend: not boxed again.
            Some(backend) => backend.call(req),
            None => no_endpoints(backend_name()),
        };
        let Some(attempt) = attempt else { return send(req) };
        // Whoever answers an exported attempt is named in its span.
        let (meta, method, backend) = (RequestMeta::of(&req).cloned(), req.method().clone(), backend_name());
        let fut = send(req);
        Box::pin(async move {
            let result = fut.await;
            let served = meta.as_ref().and_then(|m| m.served());
            attempt_span(&attempt, &method, &backend, &route.service, &result, served);
            result
        })
    }
}

fn no_endpoints(backend: Arc<str>) -> Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>> {
    Box::pin(async move { Err(NoEndpoints { backend }.into()) })
}

/// The span of one upstream attempt: what was asked of which endpoint, and what came back.
fn attempt_span(
    attempt: &Attempt,
    method: &http::Method,
    backend: &str,
    service: &str,
    result: &Result<Response<Body>, BoxError>,
    served: Option<std::net::SocketAddr>,
) {
    let Some(mut span) = attempt.span(format!("{method} {backend}")) else { return };
    span.str("http.request.method", method.as_str());
    span.str("peer.service", service);
    span.str("attache.backend", backend);
    span.int("attache.attempt", i64::from(attempt.number));
    if attempt.number > 1 {
        span.int("http.request.resend_count", i64::from(attempt.number - 1));
    }
    match result {
        Ok(rsp) => {
            if let Some(addr) = served {
                span.str("server.address", addr.ip().to_string());
                span.int("server.port", i64::from(addr.port()));
            }
            let status = rsp.status().as_u16();
            span.int("http.response.status_code", i64::from(status));
            // A client span fails on 4xx too (OpenTelemetry HTTP conventions).
            if status >= 400 {
                span.str("error.type", status.to_string());
                span.error = Some(format!("HTTP {status}"));
            }
        }
        Err(e) => {
            span.str("error.type", crate::errors::classify(&**e).reason);
            span.error = Some(crate::http::rescue::ErrorChain(&**e).to_string());
        }
    }
    attempt.submit(span);
}

/// Picks a backend, as its index in `backends`: by the sticky key's hash when there is one, at random otherwise, in
/// proportion to weights. `backends` is never empty (validation).
pub fn choose<B>(backends: &[WeightedBackend], sticky: Option<&Sticky>, req: &Request<B>) -> usize {
    if backends.len() <= 1 {
        return 0;
    }
    choose_where(backends, |_| true, sticky, req).unwrap_or(0)
}

/// `choose` among the backends whose index `keep` accepts, by their weights; `None` when it accepts none.
fn choose_where<B>(
    backends: &[WeightedBackend],
    keep: impl Fn(usize) -> bool,
    sticky: Option<&Sticky>,
    req: &Request<B>,
) -> Option<usize> {
    let kept = || backends.iter().enumerate().filter(|(i, _)| keep(*i)).map(|(i, b)| (i, u64::from(b.weight)));
    let total: u64 = kept().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let point = match sticky.and_then(|s| sticky_key(s, req)) {
        // FNV-1a: stable across processes and versions, so every sidecar hashes a key the same way.
        Some(key) => attache_config::fnv1a(key) % total,
        None => rand::random_range(0..total),
    };
    pick(kept(), point)
}

/// The index whose cumulative weight range holds `point`.
fn pick(weights: impl Iterator<Item = (usize, u64)>, mut point: u64) -> Option<usize> {
    let mut last = None;
    for (i, weight) in weights {
        if point < weight {
            return Some(i);
        }
        point -= weight;
        last = Some(i);
    }
    last
}

fn sticky_key<'a, B>(sticky: &Sticky, req: &'a Request<B>) -> Option<&'a [u8]> {
    match sticky {
        Sticky::Header(name) => req.headers().get(name).map(|v| v.as_bytes()),
        Sticky::Cookie(name) => req
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attache_config::model::Route;
    use std::sync::Arc;
    use std::time::Duration;

    fn route(weights: &[(&str, u32)], sticky: Option<Sticky>) -> Route {
        Route {
            service: Arc::from("s"),
            name: Arc::from("r"),
            matches: vec![],
            filters: Default::default(),
            backends: weights.iter().map(|(n, w)| WeightedBackend { name: Arc::from(*n), weight: *w }).collect(),
            sticky,
            timeout: Duration::from_secs(1),
            retry: None,
            rate_limit: None,
            fault: None,
            authorization: None,
        }
    }

    #[test]
    fn weighted_split_is_within_two_points_over_ten_thousand() {
        let r = route(&[("stable", 90), ("canary", 10)], None);
        let req = Request::new(());
        let canary = (0..10_000).filter(|_| choose(&r.backends, r.sticky.as_ref(), &req) == 1).count();
        assert!((800..=1200).contains(&canary), "canary got {canary} of 10000");
    }

    #[test]
    fn sticky_header_always_picks_the_same_backend() {
        let r = route(&[("a", 50), ("b", 50)], Some(Sticky::Header("x-user".parse().unwrap())));
        for user in ["alice", "bob", "carol", "dave"] {
            let req = Request::builder().header("x-user", user).body(()).unwrap();
            let first = choose(&r.backends, r.sticky.as_ref(), &req);
            assert!((0..100).all(|_| choose(&r.backends, r.sticky.as_ref(), &req) == first));
        }
    }

    #[test]
    fn sticky_cookie_is_read_among_others() {
        let r = route(&[("a", 1), ("b", 1)], Some(Sticky::Cookie("session".into())));
        let req = Request::builder().header("cookie", "theme=dark; session=abc").body(()).unwrap();
        assert_eq!(sticky_key(r.sticky.as_ref().unwrap(), &req), Some(&b"abc"[..]));
    }

    #[test]
    fn pick_walks_cumulative_weights() {
        let weights = || [(0, 1), (1, 2)].into_iter();
        assert_eq!(pick(weights(), 0), Some(0));
        assert_eq!(pick(weights(), 1), Some(1));
        assert_eq!(pick(weights(), 2), Some(1));
        assert_eq!(pick(std::iter::empty(), 0), None);
    }

    #[test]
    fn the_choice_among_some_backends_takes_only_those() {
        let r = route(&[("a", 1), ("b", 2), ("c", 3)], None);
        let req = Request::builder().body(()).unwrap();
        let keep = |i: usize| i != 1;
        assert!((0..200).all(|_| choose_where(&r.backends, keep, None, &req).is_some_and(|i| i != 1)));
        assert_eq!(choose_where(&r.backends, |_| false, None, &req), None);
    }
}
