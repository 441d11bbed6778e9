//! The control plane's API on one port: sidecars' config streams (HTTP/2), `attache status` and `attache canary`
//! (JSON), `/metrics`, `/live`. HTTP/2 keepalive pings find dead sidecars; request bodies are bounded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_config::wire::{CanaryWeights, StatusView, CANARY_PATH, STATUS_PATH, STREAM_PATH};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::stream::{self, StreamContext};

/// A keepalive ping goes to every connection this often; one unanswered within the timeout closes it.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The largest API request body accepted (canary weights).
const MAX_API_BODY: usize = 64 * 1024;

type ApiBody = BoxBody<Bytes, Infallible>;

/// Everything a request may need.
#[derive(Clone)]
pub struct Api {
    pub streams: StreamContext,
    pub registry: Arc<Registry>,
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
            let svc = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(route(req, peer, &api).await) }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT);
            if let Err(error) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(%peer, %error, "control-plane connection ended");
            }
        });
    }
}

async fn route(req: Request<Incoming>, peer: SocketAddr, api: &Api) -> Response<ApiBody> {
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, STREAM_PATH) if req.version() == Version::HTTP_2 => {
            let body = stream::open(req.into_body(), peer, api.streams.clone());
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
        (Method::GET, "/metrics") => metrics(&api.registry),
        (Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
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
