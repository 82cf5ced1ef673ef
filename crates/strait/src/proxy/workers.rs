//! Data-plane workers: threads that each run a single-threaded runtime — like nginx's worker
//! processes. Each runs an accept loop per listener (on its own socket, see
//! [`super::listener`]) and serves what it accepts, with everything those connections open
//! (backend connections, WebSocket sessions, their timers), so a connection's requests and
//! frames never wait for a wake-up from another thread. The control plane (admin, reloads,
//! health checks) stays on the runtime that started the gateway.

use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How soon a worker always has a timer due. tokio wakes its own thread (an eventfd write,
/// then an extra `epoll_wait`) whenever a timer is set to fire before every armed one, as a
/// connection's connect, head or idle timeout did for about half the WebSocket sessions
/// (`scripts/syscalls.sh connect`). With a timer always due within a second, the data
/// plane's timeouts — seconds long — never come first; the price is one wake-up a second.
const TIMER_ANCHOR: Duration = Duration::from_secs(1);

pub struct Workers {
    handles: Vec<Handle>,
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
            runtime.spawn(timer_anchor());
            let stopped = stop.clone();
            std::thread::Builder::new()
                .name(format!("strait-worker-{i}"))
                .spawn(move || runtime.block_on(stopped.cancelled()))?;
        }
        Ok(Workers {
            handles,
            _stop: guard,
        })
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

/// Keeps a timer due within [`TIMER_ANCHOR`] on the runtime it runs on, forever.
async fn timer_anchor() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.handles.len())
            .finish()
    }
}
