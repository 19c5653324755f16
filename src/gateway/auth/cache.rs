//! The bounded caches of authentication (API keys, verified JWTs): least recently used entry
//! evicted first, in O(1); every entry has a deadline after which it is gone (a fixed TTL from
//! insertion, or a deadline of its own, such as a token's expiry). A lookup that raced with
//! an invalidation must not put back what was invalidated: `stamp` before the slow check,
//! `insert_since` after it, and the insert is dropped if any removal happened in between.

use std::time::{Duration, Instant};

use hashlink::LruCache;
use parking_lot::Mutex;

pub(crate) struct TtlLru<V> {
    inner: Mutex<LruInner<V>>,
    ttl: Duration,
}

struct LruInner<V> {
    /// The value and its deadline.
    map: LruCache<String, (V, Instant)>,
    removals: u64,
}

impl<V: Clone> TtlLru<V> {
    /// At most `entries` entries (at least one), each kept at most `ttl`; a zero `ttl`
    /// caches nothing.
    pub(crate) fn new(entries: usize, ttl: Duration) -> Self {
        Self {
            inner: Mutex::new(LruInner {
                map: LruCache::new(entries.max(1)),
                removals: 0,
            }),
            ttl,
        }
    }

    pub(crate) fn get(&self, k: &str) -> Option<V> {
        let mut g = self.inner.lock();
        match g.map.get(k) {
            Some((v, deadline)) if Instant::now() < *deadline => Some(v.clone()),
            Some(_) => {
                g.map.remove(k);
                None
            }
            None => None,
        }
    }

    pub(crate) fn stamp(&self) -> u64 {
        self.inner.lock().removals
    }

    /// Keeps `v` for the cache's TTL, unless something was removed since `stamp`.
    pub(crate) fn insert_since(&self, stamp: u64, k: String, v: V) {
        self.insert_until(stamp, k, v, Instant::now() + self.ttl);
    }

    /// Keeps `v` until `deadline` at the latest (never past the cache's TTL), unless
    /// something was removed since `stamp`.
    pub(crate) fn insert_until(&self, stamp: u64, k: String, v: V, deadline: Instant) {
        let deadline = deadline.min(Instant::now() + self.ttl);
        let mut g = self.inner.lock();
        if g.removals == stamp && !self.ttl.is_zero() {
            g.map.insert(k, (v, deadline));
        }
    }

    pub(crate) fn remove(&self, k: &str) {
        let mut g = self.inner.lock();
        g.removals += 1;
        g.map.remove(k);
    }

    pub(crate) fn clear(&self) {
        let mut g = self.inner.lock();
        g.removals += 1;
        g.map.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map.len()
    }
}
