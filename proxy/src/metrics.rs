//! The proxy's metric families. One registry is created in `main` (or by a test) and passed down; label values are
//! bounded: config names, directions and status classes, never paths or IDs.

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// A label value taken from the configuration (a name), shared without copying.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Name(pub Arc<str>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    Inbound,
    Outbound,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: Dir,
    pub service: Name,
    pub route: Name,
    pub backend: Name,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct LatencyLabels {
    pub direction: Dir,
    pub service: Name,
    pub route: Name,
    pub backend: Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ListenerLabels {
    pub direction: Dir,
    pub listener: Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnLabels {
    pub direction: Dir,
    pub listener: Name,
    pub protocol: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: Name,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct BackendResultLabels {
    pub backend: Name,
    pub result: &'static str,
}

/// The exemplar of a latency bucket: a sampled trace that landed in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TraceExemplar {
    pub trace_id: HexTraceId,
}

/// A trace ID, formatted only when scraped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HexTraceId(pub u128);

impl EncodeLabelValue for HexTraceId {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        write!(encoder, "{:032x}", self.0)
    }
}

pub type LatencyHistogram = HistogramWithExemplars<TraceExemplar>;

/// HTTP request metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    /// With the trace ID of a sampled request as the exemplar of its bucket.
    pub duration: Family<LatencyLabels, LatencyHistogram, fn() -> LatencyHistogram>,
}

/// Connection and byte metrics.
#[derive(Clone, Debug)]
pub struct ConnMetrics {
    pub open: Family<ListenerLabels, Gauge>,
    pub accepted: Family<ConnLabels, Counter>,
    pub read_bytes: Family<ListenerLabels, Counter>,
    pub write_bytes: Family<ListenerLabels, Counter>,
}

/// Configuration reload metrics.
#[derive(Clone, Debug)]
pub struct ConfigMetrics {
    pub reloads: Family<ResultLabels, Counter>,
    pub version: Gauge,
    pub last_reload_timestamp: Gauge,
}

/// Endpoint discovery metrics.
#[derive(Clone, Debug)]
pub struct DiscoveryMetrics {
    pub endpoints: Family<BackendLabels, Gauge>,
    pub resolutions: Family<BackendResultLabels, Counter>,
    /// Active health checks (`attache_health_checks_total`, `attache_endpoint_healthy`).
    pub health: crate::backend::health::HealthMetrics,
    /// The breaker state family, so endpoints that go away (or are rebuilt closed) take their series along.
    pub breaker_state: Family<EndpointLabels, Gauge>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndpointLabels {
    pub backend: Name,
    pub endpoint: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TransitionLabels {
    pub backend: Name,
    pub state: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FastFailLabels {
    pub backend: Name,
    pub reason: &'static str,
}

/// Circuit breaking and bulkheads.
#[derive(Clone, Debug)]
pub struct BackendMetrics {
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: Family<EndpointLabels, Gauge>,
    pub breaker_transitions: Family<TransitionLabels, Counter>,
    /// Requests failed without trying an endpoint: `circuit-open`, `no-endpoints`, `overloaded`.
    pub fast_failures: Family<FastFailLabels, Counter>,
}

/// Every family the proxy exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub http: HttpMetrics,
    pub conn: ConnMetrics,
    pub config: ConfigMetrics,
    pub discovery: DiscoveryMetrics,
    pub backend: BackendMetrics,
    pub rate_limit: crate::http::ratelimit::RateLimitMetrics,
    pub faults: crate::http::fault::FaultMetrics,
    pub retry: crate::http::retry::RetryMetrics,
    pub tls: crate::tls::TlsMetrics,
    pub authz: crate::http::authz::AuthzMetrics,
    pub control: crate::source::control::ControlMetrics,
    pub trace: crate::trace::export::ExportMetrics,
}

impl EncodeLabelValue for Name {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.0, encoder)
    }
}

impl EncodeLabelValue for Dir {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

impl From<&Arc<str>> for Name {
    fn from(s: &Arc<str>) -> Self {
        Self(s.clone())
    }
}

impl From<attache_config::model::Direction> for Dir {
    fn from(d: attache_config::model::Direction) -> Self {
        match d {
            attache_config::model::Direction::Inbound => Self::Inbound,
            attache_config::model::Direction::Outbound => Self::Outbound,
        }
    }
}

impl Dir {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

fn latency_histogram() -> LatencyHistogram {
    HistogramWithExemplars::new(
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0].into_iter(),
    )
}

/// The `status_class` label values.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `status`'s index in `STATUS_CLASSES` (anything past 5xx counts as 5xx).
pub fn status_class_index(status: http::StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, STATUS_CLASSES.len()) - 1
}

/// `2xx`, `4xx`, ...
pub fn status_class(status: http::StatusCode) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

impl Metrics {
    /// Registers every family under the `attache_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let reg = registry.sub_registry_with_prefix("attache");
        let http = HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram as fn() -> LatencyHistogram),
        };
        reg.register("requests", "HTTP requests answered, by route, backend and status class", http.requests.clone());
        reg.register_with_unit(
            "request_duration",
            "Time from request received to response headers sent",
            Unit::Seconds,
            http.duration.clone(),
        );
        let conn = ConnMetrics {
            open: Family::default(),
            accepted: Family::default(),
            read_bytes: Family::default(),
            write_bytes: Family::default(),
        };
        reg.register("open_connections", "Downstream connections currently open", conn.open.clone());
        reg.register("connections", "Downstream connections accepted, by detected protocol", conn.accepted.clone());
        reg.register_with_unit("tcp_read", "Bytes read from downstream clients", Unit::Bytes, conn.read_bytes.clone());
        reg.register_with_unit(
            "tcp_write",
            "Bytes written to downstream clients",
            Unit::Bytes,
            conn.write_bytes.clone(),
        );
        let config = ConfigMetrics {
            reloads: Family::default(),
            version: Gauge::default(),
            last_reload_timestamp: Gauge::default(),
        };
        // Both results exist from the start, so a query or alert on rejections has a series to match.
        for result in ["applied", "rejected"] {
            let _ = config.reloads.get_or_create(&ResultLabels { result });
        }
        reg.register("config_reloads", "Configuration reload attempts by result", config.reloads.clone());
        reg.register("config_version", "Version of the configuration being served", config.version.clone());
        reg.register_with_unit(
            "config_last_reload_timestamp",
            "Unix time of the last successful configuration apply",
            Unit::Seconds,
            config.last_reload_timestamp.clone(),
        );
        let breaker_state: Family<EndpointLabels, Gauge> = Family::default();
        let discovery = DiscoveryMetrics {
            endpoints: Family::default(),
            resolutions: Family::default(),
            health: crate::backend::health::HealthMetrics::register(reg),
            breaker_state: breaker_state.clone(),
        };
        reg.register("backend_endpoints", "Endpoints currently known per backend", discovery.endpoints.clone());
        reg.register(
            "dns_resolutions",
            "DNS resolutions of backend endpoints by result",
            discovery.resolutions.clone(),
        );
        let backend =
            BackendMetrics { breaker_state, breaker_transitions: Family::default(), fast_failures: Family::default() };
        reg.register(
            "breaker_state",
            "Circuit breaker state per endpoint: 0 closed, 1 open, 2 half-open",
            backend.breaker_state.clone(),
        );
        reg.register(
            "breaker_transitions",
            "Circuit breaker transitions by new state",
            backend.breaker_transitions.clone(),
        );
        reg.register(
            "backend_fast_failures",
            "Requests failed fast without trying an endpoint, by reason",
            backend.fast_failures.clone(),
        );
        let rate_limit = crate::http::ratelimit::RateLimitMetrics::register(reg);
        let faults = crate::http::fault::FaultMetrics::register(reg);
        let retry = crate::http::retry::RetryMetrics::register(reg);
        let tls = crate::tls::TlsMetrics::register(reg);
        let authz = crate::http::authz::AuthzMetrics::register(reg);
        let trace = crate::trace::export::ExportMetrics::register(reg);
        let control = crate::source::control::ControlMetrics::register(registry);
        Self { http, conn, config, discovery, backend, rate_limit, faults, retry, tls, authz, control, trace }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_status_code() {
        let class = |code: u16| status_class(http::StatusCode::from_u16(code).unwrap_or_else(|e| panic!("{e}")));
        assert_eq!([class(100), class(204), class(308), class(499), class(500)], STATUS_CLASSES);
        // Codes past 5xx (valid to hyper up to 999) count as 5xx.
        assert_eq!(class(599), "5xx");
        assert_eq!(class(999), "5xx");
    }
}
