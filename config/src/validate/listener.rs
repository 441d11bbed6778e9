//! Listeners: addresses (unique, admin included), direction-specific targets, `tcp_backend` references, inbound
//! rate limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{fields, optional, resilience, Ctx};
use crate::model::{Direction, Listener, ListenerProtocol, ListenerTarget, RateLimit};
use crate::spec::{DirectionSpec, ListenerProtocolSpec, ListenerSpec, RateLimitSpec};

pub(super) fn listeners(ctx: &mut Ctx<'_>, specs: &[ListenerSpec], admin: Option<SocketAddr>) -> Vec<Arc<Listener>> {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut bound: Vec<(SocketAddr, String)> =
        admin.map(|a| (a, "the admin listener".to_owned())).into_iter().collect();
    let mut out = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let path = format!("listeners[{i}]");
        if ctx.errors.check(&format!("{path}.name"), fields::name(&spec.name)).is_some() {
            if let Some(first) = names.insert(&spec.name, i) {
                let message = format!("listener name `{}` is already used by listeners[{first}]", spec.name);
                ctx.errors.push(format!("{path}.name"), message);
            }
        }
        let address = ctx.errors.check(&format!("{path}.address"), fields::socket_addr(&spec.address));
        if let Some(address) = address {
            if let Some((_, owner)) = bound.iter().find(|(other, _)| conflicts(address, *other)) {
                ctx.errors.push(format!("{path}.address"), format!("address {address} is already used by {owner}"));
            }
            bound.push((address, format!("listener `{}` (listeners[{i}])", spec.name)));
        }
        let target = target(ctx, &path, spec);
        let rate_limit = optional(spec.rate_limit.as_ref(), |r| rate_limit(ctx, &path, spec, r));
        let inbound = spec.direction == DirectionSpec::Inbound;
        for (present, field) in [(spec.tls.is_some(), "tls"), (spec.authorization.is_some(), "authorization")] {
            if present && !inbound {
                let message =
                    format!("only inbound listeners have `{field}`; outbound mTLS is per backend (`backends[].tls`)");
                ctx.errors.push(format!("{path}.{field}"), message);
            }
        }
        let tls = optional(spec.tls.as_ref(), |t| super::tls::listener_tls(ctx, &format!("{path}.tls"), t));
        let authorization = optional(spec.authorization.as_ref(), |a| {
            super::tls::authorization(ctx, &format!("{path}.authorization"), a)
        });
        if let (Some(address), Some(target), Some(rate_limit), Some(tls), Some(authorization)) =
            (address, target, rate_limit, tls, authorization)
        {
            out.push(Arc::new(Listener {
                name: Arc::from(spec.name.as_str()),
                address,
                direction: match spec.direction {
                    DirectionSpec::Outbound => Direction::Outbound,
                    DirectionSpec::Inbound => Direction::Inbound,
                },
                protocol: match spec.protocol {
                    ListenerProtocolSpec::Detect => ListenerProtocol::Detect,
                    ListenerProtocolSpec::Http => ListenerProtocol::Http,
                    ListenerProtocolSpec::Opaque => ListenerProtocol::Opaque,
                },
                target,
                rate_limit,
                tls,
                authorization,
            }));
        }
    }
    out
}

/// Two binds collide on the same port when the IPs are equal or one is the unspecified address of the same family.
/// Port 0 (pick a free port) never collides.
fn conflicts(a: SocketAddr, b: SocketAddr) -> bool {
    let overlapping_ips =
        a.ip() == b.ip() || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified()));
    a.port() != 0 && a.port() == b.port() && overlapping_ips
}

/// Only inbound HTTP requests are limited here; outbound ones are limited per route.
fn rate_limit(ctx: &mut Ctx<'_>, path: &str, spec: &ListenerSpec, limit: &RateLimitSpec) -> Option<RateLimit> {
    let limit_path = format!("{path}.rate_limit");
    let misplaced = match (spec.direction, spec.protocol) {
        (DirectionSpec::Outbound, _) => Some(
            "only inbound listeners have a `rate_limit`; limit outbound requests per route with \
             `services[].routes[].rate_limit`",
        ),
        (DirectionSpec::Inbound, ListenerProtocolSpec::Opaque) => {
            Some("an `opaque` listener carries no HTTP requests to limit; use protocol `detect` or `http`")
        }
        (DirectionSpec::Inbound, _) => None,
    };
    let model = resilience::rate_limit(ctx, &limit_path, limit);
    if let Some(message) = misplaced {
        ctx.errors.push(limit_path, message);
        return None;
    }
    model
}

fn target(ctx: &mut Ctx<'_>, path: &str, spec: &ListenerSpec) -> Option<ListenerTarget> {
    let app_path = format!("{path}.app");
    let tcp_path = format!("{path}.tcp_backend");
    match spec.direction {
        DirectionSpec::Inbound => {
            if spec.tcp_backend.is_some() {
                ctx.errors
                    .push(&tcp_path, "only outbound listeners have a `tcp_backend`; inbound traffic goes to `app`");
            }
            let Some(app) = &spec.app else {
                ctx.errors.push(app_path, "an inbound listener needs `app`, the local app's `IP:port`");
                return None;
            };
            ctx.errors.check(&app_path, fields::socket_addr(app)).map(ListenerTarget::App)
        }
        DirectionSpec::Outbound => {
            if spec.app.is_some() {
                ctx.errors
                    .push(app_path, "only inbound listeners have an `app`; outbound HTTP is routed by `services`");
            }
            match (spec.protocol, &spec.tcp_backend) {
                (ListenerProtocolSpec::Opaque, None) => {
                    let message = "an outbound `opaque` listener needs a `tcp_backend` to forward connections to";
                    ctx.errors.push(tcp_path, message);
                }
                (ListenerProtocolSpec::Http, Some(_)) => {
                    let message = "an `http` listener never carries opaque TCP; use protocol `detect` or `opaque`";
                    ctx.errors.push(tcp_path, message);
                }
                (_, Some(name)) => ctx.check_backend_ref(&tcp_path, name),
                (_, None) => {}
            }
            Some(ListenerTarget::Routed { tcp_backend: spec.tcp_backend.as_deref().map(Arc::from) })
        }
    }
}
