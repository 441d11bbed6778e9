//! The per-endpoint circuit breaker: after N consecutive failures the endpoint is open (the balancer skips it) for
//! a jittered, exponentially growing ejection; then it is half-open and admits exactly one probe, whose result
//! closes it or re-opens it for longer.

use std::sync::Mutex;
use std::time::Duration;

use attache_config::model::BreakerPolicy;
use tokio::time::Instant;

/// Breaker state as exported in metrics: 0 closed, 1 open, 2 half-open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// What `admit` granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A normal request.
    Normal,
    /// The one probe of a half-open endpoint.
    Probe,
}

#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Phase,
    consecutive_failures: u32,
    /// Ejections in a row without a successful probe; the next ejection is `base * 2^ejections`.
    ejections: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Closed,
    Open {
        until: Instant,
    },
    /// The probe is in flight.
    HalfOpen,
}

impl Breaker {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self { policy, inner: Mutex::new(Inner { state: Phase::Closed, consecutive_failures: 0, ejections: 0 }) }
    }

    /// Whether a request may go to this endpoint now; claims the probe of a half-open endpoint.
    pub fn admit(&self) -> Option<Admission> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.state {
            Phase::Closed => Some(Admission::Normal),
            Phase::Open { until } if Instant::now() >= until => {
                inner.state = Phase::HalfOpen;
                Some(Admission::Probe)
            }
            Phase::Open { .. } | Phase::HalfOpen => None,
        }
    }

    /// Whether `admit` would grant a request now, without claiming anything.
    pub fn is_available(&self) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.state {
            Phase::Closed => true,
            Phase::Open { until } => Instant::now() >= until,
            Phase::HalfOpen => false,
        }
    }

    #[cfg(test)]
    pub fn state(&self) -> State {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match inner.state {
            Phase::Closed => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::HalfOpen => State::HalfOpen,
        }
    }

    /// Records the outcome of an admitted request. Returns the new state when it changed.
    pub fn record(&self, admission: Admission, success: bool) -> Option<State> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match (admission, success) {
            (Admission::Probe, true) => {
                *inner = Inner { state: Phase::Closed, consecutive_failures: 0, ejections: 0 };
                Some(State::Closed)
            }
            (Admission::Probe, false) => {
                self.eject(&mut inner);
                Some(State::Open)
            }
            (Admission::Normal, true) => {
                inner.consecutive_failures = 0;
                None
            }
            (Admission::Normal, false) => {
                inner.consecutive_failures += 1;
                let trips = inner.consecutive_failures >= self.policy.consecutive_failures;
                if trips && inner.state == Phase::Closed {
                    self.eject(&mut inner);
                    return Some(State::Open);
                }
                None
            }
        }
    }

    /// The probe was abandoned without an outcome (cancelled): let another request probe.
    pub fn release_probe(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.state == Phase::HalfOpen {
            inner.state = Phase::Open { until: Instant::now() };
        }
    }

    fn eject(&self, inner: &mut Inner) {
        let factor = 1u32.checked_shl(inner.ejections).unwrap_or(u32::MAX);
        let ceiling = self.policy.base_ejection.saturating_mul(factor).min(self.policy.max_ejection);
        // Jitter in [ceiling/2, ceiling], so endpoints ejected together do not all probe at once.
        let jittered = ceiling.mul_f64(0.5 + rand::random::<f64>() * 0.5).max(Duration::from_millis(1));
        inner.state = Phase::Open { until: Instant::now() + jittered };
        inner.ejections = inner.ejections.saturating_add(1);
        inner.consecutive_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(8),
        })
    }

    fn fail(b: &Breaker, n: u32) -> Option<State> {
        let mut last = None;
        for _ in 0..n {
            let a = b.admit().expect("admitted");
            last = b.record(a, false).or(last);
        }
        last
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_consecutive_failures_and_a_success_resets_the_count() {
        let b = breaker();
        assert_eq!(fail(&b, 2), None);
        let a = b.admit().unwrap();
        b.record(a, true);
        assert_eq!(fail(&b, 2), None, "the success reset the count");
        assert_eq!(fail(&b, 1), Some(State::Open));
        assert_eq!(b.admit(), None);
        assert!(!b.is_available());
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_exactly_one_probe_and_success_closes() {
        let b = breaker();
        fail(&b, 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(), Some(Admission::Probe));
        assert_eq!(b.admit(), None, "only one probe");
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.record(Admission::Probe, true), Some(State::Closed));
        assert_eq!(b.admit(), Some(Admission::Normal));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_back_off_exponentially_up_to_the_maximum() {
        let b = breaker();
        fail(&b, 3);
        // Ejections: ~1s, ~2s, ~4s, ~8s, then capped at 8s (each jittered down to at most half).
        for ceiling in [1u64, 2, 4, 8, 8, 8] {
            tokio::time::advance(Duration::from_millis(ceiling * 500 - 1)).await;
            assert_eq!(b.admit(), None, "still open before half the ceiling ({ceiling}s)");
            tokio::time::advance(Duration::from_millis(ceiling * 500 + 1)).await;
            let probe = b.admit();
            assert_eq!(probe, Some(Admission::Probe), "half-open by the ceiling ({ceiling}s)");
            assert_eq!(b.record(Admission::Probe, false), Some(State::Open));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_lets_another_request_probe() {
        let b = breaker();
        fail(&b, 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(), Some(Admission::Probe));
        b.release_probe();
        assert_eq!(b.admit(), Some(Admission::Probe));
    }
}
