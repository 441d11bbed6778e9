//! HTTP/1.1 Upgrade (WebSocket) pass-through: once the upstream answers 101, both upgraded connections are spliced
//! together as bytes.

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::body::Body;
use crate::drain;
use crate::io::{Activity, Metered};

/// Whether the request asks to switch protocols (`Connection: upgrade` plus an `Upgrade` header).
pub fn is_upgrade<B>(req: &http::Request<B>) -> bool {
    req.headers().contains_key(http::header::UPGRADE)
        && req
            .headers()
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// What an upgraded tunnel inherits from the connection it came from: the idle timeout, a hold on the drain (so
/// shutdown waits for it), and the listener's open-connections gauge.
#[derive(Clone, Debug)]
pub struct Tunnel {
    pub idle: Duration,
    pub drain: drain::Watch,
    pub open: Gauge,
}

/// The downstream side of an upgrade request, if it is one.
pub struct Downstream {
    on_upgrade: OnUpgrade,
    tunnel: Option<Tunnel>,
}

/// Takes the downstream side of an upgrade request, if it is one.
pub fn take(req: &mut http::Request<Body>) -> Option<Downstream> {
    if !is_upgrade(req) {
        return None;
    }
    let on_upgrade = req.extensions_mut().remove::<OnUpgrade>()?;
    let tunnel = req.extensions_mut().remove::<Tunnel>();
    Some(Downstream { on_upgrade, tunnel })
}

/// If the upstream switched protocols, splices the two upgraded connections in a background task.
pub fn splice_if_switching(downstream: Downstream, rsp: &mut http::Response<Body>) {
    if rsp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let upstream = hyper::upgrade::on(&mut *rsp);
    let Downstream { on_upgrade, tunnel } = downstream;
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(on_upgrade, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let idle = tunnel.as_ref().map_or(DEFAULT_IDLE, |t| t.idle);
        let _open = tunnel.as_ref().map(|t| {
            t.open.inc();
            OpenGuard(t.open.clone())
        });
        let activity = Activity::default();
        let down = Metered::new(TokioIo::new(down), Counter::default(), Counter::default(), activity.clone());
        match crate::tcp::splice(down, TokioIo::new(up), idle, activity).await {
            Ok((tx, rx)) => tracing::debug!(tx, rx, "upgraded connection closed"),
            Err(error) => tracing::debug!(%error, "upgraded connection ended"),
        }
        drop(tunnel);
    });
}

/// Without a tunnel context (not expected), upgraded connections still time out.
const DEFAULT_IDLE: Duration = Duration::from_secs(60);

struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
