//! Filters: the route's request/response header changes and path-prefix rewrite.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use attache_config::model::{HeaderFilter, Route};
use http::{HeaderMap, Request, Response, Uri};

use super::route::Target;
use crate::body::Body;
use crate::errors::{BadRequest, BoxError};

#[derive(Clone, Debug, Default)]
pub struct FiltersLayer;

#[derive(Clone, Debug)]
pub struct FiltersService<S> {
    inner: S,
}

impl<S> tower::Layer<S> for FiltersLayer {
    type Service = FiltersService<S>;
    fn layer(&self, inner: S) -> FiltersService<S> {
        FiltersService { inner }
    }
}

impl<S> tower::Service<Request<Body>> for FiltersService<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some(route) = req.extensions().get::<Target>().map(|t| t.route.clone()) else {
            return Box::pin(self.inner.call(req));
        };
        let filters = &route.filters;
        if *filters == Default::default() {
            return Box::pin(self.inner.call(req));
        }
        apply(&filters.request_headers, req.headers_mut());
        if let Err(e) = rewrite(&route, &mut req) {
            return Box::pin(async move { Err(e) });
        }
        let fut = self.inner.call(req);
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
