//! The control plane's API on one port: sidecars' config streams (HTTP/2), `attache status` and `attache canary`
//! (JSON), `/metrics`, `/live`. HTTP/2 keepalive pings find dead sidecars; request bodies are bounded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_config::model::SpiffeId;
use attache_config::wire::{
    CanaryWeights, CertificateRequest, StatusView, CANARY_PATH, CERTIFICATE_PATH, STATUS_PATH, STREAM_PATH,
};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::ca::Ca;
use crate::stream::{self, StreamContext};

/// A keepalive ping goes to every connection this often; one unanswered within the timeout closes it.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// An API client's TLS handshake may take this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest API request body accepted (canary weights, a CSR).
const MAX_API_BODY: usize = 64 * 1024;

type ApiBody = BoxBody<Bytes, Infallible>;

/// Everything a request may need.
#[derive(Clone)]
pub struct Api {
    pub streams: StreamContext,
    pub registry: Arc<Registry>,
    /// The mesh CA and the API's mTLS; `None`: plaintext (development).
    pub ca: Option<Arc<Ca>>,
    /// What the admission webhook (`POST /inject`) injects.
    pub inject: crate::inject::InjectOptions,
}

/// Who called: the verified identity of a client certificate, on an mTLS API.
#[derive(Clone, Debug, Default)]
struct Caller {
    identity: Option<SpiffeId>,
}

/// Serves `tcp` until the task is aborted, which also ends every connection.
pub async fn serve(tcp: TcpListener, api: Api) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, peer)) = tcp.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        connections.spawn(async move {
            match api.ca.clone() {
                None => serve_connection(stream, peer, api, Caller::default()).await,
                Some(ca) => {
                    let accepted =
                        attache_proxy::tls::accept(stream, &ca.server, HANDSHAKE_TIMEOUT, &ca.tls_metrics).await;
                    if let Ok(a) = accepted {
                        serve_connection(a.stream, peer, api, Caller { identity: a.identity }).await;
                    }
                }
            }
        });
    }
}

async fn serve_connection<I>(io: I, peer: SocketAddr, api: Api, caller: Caller)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    {
        {
            let svc = hyper::service::service_fn(move |req| {
                let (api, caller) = (api.clone(), caller.clone());
                async move { Ok::<_, Infallible>(route(req, peer, &api, &caller).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT);
            if let Err(error) = builder.serve_connection(TokioIo::new(io), svc).await {
                tracing::debug!(%peer, %error, "control-plane connection ended");
            }
        }
    }
}

async fn route(req: Request<Incoming>, peer: SocketAddr, api: &Api, caller: &Caller) -> Response<ApiBody> {
    let path = req.uri().path().to_owned();
    let admin_only = path == STATUS_PATH || path.starts_with(CANARY_PATH);
    if let Some(ca) = api.ca.as_ref().filter(|_| admin_only) {
        if !ca.is_admin(caller.identity.as_ref()) {
            return text(StatusCode::FORBIDDEN, "an admin identity's certificate is required\n");
        }
    }
    match (req.method().clone(), path.as_str()) {
        (Method::POST, CERTIFICATE_PATH) => certificate(req, api, caller).await,
        (Method::POST, STREAM_PATH) if api.ca.is_some() && caller.identity.is_none() => {
            text(StatusCode::FORBIDDEN, "the config stream needs a workload certificate\n")
        }
        (Method::POST, STREAM_PATH) if req.version() == Version::HTTP_2 => {
            let verify = api.ca.clone().zip(caller.identity.clone());
            let body = stream::open(req.into_body(), peer, api.streams.clone(), verify);
            let mut rsp = Response::new(body.boxed());
            rsp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/x-ndjson"));
            rsp
        }
        (Method::POST, STREAM_PATH) => text(StatusCode::HTTP_VERSION_NOT_SUPPORTED, "the config stream needs HTTP/2\n"),
        (Method::GET, STATUS_PATH) => {
            let view = StatusView { mesh: api.streams.store.status(), sidecars: api.streams.sidecars.view() };
            json(StatusCode::OK, &view)
        }
        (Method::GET, p) if p.starts_with(CANARY_PATH) => match api.streams.store.canary(&p[CANARY_PATH.len()..]) {
            Some(view) => json(StatusCode::OK, &view),
            None => text(StatusCode::NOT_FOUND, "no such service\n"),
        },
        (Method::PUT, p) if p.starts_with(CANARY_PATH) => {
            let service = p[CANARY_PATH.len()..].to_owned();
            set_canary(req, &service, api).await
        }
        (Method::POST, INJECT_PATH) => admission_review(req, api).await,
        (Method::GET, "/metrics") => metrics(&api.registry),
        (Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The admission webhook's path.
pub const INJECT_PATH: &str = "/inject";
/// An AdmissionReview holds a whole object (Kubernetes caps objects at about 1.5 MiB), twice on updates.
const MAX_REVIEW_BODY: usize = 4 * 1024 * 1024;

async fn admission_review(req: Request<Incoming>, api: &Api) -> Response<ApiBody> {
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("cannot read the body: {e}\n")),
    };
    match crate::inject::webhook::review(&body, &api.inject) {
        Ok(answer) => json(StatusCode::OK, &answer),
        Err(why) => text(StatusCode::BAD_REQUEST, &format!("not an AdmissionReview: {why}\n")),
    }
}

async fn set_canary(req: Request<Incoming>, service: &str, api: &Api) -> Response<ApiBody> {
    let body = match Limited::new(req.into_body(), MAX_API_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("cannot read the body: {e}\n")),
    };
    let weights: CanaryWeights = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid weights: {e}\n")),
    };
    match api.streams.store.set_weights(service, weights.weights) {
        Ok(()) => match api.streams.store.canary(service) {
            Some(view) => json(StatusCode::OK, &view),
            None => text(StatusCode::NOT_FOUND, "no such service\n"),
        },
        Err(error) => {
            let lines: Vec<String> = error.errors.iter().map(ToString::to_string).collect();
            text(StatusCode::UNPROCESSABLE_ENTITY, &format!("{}\n", lines.join("\n")))
        }
    }
}

/// `POST /v1/certificate`: a sidecar's workload certificate, with the bootstrap token or its current certificate.
async fn certificate(req: Request<Incoming>, api: &Api, caller: &Caller) -> Response<ApiBody> {
    let Some(ca) = &api.ca else {
        return text(StatusCode::NOT_FOUND, "this control plane is not a CA (start it with --ca-dir)\n");
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), MAX_API_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("cannot read the body: {e}\n")),
    };
    let request: CertificateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("invalid request: {e}\n")),
    };
    match ca.issue(caller.identity.as_ref(), bearer.as_deref(), &request) {
        Ok(issued) => json(StatusCode::OK, &issued),
        Err((status, why)) => text(status, &format!("{why}\n")),
    }
}

fn metrics(registry: &Registry) -> Response<ApiBody> {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
    }
    let mut rsp = Response::new(Full::new(Bytes::from(out)).boxed());
    let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    rsp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    rsp
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<ApiBody> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut rsp = Response::new(Full::new(Bytes::from(body)).boxed());
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    rsp
}

fn text(status: StatusCode, body: &str) -> Response<ApiBody> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_owned())).boxed());
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    rsp
}
