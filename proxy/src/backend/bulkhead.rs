//! The bulkhead: at most `max_concurrent` requests in flight to a backend and at most `max_pending` waiting for a
//! slot; beyond that a fast 503 instead of a queue without end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use attache_config::model::Bulkhead;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::errors::Overloaded;

#[derive(Debug)]
pub struct Gate {
    policy: Bulkhead,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
}

impl Gate {
    pub fn new(policy: Bulkhead) -> Self {
        let slots = Arc::new(Semaphore::new(policy.max_concurrent.min(Semaphore::MAX_PERMITS)));
        Self { policy, slots, waiting: AtomicUsize::new(0) }
    }

    pub fn is(&self, policy: &Bulkhead) -> bool {
        self.policy == *policy
    }

    /// A slot, at once or after waiting among at most `max_pending` others.
    #[cfg(test)]
    pub async fn enter(&self, backend: &Arc<str>) -> Result<OwnedSemaphorePermit, Overloaded> {
        match self.try_enter() {
            Some(permit) => Ok(permit),
            None => self.wait(backend).await,
        }
    }

    /// A slot if one is free now.
    pub fn try_enter(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// A slot after waiting among at most `max_pending` others (`try_enter` found none free).
    pub async fn wait(&self, backend: &Arc<str>) -> Result<OwnedSemaphorePermit, Overloaded> {
        let overloaded = |what| Overloaded { backend: backend.clone(), what };
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.policy.max_pending {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded("too many requests waiting"));
        }
        let _waiting = Waiting(&self.waiting);
        self.slots.clone().acquire_owned().await.map_err(|_| overloaded("closed"))
    }
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn admits_up_to_the_limit_queues_up_to_pending_then_sheds() {
        let gate = Arc::new(Gate::new(Bulkhead { max_concurrent: 2, max_pending: 1 }));
        let name: Arc<str> = Arc::from("b");
        let a = gate.enter(&name).await.unwrap();
        let _b = gate.enter(&name).await.unwrap();
        let waiter = {
            let (gate, name) = (gate.clone(), name.clone());
            tokio::spawn(async move { gate.enter(&name).await.map(drop) })
        };
        tokio::task::yield_now().await;
        assert!(gate.enter(&name).await.is_err(), "one waiting already: shed");
        drop(a);
        assert!(waiter.await.unwrap().is_ok(), "the waiter got the freed slot");
    }
}
