//! The control plane's metrics (`attache_control_plane_*`), registered once and passed down.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug)]
pub struct CpMetrics {
    /// Sidecars with an open stream.
    pub connected: Gauge,
    /// Configurations pushed, by result (`sent`, `failed`).
    pub pushes: Family<ResultLabels, Counter>,
    /// Answers to pushes, by result (`ack`, `nack`).
    pub answers: Family<ResultLabels, Counter>,
    /// From publishing a version to a sidecar's ACK of it.
    pub publish_to_ack: Histogram,
    pub version: Gauge,
    /// 1 when the directory as it is now is valid (and served), 0 when the last good version is served instead.
    pub valid: Gauge,
    /// Reloads of the directory by result (`published`, `rejected`).
    pub reloads: Family<ResultLabels, Counter>,
}

impl CpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let reg = registry.sub_registry_with_prefix("attache_control_plane");
        let buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let m = Self {
            connected: Gauge::default(),
            pushes: Family::default(),
            answers: Family::default(),
            publish_to_ack: Histogram::new(buckets),
            version: Gauge::default(),
            valid: Gauge::default(),
            reloads: Family::default(),
        };
        for result in ["ack", "nack"] {
            let _ = m.answers.get_or_create(&ResultLabels { result });
        }
        for result in ["published", "rejected"] {
            let _ = m.reloads.get_or_create(&ResultLabels { result });
        }
        reg.register("connected_sidecars", "Sidecars with an open config stream", m.connected.clone());
        reg.register("pushes", "Configurations pushed to sidecars, by result", m.pushes.clone());
        reg.register("answers", "Sidecar answers to pushes, by result (ack, nack)", m.answers.clone());
        reg.register_with_unit(
            "publish_to_ack",
            "Time from publishing a version to a sidecar's ACK of it",
            Unit::Seconds,
            m.publish_to_ack.clone(),
        );
        reg.register("mesh_version", "Version of the mesh being served", m.version.clone());
        reg.register("mesh_valid", "1 when the config directory is valid and served, 0 otherwise", m.valid.clone());
        reg.register("mesh_reloads", "Reloads of the config directory by result", m.reloads.clone());
        m
    }
}
