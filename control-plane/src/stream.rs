//! One sidecar's config stream: `hello`, then the configuration of its service now and at every new version,
//! each answered with `ack` or `nack`. What a stream holds is bounded: the latest version only (versions published
//! while a slow sidecar reads are skipped to the newest), at most two messages queued, one message at most
//! [`MAX_MESSAGE_BYTES`] in from the sidecar.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use attache_config::wire::{ControlMessage, Node, SidecarMessage, MAX_MESSAGE_BYTES};
use attache_proxy::wire::{line_channel, LineBody, LineReader, LineSender};
use hyper::body::Incoming;

use attache_config::model::SpiffeId;

use crate::ca::Ca;
use crate::metrics::{CpMetrics, ResultLabels};
use crate::registry::{Session, Sidecars};
use crate::source::{Published, Store};

/// A sidecar must say who it is this soon after opening its stream.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest service, instance or namespace name accepted.
const MAX_NAME: usize = 253;

/// What every stream shares.
#[derive(Clone)]
pub struct StreamContext {
    pub store: Store,
    pub sidecars: Sidecars,
    pub metrics: CpMetrics,
}

/// The push in flight: what the sidecar was sent and has not answered yet.
struct Pending {
    version: u64,
    nonce: String,
    published: tokio::time::Instant,
}

/// Starts serving a stream whose request body is `body`; returns the response body the messages go out on. With
/// `verify` (the CA and the caller's certificate identity), the sidecar must be who its certificate says.
pub fn open(body: Incoming, peer: SocketAddr, ctx: StreamContext, verify: Option<(Arc<Ca>, SpiffeId)>) -> LineBody {
    let (tx, out) = line_channel(2);
    tokio::spawn(async move {
        let reader = LineReader::new(body, MAX_MESSAGE_BYTES);
        if let Err(why) = serve(reader, &tx, peer, &ctx, verify).await {
            tracing::debug!(%peer, why, "config stream ended");
        }
    });
    out
}

async fn serve(
    mut reader: LineReader<Incoming>,
    tx: &LineSender,
    peer: SocketAddr,
    ctx: &StreamContext,
    verify: Option<(Arc<Ca>, SpiffeId)>,
) -> Result<(), &'static str> {
    let node = match tokio::time::timeout(HELLO_TIMEOUT, reader.next::<SidecarMessage>()).await {
        Ok(Ok(Some(SidecarMessage::Hello { node, .. }))) => node,
        Ok(Ok(Some(_))) => return Err("the first message was not hello"),
        Ok(Ok(None)) => return Err("closed before hello"),
        Ok(Err(_)) => return Err("unreadable hello"),
        Err(_) => return Err("no hello in time"),
    };
    if let Err(why) = check_node(&node) {
        let _ = tx.send(&ControlMessage::Unknown { version: 0, error: why.to_owned() }).await;
        return Err(why);
    }
    if let Some((ca, caller)) = verify {
        if ca.identity_of(&node).ok().as_ref() != Some(&caller) {
            let error = format!(
                "this stream's certificate is {caller}, which is not the identity of {}/{}",
                node.namespace, node.service
            );
            let _ = tx.send(&ControlMessage::Unknown { version: 0, error }).await;
            return Err("the hello does not match the certificate");
        }
    }
    tracing::info!(%peer, service = %node.service, instance = %node.instance, "sidecar connected");
    let session = ctx.sidecars.connect(&node, peer);
    let connected_at = tokio::time::Instant::now();
    ctx.metrics.connected.inc();
    let _connected = Connected(ctx.metrics.clone());
    let mut published = ctx.store.subscribe();
    let mut sent = None;
    let mut pending = None;
    loop {
        let current = published.borrow_and_update().clone();
        if sent != Some(current.version) {
            sent = Some(current.version);
            // Propagation is measured from the publish, or from the connect for a sidecar that came later.
            let since = current.at.max(connected_at);
            pending = push(tx, &node, &current, since, &session, &ctx.metrics).await?;
        }
        tokio::select! {
            changed = published.changed() => changed.map_err(|_| "the control plane is stopping")?,
            message = reader.next::<SidecarMessage>() => {
                let message = message.map_err(|_| "unreadable message")?.ok_or("the sidecar closed the stream")?;
                answered(message, &mut pending, &session, &ctx.metrics)?;
            }
            () = tx.closed() => return Err("the sidecar is gone"),
        }
    }
}

/// Sends `current`'s configuration for `node`'s service (or says there is none).
async fn push(
    tx: &LineSender,
    node: &Node,
    current: &Arc<Published>,
    since: tokio::time::Instant,
    session: &Session,
    metrics: &CpMetrics,
) -> Result<Option<Pending>, &'static str> {
    let version = current.version;
    let Some(config) = current.mesh.sidecars.get(&node.service) else {
        let error = format!("the mesh (version {version}) has no sidecar for service `{}`", node.service);
        session.pushed(version);
        session.nacked(version, &error);
        tx.send(&ControlMessage::Unknown { version, error }).await.map_err(|_| "the sidecar is gone")?;
        return Ok(None);
    };
    let nonce = format!("{:016x}", rand::random::<u64>());
    let message = ControlMessage::Config {
        version,
        nonce: nonce.clone(),
        hash: current.mesh.hash,
        config: Box::new((**config).clone()),
    };
    if tx.send(&message).await.is_err() {
        metrics.pushes.get_or_create(&ResultLabels { result: "failed" }).inc();
        return Err("the sidecar is gone");
    }
    metrics.pushes.get_or_create(&ResultLabels { result: "sent" }).inc();
    session.pushed(version);
    Ok(Some(Pending { version, nonce, published: since }))
}

/// Records an answer to the push in flight; answers to older pushes only refresh `last_seen`.
fn answered(
    message: SidecarMessage,
    pending: &mut Option<Pending>,
    session: &Session,
    metrics: &CpMetrics,
) -> Result<(), &'static str> {
    session.seen();
    let (version, nonce, error) = match message {
        SidecarMessage::Ack { version, nonce } => (version, nonce, None),
        SidecarMessage::Nack { version, nonce, error } => (version, nonce, Some(error)),
        SidecarMessage::Hello { .. } => return Err("a second hello"),
    };
    let Some(p) = pending.take_if(|p| p.version == version && p.nonce == nonce) else { return Ok(()) };
    match error {
        None => {
            session.acked(version);
            metrics.answers.get_or_create(&ResultLabels { result: "ack" }).inc();
            metrics.publish_to_ack.observe(p.published.elapsed().as_secs_f64());
        }
        Some(error) => {
            tracing::warn!(version, %error, "a sidecar refused the configuration");
            session.nacked(version, &error);
            metrics.answers.get_or_create(&ResultLabels { result: "nack" }).inc();
        }
    }
    Ok(())
}

fn check_node(node: &Node) -> Result<(), &'static str> {
    let ok = |s: &str, empty_ok: bool| {
        (empty_ok || !s.is_empty()) && s.len() <= MAX_NAME && !s.chars().any(char::is_control)
    };
    if ok(&node.service, false) && ok(&node.instance, false) && ok(&node.namespace, true) {
        Ok(())
    } else {
        Err("service and instance must be 1 to 253 printable characters")
    }
}

/// Counts a stream as connected while it lives.
struct Connected(CpMetrics);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected.dec();
    }
}
