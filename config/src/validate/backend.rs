//! Backends: unique names, endpoints (`IP:port` or `dns-name:port`), timeouts with defaults from `limits`, and the
//! per-backend resilience settings (breaker, bulkhead, health check; checked in `resilience`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{fields, optional, resilience, Ctx, Errors};
use crate::duration;
use crate::model::{Backend, EndpointAddr, UpstreamProtocol};
use crate::spec::{BackendSpec, UpstreamProtocolSpec};

/// How often DNS endpoints are re-resolved when `dns_refresh` is not set.
const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);

/// The set of backend names; reports empty and duplicate names.
pub(super) fn names<'s>(errors: &mut Errors, specs: &'s [BackendSpec]) -> BTreeSet<&'s str> {
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("backends[{i}].name");
        if errors.check(&path, fields::name(&spec.name)).is_none() {
            continue;
        }
        if let Some(j) = first.insert(&spec.name, i) {
            errors.push(path, format!("backend name `{}` is already used by backends[{j}]", spec.name));
            first.insert(&spec.name, j);
        }
    }
    first.into_keys().collect()
}

/// `reachable`: backends that receive traffic, which therefore need endpoints.
pub(super) fn backends(
    ctx: &mut Ctx<'_>,
    specs: &[BackendSpec],
    reachable: &HashSet<&str>,
) -> BTreeMap<Arc<str>, Arc<Backend>> {
    let mut out = BTreeMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("backends[{i}]");
        if spec.endpoints.is_empty() && reachable.contains(spec.name.as_str()) {
            let message = format!(
                "backend `{}` receives traffic (from a route or a `tcp_backend`) but has no endpoints",
                spec.name
            );
            ctx.errors.push(format!("{path}.endpoints"), message);
        }
        let mut endpoints = Vec::with_capacity(spec.endpoints.len());
        for (e, text) in spec.endpoints.iter().enumerate() {
            let endpoint_path = format!("{path}.endpoints[{e}]");
            let Some(endpoint) = ctx.errors.check(&endpoint_path, endpoint(text)) else { continue };
            if endpoints.contains(&endpoint) {
                ctx.errors.push(endpoint_path, format!("endpoint `{text}` is listed twice"));
                continue;
            }
            endpoints.push(endpoint);
        }
        let dns_refresh = match &spec.dns_refresh {
            Some(text) => ctx.errors.check(&format!("{path}.dns_refresh"), duration::parse(text)),
            None => Some(DEFAULT_DNS_REFRESH),
        };
        let connect_timeout = match &spec.connect_timeout {
            Some(text) => ctx.errors.check(&format!("{path}.connect_timeout"), duration::parse(text)),
            None => Some(ctx.limits.connect_timeout),
        };
        let breaker = resilience::breaker(ctx, &format!("{path}.circuit_breaker"), &spec.circuit_breaker);
        let bulkhead = resilience::bulkhead(ctx, &path, spec);
        let health_check =
            optional(spec.health_check.as_ref(), |h| resilience::health_check(ctx, &format!("{path}.health_check"), h));
        let tls = optional(spec.tls.as_ref(), |t| super::tls::backend_tls(ctx, &format!("{path}.tls"), t));
        let (Some(dns_refresh), Some(connect_timeout), Some(breaker), Some(bulkhead), Some(health_check), Some(tls)) =
            (dns_refresh, connect_timeout, breaker, bulkhead, health_check, tls)
        else {
            continue;
        };
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let protocol = match spec.protocol {
            UpstreamProtocolSpec::Http1 => UpstreamProtocol::Http1,
            UpstreamProtocolSpec::Http2 => UpstreamProtocol::Http2,
            UpstreamProtocolSpec::Auto => UpstreamProtocol::Auto,
        };
        let backend = Backend {
            name: name.clone(),
            endpoints,
            protocol,
            dns_refresh,
            connect_timeout,
            breaker,
            bulkhead,
            health_check,
            tls,
        };
        out.entry(name).or_insert_with(|| Arc::new(backend));
    }
    out
}

/// `IP:port` or `dns-name:port`.
fn endpoint(text: &str) -> Result<EndpointAddr, String> {
    let expected = "expected `IP:port` or `host-name:port`, e.g. `10.0.0.7:8080` or `web.default.svc:8080`";
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("endpoint `{text}` needs a port from 1 to 65535"));
        }
        return Ok(EndpointAddr::Socket(addr));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("endpoint `{text}` has no port: {expected}"));
    };
    if !fields::is_dns_name(host) {
        return Err(format!("invalid endpoint `{text}`: {expected}"));
    }
    let port = fields::port(port).map_err(|e| format!("endpoint `{text}`: {e}"))?;
    Ok(EndpointAddr::Dns { host: host.to_ascii_lowercase(), port })
}
