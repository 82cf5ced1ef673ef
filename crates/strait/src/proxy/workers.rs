//! Data-plane workers: threads that each run a single-threaded runtime and serve the client
//! connections handed to them, with everything those connections open (backend connections,
//! WebSocket sessions) — like nginx's worker processes. A connection's requests and frames
//! are then handled without work stealing or wake-ups across threads; only its hand-over
//! crosses one. The control plane (listeners' accept loops, admin, reloads, health checks)
//! stays on the runtime that started the gateway.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::{CancellationToken, DropGuard};

pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Stops the threads once the gateway is gone: their runtimes drop whatever is left.
    _stop: DropGuard,
}

impl Workers {
    /// Starts `count` (at least one) worker threads.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        // Also stops the threads already started if a later one cannot be.
        let guard = stop.clone().drop_guard();
        let mut handles = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stopped = stop.clone();
            std::thread::Builder::new()
                .name(format!("strait-worker-{i}"))
                .spawn(move || runtime.block_on(stopped.cancelled()))?;
        }
        Ok(Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: guard,
        })
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// The worker the next connection goes to, in turn.
    pub fn next(&self) -> Option<&Handle> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.handles.get(i % self.handles.len().max(1))
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.handles.len())
            .finish()
    }
}
