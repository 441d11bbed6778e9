//! The `RateLimiters` registry: every route's live limiters, kept across reloads and reconciled with each dataplane.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use attache_config::model::{RateLimit as Policy, Route};
use tokio::sync::watch;

use super::limiter::Limiter;
use crate::dataplane::Dataplane;
use crate::metrics::Dir;

/// The live limiters of every route, shared by both pipelines and kept across reloads. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct RateLimiters {
    table: Arc<RwLock<Table>>,
}

/// Routes' limiters: per direction, by service, by route name; newest policy first, at most `GENERATIONS`.
#[derive(Debug, Default)]
struct Table {
    inbound: ByService,
    outbound: ByService,
}

/// Service -> route name -> limiters (newest policy first).
type ByService = HashMap<Arc<str>, HashMap<Arc<str>, Vec<Arc<Limiter>>>>;

/// Limiters kept per route: the current policy and the previous one (requests of the old snapshot in flight).
const GENERATIONS: usize = 2;

impl RateLimiters {
    pub fn new() -> Self {
        Self::default()
    }

    /// The limiter for `route`'s policy, created on first use; `None` when the route has no rate limit.
    pub fn get(&self, direction: Dir, route: &Route) -> Option<Arc<Limiter>> {
        let policy = route.rate_limit.as_ref()?;
        {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let found = table
                .dir(direction)
                .get(&*route.service)
                .and_then(|routes| routes.get(&*route.name))
                .and_then(|gens| gens.iter().find(|l| l.policy() == policy));
            if let Some(limiter) = found {
                return Some(limiter.clone());
            }
        }
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let gens =
            table.dir_mut(direction).entry(route.service.clone()).or_default().entry(route.name.clone()).or_default();
        if let Some(limiter) = gens.iter().find(|l| l.policy() == policy) {
            return Some(limiter.clone());
        }
        let limiter = Arc::new(Limiter::new(policy.clone()));
        gens.insert(0, limiter.clone());
        gens.truncate(GENERATIONS);
        Some(limiter)
    }

    /// Keeps the limiters for which `keep(direction, service, route, policy)` holds.
    pub fn retain(&self, mut keep: impl FnMut(Dir, &str, &str, &Policy) -> bool) {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        for direction in [Dir::Inbound, Dir::Outbound] {
            let services = table.dir_mut(direction);
            services.retain(|service, routes| {
                routes.retain(|name, gens| {
                    gens.retain(|l| keep(direction, service, name, l.policy()));
                    !gens.is_empty()
                });
                !routes.is_empty()
            });
        }
    }

    /// Keeps only the limiters of `plane`'s routes and current policies: outbound, the snapshot's service routes;
    /// inbound, the listeners' app routes. Unchanged policies keep their buckets.
    pub fn reconcile(&self, plane: &Dataplane) {
        let mut live: HashMap<(Dir, &str, &str), &Policy> = HashMap::new();
        let outbound = plane.snapshot.services.iter().flat_map(|s| s.routes.iter()).map(|r| (Dir::Outbound, r));
        let inbound = plane.inbound.values().map(|r| (Dir::Inbound, &r.route));
        for (direction, route) in outbound.chain(inbound) {
            if let Some(policy) = &route.rate_limit {
                live.insert((direction, &route.service, &route.name), policy);
            }
        }
        self.retain(|direction, service, route, policy| live.get(&(direction, service, route)) == Some(&policy));
    }

    /// Reconciles with every dataplane `plane` publishes, until its sender is gone.
    pub fn follow(&self, mut plane: watch::Receiver<Arc<Dataplane>>) -> tokio::task::JoinHandle<()> {
        let limiters = self.clone();
        tokio::spawn(async move {
            while plane.changed().await.is_ok() {
                let current = plane.borrow_and_update().clone();
                limiters.reconcile(&current);
            }
        })
    }

    /// Limiters alive (all routes, all kept policies).
    pub fn len(&self) -> usize {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        [&table.inbound, &table.outbound].iter().flat_map(|d| d.values()).flat_map(|r| r.values()).map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    fn dir(&self, direction: Dir) -> &ByService {
        match direction {
            Dir::Inbound => &self.inbound,
            Dir::Outbound => &self.outbound,
        }
    }

    fn dir_mut(&mut self, direction: Dir) -> &mut ByService {
        match direction {
            Dir::Inbound => &mut self.inbound,
            Dir::Outbound => &mut self.outbound,
        }
    }
}
