//! Sums the data plane adds to per request — metrics, a backend target's requests — kept
//! per worker thread: a worker adds to slots of its own with a plain load and store (it is
//! their only writer), where an atomic add is a full barrier that costs ~5–10 ns on this
//! host (bench/micro-benchmarks.md, "Atomic instructions and clock reads per unit of
//! work"). Any other thread adds to shared slots atomically. A read adds the slots up, so
//! it may miss an addition in flight, as a read of one atomic may. Knows nothing of what it
//! counts; no I/O.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::worker;

/// Worker shards a new tally keeps slots for at most: workers numbered beyond (a process
/// that started many gateways, as the tests do) add to the shared slots.
const MOST_SHARDS: usize = 64;

/// `width` sums, with slots per worker thread.
#[derive(Debug)]
pub struct Tallies {
    /// `width` slots for each of `own` worker shards, then `width` shared ones.
    slots: Box<[AtomicU64]>,
    width: usize,
    own: usize,
}

impl Tallies {
    /// `width` sums at zero, with slots for each worker thread started so far.
    pub fn new(width: usize) -> Self {
        let width = width.max(1);
        let own = worker::shards().min(MOST_SHARDS);
        let slots = (0..(own + 1) * width).map(|_| AtomicU64::new(0)).collect();
        Tallies { slots, width, own }
    }

    /// Adds `n` to sum `i` (wrapping: adding `0u64.wrapping_sub(1)` takes one away).
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        self.mine().add(i, n);
    }

    /// The slots this thread adds to: its worker shard's, else the shared ones.
    #[inline]
    pub fn mine(&self) -> Mine<'_> {
        let (start, own) = match worker::shard() {
            Some(shard) if shard < self.own => (shard * self.width, true),
            _ => (self.own * self.width, false),
        };
        Mine {
            slots: self
                .slots
                .get(start..start + self.width)
                .unwrap_or_default(),
            own,
        }
    }

    /// Sum `i` (0 beyond the width).
    pub fn get(&self, i: usize) -> u64 {
        if i >= self.width {
            return 0;
        }
        self.slots
            .iter()
            .skip(i)
            .step_by(self.width)
            .fold(0, |sum, slot| {
                sum.wrapping_add(slot.load(Ordering::Relaxed))
            })
    }
}

/// The slots of [`Tallies`] one thread adds to.
pub struct Mine<'a> {
    slots: &'a [AtomicU64],
    /// A worker shard's, which only this thread writes.
    own: bool,
}

impl Mine<'_> {
    /// Adds `n` to sum `i` (wrapping).
    #[inline]
    pub fn add(&self, i: usize, n: u64) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        if self.own {
            slot.store(
                slot.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        } else {
            slot.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One sum with slots per worker thread: a counter, or with [`Tally::sub`] a gauge.
#[derive(Debug)]
pub struct Tally(Tallies);

impl Default for Tally {
    fn default() -> Self {
        Tally(Tallies::new(1))
    }
}

impl Tally {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.add(0, n);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.add(0, 0u64.wrapping_sub(n));
    }

    pub fn get(&self) -> u64 {
        self.0.get(0)
    }

    /// The sum of a gauge, whose slots may each have gone below zero.
    pub fn get_signed(&self) -> i64 {
        self.get().cast_signed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_and_other_threads_add_up_to_every_addition() {
        let first = worker::reserve(3);
        let tallies = std::sync::Arc::new(Tallies::new(2));
        let threads: Vec<_> = (0..5)
            .map(|t| {
                let tallies = tallies.clone();
                std::thread::spawn(move || {
                    // Three workers with slots of their own, two other threads.
                    if t < 3 {
                        worker::set(t, first + t);
                    }
                    for n in 0..10_000u64 {
                        tallies.add(usize::from(n % 2 == 0), n);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let odd: u64 = (0..10_000u64).filter(|n| n % 2 == 1).sum();
        let even: u64 = (0..10_000u64).filter(|n| n % 2 == 0).sum();
        assert_eq!(tallies.get(0), 5 * odd);
        assert_eq!(tallies.get(1), 5 * even);
        assert_eq!(tallies.get(2), 0);
        // The workers added to their own slots (unless other tests took the first 64
        // shards): the shared ones hold only the two other threads' additions.
        if first + 3 <= MOST_SHARDS {
            let shared = &tallies.slots[tallies.own * 2..];
            assert_eq!(shared[0].load(Ordering::Relaxed), 2 * odd);
            assert_eq!(shared[1].load(Ordering::Relaxed), 2 * even);
        }
    }

    #[test]
    fn a_gauge_taken_down_on_another_thread_than_it_went_up_on_sums_right() {
        let shard = worker::reserve(1);
        let gauge = std::sync::Arc::new(Tally::default());
        let up = gauge.clone();
        std::thread::spawn(move || {
            worker::set(0, shard);
            up.add(3);
        })
        .join()
        .unwrap();
        gauge.sub(5);
        assert_eq!(gauge.get_signed(), -2);
        gauge.add(2);
        assert_eq!(gauge.get_signed(), 0);
    }
}
