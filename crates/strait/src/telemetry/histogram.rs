//! A histogram that records without a lock: one atomic add per bucket hit, count and sum.
//! (`prometheus-client`'s own histogram takes a mutex per observation, which the data plane
//! may not do per request.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

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
    /// One per bound, then one for +Inf.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    /// The sum in nanoseconds, so it can be added atomically.
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            inner: Arc::new(Inner {
                bounds,
                buckets,
                count: AtomicU64::new(0),
                sum_nanos: AtomicU64::new(0),
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
        if let Some(bucket) = inner.buckets.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        inner.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(inner.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' sum, so a scrape racing an observation stays consistent.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
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
        let counts: Vec<u64> = histogram
            .inner
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, [2, 1, 1]);
        assert_eq!(histogram.count(), 4);
        assert_eq!(
            histogram.inner.sum_nanos.load(Ordering::Relaxed),
            3_065_000_000
        );
    }
}
