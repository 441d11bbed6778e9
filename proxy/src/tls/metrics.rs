//! TLS metrics: handshakes by direction and outcome, credential reloads, and when the current certificates expire.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::metrics::Dir;

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandshakeLabels {
    pub direction: Dir,
    /// `ok` or `failed`.
    pub result: &'static str,
    /// `none` when ok; else a bounded reason (see [`super::reason`]).
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `rejected`.
    pub result: &'static str,
    /// `none` when applied; else [`super::MaterialError::reason`].
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CertLabels {
    /// The SPIFFE ID the certificate carries (from the configuration's files: bounded by it).
    pub identity: String,
}

/// `attache_tls_*`.
#[derive(Clone, Debug, Default)]
pub struct TlsMetrics {
    pub handshakes: Family<HandshakeLabels, Counter>,
    pub reloads: Family<ReloadLabels, Counter>,
    pub expiry: Family<CertLabels, Gauge>,
}

impl TlsMetrics {
    pub fn register(reg: &mut Registry) -> Self {
        let m = Self::default();
        reg.register("tls_handshakes", "TLS handshakes by direction, result and failure reason", m.handshakes.clone());
        reg.register(
            "tls_credential_reloads",
            "Reloads of certificate, key and trust bundle files, by result and rejection reason",
            m.reloads.clone(),
        );
        reg.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "notAfter of the certificate in use, per identity, in unix seconds",
            Unit::Seconds,
            m.expiry.clone(),
        );
        m
    }

    pub fn handshake(&self, direction: Dir, outcome: Result<(), &'static str>) {
        let (result, reason) = match outcome {
            Ok(()) => ("ok", "none"),
            Err(reason) => ("failed", reason),
        };
        self.handshakes.get_or_create(&HandshakeLabels { direction, result, reason }).inc();
    }
}
