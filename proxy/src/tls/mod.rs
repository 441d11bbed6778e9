//! TLS and workload identity: SPIFFE IDs in certificates, credentials loaded from watched files, peer
//! verification and the rustls configs for mTLS between sidecars.

pub mod accept;
mod check;
pub mod config;
pub mod credentials;
pub mod identity;
pub mod material;
pub mod metrics;
pub mod verify;

#[cfg(test)]
mod test_certs;
#[cfg(test)]
mod tests;

pub use self::accept::{accept, Accepted};
pub use self::check::check_snapshot;
pub use self::config::{
    client_config, enrolment_config, server_config, Alpn, ClientAuth, ClientTls, ConfigError, ServerTls, TlsVersions,
};
pub use self::credentials::{CredentialStore, Credentials, NoCredentials};
pub use self::identity::{identity_of, peer_identity, IdentityError, InvalidSpiffeId, SpiffeId};
pub use self::material::{MaterialError, TlsMaterial};
pub use self::metrics::TlsMetrics;
pub use self::verify::{io_reason, reason, IdentityMismatch, SpiffeClientVerifier, SpiffeServerVerifier};
