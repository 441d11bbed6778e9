//! The validated mTLS and authorization model.

use std::path::PathBuf;

use super::spiffe::SpiffeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsMode {
    Strict,
    Permissive,
    Disabled,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// PEM files of a workload's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trust_bundle: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListenerTls {
    pub mode: TlsMode,
    pub files: TlsFiles,
    pub min_version: TlsVersion,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendTls {
    pub identity: SpiffeId,
    pub files: TlsFiles,
    pub min_version: TlsVersion,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Authorization {
    pub allow: Vec<IdentityMatch>,
    pub allow_unauthenticated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IdentityMatch {
    Exact(SpiffeId),
    /// Matches IDs starting with this, which ends in `/`.
    Prefix(String),
}

impl Authorization {
    /// Whether a caller with `peer` (`None`: unauthenticated) may pass.
    pub fn allows(&self, peer: Option<&SpiffeId>) -> bool {
        match peer {
            None => self.allow_unauthenticated,
            Some(id) => self.allow.iter().any(|m| match m {
                IdentityMatch::Exact(want) => want == id,
                IdentityMatch::Prefix(prefix) => id.as_str().starts_with(prefix.as_str()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_matches_exact_ids_and_prefixes() {
        let id = |s| SpiffeId::parse(s).unwrap();
        let authz = Authorization {
            allow: vec![
                IdentityMatch::Exact(id("spiffe://example.org/ns/web/sa/frontend")),
                IdentityMatch::Prefix("spiffe://example.org/ns/batch/".to_owned()),
            ],
            allow_unauthenticated: false,
        };
        assert!(authz.allows(Some(&id("spiffe://example.org/ns/web/sa/frontend"))));
        assert!(authz.allows(Some(&id("spiffe://example.org/ns/batch/sa/job"))));
        assert!(!authz.allows(Some(&id("spiffe://example.org/ns/web/sa/other"))));
        assert!(!authz.allows(Some(&id("spiffe://example.org/ns/batchx/sa/job"))));
        assert!(!authz.allows(None));
    }
}
