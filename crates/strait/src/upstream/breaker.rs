//! Per-target circuit breaker: closed → open → half-open → closed, all in atomics.
//!
//! Owns the breaker state and its rolling window of recent outcomes. Time is passed in as
//! ticks (nanoseconds since the target's epoch, see [`super::pool::TargetState`]), so it
//! reads no clock and tests need no sleeps. It may not touch health, balancing or I/O.
//!
//! Window: the last [`WINDOW`] (10 s, independent of `open_for`) in 1 s buckets. Each bucket
//! packs its second number, request count and failure count in one `AtomicU64` updated by
//! compare-and-swap, so counts are exact and no lock is taken.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use super::settings::BreakerSpec;

/// How far back the failure ratio looks.
pub const WINDOW: Duration = Duration::from_secs(10);
const BUCKETS: u64 = 10;
const BUCKET_NANOS: u64 = 1_000_000_000;
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const EPOCH_MASK: u64 = (1 << (64 - 2 * COUNT_BITS)) - 1;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What the breaker currently does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests pass and are counted.
    Closed,
    /// Requests are refused until `open_for` has passed.
    Open,
    /// One trial request is in flight; others are refused until it reports.
    HalfOpen,
}

/// How a request was admitted by the breaker or the health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Normal,
    /// The single request that decides whether the target is back.
    Trial,
}

/// One target's breaker.
#[derive(Debug)]
pub struct Breaker {
    state: AtomicU8,
    /// Ticks when it last opened.
    opened_at: AtomicU64,
    buckets: [AtomicU64; BUCKETS as usize],
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: AtomicU8::new(CLOSED),
            opened_at: AtomicU64::new(0),
            buckets: Default::default(),
        }
    }
}

impl Breaker {
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// Whether a request could pass now (no state change; selection uses it).
    pub fn admits(&self, spec: &BreakerSpec, now: u64) -> bool {
        match self.state.load(Ordering::Acquire) {
            CLOSED => true,
            OPEN => self.open_elapsed(spec, now),
            _ => false,
        }
    }

    /// Lets a request through: `Normal` when closed, `Trial` for the one request after
    /// `open_for` (only the caller that wins the compare-and-swap), else `None`.
    pub fn acquire(&self, spec: &BreakerSpec, now: u64) -> Option<Pass> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(Pass::Normal),
            OPEN if self.open_elapsed(spec, now) => self
                .state
                .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| Pass::Trial),
            _ => None,
        }
    }

    /// Records a finished request; returns the new state when it changed.
    pub fn record(
        &self,
        spec: &BreakerSpec,
        pass: Pass,
        failed: bool,
        now: u64,
    ) -> Option<BreakerState> {
        if pass == Pass::Trial {
            return if failed {
                self.open(now);
                Some(BreakerState::Open)
            } else {
                for bucket in &self.buckets {
                    bucket.store(0, Ordering::Relaxed);
                }
                self.state.store(CLOSED, Ordering::Release);
                Some(BreakerState::Closed)
            };
        }
        self.count(failed, now);
        if !failed || self.state.load(Ordering::Acquire) != CLOSED {
            return None;
        }
        let (requests, failures) = self.window(now);
        let tripped = requests >= u64::from(spec.min_requests)
            && failures as f64 >= spec.failure_ratio * requests as f64;
        if !tripped {
            return None;
        }
        self.opened_at.store(now, Ordering::Release);
        self.state
            .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BreakerState::Open)
    }

    /// A trial that ended without an outcome (cancelled): open again with the old time, so
    /// the next request may be the trial.
    pub fn release_trial(&self) {
        let _ = self
            .state
            .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Requests and failures counted in the window ending at `now`.
    pub fn window(&self, now: u64) -> (u64, u64) {
        let current = (now / BUCKET_NANOS) & EPOCH_MASK;
        self.buckets
            .iter()
            .map(|b| unpack(b.load(Ordering::Relaxed)))
            .filter(|&(epoch, _, _)| (current.wrapping_sub(epoch) & EPOCH_MASK) < BUCKETS)
            .fold((0, 0), |(r, f), (_, br, bf)| (r + br, f + bf))
    }

    fn open(&self, now: u64) {
        self.opened_at.store(now, Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
    }

    fn open_elapsed(&self, spec: &BreakerSpec, now: u64) -> bool {
        let opened = self.opened_at.load(Ordering::Acquire);
        now.saturating_sub(opened) >= nanos(spec.open_for)
    }

    fn count(&self, failed: bool, now: u64) {
        let second = now / BUCKET_NANOS;
        let epoch = second & EPOCH_MASK;
        let Some(bucket) = self.buckets.get((second % BUCKETS) as usize) else {
            return;
        };
        let _ = bucket.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |packed| {
            let (e, r, f) = unpack(packed);
            let (r, f) = if e == epoch { (r, f) } else { (0, 0) };
            Some(pack(epoch, r + 1, f + u64::from(failed)))
        });
    }
}

/// A duration in ticks, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn pack(epoch: u64, requests: u64, failures: u64) -> u64 {
    (epoch << (2 * COUNT_BITS)) | (requests.min(COUNT_MAX) << COUNT_BITS) | failures.min(COUNT_MAX)
}

fn unpack(packed: u64) -> (u64, u64, u64) {
    (
        packed >> (2 * COUNT_BITS),
        (packed >> COUNT_BITS) & COUNT_MAX,
        packed & COUNT_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = BUCKET_NANOS;

    fn spec() -> BreakerSpec {
        BreakerSpec {
            failure_ratio: 0.5,
            min_requests: 4,
            open_for: Duration::from_secs(30),
        }
    }

    #[test]
    fn stays_closed_below_min_requests_or_ratio() {
        let b = Breaker::default();
        let s = spec();
        // 3 failures: under min_requests.
        for _ in 0..3 {
            assert_eq!(b.record(&s, Pass::Normal, true, S), None);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        // Successes push the ratio down: 3 failures of 7.
        for _ in 0..4 {
            assert_eq!(b.record(&s, Pass::Normal, false, S), None);
        }
        assert_eq!(b.record(&s, Pass::Normal, false, S), None);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.window(S), (8, 3));
    }

    #[test]
    fn closed_open_half_open_closed() {
        let b = Breaker::default();
        let s = spec();
        b.record(&s, Pass::Normal, false, S);
        b.record(&s, Pass::Normal, false, S);
        b.record(&s, Pass::Normal, true, S);
        assert_eq!(
            b.record(&s, Pass::Normal, true, S),
            Some(BreakerState::Open)
        );
        assert!(!b.admits(&s, S));
        assert_eq!(b.acquire(&s, 29 * S), None);

        let later = S + 30 * S;
        assert!(b.admits(&s, later));
        assert_eq!(b.acquire(&s, later), Some(Pass::Trial));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // Only one trial.
        assert!(!b.admits(&s, later));
        assert_eq!(b.acquire(&s, later), None);

        assert_eq!(
            b.record(&s, Pass::Trial, false, later),
            Some(BreakerState::Closed)
        );
        assert_eq!(b.acquire(&s, later), Some(Pass::Normal));
        // The window was cleared: one failure does not reopen.
        assert_eq!(b.record(&s, Pass::Normal, true, later), None);
    }

    #[test]
    fn failed_trial_opens_again_for_open_for() {
        let b = Breaker::default();
        let s = spec();
        for _ in 0..4 {
            b.record(&s, Pass::Normal, true, S);
        }
        assert_eq!(b.state(), BreakerState::Open);
        let t1 = 31 * S;
        assert_eq!(b.acquire(&s, t1), Some(Pass::Trial));
        assert_eq!(
            b.record(&s, Pass::Trial, true, t1),
            Some(BreakerState::Open)
        );
        assert_eq!(b.acquire(&s, t1 + 29 * S), None);
        assert_eq!(b.acquire(&s, t1 + 30 * S), Some(Pass::Trial));
    }

    #[test]
    fn released_trial_lets_the_next_request_try() {
        let b = Breaker::default();
        let s = spec();
        for _ in 0..4 {
            b.record(&s, Pass::Normal, true, S);
        }
        let t1 = 40 * S;
        assert_eq!(b.acquire(&s, t1), Some(Pass::Trial));
        b.release_trial();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire(&s, t1), Some(Pass::Trial));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let b = Breaker::default();
        let s = spec();
        for _ in 0..3 {
            b.record(&s, Pass::Normal, true, S);
        }
        // Eleven seconds later the three failures no longer count.
        let later = 12 * S;
        assert_eq!(b.window(later), (0, 0));
        assert_eq!(b.record(&s, Pass::Normal, true, later), None);
        assert_eq!(b.window(later), (1, 1));
        // The same slot (12 % 10 == 2) is reused without the stale counts.
        assert_eq!(b.window(2 * S + 10 * S), (1, 1));
    }

    #[test]
    fn concurrent_trials_admit_exactly_one() {
        let b = std::sync::Arc::new(Breaker::default());
        let s = spec();
        for _ in 0..4 {
            b.record(&s, Pass::Normal, true, S);
        }
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| b.acquire(&s, 100 * S) == Some(Pass::Trial)))
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(winners, 1);
    }
}
