//! A mock mTLS workload standing where another sidecar would: it presents a [`Workload`]'s certificate, requires a
//! client certificate chaining to that workload's trust bundle, and records the certificate each connection's
//! client presented. It answers every HTTP/1.1 request with `200` and, as the body, the serial of the client
//! certificate of the connection the request came on, so a test can see which certificate a sidecar dials with.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::pki::{normalize_serial, Workload};
use crate::AbortOnDrop;

/// A running mTLS probe. Dropping it stops it and its connections.
pub struct MtlsServer {
    addr: SocketAddr,
    clients: Arc<Mutex<Vec<ClientCert>>>,
    _task: AbortOnDrop,
}

/// What a client presented on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// As [`crate::pki::Leaf::serial`] prints it.
    pub serial: String,
    /// The URI SANs, in order.
    pub uris: Vec<String>,
}

/// Binds `127.0.0.1:0` and serves mTLS as `workload`. Panics if the workload's files do not load.
pub async fn mtls_probe(workload: &Workload) -> MtlsServer {
    let config = server_config(workload).expect("building the probe's TLS config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mtls probe");
    let addr = listener.local_addr().expect("mtls probe address");
    let clients = Arc::new(Mutex::new(Vec::new()));
    let task = AbortOnDrop::spawn(accept_loop(listener, Arc::new(config), clients.clone()));
    MtlsServer { addr, clients, _task: task }
}

impl MtlsServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every completed handshake's client certificate, in order.
    pub fn clients(&self) -> Vec<ClientCert> {
        self.clients.lock().unwrap().clone()
    }
}

fn server_config(workload: &Workload) -> Result<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(workload.cert())?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(workload.key())?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(workload.bundle())? {
        roots.add(ca?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

async fn accept_loop(listener: TcpListener, config: Arc<ServerConfig>, clients: Arc<Mutex<Vec<ClientCert>>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (acceptor, clients) = (acceptor.clone(), clients.clone());
        conns.spawn(async move {
            if let Err(error) = serve(acceptor, tcp, clients).await {
                tracing::debug!(error = %format!("{error:#}"), "mtls probe connection ended with an error");
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn serve(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    clients: Arc<Mutex<Vec<ClientCert>>>,
) -> Result<()> {
    let tls = acceptor.accept(tcp).await.context("TLS handshake")?;
    let der = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).context("no client certificate")?;
    let client = describe(der.as_ref())?;
    clients.lock().unwrap().push(client.clone());
    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
        let serial = client.serial.clone();
        async move { Ok::<_, std::convert::Infallible>(Response::new(crate::full(serial))) }
    });
    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await?;
    Ok(())
}

fn describe(der: &[u8]) -> Result<ClientCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("parsing the client certificate")?;
    let serial = normalize_serial(&cert.tbs_certificate.raw_serial_as_string());
    let uris = cert
        .subject_alternative_name()?
        .into_iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect();
    Ok(ClientCert { serial, uris })
}
