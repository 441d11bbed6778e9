//! Which sidecars the control plane knows, and what each runs: the closed loop behind `attache status`.
//!
//! A sidecar is known by (service, instance) from its `hello`. Its entry outlives its stream (it shows as
//! disconnected, with when it was last seen) until the registry is full, when the longest-gone entries go first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use attache_config::wire::{Node, NodeView, SidecarStatus};

/// Entries kept at most (connected ones are never dropped).
pub const MAX_SIDECARS: usize = 100_000;

/// Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Sidecars {
    entries: Arc<Mutex<HashMap<(String, String), Entry>>>,
}

#[derive(Debug)]
struct Entry {
    status: SidecarStatus,
    /// The stream that owns the entry now (a reconnect takes it over from an older one).
    session: u64,
}

/// One sidecar's stream; marks it disconnected when dropped.
#[derive(Debug)]
pub struct Session {
    sidecars: Sidecars,
    key: (String, String),
    id: u64,
}

impl Sidecars {
    /// Records a stream from `node` at `address`.
    pub fn connect(&self, node: &Node, address: SocketAddr) -> Session {
        static IDS: AtomicU64 = AtomicU64::new(1);
        let id = IDS.fetch_add(1, Ordering::Relaxed);
        let key = (node.service.clone(), node.instance.clone());
        let mut entries = self.lock();
        if entries.len() >= MAX_SIDECARS && !entries.contains_key(&key) {
            let oldest = entries.iter().filter(|(_, e)| !e.status.connected).min_by_key(|(_, e)| e.status.last_seen);
            if let Some(k) = oldest.map(|(k, _)| k.clone()) {
                entries.remove(&k);
            }
        }
        let entry =
            entries.entry(key.clone()).or_insert_with(|| Entry { status: SidecarStatus::default(), session: id });
        entry.session = id;
        entry.status.node = NodeView::from(node);
        entry.status.address = address.to_string();
        entry.status.connected = true;
        entry.status.last_seen = now();
        Session { sidecars: self.clone(), key, id }
    }

    /// Every known sidecar, by service and instance.
    pub fn view(&self) -> Vec<SidecarStatus> {
        let mut all: Vec<SidecarStatus> = self.lock().values().map(|e| e.status.clone()).collect();
        all.sort_by(|a, b| a.node.cmp(&b.node));
        all
    }

    pub fn connected(&self) -> usize {
        self.lock().values().filter(|e| e.status.connected).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Session {
    pub fn pushed(&self, version: u64) {
        self.update(|s| s.pushed_version = version);
    }

    pub fn acked(&self, version: u64) {
        self.update(|s| {
            s.acked_version = version;
            if s.pushed_version == version {
                s.nack = None;
            }
        });
    }

    pub fn nacked(&self, version: u64, error: &str) {
        self.update(|s| {
            if s.pushed_version == version {
                s.nack = Some(error.chars().take(4096).collect());
            }
        });
    }

    /// The sidecar said something (a message or a keepalive).
    pub fn seen(&self) {
        self.update(|_| {});
    }

    fn update(&self, f: impl FnOnce(&mut SidecarStatus)) {
        let mut entries = self.sidecars.lock();
        if let Some(entry) = entries.get_mut(&self.key).filter(|e| e.session == self.id) {
            entry.status.last_seen = now();
            f(&mut entry.status);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.update(|s| s.connected = false);
    }
}

fn now() -> u64 {
    attache_proxy::source::unix_now()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(instance: &str) -> Node {
        Node { service: "web".into(), instance: instance.into(), namespace: "default".into() }
    }

    #[test]
    fn a_session_reports_what_its_sidecar_runs_and_a_reconnect_takes_the_entry_over() {
        let sidecars = Sidecars::default();
        let addr: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let first = sidecars.connect(&node("web-1"), addr);
        first.pushed(3);
        first.nacked(3, "bad route");
        let view = sidecars.view();
        assert_eq!((view[0].pushed_version, view[0].acked_version), (3, 0));
        assert_eq!(view[0].nack.as_deref(), Some("bad route"));
        first.pushed(4);
        first.acked(4);
        assert_eq!((sidecars.view()[0].acked_version, sidecars.view()[0].nack.clone()), (4, None));

        let second = sidecars.connect(&node("web-1"), addr);
        drop(first);
        assert!(sidecars.view()[0].connected, "the old stream's end does not disconnect the new one");
        assert_eq!(sidecars.connected(), 1);
        drop(second);
        assert!(!sidecars.view()[0].connected);
        assert_eq!(sidecars.connected(), 0);
    }
}
