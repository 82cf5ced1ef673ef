//! Which data-plane worker thread the current thread is. Set once by each worker thread (see
//! [`crate::proxy`]'s workers); read where each worker keeps state of its own, so that its
//! requests never touch another worker's: the backend pools ([`crate::upstream`]), the
//! access log's line buffers ([`crate::telemetry::access`]) and the slots of the sums it
//! counts in ([`crate::telemetry::tally`]). No I/O, nothing else.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shard numbers handed out so far, to every gateway's workers in this process.
static SHARDS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// The worker's index in its gateway, and its shard number.
    static INDEX: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// Takes `count` shard numbers for worker threads about to start, and returns the first.
/// Unique in the process and never reused, so no two threads ever share one.
pub fn reserve(count: usize) -> usize {
    SHARDS.fetch_add(count, Ordering::Relaxed)
}

/// Shard numbers taken so far.
pub fn shards() -> usize {
    SHARDS.load(Ordering::Relaxed)
}

/// Marks this thread as worker `index`, with `shard` (one [`reserve`] took).
pub fn set(index: usize, shard: usize) {
    INDEX.with(|cell| cell.set(Some((index, shard))));
}

/// This thread's worker index, `None` on a thread that is not a worker.
pub fn current() -> Option<usize> {
    INDEX.get().map(|(index, _)| index)
}

/// This thread's shard number, `None` on a thread that is not a worker.
pub fn shard() -> Option<usize> {
    INDEX.get().map(|(_, shard)| shard)
}
