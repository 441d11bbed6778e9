//! The control-plane API's messages, shared by the control plane, the sidecars and the `attache` CLI.
//!
//! A sidecar holds one HTTP/2 stream open (`POST /v1/stream`): its request body carries [`SidecarMessage`]s, the
//! response body carries [`ControlMessage`]s, each one JSON object on its own line. The sidecar says who it is
//! (`hello`), the control plane answers with the configuration for its service (`config`, with a version and a
//! nonce) and again whenever that changes; the sidecar answers every `config` with `ack` (applied) or `nack` (not
//! applied, with why), naming the version and nonce, as xDS does. The control plane thus always knows which
//! sidecar runs which version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::ConfigSpec;

/// The push stream's path.
pub const STREAM_PATH: &str = "/v1/stream";
/// The status view's path (`GET`).
pub const STATUS_PATH: &str = "/v1/status";
/// Canary weights: `GET /v1/canary/<service>`, `PUT /v1/canary/<service>` with a [`CanaryWeights`] body.
pub const CANARY_PATH: &str = "/v1/canary/";
/// Certificates: `POST /v1/certificate` with a [`CertificateRequest`], answered with a [`CertificateResponse`].
pub const CERTIFICATE_PATH: &str = "/v1/certificate";
/// The longest message either side accepts, in bytes: a bound on what one peer can make the other buffer.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Who a sidecar is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// The service it runs next to: picks its configuration.
    pub service: String,
    /// This instance (a pod name, a host name): unique within the service.
    pub instance: String,
    #[serde(default)]
    pub namespace: String,
}

/// Sidecar -> control plane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SidecarMessage {
    /// The first message: who it is and what it runs now (0 when it has nothing from a control plane yet).
    Hello { node: Node, version: u64 },
    /// `config` `version`/`nonce` is applied.
    Ack { version: u64, nonce: String },
    /// `config` `version`/`nonce` was not applied; the sidecar keeps running what it ran.
    Nack { version: u64, nonce: String, error: String },
}

/// Control plane -> sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlMessage {
    /// The configuration the sidecar should run.
    Config { version: u64, nonce: String, hash: u64, config: Box<ConfigSpec> },
    /// The control plane has no configuration for this sidecar's service (it keeps running what it has).
    Unknown { version: u64, error: String },
}

/// `GET /v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusView {
    pub mesh: MeshStatus,
    pub sidecars: Vec<SidecarStatus>,
}

/// The control plane's own state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshStatus {
    /// The version being served (the last valid one).
    pub version: u64,
    pub hash: u64,
    /// The config directory.
    pub source: String,
    /// Why the directory as it is now is not served (empty when it is).
    pub errors: Vec<String>,
}

/// One sidecar as the control plane last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarStatus {
    pub node: NodeView,
    /// The peer address of its stream.
    pub address: String,
    pub connected: bool,
    /// The version it last ACKed (what it runs), 0 if none.
    pub acked_version: u64,
    /// The version last pushed to it.
    pub pushed_version: u64,
    /// Why it refused `pushed_version`, if it did.
    pub nack: Option<String>,
    /// Unix seconds.
    pub last_seen: u64,
}

/// [`Node`] for display (serde-friendly, no `deny_unknown_fields` needed on the way out).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeView {
    pub service: String,
    pub instance: String,
    pub namespace: String,
}

/// `PUT /v1/canary/<service>` body, and `GET` answer: backend -> weight, per route for `GET`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryWeights {
    pub weights: BTreeMap<String, i64>,
}

/// `GET /v1/canary/<service>`: each route's split.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryView {
    pub service: String,
    pub routes: BTreeMap<String, Vec<(String, i64)>>,
    /// The override in force (from `canary set`), if any.
    pub overridden: Option<BTreeMap<String, i64>>,
}

/// A sidecar asks for its workload certificate: with a bootstrap token the first time (`Authorization: Bearer`),
/// with its current certificate (mTLS) to renew it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    pub node: Node,
    /// PEM; only its public key is used.
    pub csr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateResponse {
    /// The SPIFFE ID the certificate carries.
    pub identity: String,
    /// PEM chain, leaf first.
    pub cert: String,
    /// PEM CA certificates (the mesh's trust bundle).
    pub bundle: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// The SPIFFE ID of a sidecar: `spiffe://<trust-domain>/ns/<namespace>/sa/<service>`.
pub fn workload_identity(trust_domain: &str, node: &Node) -> String {
    let namespace = if node.namespace.is_empty() { "default" } else { node.namespace.as_str() };
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{}", node.service)
}

/// The SPIFFE ID the control plane serves its API with.
pub fn control_plane_identity(trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}/ns/attache/sa/control-plane")
}

/// The default identity allowed to use the admin API (`status`, `canary`).
pub fn admin_identity(trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}/ns/attache/sa/admin")
}

impl From<&Node> for NodeView {
    fn from(n: &Node) -> Self {
        Self { service: n.service.clone(), instance: n.instance.clone(), namespace: n.namespace.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_json_objects() {
        let hello = SidecarMessage::Hello {
            node: Node { service: "web".into(), instance: "web-1".into(), namespace: "default".into() },
            version: 0,
        };
        let text = serde_json::to_string(&hello).unwrap();
        assert_eq!(
            text,
            r#"{"type":"hello","node":{"service":"web","instance":"web-1","namespace":"default"},"version":0}"#
        );
        assert_eq!(serde_json::from_str::<SidecarMessage>(&text).unwrap(), hello);
        let nack: SidecarMessage =
            serde_json::from_str(r#"{"type":"nack","version":3,"nonce":"n","error":"bad"}"#).unwrap();
        assert!(matches!(nack, SidecarMessage::Nack { version: 3, .. }));
        assert!(serde_json::from_str::<SidecarMessage>(r#"{"type":"ack","version":1,"nonce":"n","x":1}"#).is_err());
    }
}
