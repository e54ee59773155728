//! Order statistics over a handful of samples.

use std::time::Duration;

/// min, median, p90 and max of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
    pub count: usize,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            min: sorted[0],
            median: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            max: sorted[sorted.len() - 1],
            count: sorted.len(),
        })
    }
}

/// Nearest-rank percentile of sorted, non-empty samples. With 20 samples the median is the
/// 10th value and p90 the 18th: no interpolation, every number printed was measured.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let samples: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        assert_eq!((s.min, s.median, s.p90, s.max), (1.0, 10.0, 18.0, 20.0));
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!(
            (one.min, one.median, one.p90, one.max),
            (7.0, 7.0, 7.0, 7.0)
        );
        assert!(Summary::of(&[]).is_none());
    }
}
