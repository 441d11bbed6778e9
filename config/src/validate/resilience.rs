//! Resilience: retry policies, circuit breakers, bulkheads, health checks, rate limits and fault injection.

use std::ops::RangeInclusive;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::StatusCode;

use super::{fields, matches, optional, Ctx};
use crate::duration;
use crate::model::{
    AbortKind, BreakerPolicy, Bulkhead, Fault, FaultAbort, FaultDelay, HealthCheck, RateLimit, RateLimitKey,
    RateLimitQueue, RetryBudget, RetryOn, RetryPolicy, GRPC_CODES,
};
use crate::spec::{
    BackendSpec, CircuitBreakerSpec, FaultAbortSpec, FaultDelaySpec, FaultSpec, HealthCheckSpec, RateLimitQueueSpec,
    RateLimitSpec, RetrySpec,
};

/// Most attempts of one request, the first included: more only multiplies load on a struggling backend.
const MAX_ATTEMPTS: u32 = 10;

/// Largest request body buffered for replay, per request in flight.
const MAX_RETRY_BODY_BYTES: u32 = 16 * 1024 * 1024;

/// Most buckets one rate limit keeps, so its memory stays bounded.
const MAX_RATE_LIMIT_KEYS: u32 = 1_000_000;

/// The accepted forms of a `retry.on` entry, for its error message.
const RETRY_ON_FORMS: &str =
    "expected `connect-failure`, `reset`, `timeout`, `5xx`, `gateway-error` or a status code from 100 to 599";

/// The statuses `gateway-error` stands for.
const GATEWAY_ERRORS: [u16; 3] = [502, 503, 504];

/// A route's retry policy. `route_timeout` is the route's validated deadline, if it is valid.
pub(super) fn retry(
    ctx: &mut Ctx<'_>,
    path: &str,
    spec: &RetrySpec,
    route_timeout: Option<Duration>,
) -> Option<RetryPolicy> {
    let attempts = ctx.errors.check(
        &format!("{path}.attempts"),
        within(spec.attempts, 1..=MAX_ATTEMPTS, " attempts, the first one included"),
    );
    let on = retry_on(ctx, path, spec);
    let grpc_status = grpc_statuses(ctx, path, &spec.grpc_status);
    if spec.on.is_empty() && spec.grpc_status.is_empty() {
        let message = "nothing is retried: list failures in `on` or gRPC statuses in `grpc_status`";
        ctx.errors.push(format!("{path}.on"), message);
    }
    let per_try_timeout =
        optional(spec.per_try_timeout.as_deref(), |text| per_try_timeout(ctx, path, text, route_timeout));
    let backoff_path = format!("{path}.backoff");
    let backoff = ordered_durations(ctx, &backoff_path, ("base", &spec.backoff.base), ("max", &spec.backoff.max));
    let budget = retry_budget(ctx, path, spec);
    let max_body_bytes = ctx.errors.check(
        &format!("{path}.max_body_bytes"),
        within(spec.max_body_bytes, 0..=MAX_RETRY_BODY_BYTES, " bytes (16 MiB)"),
    );
    let (backoff_base, backoff_max) = backoff?;
    Some(RetryPolicy {
        attempts: attempts?,
        on: on?,
        grpc_status: grpc_status?,
        per_try_timeout: per_try_timeout?,
        backoff_base,
        backoff_max,
        budget: budget?,
        retry_non_idempotent: spec.retry_non_idempotent,
        max_body_bytes: to_usize(max_body_bytes?),
    })
}

/// A backend's circuit breaker: `Some(None)` when it is disabled. The fields are checked either way, so a typo in a
/// disabled breaker does not surface only when it is switched on.
pub(super) fn breaker(ctx: &mut Ctx<'_>, path: &str, spec: &CircuitBreakerSpec) -> Option<Option<BreakerPolicy>> {
    let consecutive_failures = ctx.errors.check(
        &format!("{path}.consecutive_failures"),
        at_least_one(spec.consecutive_failures, "consecutive_failures"),
    );
    let ejection =
        ordered_durations(ctx, path, ("base_ejection", &spec.base_ejection), ("max_ejection", &spec.max_ejection));
    let (base_ejection, max_ejection) = ejection?;
    let policy = BreakerPolicy { consecutive_failures: consecutive_failures?, base_ejection, max_ejection };
    Some(spec.enabled.then_some(policy))
}

/// A backend's bulkhead, defaulting to `limits`. Pending 0 means no request waits for a slot.
pub(super) fn bulkhead(ctx: &mut Ctx<'_>, path: &str, spec: &BackendSpec) -> Option<Bulkhead> {
    let max_concurrent = match spec.max_concurrent_requests {
        Some(n) => ctx
            .errors
            .check(&format!("{path}.max_concurrent_requests"), at_least_one(n, "max_concurrent_requests"))
            .map(to_usize),
        None => Some(ctx.limits.max_concurrent_per_backend),
    };
    let max_pending = spec.max_pending_requests.map_or(ctx.limits.max_pending_per_backend, to_usize);
    Some(Bulkhead { max_concurrent: max_concurrent?, max_pending })
}

pub(super) fn health_check(ctx: &mut Ctx<'_>, path: &str, spec: &HealthCheckSpec) -> Option<HealthCheck> {
    let check_path = ctx.errors.check(&format!("{path}.path"), health_check_path(&spec.path));
    let interval = ctx.errors.check(&format!("{path}.interval"), duration::parse(&spec.interval));
    let timeout = ctx.errors.check(&format!("{path}.timeout"), duration::parse(&spec.timeout));
    if let (Some(interval), Some(timeout)) = (interval, timeout) {
        if timeout > interval {
            let message = format!(
                "timeout `{}` is longer than interval `{}`: checks of one endpoint would overlap",
                spec.timeout, spec.interval
            );
            ctx.errors.push(format!("{path}.timeout"), message);
        }
    }
    let healthy = ctx
        .errors
        .check(&format!("{path}.healthy_threshold"), at_least_one(spec.healthy_threshold, "healthy_threshold"));
    let unhealthy = ctx
        .errors
        .check(&format!("{path}.unhealthy_threshold"), at_least_one(spec.unhealthy_threshold, "unhealthy_threshold"));
    let (interval, timeout) = (interval?, timeout?);
    (timeout <= interval).then_some(())?;
    Some(HealthCheck {
        path: check_path?,
        interval,
        timeout,
        healthy_threshold: healthy?,
        unhealthy_threshold: unhealthy?,
    })
}

/// A rate limit, on a route or an inbound listener.
pub(super) fn rate_limit(ctx: &mut Ctx<'_>, path: &str, spec: &RateLimitSpec) -> Option<RateLimit> {
    let per_second = ctx
        .errors
        .check(&format!("{path}.requests_per_second"), at_least_one(spec.requests_per_second, "requests_per_second"));
    // One second's worth by default; an invalid rate has been reported already.
    let burst = match spec.burst {
        Some(burst) => ctx.errors.check(&format!("{path}.burst"), at_least_one(burst, "burst")),
        None => per_second,
    };
    let key = ctx.errors.check(&format!("{path}.key"), rate_limit_key(&spec.key));
    let max_keys =
        ctx.errors.check(&format!("{path}.max_keys"), within(spec.max_keys, 1..=MAX_RATE_LIMIT_KEYS, " buckets"));
    let queue = optional(spec.queue.as_ref(), |q| rate_limit_queue(ctx, &format!("{path}.queue"), q));
    Some(RateLimit { per_second: per_second?, burst: burst?, key: key?, max_keys: to_usize(max_keys?), queue: queue? })
}

pub(super) fn fault(ctx: &mut Ctx<'_>, path: &str, spec: &FaultSpec) -> Option<Fault> {
    if spec.delay.is_none() && spec.abort.is_none() {
        ctx.errors.push(path, "a fault needs a `delay`, an `abort`, or both");
    }
    let delay = optional(spec.delay.as_ref(), |d| fault_delay(ctx, &format!("{path}.delay"), d));
    let abort = optional(spec.abort.as_ref(), |a| fault_abort(ctx, &format!("{path}.abort"), a));
    let only_if = optional(spec.header.as_ref(), |h| matches::header_match(ctx, &format!("{path}.header"), h));
    (spec.delay.is_some() || spec.abort.is_some()).then_some(())?;
    Some(Fault { delay: delay?, abort: abort?, only_if: only_if? })
}

/// The `on` list of a retry policy; statuses sorted and deduplicated.
fn retry_on(ctx: &mut Ctx<'_>, path: &str, spec: &RetrySpec) -> Option<RetryOn> {
    let mut on = RetryOn::default();
    let mut valid = true;
    for (k, text) in spec.on.iter().enumerate() {
        let item_path = format!("{path}.on[{k}]");
        match text.as_str() {
            "connect-failure" => on.connect_failure = true,
            "reset" => on.reset = true,
            "timeout" if spec.per_try_timeout.is_none() => {
                let message = "`timeout` retries attempts that hit the per-try timeout, but nothing produces a \
                               per-try timeout: set `per_try_timeout` (the route `timeout` bounds all attempts \
                               together and is never retried)";
                ctx.errors.push(item_path, message);
                valid = false;
            }
            "timeout" => on.timeout = true,
            "5xx" => on.statuses.extend(500..=599),
            "gateway-error" => on.statuses.extend(GATEWAY_ERRORS),
            other => match other.parse::<u16>() {
                Ok(status) if (100..=599).contains(&status) => on.statuses.push(status),
                _ => {
                    ctx.errors.push(item_path, format!("unknown retry condition `{other}`: {RETRY_ON_FORMS}"));
                    valid = false;
                }
            },
        }
    }
    on.statuses.sort_unstable();
    on.statuses.dedup();
    valid.then_some(on)
}

/// The `grpc_status` list of a retry policy, sorted and deduplicated.
fn grpc_statuses(ctx: &mut Ctx<'_>, path: &str, specs: &[String]) -> Option<Vec<u32>> {
    let mut codes = Vec::with_capacity(specs.len());
    let mut valid = true;
    for (k, text) in specs.iter().enumerate() {
        match ctx.errors.check(&format!("{path}.grpc_status[{k}]"), grpc_code(text)) {
            Some(code) => codes.push(code),
            None => valid = false,
        }
    }
    codes.sort_unstable();
    codes.dedup();
    valid.then_some(codes)
}

fn per_try_timeout(ctx: &mut Ctx<'_>, path: &str, text: &str, route_timeout: Option<Duration>) -> Option<Duration> {
    let field = format!("{path}.per_try_timeout");
    let per_try = ctx.errors.check(&field, duration::parse(text))?;
    match route_timeout {
        Some(route) if per_try >= route => {
            let message = format!(
                "per_try_timeout `{text}` must be shorter than the route timeout ({route:?}; the route's `timeout`, \
                 else `limits.request_timeout`), or no attempt could ever be retried"
            );
            ctx.errors.push(field, message);
            None
        }
        _ => Some(per_try),
    }
}

fn retry_budget(ctx: &mut Ctx<'_>, path: &str, spec: &RetrySpec) -> Option<RetryBudget> {
    let ratio = spec.budget.ratio;
    if !ratio.is_finite() || !(0.0..=1.0).contains(&ratio) {
        let message = format!("ratio {ratio} is out of range: expected a fraction from 0.0 to 1.0, e.g. 0.2");
        ctx.errors.push(format!("{path}.budget.ratio"), message);
        return None;
    }
    Some(RetryBudget { ratio, min_per_second: spec.budget.min_per_second })
}

fn rate_limit_queue(ctx: &mut Ctx<'_>, path: &str, spec: &RateLimitQueueSpec) -> Option<RateLimitQueue> {
    let max_wait = ctx.errors.check(&format!("{path}.max_wait"), duration::parse(&spec.max_wait));
    let max_depth = ctx.errors.check(&format!("{path}.max_depth"), at_least_one(spec.max_depth, "max_depth"));
    Some(RateLimitQueue { max_wait: max_wait?, max_depth: to_usize(max_depth?) })
}

fn fault_delay(ctx: &mut Ctx<'_>, path: &str, spec: &FaultDelaySpec) -> Option<FaultDelay> {
    let percent = ctx.errors.check(&format!("{path}.percent"), percent(spec.percent));
    let duration = ctx.errors.check(&format!("{path}.duration"), duration::parse(&spec.duration));
    Some(FaultDelay { percent: percent?, duration: duration? })
}

fn fault_abort(ctx: &mut Ctx<'_>, path: &str, spec: &FaultAbortSpec) -> Option<FaultAbort> {
    let percent = ctx.errors.check(&format!("{path}.percent"), percent(spec.percent));
    let kind = match (spec.status, &spec.grpc_status) {
        (Some(status), None) => {
            ctx.errors.check(&format!("{path}.status"), abort_status(status)).map(AbortKind::Status)
        }
        (None, Some(name)) => {
            ctx.errors.check(&format!("{path}.grpc_status"), grpc_code(name)).map(AbortKind::GrpcStatus)
        }
        _ => {
            ctx.errors.push(path, "set exactly one of `status` (HTTP) and `grpc_status`");
            None
        }
    };
    Some(FaultAbort { percent: percent?, kind: kind? })
}

/// A gRPC status that is a failure, 1 to 16, by number or by name (`resource-exhausted`; the spec's
/// `RESOURCE_EXHAUSTED` is accepted too).
fn grpc_code(text: &str) -> Result<u32, String> {
    let name = text.to_ascii_lowercase().replace('_', "-");
    let code = match text.parse::<u32>() {
        Ok(code) => code,
        Err(_) => {
            GRPC_CODES.iter().zip(0..).find(|(known, _)| **known == name).map(|(_, code)| code).ok_or_else(|| {
                let names = GRPC_CODES[1..].join(", ");
                format!("unknown gRPC status `{text}`: expected a number from 1 to 16 or one of {names}")
            })?
        }
    };
    match code {
        0 => Err(format!("gRPC status `{text}` (0, ok) is a success, not a failure: expected 1 to 16")),
        1..=16 => Ok(code),
        _ => Err(format!("gRPC status {code} is out of range: expected 1 to 16")),
    }
}

/// A status a fault answers with: a final one, 200 to 599.
fn abort_status(code: u16) -> Result<StatusCode, String> {
    match StatusCode::from_u16(code) {
        Ok(status) if (200..=599).contains(&code) => Ok(status),
        Ok(_) if (100..=199).contains(&code) => {
            Err(format!("status {code} is informational (1xx), not a final answer: expected 200 to 599"))
        }
        _ => Err(format!("invalid status {code}: expected 200 to 599")),
    }
}

/// `global`, `client-ip`, `header:<name>` or `peer-identity`.
fn rate_limit_key(text: &str) -> Result<RateLimitKey, String> {
    match text {
        "global" => Ok(RateLimitKey::Global),
        "client-ip" => Ok(RateLimitKey::ClientIp),
        "peer-identity" => Ok(RateLimitKey::PeerIdentity),
        _ => match text.strip_prefix("header:") {
            Some(name) => fields::header_name(name).map(RateLimitKey::Header).map_err(|e| format!("key `{text}`: {e}")),
            None => Err(format!(
                "unknown rate-limit key `{text}`: expected `global`, `client-ip`, `header:<name>` or `peer-identity`"
            )),
        },
    }
}

/// A path and optional query, starting with `/`.
fn health_check_path(text: &str) -> Result<String, String> {
    let (path, query) = text.split_once('?').map_or((text, None), |(path, query)| (path, Some(query)));
    fields::uri_path(path)?;
    if query.is_some_and(|q| q.contains('#')) || text.parse::<PathAndQuery>().is_err() {
        return Err(format!("invalid query in `{text}`: no fragment, spaces or control characters"));
    }
    Ok(text.to_owned())
}

/// Two durations where the first may not exceed the second, e.g. a backoff's base and max; the error goes on the
/// first.
fn ordered_durations(
    ctx: &mut Ctx<'_>,
    path: &str,
    (low_field, low_text): (&str, &str),
    (high_field, high_text): (&str, &str),
) -> Option<(Duration, Duration)> {
    let low = ctx.errors.check(&format!("{path}.{low_field}"), duration::parse(low_text));
    let high = ctx.errors.check(&format!("{path}.{high_field}"), duration::parse(high_text));
    let (low, high) = (low?, high?);
    if low > high {
        let message = format!("{low_field} `{low_text}` is longer than {high_field} `{high_text}`");
        ctx.errors.push(format!("{path}.{low_field}"), message);
        return None;
    }
    Some((low, high))
}

fn percent(value: u32) -> Result<u32, String> {
    within(value, 0..=100, " percent")
}

pub(super) fn at_least_one(value: u32, field: &str) -> Result<u32, String> {
    if value == 0 {
        return Err(format!("{field} must be at least 1"));
    }
    Ok(value)
}

/// `unit` follows the range in the message, e.g. ` percent`.
pub(super) fn within(value: u32, range: RangeInclusive<u32>, unit: &str) -> Result<u32, String> {
    if !range.contains(&value) {
        return Err(format!("{value} is out of range: expected {} to {}{unit}", range.start(), range.end()));
    }
    Ok(value)
}

pub(super) fn to_usize(value: u32) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}
