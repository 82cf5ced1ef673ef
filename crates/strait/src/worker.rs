//! Which data-plane worker thread the current thread is. Set once by each worker thread (see
//! [`crate::proxy`]'s workers); read where each worker keeps state of its own, so that its
//! requests never touch another worker's: the backend pools ([`crate::upstream`]) and the
//! access log's line buffers ([`crate::telemetry::access`]). No I/O, nothing else.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks this thread as worker `index`.
pub fn set(index: usize) {
    INDEX.with(|cell| cell.set(Some(index)));
}

/// This thread's worker index, `None` on a thread that is not a worker.
pub fn current() -> Option<usize> {
    INDEX.get()
}
