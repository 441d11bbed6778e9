//! Bounded waiting: poll a condition instead of sleeping, and time-box any future.

use std::{future::Future, panic::Location, time::Duration};

/// How often [`eventually`] re-checks its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A condition result for [`eventually`]: `bool` (done when `true`) or `Option<T>` (done when `Some`).
pub trait Check {
    /// What [`eventually`] returns once the condition holds.
    type Output;
    /// `Some` when the condition holds.
    fn check(self) -> Option<Self::Output>;
}

impl Check for bool {
    type Output = ();
    fn check(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Check for Option<T> {
    type Output = T;
    fn check(self) -> Option<T> {
        self
    }
}

/// Polls `f` every [`POLL_INTERVAL`] until it yields `true`/`Some`, returning the value.
///
/// Panics, naming the caller's location, if the condition does not hold within `timeout`. Works with paused time.
///
/// ```text
/// eventually(Duration::from_secs(5), || async { backend.requests() == 3 }).await;
/// let m = eventually(secs(5), || async { metrics::scrape(addr).await.ok() }).await;
/// ```
#[track_caller]
pub fn eventually<F, Fut, C>(timeout: Duration, mut f: F) -> impl Future<Output = C::Output>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
    C: Check,
{
    let caller = Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(out) = f().await.check() {
                return out;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("eventually: condition at {caller} did not hold within {timeout:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// Awaits `fut`, panicking (naming the caller's location and `what`) if it takes longer than `timeout`.
#[track_caller]
pub fn with_timeout<F: Future>(timeout: Duration, what: &str, fut: F) -> impl Future<Output = F::Output> {
    let caller = Location::caller();
    let what = what.to_owned();
    async move {
        match tokio::time::timeout(timeout, fut).await {
            Ok(out) => out,
            Err(_) => panic!("timed out after {timeout:?} waiting for {what} (at {caller})"),
        }
    }
}

/// Shorthand for `Duration::from_secs`.
pub const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Shorthand for `Duration::from_millis`.
pub const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}
