//! Services: unique names, hosts (lower-cased, `*.suffix` wildcards, each served by one service), routes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::{fields, route, Ctx};
use crate::model::{split_authority, HostMatch, Service};
use crate::spec::ServiceSpec;

pub(super) fn services(ctx: &mut Ctx<'_>, specs: &[ServiceSpec]) -> Vec<Arc<Service>> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut owners: HashMap<HostMatch, &str> = HashMap::new();
    let mut address_owners: HashMap<std::net::SocketAddr, &str> = HashMap::new();
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("services[{i}]");
        if ctx.errors.check(&format!("{path}.name"), fields::name(&spec.name)).is_some() {
            if let Some(first) = names.insert(&spec.name, i) {
                let message = format!("service name `{}` is already used by services[{first}]", spec.name);
                ctx.errors.push(format!("{path}.name"), message);
            }
        }
        let hosts = hosts(ctx, &path, spec, &mut owners);
        let addresses = addresses(ctx, &path, spec, &mut address_owners);
        let name: Arc<str> = Arc::from(spec.name.as_str());
        let routes = routes(ctx, &path, &name, spec);
        out.push(Arc::new(Service { name, hosts, addresses, routes }));
    }
    out
}

fn hosts<'s>(
    ctx: &mut Ctx<'_>,
    path: &str,
    spec: &'s ServiceSpec,
    owners: &mut HashMap<HostMatch, &'s str>,
) -> Vec<HostMatch> {
    if spec.hosts.is_empty() {
        ctx.errors.push(format!("{path}.hosts"), "a service needs at least one host");
    }
    let mut out = Vec::with_capacity(spec.hosts.len());
    for (h, text) in spec.hosts.iter().enumerate() {
        let host_path = format!("{path}.hosts[{h}]");
        let Some(host) = ctx.errors.check(&host_path, host_match(text)) else { continue };
        match owners.get(&host) {
            Some(owner) if *owner == spec.name => ctx.errors.push(host_path, format!("host `{text}` is listed twice")),
            Some(owner) => ctx.errors.push(host_path, format!("host `{text}` is already served by service `{owner}`")),
            None => {
                owners.insert(host.clone(), &spec.name);
                out.push(host);
            }
        }
    }
    out
}

/// Each address means one service.
fn addresses<'s>(
    ctx: &mut Ctx<'_>,
    path: &str,
    spec: &'s ServiceSpec,
    owners: &mut HashMap<std::net::SocketAddr, &'s str>,
) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::with_capacity(spec.addresses.len());
    for (a, text) in spec.addresses.iter().enumerate() {
        let address_path = format!("{path}.addresses[{a}]");
        let Some(addr) = ctx.errors.check(&address_path, fields::socket_addr(text)) else { continue };
        match owners.insert(addr, &spec.name) {
            Some(owner) => ctx.errors.push(address_path, format!("address `{text}` already means service `{owner}`")),
            None => out.push(addr),
        }
    }
    out
}

fn routes(ctx: &mut Ctx<'_>, path: &str, service: &Arc<str>, spec: &ServiceSpec) -> Vec<Arc<crate::model::Route>> {
    if spec.routes.is_empty() {
        ctx.errors.push(format!("{path}.routes"), "a service needs at least one route");
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(spec.routes.len());
    for (r, route) in spec.routes.iter().enumerate() {
        let route_path = format!("{path}.routes[{r}]");
        if ctx.errors.check(&format!("{route_path}.name"), fields::name(&route.name)).is_some() {
            if let Some(first) = names.insert(&route.name, r) {
                let message = format!("route name `{}` is already used by routes[{first}] of this service", route.name);
                ctx.errors.push(format!("{route_path}.name"), message);
            }
        }
        if let Some(route) = route::route(ctx, &route_path, service, route) {
            out.push(Arc::new(route));
        }
    }
    out
}

/// `host`, `host:port`, an IP address (IPv6 in brackets), or `*.domain`; lower-cased.
fn host_match(text: &str) -> Result<HostMatch, String> {
    let host = text.to_ascii_lowercase();
    let invalid = || format!("invalid host `{text}`: expected a host name, `host:port`, an IP address or `*.domain`");
    if let Some(suffix) = host.strip_prefix("*.") {
        if suffix.contains(':') {
            return Err(format!("wildcard host `{text}` cannot have a port"));
        }
        return if fields::is_dns_name(suffix) { Ok(HostMatch::Suffix(format!(".{suffix}"))) } else { Err(invalid()) };
    }
    let (name, port) = split_authority(&host);
    if let Some(port) = port {
        fields::port(port).map_err(|e| format!("host `{text}`: {e}"))?;
    }
    let valid = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<Ipv6Addr>().is_ok(),
        None => name.parse::<Ipv4Addr>().is_ok() || fields::is_dns_name(name),
    };
    if !valid {
        return Err(invalid());
    }
    Ok(HostMatch::Exact(host))
}
