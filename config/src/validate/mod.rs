//! Spec -> model: every semantic check, collecting all errors. A `Snapshot` is built only when there are none, so
//! nothing is ever partly applied.

mod backend;
mod fields;
mod listener;
mod matches;
mod resilience;
mod route;
mod service;
#[cfg(test)]
mod tests;
mod tls;
mod tracing;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::duration;
use crate::error::{ConfigError, FieldError, Location};
use crate::locate::Locations;
use crate::model::{Admin, Limits, Snapshot};
use crate::spec::{ConfigSpec, LimitsSpec};

/// Every problem found so far.
#[derive(Debug, Default)]
pub(super) struct Errors(Vec<FieldError>);

/// What the checks of one document share.
pub(super) struct Ctx<'s> {
    pub(super) errors: Errors,
    /// Every name in `backends`, for reference checks.
    pub(super) backend_names: BTreeSet<&'s str>,
    /// Validated limits; they supply the defaults of routes and backends.
    pub(super) limits: Limits,
}

pub(crate) fn load_str(text: &str) -> Result<Snapshot, ConfigError> {
    if is_blank(text) {
        let message = "the configuration is empty; write `{}` for a configuration of defaults only";
        let location = Some(Location { line: 1, column: 1 });
        return Err(ConfigError {
            errors: vec![FieldError { path: String::new(), message: message.into(), location }],
        });
    }
    let spec: ConfigSpec = serde_yaml::from_str(text).map_err(|e| syntax_error(&e))?;
    let mut snapshot = Snapshot::try_from(spec).map_err(|err| locate(text, err))?;
    snapshot.hash = fnv1a(text.as_bytes());
    Ok(snapshot)
}

/// Gives each error the line and column of its field in `text`, and orders them as they appear.
pub(crate) fn locate(text: &str, mut err: ConfigError) -> ConfigError {
    let locations = Locations::index(text);
    for e in err.errors.iter_mut().filter(|e| e.location.is_none()) {
        e.location = locations.find(&e.path);
    }
    err.errors.sort_by_key(|e| e.location.map_or((usize::MAX, usize::MAX), |l| (l.line, l.column)));
    err
}

impl TryFrom<ConfigSpec> for Snapshot {
    type Error = ConfigError;

    fn try_from(spec: ConfigSpec) -> Result<Self, Self::Error> {
        let mut snapshot = build(&spec)?;
        snapshot.source = Arc::new(spec);
        Ok(snapshot)
    }
}

/// Validates `spec` and builds the snapshot (with a placeholder `source`).
fn build(spec: &ConfigSpec) -> Result<Snapshot, ConfigError> {
    let mut errors = Errors::default();
    let limits = limits(&mut errors, &spec.limits);
    let backend_names = backend::names(&mut errors, &spec.backends);
    let mut ctx = Ctx { errors, backend_names, limits };
    let admin = ctx.errors.check("admin.address", fields::socket_addr(&spec.admin.address));
    let listeners = listener::listeners(&mut ctx, &spec.listeners, admin);
    let services = service::services(&mut ctx, &spec.services);
    let backends = backend::backends(&mut ctx, &spec.backends, &reachable_backends(spec));
    let tracing = tracing::tracing(&mut ctx.errors, &spec.tracing);
    match (admin, tracing) {
        (Some(address), Some(tracing)) if ctx.errors.0.is_empty() => Ok(Snapshot {
            version: 0,
            hash: 0,
            admin: Admin { address },
            limits: ctx.limits,
            listeners,
            services,
            backends,
            tracing,
            source: Arc::default(),
        }),
        _ => Err(ConfigError { errors: ctx.errors.0 }),
    }
}

/// Backends that traffic can reach: referenced with a positive weight by a route, or a listener's `tcp_backend`.
fn reachable_backends(spec: &ConfigSpec) -> HashSet<&str> {
    let routed = spec.services.iter().flat_map(|s| &s.routes).flat_map(|r| &r.backends);
    let weighted = routed.filter(|b| b.weight > 0).map(|b| b.name.as_str());
    weighted.chain(spec.listeners.iter().filter_map(|l| l.tcp_backend.as_deref())).collect()
}

fn limits(errors: &mut Errors, spec: &LimitsSpec) -> Limits {
    // An invalid field becomes zero here; the error it recorded keeps the snapshot from being built.
    let mut duration = |field: &str, text: &str| {
        errors.check(&format!("limits.{field}"), duration::parse(text)).unwrap_or(Duration::ZERO)
    };
    let detect_timeout = duration("detect_timeout", &spec.detect_timeout);
    let handshake_timeout = duration("handshake_timeout", &spec.handshake_timeout);
    let connect_timeout = duration("connect_timeout", &spec.connect_timeout);
    let request_timeout = duration("request_timeout", &spec.request_timeout);
    let idle_timeout = duration("idle_timeout", &spec.idle_timeout);
    let drain_timeout = duration("drain_timeout", &spec.drain_timeout);
    let pool_idle_timeout = duration("pool_idle_timeout", &spec.pool_idle_timeout);
    let mut count = |field: &str, value: u32| {
        if value == 0 {
            errors.push(format!("limits.{field}"), "must be greater than zero");
        }
        usize::try_from(value).unwrap_or(usize::MAX)
    };
    Limits {
        detect_timeout,
        handshake_timeout,
        connect_timeout,
        request_timeout,
        idle_timeout,
        drain_timeout,
        max_header_count: count("max_header_count", spec.max_header_count),
        max_head_bytes: count("max_head_bytes", spec.max_head_bytes),
        max_concurrent_requests: count("max_concurrent_requests", spec.max_concurrent_requests),
        h2_max_pending_reset_streams: count("h2_max_pending_reset_streams", spec.h2_max_pending_reset_streams),
        max_concurrent_per_backend: count("max_concurrent_per_backend", spec.max_concurrent_per_backend),
        // 0 is valid: no request waits for a slot.
        max_pending_per_backend: usize::try_from(spec.max_pending_per_backend).unwrap_or(usize::MAX),
        pool_idle_timeout,
        pool_max_idle_per_endpoint: count("pool_max_idle_per_endpoint", spec.pool_max_idle_per_endpoint),
        max_retry_buffer_bytes: count("max_retry_buffer_bytes", spec.max_retry_buffer_bytes),
        listen_backlog: u32::try_from(count("listen_backlog", spec.listen_backlog)).unwrap_or(u32::MAX),
    }
}

/// Checks an optional section: `Some(None)` when it is absent, `None` when it is present but invalid (its errors
/// recorded by `build`).
pub(super) fn optional<S: ?Sized, T>(spec: Option<&S>, build: impl FnOnce(&S) -> Option<T>) -> Option<Option<T>> {
    match spec {
        None => Some(None),
        Some(spec) => build(spec).map(Some),
    }
}

/// A YAML or type error from the deserializer: one error with the path and location it reports.
pub(crate) fn syntax_error(e: &serde_yaml::Error) -> ConfigError {
    let location = e.location().map(|l| Location { line: l.line(), column: l.column() });
    let mut message = e.to_string();
    if let Some(l) = location {
        let suffix = format!(" at line {} column {}", l.line, l.column);
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    // The deserializer prefixes the message with the field path (`services[0].routes[1]: ...`).
    let is_path = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.[]?".contains(&b));
    let (path, message) = match message.split_once(": ") {
        Some((path, rest)) if is_path(path) => (path.to_owned(), rest.to_owned()),
        _ => (String::new(), message),
    };
    ConfigError { errors: vec![FieldError { path, message, location }] }
}

/// Only whitespace, comments and document markers.
pub(crate) fn is_blank(text: &str) -> bool {
    text.lines().map(str::trim).all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

/// FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`. A snapshot's `hash` is this of its
/// text, so a reader can tell unchanged content before parsing it.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(FNV1A_OFFSET, bytes)
}

/// FNV-1a's starting state.
pub(crate) const FNV1A_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over `bytes`, continuing from `hash` (a `Hasher` is fed in pieces).
pub(crate) fn fnv1a_continue(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, b| (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl Errors {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    /// Records the error of `result`, if any, at `path`.
    pub(super) fn check<T>(&mut self, path: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.push(path, message)).ok()
    }
}

impl Ctx<'_> {
    /// Records an error at `path` unless `name` is a backend.
    pub(super) fn check_backend_ref(&mut self, path: &str, name: &str) {
        if self.backend_names.contains(name) {
            return;
        }
        let known: Vec<&str> = self.backend_names.iter().copied().collect();
        let message = if known.is_empty() {
            format!("unknown backend `{name}`: no backends are defined")
        } else {
            format!("unknown backend `{name}` (known: {})", known.join(", "))
        };
        self.errors.push(path, message);
    }
}
