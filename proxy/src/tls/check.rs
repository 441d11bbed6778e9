//! The check a configuration passes before it is applied: every certificate, key and trust bundle it names loads
//! and validates now, so a typo in a path or an expired certificate is a rejected config with a field path, not a
//! listener that refuses every handshake.

use attache_config::model::{TlsFiles, TlsMode};
use attache_config::{FieldError, Snapshot};

use super::credentials::CredentialStore;
use super::material::{MaterialError, PemSource};

/// One error per TLS block whose files do not load, at the field the problem is in.
pub fn check_snapshot(snapshot: &Snapshot) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, listener) in snapshot.listeners.iter().enumerate() {
        if let Some(tls) = listener.tls.as_ref().filter(|t| t.mode != TlsMode::Disabled) {
            errors.extend(check(&format!("listeners[{i}].tls"), &tls.files));
        }
    }
    // Backends are checked in file order, so paths index the file's list.
    for (i, spec) in snapshot.source.backends.iter().enumerate() {
        if let Some(tls) = snapshot.backends.get(spec.name.as_str()).and_then(|b| b.tls.as_ref()) {
            errors.extend(check(&format!("backends[{i}].tls"), &tls.files));
        }
    }
    errors
}

fn check(path: &str, files: &TlsFiles) -> Option<FieldError> {
    let error = CredentialStore::check(files).err()?;
    let field = match &error {
        MaterialError::Unreadable { path, .. } if *path == files.key => "key",
        MaterialError::Unreadable { path, .. } if *path == files.trust_bundle => "trust_bundle",
        MaterialError::InvalidPem { what: PemSource::Key, .. }
        | MaterialError::NoKey
        | MaterialError::BadKey(_)
        | MaterialError::KeyMismatch => "key",
        MaterialError::InvalidPem { what: PemSource::TrustBundle, .. }
        | MaterialError::NoTrustAnchors
        | MaterialError::BadTrustAnchor(_) => "trust_bundle",
        _ => "cert",
    };
    let message = crate::http::rescue::ErrorChain(&error).to_string();
    Some(FieldError::new(format!("{path}.{field}"), message))
}
