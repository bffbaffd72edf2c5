//! Exponential backoff for reconnects and retries, shared by the server
//! (bus reconnects, room cursor reads) and the clients (reconnects).
//!
//! Pure: no clock, no randomness of its own. The caller sleeps for what
//! [`Backoff::next_delay`] returns and passes in a random number when it
//! wants jitter (`rand::random::<f64>()`, or `0.0` without jitter).
//!
//! The delays are `initial`, `initial × factor`, … with the base capped at
//! `max`; jitter adds up to `jitter × base` on top, so one delay lies in
//! `[base, base × (1 + jitter)]`. [`Backoff::reset`] starts over (after a
//! success).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    /// The base of the next delay.
    next: Duration,
}

impl Backoff {
    /// `initial`, doubling up to `max`, without jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            factor: 2.0,
            jitter: 0.0,
            next: initial,
        }
    }

    /// Grows the base by `factor` (at least 1) per delay instead of 2.
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            2.0
        };
        self
    }

    /// Adds up to `jitter × base` (`jitter` at least 0) to every delay, so
    /// that clients dropped together do not come back in lockstep.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.max(0.0)
        } else {
            0.0
        };
        self
    }

    /// The delay to wait now, then grows the base for the next one.
    ///
    /// `rand01` is a uniform random number in `[0, 1)`, which picks the
    /// jitter (clamped into `[0, 1]`; ignored without jitter).
    pub fn next_delay(&mut self, rand01: f64) -> Duration {
        let base = self.next;
        self.next = scale(base, self.factor).min(self.max);
        let r = if rand01.is_finite() {
            rand01.clamp(0.0, 1.0)
        } else {
            0.0
        };
        base.saturating_add(scale(base, self.jitter * r))
    }

    /// The base of the next delay, without jitter and without growing it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Starts over at `initial` (call it after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// `d × factor` (to the nanosecond below 584 years), saturating at
/// `Duration::MAX`.
fn scale(d: Duration, factor: f64) -> Duration {
    let nanos = d.as_nanos() as f64 * factor;
    if nanos < u64::MAX as f64 {
        Duration::from_nanos(nanos.round() as u64)
    } else {
        Duration::try_from_secs_f64(nanos / 1e9).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_and_caps() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<Duration> = (0..7).map(|_| b.next_delay(0.5)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000, 1000].map(|ms| ms * MS)
        );
        assert_eq!(b.peek(), 1000 * MS);
    }

    #[test]
    fn resets() {
        let mut b = Backoff::new(50 * MS, 2000 * MS);
        b.next_delay(0.0);
        b.next_delay(0.0);
        assert_eq!(b.peek(), 200 * MS);
        b.reset();
        assert_eq!(b.next_delay(0.0), 50 * MS);
        assert_eq!(b.next_delay(0.0), 100 * MS);
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let mut b = Backoff::new(200 * MS, 5000 * MS).with_jitter(0.5);
        let mut base = 200 * MS;
        for i in 0..40 {
            let r = (i as f64 * 0.618_034).fract();
            let d = b.next_delay(r);
            assert!(d >= base && d <= base + base / 2, "{d:?} for base {base:?}");
            base = (base * 2).min(5000 * MS);
        }
        // The extremes, and random numbers out of range, stay in bounds too.
        for (r, want) in [
            (0.0, 100),
            (1.0, 200),
            (-3.0, 100),
            (7.0, 200),
            (f64::NAN, 100),
        ] {
            let mut b = Backoff::new(100 * MS, 100 * MS).with_jitter(1.0);
            assert_eq!(b.next_delay(r), want * MS, "rand01 = {r}");
        }
    }

    #[test]
    fn factor_and_odd_settings() {
        let mut b = Backoff::new(10 * MS, 100 * MS).with_factor(3.0);
        let delays: Vec<Duration> = (0..4).map(|_| b.next_delay(0.0)).collect();
        assert_eq!(delays, [10, 30, 90, 100].map(|ms| ms * MS));
        // A factor below 1 would shrink: it is taken as 1.
        let mut b = Backoff::new(10 * MS, 100 * MS).with_factor(0.5);
        assert_eq!(b.next_delay(0.0), 10 * MS);
        assert_eq!(b.next_delay(0.0), 10 * MS);
        // A cap below the start is the start; huge values saturate.
        let mut b = Backoff::new(10 * MS, MS);
        assert_eq!(b.next_delay(0.0), 10 * MS);
        assert_eq!(b.next_delay(0.0), 10 * MS);
        let huge = Duration::from_secs(1 << 40);
        let mut b = Backoff::new(huge, Duration::MAX).with_jitter(10.0);
        assert!(b.next_delay(1.0) > huge);
        assert_eq!(b.next_delay(0.0), huge * 2);
        let mut b = Backoff::new(Duration::MAX / 2, Duration::MAX).with_jitter(1.0);
        assert!(b.next_delay(1.0) > Duration::MAX / 2);
        assert_eq!(b.next_delay(0.0), Duration::MAX);
        assert_eq!(b.next_delay(1.0), Duration::MAX);
    }
}
