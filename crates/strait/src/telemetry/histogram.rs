//! A histogram that records without a lock or an atomic add: the worker thread adds to its
//! own [`Tallies`] slots for the bucket hit and the sum. (`prometheus-client`'s own
//! histogram takes a mutex per observation, which the data plane may not do per request.)

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use super::tally::Tallies;

/// Upper bounds in seconds for durations: 1 ms to about 1 h (the last bucket is +Inf).
pub const DURATION_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
];

/// A cloneable handle to one histogram; clones record into the same buckets.
#[derive(Debug, Clone)]
pub struct Histogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bounds: &'static [f64],
    /// One per bound, then one for +Inf, then the sum in nanoseconds (a whole number, so
    /// it adds up exactly). The count is the buckets' sum.
    tallies: Tallies,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            inner: Arc::new(Inner {
                bounds,
                tallies: Tallies::new(bounds.len() + 2),
            }),
        }
    }

    pub fn durations() -> Self {
        Self::new(DURATION_BOUNDS)
    }

    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        let inner = &*self.inner;
        let index = inner.bounds.partition_point(|bound| *bound < seconds);
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        let mine = inner.tallies.mine();
        mine.add(index, 1);
        mine.add(inner.bounds.len() + 1, nanos);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets().map(|(_, n)| n).sum()
    }

    /// Each bucket's upper bound and observations.
    fn buckets(&self) -> impl Iterator<Item = (f64, u64)> {
        let inner = &*self.inner;
        inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
            .map(|(i, bound)| (bound, inner.tallies.get(i)))
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self.buckets().collect();
        // The count is the buckets' sum, so a scrape racing an observation stays consistent.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum_nanos = self.inner.tallies.get(self.inner.bounds.len() + 1);
        let sum = sum_nanos as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::new(&[0.01, 0.1]);
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_millis(10)); // on the bound: `le` is inclusive
        histogram.observe(Duration::from_millis(50));
        histogram.observe(Duration::from_secs(3));
        let counts: Vec<u64> = histogram.buckets().map(|(_, n)| n).collect();
        assert_eq!(counts, [2, 1, 1]);
        assert_eq!(histogram.count(), 4);
        assert_eq!(histogram.inner.tallies.get(3), 3_065_000_000);
    }
}
