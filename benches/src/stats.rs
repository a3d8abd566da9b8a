//! Latency percentiles from raw samples (exact: samples are sorted).

use std::fmt;
use std::time::Duration;

/// Percentiles of a set of latencies, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest sample.
    pub max: u64,
    /// Mean.
    pub mean: u64,
}

impl Summary {
    /// Summarizes `samples` (nanoseconds); sorts them in place.
    pub fn of(samples: &mut [u64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| -> u64 {
            // Nearest-rank percentile.
            let rank = (q * n as f64).ceil() as usize;
            samples[rank.clamp(1, n) - 1]
        };
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Summary {
            count: n as u64,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: samples[n - 1],
            mean: (sum / n as u128) as u64,
        }
    }
}

/// Formats nanoseconds with a readable unit.
pub fn fmt_ns(ns: u64) -> String {
    if ns >= 10_000_000_000 {
        format!("{:.1} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

/// Formats a duration with a readable unit.
pub fn fmt_dur(d: Duration) -> String {
    fmt_ns(d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} p50={} p90={} p99={} p99.9={} max={} mean={}",
            self.count,
            fmt_ns(self.p50),
            fmt_ns(self.p90),
            fmt_ns(self.p99),
            fmt_ns(self.p999),
            fmt_ns(self.max),
            fmt_ns(self.mean)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let s = Summary::of(&mut v);
        assert_eq!((s.p50, s.p99, s.p999, s.max), (500, 990, 999, 1000));
        assert_eq!(Summary::of(&mut []).count, 0);
    }
}
