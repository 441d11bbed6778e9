//! mTLS and authorization blocks.

use super::*;
use crate::model::{IdentityMatch, TlsMode, TlsVersion};

const INBOUND: &str = "\
listeners:
  - name: in
    address: 127.0.0.1:4143
    direction: inbound
    app: 127.0.0.1:8080
    tls:
      mode: permissive
      cert: /etc/attache/cert.pem
      key: /etc/attache/key.pem
      trust_bundle: /etc/attache/bundle.pem
    authorization:
      allow:
        - spiffe://example.org/ns/web/sa/frontend
        - spiffe://example.org/ns/batch/*
";

#[test]
fn inbound_tls_and_authorization_are_built() {
    let snapshot = load(INBOUND);
    let listener = &snapshot.listeners[0];
    let tls = listener.tls.as_ref().expect("tls");
    assert_eq!(tls.mode, TlsMode::Permissive);
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    let authz = listener.authorization.as_ref().expect("authorization");
    assert!(matches!(&authz.allow[1], IdentityMatch::Prefix(p) if p == "spiffe://example.org/ns/batch/"));
    assert!(!authz.allow_unauthenticated);
}

#[test]
fn tls_and_authorization_belong_to_inbound_listeners() {
    let yaml = "\
listeners:
  - name: out
    address: 127.0.0.1:4140
    direction: outbound
    authorization:
      allow_unauthenticated: true
";
    expect_error(yaml, "listeners[0].authorization", (5, 5), "only inbound listeners");
}

#[test]
fn authorization_must_allow_someone_and_ids_must_be_spiffe() {
    let yaml = INBOUND.replace("spiffe://example.org/ns/web/sa/frontend", "https://example.org/frontend");
    expect_error(&yaml, "listeners[0].authorization.allow[0]", (13, 9), "not a SPIFFE ID");
    let none = "\
listeners:
  - name: in
    address: 127.0.0.1:4143
    direction: inbound
    app: 127.0.0.1:8080
    authorization: {}
";
    expect_error(none, "listeners[0].authorization", (6, 5), "allows no one");
}

#[test]
fn backend_tls_needs_a_spiffe_identity_and_files() {
    let yaml = "\
backends:
  - name: web
    endpoints: [127.0.0.1:8080]
    tls:
      identity: spiffe://Example.org/web
      cert: ''
      key: key.pem
      trust_bundle: bundle.pem
";
    let errs = errors(yaml);
    assert!(
        errs.iter().any(|e| e.path == "backends[0].tls.identity" && e.message.contains("trust domain")),
        "{errs:?}"
    );
    assert!(errs.iter().any(|e| e.path == "backends[0].tls.cert"), "{errs:?}");
}
