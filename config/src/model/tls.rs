//! The validated mTLS and authorization model, and the SPIFFE ID type both sides of the mesh use.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A SPIFFE ID: `spiffe://<trust-domain>/<path>`. The trust domain is lower-case letters, digits, `.`, `-` and
/// `_`; the path is one or more non-empty segments of letters, digits and `.-_` (no `.`/`..` segments); no query,
/// fragment, port or user info; at most 2048 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(Arc<str>);

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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

impl SpiffeId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid =
            |why: &str| format!("`{text}` is not a SPIFFE ID: {why} (expected spiffe://<trust-domain>/<path>)");
        if text.len() > 2048 {
            return Err(invalid("longer than 2048 bytes"));
        }
        let rest = text.strip_prefix("spiffe://").ok_or_else(|| invalid("the scheme must be spiffe://"))?;
        let (domain, path) = rest.split_once('/').ok_or_else(|| invalid("no path"))?;
        let domain_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_');
        if domain.is_empty() || !domain.chars().all(domain_ok) {
            return Err(invalid("the trust domain must be lower-case letters, digits, `.`, `-` or `_`"));
        }
        let segment_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
        if !path.split('/').all(segment_ok) {
            return Err(invalid("path segments must be non-empty letters, digits, `.`, `-` or `_`"));
        }
        Ok(Self(Arc::from(text)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `example.org` of `spiffe://example.org/ns/default`.
    pub fn trust_domain(&self) -> &str {
        self.0["spiffe://".len()..].split('/').next().unwrap_or("")
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.0)
    }
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
    fn parses_spiffe_ids_strictly() {
        let id = SpiffeId::parse("spiffe://example.org/ns/default/sa/web").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        for bad in [
            "https://example.org/x",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://Example.org/x",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/../b",
            "spiffe://example.org:8443/x",
            "spiffe://user@example.org/x",
            "spiffe://example.org/x?y=1",
            "spiffe://example.org/x#f",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad} should be refused");
        }
    }

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
