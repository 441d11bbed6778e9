//! HTTP/1.1 Upgrade (WebSocket) pass-through: once the upstream answers 101, both upgraded connections are spliced
//! together as bytes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::Body;

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

/// Takes the downstream side of an upgrade request, if it is one.
pub fn take(req: &mut http::Request<Body>) -> Option<OnUpgrade> {
    if !is_upgrade(req) {
        return None;
    }
    req.extensions_mut().remove::<OnUpgrade>()
}

/// If the upstream switched protocols, splices the two upgraded connections in a background task.
pub fn splice_if_switching(downstream: OnUpgrade, rsp: &mut http::Response<Body>) {
    if rsp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let upstream = hyper::upgrade::on(&mut *rsp);
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::debug!(%error, "upgrade failed");
                return;
            }
        };
        let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
        match tokio::io::copy_bidirectional(&mut down, &mut up).await {
            Ok((tx, rx)) => tracing::debug!(tx, rx, "upgraded connection closed"),
            Err(error) => tracing::debug!(%error, "upgraded connection failed"),
        }
    });
}
