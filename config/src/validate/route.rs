//! Routes: weighted backend references, sticky sessions, timeout, filters (header changes, prefix rewrite), and
//! retry, rate limit and fault (checked in `resilience`).

use std::collections::HashSet;
use std::sync::Arc;

use super::{fields, matches, optional, resilience, Ctx};
use crate::duration;
use crate::model::{Filters, HeaderFilter, Route, Sticky, WeightedBackend};
use crate::spec::{BackendRefSpec, HeaderFilterSpec, PathMatchSpec, RouteSpec, StickySpec};

/// `None` when a part could not be built; the error explaining why has been recorded.
pub(super) fn route(ctx: &mut Ctx<'_>, path: &str, service: &Arc<str>, spec: &RouteSpec) -> Option<Route> {
    let matches =
        spec.matches.iter().enumerate().map(|(k, m)| matches::route_match(ctx, &format!("{path}.match[{k}]"), m));
    let matches = matches.collect();
    let filters = filters(ctx, path, spec);
    let backends = backend_refs(ctx, path, &spec.backends);
    let sticky = optional(spec.sticky.as_ref(), |s| sticky(ctx, &format!("{path}.sticky"), s));
    let timeout = match &spec.timeout {
        Some(text) => ctx.errors.check(&format!("{path}.timeout"), duration::parse(text)),
        None => Some(ctx.limits.request_timeout),
    };
    let retry = optional(spec.retry.as_ref(), |r| resilience::retry(ctx, &format!("{path}.retry"), r, timeout));
    let rate_limit =
        optional(spec.rate_limit.as_ref(), |r| resilience::rate_limit(ctx, &format!("{path}.rate_limit"), r));
    let fault = optional(spec.fault.as_ref(), |f| resilience::fault(ctx, &format!("{path}.fault"), f));
    let name = Arc::from(spec.name.as_str());
    Some(Route {
        service: service.clone(),
        name,
        matches,
        filters,
        backends,
        sticky: sticky?,
        timeout: timeout?,
        retry: retry?,
        rate_limit: rate_limit?,
        fault: fault?,
        authorization: None,
    })
}

/// The entries with a positive weight.
fn backend_refs(ctx: &mut Ctx<'_>, path: &str, refs: &[BackendRefSpec]) -> Vec<WeightedBackend> {
    let list_path = format!("{path}.backends");
    if refs.is_empty() {
        ctx.errors.push(list_path, "a route needs at least one backend");
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(refs.len());
    let mut weights_valid = true;
    for (b, backend) in refs.iter().enumerate() {
        let ref_path = format!("{list_path}[{b}]");
        ctx.check_backend_ref(&format!("{ref_path}.name"), &backend.name);
        if !seen.insert(backend.name.as_str()) {
            let message =
                format!("backend `{}` is listed twice; give it one entry with the combined weight", backend.name);
            ctx.errors.push(format!("{ref_path}.name"), message);
        }
        match u32::try_from(backend.weight) {
            Ok(0) => {}
            Ok(weight) => out.push(WeightedBackend { name: Arc::from(backend.name.as_str()), weight }),
            Err(_) => {
                weights_valid = false;
                let message = if backend.weight < 0 {
                    format!("weight {} is negative: weights are 0 or more", backend.weight)
                } else {
                    format!("weight {} is too large: the maximum is {}", backend.weight, u32::MAX)
                };
                ctx.errors.push(format!("{ref_path}.weight"), message);
            }
        }
    }
    let total: u64 = out.iter().map(|b| u64::from(b.weight)).sum();
    if weights_valid && out.is_empty() {
        ctx.errors.push(list_path, "every backend has weight 0: at least one needs a positive weight");
    } else if total > u64::from(u32::MAX) {
        ctx.errors.push(list_path, format!("the weights add up to {total}; the maximum is {}", u32::MAX));
    }
    out
}

fn sticky(ctx: &mut Ctx<'_>, path: &str, spec: &StickySpec) -> Option<Sticky> {
    match (&spec.header, &spec.cookie) {
        (Some(header), None) => {
            ctx.errors.check(&format!("{path}.header"), fields::header_name(header)).map(Sticky::Header)
        }
        (None, Some(cookie)) => {
            ctx.errors.check(&format!("{path}.cookie"), fields::cookie_name(cookie))?;
            Some(Sticky::Cookie(cookie.clone()))
        }
        _ => {
            ctx.errors.push(path, "set exactly one of `header` or `cookie`");
            None
        }
    }
}

fn filters(ctx: &mut Ctx<'_>, path: &str, spec: &RouteSpec) -> Filters {
    let filters_path = format!("{path}.filters");
    let request_headers = header_filter(ctx, &format!("{filters_path}.request_headers"), &spec.filters.request_headers);
    let response_headers =
        header_filter(ctx, &format!("{filters_path}.response_headers"), &spec.filters.response_headers);
    let path_prefix_rewrite = spec.filters.rewrite.as_ref().map(|rewrite| {
        let rewrite_path = format!("{filters_path}.rewrite.path_prefix");
        ctx.errors.check(&rewrite_path, fields::uri_path(&rewrite.path_prefix));
        if spec.matches.is_empty() {
            let message = "a prefix rewrite needs `match` entries, each with a `path.prefix` to replace";
            ctx.errors.push(rewrite_path, message);
        }
        for (k, m) in spec.matches.iter().enumerate() {
            if !matches!(m.path, Some(PathMatchSpec { prefix: Some(_), .. })) {
                let message = "the route rewrites the path prefix, so every match needs a `path.prefix`";
                ctx.errors.push(format!("{path}.match[{k}].path"), message);
            }
        }
        fields::trim_prefix(&rewrite.path_prefix)
    });
    Filters { request_headers, response_headers, path_prefix_rewrite }
}

fn header_filter(ctx: &mut Ctx<'_>, path: &str, spec: &HeaderFilterSpec) -> HeaderFilter {
    let mut pairs = |list: &str, headers: &[crate::spec::HeaderSpec]| {
        let mut out = Vec::with_capacity(headers.len());
        for (h, header) in headers.iter().enumerate() {
            let name = ctx.errors.check(&format!("{path}.{list}[{h}].name"), fields::header_name(&header.name));
            let value = ctx.errors.check(&format!("{path}.{list}[{h}].value"), fields::header_value(&header.value));
            out.extend(name.zip(value));
        }
        out
    };
    let set = pairs("set", &spec.set);
    let add = pairs("add", &spec.add);
    let remove = spec.remove.iter().enumerate();
    let remove = remove.filter_map(|(h, n)| ctx.errors.check(&format!("{path}.remove[{h}]"), fields::header_name(n)));
    HeaderFilter { remove: remove.collect(), set, add }
}
