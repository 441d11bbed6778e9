//! A route resolved against the dataplane it was published in: the running handle of each of its backends, and
//! slots for the metric series and the retry budget its requests use. Without it every request looked up the
//! backend by name and two or three metric families by label set (each a SipHash of several strings), and the
//! budget and the rate limiter in maps under a lock. Built with the dataplane, once per route and reload; the slots
//! fill on a route's first request of each kind, so only the series that saw a request are exported, as before.

use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use attache_config::model::Route;
use prometheus_client::metrics::counter::Counter;

use super::budget::Budget;
use super::ratelimit::RouteLimit;
use crate::backend::BackendHandle;
use crate::metrics::{Dir, LatencyHistogram, STATUS_CLASSES};

pub struct ResolvedRoute {
    pub route: Arc<Route>,
    /// Parallel to `route.backends`; `None` for a backend that is not running (validation keeps that from
    /// happening: every backend a route names exists).
    backends: Box<[Option<BackendHandle>]>,
    /// Per direction, per backend (index + 1; 0 is "no backend chosen": denied, limited, aborted).
    series: [Box<[Series]>; 2],
    /// The route's retry budget, shared across reloads while its policy stays (`retry::Budgets`).
    pub budget: OnceLock<Arc<Budget>>,
    /// `attache_request_attempts_total` of the route.
    pub attempts: OnceLock<Counter>,
    /// Per direction, the route's rate limiter and its decision counters.
    pub rate_limit: [RouteLimit; 2],
}

/// A request's series on one (direction, route, backend).
#[derive(Default)]
pub struct Series {
    requests: [OnceLock<Counter>; STATUS_CLASSES.len()],
    duration: OnceLock<LatencyHistogram>,
}

impl Series {
    /// The request counter of a status class (an index into `STATUS_CLASSES`), created by `make` the first time.
    pub fn requests(&self, class: usize, make: impl FnOnce() -> Counter) -> Option<&Counter> {
        Some(self.requests.get(class)?.get_or_init(make))
    }

    pub fn duration(&self, make: impl FnOnce() -> LatencyHistogram) -> &LatencyHistogram {
        self.duration.get_or_init(make)
    }
}

impl ResolvedRoute {
    /// `route` with its backends looked up by `backend`.
    pub fn new<'a>(route: Arc<Route>, backend: impl Fn(&str) -> Option<&'a BackendHandle>) -> Self {
        let backends: Box<[_]> = route.backends.iter().map(|b| backend(&b.name).cloned()).collect();
        let series = || (0..=backends.len()).map(|_| Series::default()).collect();
        Self {
            series: [series(), series()],
            backends,
            route,
            budget: OnceLock::new(),
            attempts: OnceLock::new(),
            rate_limit: Default::default(),
        }
    }

    /// The running backend at `index` of `route.backends`.
    pub fn backend(&self, index: usize) -> Option<&BackendHandle> {
        self.backends.get(index)?.as_ref()
    }

    /// The name of the backend at `index` of `route.backends`.
    pub fn backend_name(&self, index: usize) -> Option<&Arc<str>> {
        self.route.backends.get(index).map(|b| &b.name)
    }

    /// The series of requests in `direction` that went to the backend at `backend` (`None`: none was chosen).
    pub fn series(&self, direction: Dir, backend: Option<usize>) -> Option<&Series> {
        let slot = match backend {
            Some(i) => i.checked_add(1)?,
            None => 0,
        };
        self.series[direction as usize].get(slot)
    }
}

impl std::fmt::Debug for ResolvedRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedRoute").field("service", &self.route.service).field("route", &self.route.name).finish()
    }
}

impl Deref for ResolvedRoute {
    type Target = Route;

    fn deref(&self) -> &Route {
        &self.route
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use attache_config::model::WeightedBackend;

    fn route(backends: &[&str]) -> Arc<Route> {
        let backends = backends.iter().map(|n| WeightedBackend { name: Arc::from(*n), weight: 1 }).collect();
        Arc::new(Route { backends, ..super::super::route::test_route() })
    }

    #[test]
    fn series_are_per_direction_and_backend_and_fill_once() {
        let r = ResolvedRoute::new(route(&["a", "b"]), |_| None);
        let (a, b) = (r.series(Dir::Outbound, Some(0)).unwrap(), r.series(Dir::Outbound, Some(1)).unwrap());
        a.requests(1, Counter::default).unwrap().inc();
        // The slot keeps the first counter: a second `make` is not called.
        assert_eq!(a.requests(1, || panic!("made twice")).unwrap().get(), 1);
        assert_eq!(b.requests(1, Counter::default).unwrap().get(), 0);
        let inbound = r.series(Dir::Inbound, Some(0)).unwrap();
        assert_eq!(inbound.requests(1, Counter::default).unwrap().get(), 0);
        assert!(r.series(Dir::Outbound, None).is_some(), "no backend chosen has its own slot");
        assert!(r.series(Dir::Outbound, Some(2)).is_none(), "past the route's backends");
        assert!(a.requests(STATUS_CLASSES.len(), Counter::default).is_none());
        assert_eq!(r.backend_name(1).map(|n| &**n), Some("b"));
        assert!(r.backend(0).is_none());
    }
}
