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
/// A failed attempt counts as at least this slow.
const FAILURE_PENALTY: Duration = Duration::from_millis(250);
/// Two costs within this factor of each other count as equal.
const TIE: f64 = 1.25;
/// One pick in this many ignores cost.
const EXPLORE: u32 = 16;
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
    /// No response measured yet.
    unsampled: bool,
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
    done: bool,
}

impl EndpointState {
    pub fn new(addr: SocketAddr, client: Endpoint, breaker: Option<BreakerPolicy>) -> Self {
        let ewma = Ewma { estimate: DEFAULT_RTT.as_nanos() as f64, updated: Instant::now(), unsampled: true };
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

    /// `rtt_estimate × (pending + 1)`. The estimate decays towards zero while an endpoint gets no responses, so an
    /// endpoint left aside (a slow one, or one that recovered) is tried again. An endpoint never measured costs
    /// `DEFAULT_RTT × pending`: free while idle, so it is tried once, but not a magnet for a burst.
    fn cost(&self) -> f64 {
        let pending = self.pending.load(Ordering::Relaxed) as f64;
        let Ok(e) = self.ewma.lock() else { return f64::MAX };
        if e.unsampled {
            return e.estimate * pending;
        }
        let elapsed = Instant::now().saturating_duration_since(e.updated).as_nanos() as f64;
        e.estimate * (-elapsed / DECAY.as_nanos() as f64).exp() * (pending + 1.0)
    }

    /// Peak-sensitive: a slower sample takes over at once, faster ones pull the estimate down gradually.
    fn observe(&self, rtt: Duration, now: Instant) {
        let Ok(mut e) = self.ewma.lock() else { return };
        let rtt = rtt.as_nanos() as f64;
        if e.unsampled {
            e.unsampled = false;
            e.estimate = rtt;
        } else if rtt > e.estimate {
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
        InFlight { endpoint: self.clone(), started: Instant::now(), done: false }
    }
}

impl InFlight {
    /// The attempt's outcome is known. A failure is measured as at least FAILURE_PENALTY, so an endpoint that fails
    /// fast (connection refused in microseconds) does not look like the fastest one.
    pub fn finish(mut self, success: bool) {
        self.record(|elapsed| if success { elapsed } else { elapsed.max(FAILURE_PENALTY) });
    }

    /// Feeds `rtt` of the time since the start into the estimate, once (one clock read for both).
    fn record(&mut self, rtt: impl FnOnce(Duration) -> Duration) {
        if !self.done {
            self.done = true;
            self.endpoint.pending.fetch_sub(1, Ordering::Relaxed);
            let now = Instant::now();
            self.endpoint.observe(rtt(now.saturating_duration_since(self.started)), now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Abandoned (cancelled, timed out above): what it took so far. (Finished: recorded already.)
        self.record(|elapsed| elapsed);
    }
}

/// Picks an endpoint, avoiding `avoid` unless it is the only one available, and claims breaker admission.
pub fn pick(endpoints: &[Arc<EndpointState>], avoid: Option<SocketAddr>) -> Pick {
    if endpoints.is_empty() {
        return Pick::Empty;
    }
    let mut two = two_eligible(endpoints, |e| Some(e.addr) != avoid && e.is_available());
    if two.len == 0 && avoid.is_some() {
        two = two_eligible(endpoints, |e| e.is_available());
    }
    // On the stack: this runs for every request.
    let mut costed = [(0.0, 0); 2];
    // A lone candidate (one endpoint: every inbound app) is chosen without weighing it.
    let weigh = two.len == 2;
    for (slot, &i) in costed.iter_mut().zip(two.indices()) {
        *slot = (if weigh { endpoints[i].cost() } else { 0.0 }, i);
    }
    let costed = &mut costed[..two.len];
    costed.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Costs within TIE of each other are noise (a few microseconds of estimate): choose at random between them, or
    // one of two equal endpoints would take all of a low-concurrency load. And one pick in EXPLORE ignores cost, so
    // an estimate that only a cold first request set (connection setup included) is measured again; a really slow
    // endpoint stays expensive, since a slower sample takes over the estimate at once.
    if let [(low, _), (high, _)] = costed {
        let tie = *high <= *low * TIE;
        let explore = rand::random_range(0..EXPLORE) == 0;
        if (tie || explore) && rand::random::<bool>() {
            costed.swap(0, 1);
        }
    }
    // The cheaper first; if its breaker was claimed meanwhile (a racing half-open probe), the other.
    for &(_, i) in costed.iter() {
        let candidate = &endpoints[i];
        match candidate.breaker.as_ref().map(Breaker::admit) {
            None => return Pick::Endpoint(candidate.clone(), None),
            Some(Some(admission)) => return Pick::Endpoint(candidate.clone(), Some(admission)),
            Some(None) => continue,
        }
    }
    Pick::AllUnavailable
}

/// Up to two distinct endpoint indices.
#[derive(Default)]
struct Two {
    found: [usize; 2],
    len: usize,
}

impl Two {
    fn indices(&self) -> &[usize] {
        &self.found[..self.len]
    }

    /// Adds `i` unless already there; `true` once two are found.
    fn add(&mut self, i: usize) -> bool {
        if self.len < 2 && !self.indices().contains(&i) {
            self.found[self.len] = i;
            self.len += 1;
        }
        self.len == 2
    }
}

/// Up to two distinct eligible endpoints, drawn at random (scanning from a random start when draws miss).
fn two_eligible(endpoints: &[Arc<EndpointState>], eligible: impl Fn(&EndpointState) -> bool) -> Two {
    let n = endpoints.len();
    let mut two = Two::default();
    for _ in 0..DRAWS.min(2 * n) {
        let i = rand::random_range(0..n);
        if !two.indices().contains(&i) && eligible(&endpoints[i]) && two.add(i) {
            return two;
        }
    }
    let start = rand::random_range(0..n);
    for k in 0..n {
        let i = (start + k) % n;
        if !two.indices().contains(&i) && eligible(&endpoints[i]) && two.add(i) {
            break;
        }
    }
    two
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::endpoint::{Connector, PoolSettings};
    use attache_config::model::UpstreamProtocol;

    fn ep(port: u16, breaker: Option<BreakerPolicy>) -> Arc<EndpointState> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let pool = PoolSettings { idle_timeout: Duration::from_secs(1), max_idle: 1 };
        let connector = Connector::new(addr, Duration::from_secs(1), None, Default::default());
        let client = Endpoint::new(UpstreamProtocol::Http1, pool, connector);
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
        eps[0].observe(Duration::from_millis(200), Instant::now());
        eps[1].observe(Duration::from_millis(1), Instant::now());
        tokio::time::advance(Duration::from_secs(20)).await;
        eps[1].observe(Duration::from_millis(1), Instant::now());
        let twos = (0..1000).filter(|_| addr_of(pick(&eps, None)) == Some(2)).count();
        assert!(twos >= 940, "the cheaper endpoint won {twos} of 1000 (exploration takes about 1 in 32)");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unmeasured_endpoint_is_tried_and_an_idle_one_comes_back() {
        let eps = vec![ep(1, None), ep(2, None)];
        eps[0].observe(Duration::from_millis(1), Instant::now());
        let twos = (0..1000).filter(|_| addr_of(pick(&eps, None)) == Some(2)).count();
        assert!(twos >= 940, "never measured: tried first ({twos} of 1000)");
        eps[1].observe(Duration::from_millis(50), Instant::now());
        assert!((0..1000).filter(|_| addr_of(pick(&eps, None)) == Some(1)).count() >= 940);
        // Endpoint 1 keeps answering in 1 ms; endpoint 2's estimate decays while it gets nothing.
        let mut picked_two = false;
        for _ in 0..100 {
            tokio::time::advance(Duration::from_secs(1)).await;
            eps[0].observe(Duration::from_millis(1), Instant::now());
            picked_two |= addr_of(pick(&eps, None)) == Some(2);
        }
        assert!(picked_two, "the idle endpoint was never tried again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_endpoint_does_not_attract_a_burst() {
        let eps = vec![ep(1, None), ep(2, None)];
        eps[0].observe(Duration::from_millis(5), Instant::now());
        // Idle and never measured, it is the cheapest (exploration aside: take the first pick that lands on it).
        let first = (0..100)
            .find_map(|_| match pick(&eps, None) {
                Pick::Endpoint(e, _) if e.addr.port() == 2 => Some(e),
                _ => None,
            })
            .expect("the unmeasured endpoint is picked");
        let _in_flight = first.start();
        // One request in flight on the unmeasured endpoint: it now costs the default RTT (30 ms) > 5 ms.
        let ones = (0..1000).filter(|_| addr_of(pick(&eps, None)) == Some(1)).count();
        assert!(ones >= 940, "the measured endpoint won {ones} of 1000");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fast_failure_does_not_make_an_endpoint_look_fast() {
        let eps = vec![ep(1, None), ep(2, None)];
        eps[0].observe(Duration::from_millis(5), Instant::now());
        eps[1].start().finish(false);
        let ones = (0..1000).filter(|_| addr_of(pick(&eps, None)) == Some(1)).count();
        assert!(ones >= 940, "the healthy endpoint won {ones} of 1000");
    }

    #[tokio::test(start_paused = true)]
    async fn pending_requests_raise_the_cost() {
        let eps = vec![ep(1, None), ep(2, None)];
        let _busy: Vec<_> = (0..5).map(|_| eps[0].start()).collect();
        let twos = (0..1000).filter(|_| addr_of(pick(&eps, None)) == Some(2)).count();
        assert!(twos >= 940, "the idle endpoint won {twos} of 1000");
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
