//! Latency recording: an HDR histogram shared by many tasks, each of which batches its samples
//! locally so the lock is taken once per few hundred samples and memory stays one histogram.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Samples a task keeps before merging them into the shared histogram.
const BATCH: usize = 256;
/// Highest trackable value: one minute, in nanoseconds.
const MAX_NANOS: u64 = 60_000_000_000;

/// Percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// The histogram every task of one run records into.
#[derive(Clone)]
pub struct SharedHistogram(Arc<Mutex<Histogram<u64>>>);

impl Default for SharedHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedHistogram {
    #[allow(clippy::expect_used, reason = "the bounds are constants")]
    pub fn new() -> SharedHistogram {
        // 1 ns .. 60 s at 3 significant digits.
        let histogram =
            Histogram::new_with_bounds(1, MAX_NANOS, 3).expect("constant bounds are valid");
        SharedHistogram(Arc::new(Mutex::new(histogram)))
    }

    /// A per-task recorder; it merges on every full batch and when dropped.
    pub fn recorder(&self) -> Recorder {
        Recorder {
            local: Vec::with_capacity(BATCH),
            shared: self.clone(),
        }
    }

    pub fn count(&self) -> u64 {
        self.0.lock().map_or(0, |h| h.len())
    }

    pub fn percentiles(&self) -> Percentiles {
        let Ok(h) = self.0.lock() else {
            return Percentiles::default();
        };
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            p50_us: us(0.5),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
        }
    }
}

pub struct Recorder {
    local: Vec<u64>,
    shared: SharedHistogram,
}

impl Recorder {
    pub fn record(&mut self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(MAX_NANOS);
        self.local.push(nanos.clamp(1, MAX_NANOS));
        if self.local.len() == BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if let Ok(mut h) = self.shared.0.lock() {
            for &v in &self.local {
                h.saturating_record(v);
            }
        }
        self.local.clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}
