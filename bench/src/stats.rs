//! The bench's summaries of repeated measurements: [`Stat`] (median, min and max over the
//! runs), per-run ratios, and the latency histograms the scenarios record into.
//!
//! Every scenario reports a figure as the median of its runs with min and max, and a ratio
//! between two systems as the summary of the per-run ratios (run i over run i), so a noisy
//! minute on the shared machine shows as a wide range instead of a shifted median. Values
//! that are not finite (a run that measured nothing) are left out of a summary.

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Median, min and max of one figure over the runs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stat {
    /// The median (the upper one for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// How many runs.
    pub n: usize,
}

impl Stat {
    /// Summarises the finite ones of `values`; `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Stat { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1], n: v.len() })
    }

    /// `[median, min, max]`, the form the latency report keeps.
    pub fn to_array(self) -> [f64; 3] {
        [self.median, self.min, self.max]
    }

    /// `median [min–max]` with `digits` decimals.
    pub fn fmt(&self, digits: usize) -> String {
        format!("{:.d$} [{:.d$}–{:.d$}]", self.median, self.min, self.max, d = digits)
    }

    /// [`fmt`](Self::fmt) of `s`, or `-` when there is no figure.
    pub fn fmt_or_dash(s: Option<Stat>, digits: usize) -> String {
        s.map_or("-".into(), |s| s.fmt(digits))
    }
}

/// Per-run ratios `num[i] / den[i]` (runs whose denominator is not positive left out),
/// summarised.
pub fn ratio(num: &[f64], den: &[f64]) -> Option<Stat> {
    let r: Vec<f64> = num.iter().zip(den).filter(|(_, d)| **d > 0.0).map(|(n, d)| n / d).collect();
    Stat::of(&r)
}

/// An empty histogram of latencies in µs, from 1 µs to `highest_us`, 3 significant digits.
pub fn latency_histogram(highest_us: u64) -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, highest_us, 3).context("latency histogram")
}

/// The highest latency the scenarios' histograms hold: 10 s.
pub const LATENCY_MAX_US: u64 = 10_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_median_min_max() {
        assert_eq!(Stat::of(&[3.0, 1.0, 2.0, 9.0, 5.0]), Some(Stat { median: 3.0, min: 1.0, max: 9.0, n: 5 }));
        assert_eq!(Stat::of(&[f64::NAN]), None);
        assert_eq!(Stat::of(&[]), None);
        assert_eq!(ratio(&[10.0, 20.0, 30.0], &[5.0, 0.0, 10.0]), Some(Stat { median: 3.0, min: 2.0, max: 3.0, n: 2 }));
    }

    #[test]
    fn stat_formats_and_round_trips() {
        let s = Stat::of(&[2.0, 1.0, 4.0]).unwrap();
        assert_eq!(s.fmt(1), "2.0 [1.0–4.0]");
        assert_eq!(Stat::fmt_or_dash(None, 1), "-");
        assert_eq!(s.to_array(), [2.0, 1.0, 4.0]);
        let back: Stat = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn latency_histogram_holds_its_range() {
        let mut h = latency_histogram(LATENCY_MAX_US).unwrap();
        assert_eq!((h.low(), h.high()), (1, LATENCY_MAX_US));
        h.record(LATENCY_MAX_US).unwrap();
        h.record(1).unwrap();
        assert_eq!((h.len(), h.min(), h.max()), (2, 1, h.highest_equivalent(LATENCY_MAX_US)));
    }
}
