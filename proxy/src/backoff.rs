//! Exponential backoff with full jitter (a uniform wait between zero and a doubling, capped ceiling), shared by
//! retries and reconnects so that many clients failing together spread out instead of retrying in step.

use std::time::Duration;

/// The wait before try `attempt` (1 is the first retry): uniform in `[0, min(base × 2^(attempt-1), max)]`.
pub fn full_jitter(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(max).mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_doubling_capped_ceiling() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..40 {
            let ceiling = (base * 2u32.saturating_pow(attempt - 1)).min(max);
            assert!(full_jitter(base, max, attempt) <= ceiling, "attempt {attempt}");
        }
    }
}
