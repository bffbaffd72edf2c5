//! Latency recording (HDR histograms in microseconds) and percentile
//! summaries.
//!
//! Connection tasks record into a few mutex-guarded shards (picked by
//! connection index) so that two runtime threads rarely contend; the shards
//! are merged at the end. Worker processes ship their histograms to the
//! parent as `(value, count)` pairs, which merge exactly.

use std::sync::{Mutex, MutexGuard};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest recordable latency: one hour, in microseconds. Larger values are
/// clamped to it (and show up as the max).
pub const HIGHEST_US: u64 = 3_600_000_000;
const SHARDS: usize = 16;

/// A fresh histogram of 1 µs – 1 h at 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3)
        .map_err(|e| anyhow::anyhow!("creating a histogram: {e}"))
}

/// A sharded latency recorder.
pub struct Recorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Recorder {
    pub fn new() -> anyhow::Result<Self> {
        let shards = (0..SHARDS)
            .map(|_| histogram().map(Mutex::new))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self { shards })
    }

    fn shard(&self, key: usize) -> MutexGuard<'_, Histogram<u64>> {
        let m = &self.shards[key % SHARDS];
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a latency in microseconds (clamped to 1 µs – 1 h).
    pub fn record(&self, key: usize, us: u64) {
        let v = us.clamp(1, HIGHEST_US);
        // Within the bounds, recording cannot fail.
        let _ = self.shard(key).record(v);
    }

    /// Every shard merged into one histogram.
    pub fn merged(&self) -> anyhow::Result<Histogram<u64>> {
        let mut all = histogram()?;
        for i in 0..SHARDS {
            all.add(&*self.shard(i))
                .map_err(|e| anyhow::anyhow!("merging histograms: {e}"))?;
        }
        Ok(all)
    }
}

/// A histogram as `(value, count)` pairs, for the JSON between processes.
pub fn to_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds `(value, count)` pairs to a histogram.
pub fn add_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        let _ = h.record_n(value.clamp(1, HIGHEST_US), count);
    }
}

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// The summary of a histogram of microseconds.
pub fn summarize(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let ms = |us: u64| round3(us as f64 / 1000.0);
    Summary {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: round3(h.mean() / 1000.0),
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A latency in milliseconds for a table: three significant digits at
/// most, so columns stay narrow ("0.412", "12.3", "104", "2 510").
pub fn fmt_ms(ms: f64) -> String {
    if !ms.is_finite() || ms < 0.0 {
        return "-".to_string();
    }
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        group_thousands(ms.round() as u64)
    }
}

/// `1234567` → `"1 234 567"`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let r = Recorder::new().unwrap();
        for us in 1..=10_000u64 {
            r.record(us as usize, us * 10); // 10 µs … 100 ms
        }
        let s = summarize(&r.merged().unwrap());
        assert_eq!(s.count, 10_000);
        assert!((s.p50 - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99 - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max - 100.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn empty_and_clamped() {
        assert_eq!(summarize(&histogram().unwrap()), Summary::default());
        let r = Recorder::new().unwrap();
        r.record(0, 0);
        r.record(1, u64::MAX);
        let s = summarize(&r.merged().unwrap());
        assert_eq!(s.count, 2);
        assert!(s.max >= 3_599_000.0);
    }

    #[test]
    fn pairs_round_trip_exactly() {
        let mut h = histogram().unwrap();
        for v in [1u64, 5, 5, 900, 123_456, 7_000_000] {
            h.record(v).unwrap();
        }
        let mut back = histogram().unwrap();
        add_pairs(&mut back, &to_pairs(&h));
        assert_eq!(summarize(&back), summarize(&h));
        assert_eq!(back.len(), 6);
    }

    #[test]
    fn latency_formatting() {
        assert_eq!(fmt_ms(0.4123), "0.412");
        assert_eq!(fmt_ms(2.5), "2.50");
        assert_eq!(fmt_ms(12.345), "12.3");
        assert_eq!(fmt_ms(104.4), "104");
        assert_eq!(fmt_ms(2510.0), "2 510");
        assert_eq!(fmt_ms(f64::NAN), "-");
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(1_234_567), "1 234 567");
        assert_eq!(group_thousands(100), "100");
    }
}
