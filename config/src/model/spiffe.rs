//! SPIFFE IDs: the one type both sides of the mesh use for workload identity.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Longest SPIFFE ID accepted, in bytes (SPIFFE spec, "Maximum SPIFFE ID Length").
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME: &str = "spiffe://";

/// A workload's SPIFFE ID, `spiffe://<trust-domain>/<path>`: the trust domain is lower-case letters, digits, `.`,
/// `-` and `_`; the path is one or more segments of letters, digits, `.`, `-` and `_` (none empty, `.` or `..`);
/// no query, fragment, port or user info; at most 2048 bytes. A workload ID always has a path: the bare
/// `spiffe://<trust-domain>` names the trust domain itself (a CA), never a peer.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: Arc<str>,
    /// Byte offset where the trust domain ends and the path begins.
    trust_domain_end: usize,
}

/// Why a string is not a workload SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSpiffeId {
    #[error("longer than {MAX_SPIFFE_ID_LEN} bytes ({len})")]
    TooLong { len: usize },
    #[error("the scheme must be `spiffe://`")]
    WrongScheme,
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("the trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    #[error("the trust domain may only hold lower-case letters, digits, `.`, `-` and `_` (no port or user info)")]
    BadTrustDomainChar,
    #[error("no path: a workload ID looks like spiffe://<trust-domain>/ns/<namespace>/sa/<account>")]
    NoPath,
    #[error("the path has an empty segment")]
    EmptySegment,
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    #[error("path segments may only hold letters, digits, `.`, `-` and `_`")]
    BadPathChar,
    #[error("no query or fragment is allowed")]
    QueryOrFragment,
}

impl SpiffeId {
    /// Parses and validates a workload SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, InvalidSpiffeId> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(InvalidSpiffeId::TooLong { len: s.len() });
        }
        let rest = s.strip_prefix(SCHEME).ok_or(InvalidSpiffeId::WrongScheme)?;
        if rest.contains(['?', '#']) {
            return Err(InvalidSpiffeId::QueryOrFragment);
        }
        let (trust_domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        validate_trust_domain(trust_domain)?;
        let segments = path.strip_prefix('/').ok_or(InvalidSpiffeId::NoPath)?;
        for segment in segments.split('/') {
            match segment {
                "" => return Err(InvalidSpiffeId::EmptySegment),
                "." | ".." => return Err(InvalidSpiffeId::DotSegment),
                _ if !segment.bytes().all(is_path_byte) => return Err(InvalidSpiffeId::BadPathChar),
                _ => {}
            }
        }
        Ok(Self { id: Arc::from(s), trust_domain_end: SCHEME.len() + trust_domain.len() })
    }

    /// `example.org` of `spiffe://example.org/ns/web`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..self.trust_domain_end]
    }

    /// `/ns/web` of `spiffe://example.org/ns/web`.
    pub fn path(&self) -> &str {
        &self.id[self.trust_domain_end..]
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }
}

/// Checks a SPIFFE trust domain: non-empty, at most 255 bytes, only `[a-z0-9._-]`.
pub fn validate_trust_domain(td: &str) -> Result<(), InvalidSpiffeId> {
    if td.is_empty() {
        return Err(InvalidSpiffeId::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(InvalidSpiffeId::TrustDomainTooLong);
    }
    if !td.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_')) {
        return Err(InvalidSpiffeId::BadTrustDomainChar);
    }
    Ok(())
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = InvalidSpiffeId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_ids() {
        let id = SpiffeId::parse("spiffe://example.org/ns/default/sa/web").unwrap();
        assert_eq!(id.trust_domain(), "example.org");
        assert_eq!(id.path(), "/ns/default/sa/web");
        assert_eq!(id.to_string(), "spiffe://example.org/ns/default/sa/web");
        assert_eq!("spiffe://my_td-1.local/B-c_d.e".parse::<SpiffeId>().unwrap().trust_domain(), "my_td-1.local");
    }

    #[test]
    fn rejects_what_the_spiffe_spec_rejects() {
        use InvalidSpiffeId::*;
        let long = format!("spiffe://example.org/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        let long_td = format!("spiffe://{}/x", "a".repeat(MAX_TRUST_DOMAIN_LEN + 1));
        let cases: &[(&str, InvalidSpiffeId)] = &[
            ("https://example.org/web", WrongScheme),
            ("SPIFFE://example.org/web", WrongScheme),
            ("spiffe:/example.org", WrongScheme),
            ("spiffe://", EmptyTrustDomain),
            ("spiffe:///web", EmptyTrustDomain),
            (long_td.as_str(), TrustDomainTooLong),
            ("spiffe://Example.org/web", BadTrustDomainChar),
            ("spiffe://user@example.org/web", BadTrustDomainChar),
            ("spiffe://example.org:443/web", BadTrustDomainChar),
            ("spiffe://example.org", NoPath),
            ("spiffe://example.org/", EmptySegment),
            ("spiffe://example.org//web", EmptySegment),
            ("spiffe://example.org/web/", EmptySegment),
            ("spiffe://example.org/./web", DotSegment),
            ("spiffe://example.org/ns/..", DotSegment),
            ("spiffe://example.org/we b", BadPathChar),
            ("spiffe://example.org/w%65b", BadPathChar),
            ("spiffe://example.org/web?x=1", QueryOrFragment),
            ("spiffe://example.org/web#frag", QueryOrFragment),
            (long.as_str(), TooLong { len: long.len() }),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::parse(input).as_ref(), Err(want), "{input}");
        }
    }
}
