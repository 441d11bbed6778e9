//! The GCRA limiter of one route's policy: keyed buckets, bounded by sampled eviction, and the wait queue.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use attache_config::model::{RateLimit as Policy, RateLimitKey};
use http::Request;
use tokio::time::Instant;

use super::RateLimited;
use crate::http::meta::Downstream;

/// One route's limiter for one policy: its buckets and its queue depth.
#[derive(Debug)]
pub struct Limiter {
    policy: Policy,
    /// Nanoseconds between tokens; at least 1.
    interval: u64,
    /// `burst * interval`: how far ahead of now a bucket's TAT may run.
    tolerance: u64,
    max_keys: usize,
    max_wait: u64,
    /// Keys buckets by a hash that clients cannot predict.
    hasher: RandomState,
    /// Bucket times are nanoseconds since this instant.
    epoch: Instant,
    buckets: Mutex<Buckets>,
    /// Requests waiting for a token.
    waiting: AtomicUsize,
}

/// What a limiter decided for one request.
#[derive(Debug)]
pub enum Decision {
    Allowed,
    /// Admitted at `until`; the request holds `QueuePlace` while it waits.
    Queued {
        until: Instant,
        place: QueuePlace,
    },
    Limited(RateLimited),
}

/// A place in a limiter's wait queue; freed when dropped.
#[derive(Debug)]
pub struct QueuePlace(Arc<Limiter>);

/// Buckets by key hash; `slots` makes random sampling for eviction O(1).
#[derive(Debug, Default)]
struct Buckets {
    index: HashMap<u64, usize>,
    slots: Vec<Bucket>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    key: u64,
    /// Theoretical arrival time, nanoseconds since the limiter's epoch. `<= now` means full.
    tat: u64,
}

/// Buckets sampled to choose an eviction.
const EVICTION_SAMPLE: usize = 8;

impl Limiter {
    pub fn new(policy: Policy) -> Self {
        let interval = (1_000_000_000 / u64::from(policy.per_second.max(1))).max(1);
        let tolerance = interval.saturating_mul(u64::from(policy.burst.max(1)));
        let max_wait = policy.queue.map_or(0, |q| nanos(q.max_wait));
        Self {
            interval,
            tolerance,
            max_keys: policy.max_keys.max(1),
            max_wait,
            hasher: RandomState::new(),
            epoch: Instant::now(),
            buckets: Mutex::new(Buckets::default()),
            waiting: AtomicUsize::new(0),
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Takes a token for `req`'s key, reserves a later one (`Queued`), or refuses.
    pub fn acquire<B>(self: &Arc<Self>, req: &Request<B>) -> Decision {
        self.acquire_key(self.key_of(req))
    }

    /// Buckets currently kept.
    pub fn keys(&self) -> usize {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner).slots.len()
    }

    /// Requests currently waiting for a token.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    fn key_of<B>(&self, req: &Request<B>) -> u64 {
        let mut h = self.hasher.build_hasher();
        match &self.policy.key {
            RateLimitKey::Global => 0u8.hash(&mut h),
            // The verified mTLS identity; every unauthenticated caller shares one bucket.
            RateLimitKey::PeerIdentity => match Downstream::of(req).and_then(|d| d.conn.identity.as_ref()) {
                Some(id) => (6u8, id.as_str()).hash(&mut h),
                None => 1u8.hash(&mut h),
            },
            RateLimitKey::ClientIp => match Downstream::of(req) {
                Some(d) => (2u8, d.conn.addr.ip().to_canonical()).hash(&mut h),
                None => 3u8.hash(&mut h),
            },
            RateLimitKey::Header(name) => match req.headers().get(name) {
                Some(value) => (4u8, value.as_bytes()).hash(&mut h),
                None => 5u8.hash(&mut h),
            },
        }
        h.finish()
    }

    fn acquire_key(self: &Arc<Self>, key: u64) -> Decision {
        let now = nanos(Instant::now().saturating_duration_since(self.epoch));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = buckets.get_or_insert(key, self.max_keys);
        let tat = slot.tat.max(now);
        let next = tat.saturating_add(self.interval);
        let admit_until = now.saturating_add(self.tolerance);
        if next <= admit_until {
            slot.tat = next;
            return Decision::Allowed;
        }
        let wait = next - admit_until;
        if let Some(queue) = &self.policy.queue {
            if wait <= self.max_wait && self.enter_queue(queue.max_depth) {
                slot.tat = next;
                drop(buckets);
                let until = self.epoch + Duration::from_nanos(now.saturating_add(wait));
                return Decision::Queued { until, place: QueuePlace(self.clone()) };
            }
        }
        Decision::Limited(RateLimited {
            retry_after: Duration::from_nanos(wait),
            limit: self.policy.burst,
            remaining: 0,
            reset: Duration::from_nanos(tat - now),
        })
    }

    fn enter_queue(&self, max_depth: usize) -> bool {
        self.waiting.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max_depth).then_some(n + 1)).is_ok()
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Buckets {
    /// `key`'s bucket; a new key gets a full bucket, evicting one when `max_keys` are kept.
    fn get_or_insert(&mut self, key: u64, max_keys: usize) -> &mut Bucket {
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                if self.slots.len() >= max_keys {
                    self.evict();
                }
                self.slots.push(Bucket { key, tat: 0 });
                self.index.insert(key, self.slots.len() - 1);
                self.slots.len() - 1
            }
        };
        &mut self.slots[i]
    }

    /// Drops the fullest of a few sampled buckets (smallest TAT).
    fn evict(&mut self) {
        let len = self.slots.len();
        if len == 0 {
            return;
        }
        let victim = if len <= EVICTION_SAMPLE {
            (0..len).min_by_key(|&i| self.slots[i].tat)
        } else {
            (0..EVICTION_SAMPLE).map(|_| rand::random_range(0..len)).min_by_key(|&i| self.slots[i].tat)
        };
        let Some(victim) = victim else { return };
        let removed = self.slots.swap_remove(victim);
        self.index.remove(&removed.key);
        if let Some(moved) = self.slots.get(victim) {
            self.index.insert(moved.key, victim);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
