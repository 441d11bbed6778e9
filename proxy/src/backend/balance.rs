//! P2C over peak-EWMA: pick two random endpoints among those that admit traffic (breaker not open, health check
//! passing, not the one a retry wants to avoid) and send to the one with the lower cost, `rtt_estimate × (pending+1)`.
//! No queue and no task in between: a backend with nothing to pick fails fast.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attache_config::model::BreakerPolicy;
use tokio::time::Instant;

use super::breaker::{Admission, Breaker};
use super::endpoint::Endpoint;

/// New endpoints start at this round-trip estimate; estimates decay towards new samples over `DECAY`.
const DEFAULT_RTT: Duration = Duration::from_millis(30);
const DECAY: Duration = Duration::from_secs(10);
/// Random draws before falling back to a scan when few endpoints are eligible.
const DRAWS: usize = 8;

/// One endpoint and everything the balancer knows about it. Kept across config reloads while the address stays.
#[derive(Debug)]
pub struct EndpointState {
    pub addr: SocketAddr,
    pub client: Endpoint,
    pending: AtomicUsize,
    ewma: Mutex<Ewma>,
    pub breaker: Option<Breaker>,
    /// Cleared by failing active health checks.
    pub healthy: AtomicBool,
}

#[derive(Debug)]
struct Ewma {
    /// Nanoseconds.
    estimate: f64,
    updated: Instant,
}

/// What the balancer picked.
#[derive(Debug)]
pub enum Pick {
    Endpoint(Arc<EndpointState>, Option<Admission>),
    /// The backend has no endpoints at all.
    Empty,
    /// Every endpoint is ejected or unhealthy.
    AllUnavailable,
}

/// Counts a request in flight on an endpoint until dropped (at response headers), then feeds its latency into the
/// estimate.
pub struct InFlight {
    endpoint: Arc<EndpointState>,
    started: Instant,
}

impl EndpointState {
    pub fn new(addr: SocketAddr, client: Endpoint, breaker: Option<BreakerPolicy>) -> Self {
        let ewma = Ewma { estimate: DEFAULT_RTT.as_nanos() as f64, updated: Instant::now() };
        Self {
            addr,
            client,
            pending: AtomicUsize::new(0),
            ewma: Mutex::new(ewma),
            breaker: breaker.map(Breaker::new),
            healthy: AtomicBool::new(true),
        }
    }

    /// Whether the endpoint would take a request now.
    pub fn is_available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.breaker.as_ref().is_none_or(Breaker::is_available)
    }

    fn cost(&self) -> f64 {
        let estimate = self.ewma.lock().map_or(0.0, |e| e.estimate);
        estimate * (self.pending.load(Ordering::Relaxed) + 1) as f64
    }

    /// Peak-sensitive: a slower sample takes over at once, faster ones pull the estimate down gradually.
    fn observe(&self, rtt: Duration) {
        let Ok(mut e) = self.ewma.lock() else { return };
        let now = Instant::now();
        let rtt = rtt.as_nanos() as f64;
        if rtt > e.estimate {
            e.estimate = rtt;
        } else {
            let elapsed = now.saturating_duration_since(e.updated).as_nanos() as f64;
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            e.estimate = e.estimate * w + rtt * (1.0 - w);
        }
        e.updated = now;
    }

    pub fn start(self: &Arc<Self>) -> InFlight {
        self.pending.fetch_add(1, Ordering::Relaxed);
        InFlight { endpoint: self.clone(), started: Instant::now() }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.pending.fetch_sub(1, Ordering::Relaxed);
        self.endpoint.observe(self.started.elapsed());
    }
}

/// Picks an endpoint, avoiding `avoid` unless it is the only one available, and claims breaker admission.
pub fn pick(endpoints: &[Arc<EndpointState>], avoid: Option<SocketAddr>) -> Pick {
    if endpoints.is_empty() {
        return Pick::Empty;
    }
    let mut candidates = two_eligible(endpoints, |e| Some(e.addr) != avoid && e.is_available());
    if candidates.is_empty() && avoid.is_some() {
        candidates = two_eligible(endpoints, |e| e.is_available());
    }
    candidates.sort_by(|a, b| a.cost().total_cmp(&b.cost()));
    // The cheaper first; if its breaker was claimed meanwhile (a racing half-open probe), the other.
    for candidate in candidates {
        match candidate.breaker.as_ref().map(Breaker::admit) {
            None => return Pick::Endpoint(candidate, None),
            Some(Some(admission)) => return Pick::Endpoint(candidate, Some(admission)),
            Some(None) => continue,
        }
    }
    Pick::AllUnavailable
}

/// Up to two distinct eligible endpoints, drawn at random (scanning from a random start when draws miss).
fn two_eligible(
    endpoints: &[Arc<EndpointState>],
    eligible: impl Fn(&EndpointState) -> bool,
) -> Vec<Arc<EndpointState>> {
    let n = endpoints.len();
    let mut found: Vec<usize> = Vec::with_capacity(2);
    for _ in 0..DRAWS.min(2 * n) {
        let i = rand::random_range(0..n);
        if !found.contains(&i) && eligible(&endpoints[i]) {
            found.push(i);
            if found.len() == 2 {
                break;
            }
        }
    }
    if found.len() < 2 {
        let start = rand::random_range(0..n);
        for k in 0..n {
            let i = (start + k) % n;
            if found.len() < 2 && !found.contains(&i) && eligible(&endpoints[i]) {
                found.push(i);
            }
        }
    }
    found.into_iter().map(|i| endpoints[i].clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::endpoint::PoolSettings;
    use attache_config::model::UpstreamProtocol;

    fn ep(port: u16, breaker: Option<BreakerPolicy>) -> Arc<EndpointState> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let pool = PoolSettings { idle_timeout: Duration::from_secs(1), max_idle: 1 };
        let client = Endpoint::new(addr, UpstreamProtocol::Http1, Duration::from_secs(1), pool);
        Arc::new(EndpointState::new(addr, client, breaker))
    }

    fn addr_of(p: Pick) -> Option<u16> {
        match p {
            Pick::Endpoint(e, _) => Some(e.addr.port()),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prefers_the_lower_cost_endpoint() {
        let eps = vec![ep(1, None), ep(2, None)];
        eps[0].observe(Duration::from_millis(200));
        eps[1].observe(Duration::from_millis(1));
        tokio::time::advance(Duration::from_secs(20)).await;
        eps[1].observe(Duration::from_millis(1));
        assert!((0..50).all(|_| addr_of(pick(&eps, None)) == Some(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn pending_requests_raise_the_cost() {
        let eps = vec![ep(1, None), ep(2, None)];
        let _busy: Vec<_> = (0..5).map(|_| eps[0].start()).collect();
        assert!((0..50).all(|_| addr_of(pick(&eps, None)) == Some(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn avoids_the_failed_endpoint_unless_it_is_the_only_one() {
        let eps = vec![ep(1, None), ep(2, None), ep(3, None)];
        let avoid = Some(eps[0].addr);
        assert!((0..100).all(|_| addr_of(pick(&eps, avoid)) != Some(1)));
        let one = vec![ep(1, None)];
        assert_eq!(addr_of(pick(&one, avoid)), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn skips_unhealthy_and_open_endpoints() {
        let policy = BreakerPolicy {
            consecutive_failures: 1,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(10),
        };
        let eps = vec![ep(1, Some(policy)), ep(2, Some(policy)), ep(3, None)];
        let b = eps[0].breaker.as_ref().unwrap();
        let a = b.admit().unwrap();
        b.record(a, false);
        eps[1].healthy.store(false, Ordering::Relaxed);
        assert!((0..50).all(|_| addr_of(pick(&eps, None)) == Some(3)));
        eps[2].healthy.store(false, Ordering::Relaxed);
        assert!(matches!(pick(&eps, None), Pick::AllUnavailable));
        assert!(matches!(pick(&[], None), Pick::Empty));
    }
}
