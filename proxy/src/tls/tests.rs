//! Handshake tests: real rustls handshakes between two in-memory sidecars.

use std::io;
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, ServerName};
use tokio::io::DuplexStream;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use super::test_certs::Ca;
use super::*;

const WEB: &str = "spiffe://example.org/ns/default/sa/web";
const API: &str = "spiffe://example.org/ns/default/sa/api";

type Handshake = (io::Result<client::TlsStream<DuplexStream>>, io::Result<server::TlsStream<DuplexStream>>);

/// Runs a client and a server handshake against each other over an in-memory pipe.
async fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Handshake {
    let (c, s) = tokio::io::duplex(64 * 1024);
    // The verifier ignores the name; SPIFFE identity is checked instead.
    let name = ServerName::try_from("peer.attache.invalid").unwrap();
    tokio::join!(TlsConnector::from(client).connect(name, c), TlsAcceptor::from(server).accept(s))
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// The client (web) and server (api) both issued by `ca`; the client expects `expected`.
fn configs(ca: &Ca, expected: &str) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let client = ca.leaf(&[WEB]).material(&ca.pem());
    let server = ca.leaf(&[API]).material(&ca.pem());
    (
        client_config(&client, id(expected), TlsVersions::default(), Alpn::Http2).unwrap(),
        server_config(&server, ClientAuth::Required, TlsVersions::default()).unwrap(),
    )
}

#[tokio::test]
async fn mtls_succeeds_and_both_sides_know_the_peer() {
    let ca = Ca::new("mesh-ca");
    let (client, server) = configs(&ca, API);
    let (c, s) = handshake(client, server).await;
    let c = c.expect("client handshake");
    let s = s.expect("server handshake");

    let (_, conn) = s.get_ref();
    assert_eq!(peer_identity(conn.peer_certificates()).unwrap(), id(WEB));
    assert_eq!(conn.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));

    // The client's verifier accepted the server, so its identity is `API`.
    let (_, conn) = c.get_ref();
    assert_eq!(peer_identity(conn.peer_certificates()).unwrap(), id(API));
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn alpn_falls_back_to_http1() {
    let ca = Ca::new("mesh-ca");
    let client = ca.leaf(&[WEB]).material(&ca.pem());
    let mut client =
        Arc::unwrap_or_clone(client_config(&client, id(API), TlsVersions::default(), Alpn::Http2).unwrap());
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (_, server) = configs(&ca, API);
    let (c, s) = handshake(Arc::new(client), server).await;
    s.unwrap();
    assert_eq!(c.unwrap().get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn wrong_identity_fails() {
    let ca = Ca::new("mesh-ca");
    let (client, server) = configs(&ca, "spiffe://example.org/ns/default/sa/other");
    let (c, s) = handshake(client, server).await;
    let err = c.unwrap_err();
    assert_eq!(io_reason(&err), "wrong-identity", "{err}");
    assert!(err.to_string().contains(API), "{err}");
    s.unwrap_err();
}

#[tokio::test]
async fn server_without_identity_fails() {
    let ca = Ca::new("mesh-ca");
    let client = ca.leaf(&[WEB]).material(&ca.pem());
    let client = client_config(&client, id(API), TlsVersions::default(), Alpn::Http2).unwrap();
    // Material loading refuses such a certificate, so build the server by hand.
    for uris in [&[][..], &[API, WEB][..]] {
        let leaf = ca.leaf(uris);
        let server = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(TlsVersions::Tls13.versions())
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.cert_der.clone()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        let (c, _) = handshake(client.clone(), Arc::new(server)).await;
        assert_eq!(io_reason(&c.unwrap_err()), "no-identity", "{uris:?}");
    }
}

#[tokio::test]
async fn untrusted_server_ca_fails() {
    let ca = Ca::new("mesh-ca");
    let rogue = Ca::new("rogue-ca");
    let client = ca.leaf(&[WEB]).material(&ca.pem());
    let client = client_config(&client, id(API), TlsVersions::default(), Alpn::Http2).unwrap();
    let server = rogue.leaf(&[API]).material(&rogue.pem());
    let server = server_config(&server, ClientAuth::Optional, TlsVersions::default()).unwrap();
    let (c, s) = handshake(client, server).await;
    let err = c.unwrap_err();
    assert_eq!(io_reason(&err), "untrusted", "{err}");
    s.unwrap_err();
}

#[tokio::test]
async fn untrusted_client_ca_fails() {
    let ca = Ca::new("mesh-ca");
    let rogue = Ca::new("rogue-ca");
    // The rogue client trusts the real CA so it gets as far as presenting its certificate.
    let client = rogue.leaf(&[WEB]).material(&ca.pem());
    let client = client_config(&client, id(API), TlsVersions::default(), Alpn::Http2).unwrap();
    let server = ca.leaf(&[API]).material(&ca.pem());
    let server = server_config(&server, ClientAuth::Required, TlsVersions::default()).unwrap();
    let (_, s) = handshake(client, server).await;
    let err = s.unwrap_err();
    assert_eq!(io_reason(&err), "untrusted", "{err}");
}

#[tokio::test]
async fn expired_server_cert_fails() {
    let ca = Ca::new("mesh-ca");
    let client = ca.leaf(&[WEB]).material(&ca.pem());
    let client = client_config(&client, id(API), TlsVersions::default(), Alpn::Http2).unwrap();
    let server = ca.leaf_valid(&[API], (2020, 1, 1), (2021, 1, 1)).material_at(&ca.pem(), (2020, 6, 1));
    let server = server_config(&server, ClientAuth::Required, TlsVersions::default()).unwrap();
    let (c, _) = handshake(client, server).await;
    let err = c.unwrap_err();
    assert_eq!(io_reason(&err), "expired", "{err}");
}

#[tokio::test]
async fn not_yet_valid_server_cert_fails() {
    let ca = Ca::new("mesh-ca");
    let client = ca.leaf(&[WEB]).material(&ca.pem());
    let client = client_config(&client, id(API), TlsVersions::default(), Alpn::Http2).unwrap();
    let server = ca.leaf_valid(&[API], (2098, 1, 1), (2099, 1, 1)).material_at(&ca.pem(), (2098, 6, 1));
    let server = server_config(&server, ClientAuth::Required, TlsVersions::default()).unwrap();
    let (c, _) = handshake(client, server).await;
    let err = c.unwrap_err();
    assert_eq!(io_reason(&err), "not-yet-valid", "{err}");
}

#[tokio::test]
async fn client_without_cert_is_refused_when_required() {
    let ca = Ca::new("mesh-ca");
    let server_material = ca.leaf(&[API]).material(&ca.pem());
    let client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(TlsVersions::Tls13.versions())
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            Arc::new(server_material.root_store().unwrap()),
            id(API),
            rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )))
        .with_no_client_auth();
    let client = Arc::new(client);

    let required = server_config(&server_material, ClientAuth::Required, TlsVersions::default()).unwrap();
    let (_, s) = handshake(client.clone(), required).await;
    let err = s.unwrap_err();
    assert_eq!(io_reason(&err), "no-certificate", "{err}");

    // Permissive mode lets it in, without an identity.
    let optional = server_config(&server_material, ClientAuth::Optional, TlsVersions::default()).unwrap();
    let (c, s) = handshake(client, optional).await;
    c.unwrap();
    let s = s.unwrap();
    assert_eq!(peer_identity(s.get_ref().1.peer_certificates()), Err(IdentityError::NoCertificate));
}

#[tokio::test]
async fn bundle_with_old_and_new_ca_accepts_both() {
    let old = Ca::new("old-ca");
    let new = Ca::new("new-ca");
    let bundle = format!("{}{}", old.pem(), new.pem());
    for (client_ca, server_ca) in [(&old, &new), (&new, &old), (&new, &new)] {
        let client = client_ca.leaf(&[WEB]).material(&bundle);
        let server = server_ca.leaf(&[API]).material(&bundle);
        assert_eq!(server.roots.len(), 2);
        let client = client_config(&client, id(API), TlsVersions::default(), Alpn::Http2).unwrap();
        let server = server_config(&server, ClientAuth::Required, TlsVersions::default()).unwrap();
        let (c, s) = handshake(client, server).await;
        c.unwrap();
        let s = s.unwrap();
        assert_eq!(peer_identity(s.get_ref().1.peer_certificates()).unwrap(), id(WEB));
    }
}

#[tokio::test]
async fn tls12_only_client_is_refused_by_default() {
    let ca = Ca::new("mesh-ca");
    let client_material = ca.leaf(&[WEB]).material(&ca.pem());
    let server_material = ca.leaf(&[API]).material(&ca.pem());

    let client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            Arc::new(client_material.root_store().unwrap()),
            id(API),
            rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )))
        .with_client_auth_cert(client_material.certs.clone(), client_material.key.clone_key())
        .unwrap();
    let client = Arc::new(client);

    let strict = server_config(&server_material, ClientAuth::Required, TlsVersions::default()).unwrap();
    let (c, s) = handshake(client.clone(), strict).await;
    assert_eq!(io_reason(&s.unwrap_err()), "incompatible");
    c.unwrap_err();

    // Allowed when TLS 1.2 is configured.
    let lenient = server_config(&server_material, ClientAuth::Required, TlsVersions::Tls12And13).unwrap();
    let (c, s) = handshake(client, lenient).await;
    c.unwrap();
    let s = s.unwrap();
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(peer_identity(s.get_ref().1.peer_certificates()).unwrap(), id(WEB));
}
