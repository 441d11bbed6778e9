//! The `tracing` block: a sampling fraction, at least one header form, plain-HTTP collector endpoints.

use std::sync::Arc;

use super::fields;
use super::resilience::{at_least_one, to_usize, within};
use super::Errors;
use crate::duration;
use crate::model::{Exporter, ExporterKind, Propagation, Tracing};
use crate::spec::{ExporterSpec, PropagationSpec, TracingSpec};

/// The most spans one exporter may hold waiting (a sanity bound on memory: a span is well under 1 KiB).
const MAX_QUEUE: u32 = 1_000_000;
/// The longest `x-request-id` that can be allowed through.
const MAX_REQUEST_ID: u32 = 1024;

pub(super) fn tracing(errors: &mut Errors, spec: &TracingSpec) -> Option<Tracing> {
    let service_name = match spec.service_name.as_deref() {
        None => Some(Arc::from("attache-proxy")),
        Some(name) if name.trim().is_empty() || name.chars().any(char::is_control) => {
            errors.push("tracing.service_name", "must be a non-empty name without control characters");
            None
        }
        Some(name) => Some(Arc::from(name)),
    };
    let sampling = spec.sampling;
    let sampling = if sampling.is_finite() && (0.0..=1.0).contains(&sampling) {
        Some(sampling)
    } else {
        let message = format!("{sampling} is out of range: expected a fraction from 0.0 to 1.0, e.g. 0.1");
        errors.push("tracing.sampling", message);
        None
    };
    let propagation = propagation(errors, &spec.propagation);
    let max_request_id_length =
        errors.check("tracing.max_request_id_length", within(spec.max_request_id_length, 16..=MAX_REQUEST_ID, ""));
    let mut exporters = Some(Vec::new());
    for (kind, spec) in [(ExporterKind::Otlp, &spec.otlp), (ExporterKind::Zipkin, &spec.zipkin)] {
        let Some(spec) = spec else { continue };
        let exporter = exporter(errors, &format!("tracing.{}", kind.as_str()), kind, spec);
        match (exporter, exporters.as_mut()) {
            (Some(e), Some(list)) => list.push(e),
            _ => exporters = None,
        }
    }
    Some(Tracing {
        service_name: service_name?,
        sampling: sampling?,
        propagation: propagation?,
        max_request_id_length: to_usize(max_request_id_length?),
        exporters: exporters?,
    })
}

fn propagation(errors: &mut Errors, forms: &[PropagationSpec]) -> Option<Propagation> {
    if forms.is_empty() {
        errors.push("tracing.propagation", "names no header form: list at least one of w3c, b3, b3multi");
        return None;
    }
    let mut p = Propagation::default();
    for form in forms {
        match form {
            PropagationSpec::W3c => p.w3c = true,
            PropagationSpec::B3 => p.b3 = true,
            PropagationSpec::B3multi => p.b3multi = true,
        }
    }
    Some(p)
}

fn exporter(errors: &mut Errors, path: &str, kind: ExporterKind, spec: &ExporterSpec) -> Option<Exporter> {
    let target = errors.check(&format!("{path}.endpoint"), endpoint(&spec.endpoint, kind));
    let max_batch = errors.check(&format!("{path}.max_batch"), at_least_one(spec.max_batch, "max_batch"));
    let queue = errors.check(&format!("{path}.queue"), within(spec.queue, 1..=MAX_QUEUE, " spans"));
    let flush_interval = errors.check(&format!("{path}.flush_interval"), duration::parse(&spec.flush_interval));
    let timeout = errors.check(&format!("{path}.timeout"), duration::parse(&spec.timeout));
    let (authority, path) = target?;
    Some(Exporter {
        kind,
        authority,
        path,
        max_batch: to_usize(max_batch?),
        queue: to_usize(queue?),
        flush_interval: flush_interval?,
        timeout: timeout?,
    })
}

/// `http://host:port[/path]` -> (`host:port`, `/path`).
fn endpoint(text: &str, kind: ExporterKind) -> Result<(String, String), String> {
    let expected = "expected `http://host:port/path`, e.g. `http://127.0.0.1:4318/v1/traces`";
    if text.starts_with("https://") {
        return Err(format!(
            "`{text}`: https collectors are not supported; send to a collector agent on loopback over http"
        ));
    }
    let rest = text.strip_prefix("http://").ok_or_else(|| format!("`{text}`: {expected}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, kind.default_path()),
    };
    let uri: http::Uri = format!("http://{authority}{path}").parse().map_err(|_| format!("`{text}`: {expected}"))?;
    let parsed = uri.authority().filter(|a| a.port_u16().is_some() && !a.as_str().contains('@'));
    let host_ok = parsed.is_some_and(|a| {
        let host = a.host().trim_start_matches('[').trim_end_matches(']');
        host.parse::<std::net::IpAddr>().is_ok() || fields::is_dns_name(host)
    });
    if !host_ok || uri.query().is_some() {
        return Err(format!("`{text}`: {expected} (the port is required)"));
    }
    Ok((authority.to_owned(), path.to_owned()))
}
