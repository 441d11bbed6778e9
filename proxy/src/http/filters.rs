//! Filters: the route's request/response header changes and path-prefix rewrite.

use attache_config::model::HeaderFilter;
use http::{HeaderMap, Request, Response, Uri};

use super::route::Target;
use super::stage::{fail, Middleware, StageFuture};
use crate::body::Body;
use crate::errors::{BadRequest, BoxError};

/// Applies the matched route's filters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filters;

impl Middleware for Filters {
    fn call<S>(&self, mut req: Request<Body>, next: &mut S) -> StageFuture<S::Future>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
        S::Future: Send + 'static,
    {
        // Most routes have no filters: nothing is cloned for them.
        let Some(target) = Target::of(&req).filter(|t| t.route.filters != Default::default()) else {
            return StageFuture::next(next.call(req));
        };
        let (route, rewritten) = (target.route.clone(), target.rewritten_path.clone());
        if let Some(path) = rewritten {
            if let Err(e) = set_path(&mut req, &path) {
                return fail(e);
            }
        }
        apply(&route.filters.request_headers, req.headers_mut());
        let fut = next.call(req);
        StageFuture::boxed(async move {
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

fn set_path(req: &mut Request<Body>, path_and_query: &str) -> Result<(), BoxError> {
    let invalid = || BadRequest { reason: "rewritten path is invalid" };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| invalid())?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| invalid())?;
    Ok(())
}
