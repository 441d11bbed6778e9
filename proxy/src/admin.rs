//! The admin listener: `/live`, `/ready`, `/metrics` (OpenMetrics text) and `/config` (the effective config with
//! its version and the last reload result). Loopback by default.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::body::Body;
use crate::source::ConfigStatus;

#[derive(Clone)]
pub struct Admin {
    pub registry: Arc<Registry>,
    pub status: ConfigStatus,
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    pub async fn serve(self, tcp: TcpListener) {
        loop {
            let Ok((stream, _)) = tcp.accept().await else { continue };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.respond(&req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Body> {
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n"),
            "/ready" if self.ready.load(Ordering::SeqCst) => text(StatusCode::OK, "ready\n"),
            "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
            "/metrics" => self.metrics(),
            "/config" => self.config(),
            _ => text(StatusCode::NOT_FOUND, "not found: try /live, /ready, /metrics, /config\n"),
        }
    }

    fn metrics(&self) -> Response<Body> {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            return text(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding metrics failed: {e}\n"));
        }
        let mut rsp = Response::new(Body::full(out));
        rsp.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        rsp
    }

    fn config(&self) -> Response<Body> {
        let view = self.status.view();
        let body = serde_json::json!({
            "version": view.version,
            "hash": view.hash,
            "source": view.source,
            "last_reload": view.last_reload,
            "config": self.status.serving_config(),
        });
        let mut rsp = Response::new(Body::full(format!("{body:#}\n")));
        rsp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        rsp
    }
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut rsp = Response::new(Body::full(body.to_owned()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    rsp
}
