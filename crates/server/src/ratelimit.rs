//! Per-user send rate limit: a token bucket per user on this node.
//!
//! The bucket math is a pure function of time so it can be unit tested; the
//! [`RateLimiter`] only keeps one bucket per user behind a lock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    pub fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            updated: now,
        }
    }

    /// Refills at `rate` per second up to `burst`, then takes one token if
    /// there is one. Returns whether the send may go ahead.
    pub fn try_take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: f64, burst: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.updated).as_secs_f64() * rate >= burst
    }
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: rate.max(0.0),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `user` may send now (and counts the send if so).
    pub fn allow(&self, user: &str) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        // Full buckets carry no information: drop them now and then so the
        // map does not grow with every user ever seen.
        if buckets.len() > 10_000 {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| !b.is_full(rate, burst, now));
        }
        match buckets.get_mut(user) {
            Some(bucket) => bucket.try_take(self.rate, self.burst, now),
            None => {
                let mut bucket = Bucket::full(self.burst, now);
                let ok = bucket.try_take(self.rate, self.burst, now);
                buckets.insert(user.to_string(), bucket);
                ok
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3.0, t0);
        assert!(b.try_take(1.0, 3.0, t0));
        assert!(b.try_take(1.0, 3.0, t0));
        assert!(b.try_take(1.0, 3.0, t0));
        assert!(!b.try_take(1.0, 3.0, t0));
        assert!(!b.try_take(1.0, 3.0, t0 + Duration::from_millis(500)));
        assert!(b.try_take(1.0, 3.0, t0 + Duration::from_millis(1000)));
        // Long idle refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        for _ in 0..3 {
            assert!(b.try_take(1.0, 3.0, later));
        }
        assert!(!b.try_take(1.0, 3.0, later));
    }

    #[test]
    fn users_are_independent() {
        let l = RateLimiter::new(0.0, 1);
        assert!(l.allow("a"));
        assert!(!l.allow("a"));
        assert!(l.allow("b"));
    }
}
