//! Filters: the route's request/response header changes and path-prefix rewrite.

use attache_config::model::{HeaderFilter, Route};
use http::{HeaderMap, Request, Response, Uri};

use super::route::Target;
use super::stage::{fail, Middleware, ResponseFuture};
use crate::body::Body;
use crate::errors::{BadRequest, BoxError};

/// Applies the matched route's filters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filters;

impl Middleware for Filters {
    fn call<S>(&self, mut req: Request<Body>, next: &mut S) -> ResponseFuture
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        let Some(route) = req.extensions().get::<Target>().map(|t| t.route.clone()) else {
            return Box::pin(next.call(req));
        };
        if route.filters == Default::default() {
            return Box::pin(next.call(req));
        }
        apply(&route.filters.request_headers, req.headers_mut());
        if let Err(e) = rewrite(&route, &mut req) {
            return fail(e);
        }
        let fut = next.call(req);
        Box::pin(async move {
            let mut rsp = fut.await?;
            apply(&route.filters.response_headers, rsp.headers_mut());
            Ok(rsp)
        })
    }
}

/// Remove, then set, then add.
pub fn apply(filter: &HeaderFilter, headers: &mut HeaderMap) {
    for name in &filter.remove {
        headers.remove(name);
    }
    for (name, value) in &filter.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &filter.add {
        headers.append(name.clone(), value.clone());
    }
}

fn rewrite(route: &Route, req: &mut Request<Body>) -> Result<(), BoxError> {
    let Some(replacement) = &route.filters.path_prefix_rewrite else { return Ok(()) };
    let (parts, body) = std::mem::take(req).into_parts();
    let prefix = route.matched_prefix(&parts).map(str::len);
    *req = Request::from_parts(parts, body);
    let Some(prefix_len) = prefix else { return Ok(()) };
    let path = req.uri().path();
    let rest = &path[prefix_len.min(path.len())..];
    let mut new_path = format!("{}{}", replacement.trim_end_matches('/'), rest);
    if !new_path.starts_with('/') {
        new_path.insert(0, '/');
    }
    if let Some(q) = req.uri().query() {
        new_path.push('?');
        new_path.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(new_path.parse().map_err(|_| BadRequest { reason: "rewritten path is invalid" })?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| BadRequest { reason: "rewritten path is invalid" })?;
    Ok(())
}
