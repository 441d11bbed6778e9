//! YAML for mTLS and authorization: listener and backend `tls` blocks, inbound `authorization`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How an inbound listener treats TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TlsModeSpec {
    /// Only mTLS with a client certificate chaining to the trust bundle.
    #[default]
    Strict,
    /// mTLS when the client offers it, plaintext otherwise (marked unauthenticated).
    Permissive,
    /// Plaintext only.
    Disabled,
}

/// Lowest TLS version accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TlsVersionSpec {
    #[serde(rename = "1.2")]
    Tls12,
    #[default]
    #[serde(rename = "1.3")]
    Tls13,
}

/// TLS on an inbound listener.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsSpec {
    /// `strict` (default), `permissive` or `disabled`.
    #[serde(default)]
    pub mode: TlsModeSpec,
    /// PEM certificate chain of this workload (its SPIFFE ID in the URI SAN).
    pub cert: String,
    /// PEM private key of `cert`.
    pub key: String,
    /// PEM CA certificates that peers must chain to (old and new during a CA rotation).
    pub trust_bundle: String,
    /// `1.3` (default) or `1.2`.
    #[serde(default)]
    pub min_version: TlsVersionSpec,
}

/// mTLS origination to a backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackendTlsSpec {
    /// The exact SPIFFE ID the backend's certificate must carry.
    pub identity: String,
    /// PEM certificate chain presented to the backend.
    pub cert: String,
    /// PEM private key of `cert`.
    pub key: String,
    /// PEM CA certificates the backend's certificate must chain to.
    pub trust_bundle: String,
    /// `1.3` (default) or `1.2`.
    #[serde(default)]
    pub min_version: TlsVersionSpec,
}

/// Who may call an inbound listener's app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationSpec {
    /// SPIFFE IDs allowed, exactly (`spiffe://example.org/ns/web/sa/frontend`) or by prefix ending in `/*`
    /// (`spiffe://example.org/ns/web/*`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Also allow callers without a verified identity (plaintext in permissive mode). Default false.
    #[serde(default)]
    pub allow_unauthenticated: bool,
}
