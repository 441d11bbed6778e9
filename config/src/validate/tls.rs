//! mTLS and authorization: file paths present, SPIFFE IDs well formed, inbound-only blocks on inbound listeners.

use std::path::PathBuf;

use super::Ctx;
use crate::model::{Authorization, BackendTls, IdentityMatch, ListenerTls, SpiffeId, TlsFiles, TlsMode, TlsVersion};
use crate::spec::{AuthorizationSpec, BackendTlsSpec, ListenerTlsSpec, TlsModeSpec, TlsVersionSpec};

pub(super) fn listener_tls(ctx: &mut Ctx<'_>, path: &str, spec: &ListenerTlsSpec) -> Option<ListenerTls> {
    let files = files(ctx, path, &spec.cert, &spec.key, &spec.trust_bundle)?;
    let mode = match spec.mode {
        TlsModeSpec::Strict => TlsMode::Strict,
        TlsModeSpec::Permissive => TlsMode::Permissive,
        TlsModeSpec::Disabled => TlsMode::Disabled,
    };
    Some(ListenerTls { mode, files, min_version: version(spec.min_version) })
}

pub(super) fn backend_tls(ctx: &mut Ctx<'_>, path: &str, spec: &BackendTlsSpec) -> Option<BackendTls> {
    let identity = ctx.errors.check(&format!("{path}.identity"), spiffe(&spec.identity));
    let files = files(ctx, path, &spec.cert, &spec.key, &spec.trust_bundle);
    Some(BackendTls { identity: identity?, files: files?, min_version: version(spec.min_version) })
}

pub(super) fn authorization(ctx: &mut Ctx<'_>, path: &str, spec: &AuthorizationSpec) -> Option<Authorization> {
    let mut allow = Vec::with_capacity(spec.allow.len());
    let mut valid = true;
    for (i, entry) in spec.allow.iter().enumerate() {
        let entry_path = format!("{path}.allow[{i}]");
        let matcher = match entry.strip_suffix("/*") {
            // A prefix is checked as the ID of something under it.
            Some(prefix) => spiffe(&format!("{prefix}/x")).map(|_| IdentityMatch::Prefix(format!("{prefix}/"))),
            None => spiffe(entry).map(IdentityMatch::Exact),
        };
        match ctx.errors.check(&entry_path, matcher) {
            Some(m) => allow.push(m),
            None => valid = false,
        }
    }
    if spec.allow.is_empty() && !spec.allow_unauthenticated {
        ctx.errors.push(path.to_owned(), "allows no one: list identities in `allow` or set `allow_unauthenticated`");
        valid = false;
    }
    valid.then_some(Authorization { allow, allow_unauthenticated: spec.allow_unauthenticated })
}

fn files(ctx: &mut Ctx<'_>, path: &str, cert: &str, key: &str, bundle: &str) -> Option<TlsFiles> {
    let mut ok = true;
    for (field, value) in [("cert", cert), ("key", key), ("trust_bundle", bundle)] {
        if value.trim().is_empty() {
            ctx.errors.push(format!("{path}.{field}"), "a PEM file path is required");
            ok = false;
        }
    }
    ok.then(|| TlsFiles { cert: PathBuf::from(cert), key: PathBuf::from(key), trust_bundle: PathBuf::from(bundle) })
}

fn spiffe(text: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(text).map_err(|why| format!("`{text}` is not a SPIFFE ID: {why}"))
}

fn version(spec: TlsVersionSpec) -> TlsVersion {
    match spec {
        TlsVersionSpec::Tls12 => TlsVersion::Tls12,
        TlsVersionSpec::Tls13 => TlsVersion::Tls13,
    }
}
