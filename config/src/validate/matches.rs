//! Route matches: path (exact or segment prefix), method, header and query conditions with anchored regexes.

use http::Method;
use regex::RegexBuilder;

use super::{fields, Ctx};
use crate::model::{HeaderMatch, PathMatch, Pattern, QueryMatch, RouteMatch, ValueMatch};
use crate::spec::{MatchSpec, PathMatchSpec, ValueMatchSpec};

/// Compiled size limit of one regular expression, so a config cannot make the proxy allocate without bound.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(super) fn route_match(ctx: &mut Ctx<'_>, path: &str, spec: &MatchSpec) -> RouteMatch {
    let path_match = spec.path.as_ref().and_then(|p| path_match(ctx, &format!("{path}.path"), p));
    let method = spec.method.as_ref().and_then(|m| ctx.errors.check(&format!("{path}.method"), method(m)));
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (h, header) in spec.headers.iter().enumerate() {
        headers.extend(header_match(ctx, &format!("{path}.headers[{h}]"), header));
    }
    let mut query = Vec::with_capacity(spec.query.len());
    for (q, param) in spec.query.iter().enumerate() {
        let param_path = format!("{path}.query[{q}]");
        if param.name.is_empty() {
            ctx.errors.push(format!("{param_path}.name"), "must not be empty");
        }
        let value = value_match(ctx, &param_path, param, false);
        query.extend(value.map(|value| QueryMatch { name: param.name.clone(), value }));
    }
    RouteMatch { path: path_match, method, headers, query }
}

/// A header condition: a valid name and at most one of `exact` (a valid header value) and `regex`.
pub(super) fn header_match(ctx: &mut Ctx<'_>, path: &str, spec: &ValueMatchSpec) -> Option<HeaderMatch> {
    let name = ctx.errors.check(&format!("{path}.name"), fields::header_name(&spec.name));
    let value = value_match(ctx, path, spec, true);
    name.zip(value).map(|(name, value)| HeaderMatch { name, value })
}

fn path_match(ctx: &mut Ctx<'_>, path: &str, spec: &PathMatchSpec) -> Option<PathMatch> {
    match (&spec.exact, &spec.prefix) {
        (Some(exact), None) => {
            ctx.errors.check(&format!("{path}.exact"), fields::uri_path(exact))?;
            Some(PathMatch::Exact(exact.clone()))
        }
        (None, Some(prefix)) => {
            ctx.errors.check(&format!("{path}.prefix"), fields::uri_path(prefix))?;
            Some(PathMatch::Prefix(fields::trim_prefix(prefix)))
        }
        _ => {
            ctx.errors.push(path, "set exactly one of `exact` or `prefix`");
            None
        }
    }
}

/// Methods are case-sensitive; a lower-case one would silently never match, so it is refused.
fn method(text: &str) -> Result<Method, String> {
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!("method `{text}` must be upper case: `{}`", text.to_ascii_uppercase()));
    }
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("invalid method `{text}`: expected e.g. `GET` or `POST`"))
}

fn value_match(ctx: &mut Ctx<'_>, path: &str, spec: &ValueMatchSpec, header: bool) -> Option<ValueMatch> {
    match (&spec.exact, &spec.regex) {
        (None, None) => Some(ValueMatch::Present),
        (Some(exact), None) if header => {
            ctx.errors.check(&format!("{path}.exact"), fields::header_value(exact))?;
            Some(ValueMatch::Exact(exact.clone()))
        }
        (Some(exact), None) => Some(ValueMatch::Exact(exact.clone())),
        (None, Some(regex)) => ctx.errors.check(&format!("{path}.regex"), pattern(regex)).map(ValueMatch::Regex),
        (Some(_), Some(_)) => {
            ctx.errors.push(path, "set at most one of `exact` and `regex` (neither: the value must be present)");
            None
        }
    }
}

/// Compiles `source` anchored to the whole value. The source is first compiled alone so that `a)|(b` cannot
/// escape the anchoring group.
pub(super) fn pattern(source: &str) -> Result<Pattern, String> {
    let build = |s: &str| RegexBuilder::new(s).size_limit(REGEX_SIZE_LIMIT).build().map_err(|e| regex_message(&e));
    build(source)?;
    let regex = build(&format!("^(?:{source})$"))?;
    Ok(Pattern { source: source.to_owned(), regex })
}

fn regex_message(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(text) => {
            let detail = text.lines().rev().find_map(|l| l.strip_prefix("error: ")).unwrap_or(text);
            format!("invalid regular expression: {detail}")
        }
        regex::Error::CompiledTooBig(limit) => format!("regular expression is too large (over {limit} bytes compiled)"),
        other => format!("invalid regular expression: {other}"),
    }
}
