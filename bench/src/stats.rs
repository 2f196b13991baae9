//! Latency summaries: nearest-rank percentiles over every sample (no histogram buckets).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    pub samples: usize,
    pub min_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

fn micros(d: Duration) -> f64 {
    // Rounded to 0.1 µs: more digits are noise.
    (d.as_secs_f64() * 10_000_000.0).round() / 10.0
}

/// The `p`-th percentile (0 < p ≤ 100) of sorted samples, nearest-rank method.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).copied().unwrap_or(Duration::ZERO)
}

impl Summary {
    /// Summarises `samples` (sorted in place).
    pub fn of(samples: &mut [Duration]) -> Summary {
        samples.sort_unstable();
        if samples.is_empty() {
            return Summary::default();
        }
        let total: Duration = samples.iter().sum();
        let mean = total.div_f64(samples.len() as f64);
        Summary {
            samples: samples.len(),
            min_us: micros(percentile(samples, 0.0)),
            p50_us: micros(percentile(samples, 50.0)),
            p90_us: micros(percentile(samples, 90.0)),
            p99_us: micros(percentile(samples, 99.0)),
            p999_us: micros(percentile(samples, 99.9)),
            max_us: micros(percentile(samples, 100.0)),
            mean_us: micros(mean),
        }
    }
}

/// The median of `values` (sorted in place), 0 when empty.
pub fn median_us(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    if values.is_empty() {
        return 0.0;
    }
    let mid = values.len() / 2;
    let m = if values.len() % 2 == 1 {
        values.get(mid).copied().unwrap_or(0.0)
    } else {
        let a = values.get(mid - 1).copied().unwrap_or(0.0);
        let b = values.get(mid).copied().unwrap_or(0.0);
        (a + b) / 2.0
    };
    (m * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        v.reverse();
        let s = Summary::of(&mut v);
        assert_eq!(s.samples, 100);
        assert_eq!(s.min_us, 1.0);
        assert_eq!(s.p50_us, 50.0);
        assert_eq!(s.p90_us, 90.0);
        assert_eq!(s.p99_us, 99.0);
        assert_eq!(s.max_us, 100.0);
        assert_eq!(s.mean_us, 50.5);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(Summary::of(&mut []).samples, 0);
        let s = Summary::of(&mut [Duration::from_micros(7)]);
        assert_eq!((s.p50_us, s.p99_us), (7.0, 7.0));
    }

    #[test]
    fn medians() {
        assert_eq!(median_us(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_us(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median_us(&mut []), 0.0);
    }
}
