//! The retry budget: retries may add at most `ratio` of a route's requests, plus a floor of `min_per_second`.
//!
//! Two pools of credit. Each request adds `ratio` to the first, which decays with a 10 s time constant, so credit
//! banked while healthy cannot fund an outage-sized burst later. The floor pool refills at `min_per_second` and holds
//! at most one second's worth. A retry spends one credit, floor first. Over any stretch of T seconds with N requests,
//! retries never exceed `ratio × N + min_per_second × (T + 1)`.

use std::sync::Mutex;
use std::time::Duration;

use attache_config::model::RetryBudget;
use tokio::time::Instant;

/// How fast banked ratio credit fades.
const DECAY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Budget {
    policy: RetryBudget,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    ratio_credit: f64,
    floor_credit: f64,
    updated: Instant,
}

impl Budget {
    pub fn new(policy: RetryBudget) -> Self {
        let floor = f64::from(policy.min_per_second);
        Self { policy, state: Mutex::new(State { ratio_credit: 0.0, floor_credit: floor, updated: Instant::now() }) }
    }

    pub fn policy(&self) -> &RetryBudget {
        &self.policy
    }

    /// A request arrived.
    pub fn deposit(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.advance(&mut s);
        s.ratio_credit += self.policy.ratio;
    }

    /// Spends one retry's worth of credit if there is enough.
    pub fn withdraw(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.advance(&mut s);
        if s.floor_credit >= 1.0 {
            s.floor_credit -= 1.0;
            return true;
        }
        if s.floor_credit + s.ratio_credit >= 1.0 {
            s.ratio_credit -= 1.0 - s.floor_credit;
            s.floor_credit = 0.0;
            return true;
        }
        false
    }

    fn advance(&self, s: &mut State) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(s.updated).as_secs_f64();
        if dt > 0.0 {
            let floor = f64::from(self.policy.min_per_second);
            s.floor_credit = (s.floor_credit + floor * dt).min(floor);
            s.ratio_credit *= (-dt / DECAY.as_secs_f64()).exp();
            s.updated = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> Budget {
        Budget::new(RetryBudget { ratio, min_per_second })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_never_exceed_ratio_times_requests_plus_the_floor() {
        let b = budget(0.2, 10);
        let (mut requests, mut retries) = (0u32, 0u32);
        // 10 simulated seconds, 1000 requests per second, every one of them failing and asking for a retry.
        for _ in 0..10_000 {
            b.deposit();
            requests += 1;
            if b.withdraw() {
                retries += 1;
            }
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let bound = 0.2 * f64::from(requests) + 10.0 * (10.0 + 1.0);
        assert!(f64::from(retries) <= bound, "{retries} retries for {requests} requests; bound {bound}");
        assert!(f64::from(retries) >= 0.2 * f64::from(requests) * 0.9, "the ratio is usable: {retries}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_a_few_retries_per_second_without_traffic() {
        let b = budget(0.2, 10);
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..100).filter(|_| b.withdraw()).count(), 10, "the floor holds one second's worth");
    }

    #[tokio::test(start_paused = true)]
    async fn credit_banked_while_healthy_fades() {
        let b = budget(0.2, 0);
        for _ in 0..1000 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((0..1000).filter(|_| b.withdraw()).count() <= 1, "200 credits decayed over 60 s");
    }
}
